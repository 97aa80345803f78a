"""A pre-imported process that forks flow-run processes on request (the warm pool's fork server).

Importing Prefect, boto3 and the flow modules takes seconds; a fork of a process that already
imported them takes milliseconds. The zygote imports everything once, runs no threads and no event
loop (so forking it is safe), and forks one child per flow run. The child becomes exactly what
``python -m prefect.engine`` would have been: it runs the engine's ``__main__`` with the flow run's
environment, in its own session so that cancellation can stop its whole process group.

Protocol (JSON lines): requests on stdin ``{"op": "spawn", "key", "flow_run_id", "env", "cwd"}``;
replies on stdout ``{"op": "ready"}``, ``{"op": "spawned", "key", "pid"}``,
``{"op": "exited", "pid", "code"}``, ``{"op": "error", "key", "message"}``. Children write their
output to the zygote's stderr, never to the protocol pipe.

Usage: ``python -m interlinked.workers.zygote [MODULE ...]`` (modules to pre-import).
"""

from __future__ import annotations

import importlib
import json
import os
import select
import sys
import time
from typing import Any

DEFAULT_PRELOAD = ("prefect.engine", "prefect.flow_engine", "prefect.deployments.steps", "prefect_aws", "boto3")


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


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _reply({"op": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)})


def serve() -> dict[str, Any] | None:
    """Answer requests until stdin closes. Returns the request in a forked child, None in the zygote."""
    stdin = sys.stdin.buffer
    while True:
        readable, _, _ = select.select([stdin], [], [], 0.05)
        _reap()
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
        if request.get("op") != "spawn":
            _reply({"op": "error", "key": request.get("key"), "message": f"unknown op {request.get('op')!r}"})
            continue
        try:
            pid = os.fork()
        except OSError as error:
            _reply({"op": "error", "key": request.get("key"), "message": f"fork failed: {error}"})
            continue
        if pid == 0:
            return request
        _reply({"op": "spawned", "key": request.get("key"), "pid": pid})


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
    # Prefect read its settings when the zygote imported it; re-read them from this run's environment.
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()
    sys.argv = ["prefect.engine", request["flow_run_id"]]
    try:
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def main(argv: list[str]) -> int:
    started = time.monotonic()
    failed = preload([*DEFAULT_PRELOAD, *argv])
    _reply({"op": "ready", "pid": os.getpid(), "seconds": round(time.monotonic() - started, 3), "failed": failed})
    request = serve()
    if request is None:
        return 0
    # Only the forked child gets here; returning lets the interpreter shut down normally so that
    # Prefect's exit hooks flush the run's logs and events.
    return run_child(request)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
