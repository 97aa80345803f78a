"""A pre-imported process that forks flow-run processes on request (the warm pool's fork server).

Importing Prefect, boto3 and the flow modules takes seconds; a fork of a process that already
imported them takes milliseconds. The zygote imports everything once, runs no threads and no event
loop (so forking it is safe), and forks one child per flow run. The child becomes exactly what
``python -m prefect.engine`` would have been: it runs the engine's ``__main__`` with the flow run's
environment, in its own session so that cancellation can stop its whole process group.

Protocol (JSON lines): requests on stdin ``{"op": "spawn", "key", "flow_run_id", "env", "cwd"}``
(optionally ``"prefetched"``: objects the worker read for the run's engine, :func:`use_prefetched`;
``"relay_suspension": true``: the run learns of its suspension from the worker, :class:`SuspensionRelay`),
``{"op": "notify", "pid", "message"}`` (a line for that run's notification pipe) and
``{"op": "retire"}`` (accept no more spawns; exit once every forked run has exited);
replies on stdout ``{"op": "ready", "fingerprint", ...}``, ``{"op": "spawned", "key", "pid"}``,
``{"op": "exited", "pid", "code"}``, ``{"op": "error", "key", "message"}``. Children write their
output to the zygote's stderr, never to the protocol pipe.

The ready reply carries the fingerprint of the code the zygote imported (:func:`code_fingerprint`):
the worker compares it with the code on disk before each run and starts a new zygote when the
deployed code changed (`interlinked up` redeploys changed flows), so no run gets stale code.

Usage: ``python -m interlinked.workers.zygote [MODULE ...]`` (modules to pre-import).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import importlib.util
import json
import os
import select
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_PRELOAD = (
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.deployments.steps",
    "prefect_aws",
    "boto3",
    # Imported lazily by every run (anyio picks its backend on first use, rich builds its emoji
    # table on the first log line, httpx encodes hosts with idna); importing them here spares each
    # child the work.
    "anyio._backends._asyncio",
    "anyio._core._sockets",
    "anyio._core._streams",
    "anyio.streams.memory",
    "anyio.streams.stapled",
    "anyio.streams.tls",
    "encodings.idna",
    "rich._emoji_codes",
    "rich._emoji_replace",
)


# The packages whose code the zygote pre-imports (flows, and what they import of ours); a change to
# any of their files makes the worker restart its zygote. INTERLINKED_WARM_CODE_PACKAGES changes it.
DEFAULT_CODE_PACKAGES = ("flows", "analyses", "blocks")


def code_roots() -> list[str]:
    """The directories of the code packages (found without importing them)."""
    names = os.environ.get("INTERLINKED_WARM_CODE_PACKAGES") or ",".join(DEFAULT_CODE_PACKAGES)
    roots = []
    for name in (part.strip() for part in names.split(",")):
        if not name:
            continue
        with contextlib.suppress(ImportError, ValueError):
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.submodule_search_locations:
                roots.extend(spec.submodule_search_locations)
    return sorted(set(roots))


def code_fingerprint(roots: list[str] | None = None) -> str:
    """A digest of every ``.py`` file under ``roots`` (path, size, modification time): it changes
    when a file is edited, added or removed. Stat calls only, so the worker can afford it per run."""
    digest = hashlib.sha256()
    for root in roots if roots is not None else code_roots():
        for directory, subdirectories, files in os.walk(root):
            subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(directory, name)
                with contextlib.suppress(OSError):
                    stat = os.stat(path)
                    digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def preload(modules: list[str]) -> dict[str, str]:
    """Import ``modules``; return the ones that failed with the reason (they just stay cold)."""
    failed = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as error:  # a broken optional module must not take the pool down
            failed[name] = f"{type(error).__name__}: {error}"
    return failed


class _CachedVerifiedContexts:
    """Stands in for the ``ssl`` module inside Prefect's client module.

    Every Prefect client builds a verifying TLS context from the CA bundle (~18 ms of CPU to parse
    certifi's file) even for a plain-HTTP API, and a flow run builds several. A verifying context
    built from a CA file is never modified afterwards, so the fork server builds it once and every
    child reuses it; any other use (an insecure context that Prefect then changes) gets a new one.
    """

    def __init__(self, module: Any):
        self._module = module
        self._verified: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def create_default_context(self, purpose: Any = None, *, cafile=None, capath=None, cadata=None):
        purpose = purpose if purpose is not None else self._module.Purpose.SERVER_AUTH
        if cafile and capath is None and cadata is None and purpose == self._module.Purpose.SERVER_AUTH:
            if cafile not in self._verified:
                self._verified[cafile] = self._module.create_default_context(purpose, cafile=cafile)
            return self._verified[cafile]
        return self._module.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)


def _reuse_preloaded_flow_modules(preloaded: list[str]) -> None:
    """Let Prefect find a deployment's flow in the module the fork server already imported.

    A deployment's entrypoint is a file path (``flows/x/flow.py:fn``); Prefect executes that file
    anew in every run (``load_script_as_module``), re-creating every flow and task object of the
    module. For a file that is one of the pre-imported modules, the child gets that module instead:
    the same code, already executed once, shared copy-on-write. Any other file loads as before.
    """
    from pathlib import Path

    from prefect.utilities import importtools

    by_file = {}
    for name in preloaded:
        module = sys.modules.get(name)
        location = getattr(module, "__file__", None)
        if location:
            by_file[str(Path(location).resolve())] = module
    original = importtools.load_script_as_module

    def load_script_as_module(path: str):
        module = by_file.get(str(Path(path).resolve()))
        return module if module is not None else original(path)

    importtools.load_script_as_module = load_script_as_module


def _check_server_version_once() -> None:
    """Make the client/server version check of every run's events client once, here.

    Prefect checks the server's version once per process and per API URL, with a TLS context of
    its own: every child repeated it before its first event. The result is cached by Prefect; the
    children inherit the cache (a run with another API URL still checks its own). Nothing is cached
    when the server cannot be reached, so a child then checks as before.
    """
    import asyncio
    import logging

    from prefect._internal import version_checking
    from prefect.settings import get_current_settings

    api_url = get_current_settings().api.url
    if not api_url:
        return
    with contextlib.suppress(Exception):
        asyncio.run(
            version_checking.check_server_version(
                str(api_url), logging.getLogger("interlinked.zygote"), raise_on_error=False
            )
        )
    # The engine's own client checks too, keyed by its base URL (with a trailing slash): warm that.
    from prefect.client.orchestration import get_client

    with contextlib.suppress(Exception), get_client(sync_client=True) as client:
        client.raise_for_api_version_mismatch_once()


def _rebuild(model: Any) -> None:
    model.model_rebuild(raise_errors=False)


def complete_models() -> int:
    """Complete, here, the pydantic models Prefect left to complete on first use; how many.

    Prefect's models refer to each other by name, so pydantic finishes building most of them (their
    validators and serialisers) only when one is first used: ~280 after importing Prefect. A forked
    run inherits none of that first use and redid it for every model it touched (its flow run, the
    suspension observer's event filters, log and state payloads): a tenth of a trivial run's CPU.
    A model that cannot be completed yet stays as it was and completes on use, as before.
    """
    from pydantic import BaseModel

    pending: list[type] = [BaseModel]
    seen: set[type] = set()
    completed = 0
    while pending:
        for model in pending.pop().__subclasses__():
            if model in seen:
                continue
            seen.add(model)
            pending.append(model)
            if getattr(model, "__pydantic_complete__", True):
                continue
            with contextlib.suppress(Exception):
                _rebuild(model)
            completed += bool(getattr(model, "__pydantic_complete__", False))
    return completed


class _EventsWorkerClient:
    """An events client for one emit that hands the event to the process's events worker.

    Prefect's deployment steps (the ``pull`` steps every deployed run executes first) report each
    step with a client of their own: a websocket opened, used once and closed, before the engine
    opens the websocket its events worker keeps for the run. Both connect and authenticate on the
    server. Here the step's event goes through the events worker's connection instead; the worker
    sends it like every other event of the run, and the run's exit hooks flush it.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    async def __aenter__(self) -> _EventsWorkerClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        return None

    async def emit(self, event: Any) -> None:
        from prefect.events.utilities import should_emit_events
        from prefect.events.worker import EventsWorker

        if should_emit_events():
            EventsWorker.instance().send(event)


def _share_the_events_connection() -> bool:
    """Deployment steps emit through the events worker (see :class:`_EventsWorkerClient`)."""
    try:
        from prefect.deployments.steps import core
    except ImportError:
        return False
    if not hasattr(core, "get_events_client"):
        return False
    core.get_events_client = _EventsWorkerClient
    return True


def warm_prefect(preloaded: list[str]) -> None:
    """Work every flow run would repeat, done once in the fork server (see the helpers)."""
    import certifi
    import prefect.client.orchestration as orchestration
    from prefect._internal import version_checking

    contexts = _CachedVerifiedContexts(orchestration.ssl)
    orchestration.ssl = contexts
    version_checking.ssl = contexts
    contexts.create_default_context(cafile=certifi.where())  # the context every client asks for
    _check_server_version_once()
    _reuse_preloaded_flow_modules(preloaded)
    _share_the_events_connection()
    complete_models()


# What this fork server's Prefect settings were built from (see settings_inputs; set by main()).
_SETTINGS_INPUTS: tuple | None = None


def settings_inputs(environ: Mapping[str, str], cwd: str) -> tuple | None:
    """What Prefect builds its settings from, besides its defaults; None when that cannot be told.

    Prefect reads ``PREFECT_*`` variables (case-insensitive; ``PREFECT__*`` names are per-run
    identifiers, never settings: a setting's name cannot start with ``_``), the working directory's
    ``.env``, ``prefect.toml`` and ``[tool.prefect]`` of ``pyproject.toml``, and the profiles file.
    A child whose inputs equal the fork server's has the fork server's settings already; any other
    builds its own (a job variable ``env`` with a ``PREFECT_`` setting, a working directory with a
    ``prefect.toml``, a profile edited since the worker started).
    """
    import tomllib

    from prefect.settings import get_current_settings

    variables = sorted(
        (name.upper(), value)
        for name, value in environ.items()
        if name.upper().startswith("PREFECT_") and not name.startswith("PREFECT__")
    )
    files: list[Any] = []
    try:
        profiles = get_current_settings().profiles_path
        for path in (Path(cwd, ".env"), Path(cwd, "prefect.toml"), Path(profiles) if profiles else None):
            files.append(path.read_bytes() if path is not None and path.is_file() else None)
        pyproject = Path(cwd, "pyproject.toml")
        table = (
            tomllib.loads(pyproject.read_text()).get("tool", {}).get("prefect")
            if pyproject.is_file()
            else None
        )
    except (OSError, ValueError):
        return None
    return (tuple(variables), tuple(files), json.dumps(table, sort_keys=True, default=str))


def remember_settings_inputs() -> None:
    """In the fork server: build Prefect's settings from its inputs now, and remember those inputs."""
    global _SETTINGS_INPUTS
    from prefect.context import refresh_global_settings_context

    _SETTINGS_INPUTS = settings_inputs(os.environ, os.getcwd())
    refresh_global_settings_context()


def adopt_settings(cwd: str) -> bool:
    """In a forked child: Prefect's settings for this run's environment and working directory.

    Prefect read its settings when the fork server imported it. They are built again (about a fifth
    of a trivial run's CPU) only when this run's inputs differ from the fork server's. True when
    they were built again.
    """
    if _SETTINGS_INPUTS is not None and settings_inputs(os.environ, cwd) == _SETTINGS_INPUTS:
        return False
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()
    return True


# The flow-run processes this zygote forked (only their exits are reported to the worker).
_children: set[int] = set()
# The write end of each forked run's notification pipe (pid → fd); closed when the run exits.
_notify_fds: dict[int, int] = {}
# prctl(2) option: orphaned descendants are re-parented to this process instead of init.
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make the zygote the subreaper of its runs' descendants (Linux).

    Flow runs and the scripts they start call ``setsid``; when a run process dies before its script,
    the script would be re-parented to init and lost to everything that stops the stack's process
    tree (`interlinked down`). As a subreaper, the zygote keeps them in its tree (and reaps them).
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = _notify_fds.pop(pid, None)
        if fd is not None:
            os.close(fd)
        if pid in _children:  # an adopted orphan is reaped silently: the worker never knew it
            _children.discard(pid)
            _reply({"op": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)})


