"""The stuck-job sweeper: finds executions that stopped making progress, runs that never started and
runs whose infrastructure is gone; checks the infrastructure first, then stops, fails and retries.

Without one, a run can sit in Pending forever when its worker died before it submitted the task
(PrefectHQ/prefect#20485), a Running run can outlive its infrastructure, and a hung script looks
alive because Prefect's heartbeats come from a side thread. A naive one (a heartbeat timeout alone)
marks healthy runs Crashed (#16459, #18653). This one:

- reads **heartbeats from the work itself**: an execution's ``updatedAt`` moves only on EXECUTE and
  on the SDK's progress calls (``interlinked.jobs.progress``), so a hung script is seen as hung;
- **checks the infrastructure before acting** (:mod:`.infrastructure`: ``/proc`` for a local pid,
  ``DescribeTasks``, ``DescribeJobs``) and tells apart:

  ========================  =========================================  ===============================
  verdict                   when                                       action
  ========================  =========================================  ===============================
  ``HEALTHY``               progress within the window, or queued      none (never touched)
  ``LAGGING``               infrastructure RUNNING, job/Prefect not    note it on the job; kill nothing
                            started yet (e.g. Batch RUNNING, Pending)
  ``HUNG``                  alive but silent past the window           stop it; fail ``STUCK``; retry
  ``ORPHANED``              infrastructure gone (pid dead, task        fail with the reason its record
                            STOPPED, run Crashed) while EXECUTING      gives (OOM, Spot, ...); retry
  ``NEVER_STARTED``         dispatched, Prefect Pending (or no run)    stop what was requested; fail
                            past the start window, not running         ``INFRASTRUCTURE_NEVER_STARTED``;
                                                                       retry
  ``CANCELLED``             the flow run was cancelled in Prefect      cancel the job
  ``CANCEL_OVERDUE``        a job's run stuck in Cancelling            stop the infrastructure; mark
                                                                       the run Cancelled
  ========================  =========================================  ===============================

- **never touches** a job that is not DISPATCHED/EXECUTING or an execution that reported progress
  within its window: every change is a conditional write that re-checks the execution it judged
  (an execution that reported progress meanwhile is left alone), so two sweepers never both act;
- retries at most ``maxAttempts`` executions in all (only for retryable codes: a code error is not
  retried by the sweeper);
- for a job type whose run is shared (``ownsRun: false`` in ``job_types.json``: a submission's
  dataset, whose run analyses the other datasets too) fails the job with its reason but neither
  stops the infrastructure nor ends the run; a job type a flow makes for itself (``createdBy``) is
  not dispatched again.

Windows: ``estimations.heartbeatTimeoutSeconds`` (else the job type's ``heartbeatTimeoutSeconds`` in
``job_types.json``, else ``INTERLINKED_JOBS_HEARTBEAT_TIMEOUT``); the start window likewise from
``startTimeoutSeconds`` / ``INTERLINKED_JOBS_START_TIMEOUT``. A run still Scheduled (no worker took
it yet) is queued, not stuck: a new run would only queue behind it.

One sweep costs one indexed query for the live jobs, one Prefect read of their runs that are not
Running or Scheduled (paged by 200; usually empty), one read of runs in Cancelling, a few more only
for jobs past a window, ``/proc`` reads for local pids and batched ``DescribeTasks``/``DescribeJobs``
only for suspects. :class:`SweepReport` counts them.

The flow ``job-sweeper`` runs one sweep; ``prefect.yaml`` schedules it every 30 s on the local pool
(every 60 s on ECS). ``interlinked jobs sweep`` runs one from the command line.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from prefect import flow, get_run_logger
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from flows.jobs import machine
from flows.jobs.failures import Failure, FailureCode, from_prefect_state
from flows.jobs.infrastructure import PROCESS, InfraRef, InfraStatus, Infrastructure, Observation, parse
from flows.jobs.model import (
    DISPATCHED,
    EXECUTING,
    EXECUTION_EXECUTING,
    FAILED,
    FAILURE,
    Execution,
    Job,
    JobError,
    now_iso,
)
from flows.jobs.types import JobTypes

logger = logging.getLogger(__name__)

FLOW_NAME = "job-sweeper"
ENDED_RUN_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
JOB_TAG = "interlinked-job"


class SweepSettings(BaseSettings):
    """The sweeper's default windows (a job's estimations and its type's entry come first)."""

    model_config = SettingsConfigDict(env_prefix="INTERLINKED_JOBS_", extra="ignore")

    heartbeat_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds without a progress report after which a running execution is checked "
        "(alive: hung, stopped and retried; gone: orphaned).",
    )
    start_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a dispatched job may wait for its infrastructure (run Pending) before it "
        "counts as never started.",
    )
    cancelling_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds a job's run may stay Cancelling before its infrastructure is stopped.",
    )
    orphan_grace: float = Field(
        default=30.0,
        ge=0,
        description="Seconds of silence after which an execution whose infrastructure is provably gone is "
        "failed (capped at its heartbeat window).",
    )
    stop_grace: float = Field(
        default=10.0, ge=0, description="Seconds between SIGTERM and SIGKILL when a local process is stopped."
    )


