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
from prefect_aws import S3Bucket

import blocks
from flows.aws_tasks import aws_task
from flows.script_jobs.runners import ScriptRuntimeMissing, run_script
from flows.script_jobs.spec import JobSpec, parse_job_spec

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
