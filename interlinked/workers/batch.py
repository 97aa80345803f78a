"""The AWS Batch work pool: each flow run is one AWS Batch job (``prefect worker start --type aws-batch``).

``prefect_aws.batch.batch_submit`` fires a job and forgets it. This worker owns the job's life:

- submits ``batch.submit_job`` to the pool's job queue and job definition, with the flow run's
  command (``prefect flow-run execute`` unless the deployment sets one), its environment
  (``PREFECT__FLOW_RUN_ID``, ``PREFECT_API_URL``, the deployment's ``env``), vCPU/memory,
  retry strategy, attempt timeout, array size and the run's labels as tags;
- records the Batch job id as the run's infrastructure id (and as the label ``aws-batch.job-id``);
- watches ``describe_jobs`` until the job ends, logging every status change in the flow run's log
  and emitting an ``aws-batch.job.<status>`` event; the calls of all runs of the worker that
  poll on the same tick are merged into one request per 100 jobs;
- maps the job's end onto the flow run (see "States" below), with Batch's ``statusReason`` and
  exit code in the message;
- warns in the flow run's log when the job stays RUNNABLE longer than ``runnable_warning_seconds``
  (the compute environment cannot place it), and with ``runnable_timeout_seconds`` terminates it
  and reports the run crashed;
- terminates the job when its flow run is cancelled: at once while the job waits to start or runs
  a command of its own; after ``cancel_grace_seconds`` when it runs the Prefect engine, which
  stops the flow itself (``prefect flow-run execute``); the run then ends Cancelled. The worker
  reads its runs' states itself (merged into one request per tick): Prefect's own worker-side
  cancellation is off unless ``PREFECT_WORKER_ENABLE_CANCELLATION=true``, and with it on,
  ``kill_infrastructure`` terminates the job of a run that has not started in the same way.

States: when the command runs the Prefect engine (the default), the engine owns the flow run's
state and the worker only reports what the engine could not: a FAILED job, or a SUCCEEDED job
whose flow run never reached a final state, make the run Crashed. Any other command (for example
an array job whose children each take a share of the work through ``AWS_BATCH_JOB_ARRAY_INDEX``)
makes the job itself the run: SUCCEEDED becomes Completed and FAILED becomes Failed.

AWS is reached through the ``aws_credentials`` block (region, keys, and
``aws_client_parameters.endpoint_url`` for an emulator); without one, boto3's own configuration
(``AWS_ENDPOINT_URL``, ``AWS_REGION``, ...) applies.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Self
from uuid import UUID

import anyio
import anyio.abc
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State
from prefect.events import emit_event
from prefect.exceptions import Abort, InfrastructureNotFound
from prefect.states import Cancelled, Completed, Crashed, Failed
from prefect.utilities.asyncutils import run_sync_in_worker_thread
from prefect.utilities.engine import propose_state
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorker, BaseWorkerResult
from prefect_aws.credentials import AwsCredentials
from pydantic import Field, model_validator

if TYPE_CHECKING:
    from prefect.client.schemas.objects import APIFlow, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse

WORKER_TYPE = "aws-batch"

TERMINAL = frozenset({"SUCCEEDED", "FAILED"})
WAITING = frozenset({"SUBMITTED", "PENDING", "RUNNABLE", "STARTING"})
CANCEL_REASON = "Flow run cancelled in Prefect"
RUNNABLE_TIMEOUT_REASON = "RUNNABLE longer than runnable_timeout_seconds (Prefect aws-batch worker)"
# Settings that describe the worker's own machine; a container gets its own.
WORKER_LOCAL_SETTINGS = ("PREFECT_HOME", "PREFECT_PROFILES_PATH", "PREFECT_LOCAL_STORAGE_PATH")
DEFAULT_SECRET_ENV_NAMES = ["PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"]
# AWS Batch limits: job names and tags.
_JOB_NAME_INVALID = re.compile(r"[^A-Za-z0-9_-]+")
_TAG_INVALID = re.compile(r"[^\w .:/=+\-@]+")
_MAX_TAGS = 50
# Commands whose process is the Prefect engine: it reports the flow run's state itself.
_ENGINE_MARKERS = ("prefect.engine", "prefect flow-run execute")


def runs_prefect_engine(command: str | None) -> bool:
    """Whether ``command`` starts the Prefect engine for the flow run (which then owns its state)."""
    normalized = " ".join(shlex.split(command or ""))
    return any(marker in normalized for marker in _ENGINE_MARKERS)


def batch_job_name(name: str | None, fallback: str = "prefect-flow-run") -> str:
    """A valid Batch job name: letters, digits, ``-`` and ``_``, starting alphanumeric, 2-128 long."""
    cleaned = _JOB_NAME_INVALID.sub("-", name or "").strip("-_")
    if not cleaned:
        cleaned = fallback
    if not cleaned[0].isalnum():
        cleaned = f"p{cleaned}"
    if len(cleaned) < 2:
        cleaned = f"{cleaned}-{fallback}"
    return cleaned[:128]


def batch_tags(labels: dict[str, str]) -> dict[str, str]:
    """Prefect labels as Batch tags (allowed characters, lengths, no ``aws:`` keys, at most 50)."""
    tags: dict[str, str] = {}
    for key, value in labels.items():
        if value is None:
            continue
        key = _TAG_INVALID.sub("_", str(key))[:128]
        if not key or key.lower().startswith("aws:"):
            continue
        tags[key] = _TAG_INVALID.sub("_", str(value))[:256]
        if len(tags) == _MAX_TAGS:
            break
    return tags


class BatchJobConfiguration(BaseJobConfiguration):
    """What the worker needs to submit one flow run as an AWS Batch job."""

    aws_credentials: AwsCredentials = Field(default_factory=AwsCredentials)
    job_queue: str | None = Field(default=None)
    job_definition: str | None = Field(default=None)
    vcpu: float | None = Field(default=None)
    memory: int | None = Field(default=None)
    retry_strategy: dict[str, Any] | None = Field(default=None)
    timeout_seconds: int | None = Field(default=None)
    array_size: int | None = Field(default=None)
    share_identifier: str | None = Field(default=None)
    secret_env_names: list[str] = Field(default_factory=lambda: list(DEFAULT_SECRET_ENV_NAMES))
    runnable_warning_seconds: float | None = Field(default=600)
    runnable_timeout_seconds: float | None = Field(default=None)
    poll_interval_seconds: float = Field(default=5.0)
    cancel_grace_seconds: float = Field(default=60)

    @model_validator(mode="after")
    def _check_limits(self) -> Self:
        if self.vcpu is not None and self.vcpu <= 0:
            raise ValueError(f"vcpu must be positive, got {self.vcpu}")
        if self.memory is not None and self.memory < 4:
            raise ValueError(f"memory is in MiB and must be at least 4, got {self.memory}")
        if self.timeout_seconds is not None and self.timeout_seconds < 60:
            raise ValueError(
                f"timeout_seconds must be at least 60 (AWS Batch minimum), got {self.timeout_seconds}"
            )
        if self.array_size is not None and not 2 <= self.array_size <= 10_000:
            raise ValueError(f"array_size must be between 2 and 10000 (or unset), got {self.array_size}")
        if self.poll_interval_seconds <= 0:
            raise ValueError(f"poll_interval_seconds must be positive, got {self.poll_interval_seconds}")
        return self

    def prepare_for_flow_run(
        self,
        flow_run: FlowRun,
        deployment: DeploymentResponse | None = None,
        flow: APIFlow | None = None,
        work_pool: WorkPool | None = None,
        worker_name: str | None = None,
        worker_id: UUID | None = None,
    ) -> None:
        own_env = dict(self.env)
        super().prepare_for_flow_run(flow_run, deployment, flow, work_pool, worker_name, worker_id=worker_id)
        for name in WORKER_LOCAL_SETTINGS:
            if name not in own_env:
                self.env.pop(name, None)

    @property
    def command_args(self) -> list[str]:
        return shlex.split(self.command or self._base_flow_run_command())

    def check_submittable(self) -> None:
        """Clear errors for what AWS would refuse less clearly (or accept and then misbehave)."""
        missing = [name for name in ("job_queue", "job_definition") if not getattr(self, name)]
        if missing:
            raise ValueError(
                f"the aws-batch work pool needs {' and '.join(missing)}: set it in the pool's base job "
                "template (Terraform outputs batch_job_queue_arn / batch_job_definition_name) or in "
                "the deployment's job_variables"
            )
        if self.array_size and runs_prefect_engine(self.command):
            raise ValueError(
                f"array_size={self.array_size} would start the same flow run {self.array_size} times: "
                "an array job needs a command that takes its share of the work from "
                "AWS_BATCH_JOB_ARRAY_INDEX, not the Prefect engine"
            )

    def submit_job_request(self) -> dict[str, Any]:
        """The keyword arguments of ``batch.submit_job`` for this (prepared) configuration."""
        hidden = set(self.secret_env_names)
        environment = [
            {"name": name, "value": value}
            for name, value in sorted(self.env.items())
            if value is not None and name not in hidden
        ]
        overrides: dict[str, Any] = {"command": self.command_args, "environment": environment}
        resources = []
        if self.vcpu is not None:
            resources.append({"type": "VCPU", "value": f"{self.vcpu:g}"})
        if self.memory is not None:
            resources.append({"type": "MEMORY", "value": str(self.memory)})
        if resources:
            overrides["resourceRequirements"] = resources
        request: dict[str, Any] = {
            "jobName": batch_job_name(self.name),
            "jobQueue": self.job_queue,
            "jobDefinition": self.job_definition,
            "containerOverrides": overrides,
        }
        if self.retry_strategy:
            request["retryStrategy"] = self.retry_strategy
        if self.timeout_seconds:
            request["timeout"] = {"attemptDurationSeconds": int(self.timeout_seconds)}
        if self.array_size:
            request["arrayProperties"] = {"size": int(self.array_size)}
        if self.share_identifier:
            request["shareIdentifier"] = self.share_identifier
        tags = batch_tags(self.labels)
        if tags:
            request["tags"] = tags
        return request

    def describe_request(self) -> str:
        """One line for the flow run's log: where the job goes and what it asks for."""
        parts = [
            f"queue {self.job_queue}",
            f"definition {self.job_definition}",
            f"command {shlex.join(self.command_args)}",
        ]
        if self.vcpu is not None:
            parts.append(f"vCPU {self.vcpu:g}")
        if self.memory is not None:
            parts.append(f"memory {self.memory} MiB")
        if self.timeout_seconds:
            parts.append(f"attempt timeout {self.timeout_seconds} s")
        if self.retry_strategy:
            parts.append(f"retry strategy {json.dumps(self.retry_strategy, sort_keys=True)}")
        if self.array_size:
            parts.append(f"array size {self.array_size}")
        return ", ".join(parts)