def _notify(request: dict[str, Any]) -> None:
    """Write ``request["message"]`` as one line to the notification pipe of run ``request["pid"]``.

    The pipe is non-blocking: a run that stopped reading (its buffer of 64 KiB full) loses the line,
    and the worker hears why, instead of the fork server hanging on it."""
    key = f"notify:{request.get('pid')}"
    fd = _notify_fds.get(request.get("pid"))  # type: ignore[arg-type]
    if fd is None:
        _reply({"op": "error", "key": key, "message": f"no live run with pid {request.get('pid')!r}"})
        return
    try:
        os.write(fd, (json.dumps(request.get("message")) + "\n").encode())
    except OSError as error:  # BlockingIOError (buffer full), BrokenPipeError (the run is ending)
        _reply({"op": "error", "key": key, "message": f"notification not delivered: {error}"})


def serve() -> dict[str, Any] | None:
    """Answer requests until stdin closes. Returns the request in a forked child, None in the zygote."""
    stdin = sys.stdin.buffer
    retired = False
    while True:
        readable, _, _ = select.select([stdin], [], [], 0.05)
        _reap()
        if retired and not _children:
            return None  # replaced by a zygote with newer code, and its last run has ended
        if not readable:
            continue
        line = stdin.readline()
        if not line:
            return None  # the worker went away
        try:
            request = json.loads(line)
        except ValueError:
            _reply({"op": "error", "key": None, "message": f"not JSON: {line[:200]!r}"})
            continue
        if request.get("op") == "retire":
            retired = True
            continue
        if request.get("op") == "notify":  # a retired fork server still serves its runs in flight
            _notify(request)
            continue
        if retired:
            _reply({"op": "error", "key": request.get("key"), "message": "this fork server is retired"})
            continue
        if request.get("op") != "spawn":
            _reply({"op": "error", "key": request.get("key"), "message": f"unknown op {request.get('op')!r}"})
            continue
        read_fd, write_fd = os.pipe()  # the run's notification pipe (not inherited by its exec()s)
        try:
            pid = os.fork()
        except OSError as error:
            os.close(read_fd)
            os.close(write_fd)
            _reply({"op": "error", "key": request.get("key"), "message": f"fork failed: {error}"})
            continue
        if pid == 0:
            os.close(write_fd)
            for fd in _notify_fds.values():  # the other runs' pipes are the fork server's business
                os.close(fd)
            _notify_fds.clear()
            request["notify_fd"] = read_fd
            return request
        os.close(read_fd)
        os.set_blocking(write_fd, False)
        _notify_fds[pid] = write_fd
        _children.add(pid)
        _reply({"op": "spawned", "key": request.get("key"), "pid": pid})


