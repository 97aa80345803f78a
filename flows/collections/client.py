"""The task-collections SDK: what ``interlinked tasks ...`` (and later the drain flow) call.

Every function takes an open :class:`~flows.collections.store.TaskStore` (``open_store()``
gives the configured one). Input is parsed and checked completely before the store is touched,
so a bad line means nothing was written.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flows.collections.model import FAILED, LOCKED, AddResult, TaskInputError, check_collection
from flows.collections.parsing import ParsedTasks, parse_tasks, read_text, tasks_from_ids
from flows.collections.progress import progress
from flows.collections.store import TaskStore

__all__ = [
    "DrainRequest",
    "add_tasks",
    "collection_status",
    "delete_collection",
    "drain_requests",
    "read_tasks",
    "reset_collection",
    "retry_failed",
    "sample_table",
    "start_drains",
]


def read_tasks(
    collection: str,
    *,
    file: str | None = None,
    ids: str | None = None,
    command: str | None = None,
    fmt: str | None = None,
) -> ParsedTasks:
    """The tasks of ``file`` (JSON Lines or TSV), or one per id of ``ids`` with ``command``.

    Reads and checks everything without touching a store; raises :class:`TaskInputError`.
    """
    check_collection(collection)
    if (file is None) == (ids is None):
        raise TaskInputError("give either --file FILE or --ids FILE --command TEMPLATE")
    if ids is not None:
        if command is None:
            raise TaskInputError("--ids needs --command TEMPLATE (with {id} where the id goes)")
        return tasks_from_ids(read_text(ids), command, collection, source=ids)
    if command is not None:
        raise TaskInputError("--command goes with --ids, not with --file")
    return parse_tasks(read_text(file), collection, fmt=fmt, source=file)


def add_tasks(
    store: TaskStore, collection: str, tasks: ParsedTasks, *, max_attempts: int | None = None
) -> AddResult:
    """Add ``tasks`` (from :func:`read_tasks`) to ``collection``, creating the table if needed.

    Ids repeated in the input and ids the collection already has are both counted as duplicates.
    """
    if max_attempts is not None and max_attempts < 1:
        raise TaskInputError("--max-attempts must be at least 1")
    store.ensure()
    result = store.add(collection, list(tasks), max_attempts=max_attempts)
    result.duplicates += tasks.repeats
    return result


def collection_status(
    store: TaskStore,
    collection: str | None = None,
    *,
    failures: int = 10,
    throughput_window: float | None = 60.0,
) -> dict[str, Any]:
    """``{"collections": {name: {"todo", "locked", "done", "failed", "blocked", "total",
    "oldest_lease", "failures", "throughput", "eta_seconds"}}}`` (the ``tasks status --json``
    document, also the drain's status artifact): ``throughput`` in finished tasks per second over
    the last ``throughput_window`` seconds and the ``eta_seconds`` of the open tasks at that rate,
    from the store's per-minute finish counts (:mod:`flows.collections.progress`); None for both
    when ``throughput_window`` is None."""
    if collection is not None:
        check_collection(collection)
    statuses = store.status(collection, failures=failures)
    document = {"collections": {name: status.as_dict() for name, status in statuses.items()}}
    rates = (
        progress(store, collection, window_minutes=throughput_window / 60, status=statuses)
        if throughput_window
        else {}
    )
    for name, status in document["collections"].items():
        rate = rates.get(name)
        status["throughput"] = None if rate is None else round(rate.per_second, 3)
        status["eta_seconds"] = None
        if rate is not None and rate.eta_seconds is not None:
            status["eta_seconds"] = round(rate.eta_seconds, 1)
    return document


def reset_collection(store: TaskStore, collection: str, state: str) -> int:
    """Tasks of ``collection`` in ``state`` (``failed`` or ``locked``) back to ``todo``; how many."""
    check_collection(collection)
    if state not in (FAILED, LOCKED):
        raise TaskInputError(f"--state must be failed or locked, not {state!r}")
    return store.reset(collection, state)


def retry_failed(store: TaskStore, collection: str, task_ids: list[str] | None = None) -> int:
    """Failed tasks (all, or those of ``task_ids``) back to ``todo`` with fresh attempts."""
    check_collection(collection)
    return store.retry_failed(collection, task_ids)


def delete_collection(store: TaskStore, collection: str) -> int:
    """Remove ``collection`` and its tasks; how many tasks."""
    check_collection(collection)
    return store.delete(collection)


#: The drain deployment of each pool (prefect.yaml).
DRAIN_FLOW = "drain-collection"
POOLS = ("local", "ecs", "batch")


@dataclass
class DrainRequest:
    """Flow runs to create for one ``tasks drain``: ``count`` runs of ``deployment``."""

    deployment: str
    parameters: dict[str, Any]
    job_variables: dict[str, Any] = field(default_factory=dict)
    count: int = 1


def drain_requests(
    collection: str,
    *,
    workers: int = 1,
    concurrency: int = 4,
    pool: str = "local",
    time_budget: float | None = None,
    task_timeout: float | None = None,
    batch: int = 25,
    lease_seconds: float | None = None,
    scheduler_address: str | None = None,
    max_tasks: int | None = None,
    nested_concurrency: int | None = None,
    lower_priority: Sequence[str] = (),
    backend: str | None = None,
) -> DrainRequest:
    """What ``interlinked tasks drain`` starts: on ``local`` and ``ecs``, ``workers`` runs of the
    pool's ``drain-collection`` deployment; on ``batch`` with ``workers`` > 1, **one** run whose Batch
    job is an array job of ``workers`` children (the aws-batch worker's ``array_size``), each child
    running ``python -m flows.collections.drain`` (a drain with a flow run of its own).
    ``lower_priority``: collections each drain claims from, in order, only when those before have
    nothing claimable (PiCaS's ``PrioritizedViewIterator``). ``backend`` (the store the caller added
    to) is passed on, so every drain reads that store."""
    check_collection(collection)
    for name in lower_priority:
        check_collection(name)
    lower = list(lower_priority)
    if len({collection, *lower}) != 1 + len(lower):
        raise TaskInputError("a collection is named twice in the drain's priority order")
    if pool not in POOLS:
        raise TaskInputError(f"--pool must be one of {', '.join(POOLS)}, not {pool!r}")
    if workers < 1:
        raise TaskInputError("--workers must be at least 1")
    if concurrency < 1:
        raise TaskInputError("--concurrency must be at least 1")
    if pool == "batch" and workers > 10_000:
        raise TaskInputError("--workers on batch is at most 10000 (the largest AWS Batch array job)")
    for name, value in (("--time-budget", time_budget), ("--task-timeout", task_timeout)):
        if value is not None and value <= 0:
            raise TaskInputError(f"{name} must be positive")
    for name, value in (("--max-tasks", max_tasks), ("--nested-concurrency", nested_concurrency)):
        if value is not None and value < 1:
            raise TaskInputError(f"{name} must be at least 1")
    parameters: dict[str, Any] = {"collection": collection, "concurrency": concurrency, "batch": batch}
    optional = {
        "time_budget": time_budget,
        "task_timeout": task_timeout,
        "lease_seconds": lease_seconds,
        "scheduler_address": scheduler_address,
        "max_tasks": max_tasks,
        "nested_concurrency": nested_concurrency,
        # The store the caller added to and checked: the drains must not fall back on their
        # worker's own default (a stack started on postgres draining a DynamoDB collection).
        "backend": backend,
    }
    parameters.update({key: value for key, value in optional.items() if value is not None})
    if lower:
        parameters["lower_priority"] = lower
    deployment = f"{DRAIN_FLOW}/{pool}"
    if pool != "batch" or workers == 1:
        return DrainRequest(deployment, parameters, count=workers)
    command = ["python", "-m", "flows.collections.drain", collection, *lower]
    for key, value in parameters.items():
        if key not in ("collection", "lower_priority"):
            command += [
                f"--{key.replace('_', '-')}",
                f"{value:g}" if isinstance(value, float) else str(value),
            ]
    return DrainRequest(
        deployment,
        parameters,
        job_variables={"array_size": workers, "command": shlex.join(command)},
        count=1,
    )


def start_drains(request: DrainRequest) -> list[Any]:
    """Create the flow runs of ``request`` (they start when the pool's worker picks them up)."""
    from prefect.deployments import run_deployment

    return [
        run_deployment(
            request.deployment,
            parameters=request.parameters,
            job_variables=request.job_variables or None,
            timeout=0,
            as_subflow=False,
            tags=[
                "task-collection",
                *(
                    f"collection:{name}"
                    for name in [
                        request.parameters["collection"],
                        *request.parameters.get("lower_priority", []),
                    ]
                ),
            ],
        )
        for _ in range(request.count)
    ]


def sample_table(
    store: TaskStore, collections: list[str] | None = None, key: str = "sample"
) -> dict[str, Any]:
    """``{"steps": [collection, ...], "samples": {sample: {collection: state text}}}``: where each
    sample is across steps (a state, or e.g. ``done 2/3`` when a sample has several tasks in a step)."""
    names = collections or store.collections()
    for name in names:
        check_collection(name)
    raw = store.samples(names, key=key)
    table: dict[str, dict[str, str]] = {}
    for sample in sorted(raw):
        row = {}
        for collection, states in raw[sample].items():
            total = sum(states.values())
            if len(states) == 1:
                (state,) = states
                row[collection] = state if total == 1 else f"{state} {total}/{total}"
            else:
                row[collection] = ", ".join(f"{state} {n}/{total}" for state, n in sorted(states.items()))
        table[sample] = row
    return {"steps": names, "key": key, "samples": table}


#: PyAnamo's progress buckets of nested items (share of an item's nests done).
NEST_BUCKETS = ("todo", "1-25%", "26-75%", "76-99%", "done")


def nest_bucket(done: int, total: int) -> str:
    """The progress bucket of an item with ``done`` of ``total`` nests done."""
    if total <= 0 or done <= 0:
        return "todo"
    if done >= total:
        return "done"
    share = done / total
    return "1-25%" if share <= 0.25 else "26-75%" if share <= 0.75 else "76-99%"


#: PyAnamo's own ``summarize_nestedTasks`` buckets (quartiles of the integer percentage done).
NEST_QUARTILES = ("todo", "Q1", "Q2", "Q3", "Q4", "done")


def nest_quartile(done: int, total: int) -> str:
    """PyAnamo's bucket of an item with ``done`` of ``total`` nests done: ``int(100 * done /
    total)`` 0 todo, 1-25 Q1, 26-50 Q2, 51-75 Q3, 76-99 Q4, 100 done."""
    percent = int(100 * done / total) if total > 0 else 0
    if percent <= 0:
        return "todo"
    if percent >= 100:
        return "done"
    return "Q1" if percent <= 25 else "Q2" if percent <= 50 else "Q3" if percent <= 75 else "Q4"


def nested_status(store: TaskStore, collection: str) -> dict[str, Any]:
    """PyAnamo's view of a collection's nested items: ``{"collection", "items", "buckets": {bucket:
    items}, "quartiles": {PyAnamo's own bucket: items}, "nests": {state: nests}, "by_state": {item
    state: items}}``. Reads every task of the collection (an explicit request, as ``--samples``)."""
    from flows.collections.model import NESTED_KEY

    check_collection(collection)
    buckets = dict.fromkeys(NEST_BUCKETS, 0)
    quartiles = dict.fromkeys(NEST_QUARTILES, 0)
    nests: dict[str, int] = {}
    by_state: dict[str, int] = {}
    items = 0
    for task in store.iter_tasks(collection):
        subs = task.attributes.get(NESTED_KEY)
        if not isinstance(subs, list) or not subs:
            continue
        items += 1
        by_state[task.state] = by_state.get(task.state, 0) + 1
        done = 0
        for sub in subs:
            state = sub.get("state", "todo") if isinstance(sub, dict) else "todo"
            nests[state] = nests.get(state, 0) + 1
            done += state == "done"
        buckets[nest_bucket(done, len(subs))] += 1
        quartiles[nest_quartile(done, len(subs))] += 1
    return {
        "collection": collection,
        "items": items,
        "buckets": buckets,
        "quartiles": quartiles,
        "nests": nests,
        "by_state": by_state,
    }


def instances(store: TaskStore, collections: list[str] | None = None) -> dict[str, Any]:
    """PyAnamo's "which instance holds what": the current leases grouped by holder, ``{"instances":
    [{"owner", "host", "pid", "batch_job", "flow_run", "tasks": n, "by_collection": {c: n},
    "task_ids": [first 20 "c/id"], "earliest_expiry"}], "leases": total}``, busiest first."""
    from flows.collections.store import parse_owner

    names = collections or store.collections()
    holders: dict[str, dict[str, Any]] = {}
    total = 0
    for name in names:
        for lease in store.leases(check_collection(name)):
            total += 1
            owner = lease["owner"] or "?"
            entry = holders.setdefault(
                owner,
                {"owner": owner, **parse_owner(owner), "tasks": 0, "by_collection": {}, "task_ids": []},
            )
            entry["tasks"] += 1
            entry["by_collection"][name] = entry["by_collection"].get(name, 0) + 1
            if len(entry["task_ids"]) < 20:
                entry["task_ids"].append(f"{name}/{lease['id']}")
            expires = lease["expires"]
            if expires is not None and (
                entry.get("earliest_expiry") is None or expires < entry["earliest_expiry"]
            ):
                entry["earliest_expiry"] = expires
    ordered = sorted(holders.values(), key=lambda entry: (-entry["tasks"], entry["owner"]))
    return {"collections": names, "leases": total, "instances": ordered}


#: AWS Batch job states after which a job holds nothing any more.
BATCH_ENDED = ("SUCCEEDED", "FAILED")


def _batch_states(job_ids: list[str], batch_client: Any | None) -> dict[str, str | None]:
    """``{job_id: status}`` from Batch ``DescribeJobs`` (100 a call); None for a job Batch does not
    know (deleted, or never existed)."""
    if not job_ids:
        return {}
    if batch_client is None:
        from blocks.clients import aws_client

        batch_client = aws_client("batch")
    states: dict[str, str | None] = dict.fromkeys(job_ids)
    for start in range(0, len(job_ids), 100):
        reply = batch_client.describe_jobs(jobs=job_ids[start : start + 100])
        for job in reply.get("jobs", []):
            states[job["jobId"]] = job.get("status")
            # An array child is asked for as "PARENT:INDEX"; Batch answers with that id.
    return states


def _process_alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def orphans(
    store: TaskStore, collections: list[str] | None = None, *, batch_client: Any | None = None
) -> dict[str, Any]:
    """PyAnamo's "locks whose Batch job no longer exists": every lease with its holder checked —
    ``gone`` when its Batch job ended or is unknown to Batch (``DescribeJobs``), or when it ran on
    this host and its process is gone; ``alive`` when the job runs or the process exists;
    ``unknown`` for a process on another host (nothing to ask). An expired lease is reclaimed by
    the next claim anyway; ``expired`` says so. ``{"orphans": [...], "checked": n, "unknown": n}``."""
    import socket
    import time

    from flows.collections.store import parse_owner

    names = collections or store.collections()
    leases = [(name, lease) for name in names for lease in store.leases(check_collection(name))]
    owners = {lease["owner"]: parse_owner(lease["owner"]) for _, lease in leases}
    jobs = sorted({info["batch_job"] for info in owners.values() if info["batch_job"]})
    job_states = _batch_states(jobs, batch_client)
    here = socket.gethostname()
    verdicts: dict[str | None, tuple[str, str]] = {}
    for owner, info in owners.items():
        if info["batch_job"]:
            status = job_states.get(info["batch_job"])
            if status is None:
                verdicts[owner] = ("gone", f"Batch job {info['batch_job']} is unknown to Batch")
            elif status in BATCH_ENDED:
                verdicts[owner] = ("gone", f"Batch job {info['batch_job']} is {status}")
            else:
                verdicts[owner] = ("alive", f"Batch job {info['batch_job']} is {status}")
        elif info["host"] == here and info["pid"] is not None:
            if _process_alive(info["pid"]):
                verdicts[owner] = ("alive", f"process {info['pid']} on {here} exists")
            else:
                verdicts[owner] = ("gone", f"process {info['pid']} on {here} is gone")
        else:
            verdicts[owner] = ("unknown", f"held on host {info['host'] or '?'}: not checkable from {here}")
    now = time.time()
    found, unknown = [], 0
    for name, lease in leases:
        verdict, why = verdicts[lease["owner"]]
        unknown += verdict == "unknown"
        if verdict == "gone":
            found.append(
                {
                    "collection": name,
                    "id": lease["id"],
                    "owner": lease["owner"],
                    "token": lease["token"],
                    "expires": lease["expires"],
                    "expired": lease["expires"] is not None and lease["expires"] < now,
                    "reason": why,
                }
            )
    return {"collections": names, "checked": len(leases), "unknown": unknown, "orphans": found}


def release_orphans(store: TaskStore, found: list[dict[str, Any]]) -> int:
    """End the orphaned leases now instead of at their expiry: each task goes back to ``todo``, or
    to ``failed`` when its attempts are used up — as an expired lease would (the attempt counts, so a
    task that kills its workers still stops). Each write is conditional on the orphan's token: a
    lease that changed hands meanwhile is left alone. How many leases were ended."""
    from flows.collections.model import LeaseLost

    ended = 0
    for orphan in found:
        try:
            store.fail(
                orphan["collection"],
                orphan["id"],
                int(orphan["token"]),
                error=f"lease holder gone ({orphan['reason']})",
                retry=True,
            )
        except LeaseLost:
            continue
        ended += 1
    return ended
