from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from analyses import (
    ANALYSIS_VERSION,
    PREPARE_STEPS,
    InvalidRequestError,
    MissingInputFileError,
    NoCellsLeftError,
    embedding,
    gene_expression,
    list_cell_sets,
    prepare_anndata,
    prepare_experiment,
    read_10x_matrix_dir,
    synthetic_anndata,
)


def _sparse_equal(left: sp.spmatrix, right: sp.spmatrix) -> bool:
    return left.shape == right.shape and (left != right).nnz == 0


def test_clusters_recover_the_synthetic_populations(prepared, synthetic_10x) -> None:
    adata, _ = prepared
    _, truth = synthetic_10x
    true_cluster = dict(zip(truth.barcodes, truth.clusters, strict=True))

    labels = [true_cluster[barcode] for barcode in adata.obs_names]
    assert adjusted_rand_score(labels, adata.obs["leiden"]) >= 0.85
    assert adata.obs["leiden"].dtype == "category"
    assert {"leiden-0", "leiden-1"} <= {cell_set["id"] for cell_set in list_cell_sets(adata)}


def test_parameters_and_qc_counts_are_recorded(prepared, synthetic_10x, prepare_parameters) -> None:
    adata, _ = prepared
    directory, truth = synthetic_10x
    record = adata.uns["interlinked"]

    assert record["analysis_version"] == ANALYSIS_VERSION
    assert record["source"] == str(directory)
    for name, value in prepare_parameters.items():
        assert record["parameters"][name] == value, name
    assert record["parameters"]["clustering_method"] == "leiden"
    assert record["parameters"]["effective"] == {"n_top_genes": 500, "n_pcs": 20, "n_neighbors": 15}
    qc = record["qc"]
    assert (qc["cells_before"], qc["genes_before"]) == (truth.n_cells, truth.n_genes)
    assert (qc["cells_after"], qc["genes_after"]) == adata.shape
    assert (
        qc["cells_before"] - qc["cells_after"]
        == qc["cells_removed_min_genes"] + qc["cells_removed_high_mito"]
    )
    assert qc["genes_before"] - qc["genes_after"] == qc["genes_removed_min_cells"]
    assert qc["n_mito_genes"] == 13
    assert record["n_clusters"] == adata.obs["leiden"].nunique()
    assert set(record["timings"]) == set(PREPARE_STEPS)


def test_qc_filters_match_scanpy_metrics_and_drop_high_mito_cells(
    prepared, synthetic_10x, prepare_parameters
) -> None:
    adata, _ = prepared
    directory, truth = synthetic_10x
    raw = sc.read_10x_mtx(directory)
    raw.var["mt"] = raw.var_names.str.startswith("MT-")
    sc.pp.calculate_qc_metrics(raw, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)

    expected_cells = (raw.obs["n_genes_by_counts"] >= prepare_parameters["min_genes"]) & (
        raw.obs["pct_counts_mt"] <= prepare_parameters["max_pct_mito"]
    )
    assert adata.obs_names.tolist() == raw.obs_names[expected_cells.to_numpy()].tolist()
    kept = raw[expected_cells.to_numpy()]
    expected_genes = np.asarray((kept.X > 0).sum(axis=0)).ravel() >= prepare_parameters["min_cells"]
    assert adata.var_names.tolist() == raw.var_names[expected_genes].tolist()
    np.testing.assert_allclose(
        adata.obs["pct_counts_mt"], raw.obs.loc[adata.obs_names, "pct_counts_mt"], rtol=1e-4, atol=1e-4
    )
    np.testing.assert_array_equal(
        adata.obs["n_genes_by_counts"], raw.obs.loc[adata.obs_names, "n_genes_by_counts"]
    )

    # The generator's low-quality (high mitochondrial) cells are gone, healthy ones mostly kept.
    low_quality = set(truth.barcodes[truth.low_quality])
    assert len(low_quality) > 50
    assert len(low_quality & set(adata.obs_names)) <= 0.1 * len(low_quality)
    assert adata.n_obs >= 0.9 * int((~truth.low_quality).sum())


def test_expression_is_log_normalised_with_all_genes_in_raw(prepared) -> None:
    adata, _ = prepared
    assert adata.raw is not None and adata.raw.n_vars == adata.n_vars
    totals = np.asarray(np.expm1(adata.raw.X).sum(axis=1)).ravel()
    np.testing.assert_allclose(totals, 1e4, rtol=1e-3)
    assert 0 < adata.var["highly_variable"].sum() <= 500
    assert adata.obsm["X_pca"].shape == (adata.n_obs, 20)
    assert adata.obsm["X_umap"].shape == (adata.n_obs, 2)
    # What the analysis service needs works on the result.
    assert len(embedding(adata, method="umap", compute_if_missing=False)) == adata.n_obs
    assert gene_expression(adata, genes=["MT-CO1"], cell_sets=["leiden-0"])["missing_genes"] == []


