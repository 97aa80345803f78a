"""The jobs SDK (seed 004): create, dispatch, execute, report progress, store outputs, end.

:class:`JobService` binds the parts — a :class:`~flows.jobs.store.JobStore` (the source of truth),
a mirror that writes each job's JSON to ``s3://{data}/results/{job_id}/job.json`` after every change,
a dispatcher that creates the job type's flow run with ``{"id": JOB_ID}``, and the job types. The
module functions (what ``interlinked.jobs`` re-exports and the CLI calls) use one default service
per process: PostgreSQL through the ``interlinked-database`` block, S3 through ``blocks.s3``,
Prefect's ``run_deployment``. They take and return the job as the seed's JSON (a dict).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, Protocol

from flows.jobs import checkpoints, cost, machine, memory, triage
from flows.jobs.model import (
    CANCELLED,
    CREATED,
    DISPATCH,
    EXECUTE,
    FAILED,
    FAILURE,
    JOB_SIGNALS,
    Job,
    JobError,
)
from flows.jobs.policy import JobPolicy
from flows.jobs.store import JobStore, change
from flows.jobs.types import JobTypes, load_job_types

JOB_ID_ENV = "INTERLINKED_JOB_ID"
EXECUTION_ID_ENV = "INTERLINKED_EXECUTION_ID"

logger = logging.getLogger(__name__)


def job_json_key(job_id: str) -> str:
    """Where the copy of a job's JSON lives in the data bucket (next to its results)."""
    return f"results/{job_id}/job.json"


class Dispatcher(Protocol):
    def create_run(self, job: Job, deployment: str) -> str:
        """Create the flow run of ``deployment`` for ``job`` (parameters ``{"id": job.id}``); its id."""

    def cancel_run(self, flow_run_id: str) -> None:
        """Ask Prefect to cancel the flow run (its infrastructure is stopped by the worker)."""


class PrefectDispatcher:
    """Flow runs through the Prefect API (``run_deployment(..., timeout=0)``: created, not awaited)."""

    def create_run(self, job: Job, deployment: str) -> str:
        from prefect.deployments import run_deployment

        name = str(job.input_data.get("name") or job.job_type)
        flow_run = run_deployment(
            deployment,
            parameters={"id": job.id},
            job_variables=(job.placement or {}).get("jobVariables") or None,  # triage: memory, tags
            flow_run_name=f"{name} (job {job.id[:8]}, attempt {len(job.executions) + 1})"[:200],
            tags=[f"job:{job.id}", f"job-type:{job.job_type}", "interlinked-job"],
            timeout=0,
            as_subflow=False,
        )
        return str(flow_run.id)

    def cancel_run(self, flow_run_id: str) -> None:
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelling

        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Cancelling(message="job cancelled"), force=True)


VERSION_METADATA = "job-version"


def write_copy(store: Any, job: Job, *, attempts: int = 10) -> bool:
    """Write the job's JSON to ``results/{job_id}/job.json`` in ``store`` (a :class:`blocks.s3.ObjectStore`)
    unless the copy there is already as new; True when written.

    Two changes of one job can reach S3 in either order; the copy carries the job's version
    (object metadata) and is replaced only by a newer one, with a conditional write on the ETag seen,
    so an older version never overwrites a newer one.
    """
    from blocks.s3 import WriteConflict

    key = job_json_key(job.id)
    body = json.dumps(job.to_json(), indent=2)
    for _ in range(attempts):
        head = store.head(key)
        if head is None:
            condition: dict[str, Any] = {"if_none_match": True}
        else:
            stored = head.get("Metadata", {}).get(VERSION_METADATA, "")
            if stored.isdigit() and int(stored) >= job.version:
                return False
            condition = {"if_match": head["ETag"].strip('"')}
        try:
            store.put(
                key,
                body,
                content_type="application/json",
                Metadata={VERSION_METADATA: str(job.version)},
                **condition,
            )
            return True
        except WriteConflict:
            continue  # another change wrote meanwhile: look again
    raise RuntimeError(f"the copy of job {job.id} kept changing while version {job.version} was written")


