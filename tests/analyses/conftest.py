"""Shared fixtures for the analyses tests: scanpy's bundled PBMC data and a synthetic 10x directory."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path


def _import_the_real_analyses_package() -> None:
    """Make ``import analyses`` find the project package, not this test directory.

    ``tests/conftest.py`` puts ``tests/`` on ``sys.path`` (pytest's rootdir-relative import of a
    conftest without ``__init__.py``), where this directory, ``tests/analyses``, looks like a
    namespace package called ``analyses``. A namespace package only wins when no regular package
    of that name is on ``sys.path``, and the editable install's finder runs after the path search,
    so putting the repository root on ``sys.path`` lets the real package win.
    """
    repository = str(Path(__file__).resolve().parents[2])
    if repository not in sys.path:
        sys.path.append(repository)
    imported = sys.modules.get("analyses")
    if imported is not None and getattr(imported, "__file__", None) is None:
        for name in [name for name in sys.modules if name == "analyses" or name.startswith("analyses.")]:
            del sys.modules[name]


_import_the_real_analyses_package()

import anndata as ad  # noqa: E402
import pytest  # noqa: E402
import scanpy as sc  # noqa: E402

from analyses import SyntheticCounts, prepare_experiment, write_10x  # noqa: E402

# Parameters of the shared prepared experiment (small data: 2,000 cells x 1,000 genes).
PREPARE_PARAMETERS = {
    "min_genes": 20,
    "min_cells": 3,
    "max_pct_mito": 20.0,
    "n_top_genes": 500,
    "n_pcs": 20,
    "n_neighbors": 15,
    "resolution": 0.5,
    "random_state": 0,
}


@pytest.fixture(scope="session")
def prepare_parameters() -> dict[str, object]:
    """The parameters the shared ``prepared`` experiment was made with."""
    return dict(PREPARE_PARAMETERS)


@pytest.fixture(autouse=True)
def _quiet_scanpy_warnings():
    # scanpy/anndata emit FutureWarnings about their own upcoming defaults; they are not ours.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


@pytest.fixture(scope="session")
def _pbmc_pristine() -> ad.AnnData:
    return sc.datasets.pbmc68k_reduced()


@pytest.fixture
def pbmc(_pbmc_pristine: ad.AnnData) -> ad.AnnData:
    """A private copy of scanpy's 700-cell PBMC dataset (has .raw, louvain, PCA, UMAP, neighbours)."""
    return _pbmc_pristine.copy()


@pytest.fixture(scope="session")
def synthetic_10x(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyntheticCounts]:
    """A synthetic Cell Ranger v3 directory (2,000 cells x 1,000 genes, 5 clusters) and its truth."""
    directory = tmp_path_factory.mktemp("synthetic_10x")
    data = write_10x(directory, n_cells=2_000, n_genes=1_000, n_clusters=5, seed=7)
    return directory, data


@pytest.fixture(scope="session")
def prepared(synthetic_10x: tuple[Path, SyntheticCounts]) -> tuple[ad.AnnData, list[tuple[str, float]]]:
    """The synthetic directory run through prepare_experiment once, with its progress reports."""
    directory, _ = synthetic_10x
    reports: list[tuple[str, float]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        adata = prepare_experiment(
            directory, **PREPARE_PARAMETERS, progress=lambda step, fraction: reports.append((step, fraction))
        )
    return adata, reports
