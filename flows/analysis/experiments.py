"""Experiments of the analysis service: stored in S3, held in memory while in use.

An experiment is ``s3://{data}/experiments/{experimentId}/processed.h5ad``; its *version* is the
object's ETag. :class:`ExperimentStore` keeps the recently used ones in memory (LRU, bounded by
count and bytes), each with its :class:`analyses.ExpressionIndex` built once per version, and a
background refresher re-checks their ETags every few seconds (one HEAD per experiment) and swaps
in the new version when the object changed, so requests never wait on S3 for a warm experiment.

Memory: the index is a CSC copy of the expression matrix (``.raw`` when present). The loaded
AnnData is made to *share* that copy (``.raw`` is rebuilt on it, and ``.X`` too when it holds the
same values, as after ``prepare-experiment``), so an experiment costs one matrix, not two or three.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from blocks.errors import is_transient
from blocks.s3 import ObjectMissing, ObjectStore
from flows.analysis.protocol import EXPERIMENT_ID_PATTERN, ErrorCode, ServiceError, experiment_key

logger = logging.getLogger("interlinked.analysis.experiments")


class TransientError(RuntimeError):
    """AWS or Prefect did not answer properly (throttling, 5xx, connection): worth retrying later."""


def clean_etag(etag: str) -> str:
    return etag.strip('"')


@dataclass(eq=False)
class LoadedExperiment:
    """One version of an experiment, ready to answer requests."""

    experiment_id: str
    version: str
    adata: Any  # anndata.AnnData
    index: Any  # analyses.ExpressionIndex
    nbytes: int
    load_seconds: float
    size_on_disk: int
    checked_at: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)

    def describe(self) -> dict[str, Any]:
        return {
            "experimentId": self.experiment_id,
            "version": self.version,
            "cells": int(self.adata.n_obs),
            "genes": int(self.adata.n_vars),
            "memoryBytes": self.nbytes,
            "loadSeconds": round(self.load_seconds, 3),
        }


def matrix_bytes(matrix: Any) -> int:
    """Bytes held by a dense or sparse matrix (0 for None)."""
    if matrix is None:
        return 0
    if hasattr(matrix, "indptr"):
        return int(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes)
    return int(getattr(matrix, "nbytes", 0))


def _same_sparse_values(a: Any, b: Any) -> bool:
    """Whether two CSR/CSC matrices of one format hold exactly the same entries."""
    import numpy as np

    return (
        a.format == b.format
        and a.shape == b.shape
        and a.nnz == b.nnz
        and np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
        and np.array_equal(a.data, b.data)
    )


def _shares(a: Any, b: Any) -> bool:
    import numpy as np

    return bool(np.may_share_memory(getattr(a, "data", a), getattr(b, "data", b)))


def prepare_in_memory(
    adata: Any, experiment_id: str, version: str, *, size_on_disk: int = 0
) -> LoadedExperiment:
    """Index ``adata`` for serving and make it share one copy of its expression matrix."""
    import pandas as pd
    import scipy.sparse as sp
    from anndata import AnnData

    from analyses import ExpressionIndex

    started = time.perf_counter()
    source = adata.raw.X if adata.raw is not None else adata.X
    if source is not None and sp.issparse(source):
        column_major = sp.csc_matrix(source)  # no copy when already CSC
        column_major.sort_indices()
        x_is_source = adata.raw is None or (
            sp.issparse(adata.X)
            and adata.X.shape == source.shape
            and adata.var_names.equals(adata.raw.var_names)
            and _same_sparse_values(adata.X, source)
        )
        if adata.raw is not None:
            raw_var = adata.raw.var.copy()
            adata.raw = AnnData(X=column_major, obs=pd.DataFrame(index=adata.obs_names), var=raw_var)
        if x_is_source:
            adata.X = column_major
        del source
    index = ExpressionIndex.from_adata(adata)
    nbytes = matrix_bytes(index.matrix)
    if adata.X is not None and not _shares(adata.X, index.matrix):
        nbytes += matrix_bytes(adata.X)
    for value in adata.obsm.values():
        nbytes += int(getattr(value, "nbytes", 0))
    for value in adata.obsp.values():
        nbytes += matrix_bytes(value)
    return LoadedExperiment(
        experiment_id=experiment_id,
        version=version,
        adata=adata,
        index=index,
        nbytes=nbytes,
        load_seconds=time.perf_counter() - started,
        size_on_disk=size_on_disk,
    )


def read_experiment_file(path: Path, experiment_id: str, version: str) -> LoadedExperiment:
    """Read a processed ``.h5ad`` and prepare it for serving (``INVALID_EXPERIMENT`` if unreadable)."""
    import anndata

    started = time.perf_counter()
    try:
        adata = anndata.read_h5ad(path)
    except Exception as error:  # h5py/anndata raise many types for a corrupt file
        raise ServiceError(
            ErrorCode.INVALID_EXPERIMENT,
            f"Experiment {experiment_id!r} cannot be read as an .h5ad file ({type(error).__name__}: {error})",
        ) from None
    loaded = prepare_in_memory(adata, experiment_id, version, size_on_disk=path.stat().st_size)
    loaded.load_seconds = time.perf_counter() - started
    return loaded


class ExperimentStore:
    """Recently used experiments in memory, loaded from S3 on first use and kept current.

    Parameters
    ----------
    store
        The data bucket.
    max_experiments, max_bytes
        LRU bounds (the experiment being loaded is never evicted for itself).
    refresh_seconds
        How often the refresher re-checks the ETags of the experiments in memory.
    on_loaded
        Called with each newly loaded experiment (for logging/events).
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        max_experiments: int = 4,
        max_bytes: int | None = None,
        refresh_seconds: float = 2.0,
        workdir: Path | None = None,
        on_loaded: Callable[[LoadedExperiment, str], None] | None = None,
    ) -> None:
        self.store = store
        self.max_experiments = max(1, max_experiments)
        self.max_bytes = max_bytes
        self.refresh_seconds = refresh_seconds
        self.workdir = workdir
        self.on_loaded = on_loaded
        self._entries: OrderedDict[str, LoadedExperiment] = OrderedDict()
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}

    # -- lookups ----------------------------------------------------------------------------------
    def get(self, experiment_id: str) -> LoadedExperiment:
        """The experiment in memory, loading it when needed.

        Raises ``ServiceError`` (``EXPERIMENT_NOT_FOUND``, ``INVALID_EXPERIMENT``) or
        :class:`TransientError`.
        """
        with self._lock:
            entry = self._entries.get(experiment_id)
            if entry is not None:
                self._entries.move_to_end(experiment_id)
                entry.last_used = time.monotonic()
                return entry
            load_lock = self._load_locks.setdefault(experiment_id, threading.Lock())
        with load_lock:
            with self._lock:
                entry = self._entries.get(experiment_id)
            if entry is not None:
                return entry
            entry = self._download_and_read(experiment_id)
            self._insert(entry, reason="first use")
            return entry

    def cached(self) -> list[LoadedExperiment]:
        with self._lock:
            return list(self._entries.values())

    def evict(self, experiment_id: str) -> None:
        with self._lock:
            self._entries.pop(experiment_id, None)

    # -- refresh ----------------------------------------------------------------------------------
    def refresh_once(self) -> list[str]:
        """HEAD every experiment in memory; reload changed ones, forget deleted ones.

        Returns the ids that changed (reloaded or evicted).
        """
        changed = []
        for entry in self.cached():
            try:
                head = self.store.head(experiment_key(entry.experiment_id))
            except (ClientError, BotoCoreError) as error:
                logger.warning("could not check experiment %s: %s", entry.experiment_id, error)
                continue
            if head is None:
                logger.info("experiment %s was deleted from S3; forgetting it", entry.experiment_id)
                self.evict(entry.experiment_id)
                changed.append(entry.experiment_id)
                continue
            if clean_etag(head["ETag"]) == entry.version:
                entry.checked_at = time.monotonic()
                continue
            load_lock = self._load_locks.setdefault(entry.experiment_id, threading.Lock())
            with load_lock:
                try:
                    fresh = self._download_and_read(entry.experiment_id)
                except ServiceError as error:
                    # Unreadable new version: stop serving the old one, requests get the error.
                    logger.warning(
                        "experiment %s changed and cannot be loaded: %s", entry.experiment_id, error
                    )
                    self.evict(entry.experiment_id)
                    changed.append(entry.experiment_id)
                    continue
                except Exception as error:
                    logger.warning("could not reload experiment %s: %s", entry.experiment_id, error)
                    continue
                self._insert(fresh, reason=f"changed in S3 (was version {entry.version})")
                changed.append(entry.experiment_id)
        return changed

    def run_refresher(self, stop: threading.Event) -> None:
        while not stop.wait(self.refresh_seconds):
            try:
                self.refresh_once()
            except Exception:
                logger.exception("experiment refresh failed")

    # -- internals --------------------------------------------------------------------------------
    def _insert(self, entry: LoadedExperiment, *, reason: str) -> None:
        with self._lock:
            self._entries[entry.experiment_id] = entry
            self._entries.move_to_end(entry.experiment_id)
            while len(self._entries) > self.max_experiments or (
                self.max_bytes is not None
                and len(self._entries) > 1
                and sum(item.nbytes for item in self._entries.values()) > self.max_bytes
            ):
                oldest = next(iter(self._entries))
                if oldest == entry.experiment_id:
                    break
                logger.info("evicting experiment %s from memory (LRU)", oldest)
                del self._entries[oldest]
        if self.on_loaded is not None:
            with contextlib.suppress(Exception):
                self.on_loaded(entry, reason)

    def _download_and_read(self, experiment_id: str) -> LoadedExperiment:
        key = experiment_key(experiment_id)
        where = f"S3 GET {self.store.uri(key)}"
        handle, name = tempfile.mkstemp(
            prefix=f"experiment-{experiment_id}-", suffix=".h5ad", dir=self.workdir
        )
        path = Path(name)
        try:
            try:
                response = self.store.get(key)
                version = clean_etag(response["ETag"])
                with os.fdopen(handle, "wb") as out:
                    for chunk in response["Body"].iter_chunks(chunk_size=8 << 20):
                        out.write(chunk)
            except ObjectMissing:
                raise ServiceError(
                    ErrorCode.EXPERIMENT_NOT_FOUND,
                    f"Experiment {experiment_id!r} does not exist (no {self.store.uri(key)}); "
                    "import it or send PrepareExperiment first",
                ) from None
            except ClientError as error:
                if is_transient(error):
                    raise TransientError(f"{where}: {error}") from error
                raise
            except (
                BotoCoreError
            ) as error:  # any other botocore failure (a connection, a reply it cannot parse)
                raise TransientError(f"{where}: {error}") from error
            return read_experiment_file(path, experiment_id, version)
        finally:
            with contextlib.suppress(OSError):
                os.close(handle)
            path.unlink(missing_ok=True)


