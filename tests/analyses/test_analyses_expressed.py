"""The background expressed genes: counts recovered from a prepared experiment, the > 15 rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from analyses import MIN_TOTAL_COUNT, background_expressed_genes, estimated_counts


def _truth(prepared, synthetic_10x) -> tuple[object, np.ndarray]:
    adata, _ = prepared
    _, data = synthetic_10x
    rows = pd.Index(data.barcodes).get_indexer(adata.obs_names)
    columns = pd.Index(data.gene_names).get_indexer(adata.raw.var_names)
    assert (rows >= 0).all() and (columns >= 0).all()
    return adata, data.counts[rows][:, columns]


def test_counts_are_recovered_from_the_log_normalised_data(prepared, synthetic_10x) -> None:
    adata, truth = _truth(prepared, synthetic_10x)
    cells = np.arange(0, adata.n_obs, 3)
    counts, names = estimated_counts(adata, cells)
    assert list(names) == list(adata.raw.var_names)
    difference = abs(counts - sp.csr_matrix(truth[cells], dtype=np.float64))
    # float32 log-normalised values: a count may come back one off, almost all come back exact
    assert difference.max() <= 1 and difference.nnz <= 1e-4 * truth[cells].nnz


def test_background_genes_are_those_over_15_counts_in_the_given_cells(prepared, synthetic_10x) -> None:
    adata, truth = _truth(prepared, synthetic_10x)
    cells = np.flatnonzero(adata.obs["leiden"].to_numpy() == "0")
    totals = np.asarray(truth[cells].sum(axis=0)).ravel()
    genes = background_expressed_genes(adata, cells=cells)
    expected = set(adata.raw.var_names[totals > MIN_TOTAL_COUNT])
    near = set(adata.raw.var_names[np.abs(totals - MIN_TOTAL_COUNT) <= 3])  # rounding may tip these
    assert set(genes) - near == expected - near and 0 < len(genes) < adata.raw.n_vars


def test_a_counts_layer_is_used_as_it_is() -> None:
    import anndata as ad

    counts = sp.csr_matrix(np.array([[20, 0, 3], [0, 1, 13]], dtype=np.float32))
    adata = ad.AnnData(X=np.log1p(counts.toarray()), layers={"counts": counts})
    assert background_expressed_genes(adata, cells=[0, 1]) == ["0", "2"]  # totals 20, 1, 16
    assert background_expressed_genes(adata, cells=[0]) == ["0"]
