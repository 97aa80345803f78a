"""The job state machine and the job service on the in-memory store (no servers).

Every refused request must raise ``JobError`` with a clear reason and leave the stored job exactly
as it was (same version, same JSON) and write no new S3 copy.
"""

from __future__ import annotations

import threading

import pytest

from flows.jobs import machine
from flows.jobs.client import JobService
from flows.jobs.model import Job, JobError, JobNotFound
from flows.jobs.store import MemoryJobStore, change
from flows.jobs.types import JobTypes, load_job_types


class FakeDispatcher:
    """Records the runs it was asked to create; ``fail`` makes the next creation raise."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str]] = []
        self.cancelled: list[str] = []
        self.fail: Exception | None = None

    def create_run(self, job: Job, deployment: str) -> str:
        if self.fail is not None:
            raise self.fail
        self.runs.append((job.id, deployment))
        return f"run-{len(self.runs)}"

    def cancel_run(self, flow_run_id: str) -> None:
        self.cancelled.append(flow_run_id)


@pytest.fixture
def service():
    copies: list[dict] = []
    service = JobService(
        MemoryJobStore(),
        mirror=lambda job: copies.append(job.to_json()),
        dispatcher=FakeDispatcher(),
        job_types=JobTypes({"script": {"flow": "script-job"}, "other": {"deployment": "x/y"}}, "local"),
    )
    service.copies = copies
    return service


def executing(service: JobService) -> tuple[Job, str]:
    job = service.create("script", {"name": "n"})
    service.signal(job.id, "DISPATCH")
    job = service.signal(job.id, "EXECUTE", flow_run_id="run-1", infrastructure_id="process:h:1")
    return job, job.current_execution.execution_id


def unchanged(service: JobService, job_id: str):
    """A context manager asserting that the block raises JobError and changes neither store nor copy."""

    class _Check:
        def __enter__(self):
            self.before = service.get(job_id).to_json()
            self.copies = len(service.copies)
            self.raises = pytest.raises(JobError)
            return self.raises.__enter__()

        def __exit__(self, *exc):
            handled = self.raises.__exit__(*exc)
            assert service.get(job_id).to_json() == self.before
            assert len(service.copies) == self.copies
            return handled

    return _Check()


# -- the happy path ---------------------------------------------------------------------------------
def test_lifecycle_keeps_the_seed_field_names(service):
    job = service.create(
        "script", {"name": "n", "arguments": {"x": 1}}, {"data": "s3://b/k"}, {"memoryMiB": 512, "cpu": 1}
    )
    document = job.to_json()
    for name in (
        "id",
        "jobType",
        "inputData",
        "inputFiles",
        "estimations",
        "state",
        "currentExecution",
        "executions",
        "outputData",
        "outputFiles",
    ):
        assert name in document
    assert document["state"] == "CREATED" and document["currentExecution"] is None
    assert document["estimations"]["maxAttempts"] == 3 and document["estimations"]["memoryMiB"] == 512

    dispatched = service.signal(job.id, "DISPATCH")
    assert dispatched.state == "DISPATCHED" and dispatched.flow_run_id == "run-1"
    assert service.dispatcher.runs == [(job.id, "script-job/local")]

    job = service.signal(job.id, "EXECUTE", infrastructure_id="process:h:1")
    current = job.to_json()["currentExecution"]
    assert set(current) >= {
        "executionId",
        "createdAt",
        "updatedAt",
        "metrics",
        "progress",
        "state",
        "failureReason",
        "finishedAt",
        "flowRunId",
        "infrastructureId",
    }
    assert current["state"] == "EXECUTING" and current["progress"] == 0 and current["flowRunId"] == "run-1"
    execution_id = current["executionId"]

    service.update_execution(job.id, execution_id, progress=0.5, metrics={"cpu": 1234})
    job = service.update_execution(job.id, execution_id, progress=1, metrics={"memory": 5678})
    assert job.current_execution.progress == 1.0
    assert job.current_execution.metrics == {"cpu": 1234, "memory": 5678}  # merged

    job = service.update_execution(job.id, execution_id, progress=0.75)
    service.update(job.id, output_data={"sum": 3}, output_files={"result": "s3://b/r.json"})
    job = service.signal_execution(job.id, execution_id, "SUCCESS")
    document = job.to_json()
    assert document["state"] == "SUCCEEDED"
    assert document["currentExecution"]["state"] == "SUCCESS" and document["currentExecution"]["finishedAt"]
    assert document["currentExecution"]["progress"] == 1.0
    assert document["outputData"] == {"sum": 3} and len(document["executions"]) == 1
    # Every change wrote a copy, the last one is the final job.
    assert service.copies[-1] == document and len(service.copies) == 9
    assert [c["version"] for c in service.copies] == list(range(1, 10))


def test_failure_then_retry_makes_a_second_execution(service):
    job, first = executing(service)
    job = service.signal_execution(job.id, first, "FAILURE", failure_reason="exit code 1: boom")
    assert job.state == "FAILED" and job.current_execution.failure_reason == "exit code 1: boom"
    job = service.retry(job.id)
    assert job.state == "DISPATCHED" and job.flow_run_id == "run-2"
    job = service.signal(job.id, "EXECUTE")
    assert [e.attempt for e in job.executions] == [1, 2] and job.current_execution.execution_id != first
    assert job.executions[0].state == "FAILURE" and job.current_execution.state == "EXECUTING"
    job = service.signal_execution(job.id, job.current_execution.execution_id, "SUCCESS")
    assert job.state == "SUCCEEDED"


def test_retry_stops_at_max_attempts_unless_forced(service):
    job = service.create("script", {}, None, {"maxAttempts": 1})
    service.signal(job.id, "DISPATCH")
    job = service.signal(job.id, "EXECUTE")
    service.signal_execution(job.id, job.current_execution.execution_id, "FAILURE", failure_reason="x")
    with unchanged(service, job.id) as raised:
        service.retry(job.id)
    assert "1 of its 1 attempts" in str(raised.value)
    assert service.retry(job.id, force=True).state == "DISPATCHED"


def test_cancel_ends_a_running_execution_and_cancels_the_run(service):
    job, execution_id = executing(service)
    job = service.cancel(job.id)
    assert job.state == "CANCELLED" and job.current_execution.state == "CANCELLED"
    assert service.dispatcher.cancelled == ["run-1"]
    with unchanged(service, job.id):
        service.update_execution(job.id, execution_id, progress=0.9)
    with unchanged(service, job.id):
        service.cancel(job.id)


def test_a_failed_dispatch_puts_the_job_back_and_reraises(service):
    job = service.create("script", {})
    service.dispatcher.fail = ConnectionError("Prefect is down")
    with pytest.raises(ConnectionError):
        service.signal(job.id, "DISPATCH")
    job = service.get(job.id)
    assert job.state == "CREATED" and job.flow_run_id is None
    service.dispatcher.fail = None
    assert service.signal(job.id, "DISPATCH").state == "DISPATCHED"


def test_job_types_from_the_builtin_file_and_an_extra_file(tmp_path, monkeypatch):
    monkeypatch.delenv("INTERLINKED_JOB_TYPES_FILE", raising=False)
    monkeypatch.setenv("INTERLINKED_DEPLOYMENT_SET", "batch")
    types = load_job_types()
    assert types.deployment("script") == "script-job/batch"
    assert types.deployment("script-job") == "script-job/batch"
    extra = tmp_path / "types.json"
    extra.write_text('{"prepare": {"deployment": "prepare-experiment/local"}}')
    monkeypatch.setenv("INTERLINKED_JOB_TYPES_FILE", str(extra))
    assert load_job_types().deployment("prepare") == "prepare-experiment/local"
    extra.write_text('{"broken": {}}')
    with pytest.raises(JobError, match="broken"):
        load_job_types()


# -- bad input: a clear error, nothing changed --------------------------------------------------------
def test_unknown_job_type_creates_nothing(service):
    with pytest.raises(JobError, match="unknown job type 'nope'; known types: other, script"):
        service.create("nope", {})
    assert service.list() == [] and service.copies == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"input_data": [1, 2]}, "inputData must be a JSON object"),
        ({"input_files": "s3://x"}, "inputFiles must be a JSON object"),
        ({"estimations": {"memoryMiB": -1}}, "memoryMiB"),
        ({"estimations": {"maxAttempts": 0}}, "maxAttempts"),
        ({"input_data": {"x": float("nan")}}, "plain JSON"),
    ],
)
def test_bad_create_input_creates_nothing(service, arguments, message):
    with pytest.raises(JobError, match=message):
        service.create("script", **arguments)
    assert service.list() == []


def test_success_before_execute_is_refused(service):
    job = service.create("script", {})
    service.signal(job.id, "DISPATCH")
    with unchanged(service, job.id) as raised:
        service.signal_execution(job.id, "no-such-execution", "SUCCESS")
    assert "has no execution 'no-such-execution'" in str(raised.value)


def test_a_second_success_is_refused(service):
    job, execution_id = executing(service)
    service.signal_execution(job.id, execution_id, "SUCCESS")
    with unchanged(service, job.id) as raised:
        service.signal_execution(job.id, execution_id, "SUCCESS")
    assert "already ended SUCCESS" in str(raised.value)
    with unchanged(service, job.id):
        service.signal_execution(job.id, execution_id, "FAILURE", failure_reason="late")


def test_unknown_execution_id_is_refused(service):
    job, _ = executing(service)
    with unchanged(service, job.id) as raised:
        service.update_execution(job.id, "bogus", progress=0.5)
    assert "no execution 'bogus'" in str(raised.value)


@pytest.mark.parametrize("value", [-0.01, 1.5, float("nan"), float("inf"), "0.5", True, None])
def test_progress_outside_zero_one_is_refused(service, value):
    job, execution_id = executing(service)
    service.update_execution(job.id, execution_id, progress=0.25)
    if value is None:  # None means "no progress change": only metrics; refused when metrics are bad
        with unchanged(service, job.id) as raised:
            service.update_execution(job.id, execution_id, progress=None, metrics=["cpu"])
        assert "metrics must be a JSON object" in str(raised.value)
        return
    with unchanged(service, job.id) as raised:
        service.update_execution(job.id, execution_id, progress=value)
    assert "progress must be" in str(raised.value)


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda s, j: s.signal(j, "EXECUTE"), "cannot EXECUTE job .*: it is CREATED \\(dispatch it first\\)"),
        (lambda s, j: s.signal(j, "SUCCESS"), "unknown job signal 'SUCCESS'"),
        (lambda s, j: s.update(j, output_data={"x": 1}), "not EXECUTING"),
        (lambda s, j: s.retry(j), "only FAILED or CANCELLED"),
    ],
)
def test_transitions_a_created_job_refuses(service, action, message):
    job = service.create("script", {})
    with unchanged(service, job.id) as raised:
        action(service, job.id)
    assert raised.match(message)


def test_transitions_a_running_job_refuses(service):
    job, execution_id = executing(service)
    with unchanged(service, job.id) as raised:
        service.signal(job.id, "DISPATCH")
    assert "only a CREATED job is dispatched" in str(raised.value)
    with unchanged(service, job.id) as raised:
        service.signal(job.id, "EXECUTE")
    assert f"execution {execution_id} is still running" in str(raised.value)
    with unchanged(service, job.id) as raised:
        service.signal_execution(job.id, execution_id, "DONE")
    assert "unknown execution signal 'DONE'" in str(raised.value)
    with unchanged(service, job.id) as raised:
        service.signal_execution(job.id, execution_id, "SUCCESS", failure_reason="why")
    assert "failure reason goes with FAILURE" in str(raised.value)
    with unchanged(service, job.id):
        service.update(job.id, output_files="s3://x")


def test_unknown_job_is_job_not_found(service):
    with pytest.raises(JobNotFound, match="no job 'missing'"):
        service.get("missing")
    with pytest.raises(JobNotFound):
        service.signal("missing", "DISPATCH")
    assert service.copies == []


def test_the_transition_leaves_its_argument_alone():
    job = machine.new_job("script", known_types=["script"])
    before = job.to_json()
    machine.dispatch(job)
    assert job.to_json() == before


# -- concurrency: the conditional write -----------------------------------------------------------------
class RacingStore(MemoryJobStore):
    """Every thread's first read waits until all threads have read: they all hold the same version."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=10)
        self.racing = threading.local()

    def get(self, job_id: str) -> Job:
        job = super().get(job_id)
        if getattr(self.racing, "armed", False):
            self.racing.armed = False
            self.barrier.wait()
        return job


