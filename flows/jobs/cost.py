"""Cost: each execution's cost = its run time x its resources x the price table, recorded on the
execution when it ends; spend per group, and the group's budget checked before a dispatch.

Pricing by the capacity an execution ran on (``resources.pricedAs``, from :mod:`.triage`):

- ``FARGATE`` / ``FARGATE_SPOT``: hours x (vCPU x price per vCPU-hour + GB x price per GB-hour);
- ``EC2`` / ``SPOT`` (Batch on EC2): hours x the instance's hourly price x the job's share of the
  instance, max(vCPU / instance vCPUs, memory / instance memory) — Batch packs jobs on instances;
- ``FREE``: 0. A run on the local pool is priced as ``INTERLINKED_JOBS_LOCAL_PRICED_AS`` (default
  FARGATE: what it would cost on AWS), so budgets and reports behave the same locally.

The run time is from the execution's ``createdAt`` (EXECUTE) to its ``finishedAt``. Prices and
their date are in :mod:`.policy`; the recorded cost names the basis and the date of the prices.
Budgets (``INTERLINKED_JOBS_BUDGET`` / ``..._BUDGETS``) cover a period (the UTC month so far by
default): a dispatch is refused when the group's spend in the period, plus the job's estimate
(``expectedSeconds`` x its rate; 0 when unknown), would pass the budget.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from flows.jobs.model import EXECUTION_EXECUTING, Execution, Job, JobError
from flows.jobs.policy import JobPolicy, PriceTable


def parse_time(text: str, what: str = "time") -> datetime:
    """An ISO 8601 date or time (``Z`` or an offset; naive = UTC) as an aware datetime, else :class:`JobError`."""
    if not isinstance(text, str) or not text.strip():
        raise JobError(f"{what} must be an ISO 8601 date or time, got {text!r}")
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise JobError(
            f"{what} must be an ISO 8601 date or time like 2026-12-01 or 2026-12-01T08:00:00Z, got {text!r}"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime) -> str:
    """``value`` in the job record's format (UTC, milliseconds, ``Z``): comparable as text."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def period_start(period: str, now: datetime | None = None) -> str | None:
    """Start of the budget period containing ``now`` (None for ``all``)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if period == "month":
        return iso(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    if period == "day":
        return iso(now.replace(hour=0, minute=0, second=0, microsecond=0))
    return None


def hourly_rate(resources: dict[str, Any], prices: PriceTable) -> tuple[float, str]:
    """(price per hour of these resources, how it was computed)."""
    cpu = float(resources.get("cpu") or 0)
    memory_gib = float(resources.get("memoryMiB") or 0) / 1024
    capacity = resources.get("pricedAs") or resources.get("capacity") or "FARGATE"
    if capacity == "FREE":
        return 0.0, "free"
    if capacity in ("FARGATE", "FARGATE_SPOT"):
        table = prices.fargate if capacity == "FARGATE" else prices.fargate_spot
        rate = cpu * table.vcpu_hour + memory_gib * table.gb_hour
        return rate, (
            f"{capacity}: {cpu:g} vCPU x {table.vcpu_hour:g} + {memory_gib:g} GB x {table.gb_hour:g} per hour"
        )
    if capacity in ("EC2", "SPOT"):
        instance_type = resources.get("instanceType") or ""
        instance = prices.instances.get(instance_type)
        if instance is None:
            known = ", ".join(sorted(prices.instances))
            raise JobError(f"no price for instance type {instance_type!r} (the price table has {known})")
        hour = instance.on_demand_hour if capacity == "EC2" else instance.spot_hour
        share = max(cpu / instance.vcpu, memory_gib / instance.memory_gib)
        return share * hour, f"{capacity} {instance_type}: {share:.3g} of an instance x {hour:g} per hour"
    raise JobError(f"unknown capacity {capacity!r} to price (FARGATE, FARGATE_SPOT, EC2, SPOT or FREE)")


def _resources(execution: Execution, policy: JobPolicy) -> tuple[dict[str, Any], bool]:
    if execution.resources:
        return execution.resources, False
    assumed = {
        "cpu": policy.jobs_default_cpu,
        "memoryMiB": policy.jobs_default_memory_mib,
        "pricedAs": policy.jobs_local_priced_as,
        "instanceType": policy.jobs_batch_instance_type,
    }
    return assumed, True


def execution_cost(execution: Execution, policy: JobPolicy, *, until: str | None = None) -> dict[str, Any]:
    """The cost of ``execution`` from EXECUTE to its end (or ``until`` for a running one)."""
    end = execution.finished_at or until
    if end is None:
        raise JobError(f"execution {execution.execution_id} has not ended: it has no cost yet")
    seconds = max(0.0, (parse_time(end) - parse_time(execution.created_at)).total_seconds())
    resources, assumed = _resources(execution, policy)
    rate, basis = hourly_rate(resources, policy.jobs_prices)
    if assumed:
        basis += " (assumed: the execution recorded no resources)"
    return {
        "amount": round(rate * seconds / 3600, 8),
        "currency": policy.jobs_prices.currency,
        "seconds": round(seconds, 3),
        "perHour": round(rate, 8),
        "basis": basis,
        "pricesAsOf": policy.jobs_prices.as_of,
        "region": policy.jobs_prices.region,
    }


def record(job: Job, execution_id: str, policy: JobPolicy) -> Job:
    """Record the cost of the (just ended) execution on it; a transition to compose after the end."""
    execution = job.execution(execution_id)
    if execution.finished_at is not None and execution.cost is None:
        execution.cost = execution_cost(execution, policy)
    return job


def record_ended(job: Job, policy: JobPolicy) -> Job:
    """Record the cost of every ended execution that has none (e.g. the one a cancel ended)."""
    for execution in job.executions:
        if execution.finished_at is not None and execution.cost is None:
            execution.cost = execution_cost(execution, policy)
    return job


def estimate(resources: dict[str, Any], expected_seconds: float | None, policy: JobPolicy) -> dict[str, Any]:
    """What an execution with these resources is expected to cost (0 when its run time is unknown)."""
    rate, basis = hourly_rate(resources, policy.jobs_prices)
    seconds = expected_seconds or 0.0
    return {
        "amount": round(rate * seconds / 3600, 8),
        "currency": policy.jobs_prices.currency,
        "perHour": round(rate, 8),
        "seconds": seconds,
        "basis": basis + ("" if expected_seconds else "; expectedSeconds unknown: run time not counted"),
    }


def group_of(job: Job, policy: JobPolicy) -> str:
    return job.group or policy.jobs_default_group


def cost_lines(
    jobs: Iterable[Job], policy: JobPolicy, *, group: str | None = None, since: str | None = None
) -> list[dict[str, Any]]:
    """One line per ended execution (finished at or after ``since``) of the group's jobs: its cost
    (recorded, or computed now for one that ended without it, marked ``recorded: false``)."""
    lines = []
    for job in jobs:
        job_group = group_of(job, policy)
        if group is not None and job_group != group:
            continue
        for execution in job.executions:
            if execution.state == EXECUTION_EXECUTING or execution.finished_at is None:
                continue
            if since is not None and execution.finished_at < since:
                continue
            cost = execution.cost or execution_cost(execution, policy)
            lines.append(
                {
                    "jobId": job.id,
                    "jobType": job.job_type,
                    "group": job_group,
                    "executionId": execution.execution_id,
                    "attempt": execution.attempt,
                    "state": execution.state,
                    "finishedAt": execution.finished_at,
                    "pool": (execution.resources or {}).get("pool"),
                    "cpu": (execution.resources or {}).get("cpu"),
                    "memoryMiB": (execution.resources or {}).get("memoryMiB"),
                    "recorded": execution.cost is not None,
                    **cost,
                }
            )
    return sorted(lines, key=lambda line: line["finishedAt"])


def summary(
    jobs: Iterable[Job], policy: JobPolicy, *, group: str | None = None, since: str | None = None
) -> dict[str, Any]:
    """Cost per execution, per group and in all (what ``interlinked jobs cost --json`` prints)."""
    lines = cost_lines(jobs, policy, group=group, since=since)
    groups: dict[str, float] = {}
    for line in lines:
        groups[line["group"]] = groups.get(line["group"], 0.0) + line["amount"]
    budgets = {name: policy.budget_of(name) for name in sorted(set(groups) | ({group} if group else set()))}
    return {
        "since": since,
        "group": group,
        "currency": policy.jobs_prices.currency,
        "pricesAsOf": policy.jobs_prices.as_of,
        "region": policy.jobs_prices.region,
        "total": round(sum(groups.values()), 8),
        "groups": {name: round(amount, 8) for name, amount in sorted(groups.items())},
        "budgets": {name: value for name, value in budgets.items() if value is not None},
        "budgetPeriod": policy.jobs_budget_period,
        "executions": lines,
    }


def check_budget(
    jobs: Iterable[Job],
    group: str,
    expected: dict[str, Any],
    policy: JobPolicy,
    *,
    now: datetime | None = None,
) -> None:
    """Refuse (:class:`JobError`) a dispatch that would take ``group`` past its budget.

    ``jobs`` are the jobs changed since the period began (the others have no spend in it);
    ``expected`` is the job's :func:`estimate`."""
    budget = policy.budget_of(group)
    if budget is None:
        return
    since = period_start(policy.jobs_budget_period, now)
    spent = sum(line["amount"] for line in cost_lines(jobs, policy, group=group, since=since))
    period = {"month": "this month", "day": "today", "all": "in all"}[policy.jobs_budget_period]
    currency = policy.jobs_prices.currency
    if spent >= budget or spent + expected["amount"] > budget:
        raise JobError(
            f"group {group!r} is over its budget: {spent:.4f} {currency} spent of {budget:g} {currency} "
            f"{period}{f' (since {since})' if since else ''}, and this job is estimated at "
            f"{expected['amount']:.4f} {currency} ({expected['basis']}); nothing was dispatched — raise "
            "INTERLINKED_JOBS_BUDGETS / INTERLINKED_JOBS_BUDGET or wait for the next period"
        )
