"""Script jobs (seed 000): the ``script-job`` flow runs one user script — Python, shell or R —
described by a job spec in the data bucket.

It loads ``jobs/{job_id}.json``, fetches the script from ``scripts/``, runs it (:mod:`.runners`),
stores ``results/{job_id}/result.json`` and ``logs/{job_id}.log`` (see :mod:`.layout`) and
publishes the final state to the ``job_events`` topic.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context

import blocks
from blocks.s3 import ObjectMissing, data_store
from flows.aws_tasks import aws_task
from flows.jobs import client as jobs_client
from flows.jobs.channel import open_channel
from flows.jobs.client import EXECUTION_ID_ENV, JOB_ID_ENV
from flows.jobs.memory import limit_from_environment
from flows.script_jobs.layout import ScriptJobError, job_spec_key, log_key, result_key, s3_uri, script_key
from flows.script_jobs.runners import ScriptRuntimeMissing, run_script
from flows.script_jobs.scoped import credentials_env
from flows.script_jobs.spec import JobSpec, parse_job_spec

FLOW_NAME = "script-job"


@aws_task
def load_job_spec(job_id: str) -> JobSpec:
    key = job_spec_key(job_id)
    try:
        return parse_job_spec(data_store().read_json(key))
    except ObjectMissing:
        raise ScriptJobError(f"no job spec at {s3_uri(key)}") from None
    except ValueError as error:  # not JSON, or not a valid spec
        raise ScriptJobError(f"job spec at {s3_uri(key)} is invalid: {error}") from None


@aws_task
def fetch_script(spec: JobSpec, destination: Path) -> Path:
    key = script_key(spec.script)
    try:
        return data_store().download(key, destination / PurePosixPath(spec.script).name)
    except ObjectMissing:
        raise ScriptJobError(f"script not found at {s3_uri(key)}") from None


class LiveLog:
    """Collects the script's output and keeps ``logs/{job_id}.log`` in S3 current while it runs."""

    def __init__(self, job_id: str, *, interval: float = 3.0):
        self.job_id = job_id
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
        data_store().put_text(self.key, self.text)

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

    memory_limit = limit_from_environment()  # the dispatch's job variable on the local pool
    if memory_limit:
        live_log.write(f"=== memory limit {memory_limit} MiB")
    # The script sees an allow-listed environment (runners.inherited_env) plus what is passed here:
    # AWS credentials scoped to this job's own keys (none without a script-job role) and, for a job
    # with an execution, the channel its progress() reports through.
    scoped = credentials_env(data_store().bucket, live_log.job_id, spec.script)
    job_id, execution_id = os.environ.get(JOB_ID_ENV), os.environ.get(EXECUTION_ID_ENV)
    channel = (
        open_channel(job_id, execution_id, client=jobs_client)
        if job_id and execution_id
        else contextlib.nullcontext({})
    )
    try:
        with channel as channel_env:
            outcome = run_script(
                language=spec.language,
                script=script_path,
                func=spec.func,
                arguments=spec.arguments,
                on_line=forward,
                timeout_seconds=spec.timeout_seconds,
                memory_limit_mib=memory_limit,
                # The seed's scripts find their job here (its Lambda set it on the Batch job).
                env={
                    "LAMBDA_JOB_ID": live_log.job_id,
                    **scoped,
                    **channel_env,
                    **({"INTERLINKED_DEBUG": "1"} if spec.debug else {}),
                },
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
    data_store().put_json(result_key(job_id), value)
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
def script_job(job_id: str | None = None, id: str | None = None) -> Any:
    """Load the spec, fetch the script, run it, store result and log, announce the final state.

    ``job_id`` runs a script job (its spec at ``jobs/{job_id}.json``); ``id`` runs a job of the job
    lifecycle (:mod:`flows.jobs`, type ``script``) whose ``inputData`` is the script-job description,
    as one execution of that job: its result and log become the job's outputs.
    """
    if (job_id is None) == (id is None):
        raise ScriptJobError(
            "give job_id (a script job) or id (a lifecycle job of type script), not both or neither"
        )
    if id is not None:
        return _run_as_lifecycle_job(id)
    return _run_script_job(job_id)


def _run_as_lifecycle_job(job_id: str) -> Any:
    """One execution of the lifecycle job ``job_id``: its description becomes the spec at
    ``jobs/{job_id}.json`` (so ``interlinked status JOB_ID`` finds it), then the script job runs."""
    from flows.jobs.work import executing

    with executing(job_id) as execution:
        try:
            spec = parse_job_spec(execution.job["inputData"])
        except ValueError as error:
            raise ScriptJobError(str(error)) from None
        data_store().put(
            job_spec_key(job_id), spec.model_dump_json(exclude_none=True), content_type="application/json"
        )
        value = _run_script_job(job_id)
        execution.outputs(
            data={"result": value},
            files={"result": s3_uri(result_key(job_id)), "log": s3_uri(log_key(job_id))},
        )
    return value


def _run_script_job(job_id: str) -> Any:
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
