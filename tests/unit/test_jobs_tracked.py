"""Jobs for work a flow run already does (flows.jobs.work.TrackedJob, JobService.start) and the job
types a flow makes for itself (``createdBy``, ``ownsRun: false``), on the in-memory store."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest

from flows.jobs import client
from flows.jobs.client import JobService
from flows.jobs.infrastructure import InfraStatus
from flows.jobs.model import Job, JobError
from flows.jobs.store import MemoryJobStore
from flows.jobs.sweeper import Sweeper
from flows.jobs.types import JobTypes, load_job_types
from flows.jobs.work import TrackedJob

HOST = socket.gethostname()
TYPES = JobTypes(
    {
        "script": {"flow": "script-job"},
        "prepare-experiment": {"flow": "prepare-experiment"},
        "submission-dataset": {
            "flow": "process-submission",
            "createdBy": "process-submission",
            "ownsRun": False,
        },
    }
)


class Dispatcher:
    def __init__(self) -> None:
        self.created: list[str] = []

    def create_run(self, job: Job, deployment: str) -> str:
        self.created.append(job.id)
        return f"run-{len(self.created)}"

    def cancel_run(self, flow_run_id: str) -> None:
        pass


class BrokenStore(MemoryJobStore):
    """A job store that is down."""

    def insert(self, job):
        raise ConnectionError("database unreachable")

    def get(self, job_id):
        raise ConnectionError("database unreachable")


@pytest.fixture
def svc():
    service = JobService(MemoryJobStore(), dispatcher=Dispatcher(), job_types=TYPES)
    client.set_default_service(service)
    yield service
    client.set_default_service(None)


def test_the_built_in_types_name_prepare_experiment_and_submission_datasets():
    types = load_job_types()
    assert types.deployment("prepare-experiment") == "prepare-experiment/local"
    assert types.created_by("submission-dataset") == "process-submission"
    assert not types.owns_run("submission-dataset") and types.owns_run("script")


def test_a_started_job_executes_in_the_calling_run_and_ends_with_success(svc):
    tracked = TrackedJob.start("prepare-experiment", {"request": {"experimentId": "e1"}}, execute=True)
    assert tracked.problems == [] and tracked.execution_id
    stored = svc.get(tracked.job_id)
    assert stored.state == "EXECUTING" and len(stored.executions) == 1
    assert stored.current_execution.infrastructure_id.startswith("process:")
    assert svc.dispatcher.created == []  # no new flow run: the work is already running

    tracked.progress(0.5, {"step": "pca"})
    tracked.outputs(data={"cells": 10})
    tracked.succeed()
    stored = svc.get(tracked.job_id)
    assert stored.state == "SUCCEEDED" and stored.output_data == {"cells": 10}
    assert stored.current_execution.metrics == {"step": "pca"} and stored.current_execution.progress == 1.0


def test_progress_is_throttled_and_the_last_report_is_written_before_the_end(svc):
    tracked = TrackedJob.start("submission-dataset", {"dataset": "a"}, progress_interval=3600)
    assert svc.get(tracked.job_id).state == "DISPATCHED" and tracked.execution_id is None
    tracked.progress(0.1)  # no execution yet: nothing to report on
    tracked.execute()
    version = svc.get(tracked.job_id).version
    tracked.progress(0.2, {"step": "download"})  # the first report is written ...
    tracked.progress(0.6, {"step": "analysis"})  # ... the next ones wait for the interval
    tracked.progress(0.7, {"rows": 5})
    assert svc.get(tracked.job_id).version == version + 1
    assert svc.get(tracked.job_id).current_execution.progress == 0.2
    tracked.fail(TimeoutError("ran 60 s"))
    execution = svc.get(tracked.job_id).current_execution
    assert execution.metrics == {"step": "analysis", "rows": 5}  # written before the FAILURE
    assert execution.state == "FAILURE" and execution.failure_code == "TIME_LIMIT"
    assert execution.failure_reason == "TimeoutError: ran 60 s"
    assert "traceback" in execution.failure_evidence


def test_a_failure_reason_with_its_code(svc):
    tracked = TrackedJob.start("submission-dataset", {"dataset": "a"}, execute=True)
    tracked.fail("cannot read s3://b/k: it no longer exists", code="CODE_ERROR", evidence={"key": "k"})
    execution = svc.get(tracked.job_id).current_execution
    assert execution.failure_code == "CODE_ERROR" and execution.failure_evidence == {"key": "k"}
    assert svc.get(tracked.job_id).state == "FAILED"


def test_a_job_store_that_is_down_never_stops_the_work():
    client.set_default_service(JobService(BrokenStore(), job_types=TYPES))
    warnings: list[str] = []
    try:
        tracked = TrackedJob.start("prepare-experiment", {}, execute=True, warn=warnings.append)
        tracked.execute()
        tracked.progress(0.5)
        tracked.succeed()  # none of these raise: the work goes on
    finally:
        client.set_default_service(None)
    assert tracked.job_id is None
    assert tracked.problems and "database unreachable" in tracked.problems[0]
    assert warnings and "the work goes on" in warnings[0]


def test_jobs_a_flow_makes_for_itself_are_not_created_dispatched_or_retried_by_hand(svc):
    with pytest.raises(
        JobError, match="cannot create a submission-dataset job by hand: the process-submission"
    ):
        svc.create("submission-dataset", {})
    tracked = TrackedJob.start("submission-dataset", {"dataset": "a"}, execute=True)
    tracked.fail("boom")
    before = svc.get(tracked.job_id).version
    with pytest.raises(JobError, match="cannot dispatch or retry a submission-dataset job by hand"):
        svc.retry(tracked.job_id, force=True)
    assert svc.get(tracked.job_id).version == before and svc.dispatcher.created == []


class _Runs:
    calls = 0

    def __init__(self) -> None:
        self.ended: dict[str, str] = {}

    def not_running(self, ids):
        return {}

    def read(self, ids):
        return {}

    def cancelling(self):
        return []

    def end(self, run_id, state_type, message):
        self.ended[run_id] = state_type


class _Infra:
    calls = 0

    def __init__(self) -> None:
        self.stopped: list[str] = []

    def observe(self, refs, *, not_before=None):
        from flows.jobs.infrastructure import Observation

        return {ref: Observation(ref, InfraStatus.ALIVE) for ref in refs}

    def stop(self, ref, reason):
        self.stopped.append(ref.id)
        return {"action": "stopped"}


def test_a_silent_dataset_fails_stuck_without_stopping_or_ending_the_shared_run(svc):
    tracked = TrackedJob.start(
        "submission-dataset", {"dataset": "a"}, estimations={"heartbeatTimeoutSeconds": 60, "maxAttempts": 1}
    )
    tracked.execute()
    # The run of the submission: recorded on the job and its execution (here a made-up id).
    stored = svc.store.get(tracked.job_id)
    stored.flow_run_id = stored.current_execution.flow_run_id = "submission-run"
    svc.store.replace(stored.model_copy(update={"version": stored.version + 1}), stored.version)
    runs, infra = _Runs(), _Infra()
    later = datetime.now(UTC) + timedelta(seconds=61)
    report = Sweeper(svc, runs, infra, clock=lambda: later).sweep()
    assert report.verdicts == {"HUNG": 1}
    job = svc.get(tracked.job_id)
    assert job.state == "FAILED" and job.current_execution.failure_code == "STUCK"
    assert infra.stopped == [] and runs.ended == {}  # the other datasets of the run go on
    assert "ownsRun false" in report.actions[0]["stop"] and svc.dispatcher.created == []


def test_outputs_go_with_the_end_in_one_write_and_a_bad_report_does_not_keep_the_job_open(svc):
    tracked = TrackedJob.start("prepare-experiment", {}, execute=True, progress_interval=3600)
    version = svc.get(tracked.job_id).version
    tracked.outputs(data={"cells": 3}, files={"experiment": "s3://b/e.h5ad"})
    tracked.succeed()
    job = svc.get(tracked.job_id)
    assert job.version == version + 1 and job.state == "SUCCEEDED" and job.output_data == {"cells": 3}

    other = TrackedJob.start("prepare-experiment", {}, execute=True, progress_interval=3600)
    other.outputs(data={"score": float("nan")})  # not valid JSON: refused by the store ...
    other.fail("boom")
    job = svc.get(other.job_id)
    assert job.state == "FAILED" and job.output_data == {}  # ... and the end recorded without it
    assert other.problems and "without its last report" not in other.problems[0]
