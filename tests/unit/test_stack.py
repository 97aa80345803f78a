"""The process bookkeeping of the local stack, on a harmless stand-in process."""

import contextlib
import socket
import subprocess
import sys
import time

import psutil
import pytest

from interlinked.local.processes import LocalStack, Part, StackError
from interlinked.settings import Settings


@pytest.fixture
def settings(tmp_path):
    return Settings(_env_file=None, state_dir=tmp_path / "state", start_timeout=5)


def _sleeper(name: str, ready=lambda: False, port=None, seconds: int = 60) -> Part:
    # A parent that also spawns a child, like a server with workers.
    code = f"import subprocess,time; subprocess.Popen(['sleep','{seconds}']); time.sleep({seconds})"
    return Part(name=name, command=[sys.executable, "-c", code], ready=ready, port=port)


def test_start_records_and_stop_ends_the_whole_group(settings):
    stack = LocalStack(settings, echo=lambda _: None)
    assert stack.start(_sleeper("dummy"))
    process = stack.recorded_process("dummy")
    assert process is not None
    time.sleep(0.5)
    children = process.children(recursive=True)
    assert children, "the stand-in should have spawned a child"
    assert stack.running() == {"dummy": process.pid}
    assert stack.stop("dummy")
    time.sleep(0.2)
    for proc in [process, *children]:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    assert stack.running() == {}
    assert not stack.stop("dummy"), "stopping twice must be a no-op"


def test_stale_or_recycled_pid_records_are_ignored(settings):
    stack = LocalStack(settings, echo=lambda _: None)
    stack.pid_dir.mkdir(parents=True)
    # A pid that exists (this test process) but a different start time: not ours, never killed.
    (stack.pid_dir / "ghost.json").write_text(f'{{"pid": {psutil.Process().pid}, "create_time": 1.0}}')
    assert stack.recorded_process("ghost") is None
    assert not (stack.pid_dir / "ghost.json").exists()
    assert stack.stop_all() == []


def test_part_already_answering_is_not_started(settings):
    stack = LocalStack(settings, echo=lambda _: None)
    assert stack.start(_sleeper("ready", ready=lambda: True)) is False
    assert stack.running() == {}


