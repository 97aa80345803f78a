"""The neighbours helper: scanpy's default graph, also where scanpy 1.11 trips over pynndescent 0.7."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from sklearn.neighbors import KNeighborsTransformer

from analyses import _utils


def _points(n_cells: int) -> ad.AnnData:
    rng = np.random.default_rng(0)
    return ad.AnnData(
        obs=pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)]),
        obsm={"X_pca": rng.normal(size=(n_cells, 10)).astype(np.float32)},
    )


def test_large_data_uses_scanpys_pynndescent_settings_despite_csr_array_output(monkeypatch) -> None:
    import pynndescent  # in the lock (scanpy's umap-learn dependency)

    configurations: list[dict] = []

    def exact_graph_as_csr_array(self, X, y=None, **kwargs):
        # What pynndescent 0.7 returns (a csr_array), computed exactly so the result is checkable
        # (and without pynndescent's ~30 s of JIT compilation).
        configurations.append(self.get_params())
        graph = KNeighborsTransformer(n_neighbors=self.n_neighbors - 1, algorithm="brute").fit_transform(X)
        return sp.csr_array(graph)

    monkeypatch.setattr(pynndescent.PyNNDescentTransformer, "fit_transform", exact_graph_as_csr_array)
    monkeypatch.setattr(_utils, "_SCANPY_PYNNDESCENT_MIN_CELLS", 300)
    adata = _points(400)

    _utils.compute_neighbors(adata, n_neighbors=10, use_rep="X_pca", random_state=0)

    assert len(configurations) == 1
    assert configurations[0]["n_trees"] == min(64, 5 + round(400**0.5 / 20.0))
    assert configurations[0]["n_iters"] == max(5, round(np.log2(400)))
    assert configurations[0]["random_state"] == 0 and configurations[0]["n_neighbors"] == 10
    assert sp.isspmatrix_csr(adata.obsp["connectivities"])
    reference = _points(400)
    sc.pp.neighbors(reference, n_neighbors=10, use_rep="X_pca", transformer="sklearn")
    np.testing.assert_allclose(
        adata.obsp["connectivities"].toarray(), reference.obsp["connectivities"].toarray(), atol=1e-6
    )


def test_small_data_is_scanpys_exact_neighbours() -> None:
    adata, reference = _points(300), _points(300)
    _utils.compute_neighbors(adata, n_neighbors=10, use_rep="X_pca", random_state=0)
    sc.pp.neighbors(reference, n_neighbors=10, use_rep="X_pca", random_state=0)
    assert (adata.obsp["connectivities"] != reference.obsp["connectivities"]).nnz == 0
