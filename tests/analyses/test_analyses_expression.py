from __future__ import annotations

import json
import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from analyses import ExpressionIndex, InvalidRequestError, UnknownCellSetError, gene_expression

CELL_SETS = ["louvain-1", "louvain-3", "louvain-5"]


def test_expression_equals_raw_values_for_the_selected_cells_in_cell_order(pbmc: ad.AnnData) -> None:
    result = gene_expression(pbmc, genes=["CST3", "NKG7"], cell_sets=CELL_SETS)

    cells = np.flatnonzero(pbmc.obs["louvain"].isin(["1", "3", "5"]).to_numpy())
    assert result["cells"] == cells.tolist()
    for gene in ["CST3", "NKG7"]:
        expected = pbmc.raw[:, gene].X.toarray().ravel()[cells]
        np.testing.assert_array_equal(
            np.array(result["genes"][gene]["expression"], dtype=np.float32), expected
        )
    assert list(result["genes"]) == ["CST3", "NKG7"]
    assert result["missing_genes"] == []
    json.dumps(result, allow_nan=False)


def test_statistics_match_numpy_with_population_stdev(pbmc: ad.AnnData) -> None:
    result = gene_expression(pbmc, genes=["LYZ"], cell_sets=["louvain-0", "louvain-2"])

    cells = np.flatnonzero(pbmc.obs["louvain"].isin(["0", "2"]).to_numpy())
    values = pbmc.raw[:, "LYZ"].X.toarray().ravel()[cells].astype(np.float64)
    gene = result["genes"]["LYZ"]
    assert gene["mean"] == pytest.approx(values.mean())
    assert gene["stdev"] == pytest.approx(values.std(ddof=0))
    assert gene["min"] == pytest.approx(values.min())
    assert gene["max"] == pytest.approx(values.max())
    np.testing.assert_allclose(gene["z_score"], (values - values.mean()) / values.std(ddof=0), rtol=1e-10)
    assert np.mean(gene["z_score"]) == pytest.approx(0.0, abs=1e-9)
    assert np.std(gene["z_score"]) == pytest.approx(1.0)


def test_all_cells_when_no_cell_sets_and_missing_genes_are_reported(pbmc: ad.AnnData) -> None:
    result = gene_expression(pbmc, genes=["TGFB1", "CST3", "CST3", "not-a-gene"])

    assert result["cells"] == list(range(pbmc.n_obs))
    assert list(result["genes"]) == ["CST3"]
    assert result["missing_genes"] == ["TGFB1", "not-a-gene"]
    np.testing.assert_array_equal(
        np.array(result["genes"]["CST3"]["expression"], dtype=np.float32),
        pbmc.raw[:, "CST3"].X.toarray().ravel(),
    )


def test_zero_variance_gives_zero_z_scores_never_nan() -> None:
    adata = ad.AnnData(
        X=sp.csr_matrix(np.array([[0.0, 0.1], [0.0, 0.1], [0.0, 0.1], [1.0, 0.1]], dtype=np.float32)),
        obs=pd.DataFrame({"group": pd.Categorical(["a", "a", "a", "b"])}, index=list("wxyz")),
        var=pd.DataFrame(index=["zero_in_a", "constant"]),
    )
    result = gene_expression(adata, genes=["zero_in_a", "constant"], cell_sets=["group-a"])

    for gene in ["zero_in_a", "constant"]:
        assert result["genes"][gene]["stdev"] == 0.0
        assert result["genes"][gene]["z_score"] == [0.0, 0.0, 0.0]
    assert result["genes"]["constant"]["mean"] == pytest.approx(0.1)


def test_empty_selection_gives_empty_lists_and_null_statistics() -> None:
    adata = ad.AnnData(
        X=np.ones((2, 1), dtype=np.float32),
        obs=pd.DataFrame({"group": pd.Categorical(["a", "a"], categories=["a", "b"])}, index=["c1", "c2"]),
        var=pd.DataFrame(index=["g"]),
    )
    result = gene_expression(adata, genes=["g"], cell_sets=["group-b"])
    assert result["cells"] == []
    assert result["genes"]["g"] == {
        "expression": [],
        "mean": None,
        "stdev": None,
        "min": None,
        "max": None,
        "z_score": [],
    }


def test_unknown_cell_set_is_an_error(pbmc: ad.AnnData) -> None:
    with pytest.raises(UnknownCellSetError) as raised:
        gene_expression(pbmc, genes=["CST3"], cell_sets=["louvain-1", "louvain-42"])
    assert raised.value.cell_set_ids == ["louvain-42"]


def test_invalid_genes_argument_is_an_invalid_request(pbmc: ad.AnnData) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        gene_expression(pbmc, genes="CST3")  # type: ignore[arg-type]
    assert raised.value.field == "genes"


def test_prebuilt_index_gives_identical_results_and_uses_x_when_asked(pbmc: ad.AnnData) -> None:
    index = ExpressionIndex.from_adata(pbmc)
    assert index.source == "raw" and sp.isspmatrix_csc(index.matrix)
    assert gene_expression(pbmc, genes=["CST3"], cell_sets=CELL_SETS, index=index) == gene_expression(
        pbmc, genes=["CST3"], cell_sets=CELL_SETS
    )

    from_x = gene_expression(pbmc, genes=["CST3"], use_raw=False)
    np.testing.assert_array_equal(
        np.array(from_x["genes"]["CST3"]["expression"], dtype=np.float32), pbmc[:, "CST3"].X.ravel()
    )

    with pytest.raises(InvalidRequestError) as raised:
        gene_expression(pbmc[:10].copy(), genes=["CST3"], index=index)
    assert raised.value.field == "index"


def test_requests_with_an_index_never_densify_or_copy_the_experiment(monkeypatch: pytest.MonkeyPatch) -> None:
    n_cells, n_genes = 100_000, 2_000
    rng = np.random.default_rng(0)
    counts = sp.random(n_cells, n_genes, density=0.02, format="csr", dtype=np.float32, random_state=rng)
    adata = ad.AnnData(
        X=counts,
        obs=pd.DataFrame(
            {"cluster": pd.Categorical(rng.integers(0, 10, n_cells).astype(str))},
            index=pd.RangeIndex(n_cells).astype(str),
        ),
        var=pd.DataFrame(index=[f"G{i}" for i in range(n_genes)]),
    )
    index = ExpressionIndex.from_adata(adata)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a request densified or copied the whole matrix")

    for cls in (sp.csr_matrix, sp.csc_matrix):
        monkeypatch.setattr(cls, "toarray", forbidden)
        monkeypatch.setattr(cls, "todense", forbidden)
        monkeypatch.setattr(cls, "tocsc", forbidden)
    monkeypatch.setattr(ad.AnnData, "copy", forbidden)

    started = time.perf_counter()
    result = gene_expression(adata, genes=["G5", "G1999"], cell_sets=["cluster-1", "cluster-2"], index=index)
    elapsed = time.perf_counter() - started

    cells = np.array(result["cells"])
    monkeypatch.undo()
    np.testing.assert_array_equal(
        np.array(result["genes"]["G5"]["expression"], dtype=np.float32), counts[:, 5].toarray().ravel()[cells]
    )
    # Generous bound for a shared machine; densifying 100k x 2k cells alone takes far longer.
    assert elapsed < 1.0
