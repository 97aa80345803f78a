"""The warm pool's fork server protocol, without a Prefect server."""

import json
import os
import subprocess
import sys
import time

import psutil


def _start(env):
    return subprocess.Popen(
        [sys.executable, "-m", "interlinked.workers.zygote", "json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )


def _read(process, timeout=60):
    deadline = time.monotonic() + timeout
    line = process.stdout.readline()
    assert time.monotonic() < deadline and line, process.stderr.read()
    return json.loads(line)


def test_fork_server_spawns_reports_exit_and_survives_bad_input(tmp_path):
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # nothing listens there
    process = _start(env)
    try:
        ready = _read(process)
        assert ready["op"] == "ready" and ready["failed"] == {}
        process.stdin.write("not json\n")
        process.stdin.flush()
        assert _read(process)["op"] == "error"
        request = {
            "op": "spawn",
            "key": "k1",
            "flow_run_id": "00000000-0000-0000-0000-000000000000",
            "env": {**env, "PREFECT__FLOW_RUN_ID": "x"},
            "cwd": str(tmp_path),
        }
        process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()
        spawned = _read(process)
        assert spawned == {"op": "spawned", "key": "k1", "pid": spawned["pid"]}
        child = psutil.Process(spawned["pid"])
        assert child.ppid() == process.pid
        exited = _read(process, timeout=120)
        # The engine cannot reach the API for that run: the child fails, the server reports it.
        assert exited["op"] == "exited" and exited["pid"] == spawned["pid"] and exited["code"] != 0
    finally:
        process.stdin.close()
        process.wait(timeout=30)
    assert process.returncode == 0
