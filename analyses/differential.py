"""Differential expression between cell sets (scanpy's ``rank_genes_groups``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, NotRequired, TypedDict

import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData

from ._utils import check_choice, check_int, json_value, scratch_anndata
from .cell_sets import resolve_cell_sets
from .errors import InvalidRequestError

__all__ = [
    "DE_METHODS",
    "DifferentialExpressionResult",
    "DifferentialExpressionRow",
    "compared_cells",
    "comparison_labels",
    "differential_expression",
]

DE_METHODS: tuple[str, ...] = ("wilcoxon", "t-test", "t-test_overestim_var", "logreg")
_CORRECTION_METHODS: tuple[str, ...] = ("benjamini-hochberg", "bonferroni")

# Labels of the temporary grouping column handed to scanpy.
_GROUP, _REFERENCE, _OTHER = "group", "reference", "other"


class DifferentialExpressionRow(TypedDict):
    """One gene of a differential expression table."""

    gene: str
    score: float | None
    log_fold_change: float | None
    p_value: float | None
    adjusted_p_value: float | None
    pct_group: NotRequired[float | None]
    pct_reference: NotRequired[float | None]


class DifferentialExpressionResult(TypedDict):
    """Result of :func:`differential_expression`."""

    rows: list[DifferentialExpressionRow]
    n_cells_group: int
    n_cells_reference: int


def differential_expression(
    adata: AnnData,
    *,
    cell_set: str | Sequence[str],
    versus: str | Sequence[str] = "rest",
    method: Literal["wilcoxon", "t-test", "t-test_overestim_var", "logreg"] = "wilcoxon",
    corr_method: Literal["benjamini-hochberg", "bonferroni"] = "benjamini-hochberg",
    n_genes: int | None = None,
    use_raw: bool | None = None,
    tie_correct: bool = False,
    within: str | Sequence[str] | None = None,
) -> DifferentialExpressionResult:
    """Genes differentially expressed in a cell set compared with the rest or other cell sets.

    Runs :func:`scanpy.tl.rank_genes_groups` on a temporary two-group labelling, so results agree
    with calling scanpy directly on the same groups.

    Parameters
    ----------
    adata
        Annotated data matrix with log-normalised expression (as scanpy's fold changes assume).
    cell_set
        Cell set id, or several ids whose union forms the group.
    versus
        ``"rest"`` (every cell outside the group) or one or more cell set ids whose union forms the
        reference. Cells in both the group and the reference count for the group only.
    method, corr_method, tie_correct
        Passed to :func:`scanpy.tl.rank_genes_groups`.
    n_genes
        Number of top-ranked genes to return; ``None`` returns every gene.
    use_raw
        Test ``.raw`` (default when present) or ``.X``.
    within
        Cell set id(s) whose union restricts both the group and the reference (Cellenics'
        ``basis``); ``None`` uses every cell.

    Returns
    -------
    DifferentialExpressionResult
        ``{"rows": [...], "n_cells_group", "n_cells_reference"}``; rows are ordered by decreasing score
        (most up-regulated in the group first) with ``gene``, ``score``, ``log_fold_change`` (log2),
        ``p_value``, ``adjusted_p_value`` and the fractions of cells expressing the gene in the group
        and the reference (``pct_group``, ``pct_reference``). Non-finite values are ``None``.

    Raises
    ------
    UnknownCellSetError
        If a cell set id does not exist.
    InvalidRequestError
        If the group or the reference has fewer than 2 cells, or an option is invalid.
    """
    check_choice("method", method, DE_METHODS)
    check_choice("corr_method", corr_method, _CORRECTION_METHODS)
    n_genes_ = check_int("n_genes", n_genes, minimum=1, allow_none=True)

    labels, reference = comparison_labels(adata, cell_set=cell_set, versus=versus, within=within)
    n_group = int(np.count_nonzero(labels == _GROUP))
    n_reference = int(np.count_nonzero(labels == _REFERENCE))
    if n_group < 2:
        raise InvalidRequestError(
            "cell_set", f"The cell set {cell_set!r} has {n_group} cell(s); at least 2 are needed"
        )
    if n_reference < 2:
        raise InvalidRequestError(
            "versus",
            f"The reference {versus!r} has {n_reference} cell(s) outside the group; at least 2 are needed",
        )

    obs = pd.DataFrame(
        {"_de_group": pd.Categorical(labels, categories=[_GROUP, _REFERENCE, _OTHER])},
        index=adata.obs_names.copy(),
    )
    scratch = scratch_anndata(adata, use_raw=use_raw, obs=obs)
    sc.tl.rank_genes_groups(
        scratch,
        "_de_group",
        groups=[_GROUP],
        reference=reference,
        method=method,
        corr_method=corr_method,
        tie_correct=tie_correct,
        use_raw=False,
        n_genes=n_genes_ if n_genes_ is not None else scratch.n_vars,
        pts=False,
    )
    table = sc.get.rank_genes_groups_df(scratch, group=_GROUP)
    names = scratch.var_names.get_indexer(table["names"].astype(str))
    table["pct_nz_group"] = _expressing_fraction(scratch.X, labels == _GROUP)[names]
    table["pct_nz_reference"] = _expressing_fraction(
        scratch.X, labels == _REFERENCE if reference != "rest" else labels != _GROUP
    )[names]
    return DifferentialExpressionResult(
        rows=rank_table_rows(table),
        n_cells_group=n_group,
        n_cells_reference=n_reference,
    )


def comparison_labels(
    adata: AnnData,
    *,
    cell_set: str | Sequence[str],
    versus: str | Sequence[str] = "rest",
    within: str | Sequence[str] | None = None,
) -> tuple[np.ndarray, str]:
    """The label of every cell in a comparison (``"group"``, ``"reference"`` or ``"other"``) and
    the reference scanpy is given (``"rest"`` when the reference is every cell outside the group).

    Cells in both the group and the reference count for the group; with ``within``, cells outside
    it are ``"other"``.
    """
    group_cells = resolve_cell_sets(adata, _ids(cell_set, "cell_set"), field="cell_set")
    labels = np.full(adata.n_obs, _OTHER, dtype=object)
    if isinstance(versus, str) and versus == "rest":
        labels[:] = _REFERENCE
        reference = "rest"
    else:
        reference_cells = resolve_cell_sets(adata, _ids(versus, "versus"), field="versus")
        labels[reference_cells] = _REFERENCE
        reference = _REFERENCE
    labels[group_cells] = _GROUP
    if within is not None:
        basis_cells = resolve_cell_sets(adata, _ids(within, "within"), field="within")
        outside = np.ones(adata.n_obs, dtype=bool)
        outside[basis_cells] = False
        labels[outside] = _OTHER
        if reference == "rest":  # scanpy's "rest" would include the cells outside the basis
            reference = _REFERENCE
    return labels, reference


def compared_cells(
    adata: AnnData,
    *,
    cell_set: str | Sequence[str],
    versus: str | Sequence[str] = "rest",
    within: str | Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(group, reference)``: the cell indices of both sides of a comparison, as
    :func:`differential_expression` compares them."""
    labels, _ = comparison_labels(adata, cell_set=cell_set, versus=versus, within=within)
    return np.flatnonzero(labels == _GROUP), np.flatnonzero(labels == _REFERENCE)


def rank_table_rows(table: pd.DataFrame) -> list[DifferentialExpressionRow]:
    """Rows of a :func:`scanpy.get.rank_genes_groups_df` table as plain data (with the fractions of
    expressing cells when the table has them)."""
    columns = {
        name: table[name].tolist() if name in table.columns else [None] * len(table)
        for name in ("names", "scores", "logfoldchanges", "pvals", "pvals_adj")
    }
    fractions = {
        field: table[name].tolist()
        for name, field in (("pct_nz_group", "pct_group"), ("pct_nz_reference", "pct_reference"))
        if name in table.columns
    }
    return [
        DifferentialExpressionRow(
            gene=str(columns["names"][i]),
            score=json_value(columns["scores"][i]),
            log_fold_change=json_value(columns["logfoldchanges"][i]),
            p_value=json_value(columns["pvals"][i]),
            adjusted_p_value=json_value(columns["pvals_adj"][i]),
            **{field: json_value(values[i]) for field, values in fractions.items()},
        )
        for i in range(len(table))
    ]


def _expressing_fraction(matrix: object, cells: np.ndarray) -> np.ndarray:
    """Per gene, the fraction of ``cells`` (a boolean mask) with a non-zero value (Seurat's pct)."""
    subset = matrix[np.flatnonzero(cells)]
    if hasattr(subset, "getnnz"):
        counts = np.asarray((subset != 0).sum(axis=0)).ravel()
    else:
        counts = np.count_nonzero(np.asarray(subset), axis=0)
    return counts / max(1, int(cells.sum()))


def _ids(value: str | Iterable[str], field: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    ids = list(value)
    if not ids:
        raise InvalidRequestError(field, f"{field} must name at least one cell set")
    return ids