# -- what the sweeper reads ------------------------------------------------------------------------
def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _seconds(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


@dataclass(frozen=True)
class LiveJob:
    """A DISPATCHED or EXECUTING job as the sweeper sees it (:func:`flows.jobs.store.live_view`)."""

    id: str
    job_type: str
    state: str
    flow_run_id: str | None
    dispatched_at: datetime | None
    execution_count: int
    max_attempts: int
    heartbeat_timeout: float
    start_timeout: float
    execution_id: str | None = None
    execution_state: str | None = None
    execution_created_at: datetime | None = None
    execution_updated: str | None = None  # as stored: the conditional write compares it exactly
    execution_infrastructure: str | None = None

    @property
    def execution_updated_at(self) -> datetime | None:
        return _time(self.execution_updated)

    @classmethod
    def from_view(
        cls, view: dict[str, Any], job_types: JobTypes | None = None, settings: SweepSettings | None = None
    ) -> LiveJob:
        settings = settings or SweepSettings()
        estimations = view.get("estimations") or {}
        entry = (job_types.entries.get(view["jobType"]) if job_types else None) or {}
        current = view.get("currentExecution") or {}
        return cls(
            id=view["id"],
            job_type=view["jobType"],
            state=view["state"],
            flow_run_id=view.get("flowRunId"),
            dispatched_at=_time(view.get("dispatchedAt")) or _time(view.get("updatedAt")),
            execution_count=int(view.get("executionCount") or 0),
            max_attempts=int(estimations.get("maxAttempts") or 3),
            heartbeat_timeout=_seconds(estimations.get("heartbeatTimeoutSeconds"))
            or _seconds(entry.get("heartbeatTimeoutSeconds"))
            or settings.heartbeat_timeout,
            start_timeout=_seconds(estimations.get("startTimeoutSeconds"))
            or _seconds(entry.get("startTimeoutSeconds"))
            or settings.start_timeout,
            execution_id=current.get("executionId"),
            execution_state=current.get("state"),
            execution_created_at=_time(current.get("createdAt")),
            execution_updated=current.get("updatedAt"),
            execution_infrastructure=current.get("infrastructureId"),
        )


@dataclass(frozen=True)
class RunView:
    """A flow run as Prefect reports it."""

    id: str
    state_type: str | None
    state_name: str | None = None
    message: str | None = None
    timestamp: datetime | None = None
    infrastructure_pid: str | None = None

    @property
    def ended(self) -> bool:
        return self.state_type in ENDED_RUN_STATES


class Verdict(StrEnum):
    HEALTHY = "HEALTHY"
    LAGGING = "LAGGING"
    HUNG = "HUNG"
    ORPHANED = "ORPHANED"
    NEVER_STARTED = "NEVER_STARTED"
    CANCELLED = "CANCELLED"
    CANCEL_OVERDUE = "CANCEL_OVERDUE"


@dataclass(frozen=True)
class Decision:
    """What to do with one job: the verdict, the failure to record, whether to stop its
    infrastructure and whether a new execution may follow."""

    verdict: Verdict
    failure: Failure | None = None
    stop: bool = False
    retry: bool = False
    note: str = ""


HEALTHY = Decision(Verdict.HEALTHY)


# -- the decision (pure) ---------------------------------------------------------------------------
def infrastructure_of(job: LiveJob, run: RunView | None) -> InfraRef | None:
    """The infrastructure to check for ``job``: its execution's, else its flow run's."""
    own = parse(job.execution_infrastructure) if job.state == EXECUTING else None
    worker = parse(None, run.infrastructure_pid) if run is not None and run.infrastructure_pid else None
    if own is not None and _foreign(own) and worker is not None and worker.kind != PROCESS:
        return worker  # e.g. a process in an ECS task: the task is what can be checked and stopped
    return own or worker


def _foreign(ref: InfraRef) -> bool:
    """A process on another host: it cannot be looked at from here."""
    return ref.kind == PROCESS and bool(ref.host) and ref.host != socket.gethostname()


def wants_look(job: LiveJob, run: RunView | None, ref: InfraRef | None, now: datetime) -> bool:
    """Whether a sweep looks at ``job``'s infrastructure: always for a local process of a running
    execution (a ``/proc`` read), otherwise only for a job past a window or whose run ended."""
    if ref is None:
        return False
    if run is not None and run.ended:
        return True
    if job.state == EXECUTING:
        if ref.kind == PROCESS:
            return True
        updated = job.execution_updated_at
        return updated is not None and (now - updated).total_seconds() > job.heartbeat_timeout
    if job.state == DISPATCHED and job.dispatched_at is not None:
        return (now - job.dispatched_at).total_seconds() > job.start_timeout
    return False


def _evidence(job: LiveJob, run: RunView | None, seen: Observation | None, **extra: Any) -> dict[str, Any]:
    evidence: dict[str, Any] = {"source": "sweeper", **extra}
    if run is not None:
        evidence["flowRun"] = {
            "id": run.id,
            "state": run.state_name or run.state_type,
            "message": run.message,
        }
    if seen is not None:
        evidence["infrastructure"] = {"id": str(seen.ref), "status": seen.status.value, **seen.detail}
        if seen.failure is not None:
            evidence["infrastructureFailure"] = seen.failure.to_json()
    return evidence


def decide(
    job: LiveJob,
    run: RunView | None,
    seen: Observation | None,
    now: datetime,
    *,
    orphan_grace: float = 30.0,
) -> Decision:
    """The verdict on one live job from its record, its flow run (None: Running or Scheduled, or not
    read) and the look at its infrastructure (None: not looked at). Pure."""
    status = seen.status if seen is not None else None
    run_ended = run is not None and run.ended
    if job.state == EXECUTING and job.execution_state == EXECUTION_EXECUTING:
        updated = job.execution_updated_at or now
        silent = (now - updated).total_seconds()
        window = job.heartbeat_timeout
        gone = status == InfraStatus.GONE or (run_ended and status in (None, InfraStatus.UNKNOWN))
        if gone and silent >= min(window, orphan_grace):
            evidence = _evidence(job, run, seen, silentSeconds=round(silent, 1), windowSeconds=window)
            failure = (seen.failure if seen is not None else None) or (
                from_prefect_state(run.state_type, run.state_name, run.message) if run_ended else None
            )
            if failure is not None and failure.code == FailureCode.CANCELLED:
                return Decision(Verdict.CANCELLED, Failure(failure.code, failure.message, evidence))
            if failure is None:
                where = str(seen.ref) if seen is not None else "its flow run"
                failure = Failure(
                    FailureCode.ORPHANED,
                    f"its infrastructure ({where}) is gone and it reported nothing for {silent:.0f} s",
                    evidence,
                )
            else:
                failure = Failure(failure.code, failure.message, {**evidence, "reason": failure.evidence})
            return Decision(Verdict.ORPHANED, failure, retry=failure.retryable)
        if silent <= window or gone:
            return HEALTHY
        if status == InfraStatus.WAITING:
            return Decision(Verdict.LAGGING, note="its infrastructure is starting again")
        failure = Failure(
            FailureCode.STUCK,
            f"no progress for {silent:.0f} s (window {window:g} s) while its infrastructure "
            f"({seen.ref if seen else 'unchecked'}) is {status.value.lower() if status else 'unknown'}",
            _evidence(job, run, seen, silentSeconds=round(silent, 1), windowSeconds=window),
        )
        return Decision(Verdict.HUNG, failure, stop=True, retry=True)

    if job.state != DISPATCHED:
        return HEALTHY
    since = job.dispatched_at or now
    waited = (now - since).total_seconds()
    if run_ended and waited >= orphan_grace:
        evidence = _evidence(job, run, seen, waitedSeconds=round(waited, 1))
        failure = from_prefect_state(run.state_type, run.state_name, run.message) or Failure(
            FailureCode.UNKNOWN, f"its flow run ended {run.state_type} without executing the job", evidence
        )
        if failure.code == FailureCode.CANCELLED:
            return Decision(Verdict.CANCELLED, Failure(failure.code, failure.message, evidence))
        failure = Failure(failure.code, failure.message, {**evidence, "reason": failure.evidence})
        return Decision(Verdict.ORPHANED, failure, retry=failure.retryable)
    if waited <= job.start_timeout:
        return HEALTHY
    if run is not None and run.state_type == "SCHEDULED":
        return HEALTHY  # queued: no worker took it yet, a new run would queue behind it
    if status == InfraStatus.ALIVE:
        if waited <= job.start_timeout + job.heartbeat_timeout:
            return Decision(
                Verdict.LAGGING,
                note=f"its infrastructure ({seen.ref}) runs while the job is still DISPATCHED"
                + (f" and its flow run {run.state_name}" if run is not None else ""),
            )
        failure = Failure(
            FailureCode.STUCK,
            f"its infrastructure ({seen.ref}) runs but the work never started the job in {waited:.0f} s",
            _evidence(job, run, seen, waitedSeconds=round(waited, 1)),
        )
        return Decision(Verdict.HUNG, failure, stop=True, retry=True)
    evidence = _evidence(job, run, seen, waitedSeconds=round(waited, 1), windowSeconds=job.start_timeout)
    if seen is not None and seen.failure is not None and seen.failure.code != FailureCode.CANCELLED:
        failure = Failure(
            seen.failure.code, seen.failure.message, {**evidence, "reason": seen.failure.evidence}
        )
    else:
        run_state = (run.state_name or run.state_type) if run is not None else "missing"
        failure = Failure(
            FailureCode.INFRASTRUCTURE_NEVER_STARTED,
            f"not started {waited:.0f} s after dispatch (window {job.start_timeout:g} s): flow run "
            f"{run_state}, infrastructure {status.value.lower() if status else 'not found'}",
            evidence,
        )
    return Decision(
        Verdict.NEVER_STARTED,
        failure,
        stop=status in (InfraStatus.WAITING, InfraStatus.UNKNOWN),
        retry=failure.retryable,
    )


def decide_cancelling(run: RunView, seen: Observation | None, now: datetime, timeout: float) -> Decision:
    """A job's flow run in Cancelling: past ``timeout``, stop what still runs and end the run."""
    since = run.timestamp or now
    if (now - since).total_seconds() <= timeout:
        return HEALTHY
    alive = seen is not None and seen.status in (InfraStatus.ALIVE, InfraStatus.WAITING, InfraStatus.UNKNOWN)
    return Decision(
        Verdict.CANCEL_OVERDUE,
        stop=alive,
        note=f"Cancelling for {(now - since).total_seconds():.0f} s; infrastructure "
        f"{seen.status.value.lower() if seen else 'not found'}",
    )


# -- the job changes (pure transitions, applied through the store's conditional write) -------------
class Superseded(JobError):
    """The job changed since the sweeper judged it (progress, an end, another sweeper): left alone."""


def fail_and_retry(current: Job, seen: LiveJob, decision: Decision, *, infrastructure: str | None) -> Job:
    """End the judged attempt with the decision's failure and, when allowed, dispatch again
    (DISPATCHED; the flow run follows). :class:`Superseded` when the job is no longer as judged."""
    failure = decision.failure
    assert failure is not None
    if current.state != seen.state or current.flow_run_id != seen.flow_run_id:
        raise Superseded(f"job {current.id} is {current.state} now")
    stamp = now_iso()
    if current.state == EXECUTING:
        execution = current.current_execution
        if (
            execution is None
            or execution.execution_id != seen.execution_id
            or execution.state != EXECUTION_EXECUTING
            or execution.updated_at != seen.execution_updated
        ):
            raise Superseded(f"job {current.id} reported progress or ended meanwhile")
        changed = machine.signal_execution(
            current,
            execution.execution_id,
            FAILURE,
            failure_reason=failure.reason,
            failure_code=failure.code.value,
            failure_evidence=failure.evidence,
        )
    else:  # DISPATCHED: the attempt never reached EXECUTE; it is recorded as an execution all the same
        changed = current.model_copy(deep=True)
        changed.updated_at = stamp
        changed.executions.append(
            Execution(
                execution_id=machine.new_id(),
                attempt=len(current.executions) + 1,
                created_at=current.dispatched_at or stamp,
                updated_at=stamp,
                state=FAILURE,
                failure_reason=failure.reason,
                failure_code=failure.code.value,
                failure_evidence=failure.evidence,
                finished_at=stamp,
                flow_run_id=current.flow_run_id,
                infrastructure_id=infrastructure,
            )
        )
        changed.state = FAILED
    changed.sweep = {"verdict": decision.verdict.value, "at": stamp, "code": failure.code.value}
    attempts, limit = len(changed.executions), changed.estimations.max_attempts
    if decision.retry and attempts < limit:
        changed = machine.retry(changed)
        changed.sweep["retried"] = True
    elif decision.retry:
        changed.sweep["retried"] = False
        changed.sweep["note"] = f"no retry: {attempts} of {limit} attempts (maxAttempts) used"
    return changed


def note(current: Job, seen: LiveJob, decision: Decision) -> Job:
    """Record a LAGGING verdict on the job (reconciled: nothing is killed)."""
    if current.state != seen.state or current.flow_run_id != seen.flow_run_id:
        raise Superseded(f"job {current.id} is {current.state} now")
    changed = current.model_copy(deep=True)
    changed.updated_at = now_iso()
    changed.sweep = {"verdict": decision.verdict.value, "at": changed.updated_at, "note": decision.note}
    return changed


# -- Prefect ----------------------------------------------------------------------------------------
class Runs(Protocol):
    calls: int

    def not_running(self, flow_run_ids: list[str]) -> dict[str, RunView]: ...
    def read(self, flow_run_ids: list[str]) -> dict[str, RunView]: ...
    def cancelling(self) -> list[RunView]: ...
    def end(self, flow_run_id: str, state_type: str, message: str) -> None: ...


PAGE = 200  # the Prefect API's largest page


def _view(flow_run: Any) -> RunView:
    state = flow_run.state
    return RunView(
        id=str(flow_run.id),
        state_type=state.type.value if state else None,
        state_name=state.name if state else None,
        message=state.message if state else None,
        timestamp=state.timestamp if state else None,
        infrastructure_pid=flow_run.infrastructure_pid,
    )


class PrefectRuns:
    """Flow runs through a Prefect client (``get_client(sync_client=True)``), counting API calls."""

    def __init__(self, client: Any):
        self.client = client
        self.calls = 0

    def _filter(self, flow_run_filter: Any) -> list[RunView]:
        found, offset = [], 0
        while True:
            self.calls += 1
            page = self.client.read_flow_runs(flow_run_filter=flow_run_filter, limit=PAGE, offset=offset)
            found.extend(_view(run) for run in page)
            if len(page) < PAGE:
                return found
            offset += PAGE

    def _by_ids(self, flow_run_ids: list[str], state: Any = None) -> dict[str, RunView]:
        from uuid import UUID

        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        found: dict[str, RunView] = {}
        ids = sorted(set(flow_run_ids))
        for start in range(0, len(ids), 1000):
            chunk = [UUID(value) for value in ids[start : start + 1000]]
            runs = self._filter(FlowRunFilter(id=FlowRunFilterId(any_=chunk), state=state))
            found.update((run.id, run) for run in runs)
        return found

    def not_running(self, flow_run_ids: list[str]) -> dict[str, RunView]:
        """Those of ``flow_run_ids`` that are neither Running nor Scheduled (usually none)."""
        from prefect.client.schemas.filters import FlowRunFilterState, FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType

        if not flow_run_ids:
            return {}
        state = FlowRunFilterState(
            type=FlowRunFilterStateType(not_any_=[StateType.RUNNING, StateType.SCHEDULED])
        )
        return self._by_ids(flow_run_ids, state)

    def read(self, flow_run_ids: list[str]) -> dict[str, RunView]:
        return self._by_ids(flow_run_ids) if flow_run_ids else {}

    def cancelling(self) -> list[RunView]:
        """Runs of jobs (tag ``interlinked-job``) in Cancelling."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterTags,
        )
        from prefect.client.schemas.objects import StateType

        return self._filter(
            FlowRunFilter(
                tags=FlowRunFilterTags(all_=[JOB_TAG]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING])),
            )
        )

    def end(self, flow_run_id: str, state_type: str, message: str) -> None:
        """Force the run into a final state with the sweeper's message."""
        from prefect.states import Cancelled, Crashed

        state = Cancelled(message=message) if state_type == "CANCELLED" else Crashed(message=message)
        self.calls += 1
        self.client.set_flow_run_state(flow_run_id, state, force=True)


# -- one sweep ---------------------------------------------------------------------------------------
@dataclass
class SweepReport:
    """What one sweep saw and did, and what it cost."""

    live: int = 0
    looked_at: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    database_queries: int = 0
    prefect_calls: int = 0
    aws_calls: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "live": self.live,
            "lookedAt": self.looked_at,
            "verdicts": self.verdicts,
            "actions": self.actions,
            "databaseQueries": self.database_queries,
            "prefectCalls": self.prefect_calls,
            "awsCalls": self.aws_calls,
            "seconds": round(self.seconds, 4),
        }


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Sweeper:
    """One sweep over the live jobs of ``service`` (a :class:`flows.jobs.client.JobService`)."""

    def __init__(
        self,
        service: Any,
        runs: Runs,
        infrastructure: Infrastructure,
        settings: SweepSettings | None = None,
        *,
        clock: Any = _utcnow,
    ):
        self.service = service
        self.runs = runs
        self.infrastructure = infrastructure
        self.settings = settings or SweepSettings()
        self.clock = clock

    def sweep(self) -> SweepReport:
        started = time.perf_counter()
        report = SweepReport()
        prefect_before, aws_before = self.runs.calls, self.infrastructure.calls
        now = self.clock()
        jobs = [
            LiveJob.from_view(view, self.service.job_types, self.settings)
            for view in self.service.store.live()
        ]
        report.database_queries += 1
        report.live = len(jobs)
        runs = self.runs.not_running([job.flow_run_id for job in jobs if job.flow_run_id])
        # A dispatched job past its start window whose run is Running or Scheduled: read that run
        # too (its state says queued or lagging, its infrastructure id where to look).
        overdue = [
            job.flow_run_id
            for job in jobs
            if job.state == DISPATCHED
            and job.flow_run_id
            and job.flow_run_id not in runs
            and job.dispatched_at is not None
            and (now - job.dispatched_at).total_seconds() > job.start_timeout
        ]
        # A silent execution whose process is on another host: its run's worker id (an ECS task,
        # a Batch job) is what can be checked.
        foreign = [
            job.flow_run_id
            for job in jobs
            if job.state == EXECUTING
            and job.flow_run_id
            and job.flow_run_id not in runs
            and (own := parse(job.execution_infrastructure)) is not None
            and _foreign(own)
            and job.execution_updated_at is not None
            and (now - job.execution_updated_at).total_seconds() > job.heartbeat_timeout
        ]
        runs.update(self.runs.read(overdue + foreign))

        refs: dict[str, InfraRef] = {}
        not_before: dict[InfraRef, datetime] = {}
        for job in jobs:
            run = runs.get(job.flow_run_id or "")
            ref = infrastructure_of(job, run)
            if wants_look(job, run, ref, now):
                refs[job.id] = ref
                started_at = job.execution_created_at if job.state == EXECUTING else job.dispatched_at
                if started_at is not None:
                    not_before[ref] = started_at
        observations = self.infrastructure.observe(refs.values(), not_before=not_before)
        report.looked_at = len(observations)

        for job in jobs:
            run = runs.get(job.flow_run_id or "")
            ref = refs.get(job.id)
            decision = decide(
                job, run, observations.get(ref) if ref else None, now, orphan_grace=self.settings.orphan_grace
            )
            report.verdicts[decision.verdict.value] = report.verdicts.get(decision.verdict.value, 0) + 1
            if decision.verdict != Verdict.HEALTHY:
                try:
                    report.actions.append(self._act(job, run, ref, decision))
                except Exception as error:  # one job's trouble never stops the sweep of the others
                    logger.exception("the sweeper could not act on job %s", job.id)
                    report.actions.append(
                        {
                            "jobId": job.id,
                            "verdict": decision.verdict.value,
                            "done": f"error: {type(error).__name__}: {error}",
                        }
                    )

        cancelling = [(run, parse(None, run.infrastructure_pid)) for run in self.runs.cancelling()]
        overdue_refs = [
            ref
            for run, ref in cancelling
            if ref is not None
            and decide_cancelling(run, None, now, self.settings.cancelling_timeout).verdict != Verdict.HEALTHY
        ]
        seen_cancelling = self.infrastructure.observe(overdue_refs) if overdue_refs else {}
        for run, ref in cancelling:
            decision = decide_cancelling(
                run, seen_cancelling.get(ref) if ref else None, now, self.settings.cancelling_timeout
            )
            if decision.verdict == Verdict.HEALTHY:
                continue
            report.verdicts[decision.verdict.value] = report.verdicts.get(decision.verdict.value, 0) + 1
            action: dict[str, Any] = {
                "flowRunId": run.id,
                "verdict": decision.verdict.value,
                "note": decision.note,
            }
            try:
                if decision.stop and ref is not None:
                    action["stop"] = self.infrastructure.stop(
                        ref, "interlinked sweeper: run stuck in Cancelling"
                    )
                stopped = "; its infrastructure was stopped" if "stop" in action else ""
                self.runs.end(run.id, "CANCELLED", f"interlinked sweeper: {decision.note}{stopped}")
                action["done"] = "run cancelled"
            except Exception as error:
                action["done"] = f"error: {type(error).__name__}: {error}"
            report.actions.append(action)

        report.prefect_calls = self.runs.calls - prefect_before
        report.aws_calls = self.infrastructure.calls - aws_before
        report.seconds = time.perf_counter() - started
        return report

    def _act(
        self, job: LiveJob, run: RunView | None, ref: InfraRef | None, decision: Decision
    ) -> dict[str, Any]:
        action: dict[str, Any] = {"jobId": job.id, "verdict": decision.verdict.value}
        if decision.failure is not None:
            action["code"] = decision.failure.code.value
            action["reason"] = decision.failure.reason
        if decision.note:
            action["note"] = decision.note
        try:
            if decision.verdict == Verdict.LAGGING:
                current = self.service.store.get(job.id)
                if current.sweep.get("verdict") != Verdict.LAGGING.value:
                    self.service._change(job.id, lambda j: note(j, job, decision))
                action["done"] = "noted (nothing killed)"
                return action
            if decision.verdict == Verdict.CANCELLED:
                self.service._change(job.id, lambda j: _cancel(j, job, decision))
                action["done"] = "job cancelled (its flow run was cancelled)"
                return action
            changed = self.service._change(
                job.id, lambda j: fail_and_retry(j, job, decision, infrastructure=str(ref) if ref else None)
            )
        except Superseded as skipped:
            action["done"] = f"left alone: {skipped}"
            return action
        reason = (
            f"interlinked sweeper: {decision.failure.reason}" if decision.failure else "interlinked sweeper"
        )
        shared = not self.service.job_types.owns_run(job.job_type)
        if shared:  # e.g. a submission's dataset: its run analyses the others too; only the job fails
            action["stop"] = "not stopped: its flow run does other work too (job type ownsRun false)"
        elif decision.stop and ref is not None:
            action["stop"] = self.infrastructure.stop(ref, reason)
        if job.flow_run_id and not shared and not (run is not None and run.ended):
            try:
                self.runs.end(job.flow_run_id, "CRASHED", reason)
            except Exception as error:  # the job record is the truth; the run's state is a courtesy
                action["flowRunState"] = f"could not be set: {error}"
        action["done"] = "failed"
        if changed.state == DISPATCHED:
            action["retry"] = self._dispatch(changed)
        return action

    def _dispatch(self, job: Job) -> dict[str, Any]:
        """Create the flow run of a job the sweeper put back to DISPATCHED."""
        service = self.service
        try:
            service.job_types.check_by_hand(job.job_type, "dispatch or retry")
            deployment = service.job_types.deployment(job.job_type)
            flow_run_id = service.dispatcher.create_run(job, deployment)
        except Exception as error:
            with contextlib.suppress(JobError):
                service._change(job.id, lambda j: machine.undispatch(j, FAILED))
            return {"dispatched": False, "error": f"{type(error).__name__}: {error}"}
        service._change(job.id, lambda j: machine.record_flow_run(j, flow_run_id))
        return {"dispatched": True, "flowRunId": flow_run_id}