class BatchVariables(BaseVariables):
    """Job variables of the ``aws-batch`` work pool (pool defaults, overridden per deployment)."""

    aws_credentials: AwsCredentials = Field(
        title="AWS Credentials",
        default_factory=AwsCredentials,
        description=(
            "AWS credentials block used to submit, watch and terminate jobs (region, keys, and "
            "aws_client_parameters.endpoint_url for an emulator). Without one, boto3's own "
            "configuration (AWS_ENDPOINT_URL, AWS_REGION, instance/task role) applies."
        ),
    )
    job_queue: str = Field(
        title="Job queue",
        description="Name or ARN of the AWS Batch job queue (Terraform output batch_job_queue_arn).",
    )
    job_definition: str = Field(
        title="Job definition",
        description=(
            "Job definition running the project image: name (latest active revision), name:revision "
            "or ARN (Terraform output batch_job_definition_name). Batch cannot override the image "
            "per job; the image is the definition's."
        ),
    )
    vcpu: float | None = Field(
        default=None,
        gt=0,
        title="vCPU",
        description="vCPUs of the job (VCPU resource requirement). Unset: the job definition's.",
    )
    memory: int | None = Field(
        default=None,
        ge=4,
        description="Memory of the job in MiB (MEMORY resource requirement). Unset: the job definition's.",
    )
    retry_strategy: dict[str, Any] | None = Field(
        default=None,
        title="Retry strategy",
        description=(
            'Batch retryStrategy, e.g. {"attempts": 2, "evaluateOnExit": [{"onStatusReason": '
            '"Host EC2*", "action": "RETRY"}, {"onReason": "*", "action": "EXIT"}]}. Replaces the '
            "job definition's strategy entirely. Unset: the definition's."
        ),
    )
    timeout_seconds: int | None = Field(
        default=None,
        ge=60,
        title="Attempt timeout (seconds)",
        description="Batch kills an attempt running longer than this. Unset: the job definition's.",
    )
    array_size: int | None = Field(
        default=None,
        ge=2,
        le=10000,
        title="Array size",
        description=(
            "Submit an array job of this many children; each gets AWS_BATCH_JOB_ARRAY_INDEX. Needs a "
            "command that takes its share of the work (not the Prefect engine); the run completes "
            "when every child succeeds."
        ),
    )
    share_identifier: str | None = Field(
        default=None,
        title="Share identifier",
        description="Fair-share identifier (required by job queues with a scheduling policy).",
    )
    secret_env_names: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SECRET_ENV_NAMES),
        title="Secret environment names",
        description=(
            "Variables the job definition supplies from Secrets Manager: never sent as plain "
            "environment overrides (describe-jobs would show them)."
        ),
    )
    runnable_warning_seconds: float | None = Field(
        default=600,
        ge=0,
        title="RUNNABLE warning (seconds)",
        description=(
            "Warn in the flow run's log (and emit aws-batch.job.stuck-runnable) when the job stays "
            "RUNNABLE this long: the compute environment cannot place it. Unset: never."
        ),
    )
    runnable_timeout_seconds: float | None = Field(
        default=None,
        ge=0,
        title="RUNNABLE limit (seconds)",
        description="Terminate the job and report the run crashed after this long RUNNABLE. Unset: wait.",
    )
    poll_interval_seconds: float = Field(
        default=5.0,
        gt=0,
        title="Poll interval (seconds)",
        description="How often the worker describes the job (and reads the flow run's state).",
    )
    cancel_grace_seconds: float = Field(
        default=60,
        ge=0,
        title="Cancellation grace (seconds)",
        description=(
            "A cancelled flow run whose job is RUNNING the Prefect engine gets this long to stop "
            "itself (prefect flow-run execute cancels the flow gracefully) before the job is "
            "terminated. A job that has not started is terminated at once."
        ),
    )


