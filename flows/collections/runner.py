"""Run one task's shell command: what a drain's Dask slots execute (one call per task).

The command runs under ``bash -c`` (or, when bash would only exec it, is exec'd directly with the
environment bash would give it: :func:`direct_command`) in a process group of its own, with ``TASK_ID`` and
``COLLECTION`` (and ``TASK_ATTRIBUTES``, the attributes as JSON) in its environment, never the
platform's secrets (:func:`task_environment`: Prefect's API key or auth string, database URLs); stdout and
stderr go to one local file, never through pipes (no reader thread per task). While the task runs,
a single uploader thread per process copies files that grew to
``s3://{data}/collections/{collection}/logs/{task_id}.log`` every ``log_interval`` seconds, so a
task that runs for days has a current log; the final log is written when the task ends. A task
that printed nothing gets no log object (no request on the hot path of no-op tasks).

Short tasks go several to a Dask task (:func:`run_tasks`), one after the other.

The drain never needs to reach into a Dask worker's memory: :func:`stop_owner` (called through
``client.run`` on every worker) kills the process groups of one drain's tasks and refuses its
tasks that have not started yet — the SIGTERM and wall-time-budget paths.

Only plain values cross the Dask boundary (:class:`TaskRun` in, a ``dict`` out), so remote
workers (a scheduler address) need this package and S3 access, nothing of the drain's store.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Seconds between uploads of a running task's log (a final upload always follows its end).
DEFAULT_LOG_INTERVAL = 10.0
#: Output kept in the error message of a failed task (its end, where the reason usually is).
ERROR_TAIL_BYTES = 400


def log_key(collection: str, task_id: str, sub_id: str | None = None) -> str:
    """Where a task's output goes in the data bucket (ARCHITECTURE.md, "Task collections"); a
    nested task's sub-task writes ``logs/{task_id}/{sub_id}.log``."""
    if sub_id is not None:
        return f"collections/{collection}/logs/{task_id}/{sub_id}.log"
    return f"collections/{collection}/logs/{task_id}.log"


@dataclass
class TaskRun:
    """One claimed task, as a slot needs it: what to run, under which lease, where its log goes."""

    collection: str
    task_id: str
    command: str
    token: int
    owner: str
    bucket: str | None
    timeout: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    log_interval: float = DEFAULT_LOG_INTERVAL
    #: The sub-tasks of a nested task (``attributes["nested"]``): run in parallel instead of
    #: ``command``, those already ``done`` skipped (:func:`run_nested`).
    nested: list[dict[str, Any]] | None = None
    #: Sub-tasks of a nested task running at once (None: all of them).
    nested_concurrency: int | None = None
    #: Set on the run of one sub-task: its id (its log is ``logs/{task_id}/{sub_id}.log``).
    sub_id: str | None = None


# -- commands that need no shell -----------------------------------------------------------------

#: A command of only these characters and blanks has no quoting, expansion, redirection,
#: operator, comment or assignment-free-form for bash to interpret: bash splits it on blanks and
#: runs the first word with the rest as arguments, exactly what a direct exec does.
_PLAIN = re.compile(r"[A-Za-z0-9_./,:@%+=-]+(?:[ \t]+[A-Za-z0-9_./,:@%+=-]+)*")
#: Environment variables that make ``bash -c`` do more than run the command (a startup file,
#: options, exported functions that shadow commands): with any of them, bash runs it.
_SHELL_ENV = ("BASH_ENV", "SHELLOPTS", "BASHOPTS")
#: Builtins whose program of the same name does the same with no arguments (exit status only).
_SAME_AS_PROGRAM = frozenset({"true", "false"})
_shell_words: frozenset[str] | None = None