def test_port_taken_by_something_else_is_a_clear_error(settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        stack = LocalStack(settings, echo=lambda _: None)
        with pytest.raises(StackError, match=f"port 127.0.0.1:{port} is taken"):
            stack.start(_sleeper("server", port=port))


def test_part_that_exits_reports_its_log(settings):
    stack = LocalStack(settings, echo=lambda _: None)
    part = Part(
        name="crasher",
        command=[sys.executable, "-c", "print('boom: bad config'); raise SystemExit(3)"],
        ready=lambda: False,
    )
    stack.start(part)
    with pytest.raises(StackError) as raised:
        stack.wait_ready(part)
    message = str(raised.value)
    assert "crasher exited before it answered" in message
    assert str(stack.log_path("crasher")) in message and "boom: bad config" in message


def test_part_that_never_answers_times_out_with_its_name(settings):
    stack = LocalStack(settings, echo=lambda _: None)
    part = _sleeper("slow", seconds=30)
    stack.start(part)
    try:
        with pytest.raises(StackError, match="slow did not answer within 1 s"):
            stack.wait_ready(part, timeout=1)
    finally:
        stack.stop("slow")
    assert subprocess.run(["true"]).returncode == 0


def test_stop_all_gives_each_part_its_own_grace(settings, tmp_path):
    """A part that needs time after SIGTERM (the emulator's final snapshot) gets its grace."""
    done = tmp_path / "final-write-done"
    code = (
        "import signal,sys,time,pathlib\n"
        "def bye(*_):\n"
        f"    time.sleep(1.5); pathlib.Path({str(done)!r}).write_text('ok'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "time.sleep(120)\n"
    )
    stack = LocalStack(settings, echo=lambda _: None)
    slow = Part(name="slow", command=[sys.executable, "-c", code], ready=lambda: False)
    stack.start(slow)
    time.sleep(1.0)  # let it install its handler
    assert stack.stop_all(grace={"slow": 30.0}) == ["slow"]
    assert done.read_text() == "ok"  # it finished its work instead of being killed
    done.unlink()
    stack.start(slow)
    time.sleep(1.0)
    assert stack.stop_all(grace={"slow": 0.2}) == ["slow"]  # too short: SIGKILL, nothing written
    assert stack.running() == {}
    assert not done.exists()


def _worker_with_a_run_in_its_own_session(marker) -> Part:
    # Like the warm pool: the "worker" forks a "run" that calls setsid and starts a "script" that
    # calls setsid again; stopping the worker's process group reaches neither.
    code = (
        "import subprocess, sys, time\n"
        "run = subprocess.Popen([sys.executable, '-c', "
        "\"import subprocess, time; s = subprocess.Popen(['sleep', '600'], start_new_session=True); "
        f"open({str(marker)!r}, 'w').write(str(s.pid)); time.sleep(600)\"], start_new_session=True)\n"
        "time.sleep(600)\n"
    )
    return Part(name="worker", command=[sys.executable, "-c", code], ready=lambda: False)


def _wait_for(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.mark.parametrize("keep_runs", [False, True])
def test_down_stops_what_the_services_started_in_sessions_of_their_own(settings, tmp_path, keep_runs):
    """Fault 6 of issue 12: `down` left forked runs and their setsid'd scripts running."""
    from interlinked.local import down

    marker = tmp_path / "script.pid"
    stack = LocalStack(settings, echo=lambda _: None)
    assert stack.start(_worker_with_a_run_in_its_own_session(marker))
    _wait_for(lambda: marker.exists() and marker.read_text())
    worker = stack.recorded_process("worker")
    tree = [worker, *worker.children(recursive=True)]
    assert len(tree) == 3
    lines: list[str] = []
    try:
        options = {"keep_runs": True} if keep_runs else {}  # the default is what `down` does
        assert down(settings, echo=lines.append, **options) == ["worker"]
        alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if keep_runs:
            assert alive == tree[1:], "--keep-runs stops the worker and leaves its runs"
        else:
            assert alive == [], f"left running: {[p.cmdline() for p in alive]}"
            assert any("sessions of their own" in line for line in lines)
    finally:
        for process in tree:
            with contextlib.suppress(psutil.Error):
                process.kill()


def test_down_stops_runs_the_worker_forks_while_other_services_stop(settings, tmp_path):
    """CI found a run left after `down`: the worker forked it (a scheduled sweep) after `down` had
    listed the worker's tree and before it stopped the worker, in a session of its own. Here the
    bridge takes a second to stop while the worker forks a run every 20 ms."""
    from interlinked.local import down

    runs_file = tmp_path / "runs"
    worker_code = (
        "import subprocess, time\n"
        "while True:\n"
        "    run = subprocess.Popen(['sleep', '600'], start_new_session=True)\n"
        f"    with open({str(runs_file)!r}, 'a') as out: out.write(f'{{run.pid}}\\n')\n"
        "    time.sleep(0.02)\n"
    )
    bridge_code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(1.0), sys.exit(0)))\n"
        "time.sleep(600)\n"
    )
    stack = LocalStack(settings, echo=lambda _: None)
    assert stack.start(Part(name="worker", command=[sys.executable, "-c", worker_code], ready=lambda: False))
    assert stack.start(Part(name="bridge", command=[sys.executable, "-c", bridge_code], ready=lambda: False))
    _wait_for(lambda: runs_file.exists() and len(runs_file.read_text().split()) >= 3)
    forked: list[psutil.Process] = []
    try:
        assert down(settings, echo=lambda _: None) == ["bridge", "worker"]
        for pid in runs_file.read_text().split():
            with contextlib.suppress(psutil.Error):
                forked.append(psutil.Process(int(pid)))
        alive = [p for p in forked if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], f"{len(alive)} run(s) left running"
    finally:
        for process in forked:
            with contextlib.suppress(psutil.Error):
                process.kill()


def test_the_prefect_server_keeps_twenty_database_connections_on_postgres_only(tmp_path, monkeypatch):
    """A burst keeps more requests at the database than Prefect's 5 pooled connections; each one
    opened anew costs PostgreSQL a backend and its statements' preparation. SQLite (one writer) keeps
    Prefect's default; a value the user sets wins."""
    import importlib

    parts = importlib.import_module("interlinked.local.parts")
    name = "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE"
    monkeypatch.delenv(name, raising=False)
    postgres = Settings(_env_file=None, state_dir=tmp_path / "pg", prefect_database="postgres")
    sqlite = Settings(_env_file=None, state_dir=tmp_path / "lite", prefect_database="sqlite")
    assert parts._server_env(postgres)[name] == "20"
    assert name not in parts._server_env(sqlite)
    monkeypatch.setenv(name, "7")
    assert parts._server_env(postgres)[name] == "7"
