"""Where an execution runs, whether it is still there, and stopping it: a local process, an ECS task
or an AWS Batch job.

Identifiers come from two places: the execution's ``infrastructureId`` (written at EXECUTE by the
work itself: ``process:{host}:{pid}`` or ``batch:{job id}``) and the flow run's
``infrastructure_pid`` (written by the worker before the work starts: the warm/process pool's pid,
the ECS worker's ``{cluster}::{task arn}``, our Batch worker's job id). :func:`parse` reads both.

:class:`Infrastructure` looks at many at once — ``/proc`` for local pids, one ``DescribeTasks`` per
cluster and 100 tasks, one ``DescribeJobs`` per 100 jobs — and says for each whether it is ALIVE,
WAITING to start, GONE (with the failure its last record tells, :mod:`.failures`) or UNKNOWN (it
cannot be checked from here, e.g. a process on another host). ``stop`` ends one: the process tree
(SIGTERM, then SIGKILL after a grace), ``StopTask`` or ``TerminateJob``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from flows.jobs.failures import BATCH_TERMINAL, BATCH_WAITING, Failure, from_batch_job, from_ecs_task

PROCESS, ECS, BATCH = "process", "ecs", "batch"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


class InfraStatus(StrEnum):
    ALIVE = "ALIVE"  # running (a live process, an ECS task RUNNING, a Batch job STARTING/RUNNING)
    WAITING = (
        "WAITING"  # accepted but not started (Batch SUBMITTED/PENDING/RUNNABLE, ECS PROVISIONING/PENDING)
    )
    GONE = "GONE"  # ended or unknown to its service (a dead/zombie pid, a STOPPED task, a FAILED job)
    UNKNOWN = "UNKNOWN"  # cannot be checked from here


@dataclass(frozen=True)
class InfraRef:
    """One piece of infrastructure: ``kind`` (process, ecs, batch), its ``id`` (pid, task arn, job
    id), the ``host`` of a process and the ``cluster`` of a task."""

    kind: str
    id: str
    host: str | None = None
    cluster: str | None = None

    def __str__(self) -> str:
        if self.kind == PROCESS:
            return f"process:{self.host or '?'}:{self.id}"
        if self.kind == ECS:
            return f"ecs:{self.cluster}::{self.id}"
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True)
class Observation:
    """What a look at one piece of infrastructure found."""

    ref: InfraRef
    status: InfraStatus
    detail: dict[str, Any] = field(default_factory=dict)
    failure: Failure | None = None  # for GONE: what its record says about how it ended


def parse(
    execution_infrastructure: str | None, flow_run_infrastructure: str | None = None
) -> InfraRef | None:
    """The infrastructure of an execution (its own id wins) or of a flow run (the worker's id)."""
    value = execution_infrastructure or ""
    if value.startswith("process:"):
        _, host, pid = value.split(":", 2)
        if pid.isdigit():
            return InfraRef(PROCESS, pid, host=host)
    if value.startswith("batch:"):
        return InfraRef(BATCH, value.split(":", 1)[1])
    if value.startswith("ecs:") and "::" in value:
        cluster, task = value[4:].split("::", 1)
        return InfraRef(ECS, task, cluster=cluster)
    worker_id = (flow_run_infrastructure or "").strip()
    if not worker_id:
        return None
    if "::" in worker_id:  # prefect-aws ECS worker: "{cluster}::{task arn}"
        cluster, task = worker_id.split("::", 1)
        return InfraRef(ECS, task, cluster=cluster)
    if worker_id.isdigit():  # the warm / process pool: a pid on the host of the local pool
        return InfraRef(PROCESS, worker_id, host=socket.gethostname())
    if ":" in worker_id and worker_id.rsplit(":", 1)[1].isdigit():  # "host:pid"
        host, pid = worker_id.rsplit(":", 1)
        return InfraRef(PROCESS, pid, host=host)
    if _UUID.match(worker_id):  # our Batch worker: the job id
        return InfraRef(BATCH, worker_id)
    return None


# -- local processes -------------------------------------------------------------------------------
def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):  # pragma: no cover
        return 100


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as stat:
            for line in stat:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def process_state(pid: int) -> tuple[str, float | None] | None:
    """(state letter of ``/proc/{pid}/stat``: R, S, D, T, Z, ..., start time as epoch seconds), or
    None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return ("?", None)
    fields = text[text.rfind(")") + 2 :].split()  # after "pid (comm) "
    state = fields[0]
    boot = _boot_time()
    started = boot + int(fields[19]) / _clock_ticks() if boot is not None and len(fields) > 19 else None
    return state, started


def observe_process(ref: InfraRef, *, not_before: datetime | None = None) -> Observation:
    """A local process: ALIVE when it runs (any state but zombie/dead), GONE when it does not — or when
    the pid now belongs to a process started after the execution began (the pid was reused)."""
    if ref.host and ref.host != socket.gethostname():
        return Observation(ref, InfraStatus.UNKNOWN, {"reason": f"process on another host ({ref.host})"})
    found = process_state(int(ref.id))
    if found is None:
        return Observation(ref, InfraStatus.GONE, {"reason": "no such process"})
    state, started = found
    detail: dict[str, Any] = {"processState": state}
    if state in ("Z", "X", "x"):
        detail["reason"] = "the process exited (zombie: not reaped yet)"
        return Observation(ref, InfraStatus.GONE, detail)
    if started is not None and not_before is not None and started > not_before.timestamp() + 5:
        detail["reason"] = "the pid belongs to a newer process (reused)"
        return Observation(ref, InfraStatus.GONE, detail)
    return Observation(ref, InfraStatus.ALIVE, detail)


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        parent = int(text[text.rfind(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (the work's own children run in sessions of their own)."""
    tree, todo, children = [], [pid], _children()
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def stop_process(pid: int, *, grace: float = 10.0) -> dict[str, Any]:
    """SIGTERM the process tree of ``pid`` (each member's process group), SIGKILL what is left after
    ``grace`` seconds; what was done."""
    tree = process_tree(pid)
    groups = set()
    for member in tree:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(member))
    own = os.getpgid(0)
    groups.discard(own)

    def signal_all(sig: int) -> None:
        for group in groups:
            with contextlib.suppress(OSError):
                os.killpg(group, sig)
        for member in tree:
            with contextlib.suppress(OSError):
                os.kill(member, sig)

    signal_all(signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = tree
    while time.monotonic() < deadline:
        alive = [p for p in tree if (found := process_state(p)) is not None and found[0] not in ("Z", "X")]
        if not alive:
            break
        time.sleep(0.1)
    killed = bool(alive)
    if alive:
        signal_all(signal.SIGKILL)
    return {"action": "signal", "processes": tree, "sigkill": killed}


# -- the service -----------------------------------------------------------------------------------
ECS_WAITING = frozenset({"PROVISIONING", "PENDING", "ACTIVATING"})
ECS_ALIVE = frozenset({"RUNNING"})


class Infrastructure:
    """Looks at and stops infrastructure; AWS through ``blocks.clients.aws_client`` (made on first
    use, so a sweep that only sees local processes makes no client). ``calls`` counts AWS calls."""

    def __init__(self, *, ecs_client: Any = None, batch_client: Any = None, stop_grace: float = 10.0):
        self._ecs = ecs_client
        self._batch = batch_client
        self.stop_grace = stop_grace
        self.calls = 0

    def _client(self, service: str) -> Any:
        attribute = f"_{service}"
        if getattr(self, attribute) is None:
            from blocks.clients import aws_client

            setattr(self, attribute, aws_client(service))
        return getattr(self, attribute)

    def observe(
        self, refs: Iterable[InfraRef], *, not_before: dict[InfraRef, datetime] | None = None
    ) -> dict[InfraRef, Observation]:
        """An observation of each of ``refs``: batched calls per service."""
        found: dict[InfraRef, Observation] = {}
        unique = list(dict.fromkeys(refs))
        for ref in unique:
            if ref.kind == PROCESS:
                found[ref] = observe_process(ref, not_before=(not_before or {}).get(ref))
        batch = [ref for ref in unique if ref.kind == BATCH]
        for start in range(0, len(batch), 100):
            found.update(self._observe_batch(batch[start : start + 100]))
        by_cluster: dict[str | None, list[InfraRef]] = {}
        for ref in unique:
            if ref.kind == ECS:
                by_cluster.setdefault(ref.cluster, []).append(ref)
        for cluster, refs_of_cluster in by_cluster.items():
            for start in range(0, len(refs_of_cluster), 100):
                found.update(self._observe_ecs(cluster, refs_of_cluster[start : start + 100]))
        return found

    def _observe_batch(self, refs: list[InfraRef]) -> dict[InfraRef, Observation]:
        try:
            self.calls += 1
            jobs = self._client("batch").describe_jobs(jobs=[ref.id for ref in refs]).get("jobs", [])
        except Exception as error:  # cannot look: nothing is decided on a guess
            return {ref: Observation(ref, InfraStatus.UNKNOWN, {"error": str(error)}) for ref in refs}
        by_id = {job["jobId"]: job for job in jobs}
        found = {}
        for ref in refs:
            job = by_id.get(ref.id)
            if job is None:  # Batch forgets jobs after about 7 days
                found[ref] = Observation(ref, InfraStatus.GONE, {"reason": "unknown to AWS Batch"})
                continue
            status = job.get("status")
            detail = {"status": status, "statusReason": job.get("statusReason")}
            if status in BATCH_WAITING - {"STARTING"}:
                found[ref] = Observation(ref, InfraStatus.WAITING, detail)
            elif status in BATCH_TERMINAL:
                found[ref] = Observation(ref, InfraStatus.GONE, detail, from_batch_job(job))
            else:
                found[ref] = Observation(ref, InfraStatus.ALIVE, detail)
        return found

    def _observe_ecs(self, cluster: str | None, refs: list[InfraRef]) -> dict[InfraRef, Observation]:
        try:
            self.calls += 1
            arguments: dict[str, Any] = {"tasks": [ref.id for ref in refs]}
            if cluster:
                arguments["cluster"] = cluster
            tasks = self._client("ecs").describe_tasks(**arguments).get("tasks", [])
        except Exception as error:
            return {ref: Observation(ref, InfraStatus.UNKNOWN, {"error": str(error)}) for ref in refs}
        by_arn = {task["taskArn"]: task for task in tasks}
        found = {}
        for ref in refs:
            task = by_arn.get(ref.id) or next((t for t in tasks if t["taskArn"].endswith("/" + ref.id)), None)
            if task is None:  # ECS forgets stopped tasks after about an hour
                found[ref] = Observation(ref, InfraStatus.GONE, {"reason": "unknown to ECS"})
                continue
            status = task.get("lastStatus")
            detail = {"lastStatus": status, "stoppedReason": task.get("stoppedReason")}
            if status in ECS_WAITING:
                found[ref] = Observation(ref, InfraStatus.WAITING, detail)
            elif status in ECS_ALIVE:
                found[ref] = Observation(ref, InfraStatus.ALIVE, detail)
            else:
                found[ref] = Observation(ref, InfraStatus.GONE, detail, from_ecs_task(task))
        return found

    def stop(self, ref: InfraRef, reason: str) -> dict[str, Any]:
        """Stop ``ref``; what was done (never raises for something already gone)."""
        if ref.kind == PROCESS:
            if ref.host and ref.host != socket.gethostname():
                return {"action": "none", "reason": f"process on another host ({ref.host})"}
            return stop_process(int(ref.id), grace=self.stop_grace)
        try:
            self.calls += 1
            if ref.kind == BATCH:
                self._client("batch").terminate_job(jobId=ref.id, reason=reason[:1024])
                return {"action": "batch:TerminateJob", "jobId": ref.id}
            arguments = {"task": ref.id, "reason": reason[:255]}
            if ref.cluster:
                arguments["cluster"] = ref.cluster
            self._client("ecs").stop_task(**arguments)
            return {"action": "ecs:StopTask", "task": ref.id}
        except Exception as error:
            return {"action": "failed", "error": f"{type(error).__name__}: {error}"}
