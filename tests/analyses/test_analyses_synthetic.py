from __future__ import annotations

import gzip
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

from analyses import InvalidRequestError, generate_counts, synthetic_anndata, write_10x


@pytest.fixture(scope="module")
def counts():
    return generate_counts(3_000, 2_000, n_clusters=6, seed=11)


def test_shape_sparsity_and_integer_counts(counts) -> None:
    matrix = counts.counts
    assert sp.isspmatrix_csr(matrix) and matrix.dtype == np.float32
    assert matrix.shape == (3_000, 2_000)
    assert 0.90 <= 1 - matrix.nnz / (3_000 * 2_000) <= 0.95
    assert matrix.has_canonical_format  # sorted, no duplicate entries
    assert np.all(matrix.data > 0) and np.all(matrix.data == np.round(matrix.data))
    assert len(set(counts.clusters.tolist())) == 6


def test_sparse_sampler_draws_negative_binomial_counts() -> None:
    # The burst sampler on a hand-made design: one cluster, every cell at the same library level.
    from analyses.synthetic import _LEVELS_PER_OCTAVE, _Cells, _Design, _generate_chunk

    n_cells, level = 20_000, 4 * _LEVELS_PER_OCTAVE  # expected library 2**4 = 16 UMIs
    profile = np.array([0.1, 0.3, 0.6])
    dispersion = np.array([0.5, 2.0, 20.0])
    design = _Design(
        gene_ids=np.array(["g0", "g1", "g2"], dtype=object),
        gene_names=np.array(["G0", "G1", "G2"], dtype=object),
        nuclear=np.arange(3),
        mito=np.array([], dtype=np.int64),
        profiles=profile[None, :],
        mito_profile=np.array([]),
        dispersion=dispersion,
        markers=[np.array([], dtype=np.int64)],
        cluster_weights=np.array([1.0]),
    )
    cells = _Cells(
        clusters=np.zeros(n_cells, dtype=np.int64),
        low_quality=np.zeros(n_cells, dtype=bool),
        nuclear_level=np.full(n_cells, level),
        mito_mean=np.zeros(n_cells),
    )
    drawn = _generate_chunk(design, cells, 0, n_cells, np.random.SeedSequence(0)).toarray()

    mean = 16 * profile
    np.testing.assert_allclose(drawn.mean(axis=0), mean, rtol=0.05)
    np.testing.assert_allclose(drawn.var(axis=0), mean + mean**2 / dispersion, rtol=0.1)
    np.testing.assert_allclose(
        (drawn == 0).mean(axis=0), (dispersion / (dispersion + mean)) ** dispersion, atol=0.02
    )


def test_same_seed_same_data_other_seed_other_data() -> None:
    first, again, other = (generate_counts(500, 300, seed=seed) for seed in (5, 5, 6))
    assert (first.counts != again.counts).nnz == 0
    assert first.barcodes.tolist() == again.barcodes.tolist()
    assert first.clusters.tolist() == again.clusters.tolist()
    assert first.counts.shape == other.counts.shape and (first.counts != other.counts).nnz > 0


def test_genes_and_barcodes_look_like_10x(counts) -> None:
    assert all(re.fullmatch(r"[ACGT]{16}-1", barcode) for barcode in counts.barcodes)
    assert len(set(counts.barcodes)) == counts.n_cells
    assert all(re.fullmatch(r"ENSG\d{11}", gene_id) for gene_id in counts.gene_ids)
    assert len(set(counts.gene_names)) == counts.n_genes
    assert set(counts.feature_types) == {"Gene Expression"}
    mito = [name for name in counts.gene_names if name.startswith("MT-")]
    expected = "MT-ND1 MT-ND2 MT-CO1 MT-CO2 MT-ATP8 MT-ATP6 MT-CO3 MT-ND3 MT-ND4L MT-ND4 MT-ND5 MT-ND6 MT-CYB"
    assert mito == expected.split()


def test_low_quality_cells_are_mostly_mitochondrial(counts) -> None:
    mito = np.char.startswith(counts.gene_names.astype(str), "MT-")
    totals = np.asarray(counts.counts.sum(axis=1)).ravel()
    pct_mito = 100 * np.asarray(counts.counts[:, mito].sum(axis=1)).ravel() / np.maximum(totals, 1)
    assert 0.02 < counts.low_quality.mean() < 0.09
    assert np.median(pct_mito[counts.low_quality]) > 30
    assert np.median(pct_mito[~counts.low_quality]) < 8
    assert np.median(totals[counts.low_quality]) < 0.6 * np.median(totals[~counts.low_quality])


