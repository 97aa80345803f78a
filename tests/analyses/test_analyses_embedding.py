from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from threadpoolctl import threadpool_limits

from analyses import EmbeddingUnavailableError, InvalidRequestError, embedding


def _align_signs(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """PCA components are defined up to sign: flip each column of actual to match expected."""
    signs = np.sign(np.sum(actual * expected, axis=0))
    return actual * signs


def test_stored_pca_is_returned_in_cell_order(pbmc: ad.AnnData) -> None:
    coordinates = embedding(pbmc, method="pca")

    assert isinstance(coordinates, list) and len(coordinates) == pbmc.n_obs
    assert all(isinstance(point, list) and len(point) == 2 for point in coordinates)
    np.testing.assert_array_equal(np.array(coordinates), pbmc.obsm["X_pca"][:, :2].astype(np.float64))


def test_missing_pca_is_recomputed_like_scanpy_without_mutating(pbmc: ad.AnnData) -> None:
    del pbmc.obsm["X_pca"]
    reference = pbmc.copy()
    sc.pp.pca(reference, random_state=0)

    coordinates = np.array(embedding(pbmc, method="pca"))

    assert "X_pca" not in pbmc.obsm  # the caller's object is untouched
    expected = reference.obsm["X_pca"][:, :2]
    np.testing.assert_allclose(_align_signs(coordinates, expected), expected, rtol=1e-4, atol=1e-4)


def test_store_keeps_the_computed_embedding(pbmc: ad.AnnData) -> None:
    del pbmc.obsm["X_pca"]
    coordinates = embedding(pbmc, method="pca", store=True)
    assert "X_pca" in pbmc.obsm
    np.testing.assert_allclose(pbmc.obsm["X_pca"][:, :2], np.array(coordinates))


def test_stored_umap_is_reused(pbmc: ad.AnnData) -> None:
    np.testing.assert_array_equal(np.array(embedding(pbmc, method="umap")), pbmc.obsm["X_umap"][:, :2])


def test_missing_umap_is_computed_from_the_stored_graph_like_scanpy(pbmc: ad.AnnData) -> None:
    del pbmc.obsm["X_umap"]
    reference = pbmc.copy()
    sc.tl.umap(reference, random_state=0)

    coordinates = np.array(embedding(pbmc, method="umap", random_state=0))

    assert "X_umap" not in pbmc.obsm
    np.testing.assert_allclose(coordinates, reference.obsm["X_umap"], rtol=1e-4, atol=1e-4)


def test_tsne_is_computed_like_scanpy_when_missing(pbmc: ad.AnnData) -> None:
    subset = pbmc[:250].copy()  # t-SNE is slow; a subset keeps the test quick
    reference = subset.copy()
    # In a long pytest session scikit-learn's OpenMP t-SNE can crawl on 2 busy cores (10x slower
    # than alone); one thread keeps it quick and does not change the result.
    with threadpool_limits(limits=1, user_api="openmp"):
        sc.tl.tsne(reference, use_rep="X_pca", random_state=0)
        coordinates = np.array(embedding(subset, method="tsne", random_state=0))

    assert coordinates.shape == (subset.n_obs, 2)
    assert "X_tsne" not in subset.obsm
    np.testing.assert_allclose(coordinates, reference.obsm["X_tsne"], rtol=1e-3, atol=1e-3)


def test_missing_embedding_without_computing_is_an_error(pbmc: ad.AnnData) -> None:
    with pytest.raises(EmbeddingUnavailableError) as raised:
        embedding(pbmc, method="tsne", compute_if_missing=False)
    assert raised.value.code == "EMBEDDING_UNAVAILABLE"
    assert "tsne" in str(raised.value)


def test_unknown_method_is_an_invalid_request(pbmc: ad.AnnData) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        embedding(pbmc, method="mds")  # type: ignore[arg-type]
    assert raised.value.field == "method"
    assert "'mds'" in str(raised.value)
