from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from analyses import UnknownCellSetError, list_cell_sets, resolve_cell_sets
from analyses.errors import InvalidRequestError


def test_list_cell_sets_covers_every_category_of_every_categorical_column(pbmc: ad.AnnData) -> None:
    cell_sets = list_cell_sets(pbmc)

    expected = [
        (f"{column}-{category}", column, str(category), int((pbmc.obs[column] == category).sum()))
        for column in pbmc.obs.columns
        if isinstance(pbmc.obs[column].dtype, pd.CategoricalDtype)
        for category in pbmc.obs[column].cat.categories
    ]
    assert [(s["id"], s["column"], s["category"], s["cell_count"]) for s in cell_sets] == expected
    assert {"louvain-3", "bulk_labels-Dendritic", "phase-G1"} <= {s["id"] for s in cell_sets}
    assert not any(s["column"] == "n_genes" for s in cell_sets)  # numeric columns are not cell sets
    json.dumps(cell_sets)


def test_resolve_cell_sets_returns_union_in_cell_order(pbmc: ad.AnnData) -> None:
    cells = resolve_cell_sets(pbmc, ["louvain-3", "louvain-1", "phase-S"])

    expected = np.flatnonzero(
        pbmc.obs["louvain"].isin(["3", "1"]).to_numpy() | (pbmc.obs["phase"] == "S").to_numpy()
    )
    np.testing.assert_array_equal(cells, expected)
    assert np.all(np.diff(cells) > 0)  # sorted, no duplicates


def test_resolve_none_selects_all_cells(pbmc: ad.AnnData) -> None:
    np.testing.assert_array_equal(resolve_cell_sets(pbmc, None), np.arange(pbmc.n_obs))


def test_resolve_unknown_cell_sets_names_every_unknown_id(pbmc: ad.AnnData) -> None:
    with pytest.raises(UnknownCellSetError) as raised:
        resolve_cell_sets(pbmc, ["louvain-1", "louvain-99", "nope-1"])

    assert raised.value.cell_set_ids == ["louvain-99", "nope-1"]
    assert raised.value.code == "UNKNOWN_CELL_SET"
    assert "louvain-99" in str(raised.value) and "nope-1" in str(raised.value)


def test_numeric_columns_and_bad_ids_are_rejected(pbmc: ad.AnnData) -> None:
    with pytest.raises(UnknownCellSetError):
        resolve_cell_sets(pbmc, ["n_genes-1003"])
    with pytest.raises(InvalidRequestError) as raised:
        resolve_cell_sets(pbmc, [3])  # type: ignore[list-item]
    assert raised.value.field == "cell_sets"


def test_empty_categories_are_listed_with_zero_cells() -> None:
    adata = ad.AnnData(
        obs=pd.DataFrame(
            {"group": pd.Categorical(["a", "a", "b"], categories=["a", "b", "c"])},
            index=["c1", "c2", "c3"],
        )
    )
    assert [(s["id"], s["cell_count"]) for s in list_cell_sets(adata)] == [
        ("group-a", 2),
        ("group-b", 1),
        ("group-c", 0),
    ]
    assert resolve_cell_sets(adata, ["group-c"]).tolist() == []


def test_every_listed_cell_set_resolves_to_its_cells(pbmc: ad.AnnData) -> None:
    for cell_set in list_cell_sets(pbmc):
        cells = resolve_cell_sets(pbmc, [cell_set["id"]])
        assert len(cells) == cell_set["cell_count"], cell_set["id"]
        assert (pbmc.obs[cell_set["column"]].astype(str).iloc[cells] == cell_set["category"]).all()


def test_numeric_categories_and_dashed_names_resolve() -> None:
    adata = ad.AnnData(
        obs=pd.DataFrame(
            {
                "cluster": pd.Categorical([1, 2, 2, 10]),
                "batch-id": pd.Categorical(["a-1", "b", "a-1", "b"]),
            },
            index=["c0", "c1", "c2", "c3"],
        )
    )
    assert [s["id"] for s in list_cell_sets(adata)] == [
        "cluster-1",
        "cluster-2",
        "cluster-10",
        "batch-id-a-1",
        "batch-id-b",
    ]
    assert resolve_cell_sets(adata, ["cluster-2"]).tolist() == [1, 2]
    assert resolve_cell_sets(adata, ["cluster-10", "batch-id-a-1"]).tolist() == [0, 2, 3]
    with pytest.raises(UnknownCellSetError):
        resolve_cell_sets(adata, ["cluster-3"])
