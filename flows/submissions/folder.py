"""The results folder of a submission job: live certificate, status files, end.txt, and the claim
that makes a results folder immutable.

Everything a job writes in the analysis bucket is under its own results folder. The claim is a
conditional write (``If-None-Match: *``) of ``logs/submission.json``, so two submissions can never
share a folder, even when they run at the same moment.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from blocks.s3 import ObjectStore, WriteConflict

CERTIFICATE = "logs/certificate.txt"
CLAIM = "logs/submission.json"
END = "process_results/end.txt"
RESULTS = "process_results/"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class JobFolder:
    """The job's results folder: a live certificate, per-dataset status files and end.txt."""

    def __init__(self, store: ObjectStore, prefix: str, header: dict[str, str]):
        self.store = store
        self.prefix = prefix
        self.header = dict(header)
        self.status = "RECEIVED"
        self.reason: str | None = None
        self._lines: list[str] = []
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        return self.store.uri(self.prefix)

    def put(self, relative: str, body: str | bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.store.put(self.prefix + relative, body, content_type=content_type)

    def put_json(self, relative: str, value: Any) -> None:
        self.put(relative, json.dumps(value, indent=2, default=str) + "\n", "application/json")

    def certificate_text(self) -> str:
        rows = [
            "interlinked submission certificate",
            "",
            *(f"{name:<12} {value}" for name, value in self.header.items()),
            f"{'status':<12} {self.status}",
        ]
        if self.reason:
            rows.append(f"{'reason':<12} {self.reason}")
        rows += [f"{'updated':<12} {now()}", "", "log:", *self._lines]
        return "\n".join(rows) + "\n"

    def log(self, word: str, text: str, *, status: str | None = None, reason: str | None = None) -> None:
        """Add a line to the certificate (and change its status) and upload it at once."""
        with self._lock:
            self._lines.append(f"{now()}  {word:<10} {text}")
            if status:
                self.status = status
            if reason is not None:
                self.reason = reason
            text_now = self.certificate_text()
            self.put(CERTIFICATE, text_now)

    def end(self, status: str, summary: str) -> None:
        """``process_results/end.txt``: always the last object a job writes."""
        self.put(END, f"{status}\n{summary}\nfinished {now()}\n")


# ---- claim ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    ours: bool  # the folder belongs to this submission (same key, ETag and version)
    record: dict[str, Any]  # the claim as stored
    fresh: bool = False  # claimed just now (False: claimed earlier, by this or another run)


def claim_folder(store: ObjectStore, prefix: str, identity: dict[str, Any]) -> Claim:
    """Claim ``prefix`` for this submission. A folder already claimed by the same submission (same
    key, ETag and version: a re-run) stays ours; by any other, it is not."""
    record = {**identity, "claimed_at": now()}
    try:
        store.put_json(prefix + CLAIM, record, indent=2, if_none_match=True)
    except WriteConflict:
        existing = store.read_json(prefix + CLAIM)
        same = all(existing.get(name) == identity.get(name) for name in ("key", "etag", "version_id"))
        return Claim(same, existing)
    return Claim(True, record, fresh=True)


def take_over_claim(store: ObjectStore, prefix: str, record: dict[str, Any], flow_run_id: str | None) -> None:
    """Record that this run now processes the submission (its previous run ended without end.txt)."""
    updated = {
        **record,
        "flow_run_id": flow_run_id,
        "taken_over_at": now(),
        "previous_flow_run_id": record.get("flow_run_id"),
    }
    store.put_json(prefix + CLAIM, updated, indent=2)
