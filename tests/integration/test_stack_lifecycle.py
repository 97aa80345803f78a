"""`up` is idempotent and `down` leaves nothing of ours running (runs last in this directory)."""

import time

import psutil
import pytest

from _stack import run_cli

pytestmark = pytest.mark.integration


def test_up_twice_is_harmless(stack, stack_handle):
    before = stack_handle.pids()
    assert set(before) == {
        "postgres",
        "aws",
        "prefect-server",
        "worker",
        "analysis-service",
        "bridge",
        "script-api",
    }
    result = run_cli("up")
    assert result.returncode == 0, result.stderr
    assert "starting" not in result.stderr
    assert stack_handle.pids() == before
    assert stack["prefect_ui_url"] in result.stdout


def test_up_restarts_a_service_that_died(stack, stack_handle):
    before = stack_handle.pids()
    bridge = psutil.Process(before["bridge"])
    bridge.kill()
    bridge.wait(timeout=10)
    result = run_cli("up")
    assert result.returncode == 0, result.stderr
    assert "starting bridge" in result.stderr
    after = stack_handle.pids()
    assert after["bridge"] != before["bridge"] and psutil.pid_exists(after["bridge"])
    assert {name: pid for name, pid in after.items() if name != "bridge"} == {
        name: pid for name, pid in before.items() if name != "bridge"
    }


def test_down_leaves_no_process_of_ours(stack, stack_handle):
    pids = stack_handle.pids()
    groups = {}
    for name, pid in pids.items():
        process = psutil.Process(pid)
        groups[name] = [process, *process.children(recursive=True)]
    result = run_cli("down")
    stack_handle.mark_down()
    assert result.returncode == 0, result.stderr
    time.sleep(0.5)
    survivors = [
        (name, proc.pid, proc.cmdline())
        for name, procs in groups.items()
        for proc in procs
        if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    ]
    assert survivors == []
    assert stack_handle.pids() == {}
    state_dir = str(stack_handle.state_dir)
    test_processes = {psutil.Process().pid} | {p.pid for p in psutil.Process().children(recursive=True)}
    leftovers = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            environ = proc.info.get("environ") or {}
        except psutil.Error:
            continue
        if environ.get("INTERLINKED_STATE_DIR") == state_dir and proc.pid not in test_processes:
            leftovers.append((proc.pid, proc.info.get("cmdline")))
    assert leftovers == []
    again = run_cli("down")
    assert again.returncode == 0 and "nothing of ours was running" in again.stderr
