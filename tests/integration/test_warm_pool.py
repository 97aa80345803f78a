"""The warm-process pool: runs are forked from the pre-imported fork server and can be cancelled."""

from __future__ import annotations

import json
import os
import time

import psutil
import pytest

from _stack import run_cli

pytestmark = pytest.mark.integration


def _wait(predicate, timeout=60, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def test_local_pool_is_warm_and_cancellation_stops_the_run_process_group(stack, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        assert client.read_work_pool(stack["work_pool"]).type == "warm-process"

    marker = tmp_path / "grandchild.pid"
    script = tmp_path / "hang.py"
    script.write_text(
        "import subprocess, time\n"
        "def hang(args):\n"
        "    child = subprocess.Popen(['sleep', '600'])\n"
        f"    open({str(marker)!r}, 'w').write(str(child.pid))\n"
        "    print('hanging', flush=True)\n"
        "    time.sleep(600)\n"
    )
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"func": "hang", "name": "to be cancelled", "script": str(script)}))
    submitted = run_cli("submit", str(job), "--json")
    assert submitted.returncode == 0, submitted.stderr
    flow_run_id = json.loads(submitted.stdout)["flow_run_id"]

    with get_client(sync_client=True) as client:
        run = _wait(
            lambda: (r := client.read_flow_run(flow_run_id)).state.is_running() and r.infrastructure_pid and r
        )
        grandchild_pid = int(_wait(lambda: marker.exists() and marker.read_text()))
        run_process = psutil.Process(int(run.infrastructure_pid))
        # Forked from the fork server, not started as a fresh interpreter by the worker.
        assert "interlinked.workers.zygote" in " ".join(run_process.parent().cmdline())

        client.set_flow_run_state(flow_run_id, Cancelling(), force=True)
        final = _wait(
            lambda: (r := client.read_flow_run(flow_run_id)).state.type.value == "CANCELLED" and r, timeout=90
        )
        # Told through Prefect's control channel that the SIGTERM is a cancel, the engine itself
        # ends the run Cancelled: no passing Crashed state.
        history = [state.type.value for state in client.read_flow_run_states(flow_run_id)]
    assert "CRASHED" not in history, history
    assert final.state.is_cancelled()
    for pid in (run_process.pid, grandchild_pid):
        _wait(
            lambda pid=pid: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        )
    assert os.environ.get("PREFECT_API_URL") == stack["prefect_api_url"]


def test_a_warm_run_ships_its_logs_and_ends_completed(stack, tmp_path):
    """A forked run ends without the interpreter's full shutdown: its exit hooks must still flush
    the run's logs to the server (the engine's own lines and the user's printed ones)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    script = tmp_path / "talk.py"
    script.write_text(
        "def talk(args):\n    print('warm-log-marker', args['n'], flush=True)\n    return args['n'] * 2\n"
    )
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps({"func": "talk", "arguments": {"n": 21}, "name": "logs", "script": str(script)})
    )
    submitted = run_cli("submit", str(job), "--json", "--wait")
    assert submitted.returncode == 0, submitted.stderr
    flow_run_id = json.loads(submitted.stdout)["flow_run_id"]

    with get_client(sync_client=True) as client:
        final = _wait(lambda: (r := client.read_flow_run(flow_run_id)).state.is_final() and r)
        assert final.state.is_completed(), final.state

        def messages():
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[final.id])))
            text = "\n".join(log.message for log in logs)
            return "Finished in state Completed" in text and text

        text = _wait(messages, timeout=30)
        # The warm worker skips Prefect's Submitting sub-state (a fork needs no hand-over state).
        states = [state.name for state in client.read_flow_run_states(flow_run_id)]
    assert "Beginning flow run" in text
    assert "Submitting" not in states and states[-2:] == ["Running", "Completed"], states
    # The worker sent the run's deployment, flow, work queue and pool with the fork (the engine
    # did not read them): the events the run emitted still name each of them, as read on the server.
    with get_client(sync_client=True) as client:
        response = client._client.post(
            "/events/filter",
            json={"filter": {"related": {"id": [f"prefect.flow-run.{flow_run_id}"]}}, "limit": 50},
        )
        response.raise_for_status()
        deployment = client.read_deployment(final.deployment_id)
        queue = client.read_work_queue(final.work_queue_id)
        flow = client.read_flow(final.flow_id)
    emitted = [event for event in response.json()["events"] if event["event"].startswith("prefect.task-run.")]
    assert emitted, "the run's tasks emitted no events"
    named = {
        resource["prefect.resource.id"]: resource.get("prefect.resource.name")
        for resource in emitted[0]["related"]
    }
    assert named[f"prefect.deployment.{deployment.id}"] == deployment.name
    assert named[f"prefect.flow.{flow.id}"] == flow.name
    assert named[f"prefect.work-queue.{queue.id}"] == queue.name
    assert named[f"prefect.work-pool.{queue.work_pool_id}"] == final.work_pool_name


SUSPENDABLE_FLOW = """
import os
import time

from prefect import flow, task


@task
def step(index: int) -> int:
    time.sleep(0.2)
    return index


@flow(persist_result=True)
def steps(release: str, limit: int = 1500) -> int:
    done = 0
    while done < limit and not os.path.exists(release):
        step(done)
        done += 1
    return done
"""


def test_a_warm_run_suspended_from_outside_stops_and_runs_again_when_resumed(stack, tmp_path):
    """Prefect's `suspend_flow_run(flow_run_id=...)`, called by another process while the run works:
    the run's engine stops at its next task and its process exits, the run stays Suspended; resumed,
    the worker starts it again and it completes. Warm runs learn of their suspension from the worker
    (one event stream for all runs) instead of a websocket each."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment
    from prefect.flow_runs import resume_flow_run, suspend_flow_run

    (tmp_path / "steps.py").write_text(SUSPENDABLE_FLOW)
    flow.from_source(source=str(tmp_path), entrypoint="steps.py:steps").deploy(
        name="suspendable", work_pool_name=stack["work_pool"], print_next_steps=False
    )
    release = tmp_path / "release"
    run = run_deployment("steps/suspendable", parameters={"release": str(release)}, timeout=0)

    with get_client(sync_client=True) as client:

        def steps_started():
            return len(client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))))

        running = _wait(
            lambda: (r := client.read_flow_run(run.id)).state.is_running() and r.infrastructure_pid and r
        )
        process = psutil.Process(int(running.infrastructure_pid))
        _wait(lambda: steps_started() >= 3)
        suspend_flow_run(flow_run_id=run.id)
        _wait(
            lambda: not psutil.pid_exists(process.pid) or process.status() == psutil.STATUS_ZOMBIE,
            timeout=90,
        )
        suspended = client.read_flow_run(run.id)
        assert suspended.state.name == "Suspended", suspended.state
        # It stopped on its own, far from the end of its steps (1500 steps of 0.2 s).
        assert steps_started() < 200
        release.write_text("go")
        resume_flow_run(run.id)
        final = _wait(lambda: (r := client.read_flow_run(run.id)).state.is_final() and r, timeout=120)
        names = [state.name for state in client.read_flow_run_states(run.id)]
    assert final.state.is_completed(), final.state
    assert names.count("Running") == 2 and "Suspended" in names, names