def _cancel(current: Job, seen: LiveJob, decision: Decision) -> Job:
    if current.state != seen.state or current.flow_run_id != seen.flow_run_id:
        raise Superseded(f"job {current.id} is {current.state} now")
    changed = machine.cancel(current, reason=decision.failure.reason if decision.failure else "cancelled")
    changed.sweep = {"verdict": decision.verdict.value, "at": changed.updated_at}
    return changed


def sweep_once(service: Any = None, settings: SweepSettings | None = None) -> SweepReport:
    """One sweep with the default job service, the Prefect API and AWS (through ``blocks``)."""
    from prefect.client.orchestration import get_client

    from flows.jobs.client import default_service

    settings = settings or SweepSettings()
    service = service or default_service()
    with get_client(sync_client=True) as client:
        return Sweeper(
            service, PrefectRuns(client), Infrastructure(stop_grace=settings.stop_grace), settings
        ).sweep()


@flow(
    name=FLOW_NAME,
    description="Find stuck, orphaned and never-started job executions; check their infrastructure; "
    "stop, fail and retry them (flows/jobs/sweeper.py).",
    persist_result=False,
)
def job_sweeper() -> dict[str, Any]:
    """One sweep; its report (verdicts, actions, API calls) is the run's return value and log."""
    report = sweep_once()
    run_logger = get_run_logger()
    run_logger.info(
        "swept %d live jobs in %.3f s (%d looked at; %d Prefect calls, %d AWS calls): %s",
        report.live,
        report.seconds,
        report.looked_at,
        report.prefect_calls,
        report.aws_calls,
        report.verdicts,
    )
    for action in report.actions:
        run_logger.warning("%s", action)
    return report.to_json()
