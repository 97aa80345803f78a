"""2-D embeddings of cells (PCA, UMAP, t-SNE)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData

from ._utils import check_choice, check_int, compute_neighbors
from .errors import EmbeddingUnavailableError, InvalidRequestError

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
    use_stored: bool = True,
    min_dist: float | None = None,
    metric: str | None = None,
    perplexity: float | None = None,
    learning_rate: float | None = None,
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
    use_stored
        Reuse a stored embedding (default); ``False`` computes it with the options below (what
        Cellenics' UI asks for when it sends an embedding ``config`` without ``useSaved``).
    min_dist, metric
        UMAP: :func:`scanpy.tl.umap` ``min_dist`` (default 0.5) and the neighbours graph's distance
        metric (``"euclidean"`` or ``"cosine"``; another metric than the stored graph's makes a new
        graph).
    perplexity, learning_rate
        t-SNE: :func:`scanpy.tl.tsne` options (perplexity capped below a third of the cells).

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
    if metric is not None:
        check_choice("metric", metric, ("euclidean", "cosine"))
    for name, value, low, open_low in (
        ("min_dist", min_dist, 0.0, False),
        ("perplexity", perplexity, 0.0, True),
        ("learning_rate", learning_rate, 0.0, False),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            raise InvalidRequestError(name, f"{name} must be a number, got {value!r}")
        if value < low or (open_low and value == low):
            raise InvalidRequestError(
                name, f"{name} must be {'>' if open_low else '>='} {low:g}, got {value!r}"
            )
    check_int("n_neighbors", n_neighbors, minimum=2)
    key = f"X_{method}"
    coordinates = adata.obsm.get(key, None) if use_stored else None
    if coordinates is None:
        if not compute_if_missing:
            raise EmbeddingUnavailableError(
                f"The experiment has no stored {method} embedding (.obsm[{key!r}]) "
                "and computing it was not allowed"
            )
        coordinates = _compute(
            adata,
            method,
            n_neighbors=n_neighbors,
            random_state=random_state,
            options={
                "min_dist": min_dist,
                "metric": metric,
                "perplexity": perplexity,
                "learning_rate": learning_rate,
            },
        )
        if store:
            adata.obsm[key] = coordinates
    coordinates = np.asarray(coordinates)
    if coordinates.ndim != 2 or coordinates.shape[1] < 2:
        raise EmbeddingUnavailableError(
            f".obsm[{key!r}] has shape {coordinates.shape}; a 2-D embedding needs at least 2 columns"
        )
    return np.asarray(coordinates[:, :2], dtype=np.float64).tolist()


def _compute(
    adata: AnnData, method: str, *, n_neighbors: int, random_state: int, options: dict | None = None
) -> np.ndarray:
    options = {key: value for key, value in (options or {}).items() if value is not None}
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
        _ensure_neighbors(
            adata,
            scratch,
            n_neighbors=n_neighbors,
            random_state=random_state,
            metric=options.get("metric"),
        )
        sc.tl.umap(scratch, random_state=random_state, min_dist=float(options.get("min_dist", 0.5)))
        return scratch.obsm["X_umap"]
    # t-SNE only needs the representation; perplexity must stay below the number of cells.
    perplexity = min(float(options.get("perplexity", 30.0)), (adata.n_obs - 1) / 3)
    sc.tl.tsne(
        scratch,
        use_rep="X_pca",
        random_state=random_state,
        perplexity=perplexity,
        learning_rate=float(options.get("learning_rate", 1000.0)),
    )
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


def _ensure_neighbors(
    adata: AnnData, scratch: AnnData, *, n_neighbors: int, random_state: int, metric: str | None = None
) -> None:
    """Give ``scratch`` the stored neighbours graph of ``adata`` (when its metric is ``metric``), or
    compute one from its PCA."""
    neighbors = adata.uns.get("neighbors")
    stored_metric = (
        (neighbors or {}).get("params", {}).get("metric", "euclidean")
        if isinstance(neighbors, dict)
        else None
    )
    if isinstance(neighbors, dict) and metric in (None, stored_metric):
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
        metric=metric or "euclidean",
    )
