"""Genes expressed in the compared cells: the background gene list of a pathway analysis.

The real Cellenics worker (``getBackgroundExpressedGenes``) keeps the genes whose total count over
the compared cells exceeds 15 (edgeR's ``filterByExpr`` ``min.total.count``). Counts are read from
``.layers["counts"]`` when the experiment keeps them; otherwise they are recovered from the
log-normalised data (:func:`estimated_counts`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._utils import expression_source

__all__ = ["MIN_TOTAL_COUNT", "TOTAL_COUNT_COLUMNS", "background_expressed_genes", "estimated_counts"]

#: A gene is expressed when its total count over the compared cells exceeds this (edgeR's default).
MIN_TOTAL_COUNT = 15

#: ``.obs`` columns that may hold each cell's total count (first present wins).
TOTAL_COUNT_COLUMNS: tuple[str, ...] = ("total_counts", "n_counts", "nCount_RNA")


def estimated_counts(adata: AnnData, cells: np.ndarray) -> tuple[sp.csr_matrix, pd.Index]:
    """The counts of ``cells`` (indices) for every gene, and the gene names.

    ``.layers["counts"]`` when present (genes of ``.X``). Otherwise the log-normalised matrix
    (``.raw`` when present) is undone: ``expm1(x)`` rescaled per cell to its total count (an
    ``.obs`` column of :data:`TOTAL_COUNT_COLUMNS`) divided by the normalisation target
    (``uns["interlinked"]["parameters"]["target_sum"]`` of ``prepare-experiment``, else the cell's
    own sum of ``expm1(x)``), rounded to whole counts. This is exact for ``normalize_total`` then
    ``log1p`` of every gene; data already holding whole counts are used as they are.
    """
    cells = np.asarray(cells, dtype=np.int64)
    if "counts" in adata.layers:
        return sp.csr_matrix(adata.layers["counts"][cells]), adata.var_names
    matrix, gene_names, _ = expression_source(adata, None)
    values = sp.csr_matrix(matrix[cells], dtype=np.float64, copy=True)
    if values.nnz and np.all(values.data == np.rint(values.data)) and values.data.max() > 20:
        return values, gene_names  # whole numbers beyond any log scale: counts already
    values.data = np.expm1(values.data)
    total_column = next((column for column in TOTAL_COUNT_COLUMNS if column in adata.obs.columns), None)
    if total_column is not None:
        totals = pd.to_numeric(adata.obs[total_column], errors="coerce").to_numpy(dtype=np.float64)[cells]
        target = _normalisation_target(adata)
        if target is None:
            sums = np.asarray(values.sum(axis=1)).ravel()
            scale = np.divide(totals, sums, out=np.zeros_like(totals), where=sums > 0)
        else:
            scale = totals / target
        values = sp.csr_matrix(sp.diags(np.nan_to_num(scale)) @ values)
    values.data = np.rint(values.data)
    values.eliminate_zeros()
    return values, gene_names


def _normalisation_target(adata: AnnData) -> float | None:
    provenance = adata.uns.get("interlinked")
    try:
        return float(provenance["parameters"]["target_sum"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return None


def background_expressed_genes(
    adata: AnnData, *, cells: Sequence[int] | np.ndarray, min_total_count: float = MIN_TOTAL_COUNT
) -> list[str]:
    """The genes whose total count over ``cells`` (indices) exceeds ``min_total_count``, in gene
    order (see :func:`estimated_counts` for where counts come from)."""
    counts, gene_names = estimated_counts(adata, np.asarray(cells, dtype=np.int64))
    totals = np.asarray(counts.sum(axis=0)).ravel()
    return [str(name) for name in gene_names[totals > min_total_count]]