def use_prefetched(prefetched: dict[str, Any] | None) -> list[str]:
    """In a forked child: answer the engine's first reads from what the worker sent.

    ``prefetched`` maps a kind to the object as the API returned it: ``deployment``, ``flow``,
    ``work-queue``, ``work-pool`` (Prefect's related-resource cache for the run's events, and the
    deployment for loading the flow, once: later reads by the flow's own code ask the server) and
    ``result-storage`` (the server's default result storage, read twice per run otherwise).
    Anything missing, or a Prefect without these internals, is read from the server as before.
    Returns the kinds used.
    """
    if not prefetched:
        return []
    try:
        from prefect import results
        from prefect.client.orchestration import PrefectClient
        from prefect.client.schemas.objects import Flow, WorkPool, WorkQueue
        from prefect.client.schemas.responses import DeploymentResponse
        from prefect.events import related
        from prefect.types._datetime import now
    except ImportError:
        return []
    used = []
    models = {"deployment": DeploymentResponse, "flow": Flow, "work-queue": WorkQueue, "work-pool": WorkPool}
    objects = {}
    for kind, model in models.items():
        if kind not in prefetched:
            continue
        try:
            found = model.model_validate(prefetched[kind])
        except ValueError:
            continue
        object_id = found.name if kind == "work-pool" else found.id
        related.RESOURCE_CACHE[f"{kind}.{object_id}"] = ({"kind": kind, "object": found}, now("UTC"))
        objects[kind] = found
        used.append(kind)
    deployment = objects.get("deployment")
    if deployment is not None:
        original_read = PrefectClient.read_deployment
        unused = [deployment]

        async def read_deployment(self, deployment_id, *args, **kwargs):
            if unused and str(deployment_id) == str(unused[0].id) and not args and not kwargs:
                return unused.pop()
            return await original_read(self, deployment_id, *args, **kwargs)

        PrefectClient.read_deployment = read_deployment
    storage = prefetched.get("result-storage")
    if isinstance(storage, dict) and "default_result_storage_block_id" in storage:
        from uuid import UUID

        block_id = storage["default_result_storage_block_id"]
        block_id = UUID(block_id) if block_id else None

        async def aread_block_id():
            return block_id

        results._read_server_default_result_storage_block_id = lambda: block_id
        results._aread_server_default_result_storage_block_id = aread_block_id
        used.append("result-storage")
    return used


