"""Marker genes: the top-ranked genes of every group of a categorical ``.obs`` column."""

from __future__ import annotations

from typing import Literal, TypedDict

import pandas as pd
import scanpy as sc
from anndata import AnnData

from ._utils import check_choice, check_int, scratch_anndata
from .cell_sets import cell_set_id
from .differential import DE_METHODS, DifferentialExpressionRow, rank_table_rows
from .errors import InvalidRequestError

__all__ = ["MarkerGenesResult", "MarkerGroup", "marker_genes"]


class MarkerGroup(TypedDict):
    """Marker genes of one group."""

    group: str
    cell_set_id: str
    cell_count: int
    genes: list[DifferentialExpressionRow]


class MarkerGenesResult(TypedDict):
    """Result of :func:`marker_genes`."""

    group_by: str
    groups: list[MarkerGroup]


def marker_genes(
    adata: AnnData,
    *,
    group_by: str = "louvain",
    n_genes: int = 10,
    method: Literal["wilcoxon", "t-test", "t-test_overestim_var", "logreg"] = "wilcoxon",
    use_raw: bool | None = None,
    tie_correct: bool = False,
) -> MarkerGenesResult:
    """Top ``n_genes`` marker genes of each group, each group against all other cells.

    Runs :func:`scanpy.tl.rank_genes_groups` (``reference="rest"``) on ``group_by``, so results
    agree with calling scanpy directly.

    Parameters
    ----------
    adata
        Annotated data matrix with log-normalised expression.
    group_by
        A categorical (or string) ``.obs`` column, e.g. a clustering.
    n_genes
        Markers per group.
    method, tie_correct
        Passed to :func:`scanpy.tl.rank_genes_groups`.
    use_raw
        Test ``.raw`` (default when present) or ``.X``.

    Returns
    -------
    MarkerGenesResult
        ``{"group_by", "groups": [{"group", "cell_set_id", "cell_count", "genes": [...]}]}`` in category
        order; genes as in :func:`~analyses.differential.differential_expression`, best first. Groups
        with fewer than 2 cells cannot be tested and get an empty gene list.

    Raises
    ------
    InvalidRequestError
        If ``group_by`` is not an ``.obs`` column, has fewer than 2 testable groups, or an option is
        invalid.
    """
    check_choice("method", method, DE_METHODS)
    n_genes_ = check_int("n_genes", n_genes, minimum=1)
    if not isinstance(group_by, str) or group_by not in adata.obs.columns:
        raise InvalidRequestError("group_by", f"group_by {group_by!r} is not an .obs column")
    values = adata.obs[group_by]
    if not isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype("category")
    counts = values.value_counts(sort=False)
    categories = [str(category) for category in values.cat.categories]
    testable = [str(category) for category, count in counts.items() if count >= 2]
    if len(testable) < 2:
        raise InvalidRequestError(
            "group_by", f"group_by {group_by!r} needs at least 2 groups with 2 or more cells each"
        )

    obs = pd.DataFrame(
        {group_by: pd.Categorical(values.astype(str).to_numpy(), categories=categories)},
        index=adata.obs_names.copy(),
    )
    scratch = scratch_anndata(adata, use_raw=use_raw, obs=obs)
    sc.tl.rank_genes_groups(
        scratch,
        group_by,
        groups=testable,
        reference="rest",
        method=method,
        tie_correct=tie_correct,
        use_raw=False,
        n_genes=min(n_genes_, scratch.n_vars),
    )
    groups: list[MarkerGroup] = []
    for category, count in zip(categories, counts.to_numpy(), strict=True):
        genes = (
            rank_table_rows(sc.get.rank_genes_groups_df(scratch, group=category))
            if category in testable
            else []
        )
        groups.append(
            MarkerGroup(
                group=category,
                cell_set_id=cell_set_id(group_by, category),
                cell_count=int(count),
                genes=genes,
            )
        )
    return MarkerGenesResult(group_by=group_by, groups=groups)