class BatchWorkerResult(BaseWorkerResult):
    """How an AWS Batch job ended (identifier: the job id)."""


class _Coalesced:
    """Look-ups of one id at a time by concurrent runs, merged into bulk requests.

    Runs poll on a common clock (multiples of their interval), so the ids asked for within a few
    milliseconds go out together: ``fetch(source, ids)`` once per ``chunk`` ids and source (a
    Batch client, the Prefect client), instead of one request per run.
    """

    def __init__(self, fetch: Callable[[Any, list[str]], Awaitable[dict[str, Any]]], chunk: int):
        self._fetch = fetch
        self._chunk = chunk
        self._waiting: dict[int, tuple[Any, dict[str, list[asyncio.Future]]]] = {}
        self._tasks: set[asyncio.Task] = set()

    async def __call__(self, source: Any, key: str) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        if id(source) not in self._waiting:
            self._waiting[id(source)] = (source, {})
            task = loop.create_task(self._flush(id(source)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._waiting[id(source)][1].setdefault(key, []).append(future)
        return await future

    async def _flush(self, source_id: int) -> None:
        await asyncio.sleep(0.05)
        source, waiting = self._waiting.pop(source_id)
        keys = list(waiting)
        found: dict[str, Any] = {}
        try:
            for start in range(0, len(keys), self._chunk):
                found.update(await self._fetch(source, keys[start : start + self._chunk]))
        except Exception as error:
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
            return
        for key, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(found.get(key))


async def _describe_jobs(client: Any, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    response = await run_sync_in_worker_thread(client.describe_jobs, jobs=job_ids)
    return {job["jobId"]: job for job in response.get("jobs", [])}


async def _flow_run_states(client: Any, flow_run_ids: list[str]) -> dict[str, State]:
    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in flow_run_ids])),
        limit=len(flow_run_ids),
    )
    return {str(run.id): run.state for run in runs}


