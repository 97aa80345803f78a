"""The results folder of a submission job: live certificate, status files, end.txt, and the claim
that says which upload of a submit file the folder belongs to.

Everything a job writes in the analysis bucket is under its own results folder. The claim is a
conditional write (``If-None-Match: *``) of ``logs/submission.json``, so two submissions never
run in one folder at the same moment. A later upload with the same timestamp re-runs there once
the earlier job has ended, as on NeuroCAAS; the earlier job's files are moved aside, not lost
(:func:`supersede`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from blocks.s3 import ObjectStore, WriteConflict

CERTIFICATE = "logs/certificate.txt"
CLAIM = "logs/submission.json"
END = "process_results/end.txt"
RESULTS = "process_results/"

# The certificate's layout, as NeuroCAAS's job manager writes it (cunningham-lab/neurocaas,
# ncap_iac/protocols/utilsparam/s3.py, JobLogger_demo) and its interface client parses it
# (cellistigs/neurocaas_interface, neurocaas_interface/log.py, NeuroCAASCertificate): a monitoring
# block of ``DATANAME: … | STATUS: … | TIME: … | LAST COMMAND: … | CPU_USAGE: …`` rows between
# exactly two ``================`` lines, then the job manager's log, each line ending in a tab and
# ``[+h:mm:ss.cc]`` (time since the request).
DIVIDER = "================"
MONITOR_HEAD = "PER ENVIRONMENT MONITORING:"
MONITOR_TAIL = (
    "Once jobs start, these logs will be updated regularly. Allow some time [~1 minute] after all jobs "
    "finish for results to appear.",
    "For more information, see DATASET_NAME: files for stdout and stderr output.",
    " ",
    "++++++++++++++++++",
    " ",
    "JOB MANAGER SETUP LOG:",
)
INDENT = "        "
ROW = "DATANAME: {n} | STATUS: {s} | TIME: {t} | LAST COMMAND: {r} | CPU_USAGE: {u}"
# NeuroCAAS's per-dataset status words.
INITIALIZING, IN_PROGRESS, SUCCESS, FAILED = "INITIALIZING", "IN PROGRESS", "SUCCESS", "FAILED"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def neurocaas_time(moment: datetime | None = None) -> str:
    """``2021-05-11T16:01:29Z``: how NeuroCAAS's status files and usage logs write a time."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _elapsed(seconds: float) -> str:
    hours, rest = divmod(max(0.0, seconds), 3600)
    minutes, rest = divmod(rest, 60)
    return f"{int(hours)}:{int(minutes):02d}:{rest:05.2f}"


def _cell(value: Any) -> str:
    """One value of a monitoring row: one line, no ``|`` (the row's separator)."""
    text = str(value).translate({ord("\n"): " ", ord("\r"): " ", ord("\t"): " ", ord("|"): "/"})
    return (text.strip() and text) or "N/A"