def test_progress_is_reported_after_every_step(prepared) -> None:
    _, reports = prepared
    assert [step for step, _ in reports] == list(PREPARE_STEPS)
    fractions = [fraction for _, fraction in reports]
    assert fractions == sorted(fractions) and fractions[0] > 0 and fractions[-1] == 1.0


def test_result_round_trips_through_h5ad(prepared, tmp_path: Path) -> None:
    adata, _ = prepared
    adata.write_h5ad(tmp_path / "processed.h5ad")
    back = ad.read_h5ad(tmp_path / "processed.h5ad")
    assert back.uns["interlinked"]["qc"] == adata.uns["interlinked"]["qc"]
    assert back.obs["leiden"].tolist() == adata.obs["leiden"].tolist()


@pytest.mark.parametrize("removed", ["barcodes.tsv.gz", "features.tsv.gz", "matrix.mtx.gz"])
def test_missing_file_error_names_the_file(synthetic_10x, tmp_path: Path, removed: str) -> None:
    directory, _ = synthetic_10x
    copy = tmp_path / "matrix"
    shutil.copytree(directory, copy)
    (copy / removed).unlink()

    with pytest.raises(MissingInputFileError) as raised:
        read_10x_matrix_dir(copy)
    assert removed.split(".")[0] in str(raised.value)
    assert raised.value.code == "MISSING_INPUT_FILE"
    assert isinstance(raised.value, FileNotFoundError)


def test_missing_directory_is_a_missing_input(tmp_path: Path) -> None:
    with pytest.raises(MissingInputFileError, match="does not exist"):
        read_10x_matrix_dir(tmp_path / "nowhere")


def test_mixed_and_legacy_layouts_read_like_the_standard_one(synthetic_10x, tmp_path: Path) -> None:
    directory, truth = synthetic_10x
    mixed = tmp_path / "mixed"
    shutil.copytree(directory, mixed)
    with gzip.open(mixed / "features.tsv.gz", "rb") as source:
        (mixed / "features.tsv").write_bytes(source.read())
    (mixed / "features.tsv.gz").unlink()
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name, target in [
        ("matrix.mtx.gz", "matrix.mtx"),
        ("barcodes.tsv.gz", "barcodes.tsv"),
        ("features.tsv.gz", "genes.tsv"),
    ]:
        with gzip.open(directory / name, "rb") as source:
            (legacy / target).write_bytes(source.read())

    for layout in (directory, mixed, legacy):
        adata = read_10x_matrix_dir(layout)
        assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32, layout
        assert _sparse_equal(adata.X, truth.counts), layout
        assert adata.obs_names.tolist() == truth.barcodes.tolist(), layout
        assert adata.var_names.tolist() == truth.gene_names.tolist(), layout
        assert adata.var["gene_ids"].tolist() == truth.gene_ids.tolist(), layout


def test_qc_removing_everything_is_a_clear_error() -> None:
    counts = synthetic_anndata(200, 200, seed=1)
    with pytest.raises(NoCellsLeftError, match="min_genes=100000"):
        prepare_anndata(counts, min_genes=100_000)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"max_pct_mito": 150}, "max_pct_mito"),
        ({"clustering_method": "kmeans"}, "clustering_method"),
        ({"n_pcs": 1}, "n_pcs"),
        ({"resolution": -1.0}, "resolution"),
    ],
)
def test_invalid_parameters_name_the_field(synthetic_10x, arguments: dict, field: str) -> None:
    directory, _ = synthetic_10x
    with pytest.raises(InvalidRequestError) as raised:
        prepare_experiment(directory, **arguments)
    assert raised.value.field == field


def test_prepare_anndata_leaves_its_input_alone_and_supports_louvain(
    synthetic_10x, prepare_parameters
) -> None:
    _, truth = synthetic_10x
    counts = truth.to_anndata()
    before = counts.X.copy()

    adata = prepare_anndata(
        counts, **{**prepare_parameters, "clustering_method": "louvain"}, compute_umap=False, store_raw=False
    )

    assert _sparse_equal(counts.X, before) and counts.n_obs == truth.n_cells
    assert adata.raw is None and "X_umap" not in adata.obsm
    assert adjusted_rand_score(adata.obs["synthetic_cluster"], adata.obs["louvain"]) >= 0.85
    assert adata.uns["interlinked"]["source"] == "anndata"
