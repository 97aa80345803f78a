"""Which sources PrepareExperiment may read, and whether it may replace an experiment.

Checked twice, both before any work: by the analysis service before it starts a
``prepare-experiment`` flow run (so a refused request costs no run), and by the flow itself (a run
started by hand goes through the same rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blocks.s3 import ObjectStore, data_store, location_allowed
from flows.analysis.protocol import ErrorCode, ServiceError, experiment_key

if TYPE_CHECKING:  # the service package imports this module
    from flows.analysis.service.settings import ServiceSettings


def source_allowed(bucket: str, path: str, *, data_bucket: str, allowed: list[str]) -> bool:
    """Whether PrepareExperiment may read ``s3://bucket/path``: the data bucket, or an entry of
    ``allowed`` (:func:`blocks.s3.location_allowed`)."""
    return location_allowed(bucket, path, [data_bucket, *allowed])


def check_request_allowed(body: dict[str, Any], experiment_id: str, settings: ServiceSettings) -> None:
    """Refuse, before any work, a source outside the allow-list (``SOURCE_NOT_ALLOWED``) and an
    experiment id that exists already unless the body says ``overwrite: true`` (``EXPERIMENT_EXISTS``)."""
    store = data_store()
    if settings.data_bucket and settings.data_bucket != store.bucket:
        store = ObjectStore(settings.data_bucket, store.client)
    data_bucket = store.bucket
    bucket, path = body["sourceBucket"], body["sourceMatrixPath"]
    if not source_allowed(bucket, path, data_bucket=data_bucket, allowed=settings.prepare_sources):
        sources = ", ".join([data_bucket, *settings.prepare_sources])
        raise ServiceError(
            ErrorCode.SOURCE_NOT_ALLOWED,
            f"PrepareExperiment may not read s3://{bucket}/{path.lstrip('/')}: allowed sources are {sources} "
            "(INTERLINKED_ANALYSIS_PREPARE_SOURCES adds buckets or bucket/prefix entries)",
        )
    key = experiment_key(experiment_id)
    if not body.get("overwrite") and store.exists(key):
        raise ServiceError(
            ErrorCode.EXPERIMENT_EXISTS,
            f'experiment {experiment_id!r} already exists at {store.uri(key)}; send "overwrite": true '
            "in the task body to replace it",
        )


__all__ = ["check_request_allowed", "source_allowed"]
