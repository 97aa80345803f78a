"""The stuck-job sweeper on the local stack: a script job that reports progress and then hangs is
detected, its processes stopped and a second execution completes; a run whose processes are
killed is an orphan (not hung) and runs again; healthy runs that report progress are never flagged;
a run stuck in Pending fails as INFRASTRUCTURE_NEVER_STARTED and is dispatched again.

Windows are short through the jobs' own estimations; sweeps are run with `interlinked jobs sweep`
(what the stack's scheduled `job-sweeper` flow runs every 30 s, which may act first — the outcome
is the same). No assertion is about elapsed time."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import textwrap
import time

import pytest

from _stack import run_cli

pytestmark = pytest.mark.integration

SCRIPT = """
    import os
    import time

    from interlinked import jobs


    def work(args):
        job = jobs.get(os.environ["INTERLINKED_JOB_ID"])
        attempt = len(job["executions"])
        jobs.progress(0.05, {"attempt": attempt, "pid": os.getpid()})
        if attempt == 1 and args["first"] == "hang":
            time.sleep(3600)  # no progress from here on: hung
        if attempt == 1 and args["first"] == "busy":
            for step in range(600):  # reports progress until it is killed
                time.sleep(1)
                jobs.progress(0.1, {"step": step})
        for step in range(args.get("steps", 0)):
            time.sleep(args.get("every", 1))
            jobs.progress((step + 1) / (args["steps"] + 1), {"step": step})
        return {"attempt": attempt}
