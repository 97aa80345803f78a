"""S3 side of a submission job: the results folder (live certificate, status files, end.txt), the
claim that makes a results folder immutable, the per-group budget ledger and job slots.

Everything a job writes in the analysis bucket is under its own results folder. The claim is a
conditional write (``If-None-Match: *``) of ``logs/submission.json``, so two submissions can never
share a folder, even when they run at the same moment. The budget ledger lives in the data bucket
(``accounting/submissions/{group}.json``, which groups cannot write) and is updated with
optimistic concurrency (``If-Match`` on its ETag).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from blocks.errors import error_code, is_missing

CERTIFICATE = "logs/certificate.txt"
CLAIM = "logs/submission.json"
END = "process_results/end.txt"
RESULTS = "process_results/"
LEDGER_PREFIX = "accounting/submissions/"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def missing(error: ClientError) -> bool:
    return is_missing(error)


def conflict(error: ClientError) -> bool:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_code(error) in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)


class JobFolder:
    """The job's results folder: a live certificate, per-dataset status files and end.txt."""

    def __init__(self, s3, bucket: str, prefix: str, header: dict[str, str]):
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.header = dict(header)
        self.status = "RECEIVED"
        self.reason: str | None = None
        self._lines: list[str] = []
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def put(self, relative: str, body: str | bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.s3.put_object(
            Bucket=self.bucket, Key=self.prefix + relative, Body=data, ContentType=content_type
        )

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


def claim_folder(s3, bucket: str, prefix: str, identity: dict[str, Any]) -> Claim:
    """Claim ``prefix`` for this submission. A folder already claimed by the same submission (same
    key, ETag and version: a re-run) stays ours; by any other, it is not."""
    record = {**identity, "claimed_at": now()}
    try:
        s3.put_object(
            Bucket=bucket,
            Key=prefix + CLAIM,
            Body=json.dumps(record, indent=2).encode(),
            ContentType="application/json",
            IfNoneMatch="*",
        )
        return Claim(True, record, fresh=True)
    except ClientError as error:
        if not conflict(error):
            raise
    existing = json.loads(s3.get_object(Bucket=bucket, Key=prefix + CLAIM)["Body"].read())
    same = all(existing.get(name) == identity.get(name) for name in ("key", "etag", "version_id"))
    return Claim(same, existing)


def take_over_claim(s3, bucket: str, prefix: str, record: dict[str, Any], flow_run_id: str | None) -> None:
    """Record that this run now processes the submission (its previous run ended without end.txt)."""
    updated = {
        **record,
        "flow_run_id": flow_run_id,
        "taken_over_at": now(),
        "previous_flow_run_id": record.get("flow_run_id"),
    }
    s3.put_object(
        Bucket=bucket,
        Key=prefix + CLAIM,
        Body=json.dumps(updated, indent=2).encode(),
        ContentType="application/json",
    )


def exists(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as error:
        if missing(error):
            return False
        raise


def folder_exists(s3, bucket: str, prefix: str) -> bool:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    return listing.get("KeyCount", 0) > 0


# ---- budget ledger ------------------------------------------------------------------------------------


class OverBudget(Exception):
    pass


def charge_budget(
    s3,
    bucket: str,
    *,
    group: str,
    job: str,
    cost: float,
    budget: float,
    detail: dict[str, Any],
    attempts: int = 20,
) -> dict[str, float]:
    """Record ``cost`` for ``job`` in the group's ledger unless it would exceed ``budget``.

    Returns ``{"spent", "budget", "remaining"}`` after the charge. A job already in the ledger (a
    re-run) is not charged again. Raises :class:`OverBudget` with the reason.
    """
    key = f"{LEDGER_PREFIX}{group}.json"
    for _ in range(attempts):
        try:
            reply = s3.get_object(Bucket=bucket, Key=key)
            ledger = json.loads(reply["Body"].read())
            condition = {"IfMatch": reply["ETag"]}
        except ClientError as error:
            if not missing(error):
                raise
            ledger = {"group": group, "spent": 0.0, "jobs": {}}
            condition = {"IfNoneMatch": "*"}
        spent = float(ledger.get("spent", 0.0))
        if job in ledger.get("jobs", {}):
            return {"spent": spent, "budget": budget, "remaining": round(budget - spent, 6)}
        if spent + cost > budget + 1e-9:
            raise OverBudget(
                f"estimated cost {cost:g} exceeds the remaining budget of group {group!r}: "
                f"{max(0.0, budget - spent):g} of {budget:g} left ({spent:g} spent)"
            )
        ledger.setdefault("jobs", {})[job] = {"cost": cost, "charged_at": now(), **detail}
        ledger["spent"] = round(spent + cost, 6)
        try:
            s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=json.dumps(ledger, indent=2).encode(),
                ContentType="application/json",
                **condition,
            )
        except ClientError as error:
            if conflict(error):
                time.sleep(0.05)
                continue  # someone else charged at the same time: read again
            raise
        return {"spent": ledger["spent"], "budget": budget, "remaining": round(budget - ledger["spent"], 6)}
    raise RuntimeError(f"could not update the budget ledger s3://{bucket}/{key}: too much contention")


# ---- job slots ---------------------------------------------------------------------------------------


class NoSlot(Exception):
    pass


def slot_limit_name(group: str) -> str:
    return f"submission-jobs-{group}"


def _ensure_limit(client, name: str, limit: int) -> None:
    """Create the limit or bring it to ``limit``; safe when two jobs of a group start together
    (Prefect's own upsert reads then creates, so the second creator would fail)."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    for _ in range(3):
        try:
            existing = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
                return
            except ObjectAlreadyExists:
                continue  # created by the other job a moment ago: read it again
        if existing.limit != limit:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit))
        return


@contextmanager
def job_slot(
    group: str,
    limit: int,
    *,
    lease_seconds: int = 300,
    wait_seconds: float = 0.0,
    poll_seconds: float = 2.0,
    on_wait: Callable[[int, int], None] | None = None,
) -> Iterator[None]:
    """Hold one of the group's ``limit`` job slots (a Prefect global concurrency limit).

    A concurrency quota queues: while every slot is taken, wait (up to ``wait_seconds``, checking
    every ``poll_seconds``), telling ``on_wait(in_use, limit)`` once when the wait starts; only then
    raise :class:`NoSlot`. The slot is a lease renewed while the job runs; if the process dies the
    lease expires and the slot frees itself."""
    from httpx import HTTPStatusError
    from prefect.client.orchestration import get_client

    name = slot_limit_name(group)
    deadline = time.monotonic() + wait_seconds
    told = False
    with get_client(sync_client=True) as client:
        _ensure_limit(client, name, limit)
        while True:
            try:
                response = client.increment_concurrency_slots_with_lease(
                    names=[name], slots=1, mode="concurrency", lease_duration=lease_seconds
                )
                break
            except HTTPStatusError as error:
                if error.response.status_code != 423:
                    raise
            if time.monotonic() >= deadline:
                waited = f"; no slot freed within {wait_seconds:g} s" if wait_seconds else ""
                raise NoSlot(
                    f"group {group!r} already runs {limit} job(s), its maximum of concurrent jobs{waited}"
                )
            if not told and on_wait is not None:
                told = True
                try:
                    in_use = int(client.read_global_concurrency_limit_by_name(name).active_slots)
                except Exception:
                    in_use = limit
                on_wait(in_use, limit)
            time.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))
        lease_id = response.json()["lease_id"]
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_seconds / 3):
            try:
                with get_client(sync_client=True) as renewer:
                    renewer.renew_concurrency_lease(lease_id, lease_seconds)
            except Exception:  # a missed renewal is retried; the lease outlives a few misses
                continue

    renewer = threading.Thread(target=renew, name=f"slot-{name}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        with get_client(sync_client=True) as client:
            client.release_concurrency_slots_with_lease(lease_id)
