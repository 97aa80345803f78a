"""The script-job SDK: submit a job description, read a job's status, wait for it.

What ``interlinked submit`` and ``interlinked status`` (and the demo) call.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blocks.s3 import data_store
from flows.script_jobs.layout import ScriptJobError, job_spec_key, log_key, result_key, s3_uri, script_key
from flows.script_jobs.spec import JobSpec, parse_job_spec

__all__ = [
    "FINAL_STATES",
    "ScriptJobError",
    "SubmittedJob",
    "job_status",
    "new_job_id",
    "submit_script_job",
    "wait_for_job",
]


@dataclass
class SubmittedJob:
    job_id: str
    flow_run_id: str
    spec: JobSpec
    spec_uri: str


def new_job_id() -> str:
    return str(uuid.uuid4())


def submit_script_job(
    description: dict[str, Any],
    *,
    deployment: str,
    base_dir: Path | None = None,
    job_id: str | None = None,
    allow_local: bool = True,
) -> SubmittedJob:
    """Validate, upload a local script, store the spec and create the flow run.

    ``allow_local=False`` (the HTTP API): ``script`` is only ever an object under ``scripts/``,
    never a file of the machine that serves the request.

    Raises :class:`flows.script_jobs.spec.JobSpecError` (nothing created) for an invalid description, and
    :class:`ScriptJobError` when the script is neither a local file nor an object under ``scripts/``.
    """
    from prefect.deployments import run_deployment

    spec = parse_job_spec(description)
    job_id = job_id or new_job_id()
    store = data_store()
    local = Path(spec.script).expanduser()
    if not local.is_absolute() and base_dir is not None:
        local = base_dir / local
    if allow_local and local.is_file():
        # Each job gets its own copy: a later edit of the file never changes a submitted job.
        stored = f"{job_id}/{local.name}"
        store.upload(local, script_key(stored))
        spec = spec.model_copy(update={"script": stored})
    elif not store.exists(script_key(spec.script)):
        raise ScriptJobError(
            f"script {spec.script!r} is neither a local file nor an object at {s3_uri(script_key(spec.script))}"
        )
    store.put(job_spec_key(job_id), spec.model_dump_json(exclude_none=True), content_type="application/json")
    flow_run = run_deployment(
        deployment,
        parameters={"job_id": job_id},
        flow_run_name=spec.name,
        tags=[f"job:{job_id}", "script-job"],
        timeout=0,
        as_subflow=False,
    )
    return SubmittedJob(
        job_id=job_id, flow_run_id=str(flow_run.id), spec=spec, spec_uri=s3_uri(job_spec_key(job_id))
    )


def job_status(job_id: str, *, ui_url: str | None = None) -> dict[str, Any]:
    """Everything known about a job: run state and times, result, log and UI link."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    spec = data_store().read_json(job_spec_key(job_id), None)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"job:{job_id}"])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=1,
        )
    if spec is None and not runs:
        raise ScriptJobError(f"no job {job_id}: no spec at {s3_uri(job_spec_key(job_id))} and no flow run")
    status: dict[str, Any] = {
        "job_id": job_id,
        "name": (spec or {}).get("name"),
        "state": "NOT_STARTED",
        "state_name": None,
        "state_message": None,
        "error": None,
        "flow_run_id": None,
        "start_time": None,
        "end_time": None,
        "spec": s3_uri(job_spec_key(job_id)),
        "result": None,
        "result_value": None,
        "log": s3_uri(log_key(job_id)),
        "ui_url": None,
    }
    if runs:
        run = runs[0]
        status.update(
            state=run.state.type.value if run.state else "UNKNOWN",
            state_name=run.state.name if run.state else None,
            state_message=run.state.message if run.state else None,
            flow_run_id=str(run.id),
            start_time=run.start_time.isoformat() if run.start_time else None,
            end_time=run.end_time.isoformat() if run.end_time else None,
        )
        if run.state and status["state"] in ("FAILED", "CRASHED", "CANCELLED"):
            # The job's own reason, without Prefect's wrapper text.
            message = run.state.message or ""
            status["error"] = message.split("ScriptJobError: ", 1)[-1].removeprefix(
                "Flow run encountered an exception: "
            )
        if ui_url:
            status["ui_url"] = f"{ui_url.rstrip('/')}/runs/flow-run/{run.id}"
    if status["state"] == "COMPLETED":
        status["result"] = s3_uri(result_key(job_id))
        status["result_value"] = data_store().read_json(result_key(job_id), None)
    return status


FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def wait_for_job(job_id: str, *, timeout: float | None = None, poll: float = 0.5, ui_url: str | None = None):
    """Poll until the job reaches a final state (or ``timeout`` seconds pass); return its status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = job_status(job_id, ui_url=ui_url)
        if status["state"] in FINAL_STATES:
            return status
        if deadline is not None and time.monotonic() > deadline:
            return status
        time.sleep(poll)
