"""The job channel: how user code that has no access to the job store still reports progress.

A script job's code runs with an allow-listed environment (no database URL, no Prefect API), so
:func:`flows.jobs.client.progress` cannot reach the store from there. The flow opens a channel: a
private directory (``INTERLINKED_JOB_CHANNEL``) holding ``job.json`` (the job as it was when the
script started, its checkpoint included) and ``progress.jsonl``, to which the script's
``progress()`` appends one line per report; a thread of the flow relays each line to the store for
*this* job's execution only — the script can report its own progress and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHANNEL_ENV = "INTERLINKED_JOB_CHANNEL"
JOB_FILE = "job.json"
PROGRESS_FILE = "progress.jsonl"


def channel_dir() -> Path | None:
    """This process's channel (None when it has access to the store instead)."""
    value = os.environ.get(CHANNEL_ENV)
    return Path(value) if value else None


def write_report(directory: Path, fraction: float, metrics: Any, checkpoint: Any) -> dict[str, Any]:
    """The script's side: append one report; returns the job JSON with it applied (for the caller)."""
    line = json.dumps({"progress": fraction, "metrics": metrics, "checkpoint": checkpoint})
    with (directory / PROGRESS_FILE).open("a") as handle:
        handle.write(line + "\n")
    job = read_job(directory)
    current = job.get("currentExecution") or {}
    current["progress"] = fraction
    if metrics:
        current["metrics"] = {**(current.get("metrics") or {}), **metrics}
    return job


def read_job(directory: Path) -> dict[str, Any]:
    return json.loads((directory / JOB_FILE).read_text())


@contextlib.contextmanager
def open_channel(
    job_id: str, execution_id: str, *, client: Any, interval: float = 0.5
) -> Iterator[dict[str, str]]:
    """The flow's side: yield the environment for the script; relay its reports until the block ends.

    ``client``: :mod:`flows.jobs.client` (passed in: that module reads the channel in scripts).
    """
    with tempfile.TemporaryDirectory(prefix="interlinked-channel-") as workdir:
        directory = Path(workdir)
        job = client.get(job_id)
        job["checkpoint"] = client.get_checkpoint(job_id)
        (directory / JOB_FILE).write_text(json.dumps(job))
        (directory / PROGRESS_FILE).touch()
        stop = threading.Event()
        offset = 0

        def relay() -> None:
            nonlocal offset
            with (directory / PROGRESS_FILE).open("rb") as handle:
                handle.seek(offset)
                while line := handle.readline():
                    if not line.endswith(b"\n"):
                        break  # half written: next time
                    offset += len(line)
                    try:
                        report = json.loads(line)
                        client.update_execution(
                            job_id,
                            execution_id,
                            progress=report.get("progress"),
                            metrics=report.get("metrics"),
                            checkpoint=report.get("checkpoint"),
                        )
                    except Exception:  # a bad report must not stop the job; the next one may do
                        continue

        def loop() -> None:
            while not stop.wait(interval):
                relay()

        thread = threading.Thread(target=loop, name="job-channel", daemon=True)
        thread.start()
        try:
            yield {
                CHANNEL_ENV: str(directory),
                client.JOB_ID_ENV: job_id,
                client.EXECUTION_ID_ENV: execution_id,
            }
        finally:
            stop.set()
            thread.join()
            relay()
