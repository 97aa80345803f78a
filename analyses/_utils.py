"""Small private helpers shared by the analysis modules."""

from __future__ import annotations

import functools
import math
from collections.abc import Collection
from numbers import Integral

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from .errors import InvalidRequestError


def json_value(value: object) -> object:
    """Convert a numpy/pandas scalar to a JSON-safe builtin (NaN/NA -> ``None``)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str):
        return value
    return str(value)


def float_list(values: np.ndarray) -> list[float | None]:
    """A float vector as a JSON-safe list (non-finite values become ``None``)."""
    values = np.asarray(values, dtype=np.float64)
    if np.isfinite(values).all():
        return values.tolist()
    return [value if math.isfinite(value) else None for value in values.tolist()]


def optional_float(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def check_choice(field: str, value: object, choices: Collection[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(choice) for choice in choices)
        raise InvalidRequestError(field, f"{field} must be one of {allowed}, got {value!r}")
    return value


def check_int(field: str, value: object, *, minimum: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    # bool is an Integral but never a meaningful count.
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < minimum:
        expectation = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise InvalidRequestError(field, f"{field} must be {expectation}, got {value!r}")
    return int(value)


def check_positive_float(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise InvalidRequestError(field, f"{field} must be a positive number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise InvalidRequestError(field, f"{field} must be a positive number, got {value!r}")
    return number


def expression_source(adata: AnnData, use_raw: bool | None) -> tuple[object, pd.Index, str]:
    """The matrix holding per-gene expression: ``.raw`` when present (or asked), else ``.X``.

    Returns ``(matrix, gene_names, source)`` with ``source`` ``"raw"`` or ``"X"``.
    """
    if use_raw is None:
        use_raw = adata.raw is not None
    if use_raw:
        if adata.raw is None:
            raise InvalidRequestError("use_raw", "use_raw=True but the experiment has no .raw")
        return adata.raw.X, adata.raw.var_names, "raw"
    return adata.X, adata.var_names, "X"


def scratch_anndata(
    adata: AnnData,
    *,
    use_raw: bool | None,
    obs: pd.DataFrame | None = None,
) -> AnnData:
    """A lightweight AnnData sharing ``adata``'s expression matrix (no copy) for scanpy tools.

    Scanpy tools write their results into the object they are given; running them on this object
    keeps the caller's ``adata`` untouched without copying the experiment.
    """
    matrix, gene_names, _ = expression_source(adata, use_raw)
    if matrix is None:
        raise InvalidRequestError("adata", "The experiment has no expression matrix (.X is None)")
    if obs is None:
        obs = pd.DataFrame(index=adata.obs_names.copy())
    scratch = AnnData(X=matrix, obs=obs, var=pd.DataFrame(index=gene_names.copy()))
    if "log1p" in adata.uns:
        # rank_genes_groups reads the log base from here to compute fold changes.
        scratch.uns["log1p"] = dict(adata.uns["log1p"])
    return scratch


def compute_neighbors(
    adata: AnnData,
    *,
    n_neighbors: int,
    random_state: int,
    n_pcs: int | None = None,
    use_rep: str | None = None,
    metric: str = "euclidean",
) -> None:
    """:func:`scanpy.pp.neighbors` with scanpy's default algorithm, working around an incompatibility.

    For 8,192 cells or more scanpy uses pynndescent's ``PyNNDescentTransformer`` (with UMAP's
    ``n_trees``/``n_iters``). pynndescent 0.7 returns a ``scipy.sparse.csr_array`` there, which
    scanpy 1.11 cannot handle (``'csr_array' object has no attribute 'getnnz'``). Passing the same
    transformer, configured exactly as scanpy would, that returns a ``csr_matrix`` gives scanpy's
    result on every version.
    """
    transformer = None
    if adata.n_obs >= _SCANPY_PYNNDESCENT_MIN_CELLS:
        transformer = _csr_matrix_pynndescent_transformer()(
            n_neighbors=n_neighbors,
            metric=metric,
            metric_kwds={},
            random_state=random_state,
            n_jobs=sc.settings.n_jobs,
            n_trees=min(64, 5 + round(adata.n_obs**0.5 / 20.0)),
            n_iters=max(5, round(np.log2(adata.n_obs))),
        )
    sc.pp.neighbors(
        adata,
        n_neighbors=n_neighbors,
        n_pcs=n_pcs,
        use_rep=use_rep,
        random_state=random_state,
        transformer=transformer,
        **({} if transformer is not None else {"metric": metric}),
    )


# Below this many cells scanpy computes exact neighbours with scikit-learn (see `_handle_transformer`).
_SCANPY_PYNNDESCENT_MIN_CELLS = 8192


@functools.cache
def _csr_matrix_pynndescent_transformer() -> type:
    """``PyNNDescentTransformer`` whose graphs are ``csr_matrix`` (what scanpy expects).

    Built on first use: importing pynndescent is slow and most calls never need it.
    """
    from pynndescent import PyNNDescentTransformer

    class CsrMatrixPyNNDescentTransformer(PyNNDescentTransformer):
        def fit_transform(self, X, y=None, **fit_params):
            return sp.csr_matrix(super().fit_transform(X, y, **fit_params))

        def transform(self, X, y=None):
            return sp.csr_matrix(super().transform(X, y))

    return CsrMatrixPyNNDescentTransformer
