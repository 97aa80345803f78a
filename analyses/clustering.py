"""Graph-based clustering of cells (Leiden, Louvain) on the neighbours graph."""

from __future__ import annotations

import random
from typing import Literal, TypedDict

import igraph
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from ._utils import check_choice, check_int, check_positive_float, compute_neighbors
from .embedding import _scratch_with_pca
from .errors import InvalidRequestError

__all__ = ["CLUSTERING_METHODS", "ClusteringMethod", "ClusteringResult", "cluster_cells"]

ClusteringMethod = Literal["leiden", "louvain"]
CLUSTERING_METHODS: tuple[str, ...] = ("leiden", "louvain")


class ClusteringResult(TypedDict):
    """Result of :func:`cluster_cells`."""

    labels: list[str]
    n_clusters: int
    method: str
    resolution: float


def cluster_cells(
    adata: AnnData,
    *,
    method: ClusteringMethod = "leiden",
    resolution: float = 1.0,
    n_neighbors: int = 15,
    use_stored_graph: bool = True,
    n_iterations: int = 2,
    random_state: int = 0,
) -> ClusteringResult:
    """Cluster cells on their k-nearest-neighbours graph.

    Parameters
    ----------
    adata
        Annotated data matrix. Its stored neighbours graph (``.obsp`` named by
        ``.uns["neighbors"]``, usually ``"connectivities"``) is used when present; otherwise one is
        computed from the stored or a freshly computed PCA. ``adata`` is never modified.
    method
        ``"leiden"``: :func:`scanpy.tl.leiden` with ``flavor="igraph"`` (undirected, modularity),
        so results are identical to scanpy's given the same graph and parameters.
        ``"louvain"``: the Louvain (multilevel) algorithm of igraph,
        ``Graph.community_multilevel(weights="weight", resolution=resolution)``, on the undirected
        neighbours graph, with a private seeded random generator. The ``louvain`` package behind
        :func:`scanpy.tl.louvain` is not a dependency, scanpy's ``flavor="igraph"`` ignores the
        resolution and the seed, and leidenalg's Louvain mode (``refine_partition=False``) crashes in
        leidenalg 0.12; hence this implementation. Clusters are numbered by decreasing size.
    resolution
        Resolution of the modularity quality function; higher gives more, smaller clusters.
    n_neighbors
        Neighbours per cell when a graph has to be computed.
    use_stored_graph
        Use the stored neighbours graph when there is one.
    n_iterations
        Leiden optimisation iterations; ``-1`` runs until the partition stops improving. Louvain
        always runs until no move improves the modularity.
    random_state
        Seed (the result is deterministic for a given seed).

    Returns
    -------
    ClusteringResult
        ``{"labels": [label per cell, in cell order], "n_clusters", "method", "resolution"}``. Labels
        are ``"0"``, ``"1"``, ... like scanpy's.

    Raises
    ------
    InvalidRequestError
        For an unknown method or a non-positive resolution.
    """
    check_choice("method", method, CLUSTERING_METHODS)
    resolution = check_positive_float("resolution", resolution)
    check_int("n_neighbors", n_neighbors, minimum=2)
    if isinstance(n_iterations, bool) or not isinstance(n_iterations, int) or n_iterations == 0:
        raise InvalidRequestError("n_iterations", f"n_iterations must be -1 or >= 1, got {n_iterations!r}")
    if adata.n_obs < 2:
        raise InvalidRequestError("adata", f"Cannot cluster {adata.n_obs} cell(s)")

    adjacency = stored_connectivities(adata) if use_stored_graph else None
    if adjacency is None:
        scratch = _scratch_with_pca(adata, random_state=random_state)
        compute_neighbors(
            scratch, n_neighbors=min(n_neighbors, adata.n_obs - 1), use_rep="X_pca", random_state=random_state
        )
        adjacency = scratch.obsp["connectivities"]

    membership = cluster_graph(
        adjacency, method=method, resolution=resolution, n_iterations=n_iterations, random_state=random_state
    )
    labels = membership.astype(str).tolist()
    return ClusteringResult(labels=labels, n_clusters=len(set(labels)), method=method, resolution=resolution)


def stored_connectivities(adata: AnnData) -> sp.spmatrix | None:
    """The stored neighbours connectivities of ``adata``, or ``None``."""
    neighbors = adata.uns.get("neighbors")
    key = "connectivities"
    if isinstance(neighbors, dict):
        key = neighbors.get("connectivities_key", key)
    return adata.obsp.get(key, None)


def cluster_graph(
    adjacency: sp.spmatrix,
    *,
    method: str,
    resolution: float,
    n_iterations: int,
    random_state: int,
) -> np.ndarray:
    """Cluster membership (``int`` per node) of a weighted adjacency matrix."""
    if method == "leiden":
        holder = AnnData(obs=pd.DataFrame(index=pd.RangeIndex(adjacency.shape[0]).astype(str)))
        sc.tl.leiden(
            holder,
            adjacency=adjacency,
            resolution=resolution,
            random_state=random_state,
            n_iterations=n_iterations,
            flavor="igraph",
            directed=False,
            key_added="cluster",
        )
        return holder.obs["cluster"].to_numpy().astype(np.int64)
    return _louvain_membership(adjacency, resolution=resolution, seed=random_state)


def _louvain_membership(adjacency: sp.spmatrix, *, resolution: float, seed: int) -> np.ndarray:
    # Each undirected edge once, from the upper triangle of the symmetrised graph.
    symmetric = sp.csr_matrix(adjacency)
    symmetric = (symmetric + symmetric.T) / 2
    upper = sp.triu(symmetric, k=1).tocoo()
    graph = igraph.Graph(
        n=adjacency.shape[0],
        edges=list(zip(upper.row.tolist(), upper.col.tolist(), strict=True)),
        directed=False,
    )
    graph.es["weight"] = upper.data.astype(np.float64)
    # igraph draws from one process-wide generator (Python's `random` by default): seed a private
    # one for this call and put the default back afterwards.
    igraph.set_random_number_generator(random.Random(seed))
    try:
        membership = np.asarray(
            graph.community_multilevel(weights="weight", resolution=resolution).membership, dtype=np.int64
        )
    finally:
        igraph.set_random_number_generator(random)
    return _number_by_size(membership)


def _number_by_size(membership: np.ndarray) -> np.ndarray:
    """Renumber clusters 0, 1, ... by decreasing size (ties: order of first appearance)."""
    labels, first_seen, sizes = np.unique(membership, return_index=True, return_counts=True)
    ranking = np.lexsort((first_seen, -sizes))
    new_label = np.empty(len(labels), dtype=np.int64)
    new_label[ranking] = np.arange(len(labels))
    return new_label[np.searchsorted(labels, membership)]
