"""Script jobs (seed 000): run any user script — Python, shell or R — described by a job spec in S3.

Layout in the data bucket (fixed by the architecture):
``jobs/{job_id}.json`` (the spec), ``scripts/...`` (the code), ``results/{job_id}/result.json`` (the
return value as JSON), ``logs/{job_id}.log`` (stdout/stderr, updated while the script runs).
The final state is published to the ``job_events`` topic.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from botocore.exceptions import (
    ClientError,
)
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.tasks import exponential_backoff
from prefect_aws import S3Bucket

import blocks
from flows.aws_errors import is_transient
from flows.jobspec import JobSpec, parse_job_spec
from flows.runners import ScriptRuntimeMissing, run_script

FLOW_NAME = "script-job"
SCRIPTS_PREFIX = "scripts/"


def job_spec_key(job_id: str) -> str:
    return f"jobs/{job_id}.json"


def result_key(job_id: str) -> str:
    return f"results/{job_id}/result.json"


def log_key(job_id: str) -> str:
    return f"logs/{job_id}.log"


class ScriptJobError(RuntimeError):
    """The job could not run or its script failed; the message is what the user needs to know."""


def is_transient_aws_error(task, task_run, state) -> bool:
    """Retry condition: only throttling, 5xx and connection problems are worth retrying."""
    try:
        state.result()
    except Exception as error:
        return is_transient(error)
    return False


# AWS I/O: retried with backoff, but only for transient errors (a missing object fails at once).
aws_task = task(
    retries=4,
    retry_delay_seconds=exponential_backoff(backoff_factor=1),
    retry_jitter_factor=0.5,
    retry_condition_fn=is_transient_aws_error,
    cache_policy=NO_CACHE,
    persist_result=False,
)


@lru_cache(maxsize=1)
def data_bucket() -> S3Bucket:
    return S3Bucket.load(blocks.DATA_BUCKET)


def _s3():
    return data_bucket().credentials.get_s3_client()


def s3_uri(key: str) -> str:
    return f"s3://{data_bucket().bucket_name}/{key}"


def _missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


@aws_task
def load_job_spec(job_id: str) -> JobSpec:
    try:
        body = _s3().get_object(Bucket=data_bucket().bucket_name, Key=job_spec_key(job_id))["Body"].read()
    except ClientError as error:
        if _missing(error):
            raise ScriptJobError(f"no job spec at {s3_uri(job_spec_key(job_id))}") from None
        raise
    try:
        return parse_job_spec(json.loads(body))
    except ValueError as error:
        raise ScriptJobError(f"job spec at {s3_uri(job_spec_key(job_id))} is invalid: {error}") from None


@aws_task
def fetch_script(spec: JobSpec, destination: Path) -> Path:
    key = SCRIPTS_PREFIX + spec.script
    path = destination / PurePosixPath(spec.script).name
    try:
        _s3().download_file(data_bucket().bucket_name, key, str(path))
    except ClientError as error:
        if _missing(error):
            raise ScriptJobError(f"script not found at {s3_uri(key)}") from None
        raise
    return path


class LiveLog:
    """Collects the script's output and keeps ``logs/{job_id}.log`` in S3 current while it runs."""

    def __init__(self, job_id: str, *, interval: float = 3.0):
        self.key = log_key(job_id)
        self.interval = interval
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flush_periodically, daemon=True)

    def __enter__(self) -> LiveLog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def write(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)
        self._dirty.set()

    @property
    def text(self) -> str:
        with self._lock:
            return "\n".join(self._lines) + ("\n" if self._lines else "")

    def tail(self, count: int = 25) -> list[str]:
        with self._lock:
            return self._lines[-count:]

    def upload(self) -> None:
        _s3().put_object(
            Bucket=data_bucket().bucket_name,
            Key=self.key,
            Body=self.text.encode(),
            ContentType="text/plain; charset=utf-8",
        )

    def _flush_periodically(self) -> None:
        while not self._stop.wait(self.interval):
            if self._dirty.is_set():
                self._dirty.clear()
                try:
                    self.upload()
                except Exception:  # a missed live update is harmless; the final upload is retried
                    self._dirty.set()