def test_concurrent_end_signals_only_one_wins(service):
    store = RacingStore(parties=6)
    service.store = store
    job, execution_id = executing(service)
    outcomes: list[str] = []

    def finish(state: str) -> None:
        store.racing.armed = True
        try:
            reason = "x" if state == "FAILURE" else None
            service.signal_execution(job.id, execution_id, state, failure_reason=reason)
            outcomes.append(state)
        except JobError as error:
            assert "already ended" in str(error)
            outcomes.append("refused")

    threads = [threading.Thread(target=finish, args=("SUCCESS" if i % 2 else "FAILURE",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes).count("refused") == 5, outcomes
    winner = next(o for o in outcomes if o != "refused")
    assert service.get(job.id).current_execution.state == winner
    assert service.get(job.id).version == 5  # create, dispatch, run id, execute, one end


def test_change_reapplies_the_transition_after_a_lost_race():
    store = MemoryJobStore()
    job = store.insert(machine.new_job("script", known_types=["script"]))
    calls = []

    def transition(current: Job) -> Job:
        calls.append(current.version)
        if len(calls) == 1:  # someone else writes between our read and our write
            change(store, job.id, machine.dispatch)
        return machine.cancel(current)

    result = change(store, job.id, transition)
    assert calls == [1, 2] and result.version == 3 and result.state == "CANCELLED"