def s3_mirror(job: Job) -> None:
    """Keep ``s3://{data}/results/{job_id}/job.json`` at the newest version of the job."""
    from blocks.s3 import data_store

    write_copy(data_store(), job)


def _run_context() -> tuple[str | None, str | None]:
    """(flow run id, infrastructure id) of the calling process: the Prefect run it is in, and the
    Batch job, or else host and pid, that runs it."""
    flow_run_id = None
    try:
        from prefect.runtime import flow_run

        flow_run_id = flow_run.id
    except Exception:  # not in a flow run, or Prefect not importable here
        flow_run_id = None
    batch_job = os.environ.get("AWS_BATCH_JOB_ID")
    if batch_job:
        infrastructure = f"batch:{batch_job}"
    else:
        task = ecs_task()
        infrastructure = (
            f"ecs:{task[0]}::{task[1]}" if task else f"process:{socket.gethostname()}:{os.getpid()}"
        )
    return (str(flow_run_id) if flow_run_id else None), infrastructure


ECS_METADATA_ENV = "ECS_CONTAINER_METADATA_URI_V4"


def ecs_task() -> tuple[str, str] | None:
    """(cluster, task ARN) of the ECS task this process runs in, from the task metadata endpoint
    (``ECS_CONTAINER_METADATA_URI_V4``); None outside ECS or when the endpoint does not answer."""
    import urllib.request

    base = os.environ.get(ECS_METADATA_ENV)
    if not base:
        return None
    try:
        with urllib.request.urlopen(f"{base.rstrip('/')}/task", timeout=2) as response:
            task = json.loads(response.read())
        return str(task["Cluster"]), str(task["TaskARN"])
    except Exception:  # no metadata: the process id is still recorded
        return None