class SuspensionRelay:
    """A run's watch for its own suspension, fed by the worker instead of a websocket of its own.

    Prefect's engine watches whether its flow run gets suspended from outside
    (``suspend_flow_run(flow_run_id=...)``, the UI) with an observer per run: a thread with an event
    loop, a websocket subscription to the server's event stream (which makes the server query its
    events table for a backfill) and a read of the flow run, all before the flow may start: work
    on the server, which is what a burst waits on. Here the worker, which follows
    the event stream for all its runs anyway, confirms a ``Suspended`` state (the event, or its
    periodic read of its live runs) and sends it down the run's notification pipe; a thread that
    blocks on that pipe hands it to the engine, which stops at its next orchestration step, as
    with Prefect's observer. Only the run's own flow run is relayed; any other flow run the process
    observes gets Prefect's observer.
    """

    def __init__(self, flow_run_id: str, fd: int):
        from uuid import UUID

        self.flow_run_id = UUID(flow_run_id)
        self._file = os.fdopen(fd, "rb", buffering=0)
        self._thread: Any = None
        self._request: Any = None

    def install(self) -> bool:
        """Stand in for Prefect's observer in its flow engine; False where this Prefect has none."""
        try:
            import prefect.flow_engine as flow_engine
        except ImportError:
            return False
        original = getattr(flow_engine, "observe_flow_run_suspension", None)
        if original is None:
            return False
        relay = self

        @contextlib.contextmanager
        def observe_flow_run_suspension(flow_run_id: Any, suspension_request: Any, *args: Any, **kwargs: Any):
            if flow_run_id != relay.flow_run_id:
                with original(flow_run_id, suspension_request, *args, **kwargs):
                    yield
                return
            relay.attach(suspension_request)
            try:
                yield
            finally:
                relay._request = None

        flow_engine.observe_flow_run_suspension = observe_flow_run_suspension
        return True

    def attach(self, suspension_request: Any) -> None:
        import threading

        self._request = suspension_request
        if self._thread is None:
            self._thread = threading.Thread(target=self._read, name="suspension-relay", daemon=True)
            self._thread.start()

    def deliver(self, message: dict[str, Any]) -> bool:
        """Hand a ``{"op": "suspended", "state": ...}`` message to the engine; True when it took it."""
        if message.get("op") != "suspended":
            return False
        from prefect._flow_run_suspension import (
            is_suspended_flow_run_state,
            mark_flow_run_suspension_requested,
        )
        from prefect.client.schemas.objects import State

        state = State.model_validate(message.get("state"))
        if not is_suspended_flow_run_state(state):
            return False
        if mark_flow_run_suspension_requested(self.flow_run_id, state):
            return True
        request = self._request
        if request is None:
            return False
        request.mark_requested(state)
        return True

    def _read(self) -> None:
        for line in self._file:
            with contextlib.suppress(Exception):  # a garbled line is dropped, the next one counts
                self.deliver(json.loads(line))


