"""Start, watch and stop the processes of the local stack (what they are is :mod:`.parts`).

Each :class:`Part` is started only when it does not answer yet and nothing else holds its port,
records the process id (and the process start time, so a recycled pid is never mistaken for ours)
under the state directory, and logs to ``{state_dir}/logs/{part}.log``. ``down`` stops exactly the
processes that ``up`` started. Nothing here knows which parts exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from interlinked.settings import PROJECT_ROOT, Settings

# Seconds `stop` waits after SIGTERM before it sends SIGKILL.
DEFAULT_GRACE = 10.0


class StackError(RuntimeError):
    """A part of the local stack did not come up; the message says which, where and why."""


@dataclass
class Part:
    """One long-running process of the local stack."""

    name: str
    command: list[str]
    # Answers True once the part is ready to serve.
    ready: Callable[[], bool]
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = PROJECT_ROOT
    # Run as this system user (only when we are root: e.g. PostgreSQL refuses to run as root).
    user: str | None = None
    # Called just before the process is started here (e.g. create a database cluster once).
    prepare: Callable[[], object] | None = None
    # How `down` asks it to stop: the signal, and whether to its whole process group or the
    # process alone (a server that stops its own children, such as the postmaster).
    stop_signal: int = signal.SIGTERM
    stop_group: bool = True
    # Seconds `down` waits after that signal before it kills the group (None: stop()'s default).
    stop_grace: float | None = None


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class LocalStack:
    """Start, inspect and stop the processes of the local stack."""

    def __init__(self, settings: Settings, *, echo: Callable[[str], None] = print):
        self.settings = settings
        self.echo = echo
        self.pid_dir = settings.state_dir / "pids"
        self.logs_dir = settings.logs_dir

    # -- process bookkeeping -------------------------------------------------------------------
    def _pid_file(self, name: str) -> Path:
        return self.pid_dir / f"{name}.json"

    def recorded_process(self, name: str) -> psutil.Process | None:
        """The live process `up` started for ``name``, or None (stale records are removed)."""
        pid_file = self._pid_file(name)
        if not pid_file.exists():
            return None
        try:
            record = json.loads(pid_file.read_text())
            process = psutil.Process(record["pid"])
            same_process = abs(process.create_time() - record["create_time"]) < 1.0
            if same_process and process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                return process
        except (psutil.Error, KeyError, ValueError, json.JSONDecodeError):
            pass
        pid_file.unlink(missing_ok=True)
        return None

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def start(self, part: Part) -> bool:
        """Start ``part`` unless it already answers; return True when a process was started here."""
        if part.ready():
            return False
        if self.recorded_process(part.name) is not None:
            # Ours and still starting (e.g. a second `up` while the first waits): just wait for it.
            return False
        if part.port is not None and port_in_use(self.settings.host, part.port):
            raise StackError(
                f"{part.name}: port {self.settings.host}:{part.port} is taken by something that is not "
                f"a {part.name} we can use; stop it or choose another port (INTERLINKED_*_PORT)."
            )
        if part.prepare is not None:
            part.prepare()
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path(part.name).open("ab")
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(part.command)}\n".encode())
        log.flush()
        env = {**os.environ, **part.env}
        as_user = {}
        if part.user is not None:
            import pwd

            entry = pwd.getpwnam(part.user)
            as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        process = subprocess.Popen(
            part.command,
            cwd=part.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own process group: `down` stops the part and whatever it spawned, nothing else.
            start_new_session=True,
            **as_user,
        )
        log.close()
        record = {
            "pid": process.pid,
            "create_time": psutil.Process(process.pid).create_time(),
            "command": part.command,
            "port": part.port,
            "stop_signal": int(part.stop_signal),
            "stop_group": part.stop_group,
            "stop_grace": part.stop_grace,
        }
        self._pid_file(part.name).write_text(json.dumps(record))
        return True

    def wait_ready(self, part: Part, *, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.settings.start_timeout)
        while time.monotonic() < deadline:
            if part.ready():
                return
            recorded = self._pid_file(part.name).exists()
            if recorded and self.recorded_process(part.name) is None:
                raise StackError(self._failure(part, "exited before it answered"))
            time.sleep(0.25)
        raise StackError(
            self._failure(part, f"did not answer within {timeout or self.settings.start_timeout:.0f} s")
        )

    def _failure(self, part: Part, what: str) -> str:
        where = f" on {self.settings.host}:{part.port}" if part.port else ""
        tail = ""
        log = self.log_path(part.name)
        if log.exists():
            lines = log.read_text(errors="replace").splitlines()[-15:]
            tail = "\n    " + "\n    ".join(lines)
        return f"{part.name}{where} {what}; its log is {log}{tail}"

    def stop(self, name: str, *, grace: float | None = None) -> bool:
        """Stop the process group `up` started for ``name``; True if something was stopped.

        ``grace``: seconds to wait before killing it (default: the part's own ``stop_grace``, else
        :data:`DEFAULT_GRACE`).
        """
        process = self.recorded_process(name)
        if process is None:
            return False
        record = json.loads(self._pid_file(name).read_text())
        stop_signal = record.get("stop_signal", int(signal.SIGTERM))
        grace = grace or record.get("stop_grace") or DEFAULT_GRACE
        try:
            group = os.getpgid(process.pid)
            if record.get("stop_group", True):
                os.killpg(group, stop_signal)
                os.killpg(group, signal.SIGCONT)  # a group `freeze` stopped acts on the signal now
            else:
                os.kill(process.pid, stop_signal)
                os.kill(process.pid, signal.SIGCONT)
        except (ProcessLookupError, PermissionError):
            group = None
        try:
            process.wait(timeout=grace)
        except psutil.TimeoutExpired:
            if group is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            process.wait(timeout=5)
        # Children that left the group (rare) but were ours: end them too.
        if group is not None:
            for orphan in _processes_in_group(group):
                with contextlib.suppress(psutil.Error):
                    orphan.kill()
        self._pid_file(name).unlink(missing_ok=True)
        return True

    def freeze(self, name: str) -> list[psutil.Process]:
        """Suspend (SIGSTOP) the process group `up` started for ``name`` and every descendant,
        then return the descendants: nothing in that tree forks any more, so the list is complete.

        `down` takes stock this way before it stops the worker: a run the warm pool forks between
        a plain :meth:`descendants` and the worker's stop calls ``setsid`` and so is neither in the
        list nor in the worker's group (a scheduled sweep can start at any moment). :meth:`stop`
        and :func:`stop_processes` resume what they signal; :func:`thaw` resumes the rest.
        """
        process = self.recorded_process(name)
        if process is None:
            return []
        record = json.loads(self._pid_file(name).read_text())
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if record.get("stop_group", True):
                os.killpg(os.getpgid(process.pid), signal.SIGSTOP)
            else:
                os.kill(process.pid, signal.SIGSTOP)
        frozen: dict[int, psutil.Process] = {}
        # A child forked just before the stop, and its own children: freeze until nothing is new.
        for _ in range(20):
            try:
                found = [child for child in process.children(recursive=True) if child.pid not in frozen]
            except psutil.Error:
                break
            if not found:
                break
            for child in found:
                with contextlib.suppress(psutil.Error):
                    child.suspend()
                    frozen[child.pid] = child
        return list(frozen.values())

    def descendants(self, name: str) -> list[psutil.Process]:
        """Every live descendant of the process `up` started for ``name``, whatever its process
        group or session: flow runs forked by the warm pool and their scripts call ``setsid``, so
        stopping the part's group does not reach them. Take this before stopping the part (an
        orphan is re-parented away from the tree)."""
        process = self.recorded_process(name)
        if process is None:
            return []
        with contextlib.suppress(psutil.Error):
            return process.children(recursive=True)
        return []

    def running(self) -> dict[str, int]:
        """Name → pid of every part `up` started that is still alive."""
        if not self.pid_dir.exists():
            return {}
        alive = {}
        for pid_file in sorted(self.pid_dir.glob("*.json")):
            process = self.recorded_process(pid_file.stem)
            if process is not None:
                alive[pid_file.stem] = process.pid
        return alive

    def stop_all(self, order: Iterable[str] = (), grace: Mapping[str, float] | None = None) -> list[str]:
        """Stop every part `up` started: the ones in ``order`` first, then the rest.

        ``grace`` overrides a part's own ``stop_grace`` (seconds it may take to exit after the signal).
        """
        names = list(order) + [name for name in self.running() if name not in order]
        grace = grace or {}
        return [name for name in names if self.stop(name, grace=grace.get(name))]


def stop_processes(processes: Iterable[psutil.Process], grace: float = DEFAULT_GRACE) -> list[psutil.Process]:
    """SIGTERM each process still alive (psutil checks it is the same process, not a recycled pid),
    SIGKILL what is left after ``grace`` seconds; return the ones that were alive."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                process.terminate()
                process.resume()  # a process `freeze` suspended acts on the signal now
                alive.append(process)
        except psutil.Error:
            continue
    _, left = psutil.wait_procs(alive, timeout=grace)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(left, timeout=5)
    return alive


def thaw(processes: Iterable[psutil.Process]) -> None:
    """Resume processes :meth:`LocalStack.freeze` suspended (those that still exist)."""
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.resume()


def _processes_in_group(group: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(process.pid) == group:
                found.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def python_tool(name: str) -> str:
    """Path of a console script installed next to the running interpreter (the project venv)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name