class JobFolder:
    """The job's results folder: a live certificate in NeuroCAAS's format, per-dataset status
    files and end.txt.

    ``status`` is the job's own state (VALIDATING, WAITING, RUNNING, then COMPLETED, PARTIAL,
    FAILED or REFUSED); it is written in the log lines and in end.txt."""

    def __init__(self, store: ObjectStore, prefix: str, *, job_id: str, version: str = "interlinked"):
        self.store = store
        self.prefix = prefix
        self.status = "RECEIVED"
        self.reason: str | None = None
        self._clock = time.monotonic()
        self._rows: dict[str, str] = {}  # dataset label → its monitoring row
        self._lines: list[str] = []
        self._lock = threading.Lock()
        started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-4]
        self.line(f"REQUEST START TIME: {started} (GMT)", upload=False)
        self.line(f"ANALYSIS VERSION ID: {version}", upload=False)
        self.line(f"JOB ID: {job_id}", upload=False)
        self._lines.append("\n ")
        self.line("[Job Manager] Detected new job: starting up.", upload=False)

    @property
    def uri(self) -> str:
        return self.store.uri(self.prefix)

    def put(self, relative: str, body: str | bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.store.put(self.prefix + relative, body, content_type=content_type)

    def put_json(self, relative: str, value: Any) -> None:
        self.put(relative, json.dumps(value, indent=4, default=str) + "\n", "application/json")

    def certificate_text(self) -> str:
        rows = [MONITOR_HEAD, DIVIDER, *self._rows.values(), DIVIDER, *MONITOR_TAIL, *self._lines]
        return "\n".join(rows)

    def _upload(self) -> None:
        self.put(CERTIFICATE, self.certificate_text())

    def line(
        self, text: str, *, internal: bool = False, status: str | None = None, upload: bool = True
    ) -> None:
        """Append a job-manager log line (``internal``: indented, as NeuroCAAS's ``[Internal (…)]``
        lines are), optionally change the job's status, and upload the certificate at once."""
        with self._lock:
            stamp = _elapsed(time.monotonic() - self._clock)
            self._lines.append(f"{INDENT if internal else ''}{text}\t [+{stamp}]")
            if status:
                self.status = status
            if upload:
                self._upload()

    def step(self, number: int, name: str, outcome: str = "DONE", *, status: str | None = None) -> None:
        """``[Job Manager] STEP n/4 (name): DONE`` — NeuroCAAS's four job-manager steps."""
        self.line(f"[Job Manager] STEP {number}/4 ({name}): {outcome}", status=status)

    def monitor(
        self, label: str, dataname: str, status: str, last: str, cpu: Any = "N/A", *, upload: bool = True
    ) -> None:
        """Set the monitoring row of one dataset run (added at the end of the block if new)."""
        row = ROW.format(
            n=_cell(dataname),
            s=status,
            t=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
            r=_cell(last),
            u=_cell(cpu),
        )
        with self._lock:
            self._rows[label] = row
            if upload:
                self._upload()

    def refuse(self, number: int, name: str, reason: str) -> None:
        with self._lock:
            self.reason = reason
        self.step(number, name, f"REFUSED. {_cell(reason)}", status="REFUSED")
        self.line("[Job Manager] Shutting down job.")

    def end(self, status: str, summary: str) -> None:
        """``process_results/end.txt``: always the last object a job writes (clients wait for it)."""
        self.put(END, f"{status}\n{summary}\nfinished {now()}\n")


# ---- claim ------------------------------------------------------------------------------------------

IDENTITY = ("key", "etag", "version_id", "last_modified")


@dataclass(frozen=True)
class Claim:
    ours: bool  # the folder belongs to this submission (same key, ETag, version and upload time)
    record: dict[str, Any]  # the claim as stored
    fresh: bool = False  # claimed just now (False: claimed earlier, by this or another run)
    etag: str | None = None  # the stored claim's ETag (to replace it conditionally)


def claim_folder(store: ObjectStore, prefix: str, identity: dict[str, Any]) -> Claim:
    """Claim ``prefix`` for this submission. A folder already claimed by the same upload of the
    submit file (same key, ETag, version and upload time: a re-run or a duplicate event) stays
    ours; claimed by any other upload, it is not (see :func:`supersede`)."""
    record = {**identity, "claimed_at": now()}
    try:
        store.put_json(prefix + CLAIM, record, indent=2, if_none_match=True)
    except WriteConflict:
        reply = store.get(prefix + CLAIM)
        existing = json.loads(reply["Body"].read())
        same = all(existing.get(name) == identity.get(name) for name in IDENTITY)
        return Claim(same, existing, etag=reply["ETag"].strip('"'))
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


def superseded_prefix(prefix: str, record: dict[str, Any]) -> str:
    """Where a superseded job's files go: ``{group}/results/superseded/{job folder}/{claimed at}/``
    — outside ``{group}/results/job__…``, so no client polling the job folder ever lists them."""
    group, _, job = prefix.rstrip("/").partition("/results/")
    stamp = "".join(ch for ch in str(record.get("claimed_at") or now()) if ch.isalnum()) or "earlier"
    return f"{group}/results/superseded/{job}/{stamp}/"


def supersede(
    store: ObjectStore, prefix: str, old: Claim, identity: dict[str, Any]
) -> tuple[str, int] | None:
    """Take over a finished job's folder for a new upload with the same timestamp (what the
    NeuroCAAS website does: it always uploads ``submissions/submit.json``).

    The claim is replaced only over the ETag read (two re-uploads at once: one wins, the other
    gets None and looks again). Then ``end.txt`` is deleted first — no client may see the old
    job's end for the new one — and every other object of the old job is moved to
    :func:`superseded_prefix`. Returns ``(archive prefix, objects moved)``."""
    record = {**identity, "claimed_at": now(), "supersedes": old.record}
    try:
        store.put_json(prefix + CLAIM, record, indent=2, if_match=old.etag)
    except WriteConflict:
        return None
    archive = superseded_prefix(prefix, old.record)
    if store.exists(prefix + END):
        store.copy(prefix + END, archive + END)
        store.delete(prefix + END)
    moved = 0
    for key in list(store.keys(prefix)):
        if key == prefix + CLAIM:
            continue
        store.copy(key, archive + key[len(prefix) :])
        store.delete(key)
        moved += 1
    store.put_json(archive + CLAIM, old.record, indent=2)
    return archive, moved