# ---- importing ----------------------------------------------------------------------------------


@dataclass
class ImportedExperiment:
    experiment_id: str
    uri: str
    version: str
    cells: int
    genes: int
    cell_sets: int
    embeddings: list[str]


def validate_h5ad(path: Path) -> Any:
    """Open an ``.h5ad`` lazily (backed) to check it is one; returns the backed AnnData (close it)."""
    import anndata

    if not path.is_file():
        raise ServiceError(ErrorCode.INVALID_REQUEST, f"{path} does not exist or is not a file")
    try:
        return anndata.read_h5ad(path, backed="r")
    except Exception as error:
        raise ServiceError(
            ErrorCode.INVALID_EXPERIMENT,
            f"{path} is not a readable .h5ad file ({type(error).__name__}: {error})",
        ) from None


def store_experiment_file(store: ObjectStore, path: Path, experiment_id: str) -> tuple[str, str]:
    """Upload a processed ``.h5ad`` as the experiment ``experiment_id``; its ``(uri, version)``."""
    key = experiment_key(experiment_id)
    store.upload(path, key, content_type="application/x-hdf5")
    return store.uri(key), clean_etag(store.head(key)["ETag"])


def upload_experiment_file(store: ObjectStore, path: Path, experiment_id: str) -> ImportedExperiment:
    """Check ``path`` is an AnnData file and store it as the experiment ``experiment_id``."""
    import pandas as pd

    if not EXPERIMENT_ID_PATTERN.match(experiment_id):
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"experiment id {experiment_id!r}: use 1-128 letters, digits, '.', '_' or '-'",
        )
    adata = validate_h5ad(path)
    try:
        cells, genes = int(adata.n_obs), int(adata.n_vars)
        cell_sets = sum(
            len(adata.obs[column].cat.categories)
            for column in adata.obs.columns
            if isinstance(adata.obs[column].dtype, pd.CategoricalDtype)
        )
        embeddings = sorted(str(key) for key in adata.obsm)
    finally:
        with contextlib.suppress(Exception):
            adata.file.close()
    uri, version = store_experiment_file(store, path, experiment_id)
    return ImportedExperiment(
        experiment_id=experiment_id,
        uri=uri,
        version=version,
        cells=cells,
        genes=genes,
        cell_sets=cell_sets,
        embeddings=embeddings,
    )


def upload_anndata(store: ObjectStore, adata: Any, experiment_id: str) -> ImportedExperiment:
    """Write ``adata`` to a temporary ``.h5ad`` and store it as the experiment ``experiment_id``."""
    with tempfile.TemporaryDirectory(prefix="interlinked-import-") as directory:
        path = Path(directory) / "processed.h5ad"
        adata.write_h5ad(path)
        return upload_experiment_file(store, path, experiment_id)


def example_anndata(name: str) -> Any:
    """A bundled example experiment by name (``pbmc68k_reduced`` ships with scanpy)."""
    import scanpy as sc

    examples = {"pbmc68k_reduced": sc.datasets.pbmc68k_reduced}
    if name not in examples:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST, f"unknown example {name!r}; available: {', '.join(examples)}"
        )
    return examples[name]()