@aws_task
def upload_log(live_log: LiveLog) -> str:
    live_log.upload()
    return s3_uri(live_log.key)


@task(cache_policy=NO_CACHE, persist_result=False)
def run_job_script(spec: JobSpec, script_path: Path, live_log: LiveLog, attempt_info: dict) -> Any:
    """Run the script once; raise with the script's own error when it fails (the log has the traceback)."""
    logger = get_run_logger()
    attempt_info["attempts"] += 1
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    live_log.write(
        f"=== {stamp} attempt {attempt_info['attempts']}: {spec.language} {spec.script}"
        f"{' → ' + spec.func if spec.func else ''}"
    )

    def forward(stream: str, line: str) -> None:
        live_log.write(line)
        (logger.warning if stream == "stderr" else logger.info)(line)

    try:
        outcome = run_script(
            language=spec.language,
            script=script_path,
            func=spec.func,
            arguments=spec.arguments,
            on_line=forward,
            timeout_seconds=spec.timeout_seconds,
        )
    except ScriptRuntimeMissing as error:
        live_log.write(f"=== {error}")
        raise ScriptJobError(str(error)) from None
    live_log.write(f"=== exit code {outcome.exit_code} after {outcome.duration:.2f} s")
    if not outcome.succeeded:
        raise ScriptJobError(outcome.error)
    return outcome.result


@aws_task
def store_result(job_id: str, value: Any) -> str:
    _s3().put_object(
        Bucket=data_bucket().bucket_name,
        Key=result_key(job_id),
        Body=json.dumps(value).encode(),
        ContentType="application/json",
    )
    return s3_uri(result_key(job_id))


@aws_task
def publish_job_event(event: dict[str, Any]) -> str:
    topic = blocks.SnsTopic.load(blocks.JOB_EVENTS_TOPIC)
    return topic.publish(
        event,
        subject=f"interlinked job {event['state'].lower()}: {event.get('name') or event['job_id']}"[:100],
        attributes={"state": event["state"], "job_id": event["job_id"], "kind": "script-job"},
    )


def _summary_markdown(event: dict[str, Any], log_tail: list[str]) -> str:
    lines = [
        f"# Script job `{event.get('name') or event['job_id']}`",
        "",
        "| | |",
        "|---|---|",
        f"| job id | `{event['job_id']}` |",
        f"| state | **{event['state']}** |",
        f"| script | `{event.get('script')}` ({event.get('language')}) |",
        f"| duration | {event['duration_seconds']:.2f} s |",
        f"| spec | `{event['spec']}` |",
        f"| log | `{event['log']}` |",
    ]
    if event["state"] == "COMPLETED":
        rendered = json.dumps(event.get("result_value"), indent=2)
        if len(rendered) > 4000:
            rendered = rendered[:4000] + "\n… (truncated; full value in result.json)"
        lines += [f"| result | `{event['result']}` |", "", "## Result", "", "```json", rendered, "```"]
    else:
        lines += ["", "## Error", "", f"> {event['error']}"]
        if log_tail:
            lines += ["", "## Last lines of the log", "", "```", *log_tail, "```"]
    return "\n".join(lines)


