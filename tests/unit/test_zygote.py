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
import pydantic
from interlinked.workers import zygote
from prefect._internal import version_checking
import prefect
from prefect.client.orchestration import get_client
from prefect.settings import get_current_settings

def incomplete():
    found, pending = set(), [pydantic.BaseModel]
    while pending:
        for model in pending.pop().__subclasses__():
            if model not in found:
                found.add(model)
                pending.append(model)
    return sum(not getattr(model, "__pydantic_complete__", True) for model in found)

before = incomplete()
zygote.warm_prefect([])
def cached(url):
    return version_checking._is_api_version_check_cached(version_checking._api_version_check_key(url, prefect.__version__))
print(json.dumps({
    "threads": threading.active_count(),
    # the events client's key, and the engine's own client's (its base URL ends with a slash)
    "cached": cached(str(get_current_settings().api.url)),
    "client_cached": cached(str(get_client(sync_client=True).api_url)),
    "models": [before > 0, incomplete()],
}))
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
    # Checked for both keys; every pydantic model Prefect left to complete on first use is complete.
    assert reachable == {"threads": 1, "cached": True, "client_cached": True, "models": [True, 0]}
    # Nothing answers: nothing is cached (each run then checks for itself), and no thread is left.
    unreachable = _warm_in_subprocess("http://127.0.0.1:9/api")
    assert unreachable == {"threads": 1, "cached": False, "client_cached": False, "models": [True, 0]}


_SETTINGS_PROBE = """
import json, os, sys
from pathlib import Path
from interlinked.workers import zygote
from prefect.settings import get_current_settings

here, there = sys.argv[1], sys.argv[2]
os.chdir(here)
zygote.remember_settings_inputs()
seen = {}

def adopt(name, cwd=here, **variables):  # as a forked run does
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.chdir(cwd)
        os.environ.update(variables)
        os.write(write, json.dumps([zygote.adopt_settings(cwd), get_current_settings().logging.level]).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    seen[name] = json.loads(os.read(read, 4096))

adopt("same")
adopt("per-run", PREFECT__FLOW_RUN_ID="per-run identifiers are not settings")
adopt("variable", prefect_logging_level="DEBUG")
Path(there, "prefect.toml").write_text('[logging]\\nlevel = "ERROR"\\n')
adopt("prefect.toml", there)
Path(there, "prefect.toml").unlink()
Path(there, "pyproject.toml").write_text('[project]\\nname = "x"\\n')
adopt("pyproject without tool.prefect", there)
Path(there, "pyproject.toml").write_text('[tool.prefect.logging]\\nlevel = "CRITICAL"\\n')
adopt("pyproject with tool.prefect", there)
Path(there, "pyproject.toml").unlink()
Path(there, ".env").write_text("PREFECT_LOGGING_LEVEL=WARNING\\n")
adopt(".env", there)
print(json.dumps(seen))
"""


