"""`down` with flow runs in flight (issue 12, fault 6): it cancels them and stops every process of
theirs, or leaves them with `--keep-runs`, saying so.

A forked warm-pool run calls ``setsid``, and so do the script runner and the script's own child
here: stopping the worker's process group reaches none of them.
"""

from __future__ import annotations

import contextlib
import json
import time

import psutil
import pytest

from _stack import run_cli

pytestmark = pytest.mark.integration

HANG = """
import json, os, subprocess, time

def hang(args):
    child = subprocess.Popen(["sleep", "600"], start_new_session=True)
    with open(args["marker"], "w") as marker:
        marker.write(json.dumps({"script": os.getpid(), "child": child.pid}))
    print("hanging", flush=True)
    time.sleep(600)
"""


def _wait(predicate, timeout=120, interval=0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _hung_job_in_flight(tmp_path, name: str) -> tuple[str, list[psutil.Process]]:
    """Submit a job whose script hangs; return its flow run id and every process of it."""
    from prefect.client.orchestration import get_client

    script = tmp_path / "hang.py"
    script.write_text(HANG)
    marker = tmp_path / "pids.json"
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {"func": "hang", "name": name, "script": str(script), "arguments": {"marker": str(marker)}}
        )
    )
    submitted = run_cli("submit", str(job), "--json")
    assert submitted.returncode == 0, submitted.stderr
    flow_run_id = json.loads(submitted.stdout)["flow_run_id"]
    with get_client(sync_client=True) as client:
        run = _wait(
            lambda: (r := client.read_flow_run(flow_run_id)).state.is_running() and r.infrastructure_pid and r
        )
    pids = json.loads(_wait(lambda: marker.exists() and marker.read_text()))
    processes = [
        psutil.Process(int(run.infrastructure_pid)),
        psutil.Process(pids["script"]),
        psutil.Process(pids["child"]),
    ]
    assert all(_alive(process) for process in processes)
    return flow_run_id, processes


def _kill(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()


def test_down_cancels_runs_in_flight_and_stops_their_processes(stack, stack_handle, tmp_path):
    from prefect.client.orchestration import get_client

    flow_run_id, processes = _hung_job_in_flight(tmp_path, "hung when the stack goes down")
    try:
        result = run_cli("down")
        stack_handle.mark_down()
        assert result.returncode == 0, result.stderr
        survivors = [(process.pid, process.cmdline()) for process in processes if _alive(process)]
        assert survivors == [], f"left running after `down`: {survivors}\n{result.stderr}"
        assert "cancelling 1 flow run(s) in flight" in result.stderr
    finally:
        _kill(processes)
    stack_handle.ensure_up()
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    assert state.type.value == "CANCELLED", state


def test_down_keep_runs_leaves_them_and_says_so(stack, stack_handle, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    flow_run_id, processes = _hung_job_in_flight(tmp_path, "kept when the stack goes down")
    try:
        result = run_cli("down", "--keep-runs")
        stack_handle.mark_down()
        assert result.returncode == 0, result.stderr
        assert "leaving 1 flow run(s) running (--keep-runs)" in result.stderr
        assert flow_run_id in result.stderr
        assert all(_alive(process) for process in processes)
    finally:
        _kill(processes)
    stack_handle.ensure_up()
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(flow_run_id).state.type.value == "RUNNING"
        client.set_flow_run_state(flow_run_id, Cancelled(message="test cleanup"), force=True)
