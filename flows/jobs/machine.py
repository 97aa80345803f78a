"""The job state machine: pure functions from a job to its next version, or a :class:`JobError`.

No I/O here: the store applies a transition to the job it read and writes the result only if the job
did not change in between (:mod:`.store`), so a transition is checked against the state it changes.
Every function returns a new :class:`Job` and leaves its argument as it was; a refused transition
raises before anything is built, so nothing changes.

=============  ==============================  =================================================
signal         allowed when                    effect
=============  ==============================  =================================================
DISPATCH       CREATED                         DISPATCHED (the flow run id is recorded after)
adopt          CREATED                         DISPATCHED to the flow run already running it
EXECUTE        DISPATCHED                      EXECUTING; a new execution (attempt n + 1)
progress       current execution EXECUTING     progress in [0, 1]; metrics merged
update         EXECUTING                       outputData / outputFiles replaced
SUCCESS        current execution EXECUTING     execution SUCCESS (progress 1), job SUCCEEDED
FAILURE        current execution EXECUTING     execution FAILURE (+ reason), job FAILED
cancel         not terminal                    job CANCELLED (a running execution too)
retry          FAILED or CANCELLED             DISPATCHED again (below maxAttempts unless forced)
=============  ==============================  =================================================
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from flows.jobs.failures import FailureCode, code_of
from flows.jobs.model import (
    CANCELLED,
    CREATED,
    DISPATCH,
    DISPATCHED,
    EXECUTE,
    EXECUTING,
    EXECUTION_CANCELLED,
    EXECUTION_EXECUTING,
    EXECUTION_SIGNALS,
    FAILED,
    JOB_SIGNALS,
    SUCCEEDED,
    SUCCESS,
    TERMINAL_JOB_STATES,
    Estimations,
    Execution,
    Job,
    JobError,
    check_mapping,
    check_progress,
    now_iso,
)


def new_id() -> str:
    return str(uuid.uuid4())


def _estimations(value: Any) -> Estimations:
    if isinstance(value, Estimations):
        return value
    try:
        return Estimations.model_validate(check_mapping("estimations", value))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'estimations'}: {item['msg']}"
            for item in error.errors()
        )
        raise JobError(f"invalid estimations: {problems}") from None


def new_job(
    job_type: str,
    *,
    input_data: Any = None,
    input_files: Any = None,
    estimations: Any = None,
    known_types: Iterable[str] | None = None,
    job_id: str | None = None,
) -> Job:
    """A CREATED job; :class:`JobError` for an unknown type or input that is not a JSON object."""
    if not isinstance(job_type, str) or not job_type.strip():
        raise JobError(f"job type must be a non-empty string, got {job_type!r}")
    if known_types is not None:
        known = sorted(known_types)
        if job_type not in known:
            raise JobError(f"unknown job type {job_type!r}; known types: {', '.join(known) or 'none'}")
    stamp = now_iso()
    return Job(
        id=job_id or new_id(),
        job_type=job_type,
        input_data=check_mapping("inputData", input_data),
        input_files=check_mapping("inputFiles", input_files),
        estimations=_estimations(estimations),
        state=CREATED,
        created_at=stamp,
        updated_at=stamp,
    )


def _copy(job: Job) -> Job:
    changed = job.model_copy(deep=True)
    changed.updated_at = now_iso()
    return changed


def dispatch(job: Job) -> Job:
    """CREATED → DISPATCHED. The flow run id follows with :func:`record_flow_run`."""
    if job.state != CREATED:
        raise JobError(f"cannot DISPATCH job {job.id}: it is {job.state} (only a CREATED job is dispatched)")
    changed = _copy(job)
    changed.state = DISPATCHED
    changed.flow_run_id = None
    changed.dispatched_at = changed.updated_at
    return changed


def adopt(job: Job, flow_run_id: str | None) -> Job:
    """CREATED → DISPATCHED to ``flow_run_id``, the run that already does the work: a job a flow
    makes for part of its own work (a submission's dataset, a prepare-experiment run)."""
    if job.state != CREATED:
        raise JobError(f"cannot adopt job {job.id}: it is {job.state} (only a CREATED job is adopted)")
    changed = _copy(job)
    changed.state = DISPATCHED
    changed.flow_run_id = flow_run_id
    changed.dispatched_at = changed.updated_at
    return changed


def undispatch(job: Job, back_to: str) -> Job:
    """DISPATCHED → ``back_to`` (the state the dispatch found) when its flow run could not be created."""
    if job.state != DISPATCHED or job.flow_run_id is not None:
        raise JobError(f"job {job.id} is {job.state}; its dispatch cannot be undone")
    changed = _copy(job)
    changed.state = back_to
    changed.dispatched_at = None
    return changed


def record_flow_run(job: Job, flow_run_id: str) -> Job:
    """Remember the flow run of the latest dispatch (and give it to an execution that lacks one)."""
    changed = _copy(job)
    changed.flow_run_id = flow_run_id
    current = changed.current_execution
    if current is not None and current.flow_run_id is None and job.state == EXECUTING:
        current.flow_run_id = flow_run_id
    return changed


def execute(job: Job, *, flow_run_id: str | None = None, infrastructure_id: str | None = None) -> Job:
    """DISPATCHED → EXECUTING with a new execution (the work has started)."""
    if job.state != DISPATCHED:
        hint = {
            CREATED: "dispatch it first",
            EXECUTING: f"execution {job.current_execution.execution_id if job.current_execution else '?'} "
            "is still running",
        }.get(job.state, "retry it to run it again")
        raise JobError(f"cannot EXECUTE job {job.id}: it is {job.state} ({hint})")
    changed = _copy(job)
    changed.state = EXECUTING
    changed.executions.append(
        Execution(
            execution_id=new_id(),
            attempt=len(job.executions) + 1,
            created_at=changed.updated_at,
            updated_at=changed.updated_at,
            state=EXECUTION_EXECUTING,
            flow_run_id=flow_run_id or job.flow_run_id,
            infrastructure_id=infrastructure_id,
        )
    )
    return changed


def signal(job: Job, state: str, **options: Any) -> Job:
    """A job signal by name: ``DISPATCH`` or ``EXECUTE``."""
    if state == DISPATCH:
        return dispatch(job)
    if state == EXECUTE:
        return execute(job, **options)
    raise JobError(f"unknown job signal {state!r}; a job takes {' or '.join(JOB_SIGNALS)}")


def _running(job: Job, execution_id: str, action: str) -> Execution:
    execution = job.execution(execution_id)
    if execution.state != EXECUTION_EXECUTING:
        raise JobError(
            f"cannot {action} execution {execution_id} of job {job.id}: it already ended {execution.state}"
        )
    if job.current_execution is not execution:  # pragma: no cover - only the last can be EXECUTING
        raise JobError(f"execution {execution_id} of job {job.id} is not the current one")
    return execution


def update_execution(
    job: Job,
    execution_id: str,
    *,
    progress: Any = None,
    metrics: Any = None,
    infrastructure_id: str | None = None,
) -> Job:
    """Progress (in [0, 1]) and metrics (merged into the execution's) of the running execution."""
    value = None if progress is None else check_progress(progress)
    new_metrics = check_mapping("metrics", metrics)
    _running(job, execution_id, "update")
    changed = _copy(job)
    execution = changed.execution(execution_id)
    if value is not None:
        execution.progress = value
    execution.metrics.update(new_metrics)
    if infrastructure_id:
        execution.infrastructure_id = infrastructure_id
    execution.updated_at = changed.updated_at
    return changed


def update(job: Job, *, output_data: Any = None, output_files: Any = None) -> Job:
    """Store the outputs of an executing job (a field left None keeps its value)."""
    data = None if output_data is None else check_mapping("outputData", output_data)
    files = None if output_files is None else check_mapping("outputFiles", output_files)
    if job.state != EXECUTING:
        raise JobError(f"cannot update the outputs of job {job.id}: it is {job.state}, not EXECUTING")
    changed = _copy(job)
    if data is not None:
        changed.output_data = data
    if files is not None:
        changed.output_files = files
    return changed


def signal_execution(
    job: Job,
    execution_id: str,
    state: str,
    *,
    failure_reason: str | None = None,
    failure_code: str | None = None,
    failure_evidence: dict[str, Any] | None = None,
) -> Job:
    """End the running execution: SUCCESS → job SUCCEEDED, FAILURE (with a reason) → job FAILED.

    A FAILURE carries a stable ``failure_code`` (:mod:`.failures`; read from a ``"CODE: ..."``
    reason, else ``CODE_ERROR``: the work itself said it failed) and its evidence."""
    if state not in EXECUTION_SIGNALS:
        raise JobError(
            f"unknown execution signal {state!r}; an execution takes {' or '.join(EXECUTION_SIGNALS)}"
        )
    if failure_reason is not None and not isinstance(failure_reason, str):
        raise JobError(f"failure_reason must be a string, got {type(failure_reason).__name__}")
    if state == SUCCESS and (failure_reason or failure_code):
        raise JobError("a failure reason goes with FAILURE, not SUCCESS")
    if failure_code is not None and failure_code not in FailureCode.__members__:
        raise JobError(f"unknown failure code {failure_code!r}; known: {', '.join(FailureCode.__members__)}")
    _running(job, execution_id, state)
    changed = _copy(job)
    execution = changed.execution(execution_id)
    execution.state = state
    execution.finished_at = execution.updated_at = changed.updated_at
    if state == SUCCESS:
        execution.progress = 1.0  # done is all the way, whatever the last report said
        changed.state = SUCCEEDED
    else:
        execution.failure_reason = failure_reason or "unspecified failure"
        execution.failure_code = failure_code or code_of(execution.failure_reason) or FailureCode.CODE_ERROR
        execution.failure_evidence = check_mapping("failure evidence", failure_evidence)
        changed.state = FAILED
    return changed


def cancel(job: Job, *, reason: str = "cancelled") -> Job:
    """Any live job → CANCELLED; a running execution ends CANCELLED with ``reason``."""
    if job.state in TERMINAL_JOB_STATES:
        raise JobError(f"cannot cancel job {job.id}: it already ended {job.state}")
    changed = _copy(job)
    changed.state = CANCELLED
    current = changed.current_execution
    if current is not None and current.state == EXECUTION_EXECUTING:
        current.state = EXECUTION_CANCELLED
        current.failure_reason = reason
        current.failure_code = FailureCode.CANCELLED
        current.finished_at = current.updated_at = changed.updated_at
    return changed


def retry(job: Job, *, force: bool = False) -> Job:
    """FAILED or CANCELLED → DISPATCHED again; refused at ``maxAttempts`` executions unless ``force``."""
    if job.state not in (FAILED, CANCELLED):
        raise JobError(
            f"cannot retry job {job.id}: it is {job.state} (only FAILED or CANCELLED jobs are retried)"
        )
    attempts, limit = len(job.executions), job.estimations.max_attempts
    if attempts >= limit and not force:
        raise JobError(
            f"job {job.id} has had {attempts} of its {limit} attempts (maxAttempts); force to go on"
        )
    changed = _copy(job)
    changed.state = DISPATCHED
    changed.flow_run_id = None
    changed.dispatched_at = changed.updated_at
    return changed