"""
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


@pytest.fixture(scope="module")
def data_bucket(stack_handle, aws):
    bucket = stack_handle.ensure_up()["buckets"]["data"]
    aws["s3"].put_object(
        Bucket=bucket, Key="scripts/sweep-test/work.py", Body=textwrap.dedent(SCRIPT).lstrip().encode()
    )
    return bucket


def _cli_json(*args: str) -> dict:
    result = run_cli(*args, "--json")
    assert result.returncode == 0, f"{args} failed ({result.returncode}): {result.stderr}"
    return json.loads(result.stdout)


def _description(first: str, **arguments) -> dict:
    return {
        "name": f"sweep {first}",
        "script": "sweep-test/work.py",
        "func": "work",
        "arguments": {"first": first, **arguments},
    }


def _create(description: dict, estimations: dict) -> dict:
    return _cli_json(
        "jobs",
        "create",
        "script",
        "--input",
        json.dumps(description),
        "--estimations",
        json.dumps(estimations),
        "--dispatch",
    )


def _show(job_id: str) -> dict:
    return _cli_json("jobs", "show", job_id)


def _until(job_id: str, done, *, sweep: bool = True, timeout: float = 300) -> dict:
    """Sweep and look until ``done(job)`` (or the timeout: the caller's assertions then say what is
    missing)."""
    deadline = time.monotonic() + timeout
    while True:
        if sweep:
            _cli_json("jobs", "sweep")
        job = _show(job_id)
        if done(job) or time.monotonic() > deadline:
            return job
        time.sleep(1)


def _pid(job: dict) -> int:
    return int(job["currentExecution"]["infrastructureId"].rsplit(":", 1)[1])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_hung_script_is_stopped_and_its_second_execution_completes(data_bucket):
    created = _create(_description("hang"), {"heartbeatTimeoutSeconds": 15, "maxAttempts": 3})
    running = _until(
        created["id"],
        lambda j: j["state"] == "EXECUTING" and j["currentExecution"]["metrics"].get("attempt") == 1,
        sweep=False,
    )
    assert running["state"] == "EXECUTING", json.dumps(running, indent=2)
    hung_pid = _pid(running)

    job = _until(created["id"], lambda j: j["state"] in TERMINAL)
    assert job["state"] == "SUCCEEDED", json.dumps(job, indent=2)
    first, second = job["executions"]
    assert first["state"] == "FAILURE" and first["failureCode"] == "STUCK"
    assert first["failureReason"].startswith("STUCK: no progress for")
    assert first["failureEvidence"]["infrastructure"]["status"] == "ALIVE"
    assert job["sweep"]["verdict"] == "HUNG"
    assert first["flowRunId"] == created["flowRunId"]
    assert second["state"] == "SUCCESS" and second["flowRunId"] != first["flowRunId"]
    assert job["outputData"] == {"result": {"attempt": 2}}
    assert not _alive(hung_pid)  # the hung execution's process was stopped

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        old_run = client.read_flow_run(first["flowRunId"])
    assert old_run.state.is_final() and not old_run.state.is_completed()


def test_healthy_runs_reporting_progress_are_never_flagged(data_bucket):
    created = [
        _create(_description("steady", steps=12, every=1), {"heartbeatTimeoutSeconds": 20}) for _ in range(3)
    ]
    reports = []
    jobs = {}
    deadline = time.monotonic() + 300
    while len(jobs) < len(created) and time.monotonic() < deadline:
        reports.append(_cli_json("jobs", "sweep"))
        for job in created:
            shown = _show(job["id"])
            if shown["state"] in TERMINAL:
                jobs[job["id"]] = shown
        time.sleep(1)
    ids = {job["id"] for job in created}
    flagged = [a for report in reports for a in report["actions"] if a.get("jobId") in ids]
    assert flagged == []
    assert any(report["verdicts"].get("HEALTHY") for report in reports)  # a sweep saw them running
    for job in jobs.values():
        assert job["state"] == "SUCCEEDED" and len(job["executions"]) == 1 and job["sweep"] == {}
    assert len(jobs) == len(created)


def test_killed_processes_are_an_orphan_not_a_hang_and_run_again(data_bucket):
    created = _create(_description("busy"), {"heartbeatTimeoutSeconds": 15, "maxAttempts": 3})
    running = _until(
        created["id"],
        lambda j: j["state"] == "EXECUTING" and "step" in j["currentExecution"]["metrics"],
        sweep=False,
    )
    assert running["state"] == "EXECUTING", json.dumps(running, indent=2)
    flow_pid, script_pid = _pid(running), running["currentExecution"]["metrics"]["pid"]
    # A worker host dying: the flow run's process and the script it runs, SIGKILL, no goodbye.
    for pid in (flow_pid, script_pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)

    job = _until(created["id"], lambda j: j["state"] in TERMINAL)
    assert job["state"] == "SUCCEEDED", json.dumps(job, indent=2)
    first, second = job["executions"]
    assert first["failureCode"] in ("ORPHANED", "KILLED"), first  # gone: never STUCK
    assert first["failureEvidence"].get("infrastructure", {}).get("status", "GONE") == "GONE"
    assert job["sweep"]["verdict"] == "ORPHANED"
    assert second["state"] == "SUCCESS"


def test_a_run_stuck_in_pending_never_started_and_is_dispatched_again(data_bucket):
    """The worker died between Pending and starting the run (PrefectHQ/prefect#20485): a flow run
    in Pending that nothing will ever start."""
    from prefect.client.orchestration import get_client
    from prefect.states import Pending

    from flows.jobs import client as jobs_client
    from flows.jobs.client import JobService, PrefectDispatcher

    class PendingForever(PrefectDispatcher):
        def create_run(self, job, deployment):
            with get_client(sync_client=True) as prefect:
                found = prefect.read_deployment_by_name(deployment)
                run = prefect.create_flow_run_from_deployment(
                    found.id,
                    parameters={"id": job.id},
                    state=Pending(message="taken by a worker that then died"),
                    tags=[f"job:{job.id}", "interlinked-job"],
                )
            return str(run.id)

    default = jobs_client.default_service()
    service = JobService(default.store, mirror=default.mirror, dispatcher=PendingForever())
    job = service.create(
        "script", _description("done"), estimations={"startTimeoutSeconds": 3, "maxAttempts": 2}
    )
    job = service.signal(job.id, "DISPATCH")
    pending_run = job.flow_run_id
    assert pending_run

    final = _until(job.id, lambda j: j["state"] in TERMINAL)
    assert final["state"] == "SUCCEEDED", json.dumps(final, indent=2)
    first, second = final["executions"]
    assert first["failureCode"] == "INFRASTRUCTURE_NEVER_STARTED"
    assert first["failureReason"].startswith("INFRASTRUCTURE_NEVER_STARTED: not started")
    assert first["flowRunId"] == pending_run and first["failureEvidence"]["flowRun"]["state"] == "Pending"
    assert second["state"] == "SUCCESS" and second["flowRunId"] != pending_run

    with get_client(sync_client=True) as prefect:
        old = prefect.read_flow_run(pending_run)
    assert old.state.is_crashed() and "INFRASTRUCTURE_NEVER_STARTED" in (old.state.message or "")


def test_the_stacks_sweeper_runs_on_its_schedule(data_bucket):
    """`up` deploys `job-sweeper/local` with a 30 s schedule: Prefect's scheduler makes its runs and
    the warm pool completes them, with no `jobs sweep` call. (With SQLAlchemy 2.1 under the 3.8.8
    server, inserting scheduled runs failed and the schedule never made a run.)"""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + 240
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("job-sweeper/local")
        assert deployment.schedules, "job-sweeper/local has no schedule"
        while True:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[t for t in StateType if t != StateType.SCHEDULED])
                    )
                ),
                limit=50,
            )
            completed = [run for run in runs if run.auto_scheduled and run.state.is_completed()]
            if completed or time.monotonic() > deadline:
                break
            time.sleep(2)
    assert completed, (
        f"no scheduled sweep completed; its runs past Scheduled: {[(r.name, r.state_name) for r in runs]}"
    )
