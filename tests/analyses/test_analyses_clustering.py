from __future__ import annotations

import json
import random

import anndata as ad
import igraph
import numpy as np
import pytest
import scanpy as sc
from sklearn.metrics import adjusted_rand_score

from analyses import InvalidRequestError, cluster_cells


def test_leiden_is_identical_to_scanpy_on_the_same_graph(pbmc: ad.AnnData) -> None:
    reference = pbmc.copy()
    sc.tl.leiden(reference, resolution=0.8, random_state=0, flavor="igraph", n_iterations=2, directed=False)

    result = cluster_cells(pbmc, method="leiden", resolution=0.8, random_state=0)

    assert result["labels"] == reference.obs["leiden"].astype(str).tolist()
    assert result["n_clusters"] == reference.obs["leiden"].nunique()
    assert "leiden" not in pbmc.obs  # the caller's object is untouched
    json.dumps(result)


def test_louvain_is_igraph_multilevel_on_the_same_graph_and_is_deterministic(pbmc: ad.AnnData) -> None:
    # The same algorithm driven directly: scanpy's graph conversion, igraph seeded the same way.
    graph = sc._utils.get_igraph_from_adjacency(pbmc.obsp["connectivities"], directed=False)
    igraph.set_random_number_generator(random.Random(0))
    try:
        multilevel = graph.community_multilevel(weights="weight", resolution=1.0)
    finally:
        igraph.set_random_number_generator(random)

    result = cluster_cells(pbmc, method="louvain", resolution=1.0, random_state=0)

    assert len(result["labels"]) == pbmc.n_obs
    assert result["n_clusters"] == len(set(result["labels"])) > 1
    assert adjusted_rand_score(multilevel.membership, result["labels"]) >= 0.9
    # ... and it recovers the published louvain clustering of this dataset reasonably well.
    assert adjusted_rand_score(pbmc.obs["louvain"], result["labels"]) >= 0.5
    assert cluster_cells(pbmc, method="louvain", resolution=1.0, random_state=0) == result


def test_resolution_controls_the_number_of_clusters(pbmc: ad.AnnData) -> None:
    for method in ("leiden", "louvain"):
        coarse = cluster_cells(pbmc, method=method, resolution=0.2)["n_clusters"]
        fine = cluster_cells(pbmc, method=method, resolution=2.0)["n_clusters"]
        assert coarse < fine, method


def test_graph_is_computed_when_absent(pbmc: ad.AnnData) -> None:
    del pbmc.obsp["connectivities"], pbmc.obsp["distances"], pbmc.uns["neighbors"]
    reference = pbmc.copy()
    sc.pp.neighbors(reference, n_neighbors=15, use_rep="X_pca", random_state=0)
    sc.tl.leiden(reference, random_state=0, flavor="igraph", n_iterations=2, directed=False)

    result = cluster_cells(pbmc, method="leiden", n_neighbors=15)

    assert "connectivities" not in pbmc.obsp
    assert adjusted_rand_score(reference.obs["leiden"], result["labels"]) > 0.99


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"method": "kmeans"}, "method"),
        ({"resolution": 0}, "resolution"),
        ({"resolution": "high"}, "resolution"),
    ],
)
def test_invalid_options_are_invalid_requests(pbmc: ad.AnnData, arguments: dict, field: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        cluster_cells(pbmc, **arguments)
    assert raised.value.field == field


def test_labels_are_strings_numbered_from_zero(pbmc: ad.AnnData) -> None:
    labels = cluster_cells(pbmc, method="louvain")["labels"]
    assert sorted(set(labels), key=int) == [str(k) for k in range(len(set(labels)))]
    counts = np.bincount(np.array(labels, dtype=int))
    assert np.all(np.diff(counts) <= 0)  # cluster "0" is the largest
