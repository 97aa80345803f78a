"""Per-cell values (QC metrics, doublet scores) and the truncated expression of Cellenics.

Cell ids are the cells' positions in ``adata`` (0 .. n_obs - 1) unless ``.obs["cells_id"]`` holds
integer ids (as Cellenics experiments do); per-cell arrays are indexed by cell id, with ``None``
for an id that has no cell (a filtered one).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from ._utils import float_list, optional_float
from .errors import AnalysisError

__all__ = [
    "CELL_ID_COLUMN",
    "CELL_VALUE_COLUMNS",
    "cell_ids",
    "cell_values",
    "doublet_scores",
    "indexed_by_cell_id",
    "truncate_at_quantile",
]

#: ``.obs`` column holding integer cell ids (Cellenics' name); positions are used without it.
CELL_ID_COLUMN = "cells_id"

#: Per-cell value → the ``.obs`` columns that may hold it (first present wins).
CELL_VALUE_COLUMNS: dict[str, tuple[str, ...]] = {
    "mitochondrial_content": ("pct_counts_mt", "percent.mt", "percent_mito"),
    "doublet_score": ("doublet_score", "doublet_scores"),
    "n_genes": ("n_genes_by_counts", "n_genes", "nFeature_RNA"),
    "n_umis": ("total_counts", "n_counts", "nCount_RNA"),
}


class CellValuesUnavailableError(AnalysisError):
    """The experiment has no stored values of the requested kind and they cannot be computed."""

    code = "CELL_VALUES_UNAVAILABLE"


def cell_ids(adata: AnnData) -> np.ndarray:
    """The id of every cell, in cell order (``int64``)."""
    if CELL_ID_COLUMN in adata.obs.columns:
        ids = pd.to_numeric(adata.obs[CELL_ID_COLUMN], errors="coerce").to_numpy()
        if np.isfinite(ids).all() and (ids >= 0).all() and len(np.unique(ids)) == len(ids):
            return ids.astype(np.int64)
    return np.arange(adata.n_obs, dtype=np.int64)


def indexed_by_cell_id(adata: AnnData, values: np.ndarray, cells: np.ndarray | None = None) -> list:
    """``values`` (one per cell of ``cells``, default every cell) as a list indexed by cell id.

    Ids without a value are ``None``; non-finite values are ``None`` too.
    """
    ids = cell_ids(adata)
    size = int(ids.max()) + 1 if ids.size else 0
    if cells is not None:
        ids = ids[cells]
    out = np.full(size, np.nan)
    out[ids] = np.asarray(values, dtype=np.float64)
    return float_list(out)


def cell_values(adata: AnnData, kind: str) -> list:
    """A per-cell value (see :data:`CELL_VALUE_COLUMNS`) indexed by cell id."""
    for column in CELL_VALUE_COLUMNS[kind]:
        if column in adata.obs.columns:
            return indexed_by_cell_id(adata, pd.to_numeric(adata.obs[column], errors="coerce").to_numpy())
    if kind == "doublet_score":
        return indexed_by_cell_id(adata, doublet_scores(adata))
    raise CellValuesUnavailableError(
        f"The experiment has no {kind.replace('_', ' ')} per cell: none of the .obs columns "
        f"{', '.join(CELL_VALUE_COLUMNS[kind])} exists"
    )


def doublet_scores(adata: AnnData, *, random_state: int = 0) -> np.ndarray:
    """Scrublet doublet scores (:func:`scanpy.pp.scrublet`) computed from the counts.

    Counts are ``.layers["counts"]`` when present, else ``.raw.X`` / ``.X`` when they hold integers.
    Without counts, log-normalised data (non-negative ``.raw.X`` or ``.X``) is turned back into
    depth-normalised counts with ``expm1``: scrublet then scores cells of equal depth, which ranks
    doublets by expression profile alone (an approximation, stated so; experiments prepared with
    counts or stored scores get the exact method).
    """
    counts = adata.layers.get("counts", None)
    if counts is None:
        for candidate in (adata.raw.X if adata.raw is not None else None, adata.X):
            if candidate is None:
                continue
            data = candidate.data if sp.issparse(candidate) else np.asarray(candidate)
            sample = np.asarray(data[:10000], dtype=np.float64)
            if sample.size and np.all(sample == np.round(sample)) and sample.min() >= 0:
                counts = candidate
                break
    if counts is None:
        for candidate in (adata.raw.X if adata.raw is not None else None, adata.X):
            if candidate is None:
                continue
            data = candidate.data if sp.issparse(candidate) else np.asarray(candidate)
            if data.size and float(np.min(data)) >= 0:
                counts = candidate.expm1() if sp.issparse(candidate) else np.expm1(np.asarray(candidate))
                break
    if counts is None:
        raise CellValuesUnavailableError(
            "The experiment has no doublet scores (.obs['doublet_scores']) and no raw counts to "
            "compute them from"
        )
    scratch = AnnData(X=sp.csr_matrix(counts, dtype=np.float32))
    try:
        # The threshold only labels predicted doublets (scores do not depend on it); fixing it
        # avoids scrublet's automatic threshold, which needs scikit-image.
        sc.pp.scrublet(scratch, random_state=random_state, verbose=False, threshold=0.25)
    except Exception as error:  # scrublet needs enough cells and genes
        raise CellValuesUnavailableError(f"Doublet scores could not be computed: {error}") from error
    return scratch.obs["doublet_score"].to_numpy()


def truncate_at_quantile(values: np.ndarray, quantile: float = 0.95) -> tuple[np.ndarray, float | None]:
    """Values clipped at their ``quantile`` (raised by 0.01 steps while it is 0), as Cellenics'
    ``truncatedExpression`` does so that a few extreme cells do not flatten a colour scale.

    Returns the clipped values and the limit (``None`` without finite values).
    """
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return values, None
    level = quantile
    limit = float(np.quantile(finite, level))
    while limit == 0 and level + 0.01 <= 1.0 + 1e-9:
        level = min(1.0, level + 0.01)
        limit = float(np.quantile(finite, level))
        if level >= 1.0:
            break
    return np.minimum(values, limit), optional_float(limit)
