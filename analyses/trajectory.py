"""Trajectory analysis on a 2-D embedding: a graph of nodes to pick roots from, then pseudotime.

The real Cellenics worker runs Monocle 3 (``cluster_cells`` then ``learn_graph`` on the UMAP,
``order_cells`` from the chosen root nodes). This is the scanpy counterpart: the selected cells get
a neighbours graph in the embedding's space (as Monocle's, k = 25), are clustered (Louvain or
Leiden, the experiment's method and resolution), and :func:`scanpy.tl.paga`'s spanning tree
between the clusters is the trajectory graph, one node per cluster at its cells' mean position.
Pseudotime is :func:`scanpy.tl.dpt` (diffusion pseudotime) from the cell nearest to each root node,
the smallest over the roots. Every step is seeded, so the same request gives the same nodes: the
node numbers of :func:`trajectory_graph` are the ones :func:`trajectory_pseudotime` accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from ._utils import check_choice, check_int, check_positive_float, compute_neighbors, float_list
from .clustering import CLUSTERING_METHODS, cluster_graph
from .errors import InvalidRequestError

__all__ = ["TRAJECTORY_NEIGHBORS", "TrajectoryGraph", "trajectory_graph", "trajectory_pseudotime"]

#: Neighbours per cell of the graph in the embedding's space (Monocle's ``cluster_cells`` k).
TRAJECTORY_NEIGHBORS = 25
_MIN_CELLS = 10


class TrajectoryGraph(TypedDict):
    """Result of :func:`trajectory_graph`."""

    x: list[float]
    y: list[float]
    edges: list[list[int]]
    node_of_cell: list[int]


def _graph(
    coordinates: np.ndarray,
    *,
    method: str,
    resolution: float,
    n_neighbors: int,
    random_state: int,
) -> tuple[AnnData, np.ndarray, np.ndarray]:
    """The scratch AnnData (neighbours, ``_node`` clusters, PAGA), the node positions and the
    symmetric 0/1 adjacency of the tree."""
    check_choice("method", method, CLUSTERING_METHODS)
    resolution = check_positive_float("resolution", resolution)
    n_neighbors = int(check_int("n_neighbors", n_neighbors, minimum=2))
    n_cells = coordinates.shape[0]
    if n_cells < _MIN_CELLS:
        raise InvalidRequestError(
            "cell_sets", f"A trajectory needs at least {_MIN_CELLS} cells; the selection has {n_cells}"
        )
    scratch = AnnData(obs=pd.DataFrame(index=pd.RangeIndex(n_cells).astype(str)))
    scratch.obsm["X_embedding"] = np.asarray(coordinates, dtype=np.float64)
    compute_neighbors(
        scratch,
        n_neighbors=min(n_neighbors, n_cells - 1),
        use_rep="X_embedding",
        random_state=random_state,
    )
    membership = cluster_graph(
        scratch.obsp["connectivities"],
        method=method,
        resolution=resolution,
        n_iterations=2,
        random_state=random_state,
    )
    n_nodes = int(membership.max()) + 1
    scratch.obs["_node"] = pd.Categorical(membership.astype(str), categories=[str(k) for k in range(n_nodes)])
    positions = np.vstack([coordinates[membership == node].mean(axis=0) for node in range(n_nodes)])
    if n_nodes > 1:
        sc.tl.paga(scratch, groups="_node")
        tree = sp.csr_matrix(scratch.uns["paga"]["connectivities_tree"])
        adjacency = ((tree + tree.T) > 0).toarray()
    else:
        adjacency = np.zeros((1, 1), dtype=bool)
    return scratch, positions, adjacency


def trajectory_graph(
    coordinates: np.ndarray,
    *,
    method: str = "louvain",
    resolution: float = 0.8,
    n_neighbors: int = TRAJECTORY_NEIGHBORS,
    random_state: int = 0,
) -> TrajectoryGraph:
    """The trajectory graph of cells at ``coordinates`` (``n_cells x 2``, e.g. the UMAP of the
    selected cells).

    Returns
    -------
    TrajectoryGraph
        Node positions ``x``, ``y`` (node ``k`` is cluster ``k``, clusters numbered by decreasing
        size), ``edges`` ``[i, j]`` with ``i < j`` (a spanning tree of the clusters: PAGA's
        ``connectivities_tree``) and the node of every cell.
    """
    coordinates = np.asarray(coordinates, dtype=np.float64)[:, :2]
    scratch, positions, adjacency = _graph(
        coordinates, method=method, resolution=resolution, n_neighbors=n_neighbors, random_state=random_state
    )
    rows, columns = np.nonzero(np.triu(adjacency, k=1))
    return TrajectoryGraph(
        x=float_list(positions[:, 0]),
        y=float_list(positions[:, 1]),
        edges=[[int(i), int(j)] for i, j in zip(rows.tolist(), columns.tolist(), strict=True)],
        node_of_cell=scratch.obs["_node"].cat.codes.astype(int).tolist(),
    )


def trajectory_pseudotime(
    coordinates: np.ndarray,
    *,
    root_nodes: Sequence[int],
    method: str = "louvain",
    resolution: float = 0.8,
    n_neighbors: int = TRAJECTORY_NEIGHBORS,
    random_state: int = 0,
) -> list[float | None]:
    """Diffusion pseudotime of every cell (in the order of ``coordinates``) from the root nodes of
    :func:`trajectory_graph` (same arguments, same nodes).

    Each root node's cell is the cell of its cluster nearest to the node; a cell's pseudotime is the
    smallest :func:`scanpy.tl.dpt` value over the roots (each in [0, 1]). Cells the roots cannot
    reach are ``None``.

    Raises
    ------
    InvalidRequestError
        No root node, or one that is not a node of the graph.
    """
    coordinates = np.asarray(coordinates, dtype=np.float64)[:, :2]
    roots = list(root_nodes)
    if not roots:
        raise InvalidRequestError("root_nodes", "No root nodes were selected for the analysis")
    scratch, positions, _ = _graph(
        coordinates, method=method, resolution=resolution, n_neighbors=n_neighbors, random_state=random_state
    )
    n_nodes = positions.shape[0]
    bad = [
        node
        for node in roots
        if isinstance(node, bool) or not isinstance(node, int) or not 0 <= node < n_nodes
    ]
    if bad:
        raise InvalidRequestError(
            "root_nodes",
            f"root nodes must be node numbers 0..{n_nodes - 1} of the trajectory graph, got {bad}",
        )
    sc.tl.diffmap(scratch, n_comps=min(15, scratch.n_obs - 2), random_state=random_state)
    codes = scratch.obs["_node"].cat.codes.to_numpy()
    best = np.full(scratch.n_obs, np.inf)
    for node in dict.fromkeys(roots):
        members = np.flatnonzero(codes == node)
        nearest = members[np.argmin(((coordinates[members] - positions[node]) ** 2).sum(axis=1))]
        scratch.uns["iroot"] = int(nearest)
        sc.tl.dpt(scratch, n_dcs=min(10, scratch.obsm["X_diffmap"].shape[1]))
        best = np.minimum(best, scratch.obs["dpt_pseudotime"].to_numpy(dtype=np.float64))
    return float_list(best)