class JobService:
    """The job operations over a store, a mirror, a dispatcher and the job types."""

    def __init__(
        self,
        store: JobStore,
        *,
        mirror: Callable[[Job], None] | None = None,
        dispatcher: Dispatcher | None = None,
        job_types: JobTypes | None = None,
        policy: JobPolicy | None = None,
    ):
        self.store = store
        self.mirror = mirror
        self.dispatcher = dispatcher
        self.job_types = job_types or load_job_types()
        self.policy = policy or JobPolicy()

    # -- bookkeeping ------------------------------------------------------------------------------
    def _mirror(self, job: Job) -> Job:
        if self.mirror is not None:
            try:
                self.mirror(job)
            except Exception as error:  # the store is the truth; the next change writes the copy again
                logger.warning(
                    "could not write the copy of job %s: %s: %s", job.id, type(error).__name__, error
                )
        return job

    def _change(self, job_id: str, transition: Callable[[Job], Job]) -> Job:
        return self._mirror(change(self.store, job_id, transition))

    # -- the seed's operations ----------------------------------------------------------------------
    def create(
        self,
        job_type: str,
        input_data: Any = None,
        input_files: Any = None,
        estimations: Any = None,
        *,
        job_id: str | None = None,
        group: str | None = None,
    ) -> Job:
        self.job_types.check_by_hand(job_type, "create")
        job = machine.new_job(
            job_type,
            input_data=input_data,
            input_files=input_files,
            estimations=estimations,
            known_types=self.job_types.names(),
            job_id=job_id,
        )
        job.group = triage.check_group(group if group is not None else self.policy.jobs_default_group)
        self.place(job)  # estimations no pool can take are refused now, not at dispatch
        return self._mirror(self.store.insert(job))

    def start(
        self,
        job_type: str,
        input_data: Any = None,
        input_files: Any = None,
        estimations: Any = None,
        *,
        group: str | None = None,
        execute: bool = False,
    ) -> Job:
        """A job for work the calling flow run already does: stored DISPATCHED to that run (no new
        run is created) and, with ``execute``, EXECUTING with its first execution — one insert.

        Any job type may be started this way, also one whose jobs are made by a flow
        (``createdBy``); the sweeper watches and retries it like any other."""
        job = machine.new_job(
            job_type,
            input_data=input_data,
            input_files=input_files,
            estimations=estimations,
            known_types=self.job_types.names(),
        )
        job.group = triage.check_group(group if group is not None else self.policy.jobs_default_group)
        job.placement = self.place(job)
        flow_run_id, infrastructure_id = _run_context()
        job = machine.adopt(job, flow_run_id)
        if execute:
            job = _with_resources(
                machine.execute(job, flow_run_id=flow_run_id, infrastructure_id=infrastructure_id)
            )
        return self._mirror(self.store.insert(job))

    def get(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def list(self, *, job_type: str | None = None, state: str | None = None, limit: int = 100) -> list[Job]:
        return self.store.list(job_type=job_type, state=state, limit=limit)

    def signal(self, job_id: str, state: str, **options: Any) -> Job:
        if state == DISPATCH:
            return self._dispatch(job_id, machine.dispatch)
        if state == EXECUTE:
            # The caller may say where the work runs (the jobs Lambda does, for its callers'
            # processes); else it is this process.
            if "flow_run_id" not in options or "infrastructure_id" not in options:
                flow_run_id, infrastructure_id = _run_context()
                options.setdefault("flow_run_id", flow_run_id)
                options.setdefault("infrastructure_id", infrastructure_id)
            return self._change(job_id, lambda job: _with_resources(machine.execute(job, **options)))
        raise JobError(f"unknown job signal {state!r}; a job takes {' or '.join(JOB_SIGNALS)}")

    def update_execution(
        self,
        job_id: str,
        execution_id: str,
        *,
        progress: Any = None,
        metrics: Any = None,
        checkpoint: Any = None,
    ) -> Job:
        """Progress, metrics and (not None) a checkpoint the next execution resumes from."""
        if checkpoint is not None:
            checkpoint = checkpoints.check_checkpoint(checkpoint, self.policy.jobs_checkpoint_max_bytes)

        def transition(job: Job) -> Job:
            changed = machine.update_execution(job, execution_id, progress=progress, metrics=metrics)
            return changed if checkpoint is None else checkpoints.attach(changed, execution_id, checkpoint)

        return self._change(job_id, transition)

    def get_checkpoint(self, job_id: str) -> Any:
        """The job's last checkpoint (None when no execution attached one)."""
        return checkpoints.last_checkpoint(self.store.get(job_id))[0]

    def update(self, job_id: str, *, output_data: Any = None, output_files: Any = None) -> Job:
        return self._change(
            job_id, lambda job: machine.update(job, output_data=output_data, output_files=output_files)
        )

    def signal_execution(
        self,
        job_id: str,
        execution_id: str,
        state: str,
        *,
        failure_reason: str | None = None,
        failure_code: str | None = None,
        failure_evidence: dict[str, Any] | None = None,
        last_report: dict[str, Any] | None = None,
    ) -> Job:
        """End the execution. ``last_report`` (``progress``, ``metrics``, ``output_data``,
        ``output_files``) is applied first in the same change: one write for the end of a run that
        buffers its last reports (:class:`flows.jobs.work.TrackedJob`)."""
        report = last_report or {}

        def transition(job: Job) -> Job:
            if report.get("progress") is not None or report.get("metrics"):
                job = machine.update_execution(
                    job, execution_id, progress=report.get("progress"), metrics=report.get("metrics")
                )
            if report.get("output_data") is not None or report.get("output_files") is not None:
                job = machine.update(
                    job, output_data=report.get("output_data"), output_files=report.get("output_files")
                )
            ended = machine.signal_execution(
                job,
                execution_id,
                state,
                failure_reason=failure_reason,
                failure_code=failure_code,
                failure_evidence=failure_evidence,
            )
            return cost.record(ended, execution_id, self.policy)

        job = self._change(job_id, transition)
        if state == FAILURE:
            job = self._retry_after_oom(job)
        return job

    def _retry_after_oom(self, job: Job) -> Job:
        """Dispatch again, with twice the memory (:mod:`.triage`), a job whose execution just ran out
        of memory — while it has attempts left and ``INTERLINKED_JOBS_RETRY_ON_OOM`` is on."""
        if not (
            self.policy.jobs_retry_on_oom
            and self.dispatcher is not None
            and memory.is_out_of_memory(job.current_execution)
            and len(job.executions) < job.estimations.max_attempts
        ):
            return job
        try:
            return self.retry(job.id)
        except Exception as error:  # e.g. over budget, or Prefect unreachable: the job stays FAILED
            logger.warning("job %s ran out of memory and could not be retried: %s", job.id, error)
            return job

    # -- operator actions ---------------------------------------------------------------------------
    def cancel(self, job_id: str, *, reason: str = "cancelled by the user") -> Job:
        job = self._change(
            job_id, lambda current: cost.record_ended(machine.cancel(current, reason=reason), self.policy)
        )
        if job.flow_run_id and self.dispatcher is not None:
            try:
                self.dispatcher.cancel_run(job.flow_run_id)
            except Exception as error:  # e.g. the run already ended; the job is cancelled either way
                logger.warning("could not cancel flow run %s of job %s: %s", job.flow_run_id, job_id, error)
        return job

    def retry(self, job_id: str, *, force: bool = False) -> Job:
        return self._dispatch(job_id, lambda job: machine.retry(job, force=force))

    # -- dispatch -----------------------------------------------------------------------------------
    def _dispatch(self, job_id: str, transition: Callable[[Job], Job]) -> Job:
        """Mark the job DISPATCHED (only one caller can), create its flow run, record the run id;
        when the run cannot be created the job goes back to the state it was in."""
        if self.dispatcher is None:
            raise JobError("this job service has no dispatcher: it cannot create flow runs")
        current = self.store.get(job_id)
        self.job_types.check_by_hand(current.job_type, "dispatch or retry")
        transition(current)  # refused transitions say so before triage and budget are looked at
        placement = self.place(current, check_budget=True)
        found: dict[str, str] = {}

        def mark(job: Job) -> Job:
            found["state"] = job.state
            changed = transition(job)
            changed.placement = placement
            return changed

        dispatched = self._change(job_id, mark)
        try:
            flow_run_id = self.dispatcher.create_run(dispatched, placement["deployment"])
        except Exception:
            back_to = found["state"] if found["state"] in (CREATED, FAILED, CANCELLED) else CREATED
            self._change(job_id, lambda job: machine.undispatch(job, back_to))
            raise
        return self._change(job_id, lambda job: machine.record_flow_run(job, flow_run_id))

    # -- triage and cost ----------------------------------------------------------------------------
    def place(self, job: Job, *, check_budget: bool = False) -> dict[str, Any]:
        """Where the job's next execution goes and with what (:mod:`.triage`), with its cost
        estimate; ``check_budget`` refuses (:class:`JobError`) what would pass the group's budget."""
        group = job.group or self.policy.jobs_default_group
        chosen = triage.place(job, self.job_types, self.policy, group)
        document = chosen.to_json()
        document["estimate"] = cost.estimate(
            chosen.resources(), job.estimations.expected_seconds, self.policy
        )
        if check_budget and self.policy.budget_of(group) is not None:
            since = cost.period_start(self.policy.jobs_budget_period)
            cost.check_budget(self.store.list_changed_since(since), group, document["estimate"], self.policy)
        return document

    def cost_summary(self, *, group: str | None = None, since: str | None = None) -> dict[str, Any]:
        """Cost per execution, per group and in all, of executions that ended at or after ``since``."""
        since_iso = None if since is None else cost.iso(cost.parse_time(since, "--since"))
        if group is not None:
            triage.check_group(group)
        return cost.summary(
            self.store.list_changed_since(since_iso), self.policy, group=group, since=since_iso
        )


_RESOURCE_KEYS = (
    "pool",
    "size",
    "deploymentSet",
    "deployment",
    "cpu",
    "memoryMiB",
    "capacity",
    "pricedAs",
    "instanceType",
)


def _with_resources(job: Job) -> Job:
    """The new execution (EXECUTE) runs with the latest dispatch's resources and resumes from the
    job's last checkpoint."""
    current = job.current_execution
    if current is not None and job.placement:
        current.resources = {key: job.placement.get(key) for key in _RESOURCE_KEYS}
    return checkpoints.carry_forward(job)


# -- the default service and the module-level SDK ---------------------------------------------------
_default: JobService | None = None
_default_lock = threading.Lock()


def _reset_default() -> None:
    global _default
    _default = None


os.register_at_fork(after_in_child=_reset_default)


def default_service() -> JobService:
    """The process's service: PostgreSQL (``interlinked-database`` block or ``INTERLINKED_DATABASE_URL``),
    the S3 copy and Prefect dispatch."""
    global _default
    with _default_lock:
        if _default is None:
            from blocks.postgres import database
            from flows.jobs.postgres import PostgresJobStore

            store = PostgresJobStore.from_dsn(database().dsn())
            _default = JobService(store, mirror=s3_mirror, dispatcher=PrefectDispatcher())
        return _default


def set_default_service(service: JobService | None) -> None:
    """Use ``service`` for the module functions (None: build the default again on next use)."""
    global _default
    _default = service


def create(
    job_type: str,
    input_data: dict[str, Any] | None = None,
    input_files: dict[str, Any] | None = None,
    estimations: dict[str, Any] | None = None,
    group: str | None = None,
) -> dict[str, Any]:
    """Create a job of ``job_type`` (state CREATED) for ``group`` (who pays; default
    ``INTERLINKED_JOBS_DEFAULT_GROUP``); the job's JSON."""
    return default_service().create(job_type, input_data, input_files, estimations, group=group).to_json()


def start(
    job_type: str,
    input_data: dict[str, Any] | None = None,
    input_files: dict[str, Any] | None = None,
    estimations: dict[str, Any] | None = None,
    group: str | None = None,
    execute: bool = False,
) -> dict[str, Any]:
    """A job for work this flow run already does (DISPATCHED to it; EXECUTING with ``execute``)."""
    return (
        default_service()
        .start(job_type, input_data, input_files, estimations, group=group, execute=execute)
        .to_json()
    )


def get(job_id: str) -> dict[str, Any]:
    """The job's JSON (``inputData``, ``currentExecution``, ``executions``, ``outputData``, ...).

    In a script job's code (no store access, :mod:`flows.jobs.channel`): only its own job, as it
    was when the script started."""
    from flows.jobs import channel

    directory = channel.channel_dir()
    if directory is not None and job_id == os.environ.get(JOB_ID_ENV):
        job = channel.read_job(directory)
        job.pop("checkpoint", None)
        return job
    return default_service().get(job_id).to_json()


def list_jobs(
    *, job_type: str | None = None, state: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Jobs, newest first."""
    return [job.to_json() for job in default_service().list(job_type=job_type, state=state, limit=limit)]


def signal(job_id: str, state: str) -> dict[str, Any]:
    """``"DISPATCH"``: create the job type's flow run with ``{"id": job_id}``. ``"EXECUTE"`` (inside the
    work): start a new execution — and set ``INTERLINKED_JOB_ID``/``INTERLINKED_EXECUTION_ID`` in this
    process's environment, so :func:`progress` and child processes know it."""
    job = default_service().signal(job_id, state)
    if state == EXECUTE and job.current_execution is not None:
        os.environ[JOB_ID_ENV] = job.id
        os.environ[EXECUTION_ID_ENV] = job.current_execution.execution_id
    return job.to_json()


def update_execution(
    job_id: str,
    execution_id: str,
    progress: float | None = None,
    metrics: dict[str, Any] | None = None,
    checkpoint: Any = None,
) -> dict[str, Any]:
    """Report progress (in [0, 1]) and/or metrics (merged) of a running execution, and optionally a
    checkpoint (small JSON) the job's next execution receives to resume from."""
    return (
        default_service()
        .update_execution(job_id, execution_id, progress=progress, metrics=metrics, checkpoint=checkpoint)
        .to_json()
    )


def get_checkpoint(job_id: str | None = None) -> Any:
    """The last checkpoint of the job (default: the job this process runs), or None."""
    from flows.jobs import channel

    directory = channel.channel_dir()
    if directory is not None and job_id in (None, os.environ.get(JOB_ID_ENV)):
        return channel.read_job(directory).get("checkpoint")
    return default_service().get_checkpoint(job_id if job_id is not None else current_ids()[0])


def place(job_id: str) -> dict[str, Any]:
    """Where a dispatch of the job would send it now, with what and why (triage), and its estimate."""
    service = default_service()
    return service.place(service.get(job_id))


def cost_summary(*, group: str | None = None, since: str | None = None) -> dict[str, Any]:
    """Cost per execution, per group and in all (executions that ended at or after ``since``)."""
    return default_service().cost_summary(group=group, since=since)


def update(
    job_id: str, output_data: dict[str, Any] | None = None, output_files: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Store the job's ``outputData`` and/or ``outputFiles``."""
    return default_service().update(job_id, output_data=output_data, output_files=output_files).to_json()


def signal_execution(
    job_id: str,
    execution_id: str,
    state: str,
    failure_reason: str | None = None,
    failure_code: str | None = None,
    failure_evidence: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """End an execution: ``"SUCCESS"`` or ``"FAILURE"`` (with ``failure_reason`` and optionally a
    stable ``failure_code`` of :class:`flows.jobs.failures.FailureCode` and its evidence)."""
    return (
        default_service()
        .signal_execution(
            job_id,
            execution_id,
            state,
            failure_reason=failure_reason,
            failure_code=failure_code,
            failure_evidence=failure_evidence,
        )
        .to_json()
    )


def cancel(job_id: str) -> dict[str, Any]:
    """Cancel a live job (and ask Prefect to cancel its flow run)."""
    return default_service().cancel(job_id).to_json()


def retry(job_id: str, *, force: bool = False) -> dict[str, Any]:
    """Dispatch a FAILED or CANCELLED job again (a new flow run; a new execution when it starts)."""
    return default_service().retry(job_id, force=force).to_json()


def current_ids() -> tuple[str, str]:
    """(job id, execution id) of the work this process does, from the environment."""
    job_id, execution_id = os.environ.get(JOB_ID_ENV), os.environ.get(EXECUTION_ID_ENV)
    if not job_id or not execution_id:
        raise JobError(
            f"progress() reports for the job this process runs, but {JOB_ID_ENV} and {EXECUTION_ID_ENV} "
            "are not both set (call it inside a job's work, after signal(job_id, 'EXECUTE'))"
        )
    return job_id, execution_id


def progress(
    fraction: float, metrics: dict[str, Any] | None = None, checkpoint: Any = None
) -> dict[str, Any]:
    """Report progress (in [0, 1]), metrics and optionally a checkpoint of the current execution
    (from the environment)."""
    job_id, execution_id = current_ids()
    from flows.jobs import channel

    directory = channel.channel_dir()
    if directory is not None:  # a script job's code: its flow relays the report
        return channel.write_report(directory, fraction, metrics, checkpoint)
    return update_execution(job_id, execution_id, progress=fraction, metrics=metrics, checkpoint=checkpoint)
