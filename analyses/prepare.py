"""Preparing an experiment: 10x matrix directory -> QC -> normalisation -> clusters and embeddings."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from ._utils import check_choice, check_int, check_positive_float, compute_neighbors
from ._version import ANALYSIS_VERSION
from .clustering import CLUSTERING_METHODS, cluster_graph
from .errors import InvalidInputDataError, InvalidRequestError, MissingInputFileError, NoCellsLeftError

__all__ = [
    "PREPARE_STEPS",
    "ProgressCallback",
    "prepare_anndata",
    "prepare_experiment",
    "read_10x_matrix_dir",
]

#: ``progress(step_name, fraction_done)``; ``fraction_done`` is the overall fraction in [0, 1].
ProgressCallback = Callable[[str, float], None]

# Steps reported to the progress callback, with their rough share of the total run time.
_STEP_WEIGHTS: dict[str, float] = {
    "read": 0.10,
    "qc": 0.05,
    "normalise": 0.05,
    "highly_variable_genes": 0.05,
    "pca": 0.15,
    "neighbors": 0.20,
    "clustering": 0.10,
    "umap": 0.30,
}
PREPARE_STEPS: tuple[str, ...] = tuple(_STEP_WEIGHTS)

_MATRIX_FILES = ("matrix.mtx.gz", "matrix.mtx")
_BARCODE_FILES = ("barcodes.tsv.gz", "barcodes.tsv")
_FEATURE_FILES = ("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv")


def read_10x_matrix_dir(matrix_dir: str | Path, *, gex_only: bool = True) -> AnnData:
    """Read a 10x Genomics matrix directory (Cell Ranger v2 or v3 layout).

    Accepts ``matrix.mtx[.gz]``, ``barcodes.tsv[.gz]`` and ``features.tsv[.gz]`` or ``genes.tsv[.gz]``
    in any combination of compressed and plain files. The two standard layouts are read by
    :func:`scanpy.read_10x_mtx`; mixed layouts by an equivalent reader. Genes are named by their
    symbols (made unique), with ``gene_ids`` (and ``feature_types`` when present) in ``.var``.

    Parameters
    ----------
    matrix_dir
        The directory.
    gex_only
        Keep only ``Gene Expression`` features (v3 files list other feature types too).

    Returns
    -------
    AnnData
        Cells x genes counts, CSR ``float32``.

    Raises
    ------
    MissingInputFileError
        If the directory or one of the three files is missing (the message names it).
    InvalidInputDataError
        If the files disagree with each other or cannot be parsed.
    """
    directory = Path(matrix_dir)
    if not directory.is_dir():
        raise MissingInputFileError(str(directory), f"10x matrix directory {directory} does not exist")
    matrix_path = _find(directory, _MATRIX_FILES)
    barcodes_path = _find(directory, _BARCODE_FILES)
    features_path = _find(directory, _FEATURE_FILES)

    scanpy_v3 = {matrix_path.name, barcodes_path.name, features_path.name} == {
        "matrix.mtx.gz",
        "barcodes.tsv.gz",
        "features.tsv.gz",
    }
    scanpy_legacy = {matrix_path.name, barcodes_path.name, features_path.name} == {
        "matrix.mtx",
        "barcodes.tsv",
        "genes.tsv",
    }
    try:
        if scanpy_v3 or scanpy_legacy:
            adata = sc.read_10x_mtx(directory, var_names="gene_symbols", make_unique=True, gex_only=gex_only)
        else:
            adata = _read_10x_files(matrix_path, barcodes_path, features_path, gex_only=gex_only)
    except (ValueError, IndexError, KeyError, pd.errors.ParserError, EOFError, OSError) as error:
        raise InvalidInputDataError(f"Cannot read the 10x matrix directory {directory}: {error}") from error
    if not sp.issparse(adata.X) or adata.X.format != "csr":
        adata.X = sp.csr_matrix(adata.X)
    return adata


def prepare_experiment(
    matrix_dir: str | Path,
    *,
    min_genes: int = 200,
    min_cells: int = 3,
    max_pct_mito: float = 20.0,
    mito_prefix: str = "MT-",
    target_sum: float = 1e4,
    n_top_genes: int = 2000,
    n_pcs: int = 50,
    n_neighbors: int = 15,
    clustering_method: str = "leiden",
    resolution: float = 1.0,
    compute_umap: bool = True,
    store_raw: bool = True,
    random_state: int = 0,
    progress: ProgressCallback | None = None,
) -> AnnData:
    """Process a 10x matrix directory into an experiment ready for the analysis service.

    Reads the directory (:func:`read_10x_matrix_dir`) and runs :func:`prepare_anndata`; see there
    for the steps, parameters and what the result holds.
    """
    parameters = {name: value for name, value in locals().items() if name in _PARAMETER_NAMES}
    _check_parameters(parameters)
    started = time.perf_counter()
    adata = read_10x_matrix_dir(matrix_dir)
    read_seconds = time.perf_counter() - started
    if progress is not None:
        progress("read", _STEP_WEIGHTS["read"])
    return _run_pipeline(
        adata, parameters, progress=progress, timings={"read": read_seconds}, source=str(matrix_dir)
    )


def prepare_anndata(
    adata: AnnData,
    *,
    min_genes: int = 200,
    min_cells: int = 3,
    max_pct_mito: float = 20.0,
    mito_prefix: str = "MT-",
    target_sum: float = 1e4,
    n_top_genes: int = 2000,
    n_pcs: int = 50,
    n_neighbors: int = 15,
    clustering_method: str = "leiden",
    resolution: float = 1.0,
    compute_umap: bool = True,
    store_raw: bool = True,
    random_state: int = 0,
    progress: ProgressCallback | None = None,
) -> AnnData:
    """Process raw counts into an experiment ready for the analysis service.

    The standard scanpy workflow, with the same scanpy functions and no extra copies:

    1. **QC**: keep cells with at least ``min_genes`` detected genes and at most ``max_pct_mito`` %
       of counts in mitochondrial genes (names starting with ``mito_prefix``, case-insensitive),
       then genes detected in at least ``min_cells`` of the kept cells. Adds ``.obs``
       ``n_genes_by_counts``, ``total_counts``, ``pct_counts_mt`` and ``.var`` ``mt``,
       ``n_cells_by_counts`` (names as in :func:`scanpy.pp.calculate_qc_metrics`).
    2. **Normalisation**: :func:`scanpy.pp.normalize_total` to ``target_sum`` then
       :func:`scanpy.pp.log1p`. ``.X`` keeps every gene that passed QC.
    3. **Highly variable genes**: :func:`scanpy.pp.highly_variable_genes` (``flavor="seurat"``,
       ``n_top_genes``), flagged in ``.var["highly_variable"]``; then, with ``store_raw``,
       ``.raw`` is set to the log-normalised matrix of all genes (sharing memory with ``.X``), so
       gene expression is available for every gene even if ``.X`` is later subset.
    4. **PCA** on the highly variable genes (``n_pcs`` components, capped by the data size),
       **neighbours** (``n_neighbors``), **clustering** (``clustering_method`` at ``resolution``,
       stored as the categorical ``.obs[clustering_method]`` so cell sets
       ``"<method>-<cluster>"`` exist) and, with ``compute_umap``, **UMAP**.

    Parameters
    ----------
    adata
        Raw UMI counts, cells x genes. It is not modified (filtering makes a new object).
    min_genes, min_cells, max_pct_mito, mito_prefix
        QC thresholds (see above). ``max_pct_mito`` is a percentage in [0, 100].
    target_sum
        Counts per cell after normalisation.
    n_top_genes, n_pcs, n_neighbors
        Sizes of the highly variable gene set, the PCA and the neighbourhoods; capped at what the
        data allow (the values used are recorded).
    clustering_method, resolution
        See :func:`~analyses.clustering.cluster_cells`.
    compute_umap
        Compute ``.obsm["X_umap"]``.
    store_raw
        Keep the log-normalised all-gene matrix in ``.raw``.
    random_state
        Seed of every randomised step.
    progress
        Called as ``progress(step_name, fraction_done)`` after each step (names in
        :data:`PREPARE_STEPS`, fractions increasing to 1.0). Exceptions it raises abort the run
        (usable for cancellation).

    Returns
    -------
    AnnData
        The processed experiment. ``.uns["interlinked"]`` records ``analysis_version``,
        ``source``, every ``parameters`` value (requested and ``effective``), ``qc`` counts
        (``cells_before``, ``cells_after``, ``genes_before``, ``genes_after``,
        ``cells_removed_min_genes``, ``cells_removed_high_mito``, ``genes_removed_min_cells``,
        ``n_mito_genes``), ``n_clusters`` and per-step ``timings`` in seconds.

    Raises
    ------
    InvalidRequestError
        For an invalid parameter (naming it).
    NoCellsLeftError
        If QC removes every cell or every gene, or too few remain to analyse.
    """
    parameters = {name: value for name, value in locals().items() if name in _PARAMETER_NAMES}
    _check_parameters(parameters)
    return _run_pipeline(adata, parameters, progress=progress, timings={}, source="anndata")


# --------------------------------------------------------------------------------------------- #

# The processing parameters shared by prepare_experiment and prepare_anndata (recorded in .uns).
_PARAMETER_NAMES = (
    "min_genes",
    "min_cells",
    "max_pct_mito",
    "mito_prefix",
    "target_sum",
    "n_top_genes",
    "n_pcs",
    "n_neighbors",
    "clustering_method",
    "resolution",
    "compute_umap",
    "store_raw",
    "random_state",
)


def _run_pipeline(
    adata: AnnData,
    parameters: dict[str, object],
    *,
    progress: ProgressCallback | None,
    timings: dict[str, float],
    source: str,
) -> AnnData:
    """The steps of :func:`prepare_anndata` on validated ``parameters``."""
    min_genes, min_cells = int(parameters["min_genes"]), int(parameters["min_cells"])
    max_pct_mito, mito_prefix = float(parameters["max_pct_mito"]), str(parameters["mito_prefix"])
    target_sum, n_top_genes = float(parameters["target_sum"]), int(parameters["n_top_genes"])
    n_pcs, n_neighbors = int(parameters["n_pcs"]), int(parameters["n_neighbors"])
    clustering_method, resolution = str(parameters["clustering_method"]), float(parameters["resolution"])
    compute_umap, store_raw = bool(parameters["compute_umap"]), bool(parameters["store_raw"])
    random_state = int(parameters["random_state"])
    done = sum(_STEP_WEIGHTS[step] for step in timings)
    clock = time.perf_counter()

    def finished(step: str) -> None:
        nonlocal clock, done
        now = time.perf_counter()
        timings[step] = now - clock
        clock = now
        done += _STEP_WEIGHTS[step]
        if progress is not None:
            progress(step, min(1.0, done) if step != PREPARE_STEPS[-1] else 1.0)

    adata, qc = _quality_control(
        adata, min_genes=min_genes, min_cells=min_cells, max_pct_mito=max_pct_mito, mito_prefix=mito_prefix
    )
    finished("qc")

    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    finished("normalise")

    n_hvg = min(n_top_genes, adata.n_vars)
    sc.pp.highly_variable_genes(adata, n_top_genes=n_hvg, flavor="seurat")
    if store_raw:
        adata.raw = adata
    finished("highly_variable_genes")

    n_hvg = int(adata.var["highly_variable"].sum())
    n_comps = min(n_pcs, adata.n_obs - 1, n_hvg - 1)
    sc.pp.pca(adata, n_comps=n_comps, mask_var="highly_variable", random_state=random_state)
    finished("pca")

    n_neighbors_used = min(n_neighbors, adata.n_obs - 1)
    compute_neighbors(adata, n_neighbors=n_neighbors_used, n_pcs=n_comps, random_state=random_state)
    finished("neighbors")

    membership = cluster_graph(
        adata.obsp["connectivities"],
        method=clustering_method,
        resolution=float(resolution),
        n_iterations=2,
        random_state=random_state,
    )
    n_clusters = int(membership.max()) + 1
    adata.obs[clustering_method] = pd.Categorical(
        membership.astype(str), categories=[str(k) for k in range(n_clusters)]
    )
    adata.uns[clustering_method] = {"params": {"resolution": float(resolution), "random_state": random_state}}
    finished("clustering")

    if compute_umap:
        sc.tl.umap(adata, random_state=random_state)
    finished("umap")

    adata.uns["interlinked"] = {
        "analysis_version": ANALYSIS_VERSION,
        "source": source,
        "parameters": {
            **parameters,
            "effective": {"n_top_genes": n_hvg, "n_pcs": n_comps, "n_neighbors": n_neighbors_used},
        },
        "qc": qc,
        "n_clusters": n_clusters,
        "timings": timings,
    }
    return adata


def _quality_control(
    adata: AnnData, *, min_genes: int, min_cells: int, max_pct_mito: float, mito_prefix: str
) -> tuple[AnnData, dict[str, int]]:
    """Filter cells then genes with one copy of the matrix; QC metrics via sparse products."""
    counts = adata.X
    if not sp.issparse(counts) or counts.format != "csr":
        counts = sp.csr_matrix(counts)
    if counts.nnz and not np.all(counts.data):
        # Explicit zeros would count as detected genes; drop them on a private copy.
        counts = counts.copy()
        counts.eliminate_zeros()

    mito = np.asarray(adata.var_names.str.lower().str.startswith(mito_prefix.lower()), dtype=bool)
    n_genes_by_counts = np.diff(counts.indptr)
    total_counts = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    mito_counts = counts @ mito.astype(counts.dtype)  # sparse mat-vec: no per-entry temporaries
    with np.errstate(divide="ignore", invalid="ignore"):
        pct_counts_mt = np.where(total_counts > 0, 100.0 * mito_counts / total_counts, 0.0)

    enough_genes = n_genes_by_counts >= min_genes
    low_mito = pct_counts_mt <= max_pct_mito
    keep_cells = enough_genes & low_mito
    n_kept_cells = int(keep_cells.sum())
    if n_kept_cells == 0:
        raise NoCellsLeftError(
            f"Quality control removed all {adata.n_obs} cells (min_genes={min_genes}, "
            f"max_pct_mito={max_pct_mito}); median detected genes per cell is "
            f"{float(np.median(n_genes_by_counts)) if adata.n_obs else 0:g}"
        )

    kept_counts = counts[keep_cells] if n_kept_cells < adata.n_obs else counts
    n_cells_by_counts = np.bincount(kept_counts.indices, minlength=adata.n_vars)
    keep_genes = n_cells_by_counts >= min_cells
    n_kept_genes = int(keep_genes.sum())
    if n_kept_genes == 0:
        raise NoCellsLeftError(f"Quality control removed all {adata.n_vars} genes (min_cells={min_cells})")
    if n_kept_cells < 3 or n_kept_genes < 3:
        raise NoCellsLeftError(
            f"Quality control left {n_kept_cells} cells x {n_kept_genes} genes; at least 3 x 3 are needed"
        )
    if n_kept_genes < adata.n_vars:
        kept_counts = kept_counts[:, keep_genes]
    elif kept_counts is adata.X:
        kept_counts = kept_counts.copy()  # the caller's matrix is normalised in place later

    obs = adata.obs.loc[keep_cells].copy()
    obs["n_genes_by_counts"] = n_genes_by_counts[keep_cells]
    obs["total_counts"] = total_counts[keep_cells].astype(np.float32)
    obs["pct_counts_mt"] = pct_counts_mt[keep_cells].astype(np.float32)
    var = adata.var.loc[keep_genes].copy()
    var["mt"] = mito[keep_genes]
    var["n_cells_by_counts"] = n_cells_by_counts[keep_genes]
    if kept_counts.dtype.kind != "f":
        kept_counts = kept_counts.astype(np.float32)
    qc = {
        "cells_before": int(adata.n_obs),
        "cells_after": n_kept_cells,
        "genes_before": int(adata.n_vars),
        "genes_after": n_kept_genes,
        "cells_removed_min_genes": int((~enough_genes).sum()),
        "cells_removed_high_mito": int((enough_genes & ~low_mito).sum()),
        "genes_removed_min_cells": int(adata.n_vars - n_kept_genes),
        "n_mito_genes": int(mito.sum()),
    }
    return AnnData(X=kept_counts, obs=obs, var=var), qc


def _check_parameters(parameters: dict[str, object]) -> None:
    check_int("min_genes", parameters["min_genes"], minimum=0)
    check_int("min_cells", parameters["min_cells"], minimum=0)
    max_pct_mito = parameters["max_pct_mito"]
    if (
        isinstance(max_pct_mito, bool)
        or not isinstance(max_pct_mito, int | float)
        or not (0 <= float(max_pct_mito) <= 100)
        or math.isnan(float(max_pct_mito))
    ):
        raise InvalidRequestError(
            "max_pct_mito", f"max_pct_mito must be a percentage in [0, 100], got {max_pct_mito!r}"
        )
    if not isinstance(parameters["mito_prefix"], str) or not parameters["mito_prefix"]:
        raise InvalidRequestError(
            "mito_prefix", f"mito_prefix must be a non-empty string, got {parameters['mito_prefix']!r}"
        )
    check_positive_float("target_sum", parameters["target_sum"])
    check_int("n_top_genes", parameters["n_top_genes"], minimum=3)
    check_int("n_pcs", parameters["n_pcs"], minimum=2)
    check_int("n_neighbors", parameters["n_neighbors"], minimum=2)
    check_choice("clustering_method", parameters["clustering_method"], CLUSTERING_METHODS)
    check_positive_float("resolution", parameters["resolution"])
    check_int("random_state", parameters["random_state"], minimum=0)


def _find(directory: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    listed = " or ".join(names)
    raise MissingInputFileError(
        str(directory / names[0]), f"10x matrix directory {directory} has no {listed}"
    )


def _read_10x_files(
    matrix_path: Path, barcodes_path: Path, features_path: Path, *, gex_only: bool
) -> AnnData:
    """scanpy's ``read_10x_mtx`` for layouts it does not accept (mixed compressed/plain files)."""
    counts = anndata.io.read_mtx(matrix_path).X.T  # files are genes x cells
    features = pd.read_csv(features_path, header=None, sep="\t", dtype=str)
    barcodes = pd.read_csv(barcodes_path, header=None, sep="\t", dtype=str)
    if counts.shape != (len(barcodes), len(features)):
        raise InvalidInputDataError(
            f"{matrix_path.name} is {counts.shape[1]} genes x {counts.shape[0]} cells but "
            f"{features_path.name} lists {len(features)} genes and {barcodes_path.name} {len(barcodes)} barcodes"
        )
    symbols = features[1] if features.shape[1] > 1 else features[0]
    var = pd.DataFrame(
        {"gene_ids": features[0].to_numpy()},
        index=anndata.utils.make_index_unique(pd.Index(symbols.to_numpy(), dtype=object)),
    )
    if features.shape[1] > 2:
        var["feature_types"] = features[2].to_numpy()
    adata = AnnData(
        X=sp.csr_matrix(counts, dtype=np.float32), obs=pd.DataFrame(index=barcodes[0].to_numpy()), var=var
    )
    if gex_only and "feature_types" in var:
        adata = adata[:, var["feature_types"].to_numpy() == "Gene Expression"].copy()
    return adata
