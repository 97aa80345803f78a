"""Per-gene expression values and summary statistics over a selection of cells."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._utils import expression_source, float_list, optional_float
from .cell_sets import resolve_cell_sets
from .errors import InvalidRequestError

__all__ = ["ExpressionIndex", "GeneExpression", "GeneExpressionResult", "gene_expression"]


class GeneExpression(TypedDict):
    """Expression of one gene over the selected cells (see :func:`gene_expression`)."""

    expression: list[float]
    mean: float | None
    stdev: float | None
    min: float | None
    max: float | None
    z_score: list[float]


class GeneExpressionResult(TypedDict):
    """Result of :func:`gene_expression`."""

    cells: list[int]
    genes: dict[str, GeneExpression]
    missing_genes: list[str]


@dataclass(frozen=True, eq=False)
class ExpressionIndex:
    """Column-oriented expression matrix with a gene-name lookup, built once per experiment.

    Reading one gene from a CSR (cell-major) matrix touches every row; a CSC copy makes it a
    contiguous slice, so a long-running service answers gene requests in milliseconds by building
    this once with :meth:`from_adata` and passing it to :func:`gene_expression`.

    Attributes
    ----------
    matrix
        Cells x genes expression, ``scipy.sparse.csc_matrix`` (or a Fortran-ordered array when the
        source is dense).
    gene_columns
        Gene name -> column of ``matrix``. With duplicated names the first column wins.
    source
        ``"raw"`` (``adata.raw.X``) or ``"X"`` (``adata.X``).
    """

    matrix: sp.csc_matrix | np.ndarray
    gene_columns: dict[str, int] = field(repr=False)
    source: str

    @classmethod
    def from_adata(cls, adata: AnnData, *, use_raw: bool | None = None) -> ExpressionIndex:
        """Index the expression of ``adata``.

        Parameters
        ----------
        adata
            Annotated data matrix.
        use_raw
            Read ``adata.raw`` (``True``) or ``adata.X`` (``False``); by default ``.raw`` when
            present, so that genes outside the processed ``.X`` are available.
        """
        matrix, gene_names, source = expression_source(adata, use_raw)
        if matrix is None:
            raise InvalidRequestError("adata", "The experiment has no expression matrix (.X is None)")
        if sp.issparse(matrix):
            matrix = sp.csc_matrix(matrix)
            matrix.sort_indices()
        else:
            matrix = np.asfortranarray(np.asarray(matrix))
        gene_columns: dict[str, int] = {}
        for column, name in enumerate(gene_names.astype(str)):
            gene_columns.setdefault(name, column)
        return cls(matrix=matrix, gene_columns=gene_columns, source=source)

    @property
    def n_cells(self) -> int:
        return int(self.matrix.shape[0])

    def column_values(self, column: int) -> np.ndarray:
        """Dense ``float64`` expression of every cell for one matrix column."""
        if isinstance(self.matrix, np.ndarray):
            return np.asarray(self.matrix[:, column], dtype=np.float64)
        start, stop = self.matrix.indptr[column], self.matrix.indptr[column + 1]
        values = np.zeros(self.matrix.shape[0], dtype=np.float64)
        values[self.matrix.indices[start:stop]] = self.matrix.data[start:stop]
        return values


def gene_expression(
    adata: AnnData,
    *,
    genes: Sequence[str],
    cell_sets: Iterable[str] | None = None,
    index: ExpressionIndex | None = None,
    use_raw: bool | None = None,
) -> GeneExpressionResult:
    """Expression of genes over the union of cell sets, with summary statistics.

    Parameters
    ----------
    adata
        Annotated data matrix.
    genes
        Gene names (exact, case-sensitive matches against the expression source's gene names).
        Duplicates are answered once. Unknown genes are reported in ``missing_genes``.
    cell_sets
        Cell set ids (see :mod:`analyses.cell_sets`); the cells are their union, in cell order.
        ``None`` selects every cell.
    index
        A prebuilt :class:`ExpressionIndex` for ``adata``; built on the fly when omitted (which
        costs one CSC conversion, so long-running callers should build it once).
    use_raw
        When building the index here: read ``.raw`` (default when present) or ``.X``.

    Returns
    -------
    GeneExpressionResult
        ``{"cells": [cell index, ...], "genes": {gene: {...}}, "missing_genes": [...]}``. Per gene:
        ``expression`` (value per selected cell), ``mean``, ``stdev``, ``min``, ``max`` and
        ``z_score`` (``(expression - mean) / stdev`` per cell). ``stdev`` is the *population*
        standard deviation (``ddof=0``), so z-scores have mean 0 and variance 1 over the selection.
        A gene with the same value in every selected cell gets a z-score of 0 everywhere. With no
        cells selected the statistics are ``None`` and the lists empty.

    Raises
    ------
    UnknownCellSetError
        If a cell set id does not exist.
    InvalidRequestError
        If ``genes`` is not a list of strings, or ``index`` does not match ``adata``.
    """
    requested = _gene_list(genes)
    if index is None:
        index = ExpressionIndex.from_adata(adata, use_raw=use_raw)
    elif index.n_cells != adata.n_obs:
        raise InvalidRequestError(
            "index", f"The expression index has {index.n_cells} cells but the experiment {adata.n_obs}"
        )
    cells = resolve_cell_sets(adata, cell_sets)
    all_cells = len(cells) == adata.n_obs

    results: dict[str, GeneExpression] = {}
    missing: list[str] = []
    for gene in requested:
        column = index.gene_columns.get(gene)
        if column is None:
            missing.append(gene)
            continue
        values = index.column_values(column)
        results[gene] = _summarise(values if all_cells else values[cells])
    return GeneExpressionResult(cells=cells.tolist(), genes=results, missing_genes=missing)


def _summarise(values: np.ndarray) -> GeneExpression:
    if values.size == 0:
        return GeneExpression(expression=[], mean=None, stdev=None, min=None, max=None, z_score=[])
    mean = float(values.mean())
    minimum, maximum = float(values.min()), float(values.max())
    # Exactly constant values have zero variance; computing it would leave rounding noise.
    stdev = 0.0 if minimum == maximum else float(values.std())
    z_scores = np.zeros_like(values) if stdev == 0.0 else (values - mean) / stdev
    return GeneExpression(
        expression=float_list(values),
        mean=optional_float(mean),
        stdev=optional_float(stdev),
        min=optional_float(minimum),
        max=optional_float(maximum),
        z_score=float_list(z_scores),
    )


def _gene_list(genes: Sequence[str]) -> list[str]:
    if isinstance(genes, str) or not isinstance(genes, Sequence | pd.Index | np.ndarray):
        raise InvalidRequestError("genes", f"genes must be a list of gene names, got {genes!r}")
    bad = [gene for gene in genes if not isinstance(gene, str)]
    if bad:
        raise InvalidRequestError("genes", f"genes must be gene name strings, got {bad[0]!r}")
    return list(dict.fromkeys(genes))