def _bash_words() -> frozenset[str]:
    """The installed bash's builtins and reserved words (asked once per process): a command that
    starts with one is bash's to run."""
    global _shell_words
    if _shell_words is None:
        try:
            listed = subprocess.run(
                ["bash", "-c", "compgen -b; compgen -k"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.split()
        except (OSError, subprocess.SubprocessError):
            listed = None
        # Without the list nothing is run directly (every word could be a builtin).
        _shell_words = frozenset(listed) if listed else frozenset({"*"})
    return _shell_words


def direct_command(command: str, environment: dict[str, str]) -> tuple[str, list[str], dict[str, str]] | None:
    """``(program path, argv, environment)`` to exec ``command`` without a shell when that is
    provably what ``bash -c command`` would do, else None (bash runs it).

    Only a plain command qualifies: words of letters, digits and ``_./,:@%+=-`` separated by
    blanks (nothing bash expands, quotes, redirects or treats as an operator), whose first word
    is no builtin or reserved word of the installed bash (``true`` and ``false`` alone excepted:
    their programs behave the same) and no assignment, found on ``PATH``, with no environment
    that changes what bash does first. For such a command bash execs the program itself (its
    one-command optimisation), having set ``PWD``, ``SHLVL`` and ``_``; the environment returned
    has the same. A program that then cannot be started is left to bash too (its message and
    exit code: 126, 127).
    """
    if not _PLAIN.fullmatch(command):
        return None
    words = command.split()
    name = words[0]
    if "=" in name:
        return None
    words_of_bash = _bash_words()
    if "*" in words_of_bash or (name in words_of_bash and not (name in _SAME_AS_PROGRAM and len(words) == 1)):
        return None
    path = environment.get("PATH")
    if path is None or any(key in environment for key in _SHELL_ENV):
        return None
    if any(key.startswith("BASH_FUNC_") for key in environment):
        return None
    level = environment.get("SHLVL")
    if level is not None and not (level.isascii() and level.isdigit() and int(level) < 998):
        return None  # bash would reset it (and may warn): not worth copying
    old = environment.get("OLDPWD")
    if old is not None and not os.path.isdir(old):
        return None  # bash drops an OLDPWD that is no directory
    program = shutil.which(name, path=path)
    if program is None:
        return None
    if "/" not in name:
        program = os.path.abspath(program)
    env = dict(environment)
    env["SHLVL"] = str(int(level)) if level is not None else "0"
    env["_"] = program if "/" not in name else name
    pwd = env.get("PWD")
    try:
        same = pwd is not None and os.path.isabs(pwd) and os.path.samestat(os.stat(pwd), os.stat("."))
    except OSError:
        same = False
    if not same:
        env["PWD"] = os.getcwd()
    return program, words, env


# -- what runs in this process, per drain (owner) -----------------------------------------------

_lock = threading.Lock()
_running: dict[tuple[str, str, int, str | None], _Running] = {}
#: Sub-states of the nested tasks running in this process: (collection, task id, token) ->
#: {"owner", "nested": [sub dict, ...]} (read by the drain through :func:`nested_progress`).
_nested: dict[tuple[str, str, int], dict[str, Any]] = {}
_stopped_owners: set[str] = set()
_stores: dict[str, Any] = {}
_uploader: threading.Thread | None = None


@dataclass
class _Running:
    run: TaskRun
    process: subprocess.Popen
    path: str
    uploaded_size: int = 0
    killed: str | None = None


def register_store(bucket: str, store: Any) -> None:
    """Use ``store`` (an :class:`blocks.s3.ObjectStore`) for ``bucket`` in this process (the drain
    registers the one built from its block, so in-process slots share its client)."""
    with _lock:
        _stores[bucket] = store


def _store(bucket: str) -> Any:
    with _lock:
        store = _stores.get(bucket)
    if store is None:
        from blocks.s3 import ObjectStore

        store = ObjectStore(bucket)  # aws_client("s3"): this worker's own AWS configuration
        with _lock:
            _stores.setdefault(bucket, store)
    return store


def _upload(run: TaskRun, path: str) -> bool:
    """Copy the log file to S3; False (and nothing raised) when it could not be written."""
    if not run.bucket:
        return False
    try:
        _store(run.bucket).upload(
            path, log_key(run.collection, run.task_id, run.sub_id), content_type="text/plain"
        )
        return True
    except Exception:  # a log upload must never decide a task's outcome
        return False


def _upload_loop() -> None:
    """Every second, upload the logs of running tasks that grew and are due (one thread a process)."""
    due: dict[tuple[str, str, int, str | None], float] = {}
    while True:
        time.sleep(1.0)
        now = time.monotonic()
        with _lock:
            running = list(_running.items())
        for key, entry in running:
            first = due.setdefault(key, now + entry.run.log_interval)
            if now < first:
                continue
            due[key] = now + entry.run.log_interval
            with contextlib.suppress(OSError):
                size = os.path.getsize(entry.path)
                if size > entry.uploaded_size and _upload(entry.run, entry.path):
                    entry.uploaded_size = size
        live = {key for key, _ in running}
        for key in list(due):
            if key not in live:
                del due[key]


def _ensure_uploader() -> None:
    global _uploader
    with _lock:
        if _uploader is None or not _uploader.is_alive():
            _uploader = threading.Thread(target=_upload_loop, name="task-log-uploader", daemon=True)
            _uploader.start()


def _kill(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def stop_owner(owner: str, reason: str = "stopped") -> int:
    """Kill every running task of drain ``owner`` in this process and refuse its queued ones; how many
    were killed. Called on every Dask worker through ``client.run`` (SIGTERM, time budget)."""
    with _lock:
        _stopped_owners.add(owner)
        victims = [entry for entry in _running.values() if entry.run.owner == owner]
        for entry in victims:
            entry.killed = reason
    for entry in victims:
        _kill(entry.process)
    return len(victims)


def kill_task(owner: str, collection: str, task_id: str, token: int, reason: str) -> bool:
    """Kill one running task (its lease was lost; every sub-task of a nested one); True when it
    was running here."""
    with _lock:
        victims = [
            entry
            for key, entry in _running.items()
            if key[:3] == (collection, task_id, token) and entry.run.owner == owner
        ]
        for entry in victims:
            entry.killed = reason
    for entry in victims:
        _kill(entry.process)
    return bool(victims)


def forget_owner(owner: str) -> None:
    """Drop ``owner`` from the stopped set (a drain that ended cleanly)."""
    with _lock:
        _stopped_owners.discard(owner)


def _tail(path: str) -> str:
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(max(0, size - ERROR_TAIL_BYTES))
        text = handle.read().decode("utf-8", errors="replace").strip()
        return text.splitlines()[-1] if text else ""
    return ""


def _start(command: str, environment: dict[str, str], output: int) -> subprocess.Popen:
    """Start ``command`` in a session of its own, output to the file ``output``: exec'd directly
    when bash would only exec it (:func:`direct_command`: no shell process to start, about half
    the CPU of a no-op task), else under ``bash -c``."""
    options: dict[str, Any] = {
        "stdin": subprocess.DEVNULL,
        "stdout": output,
        "stderr": subprocess.STDOUT,
        "start_new_session": True,
    }
    direct = direct_command(command, environment)
    if direct is not None:
        program, argv, env = direct
        with contextlib.suppress(OSError):  # bash reports what went wrong, as it would have
            return subprocess.Popen(argv, executable=program, env=env, **options)
    return subprocess.Popen(["bash", "-c", command], env=environment, **options)


# What a task's command never gets from the drain's environment: the platform's secrets (Prefect's
# API key or basic-auth string, database URLs with their passwords). A task is user code: it talks
# to its data, not to the orchestrator or the task store.
_PLATFORM_SECRETS = frozenset(
    {
        "PREFECT_API_KEY",
        "PREFECT_API_AUTH_STRING",
        "PREFECT_SERVER_API_AUTH_STRING",
        "PREFECT_API_DATABASE_CONNECTION_URL",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        "INTERLINKED_DATABASE_URL",
    }
)


def task_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a task's command starts from: ``environ`` without the platform's secrets."""
    return {key: value for key, value in environ.items() if key not in _PLATFORM_SECRETS}


def run_task(run: TaskRun, base_environment: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``run.command``; ``{"collection", "task_id", "token", "outcome", "exit_code", "error", "log_key",
    "seconds"}`` where outcome is ``done``, ``failed`` (non-zero exit, timeout, could not start) or
    ``stopped`` (killed by :func:`stop_owner` / :func:`kill_task`: the drain gives it back).
    ``base_environment``: this process's environment as already read (a chunk reads it once)."""
    result: dict[str, Any] = {
        "collection": run.collection,
        "task_id": run.task_id,
        "token": run.token,
        "outcome": "failed",
        "exit_code": None,
        "error": None,
        "log_key": None,
        "seconds": 0.0,
    }
    if run.nested:
        return run_nested(run)
    key = (run.collection, run.task_id, run.token, run.sub_id)
    with _lock:
        if run.owner in _stopped_owners:
            result.update(outcome="stopped", error="the drain stopped before the task started")
            return result
    environment = {
        **(task_environment(os.environ) if base_environment is None else base_environment),
        "TASK_ID": run.task_id,
        "COLLECTION": run.collection,
        "TASK_ATTRIBUTES": json.dumps(run.attributes, default=str),
    }
    if run.sub_id is not None:
        environment["NESTED_TASK_ID"] = run.sub_id
    descriptor, path = tempfile.mkstemp(prefix=f"task-{run.task_id[:40]}-", suffix=".log")
    started = time.monotonic()
    try:
        try:
            process = _start(run.command, environment, descriptor)
        except OSError as error:
            result["error"] = f"could not start the command: {error}"
            return result
        finally:
            os.close(descriptor)
        entry = _Running(run, process, path)
        with _lock:
            _running[key] = entry
            late_stop = run.owner in _stopped_owners
        if late_stop:
            entry.killed = "stopped"
            _kill(process)
        if run.log_interval and (run.timeout is None or run.timeout > run.log_interval):
            _ensure_uploader()
        timed_out = False
        try:
            code = process.wait(timeout=run.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill(process, signal.SIGTERM)
            try:
                code = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _kill(process)
                code = process.wait()
        # Anything the task left behind in its group (background children) goes with it.
        _kill(process)
        with _lock:
            _running.pop(key, None)
        result["seconds"] = time.monotonic() - started
        result["exit_code"] = code
        if entry.killed:
            result.update(outcome="stopped", error=f"killed by the drain ({entry.killed})")
        elif timed_out:
            result["error"] = f"timed out after {run.timeout:g} s (killed)"
        elif code != 0:
            last = _tail(path)
            result["error"] = f"exit code {code}" + (f": {last}" if last else "")
        else:
            result["outcome"] = "done"
        with contextlib.suppress(OSError):
            if os.path.getsize(path) > 0 and _upload(run, path):
                result["log_key"] = log_key(run.collection, run.task_id, run.sub_id)
        return result
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def nested_progress(owner: str) -> dict[str, dict[str, Any]]:
    """The sub-states of drain ``owner``'s nested tasks running in this process: ``{"collection/task_id":
    {"collection", "token", "nested": [...]}}`` (called on every worker through ``client.run``)."""
    with _lock:
        return {
            f"{collection}/{task_id}": {
                "collection": collection,
                "token": token,
                "nested": [dict(s) for s in entry["nested"]],
            }
            for (collection, task_id, token), entry in _nested.items()
            if entry["owner"] == owner
        }


def _sub_result(sub: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
    state = {"done": "done", "failed": "failed"}.get(outcome["outcome"], "todo")
    updated = {"id": sub["id"], "command": sub["command"], "state": state}
    for name in ("exit_code", "error", "log_key"):
        if outcome.get(name) is not None:
            updated[name] = outcome[name]
    if outcome.get("seconds"):
        updated["seconds"] = round(float(outcome["seconds"]), 3)
    return updated


def run_nested(run: TaskRun) -> dict[str, Any]:
    """Run a nested task: its sub-tasks not yet ``done`` in parallel (threads that each wait on one
    command's process), each with its own log ``logs/{task_id}/{sub_id}.log``; the result of
    :func:`run_task` plus ``"nested"``, every sub-task with its new state. ``done`` when all are,
    ``failed`` naming the sub-tasks that failed, ``stopped`` when the drain killed it (the sub-tasks
    that finished keep their state; the others are ``todo`` again)."""
    from concurrent.futures import ThreadPoolExecutor

    nests = [dict(sub) for sub in run.nested or []]
    key = (run.collection, run.task_id, run.token)
    state = {"owner": run.owner, "nested": nests}
    with _lock:
        _nested[key] = state
    started = time.monotonic()

    def one(index: int) -> None:
        sub = nests[index]
        sub_run = TaskRun(
            collection=run.collection,
            task_id=run.task_id,
            command=sub["command"],
            token=run.token,
            owner=run.owner,
            bucket=run.bucket,
            timeout=run.timeout,
            attributes=run.attributes,
            log_interval=run.log_interval,
            sub_id=sub["id"],
        )
        with _lock:
            nests[index] = {**sub, "state": "locked"}
        outcome = run_task(sub_run)
        with _lock:
            nests[index] = _sub_result(sub, outcome)
            nests[index]["_outcome"] = outcome["outcome"]

    pending = [i for i, sub in enumerate(nests) if sub.get("state") != "done"]
    try:
        if pending:
            workers = min(len(pending), run.nested_concurrency or len(pending))
            with ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix=f"nest-{run.task_id[:20]}"
            ) as pool:
                list(pool.map(one, pending))
    finally:
        with _lock:
            _nested.pop(key, None)
    outcomes = {sub.pop("_outcome", None) for sub in nests}
    failed = [sub for sub in nests if sub["state"] == "failed"]
    result: dict[str, Any] = {
        "collection": run.collection,
        "task_id": run.task_id,
        "token": run.token,
        "outcome": "done",
        "exit_code": 0,
        "error": None,
        "log_key": None,
        "seconds": time.monotonic() - started,
        "nested": nests,
    }
    if "stopped" in outcomes:
        result.update(outcome="stopped", exit_code=None, error="killed by the drain")
    elif failed:
        names = ", ".join(sub["id"] for sub in failed)
        first = failed[0].get("error") or "failed"
        result.update(
            outcome="failed",
            exit_code=1,
            error=f"{len(failed)} of {len(nests)} nested task(s) failed: {names} ({failed[0]['id']}: {first})",
        )
    return result


def run_tasks(runs: list[TaskRun]) -> list[dict[str, Any]]:
    """:func:`run_task` for each of ``runs``, one after the other (a drain's chunk of short tasks:
    one Dask task for several, since Dask's own cost per task is milliseconds). The environment
    is read once for the chunk (decoding ``os.environ`` was a tenth of a no-op task's CPU)."""
    base = task_environment(os.environ)
    return [run_task(run, base) for run in runs]
