from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

from analyses import InvalidRequestError, UnknownCellSetError, differential_expression, marker_genes


def _scanpy_table(adata: ad.AnnData, group: str, **arguments: object) -> pd.DataFrame:
    reference = adata.copy()
    sc.tl.rank_genes_groups(reference, "louvain", method="wilcoxon", n_genes=adata.raw.n_vars, **arguments)
    return sc.get.rank_genes_groups_df(reference, group=group)


def _assert_rows_match(rows: list[dict], expected: pd.DataFrame) -> None:
    assert [row["gene"] for row in rows] == expected["names"].tolist()
    np.testing.assert_allclose([row["score"] for row in rows], expected["scores"], rtol=1e-6)
    np.testing.assert_allclose(
        [row["log_fold_change"] for row in rows], expected["logfoldchanges"], rtol=1e-5
    )
    np.testing.assert_allclose([row["p_value"] for row in rows], expected["pvals"], rtol=1e-6)
    np.testing.assert_allclose([row["adjusted_p_value"] for row in rows], expected["pvals_adj"], rtol=1e-6)


def test_cell_set_versus_rest_matches_scanpy(pbmc: ad.AnnData) -> None:
    result = differential_expression(pbmc, cell_set="louvain-3")

    _assert_rows_match(result["rows"], _scanpy_table(pbmc, "3", groups=["3"], reference="rest"))
    assert result["n_cells_group"] == int((pbmc.obs["louvain"] == "3").sum())
    assert result["n_cells_reference"] == pbmc.n_obs - result["n_cells_group"]
    assert "rank_genes_groups" in pbmc.uns and "_de_group" not in pbmc.obs  # caller's object untouched
    json.dumps(result, allow_nan=False)


def test_cell_set_versus_another_cell_set_matches_scanpy(pbmc: ad.AnnData) -> None:
    result = differential_expression(pbmc, cell_set="louvain-3", versus="louvain-1", n_genes=50)

    expected = _scanpy_table(pbmc, "3", groups=["3"], reference="1").head(50)
    _assert_rows_match(result["rows"], expected)
    assert len(result["rows"]) == 50
    assert result["n_cells_reference"] == int((pbmc.obs["louvain"] == "1").sum())


def test_unions_of_cell_sets_form_the_groups(pbmc: ad.AnnData) -> None:
    result = differential_expression(
        pbmc, cell_set=["louvain-0", "louvain-2"], versus=["louvain-1", "louvain-4"]
    )

    labelled = pbmc.copy()
    labelled.obs["pair"] = pd.Categorical(
        np.select(
            [labelled.obs["louvain"].isin(["0", "2"]), labelled.obs["louvain"].isin(["1", "4"])],
            ["group", "reference"],
            default="other",
        )
    )
    sc.tl.rank_genes_groups(
        labelled, "pair", groups=["group"], reference="reference", method="wilcoxon", n_genes=pbmc.raw.n_vars
    )
    _assert_rows_match(result["rows"], sc.get.rank_genes_groups_df(labelled, group="group"))


def test_unknown_cell_sets_and_tiny_groups_are_rejected(pbmc: ad.AnnData) -> None:
    with pytest.raises(UnknownCellSetError) as raised:
        differential_expression(pbmc, cell_set="louvain-3", versus=["louvain-77"])
    assert raised.value.field == "versus"

    pbmc.obs["single"] = pd.Categorical(["yes"] + ["no"] * (pbmc.n_obs - 1))
    with pytest.raises(InvalidRequestError) as raised:
        differential_expression(pbmc, cell_set="single-yes")
    assert raised.value.field == "cell_set"
    with pytest.raises(InvalidRequestError) as raised:
        differential_expression(pbmc, cell_set="louvain-3", versus="louvain-3")
    assert raised.value.field == "versus"


def test_marker_genes_match_scanpy_top_genes_per_cluster(pbmc: ad.AnnData) -> None:
    result = marker_genes(pbmc, group_by="louvain", n_genes=5)

    reference = pbmc.copy()
    sc.tl.rank_genes_groups(reference, "louvain", method="wilcoxon", n_genes=5)
    assert result["group_by"] == "louvain"
    assert [group["group"] for group in result["groups"]] == list(pbmc.obs["louvain"].cat.categories)
    for group in result["groups"]:
        expected = sc.get.rank_genes_groups_df(reference, group=group["group"])
        assert [gene["gene"] for gene in group["genes"]] == expected["names"].tolist()
        np.testing.assert_allclose([gene["p_value"] for gene in group["genes"]], expected["pvals"], rtol=1e-6)
        assert group["cell_set_id"] == f"louvain-{group['group']}"
        assert group["cell_count"] == int((pbmc.obs["louvain"] == group["group"]).sum())
    json.dumps(result, allow_nan=False)


def test_marker_genes_validate_group_by(pbmc: ad.AnnData) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        marker_genes(pbmc, group_by="no_such_column")
    assert raised.value.field == "group_by"
    assert "no_such_column" in str(raised.value)


def test_fold_changes_use_the_experiments_log_base(pbmc: ad.AnnData) -> None:
    pbmc.uns["log1p"] = {"base": 2.0}  # data declared as log2(x + 1)
    result = differential_expression(pbmc, cell_set="louvain-3", n_genes=20)

    expected = _scanpy_table(pbmc, "3", groups=["3"], reference="rest").head(20)
    _assert_rows_match(result["rows"], expected)
