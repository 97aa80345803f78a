"""The local AWS emulator: moto's server with durable state (``python -m interlinked.local.emulator``).

State lives in ``{state_dir}/aws`` (``state.pickle`` and ``blobs/``, see :mod:`.snapshot`); the
mechanism and the loss bound are described in :mod:`.server`. This module is what the stack
uses: :func:`command` (the part's argv), :func:`ready`, :func:`wipe_state`, and :func:`status`
/ :func:`flush` (wait until everything acknowledged so far is on disk). It imports no moto.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from interlinked.settings import Settings


def state_dir(settings: Settings) -> Path:
    """Where the emulator keeps its state."""
    return settings.state_dir / "aws"


def command(settings: Settings) -> list[str]:
    """The argv of the stack's ``aws`` part."""
    return [
        sys.executable,
        "-m",
        "interlinked.local.emulator",
        "--host",
        settings.host,
        "--port",
        str(settings.aws_port),
        "--state-dir",
        str(state_dir(settings)),
        *(["--enforce-iam"] if settings.emulator_enforce_iam else []),
    ]


def ready(settings: Settings, timeout: float = 2.0) -> bool:
    """moto's management API answers (only moto answers ``/moto-api/config``)."""
    try:
        with urllib.request.urlopen(
            f"{settings.aws_endpoint_url}/moto-api/config", timeout=timeout
        ) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _control(endpoint_url: str, path: str, *, method: str = "GET", timeout: float = 10.0) -> dict:
    request = urllib.request.Request(f"{endpoint_url.rstrip('/')}/_emulator/{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read().decode(errors="replace")
        raise RuntimeError(f"emulator at {endpoint_url}: {path} answered {error.code}: {body}") from error


def status(endpoint_url: str) -> dict:
    """The emulator's persistence counters: ``completed``, ``persisted``, pauses, last error."""
    return _control(endpoint_url, "status")


def flush(endpoint_url: str, timeout: float = 60.0) -> dict:
    """Snapshot now and return once every change answered before this call is on disk.

    Raises RuntimeError when that did not happen within ``timeout`` seconds.
    """
    return _control(endpoint_url, f"flush?timeout={timeout}", method="POST", timeout=timeout + 10)


def in_use(directory: Path) -> bool:
    """True while an emulator process (or its snapshot writer) holds ``directory``."""
    lock = directory / "lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def wipe_state(settings: Settings) -> bool:
    """Delete the emulator's saved state (the next start is empty); True if there was some.

    Refuses (RuntimeError) while an emulator is running on it: stop the stack first.
    """
    directory = state_dir(settings)
    if not directory.exists():
        return False
    if in_use(directory):
        raise RuntimeError(f"the emulator is still running on {directory}; run `interlinked down` first")
    shutil.rmtree(directory)
    return True


__all__ = ["command", "flush", "in_use", "ready", "state_dir", "status", "wipe_state"]
