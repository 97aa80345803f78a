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


_WARM_PROBE = """
import json, threading
from interlinked.workers import zygote
from prefect._internal import version_checking
import prefect
from prefect.settings import get_current_settings
zygote.warm_prefect([])
key = version_checking._api_version_check_key(str(get_current_settings().api.url), prefect.__version__)
print(json.dumps({"threads": threading.active_count(), "cached": version_checking._is_api_version_check_cached(key)}))
"""


def _warm_in_subprocess(api_url: str) -> dict:
    env = {**os.environ, "PREFECT_API_URL": api_url}
    out = subprocess.run(
        [sys.executable, "-c", _WARM_PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_fork_server_checks_the_server_version_once_and_stays_single_threaded():
    """Children inherit the checked version (no check, no TLS context each); fork safety holds."""
    import http.server
    import threading

    import prefect

    class Version(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(prefect.__version__ if self.path == "/api/admin/version" else None).encode()
            self.send_response(200 if self.path == "/api/admin/version" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Version)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        reachable = _warm_in_subprocess(f"http://127.0.0.1:{server.server_address[1]}/api")
    finally:
        server.shutdown()
    assert reachable == {"threads": 1, "cached": True}
    # Nothing answers: nothing is cached (each run then checks for itself), and no thread is left.
    assert _warm_in_subprocess("http://127.0.0.1:9/api") == {"threads": 1, "cached": False}


_ORPHAN_PROBE = """
import os, subprocess, sys, time
from interlinked.workers import zygote
assert zygote.become_subreaper()
middle = os.fork()
if middle == 0:
    orphan = subprocess.Popen(["sleep", "30"], start_new_session=True)
    print(orphan.pid, flush=True)
    os._exit(0)
os.waitpid(middle, 0)
orphan = int(sys.stdin.readline())
time.sleep(0.2)
print(open(f"/proc/{orphan}/stat").read().rsplit(")", 1)[1].split()[1], flush=True)
os.kill(orphan, 9)
"""


def test_zygote_keeps_orphaned_scripts_in_its_tree():
    """A run process that dies before its setsid'd script: the script stays the zygote's, so
    `interlinked down` (which stops the worker's process tree) still finds it."""
    probe = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_PROBE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    orphan = probe.stdout.readline().strip()
    probe.stdin.write(orphan + "\n")
    probe.stdin.flush()
    parent = probe.stdout.readline().strip()
    probe.wait(timeout=30)
    assert probe.returncode == 0
    assert int(parent) == probe.pid
