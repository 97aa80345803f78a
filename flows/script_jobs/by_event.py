"""Script jobs submitted by an event (seed 000's Lambda path): a job description dropped at
``s3://{data}/jobs/incoming/*.json`` or published as a message, run as a script job.

The event bridge starts ``script-job-submission`` with a job id derived from the event's identity
(a redelivered event maps to the same job and, through the idempotency key, the same run). This
flow stores the description as the job spec at ``jobs/{job_id}.json`` and runs the ordinary
``script-job`` flow as a subflow, so results, logs, the job event on ``job_events`` and
``interlinked status JOB_ID`` work exactly as for ``interlinked submit``. The script must already
be an object under ``scripts/`` (an event cannot carry a local file). An invalid description
fails the job the usual way: the ``script-job`` run fails with the field named, and a ``FAILED``
job event is published.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger, tags

from blocks.s3 import ObjectStore, data_store
from flows.script_jobs.flow import script_job
from flows.script_jobs.layout import job_spec_key

FLOW_NAME = "script-job-submission"


@flow(
    name=FLOW_NAME,
    description="Run a script-job description that arrived by event (S3 drop under jobs/incoming/ or a message).",
    persist_result=False,
)
def script_job_submission(
    job_id: str,
    bucket: str | None = None,
    key: str | None = None,
    version_id: str | None = None,
    description: dict[str, Any] | None = None,
) -> Any:
    logger = get_run_logger()
    if (description is None) == (key is None):
        raise ValueError("give either a description or the bucket/key of one")
    store = data_store()
    if description is not None:
        body = json.dumps(description).encode()
        source = "message"
    else:
        origin = store if bucket in (None, store.bucket) else ObjectStore(bucket, store.client)
        body = origin.read_bytes(key, version_id=version_id)
        source = origin.uri(key)
    # Stored as received: the script-job flow validates it and reports a bad field the usual way.
    store.put(job_spec_key(job_id), body, content_type="application/json")
    logger.info("job %s from %s → %s", job_id, source, store.uri(job_spec_key(job_id)))
    with tags(f"job:{job_id}", "script-job"):
        return script_job(job_id)