def test_a_child_builds_its_settings_again_only_when_their_inputs_differ(tmp_path):
    """Forked runs keep the fork server's Prefect settings when built from the same inputs, and get
    their own from a changed variable or a settings file in their working directory."""
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key.upper() not in ("PREFECT_LOGGING_LEVEL", "PREFECT_PROFILE")
    }
    env.update({"PREFECT_API_URL": "http://127.0.0.1:9/api", "PREFECT_HOME": str(tmp_path / "home")})
    out = subprocess.run(
        [sys.executable, "-c", _SETTINGS_PROBE, str(here), str(there)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "same": [False, "INFO"],
        "per-run": [False, "INFO"],
        "variable": [True, "DEBUG"],
        "prefect.toml": [True, "ERROR"],
        "pyproject without tool.prefect": [False, "INFO"],
        "pyproject with tool.prefect": [True, "CRITICAL"],
        ".env": [True, "WARNING"],
    }


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


def test_warm_pool_restarts_its_fork_server_when_the_code_changes(tmp_path, monkeypatch):
    """Issue 12, item 10: the warm pool kept forking runs from a fork server that had imported the
    old flow code after `up` redeployed changed code. Now the next spawn starts a new fork server;
    the old one still reports its run in flight, then exits."""
    import asyncio

    from interlinked.workers.warm import ZygotePool
    from interlinked.workers.zygote import code_fingerprint

    code = tmp_path / "code"
    package = code / "pkg_warm"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    module = package / "mod.py"
    module.write_text("VALUE = 1\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("INTERLINKED_WARM_CODE_PACKAGES", "pkg_warm")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens: runs fail fast
    roots = [str(package)]
    env = {**os.environ, "PREFECT__FLOW_RUN_ID": "x"}
    run_id = "00000000-0000-0000-0000-000000000000"

    async def scenario():
        pool = ZygotePool(["pkg_warm.mod"], roots=roots)
        first = await pool.start()
        try:
            assert first.ready_info["failed"] == {}
            assert first.ready_info["fingerprint"] == code_fingerprint(roots)
            zygote, pid = await pool.spawn("k1", run_id, env, str(tmp_path))
            assert zygote is first, "unchanged code: the same fork server"

            module.write_text("VALUE = 2\n")
            stat = module.stat()
            os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
            second, pid2 = await pool.spawn("k2", run_id, env, str(tmp_path))
            assert second is not first and pool.restarts == 1
            assert second.ready_info["fingerprint"] == code_fingerprint(roots)
            assert second.process.pid != first.process.pid

            # The retired fork server still reports its run's end, then exits by itself.
            assert await asyncio.wait_for(first.wait(pid), 180) != 0
            assert await asyncio.wait_for(first.process.wait(), 60) == 0
            await asyncio.wait_for(second.wait(pid2), 180)
            third, pid3 = await pool.spawn("k3", run_id, env, str(tmp_path))
            assert third is second and pool.restarts == 1
            await asyncio.wait_for(second.wait(pid3), 180)
        finally:
            await pool.stop()

    asyncio.run(scenario())


def test_a_fork_server_stopped_on_purpose_is_not_restarted(tmp_path, monkeypatch):
    """CI found a run process left after `interlinked down`: the stop signal reached the worker's
    group, the fork server died of it, and the stopping worker started a new one for a scheduled run,
    which forked the run in a session of its own. A crashed fork server is still replaced."""
    import asyncio
    import signal

    from interlinked.workers.warm import Zygote

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens: runs fail fast
    env = {**os.environ, "PREFECT__FLOW_RUN_ID": "x"}
    run_id = "00000000-0000-0000-0000-000000000000"

    async def scenario():
        zygote = Zygote(["json"])
        await zygote.start()
        try:
            crashed = zygote.process.pid
            zygote.process.send_signal(signal.SIGKILL)
            await zygote.process.wait()
            pid = await asyncio.wait_for(zygote.spawn("k1", run_id, env, str(tmp_path)), 120)
            assert zygote.process.pid != crashed, "a crashed fork server is replaced"
            await asyncio.wait_for(zygote.wait(pid), 180)

            stopped = zygote.process.pid
            zygote.process.send_signal(signal.SIGTERM)
            await zygote.process.wait()
            try:
                await zygote.spawn("k2", run_id, env, str(tmp_path))
            except RuntimeError as error:
                assert "the worker is stopping" in str(error)
            else:
                raise AssertionError("a run was forked after the worker's group was told to stop")
            assert zygote.process.pid == stopped and not zygote.alive
        finally:
            await zygote.stop()

    asyncio.run(scenario())


_NOTIFY_PROBE = """
import os, sys
from interlinked.workers import zygote
request = zygote.serve()
if request is None:
    sys.exit(0)
with os.fdopen(request["notify_fd"], "rb") as pipe:  # the forked run: its notification pipe
    line = pipe.readline()
open(os.path.join(request["cwd"], "got"), "wb").write(line)
os._exit(0)
"""


def test_the_fork_server_passes_notifications_to_the_run_they_name(tmp_path):
    """Each forked run gets a pipe of its own; `notify` writes to the named run's pipe only, and a
    notification for a run that is gone comes back as an error instead of hanging the server."""
    process = subprocess.Popen(
        [sys.executable, "-c", _NOTIFY_PROBE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def send(request):
        process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()

    try:
        pids = {}
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            send({"op": "spawn", "key": name, "flow_run_id": name, "env": {}, "cwd": str(tmp_path / name)})
            pids[name] = _read(process)["pid"]
        send({"op": "notify", "pid": pids["b"], "message": {"op": "suspended", "to": "b"}})
        assert _read(process) == {"op": "exited", "pid": pids["b"], "code": 0}
        assert json.loads((tmp_path / "b" / "got").read_text()) == {"op": "suspended", "to": "b"}
        assert not (tmp_path / "a" / "got").exists()
        send({"op": "notify", "pid": pids["b"], "message": {"op": "suspended"}})
        error = _read(process)
        assert error["op"] == "error" and error["key"] == f"notify:{pids['b']}", error
        send({"op": "notify", "pid": pids["a"], "message": {"op": "suspended", "to": "a"}})
        assert _read(process) == {"op": "exited", "pid": pids["a"], "code": 0}
        assert json.loads((tmp_path / "a" / "got").read_text())["to"] == "a"
    finally:
        process.stdin.close()
        process.wait(timeout=30)
    assert process.returncode == 0


_RELAY_PROBE = """
import contextlib, json, os, time, uuid
import prefect.flow_engine as flow_engine
from prefect._flow_run_suspension import FlowRunSuspensionRequest
from prefect.states import Running, Suspended
from interlinked.workers.zygote import SuspensionRelay

observed_by_prefect = []

@contextlib.contextmanager
def prefects_observer(flow_run_id, request, *args, **kwargs):
    observed_by_prefect.append(str(flow_run_id))
    yield

flow_engine.observe_flow_run_suspension = prefects_observer
own, other = uuid.uuid4(), uuid.uuid4()
read_end, write_end = os.pipe()
relay = SuspensionRelay(str(own), read_end)
installed = relay.install()
with flow_engine.observe_flow_run_suspension(other, FlowRunSuspensionRequest()):
    pass
request = FlowRunSuspensionRequest()
seen = []
with flow_engine.observe_flow_run_suspension(own, request):
    for message in (
        {"op": "suspended", "state": Running().model_dump(mode="json")},  # not a suspension
        "garbled",
        {"op": "suspended", "state": Suspended(pause_key="k").model_dump(mode="json")},
    ):
        line = message if isinstance(message, str) else json.dumps(message)
        os.write(write_end, (line + "\\n").encode())
        time.sleep(0.2)
        seen.append(request.is_requested())
    deadline = time.monotonic() + 10
    while not request.is_requested() and time.monotonic() < deadline:
        time.sleep(0.05)
state = request.get_state()
print(json.dumps({
    "installed": installed,
    "prefect observed": observed_by_prefect == [str(other)],
    "seen": seen,
    "state": [state.name, state.state_details.pause_key] if state else None,
}))
"""


def test_a_forked_run_takes_its_suspension_from_the_worker_and_other_runs_from_prefect():
    """The run's own flow run is told of its suspension through the pipe (Prefect's observer, a
    websocket per run, is not opened for it); a message that is not a suspension changes nothing;
    any other flow run the process observes still gets Prefect's observer."""
    out = subprocess.run([sys.executable, "-c", _RELAY_PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "installed": True,
        "prefect observed": True,
        "seen": [False, False, True],
        "state": ["Suspended", "k"],
    }


_STEP_EVENT_PROBE = """
import asyncio, json, uuid
from prefect.events.worker import EventsWorker
from prefect.deployments.steps import core
from interlinked.workers import zygote

sent = []
EventsWorker.send = lambda self, event: sent.append(event)
shared = zygote._share_the_events_connection()
run_id = uuid.uuid4()
asyncio.run(core.run_steps(
    [{"prefect.deployments.steps.set_working_directory": {"directory": "."}}],
    flow_run=type("Run", (), {"id": run_id})(),
))
print(json.dumps({
    "shared": shared,
    "events": [(event.event, event.resource.id) for event in sent],
    "expected": ["prefect.flow-run.pull-step.executed", f"prefect.flow-run.{run_id}"],
}))
"""


def test_deployment_steps_report_through_the_runs_events_connection():
    """A deployed run's pull steps report each step with a websocket of their own; in a forked run
    the event goes to the process's events worker, whose connection the run opens anyway."""
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    out = subprocess.run(
        [sys.executable, "-c", _STEP_EVENT_PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["shared"] is True
    assert report["events"] == [report["expected"]]
