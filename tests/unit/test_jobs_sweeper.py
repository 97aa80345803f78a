"""The stuck-job sweeper (flows.jobs.sweeper): the verdict as a pure function of a job, its flow run
and a look at its infrastructure; the conditional fail-and-retry; one sweep over an in-memory store
with a recorded Prefect and infrastructure; real local processes for the /proc checks and stops.
Time moves by giving the sweeper a clock ahead of the jobs' timestamps (no sleeping on windows)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.jobs.client import JobService
from flows.jobs.failures import FailureCode, from_batch_job, from_ecs_task
from flows.jobs.infrastructure import (
    BATCH,
    PROCESS,
    InfraRef,
    InfraStatus,
    Infrastructure,
    Observation,
    observe_process,
    parse,
    process_state,
    stop_process,
)
from flows.jobs.model import DISPATCHED, EXECUTING, FAILED, SUCCEEDED, JobError
from flows.jobs.store import MemoryJobStore
from flows.jobs.sweeper import (
    LiveJob,
    RunView,
    Superseded,
    Sweeper,
    SweepSettings,
    Verdict,
    decide,
    decide_cancelling,
    fail_and_retry,
)
from flows.jobs.types import JobTypes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "aws"
HOST = socket.gethostname()
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
TYPES = JobTypes({"script": {"flow": "script-job"}, "slow-start": {"flow": "x", "startTimeoutSeconds": 900}})


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def live(
    state=EXECUTING, *, updated=T0, dispatched=T0, infra=f"process:{HOST}:4242", estimations=None, **more
):
    view = {
        "id": "job-1",
        "jobType": more.pop("job_type", "script"),
        "state": state,
        "version": 3,
        "flowRunId": "run-1",
        "dispatchedAt": iso(dispatched),
        "estimations": {"heartbeatTimeoutSeconds": 60, "startTimeoutSeconds": 120, **(estimations or {})},
        "executionCount": 1 if state == EXECUTING else 0,
        "currentExecution": None
        if state != EXECUTING
        else {
            "executionId": "ex-1",
            "attempt": 1,
            "state": "EXECUTING",
            "createdAt": iso(dispatched),
            "updatedAt": iso(updated),
            "flowRunId": "run-1",
            "infrastructureId": infra,
        },
    }
    view.update(more)
    return LiveJob.from_view(view, TYPES, SweepSettings())


REF = InfraRef(PROCESS, "4242", host=HOST)
BATCH_REF = InfraRef(BATCH, "6f1b0e9c-2d3a-4b4c-5d6e-7f8091a2b3c4")


def seen(status, ref=REF, failure=None, **detail):
    return Observation(ref, status, detail, failure)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- decide: executing --------------------------------------------------------------------------------
def test_progress_within_the_window_is_healthy_whatever_the_infrastructure_says():
    job = live(updated=T0)
    for status in InfraStatus:
        assert decide(job, None, seen(status), at(20)).verdict == Verdict.HEALTHY
    assert decide(job, None, None, at(59)).verdict == Verdict.HEALTHY


def test_alive_but_silent_past_the_window_is_hung_stopped_and_retried():
    decision = decide(live(), None, seen(InfraStatus.ALIVE, processState="S"), at(61))
    assert decision.verdict == Verdict.HUNG and decision.stop and decision.retry
    assert decision.failure.code == FailureCode.STUCK
    assert (
        decision.failure.evidence["silentSeconds"] == 61 and decision.failure.evidence["windowSeconds"] == 60
    )
    assert decision.failure.evidence["infrastructure"]["processState"] == "S"


def test_gone_infrastructure_is_orphaned_not_hung_and_nothing_is_stopped():
    decision = decide(live(), None, seen(InfraStatus.GONE, reason="no such process"), at(61))
    assert decision.verdict == Verdict.ORPHANED and not decision.stop and decision.retry
    assert decision.failure.code == FailureCode.ORPHANED


def test_gone_infrastructure_is_acted_on_after_the_orphan_grace_not_the_whole_window():
    job = live(estimations={"heartbeatTimeoutSeconds": 600})
    assert decide(job, None, seen(InfraStatus.GONE), at(10), orphan_grace=30).verdict == Verdict.HEALTHY
    assert decide(job, None, seen(InfraStatus.GONE), at(31), orphan_grace=30).verdict == Verdict.ORPHANED


def test_an_orphan_takes_the_reason_its_infrastructure_record_gives():
    task = json.loads((FIXTURES / "ecs_oom_exit_0.json").read_text())["tasks"][0]
    decision = decide(live(), None, seen(InfraStatus.GONE, failure=from_ecs_task(task)), at(61))
    assert decision.verdict == Verdict.ORPHANED
    assert decision.failure.code == FailureCode.OUT_OF_MEMORY  # exit code 0, reason OutOfMemoryError
    assert decision.failure.evidence["reason"]["source"] == "ecs:DescribeTasks"


def test_a_crashed_run_tells_the_exit_status_when_nothing_else_does():
    run = RunView(
        "run-1", "CRASHED", "Crashed", "Flow run infrastructure exited with non-zero status code 137."
    )
    decision = decide(live(), run, None, at(45))
    assert decision.verdict == Verdict.ORPHANED and decision.failure.code == FailureCode.OUT_OF_MEMORY


def test_a_run_cancelled_in_prefect_cancels_the_job():
    run = RunView("run-1", "CANCELLED", "Cancelled", "cancelled from the UI")
    assert decide(live(), run, seen(InfraStatus.GONE), at(45)).verdict == Verdict.CANCELLED


# -- decide: dispatched -------------------------------------------------------------------------------
def test_a_dispatched_job_within_its_start_window_is_healthy():
    run = RunView("run-1", "PENDING", "Pending")
    assert decide(live(DISPATCHED), run, None, at(100)).verdict == Verdict.HEALTHY


def test_pending_past_the_start_window_without_infrastructure_never_started():
    run = RunView("run-1", "PENDING", "Pending")
    decision = decide(live(DISPATCHED), run, None, at(121))
    assert decision.verdict == Verdict.NEVER_STARTED and decision.retry
    assert decision.failure.code == FailureCode.INFRASTRUCTURE_NEVER_STARTED
    assert "Pending" in decision.failure.message


def test_a_queued_run_is_not_stuck():
    run = RunView("run-1", "SCHEDULED", "Late")
    assert decide(live(DISPATCHED), run, None, at(10_000)).verdict == Verdict.HEALTHY


def test_batch_running_while_prefect_pending_is_lagging_and_nothing_is_killed():
    run = RunView("run-1", "PENDING", "Pending", infrastructure_pid=BATCH_REF.id)
    decision = decide(
        live(DISPATCHED), run, seen(InfraStatus.ALIVE, BATCH_REF, batchStatus="RUNNING"), at(121)
    )
    assert decision.verdict == Verdict.LAGGING and not decision.stop and decision.failure is None
    # ... until it has run a whole heartbeat window more without starting the job: then it is hung.
    later = decide(live(DISPATCHED), run, seen(InfraStatus.ALIVE, BATCH_REF), at(121 + 61))
    assert later.verdict == Verdict.HUNG and later.failure.code == FailureCode.STUCK


def test_batch_runnable_too_long_never_started_and_the_request_is_stopped():
    run = RunView("run-1", "PENDING", "Pending", infrastructure_pid=BATCH_REF.id)
    decision = decide(
        live(DISPATCHED), run, seen(InfraStatus.WAITING, BATCH_REF, batchStatus="RUNNABLE"), at(121)
    )
    assert decision.verdict == Verdict.NEVER_STARTED and decision.stop
    assert decision.failure.evidence["infrastructure"]["status"] == "WAITING"


def test_a_failed_start_reads_its_record():
    job_record = json.loads((FIXTURES / "batch_never_started.json").read_text())["jobs"][0]
    observation = seen(InfraStatus.GONE, BATCH_REF, failure=from_batch_job(job_record))
    decision = decide(live(DISPATCHED), RunView("run-1", "PENDING"), observation, at(121))
    assert decision.failure.code == FailureCode.INFRASTRUCTURE_NEVER_STARTED
    assert "CannotPullContainerError" in decision.failure.message


def test_a_run_that_failed_before_execute_is_a_code_error_and_not_retried():
    run = RunView("run-1", "FAILED", "Failed", "Flow run encountered an exception: ImportError: no module x")
    decision = decide(live(DISPATCHED), run, None, at(40))
    assert decision.failure.code == FailureCode.CODE_ERROR and not decision.retry


def test_the_job_type_entry_gives_the_window_when_the_estimations_do_not():
    job = live(DISPATCHED, job_type="slow-start", estimations={"startTimeoutSeconds": None})
    assert job.start_timeout == 900
    assert live(DISPATCHED, estimations={"startTimeoutSeconds": None}).start_timeout == 600  # the setting


def test_terminal_jobs_are_never_touched():
    for state in ("SUCCEEDED", "FAILED", "CANCELLED"):
        assert decide(live(state), None, seen(InfraStatus.GONE), at(10_000)).verdict == Verdict.HEALTHY


def test_cancelling_too_long_stops_what_still_runs():
    run = RunView("run-1", "CANCELLING", "Cancelling", timestamp=T0)
    assert decide_cancelling(run, seen(InfraStatus.ALIVE), at(60), 120).verdict == Verdict.HEALTHY
    overdue = decide_cancelling(run, seen(InfraStatus.ALIVE), at(121), 120)
    assert overdue.verdict == Verdict.CANCEL_OVERDUE and overdue.stop
    assert not decide_cancelling(run, seen(InfraStatus.GONE), at(121), 120).stop


# -- the transitions ------------------------------------------------------------------------------------
class Dispatcher:
    def __init__(self):
        self.created: list[str] = []
        self.cancelled: list[str] = []

    def create_run(self, job, deployment):
        self.created.append(job.id)
        return f"run-{len(self.created)}"

    def cancel_run(self, flow_run_id):
        self.cancelled.append(flow_run_id)


def service(**kwargs) -> JobService:
    return JobService(MemoryJobStore(), dispatcher=Dispatcher(), job_types=TYPES, **kwargs)


def running_job(svc: JobService, *, estimations=None, infra=f"process:{HOST}:4242"):
    job = svc.create("script", {"name": "x"}, estimations=estimations or {"heartbeatTimeoutSeconds": 60})
    svc.signal(job.id, "DISPATCH")
    return svc.signal(job.id, "EXECUTE", infrastructure_id=infra, flow_run_id=None)


def view_of(svc: JobService, job_id: str) -> LiveJob:
    [view] = [v for v in svc.store.live() if v["id"] == job_id]
    return LiveJob.from_view(view, TYPES, SweepSettings())


def test_fail_and_retry_ends_the_execution_stuck_and_dispatches_again():
    svc = service()
    job = running_job(svc)
    decision = decide(
        view_of(svc, job.id), None, seen(InfraStatus.ALIVE), datetime.now(UTC) + timedelta(seconds=61)
    )
    changed = fail_and_retry(svc.store.get(job.id), view_of(svc, job.id), decision, infrastructure=str(REF))
    assert changed.state == DISPATCHED and changed.flow_run_id is None
    [execution] = changed.executions
    assert execution.state == "FAILURE" and execution.failure_code == "STUCK"
    assert execution.failure_reason.startswith("STUCK: no progress for")
    assert changed.sweep == {**changed.sweep, "verdict": "HUNG", "code": "STUCK", "retried": True}


def test_fail_and_retry_leaves_a_job_alone_that_reported_progress_meanwhile():
    svc = service()
    job = running_job(svc)
    judged = view_of(svc, job.id)
    decision = decide(judged, None, seen(InfraStatus.ALIVE), datetime.now(UTC) + timedelta(seconds=61))
    time.sleep(0.002)  # the next timestamp differs
    svc.update_execution(job.id, job.current_execution.execution_id, progress=0.5)
    with pytest.raises(Superseded):
        fail_and_retry(svc.store.get(job.id), judged, decision, infrastructure=None)


def test_no_retry_past_max_attempts():
    svc = service()
    job = running_job(svc, estimations={"heartbeatTimeoutSeconds": 60, "maxAttempts": 1})
    decision = decide(
        view_of(svc, job.id), None, seen(InfraStatus.ALIVE), datetime.now(UTC) + timedelta(seconds=61)
    )
    changed = fail_and_retry(svc.store.get(job.id), view_of(svc, job.id), decision, infrastructure=None)
    assert changed.state == FAILED and changed.sweep["retried"] is False
    assert "1 of 1 attempts" in changed.sweep["note"]


def test_a_never_started_attempt_is_recorded_as_an_execution():
    svc = service()
    job = svc.create("script", {}, estimations={"startTimeoutSeconds": 120})
    svc.signal(job.id, "DISPATCH")
    judged = view_of(svc, job.id)
    decision = decide(
        judged, RunView("run-1", "PENDING", "Pending"), None, datetime.now(UTC) + timedelta(seconds=121)
    )
    changed = fail_and_retry(svc.store.get(job.id), judged, decision, infrastructure=None)
    [execution] = changed.executions
    assert execution.failure_code == "INFRASTRUCTURE_NEVER_STARTED" and execution.flow_run_id == "run-1"
    assert execution.attempt == 1 and changed.state == DISPATCHED


# -- one sweep ------------------------------------------------------------------------------------------
class Runs:
    """Prefect as recorded: run states by id, counting calls as the real client would make them."""

    def __init__(self, states=None, cancelling=()):
        self.states = dict(states or {})
        self._cancelling = list(cancelling)
        self.calls = 0
        self.ended: dict[str, tuple[str, str]] = {}
        self.before_read = None

    def not_running(self, ids):
        if self.before_read:
            self.before_read()
        self.calls += 1
        return {
            i: self.states[i]
            for i in ids
            if i in self.states and self.states[i].state_type not in ("RUNNING", "SCHEDULED")
        }

    def read(self, ids):
        if not ids:
            return {}
        self.calls += 1
        return {i: self.states[i] for i in ids if i in self.states}

    def cancelling(self):
        self.calls += 1
        return self._cancelling

    def end(self, run_id, state_type, message):
        self.calls += 1
        self.ended[run_id] = (state_type, message)


class Infra(Infrastructure):
    """Infrastructure as recorded: a status per id; stops are noted."""

    def __init__(self, statuses):
        super().__init__()
        self.statuses = statuses
        self.stopped: list[str] = []
        self.looked: list[str] = []

    def observe(self, refs, *, not_before=None):
        found = {}
        for ref in refs:
            self.looked.append(ref.id)
            found[ref] = Observation(ref, self.statuses.get(ref.id, InfraStatus.GONE))
        return found

    def stop(self, ref, reason):
        self.stopped.append(ref.id)
        self.statuses[ref.id] = InfraStatus.GONE
        return {"action": "recorded stop", "reason": reason}


def test_one_sweep_over_healthy_hung_orphaned_and_never_started_jobs():
    svc = service()
    healthy = [running_job(svc, infra=f"process:{HOST}:{1000 + i}") for i in range(100)]
    for job in healthy[:50]:
        svc.update_execution(job.id, job.current_execution.execution_id, progress=0.5)
    hung = running_job(svc, infra=f"process:{HOST}:2001")
    orphan = running_job(svc, infra=f"process:{HOST}:2002")
    pending = svc.create("script", {}, estimations={"startTimeoutSeconds": 30})
    pending = svc.signal(pending.id, "DISPATCH")
    ages = {hung.id: 61, orphan.id: 61, pending.id: 31}
    statuses = {f"{1000 + i}": InfraStatus.ALIVE for i in range(100)} | {"2001": InfraStatus.ALIVE}
    runs = Runs({pending.flow_run_id: RunView(pending.flow_run_id, "PENDING", "Pending")})
    infra = Infra(statuses)
    versions = {job.id: svc.store.get(job.id).version for job in healthy}

    # The healthy ones reported within their window; the three others are past theirs.
    now = datetime.now(UTC)
    for job_id, age in ages.items():
        stored = svc.store.get(job_id)
        past = iso(now - timedelta(seconds=age))
        if stored.current_execution:
            stored.current_execution.updated_at = past
        stored.dispatched_at = past
        svc.store.replace(stored.model_copy(update={"version": stored.version + 1}), stored.version)

    dispatched_before = len(svc.dispatcher.created)
    report = Sweeper(svc, runs, infra, SweepSettings(orphan_grace=30), clock=lambda: now).sweep()

    assert report.live == 103
    assert report.verdicts == {"HEALTHY": 100, "HUNG": 1, "ORPHANED": 1, "NEVER_STARTED": 1}
    assert {job.id: svc.store.get(job.id).version for job in healthy} == versions  # untouched
    assert infra.stopped == ["2001"]  # only the hung one; the orphan's process is gone already
    for job_id, code in (
        (hung.id, "STUCK"),
        (orphan.id, "ORPHANED"),
        (pending.id, "INFRASTRUCTURE_NEVER_STARTED"),
    ):
        job = svc.store.get(job_id)
        assert job.state == DISPATCHED and job.flow_run_id, job_id  # a new flow run, a new attempt to come
        assert job.executions[-1].failure_code == code
    assert sorted(svc.dispatcher.created[dispatched_before:]) == sorted([hung.id, orphan.id, pending.id])
    # Prefect: one read of the live runs not Running, one of Cancelling runs, and the three old runs ended.
    assert report.prefect_calls == 2 + 3 and set(runs.ended) == {
        hung.flow_run_id or "",
        orphan.flow_run_id or "",
        pending.flow_run_id,
    } - {""}
    assert all(
        state == "CRASHED" and "interlinked sweeper: " in message for state, message in runs.ended.values()
    )


def test_a_job_that_reports_progress_while_the_sweep_runs_is_left_alone():
    svc = service()
    job = running_job(svc)
    runs = Runs()

    def progress_now():
        time.sleep(0.002)
        svc.update_execution(job.id, job.current_execution.execution_id, progress=0.9)

    runs.before_read = progress_now  # after the sweep read the job, before it decides and writes
    now = datetime.now(UTC) + timedelta(seconds=61)
    report = Sweeper(svc, runs, Infra({"4242": InfraStatus.ALIVE}), clock=lambda: now).sweep()
    assert report.verdicts == {"HUNG": 1}
    assert report.actions[0]["done"].startswith("left alone")
    stored = svc.store.get(job.id)
    assert stored.state == EXECUTING and stored.current_execution.progress == 0.9
    assert runs.ended == {}


def test_hung_again_and_again_stops_at_max_attempts():
    svc = service()
    job = svc.create("script", {}, estimations={"heartbeatTimeoutSeconds": 60, "maxAttempts": 2})
    svc.signal(job.id, "DISPATCH")
    for attempt in (1, 2):
        svc.signal(job.id, "EXECUTE", infrastructure_id=f"process:{HOST}:{attempt}", flow_run_id=None)
        now = datetime.now(UTC) + timedelta(seconds=61)
        Sweeper(svc, Runs(), Infra({str(attempt): InfraStatus.ALIVE}), clock=lambda now=now: now).sweep()
    stored = svc.store.get(job.id)
    assert stored.state == FAILED and [e.failure_code for e in stored.executions] == ["STUCK", "STUCK"]
    assert svc.dispatcher.created == [job.id, job.id]  # the dispatch and one retry: two executions in all


def test_lagging_is_noted_once_and_nothing_is_killed():
    svc = service()
    job = svc.create("script", {}, estimations={"startTimeoutSeconds": 30})
    job = svc.signal(job.id, "DISPATCH")
    runs = Runs(
        {job.flow_run_id: RunView(job.flow_run_id, "PENDING", "Pending", infrastructure_pid=BATCH_REF.id)}
    )
    infra = Infra({BATCH_REF.id: InfraStatus.ALIVE})
    now = datetime.now(UTC) + timedelta(seconds=31)
    for _ in range(2):
        Sweeper(svc, runs, infra, clock=lambda: now).sweep()
    stored = svc.store.get(job.id)
    assert stored.state == DISPATCHED and stored.sweep["verdict"] == "LAGGING"
    assert stored.version == job.version + 1  # noted once
    assert infra.stopped == [] and runs.ended == {}


def test_a_healthy_sweep_costs_two_prefect_calls_and_looks_only_at_local_pids():
    svc = service()
    for i in range(20):
        running_job(svc, infra=f"process:{HOST}:{i}")
    remote = running_job(svc, infra=f"batch:{BATCH_REF.id}")
    infra = Infra({str(i): InfraStatus.ALIVE for i in range(20)})
    runs = Runs()
    report = Sweeper(svc, runs, infra).sweep()
    assert report.verdicts == {"HEALTHY": 21} and report.actions == []
    assert report.prefect_calls == 2 and report.database_queries == 1
    assert BATCH_REF.id not in infra.looked and len(infra.looked) == 20  # Batch only for suspects
    assert svc.store.get(remote.id).state == EXECUTING


def test_a_run_stuck_in_cancelling_gets_its_infrastructure_stopped():
    svc = service()
    run = RunView(
        "run-9",
        "CANCELLING",
        "Cancelling",
        timestamp=datetime.now(UTC) - timedelta(seconds=500),
        infrastructure_pid="777",
    )
    runs = Runs(cancelling=[run])
    infra = Infra({"777": InfraStatus.ALIVE})
    report = Sweeper(svc, runs, infra, SweepSettings(cancelling_timeout=120)).sweep()
    assert report.verdicts == {"CANCEL_OVERDUE": 1}
    assert infra.stopped == ["777"] and runs.ended["run-9"][0] == "CANCELLED"


def test_sweeper_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("INTERLINKED_JOBS_HEARTBEAT_TIMEOUT", "7")
    monkeypatch.setenv("INTERLINKED_JOBS_START_TIMEOUT", "9")
    settings = SweepSettings()
    assert settings.heartbeat_timeout == 7 and settings.start_timeout == 9


def test_unknown_failure_code_is_refused():
    svc = service()
    job = running_job(svc)
    with pytest.raises(JobError, match="unknown failure code"):
        svc.signal_execution(job.id, job.current_execution.execution_id, "FAILURE", failure_code="NOPE")
    assert svc.store.get(job.id).state == EXECUTING
    ended = svc.signal_execution(
        job.id, job.current_execution.execution_id, "FAILURE", failure_reason="OUT_OF_MEMORY: big"
    )
    assert ended.current_execution.failure_code == "OUT_OF_MEMORY"
    assert svc.store.get(job.id).state != SUCCEEDED


# -- infrastructure ids and real local processes -------------------------------------------------------------
def test_infrastructure_ids_from_executions_and_workers():
    assert parse("process:h1:123") == InfraRef(PROCESS, "123", host="h1")
    assert parse("batch:abc") == InfraRef(BATCH, "abc")
    assert parse(None, "arn:aws:ecs:us-east-1:1:cluster/c::arn:aws:ecs:us-east-1:1:task/c/t").kind == "ecs"
    assert parse(None, "4242").kind == PROCESS
    assert parse(None, BATCH_REF.id) == BATCH_REF
    assert parse(None, None) is None and parse(None, "what is this") is None


def _spawn_tree():
    """A process that starts a child in a session of its own (as the script runner does), both sleeping."""
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    child = int(parent.stdout.readline())
    return parent, child


def test_a_live_local_process_is_alive_and_stopping_it_ends_its_whole_tree():
    parent, child = _spawn_tree()
    try:
        ref = InfraRef(PROCESS, str(parent.pid), host=os.uname().nodename)
        assert observe_process(ref).status == InfraStatus.ALIVE
        result = stop_process(parent.pid, grace=5)
        assert child in result["processes"]
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while (state := process_state(child)) is not None and state[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state is None or state[0] == "Z"
        assert observe_process(ref).status == InfraStatus.GONE
    finally:
        for pid in (parent.pid, child):
            with contextlib.suppress(OSError):
                os.kill(pid, 9)


def test_a_zombie_or_a_reused_pid_is_gone_and_another_host_is_unknown():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while process_state(process.pid)[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.02)
    ref = InfraRef(PROCESS, str(process.pid), host=os.uname().nodename)
    assert observe_process(ref).status == InfraStatus.GONE  # exited, not reaped yet
    process.wait()
    me = InfraRef(PROCESS, str(os.getpid()), host=os.uname().nodename)
    assert observe_process(me).status == InfraStatus.ALIVE
    # An execution that began after this process started may run in it ...
    assert observe_process(me, not_before=datetime.now(UTC) + timedelta(hours=1)).status == InfraStatus.ALIVE
    # ... but one that began a day ago cannot: this pid was reused by a newer process.
    gone = observe_process(me, not_before=datetime.now(UTC) - timedelta(days=1))
    assert gone.status == InfraStatus.GONE and "reused" in gone.detail["reason"]
    assert observe_process(InfraRef(PROCESS, "1", host="elsewhere")).status == InfraStatus.UNKNOWN


def test_a_silent_process_on_another_host_is_checked_through_its_runs_worker_id():
    svc = service()
    job = running_job(svc, infra="process:ip-10-0-1-23.ec2.internal:7")
    task = "arn:aws:ecs:us-east-1:123456789012:task/interlinked/5b0e0d7a9c5f4c1c9e0e4d2b1a3f6e71"
    cluster = "arn:aws:ecs:us-east-1:123456789012:cluster/interlinked"
    runs = Runs(
        {
            job.flow_run_id: RunView(
                job.flow_run_id, "RUNNING", "Running", infrastructure_pid=f"{cluster}::{task}"
            )
        }
    )
    infra = Infra({task: InfraStatus.ALIVE})
    now = datetime.now(UTC) + timedelta(seconds=61)
    report = Sweeper(svc, runs, infra, clock=lambda: now).sweep()
    assert infra.looked == [task] and infra.stopped == [task]
    assert report.verdicts == {"HUNG": 1}
    assert svc.store.get(job.id).executions[0].failure_evidence["infrastructure"]["status"] == "ALIVE"


def test_the_work_records_its_ecs_task_from_the_metadata_endpoint(monkeypatch):
    import http.server
    import threading

    from flows.jobs import client

    class Metadata(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"Cluster": "arn:c", "TaskARN": "arn:t"}).encode()
            self.send_response(200 if self.path.endswith("/task") else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("AWS_BATCH_JOB_ID", raising=False)
        monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", f"http://127.0.0.1:{server.server_port}/v4/abc")
        assert client._run_context()[1] == "ecs:arn:c::arn:t"
        assert parse("ecs:arn:c::arn:t") == InfraRef("ecs", "arn:t", cluster="arn:c")
        monkeypatch.setenv("AWS_BATCH_JOB_ID", "job-1")  # a Batch job runs on ECS too: the job wins
        assert client._run_context()[1] == "batch:job-1"
    finally:
        server.shutdown()


# -- the command ------------------------------------------------------------------------------------------
def test_jobs_sweep_command_prints_what_it_did_and_jobs_show_the_code(monkeypatch, capsys):
    from flows.jobs import client, sweeper
    from interlinked.cli import main

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never contacted
    svc = service()
    job = running_job(svc)
    now = datetime.now(UTC) + timedelta(seconds=61)
    monkeypatch.setattr(
        sweeper,
        "sweep_once",
        lambda: Sweeper(svc, Runs(), Infra({"4242": InfraStatus.ALIVE}), clock=lambda: now).sweep(),
    )
    client.set_default_service(svc)
    try:
        assert main(["jobs", "sweep"]) == 0
        out = capsys.readouterr().out
        assert "swept 1 live jobs" in out and "1 hung" in out
        assert f"{job.id} HUNG: STUCK: no progress for" in out and "→ failed" in out
        assert main(["jobs", "show", job.id]) == 0
        assert "FAILURE" in (shown := capsys.readouterr().out) and "— STUCK: no progress for" in shown
        assert main(["jobs", "sweep", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["live"] == 1 and report["databaseQueries"] == 1  # the job is DISPATCHED again now

        def down():
            raise ConnectionError("Prefect is not answering")

        monkeypatch.setattr(sweeper, "sweep_once", down)
        assert main(["jobs", "sweep"]) == 3
        assert "Prefect is not answering" in capsys.readouterr().err
    finally:
        client.set_default_service(None)


def test_one_jobs_trouble_does_not_stop_the_sweep_of_the_others():
    class Flaky(MemoryJobStore):
        broken: str | None = None

        def replace(self, job, expected_version):
            if job.id == self.broken:
                raise ConnectionError("the database went away for this one")
            return super().replace(job, expected_version)

    svc = JobService(Flaky(), dispatcher=Dispatcher(), job_types=TYPES)
    first, second = running_job(svc, infra=f"process:{HOST}:1"), running_job(svc, infra=f"process:{HOST}:2")
    svc.store.broken = first.id
    now = datetime.now(UTC) + timedelta(seconds=61)
    report = Sweeper(
        svc, Runs(), Infra({"1": InfraStatus.ALIVE, "2": InfraStatus.ALIVE}), clock=lambda: now
    ).sweep()
    done = {action["jobId"]: action["done"] for action in report.actions}
    assert done[first.id].startswith("error: ConnectionError") and done[second.id] == "failed"
    assert svc.store.get(second.id).executions[0].failure_code == "STUCK"
