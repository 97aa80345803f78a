"""Heartbeat files of the long-running services (the analysis service, the event bridge).

A service rewrites its status file every few seconds (atomically: readers never see half a file)
with at least ``ready``, ``pid``, ``process_started`` and ``heartbeat``; :func:`service_ready` is
the one readiness check the local stack uses: ready, alive (the pid is the same process, not a
recycled one) and fresh.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

_STARTED: dict[int, float] = {}


def process_started() -> float:
    """When the calling process started (what tells it from a recycled pid), read once per process:
    it never changes, and reading ``/proc`` on every heartbeat can fail under load."""
    pid = os.getpid()
    if pid not in _STARTED:
        import psutil

        _STARTED[pid] = psutil.Process(pid).create_time()
    return _STARTED[pid]


def heartbeat(*, ready: bool) -> dict[str, Any]:
    """The fields every status file carries, for the calling process."""
    return {
        "ready": ready,
        "pid": os.getpid(),
        "process_started": process_started(),
        "heartbeat": time.time(),
    }


def write_status(path: Path | str, status: dict[str, Any]) -> None:
    """Replace the status file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(status, indent=2, default=str))
    os.replace(temporary, path)


def read_status(path: Path | str) -> dict[str, Any] | None:
    try:
        status = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def process_alive(pid: Any, started: Any) -> bool:
    """``pid`` is a live process that started at ``started`` (a recycled pid does not count)."""
    try:
        import psutil

        process = psutil.Process(int(pid))
        return (
            abs(process.create_time() - float(started or 0)) < 1.0
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except Exception:
        return False


def service_ready(path: Path | str, *, pid: int | None = None, max_age: float = 15.0) -> bool:
    """Whether the service writing ``path`` is up: ready, alive, and its heartbeat fresh.

    ``pid`` (e.g. the pid the local stack recorded) must match when given.
    """
    status = read_status(path)
    if not status or not status.get("ready"):
        return False
    if pid is not None and status.get("pid") != pid:
        return False
    if time.time() - float(status.get("heartbeat", 0)) > max_age:
        return False
    return process_alive(status.get("pid"), status.get("process_started"))