async def _sleep_until_next_tick(interval: float) -> None:
    await anyio.sleep(interval - (time.monotonic() % interval))


class BatchWorker(BaseWorker[BatchJobConfiguration, BatchVariables, BatchWorkerResult]):
    """Runs each flow run as an AWS Batch job and follows it to the end."""

    type = WORKER_TYPE
    job_configuration = BatchJobConfiguration
    job_configuration_variables = BatchVariables
    _description = (
        "Execute flow runs as AWS Batch jobs (EC2, Spot or Fargate compute environments): submit to a "
        "job queue with a job definition, follow the job's states, terminate it on cancellation."
    )
    _display_name = "AWS Batch"
    _documentation_url = "https://docs.aws.amazon.com/batch/latest/userguide/jobs.html"
    _logo_url = (
        "https://raw.githubusercontent.com/PrefectHQ/prefect/main/docs/images/logos/prefect-logo-mark.png"
    )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._describe = _Coalesced(_describe_jobs, chunk=100)
        self._states = _Coalesced(_flow_run_states, chunk=200)

    async def run(
        self,
        flow_run: FlowRun,
        configuration: BatchJobConfiguration,
        task_status: anyio.abc.TaskStatus[str] | None = None,
    ) -> BatchWorkerResult:
        logger = self.get_flow_run_logger(flow_run)
        configuration.check_submittable()
        client = await run_sync_in_worker_thread(configuration.aws_credentials.get_client, "batch")
        request = configuration.submit_job_request()
        logger.info("Submitting flow run to AWS Batch: %s", configuration.describe_request())
        try:
            response = await run_sync_in_worker_thread(client.submit_job, **request)
        except Exception as error:
            raise RuntimeError(
                f"AWS Batch refused the job (queue {configuration.job_queue!r}, definition "
                f"{configuration.job_definition!r}): {error}"
            ) from error
        job_id = response["jobId"]
        logger.info("AWS Batch job %s (%s) submitted", job_id, response.get("jobArn", request["jobName"]))
        if task_status is not None:
            task_status.started(job_id)
        labelling = asyncio.get_running_loop().create_task(
            self._label(flow_run, {"aws-batch.job-id": job_id})
        )
        try:
            return await self._watch(flow_run, configuration, client, job_id)
        finally:
            await labelling

    async def _label(self, flow_run: FlowRun, labels: dict[str, str]) -> None:
        try:
            await self.client.update_flow_run_labels(flow_run.id, labels)
        except Exception as error:  # labels are a convenience; the infrastructure id is recorded
            self._logger.debug("could not label flow run %s: %s", flow_run.id, error)

    def _emit(self, flow_run: FlowRun, job_id: str, name: str, payload: dict[str, Any]) -> None:
        try:
            emit_event(
                event=f"aws-batch.job.{name}",
                resource={"prefect.resource.id": f"aws-batch.job.{job_id}", "prefect.resource.name": job_id},
                related=[
                    {
                        "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                        "prefect.resource.role": "flow-run",
                        "prefect.resource.name": flow_run.name,
                    }
                ],
                payload=payload,
            )
        except Exception as error:
            self._logger.debug("could not emit aws-batch.job.%s: %s", name, error)

    async def _watch(
        self,
        flow_run: FlowRun,
        configuration: BatchJobConfiguration,
        client: Any,
        job_id: str,
    ) -> BatchWorkerResult:
        logger = self.get_flow_run_logger(flow_run)
        interval = configuration.poll_interval_seconds
        last_status: str | None = None
        runnable_since: float | None = None
        warned = False
        missing = 0
        failing = 0
        cancelling_since: float | None = None
        terminated = False
        engine_owns_state = runs_prefect_engine(configuration.command)
        while True:
            try:
                job = await self._describe(client, job_id)
                failing = 0
            except Exception as error:
                failing += 1
                if failing == 1 or failing % 60 == 0:
                    logger.warning("Could not describe AWS Batch job %s (will retry): %s", job_id, error)
                await _sleep_until_next_tick(interval)
                continue
            if job is None:
                missing += 1
                if missing >= 3:
                    message = f"AWS Batch job {job_id} is unknown to AWS Batch (deleted, or another region)"
                    logger.error(message)
                    await self._propose(flow_run, Crashed(message=message))
                    return BatchWorkerResult(identifier=job_id, status_code=-1)
                await _sleep_until_next_tick(interval)
                continue
            missing = 0
            status = job["status"]
            if status != last_status:
                reason = job.get("statusReason")
                logger.info("AWS Batch job %s is %s%s", job_id, status, f": {reason}" if reason else "")
                self._emit(flow_run, job_id, status.lower(), {"status": status, "statusReason": reason})
                last_status = status
            if status in TERMINAL:
                return await self._finish(flow_run, configuration, job)
            if not terminated and await self._cancel_requested(flow_run):
                now = time.monotonic()
                cancelling_since = cancelling_since if cancelling_since is not None else now
                if (
                    status in WAITING
                    or not engine_owns_state
                    or now - cancelling_since >= configuration.cancel_grace_seconds
                ):
                    await run_sync_in_worker_thread(client.terminate_job, jobId=job_id, reason=CANCEL_REASON)
                    terminated = True
                    logger.info("Flow run cancelled: terminated AWS Batch job %s (was %s)", job_id, status)
            if status == "RUNNABLE":
                now = time.monotonic()
                runnable_since = runnable_since if runnable_since is not None else now
                waited = now - runnable_since
                warn_after = configuration.runnable_warning_seconds
                if warn_after is not None and waited >= warn_after and not warned:
                    warned = True
                    logger.warning(
                        "AWS Batch job %s has been RUNNABLE for %.0f s: its compute environment cannot "
                        "place it (vCPU/memory above what the environment's instance types or max vCPUs "
                        "allow, the environment disabled or invalid, or no capacity / Spot price)",
                        job_id,
                        waited,
                    )
                    self._emit(flow_run, job_id, "stuck-runnable", {"seconds": round(waited)})
                limit = configuration.runnable_timeout_seconds
                if limit is not None and waited >= limit:
                    return await self._give_up_runnable(flow_run, client, job_id, waited, limit)
            else:
                runnable_since = None
            await _sleep_until_next_tick(interval)

    async def _cancel_requested(self, flow_run: FlowRun) -> bool:
        """Whether the run was cancelled (CANCELLING, or CANCELLED by someone else) in Prefect."""
        try:
            state = await self._states(self.client, str(flow_run.id))
        except Exception as error:
            self._logger.debug("could not read the state of flow run %s: %s", flow_run.id, error)
            return False
        return state is not None and (state.is_cancelling() or state.is_cancelled())

    async def _give_up_runnable(
        self, flow_run: FlowRun, client: Any, job_id: str, waited: float, limit: float
    ) -> BatchWorkerResult:
        logger = self.get_flow_run_logger(flow_run)
        message = (
            f"AWS Batch job {job_id} stayed RUNNABLE for {waited:.0f} s (runnable_timeout_seconds={limit:g}): "
            "terminated; its compute environment could not place it"
        )
        await run_sync_in_worker_thread(client.terminate_job, jobId=job_id, reason=RUNNABLE_TIMEOUT_REASON)
        logger.error(message)
        await self._propose(flow_run, Crashed(message=message))
        return BatchWorkerResult(identifier=job_id, status_code=-1)

    async def _finish(
        self, flow_run: FlowRun, configuration: BatchJobConfiguration, job: dict[str, Any]
    ) -> BatchWorkerResult:
        logger = self.get_flow_run_logger(flow_run)
        job_id = job["jobId"]
        status = job["status"]
        container = job.get("container") or {}
        exit_code = container.get("exitCode")
        if container.get("logStreamName"):
            logger.info("AWS Batch job %s container log stream: %s", job_id, container["logStreamName"])
        summary = (job.get("arrayProperties") or {}).get("statusSummary")
        summary_text = (
            ", ".join(f"{count} {name}" for name, count in sorted(summary.items()) if count)
            if summary
            else ""
        )
        engine_owns_state = runs_prefect_engine(configuration.command)
        reason = job.get("statusReason")
        current = await self._flow_run_state(flow_run)
        if current is not None and (current.is_cancelling() or current.is_cancelled()):
            message = f"Flow run cancelled; AWS Batch job {job_id} ended {status}" + (
                f": {reason}" if reason else ""
            )
            logger.info(message)
            if current.is_cancelling():
                await self._propose(flow_run, Cancelled(message=message))
            return BatchWorkerResult(identifier=job_id, status_code=0)
        settled = current is not None and current.is_final()

        if status == "SUCCEEDED":
            if not settled:
                if engine_owns_state:
                    message = (
                        f"AWS Batch job {job_id} SUCCEEDED, but the flow run never reported a final state "
                        f"(still {current.name if current else 'unknown'}): the job's command "
                        f"({shlex.join(configuration.command_args)}) did not run it"
                    )
                    logger.error(message)
                    await self._propose(flow_run, Crashed(message=message))
                else:
                    size = (job.get("arrayProperties") or {}).get("size")
                    message = f"AWS Batch job {job_id} SUCCEEDED" + (
                        f" ({size} array children: {summary_text})" if size else ""
                    )
                    await self._propose(flow_run, Completed(message=message))
            return BatchWorkerResult(identifier=job_id, status_code=0)

        message = f"AWS Batch job {job_id} FAILED: {reason or 'no status reason given'}"
        if exit_code is not None:
            message += f" (exit code {exit_code})"
        if summary_text:
            message += f"; array children: {summary_text}"
        if settled:
            logger.info(message)
        else:
            logger.error(message)
            await self._propose(
                flow_run, Crashed(message=message) if engine_owns_state else Failed(message=message)
            )
        # The container's exit code (the base worker explains known ones, e.g. 137: out of memory);
        # -1 when Batch reports none (the container never ran).
        return BatchWorkerResult(identifier=job_id, status_code=exit_code if exit_code else -1)

    async def _flow_run_state(self, flow_run: FlowRun):
        try:
            return (await self.client.read_flow_run(flow_run.id)).state
        except Exception as error:
            self._logger.warning("could not read flow run %s: %s", flow_run.id, error)
            return None

    async def _propose(self, flow_run: FlowRun, state) -> None:
        try:
            await propose_state(self.client, state, flow_run_id=flow_run.id)
        except Abort:
            pass  # the run reached a final state meanwhile; it keeps it
        except Exception:
            self.get_flow_run_logger(flow_run).exception(
                "Could not set the flow run's state to %s", state.type.value
            )

    async def kill_infrastructure(
        self,
        infrastructure_pid: str,
        configuration: BatchJobConfiguration,
        grace_seconds: int = 30,
    ) -> None:
        """Terminate the run's Batch job (Batch stops a running container with SIGTERM, then SIGKILL)."""
        job_id = infrastructure_pid
        client = await run_sync_in_worker_thread(configuration.aws_credentials.get_client, "batch")
        response = await run_sync_in_worker_thread(client.describe_jobs, jobs=[job_id])
        jobs = response.get("jobs", [])
        if not jobs:
            raise InfrastructureNotFound(f"AWS Batch job {job_id} not found")
        status = jobs[0]["status"]
        if status in TERMINAL:
            raise InfrastructureNotFound(f"AWS Batch job {job_id} already {status}")
        await run_sync_in_worker_thread(client.terminate_job, jobId=job_id, reason=CANCEL_REASON)
        self._logger.info("Terminated AWS Batch job %s (was %s)", job_id, status)
