"""2-D embeddings of cells (PCA, UMAP, t-SNE)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData

from ._utils import check_choice, check_int, compute_neighbors
from .errors import EmbeddingUnavailableError

__all__ = ["EMBEDDING_METHODS", "EmbeddingMethod", "embedding"]

EmbeddingMethod = Literal["pca", "umap", "tsne"]
EMBEDDING_METHODS: tuple[str, ...] = ("pca", "umap", "tsne")

# PCA components computed when PCA is needed and not stored (scanpy's default).
_DEFAULT_N_PCS = 50


def embedding(
    adata: AnnData,
    *,
    method: EmbeddingMethod = "pca",
    compute_if_missing: bool = True,
    store: bool = False,
    n_neighbors: int = 15,
    random_state: int = 0,
) -> list[list[float]]:
    """2-D coordinates of every cell in an embedding.

    A stored ``adata.obsm["X_<method>"]`` is reused as is. Otherwise the embedding is computed with
    scanpy the standard way: PCA on ``.X`` (restricted to ``.var["highly_variable"]`` when that
    column exists); UMAP / t-SNE from the stored neighbours graph and PCA when present, else from a
    PCA and neighbours graph computed on the fly.

    Parameters
    ----------
    adata
        Annotated data matrix.
    method
        ``"pca"``, ``"umap"`` or ``"tsne"``.
    compute_if_missing
        Compute the embedding when it is not stored; if ``False`` a missing embedding raises
        :class:`~analyses.errors.EmbeddingUnavailableError`.
    store
        Store a computed embedding in ``adata.obsm["X_<method>"]``. By default the caller's
        ``adata`` is never modified (computation happens on a lightweight object sharing the
        expression matrix).
    n_neighbors
        Neighbours per cell when a neighbours graph has to be computed (UMAP and t-SNE).
    random_state
        Seed for every randomised step.

    Returns
    -------
    list of [float, float]
        ``[x, y]`` per cell, in cell order (the first two embedding dimensions).

    Raises
    ------
    InvalidRequestError
        If ``method`` is not one of :data:`EMBEDDING_METHODS`.
    EmbeddingUnavailableError
        If the embedding is not stored and cannot or may not be computed.
    """
    check_choice("method", method, EMBEDDING_METHODS)
    check_int("n_neighbors", n_neighbors, minimum=2)
    key = f"X_{method}"
    coordinates = adata.obsm.get(key, None)
    if coordinates is None:
        if not compute_if_missing:
            raise EmbeddingUnavailableError(
                f"The experiment has no stored {method} embedding (.obsm[{key!r}]) "
                "and computing it was not allowed"
            )
        coordinates = _compute(adata, method, n_neighbors=n_neighbors, random_state=random_state)
        if store:
            adata.obsm[key] = coordinates
    coordinates = np.asarray(coordinates)
    if coordinates.ndim != 2 or coordinates.shape[1] < 2:
        raise EmbeddingUnavailableError(
            f".obsm[{key!r}] has shape {coordinates.shape}; a 2-D embedding needs at least 2 columns"
        )
    return np.asarray(coordinates[:, :2], dtype=np.float64).tolist()


def _compute(adata: AnnData, method: str, *, n_neighbors: int, random_state: int) -> np.ndarray:
    if adata.X is None:
        raise EmbeddingUnavailableError(f"Cannot compute {method}: the experiment has no .X")
    if adata.n_obs < 3:
        raise EmbeddingUnavailableError(
            f"Cannot compute {method} for {adata.n_obs} cell(s); at least 3 are needed"
        )
    scratch = _scratch_with_pca(adata, random_state=random_state)
    if method == "pca":
        return scratch.obsm["X_pca"]
    if method == "umap":
        _ensure_neighbors(adata, scratch, n_neighbors=n_neighbors, random_state=random_state)
        sc.tl.umap(scratch, random_state=random_state)
        return scratch.obsm["X_umap"]
    # t-SNE only needs the representation; perplexity must stay below the number of cells.
    perplexity = min(30.0, (adata.n_obs - 1) / 3)
    sc.tl.tsne(scratch, use_rep="X_pca", random_state=random_state, perplexity=perplexity)
    return scratch.obsm["X_tsne"]


def _scratch_with_pca(adata: AnnData, *, random_state: int) -> AnnData:
    """An AnnData sharing ``adata.X`` with a PCA in ``.obsm`` (stored one reused)."""
    var = pd.DataFrame(index=adata.var_names.copy())
    if "highly_variable" in adata.var.columns:
        # scanpy's PCA picks up this mask automatically, as it would on the real object.
        var["highly_variable"] = adata.var["highly_variable"].to_numpy()
    scratch = AnnData(X=adata.X, obs=pd.DataFrame(index=adata.obs_names.copy()), var=var)
    # Stored representations are shared by reference: a stored neighbours graph may name any of them.
    for key, value in adata.obsm.items():
        scratch.obsm[key] = value
    if "X_pca" in scratch.obsm:
        return scratch
    n_features = int(var["highly_variable"].sum()) if "highly_variable" in var else adata.n_vars
    n_comps = min(_DEFAULT_N_PCS, adata.n_obs - 1, n_features - 1)
    if n_comps < 2:
        raise EmbeddingUnavailableError(
            f"Cannot compute PCA: {adata.n_obs} cells x {n_features} genes is too small"
        )
    sc.pp.pca(scratch, n_comps=n_comps, random_state=random_state)
    return scratch


def _ensure_neighbors(adata: AnnData, scratch: AnnData, *, n_neighbors: int, random_state: int) -> None:
    """Give ``scratch`` the stored neighbours graph of ``adata``, or compute one from its PCA."""
    neighbors = adata.uns.get("neighbors")
    if isinstance(neighbors, dict):
        connectivities_key = neighbors.get("connectivities_key", "connectivities")
        distances_key = neighbors.get("distances_key", "distances")
        if connectivities_key in adata.obsp:
            scratch.obsp["connectivities"] = adata.obsp[connectivities_key]
            if distances_key in adata.obsp:
                scratch.obsp["distances"] = adata.obsp[distances_key]
            scratch.uns["neighbors"] = {
                **neighbors,
                "connectivities_key": "connectivities",
                "distances_key": "distances",
                "params": dict(neighbors.get("params", {"method": "umap"})),
            }
            return
    compute_neighbors(
        scratch,
        n_neighbors=min(n_neighbors, adata.n_obs - 1),
        use_rep="X_pca",
        random_state=random_state,
    )