@flow(
    name=FLOW_NAME,
    description="Run one script job (Python, shell or R) from its spec at s3://{data}/jobs/{job_id}.json.",
    result_storage=f"s3-bucket/{blocks.RESULT_STORAGE}",
    persist_result=True,
)
def script_job(job_id: str) -> Any:
    """Load the spec, fetch the script, run it, store result and log, announce the final state."""
    logger = get_run_logger()
    started = time.time()
    spec: JobSpec | None = None
    value: Any = None
    error: str | None = None
    attempt_info = {"attempts": 0}
    with LiveLog(job_id) as live_log:
        try:
            spec = load_job_spec(job_id)
            with tempfile.TemporaryDirectory(prefix="interlinked-script-") as workdir:
                script_path = fetch_script(spec, Path(workdir))
                runner = run_job_script.with_options(
                    retries=spec.retries, retry_delay_seconds=spec.retry_delay_seconds
                )
                value = runner(spec, script_path, live_log, attempt_info)
            store_result(job_id, value)
        except Exception as failure:
            error = str(failure) or type(failure).__name__
            live_log.write(f"=== job failed: {error}")
            raise
        finally:
            log_uri = None
            try:
                log_uri = upload_log(live_log)
            except Exception as upload_error:  # keep the original failure visible
                logger.error("could not store the job log: %s", upload_error)
            flow_run = get_run_context().flow_run
            event = {
                "type": "JobEvent",
                "kind": "script-job",
                "job_id": job_id,
                "name": spec.name if spec else None,
                "script": spec.script if spec else None,
                "language": spec.language if spec else None,
                "state": "FAILED" if error else "COMPLETED",
                "error": error,
                "attempts": attempt_info["attempts"],
                "spec": s3_uri(job_spec_key(job_id)),
                "result": None if error else s3_uri(result_key(job_id)),
                "log": log_uri or s3_uri(log_key(job_id)),
                "flow_run_id": str(flow_run.id) if flow_run else None,
                "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
                "finished_at": datetime.now(UTC).isoformat(),
                "duration_seconds": round(time.time() - started, 3),
            }
            create_markdown_artifact(
                key=f"script-job-{job_id}".lower()[:100],
                markdown=_summary_markdown({**event, "result_value": value}, live_log.tail()),
                description=f"Script job {event['name'] or job_id}: {event['state']}",
            )
            try:
                publish_job_event(event)
            except Exception as publish_error:
                logger.error("could not publish the job event: %s", publish_error)
    return value


# ---- submission and status (the SDK behind `interlinked submit` / `interlinked status`) --------------


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
) -> SubmittedJob:
    """Validate, upload a local script, store the spec and create the flow run.

    Raises :class:`flows.jobspec.JobSpecError` (nothing created) for an invalid description, and
    :class:`ScriptJobError` when the script is neither a local file nor an object under ``scripts/``.
    """
    from prefect.deployments import run_deployment

    spec = parse_job_spec(description)
    job_id = job_id or new_job_id()
    bucket = data_bucket()
    s3 = _s3()
    local = Path(spec.script).expanduser()
    if not local.is_absolute() and base_dir is not None:
        local = base_dir / local
    if local.is_file():
        # Each job gets its own copy: a later edit of the file never changes a submitted job.
        stored = f"{job_id}/{local.name}"
        s3.upload_file(str(local), bucket.bucket_name, SCRIPTS_PREFIX + stored)
        spec = spec.model_copy(update={"script": stored})
    else:
        try:
            s3.head_object(Bucket=bucket.bucket_name, Key=SCRIPTS_PREFIX + spec.script)
        except ClientError as error:
            if _missing(error):
                raise ScriptJobError(
                    f"script {spec.script!r} is neither a local file nor an object at "
                    f"{s3_uri(SCRIPTS_PREFIX + spec.script)}"
                ) from None
            raise
    s3.put_object(
        Bucket=bucket.bucket_name,
        Key=job_spec_key(job_id),
        Body=spec.model_dump_json(exclude_none=True).encode(),
        ContentType="application/json",
    )
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


def read_json_object(key: str) -> Any | None:
    """A JSON object from the data bucket, or None when it does not exist."""
    try:
        body = _s3().get_object(Bucket=data_bucket().bucket_name, Key=key)["Body"].read()
    except ClientError as error:
        if _missing(error):
            return None
        raise
    return json.loads(body)


def job_status(job_id: str, *, ui_url: str | None = None) -> dict[str, Any]:
    """Everything known about a job: run state and times, result, log and UI link."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    spec = read_json_object(job_spec_key(job_id))
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
        status["result_value"] = read_json_object(result_key(job_id))
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
