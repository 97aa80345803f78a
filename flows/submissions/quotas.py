"""Per-group limits of S3 submissions: concurrent jobs, parallel datasets, budget and price — the
settings, the budget ledger that charges them and the job slots that enforce them.

Defaults come from ``INTERLINKED_SUBMISSION_*`` environment variables (or ``.env``), per-group
overrides from ``INTERLINKED_SUBMISSION_GROUPS`` (JSON) and — editable at run time in the Prefect
UI, without restarting anything — from the Prefect Variable ``submission-quotas``::

    {"price_per_hour": 1.5,
     "defaults": {"max_concurrent_jobs": 2, "budget": 50},
     "groups": {"lab-a": {"max_concurrent_jobs": 1, "dataset_concurrency": 2, "budget": 10.0}}}

The Variable wins over the environment, a group's own entry over the defaults.

The budget ledger lives in the data bucket (``accounting/submissions/{group}.json``, which groups
cannot write) and is updated with optimistic concurrency (``If-Match`` on its ETag). A job slot is
a lease on the Prefect global concurrency limit ``submission-jobs-{group}``: a submission over its
group's concurrent-jobs quota waits for one.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from blocks.s3 import ObjectMissing, ObjectStore, WriteConflict
from flows.submissions.folder import now


class GroupLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_concurrent_jobs: int | None = Field(default=None, ge=1)
    dataset_concurrency: int | None = Field(default=None, ge=1)
    budget: float | None = Field(default=None, ge=0)


class SubmissionSettings(BaseSettings):
    """Fields are named as they would be in ``interlinked.settings.Settings`` (prefix ``INTERLINKED_``)."""

    model_config = SettingsConfigDict(env_prefix="INTERLINKED_", env_file=".env", extra="ignore")

    submission_max_concurrent_jobs: int = Field(default=2, ge=1, description="Running jobs per group.")
    submission_dataset_concurrency: int = Field(
        default=4, ge=1, description="Datasets analysed at once per job."
    )
    submission_budget: float = Field(default=50.0, ge=0, description="Estimated spend allowed per group.")
    submission_price_per_hour: float = Field(default=1.0, ge=0, description="Price of one analysis-hour.")
    submission_resultpath_allowed: list[str] = Field(
        default_factory=list,
        description="Storage bypass: where a submit file's `resultpath` may send the results ('bucket' or "
        "'bucket/prefix' entries, '*' anywhere the flow's role can write); empty: resultpath is refused.",
    )
    submission_min_time_limit_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Floor of each dataset's time limit (the limit is the config's duration, at least this).",
    )
    submission_max_input_bytes: int = Field(
        default=20 * 2**30,
        ge=1,
        description="Largest total size of one submission's datasets, bytes (a bound on what one job costs).",
    )
    submission_slot_wait_seconds: float = Field(
        default=6 * 3600,
        ge=0,
        description="How long a submission waits for a free job slot of its group before it is refused.",
    )
    submission_groups: dict[str, GroupLimits] = Field(
        default_factory=dict, description="Per-group overrides."
    )
    submission_rerun_wait_seconds: float = Field(
        default=3600,
        ge=0,
        description="How long a re-upload with the timestamp of a job still running waits for it to end "
        "before it is refused (a finished job's folder is taken over at once).",
    )
    analysis_buckets: dict[str, str] = Field(
        default_factory=dict,
        description="Analyses with a bucket of their own (analysis name → bucket): there the bucket is "
        "the analysis, as on NeuroCAAS, and configs need no `analysis` key.",
    )
    submission_quota_variable: str = Field(
        default="submission-quotas", description="Prefect Variable with run-time overrides (JSON)."
    )


@dataclass(frozen=True)
class InstanceType:
    """What a NeuroCAAS ``instance_type`` stands for here: CPUs, memory and on-demand price (USD/h)."""

    name: str
    vcpus: int
    memory_gib: float
    price_per_hour: float


# The instance types NeuroCAAS analyses name in their submit files and blueprints (us-east-1
# on-demand Linux prices). A submit file's ``instance_type`` sets its runs' price in the budget
# estimate and how many of its runs go at once (one run per vCPU at most).
INSTANCE_TYPES = {
    item.name: item
    for item in (
        InstanceType("t2.micro", 1, 1, 0.0116),
        InstanceType("t2.medium", 2, 4, 0.0464),
        InstanceType("t2.large", 2, 8, 0.0928),
        InstanceType("m5.large", 2, 8, 0.096),
        InstanceType("m5.xlarge", 4, 16, 0.192),
        InstanceType("m5.2xlarge", 8, 32, 0.384),
        InstanceType("m5.4xlarge", 16, 64, 0.768),
        InstanceType("m5.16xlarge", 64, 256, 3.072),
        InstanceType("c5.xlarge", 4, 8, 0.17),
        InstanceType("c5.4xlarge", 16, 32, 0.68),
        InstanceType("r5.2xlarge", 8, 64, 0.504),
        InstanceType("p2.xlarge", 4, 61, 0.9),
        InstanceType("p3.2xlarge", 8, 61, 3.06),
        InstanceType("g4dn.xlarge", 4, 16, 0.526),
    )
}


def analysis_for_bucket(bucket: str, *, settings: SubmissionSettings | None = None) -> str | None:
    """The analysis that owns ``bucket`` (NeuroCAAS: the bucket is the analysis), or None."""
    settings = settings or SubmissionSettings()
    owners = [name for name, owned in settings.analysis_buckets.items() if owned == bucket]
    return owners[0] if owners else None


@dataclass(frozen=True)
class Quota:
    group: str
    max_concurrent_jobs: int
    dataset_concurrency: int
    budget: float
    price_per_hour: float
    slot_wait_seconds: float = 6 * 3600


def _variable_overrides(name: str) -> dict[str, Any]:
    from prefect.variables import Variable

    value = Variable.get(name, default=None)
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise ValueError(f"Prefect Variable {name!r} must hold a JSON object")
    return value


def quota_for(group: str, *, settings: SubmissionSettings | None = None, use_variable: bool = True) -> Quota:
    settings = settings or SubmissionSettings()
    values: dict[str, Any] = {
        "max_concurrent_jobs": settings.submission_max_concurrent_jobs,
        "dataset_concurrency": settings.submission_dataset_concurrency,
        "budget": settings.submission_budget,
    }
    price = settings.submission_price_per_hour
    env_group = settings.submission_groups.get(group)
    if env_group:
        values.update(env_group.model_dump(exclude_none=True))
    if use_variable:
        overrides = _variable_overrides(settings.submission_quota_variable)
        try:
            for layer in (overrides.get("defaults"), (overrides.get("groups") or {}).get(group)):
                if layer:
                    values.update(GroupLimits.model_validate(layer).model_dump(exclude_none=True))
        except ValidationError as error:
            raise ValueError(
                f"Prefect Variable {settings.submission_quota_variable!r} is invalid: {error}"
            ) from None
        if "price_per_hour" in overrides:
            price = float(overrides["price_per_hour"])
    return Quota(
        group=group, price_per_hour=price, slot_wait_seconds=settings.submission_slot_wait_seconds, **values
    )


# ---- budget ledger (in the data bucket, which groups cannot write) ---------------------------------


LEDGER_PREFIX = "accounting/submissions/"


class OverBudget(Exception):
    """The job's estimated cost is more than what is left of its group's budget."""


def ledger_key(group: str) -> str:
    return f"{LEDGER_PREFIX}{group}.json"


def charge_budget(
    store: ObjectStore,
    *,
    group: str,
    job: str,
    cost: float,
    budget: float,
    detail: dict[str, Any],
    attempts: int = 20,
) -> dict[str, float]:
    """Record ``cost`` for ``job`` in the group's ledger (in ``store``, the data bucket) unless it
    would exceed ``budget``.

    Returns ``{"spent", "budget", "remaining"}`` after the charge. A job already in the ledger (a
    re-run) is not charged again. Raises :class:`OverBudget` with the reason.
    """
    key = ledger_key(group)
    for _ in range(attempts):
        try:
            reply = store.get(key)
            ledger = json.loads(reply["Body"].read())
            condition: dict[str, Any] = {"if_match": reply["ETag"]}
        except ObjectMissing:
            ledger = {"group": group, "spent": 0.0, "jobs": {}}
            condition = {"if_none_match": True}
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
            store.put_json(key, ledger, indent=2, **condition)
        except WriteConflict:
            time.sleep(0.05)
            continue  # someone else charged at the same time: read again
        return {"spent": ledger["spent"], "budget": budget, "remaining": round(budget - ledger["spent"], 6)}
    raise RuntimeError(f"could not update the budget ledger {store.uri(key)}: too much contention")


def settle_budget(
    store: ObjectStore, *, group: str, job: str, cost: float, budget: float, attempts: int = 20
) -> dict[str, float] | None:
    """Replace ``job``'s charge in the group's ledger by its measured ``cost`` (the estimate charged
    before the work is kept as ``estimate``); ``spent`` moves by the difference. Returns the account
    after it, or None when the job is not in the ledger or was settled already (a re-run)."""
    key = ledger_key(group)
    for _ in range(attempts):
        try:
            reply = store.get(key)
        except ObjectMissing:
            return None
        ledger = json.loads(reply["Body"].read())
        entry = ledger.get("jobs", {}).get(job)
        if entry is None or "estimate" in entry:
            return None
        spent = round(float(ledger.get("spent", 0.0)) - float(entry["cost"]) + cost, 6)
        entry.update(estimate=entry["cost"], cost=cost, settled_at=now())
        ledger["spent"] = spent
        try:
            store.put_json(key, ledger, indent=2, if_match=reply["ETag"])
        except WriteConflict:
            time.sleep(0.05)
            continue
        return {"spent": spent, "budget": budget, "remaining": round(budget - spent, 6)}
    raise RuntimeError(f"could not settle the budget ledger {store.uri(key)}: too much contention")


# ---- job slots ---------------------------------------------------------------------------------------


class NoSlot(Exception):
    """Every job slot of the group stayed taken for as long as the submission may wait."""


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