def test_marker_genes_are_higher_in_their_cluster(counts) -> None:
    names = counts.gene_names.tolist()
    for cluster, markers in counts.marker_genes.items():
        columns = [names.index(marker) for marker in markers]
        inside = counts.counts[counts.clusters == cluster][:, columns].mean()
        outside = counts.counts[counts.clusters != cluster][:, columns].mean()
        assert inside > 3 * outside, cluster
    all_markers = [marker for markers in counts.marker_genes.values() for marker in markers]
    assert len(all_markers) == len(set(all_markers))  # disjoint between clusters


def test_write_10x_is_the_v3_format_read_by_scanpy(counts, tmp_path: Path) -> None:
    written = write_10x(tmp_path, counts)
    assert written is counts
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "barcodes.tsv.gz",
        "features.tsv.gz",
        "matrix.mtx.gz",
    ]

    with gzip.open(tmp_path / "matrix.mtx.gz", "rt") as handle:
        header = [next(handle) for _ in range(4)]
    assert header[0] == "%%MatrixMarket matrix coordinate integer general\n"
    assert header[1].startswith("%metadata_json: ")
    assert header[2].split() == [str(counts.n_genes), str(counts.n_cells), str(counts.counts.nnz)]
    gene, cell, value = (int(field) for field in header[3].split())
    assert counts.counts[cell - 1, gene - 1] == value  # 1-based (gene, cell, count)
    with gzip.open(tmp_path / "features.tsv.gz", "rt") as handle:
        first_feature = handle.readline().rstrip("\n").split("\t")
    assert first_feature == [counts.gene_ids[0], counts.gene_names[0], "Gene Expression"]

    adata = sc.read_10x_mtx(tmp_path)
    assert (sp.csr_matrix(adata.X) != counts.counts).nnz == 0
    assert adata.obs_names.tolist() == counts.barcodes.tolist()
    assert adata.var_names.tolist() == counts.gene_names.tolist()
    assert adata.var["gene_ids"].tolist() == counts.gene_ids.tolist()


def test_write_10x_generates_when_given_options(tmp_path: Path) -> None:
    data = write_10x(tmp_path, n_cells=300, n_genes=200, seed=2)
    assert sc.read_10x_mtx(tmp_path).shape == (300, 200) == data.counts.shape
    with pytest.raises(InvalidRequestError):
        write_10x(tmp_path, data, n_cells=10)


def test_synthetic_anndata_carries_counts_and_truth() -> None:
    adata = synthetic_anndata(400, 300, n_clusters=3, seed=4)
    assert adata.shape == (400, 300)
    assert adata.obs["synthetic_cluster"].dtype == "category"
    assert set(adata.obs["synthetic_cluster"].cat.categories) == {"0", "1", "2"}
    assert adata.obs["synthetic_low_quality"].dtype == bool
    assert list(adata.var.columns) == ["gene_ids", "feature_types"]
    expected = generate_counts(400, 300, n_clusters=3, seed=4).counts
    assert (expected != adata.X).nnz == 0


def test_generation_is_chunked_and_never_densifies() -> None:
    n_cells, n_genes = 20_000, 2_000  # several internal chunks
    tracemalloc.start()
    try:
        data = generate_counts(n_cells, n_genes, seed=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    dense_float32_bytes = n_cells * n_genes * 4
    assert data.counts.shape == (n_cells, n_genes)
    assert peak < 0.6 * dense_float32_bytes


@pytest.mark.parametrize(
    ("arguments", "field"),
    [({"n_cells": 0}, "n_cells"), ({"n_genes": 5}, "n_genes"), ({"n_clusters": 500}, "n_clusters")],
)
def test_invalid_generator_arguments(arguments: dict, field: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        generate_counts(**{"n_cells": 100, "n_genes": 200, **arguments})
    assert raised.value.field == field


def test_row_blocks_are_stacked_exactly_even_when_the_first_block_underestimates() -> None:
    from analyses.synthetic import _stack_rows

    rng = np.random.default_rng(0)
    shapes = [(10, 0.01), (30, 0.3), (5, 0.0), (40, 0.5)]  # the first block is far sparser
    blocks = [
        sp.random(n, 50, density=d, format="csr", dtype=np.float32, random_state=rng) for n, d in shapes
    ]

    stacked = _stack_rows(iter(blocks), n_cells=85, n_genes=50)

    stacked.check_format(full_check=True)
    assert (stacked != sp.vstack(blocks, format="csr")).nnz == 0
    assert stacked.has_canonical_format