def run_child(request: dict[str, Any]) -> int:
    """In the forked child: become `python -m prefect.engine FLOW_RUN_ID`."""
    import random
    import runpy

    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # the protocol pipe belongs to the zygote
    random.seed()  # never share the zygote's random state between runs
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({key: value for key, value in request["env"].items() if value is not None})
    adopt_settings(os.getcwd())
    use_prefetched(request.get("prefetched"))
    notify_fd = request.get("notify_fd")
    if request.get("relay_suspension") and notify_fd is not None:
        SuspensionRelay(request["flow_run_id"], notify_fd).install()
    elif notify_fd is not None:
        os.close(notify_fd)
    sys.argv = ["prefect.engine", request["flow_run_id"]]
    try:
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def main(argv: list[str]) -> int:
    started = time.monotonic()
    become_subreaper()
    # Before importing: a file changed while the zygote imports it then counts as changed.
    fingerprint = code_fingerprint()
    failed = preload([*DEFAULT_PRELOAD, *argv])
    warm_prefect([name for name in argv if name not in failed])
    remember_settings_inputs()
    _reply(
        {
            "op": "ready",
            "pid": os.getpid(),
            "seconds": round(time.monotonic() - started, 3),
            "failed": failed,
            "fingerprint": fingerprint,
        }
    )
    # Everything imported so far lives as long as the zygote: keep it out of the children's garbage
    # collections (which would otherwise walk, and so copy, every inherited page).
    gc.freeze()
    request = serve()
    if request is None:
        return 0
    # Only the forked child gets here.
    code = run_child(request)
    _exit_child(code)
    return code


def _exit_child(code: int) -> None:
    """End a flow-run child as the interpreter would, without tearing down the inherited heap.

    Python's own shutdown runs the exit hooks (Prefect's flush the run's logs and events), then
    frees every module and object, most of them inherited from the zygote: that took most of a
    trivial run's CPU. The hooks are run here, in the interpreter's order, then the process ends.
    """
    import atexit
    import threading

    try:
        threading._shutdown()  # joins non-daemon threads and runs threading's exit callbacks
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
