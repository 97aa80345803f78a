"""Triage: a job's ``estimations`` choose its pool and job variables at dispatch.

The rule (:func:`classify`), with the thresholds of :class:`~flows.jobs.policy.JobPolicy`:

    a job is SMALL when   cpu            ≤ INTERLINKED_JOBS_SMALL_MAX_CPU        (default 4 vCPU)
                    and   memory         ≤ INTERLINKED_JOBS_SMALL_MAX_MEMORY_MIB (default 8192 MiB)
                    and   expectedSeconds ≤ INTERLINKED_JOBS_SMALL_MAX_SECONDS   (default 3600 s);
    otherwise it is LARGE.

cpu and memory are the estimate or the defaults (``INTERLINKED_JOBS_DEFAULT_CPU`` /
``..._DEFAULT_MEMORY_MIB``); memory is the escalated one after an out-of-memory failure
(:mod:`.memory`), so a job that outgrows the small pool moves on. An unknown ``expectedSeconds``
does not make a job large. SMALL jobs go to the deployment set ``INTERLINKED_JOBS_SMALL_SET``
(unset: the configured set — ``local`` on the stack, ``ecs`` on AWS), LARGE ones to
``INTERLINKED_JOBS_LARGE_SET`` (``batch`` on AWS; unset: the same as small ones, as the local stack
has one pool). A job type whose entry names an exact ``deployment`` is not moved.

The set's name says how its pool runs work (``ecs*`` an ECS task, ``batch*`` an AWS Batch job,
anything else a local process) and so which job variables the flow run is created with:

- ECS: ``cpu`` (CPU units) and ``memory`` (MiB), rounded up to a Fargate size;
- Batch: ``vcpu`` and ``memory`` (Fargate-rounded when the compute environment is Fargate);
- local: ``env.INTERLINKED_MEMORY_LIMIT_MIB``, the memory limit the script runner enforces;
- every pool: ``labels`` ``interlinked:job-id``, ``interlinked:job-type``, ``interlinked:group`` —
  the ECS and Batch workers turn a run's labels into the task's / job's tags (cost allocation).

``interlinked jobs create --explain`` prints :func:`explain` of the placement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flows.jobs.memory import MEMORY_LIMIT_ENV, memory_cap, memory_for_next
from flows.jobs.model import Job, JobError
from flows.jobs.policy import JobPolicy
from flows.jobs.types import JobTypes

SMALL, LARGE = "small", "large"
LOCAL, ECS, BATCH = "local", "ecs", "batch"
TAG_JOB_ID, TAG_JOB_TYPE, TAG_GROUP = "interlinked:job-id", "interlinked:job-type", "interlinked:group"

# Fargate task sizes: CPU units → the memory sizes (MiB) allowed with it.
FARGATE_SIZES: tuple[tuple[int, tuple[int, ...]], ...] = (
    (256, (512, 1024, 2048)),
    (512, tuple(range(1024, 4097, 1024))),
    (1024, tuple(range(2048, 8193, 1024))),
    (2048, tuple(range(4096, 16385, 1024))),
    (4096, tuple(range(8192, 30721, 1024))),
    (8192, tuple(range(16384, 61441, 4096))),
    (16384, tuple(range(32768, 122881, 8192))),
)


def fargate_size(cpu: float, memory_mib: int) -> tuple[int, int]:
    """The smallest Fargate size (CPU units, MiB) with at least ``cpu`` vCPUs and ``memory_mib``."""
    for units, memories in FARGATE_SIZES:
        if units < cpu * 1024:
            continue
        for memory in memories:
            if memory >= memory_mib:
                return units, memory
    raise JobError(
        f"no Fargate size has {cpu:g} vCPU and {memory_mib} MiB (at most 16 vCPU and 120 GiB): "
        "lower the estimations or send the job to Batch on EC2"
    )


def pool_kind(deployment_set: str) -> str:
    """How a deployment set's pool runs work: ``ecs``, ``batch`` or ``local``, by its name."""
    name = deployment_set.lower()
    if name.startswith(ECS):
        return ECS
    if name.startswith(BATCH):
        return BATCH
    return LOCAL


def classify(
    cpu: float, memory_mib: int, expected_seconds: float | None, policy: JobPolicy
) -> tuple[str, list[str]]:
    """(SMALL or LARGE, the reasons) by the rule in the module docstring."""
    over = []
    if cpu > policy.jobs_small_max_cpu:
        over.append(f"cpu {cpu:g} > {policy.jobs_small_max_cpu:g}")
    if memory_mib > policy.jobs_small_max_memory_mib:
        over.append(f"memory {memory_mib} MiB > {policy.jobs_small_max_memory_mib} MiB")
    if expected_seconds is not None and expected_seconds > policy.jobs_small_max_seconds:
        over.append(f"expectedSeconds {expected_seconds:g} > {policy.jobs_small_max_seconds:g}")
    if over:
        return LARGE, [f"large: {', '.join(over)}"]
    return SMALL, [
        f"small: cpu {cpu:g} ≤ {policy.jobs_small_max_cpu:g}, memory {memory_mib} MiB ≤ "
        f"{policy.jobs_small_max_memory_mib} MiB, expectedSeconds "
        f"{'unknown' if expected_seconds is None else f'{expected_seconds:g}'} ≤ {policy.jobs_small_max_seconds:g}"
    ]


_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/=+@-]{0,127}$")


def check_group(group: object) -> str:
    """``group`` if it can be a tag value (letters, digits, ``_.:/=+@-``, 1-128 long), else :class:`JobError`."""
    if not isinstance(group, str) or not _GROUP.match(group):
        raise JobError(
            f"a group must be 1-128 letters, digits or _.:/=+@- starting with a letter or digit "
            f"(it becomes a cost-allocation tag), got {group!r}"
        )
    return group


def cost_tags(job: Job, group: str) -> dict[str, str]:
    """The cost-allocation tags of the job's ECS task or Batch job."""
    return {TAG_JOB_ID: job.id, TAG_JOB_TYPE: job.job_type, TAG_GROUP: group}


@dataclass
class Placement:
    """Where a dispatch sends a job, with what, and why."""

    size: str
    deployment_set: str
    kind: str
    deployment: str
    cpu: float
    memory_mib: int
    capacity: str
    priced_as: str
    instance_type: str | None
    job_variables: dict[str, Any]
    reasons: list[str] = field(default_factory=list)

    def resources(self) -> dict[str, Any]:
        """What an execution of this placement runs with (recorded on the execution; priced by cost)."""
        return {
            "pool": self.kind,
            "size": self.size,
            "deploymentSet": self.deployment_set,
            "deployment": self.deployment,
            "cpu": self.cpu,
            "memoryMiB": self.memory_mib,
            "capacity": self.capacity,
            "pricedAs": self.priced_as,
            "instanceType": self.instance_type,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.resources(), "jobVariables": self.job_variables, "reasons": list(self.reasons)}


def place(job: Job, job_types: JobTypes, policy: JobPolicy, group: str) -> Placement:
    """The placement of the job's next execution (:class:`JobError` for impossible estimations)."""
    entry = job_types.entries.get(job.job_type)
    if entry is None:
        raise JobError(
            f"unknown job type {job.job_type!r}; known types: {', '.join(job_types.names()) or 'none'}"
        )
    cap = memory_cap(entry, policy.jobs_max_memory_mib)
    memory, memory_reason = memory_for_next(job, default_mib=policy.jobs_default_memory_mib, cap_mib=cap)
    cpu = float(job.estimations.cpu or policy.jobs_default_cpu)
    size, reasons = classify(cpu, memory, job.estimations.expected_seconds, policy)
    reasons.append(f"memory {memory_reason}")
    small_set = policy.jobs_small_set or job_types.deployment_set
    large_set = policy.jobs_large_set or small_set
    if entry.get("deployment"):
        deployment = entry["deployment"]
        deployment_set = deployment.split("/", 1)[-1]
        reasons.append(f"job type {job.job_type!r} names its deployment {deployment}: not moved")
    else:
        deployment_set = large_set if size == LARGE else small_set
        deployment = f"{entry['flow']}/{deployment_set}"
        setting = "INTERLINKED_JOBS_LARGE_SET" if size == LARGE else "INTERLINKED_JOBS_SMALL_SET"
        reasons.append(f"{size} jobs go to deployment set {deployment_set!r} ({setting})")
    kind = pool_kind(deployment_set)
    tags = cost_tags(job, group)
    instance_type = None
    if kind == ECS:
        units, memory = fargate_size(cpu, memory)
        cpu = units / 1024
        capacity = policy.jobs_ecs_capacity
        variables: dict[str, Any] = {"cpu": units, "memory": memory, "labels": tags}
    elif kind == BATCH:
        capacity = policy.jobs_batch_capacity
        if capacity in ("FARGATE", "FARGATE_SPOT"):
            units, memory = fargate_size(cpu, memory)
            cpu = units / 1024
        else:
            instance_type = policy.jobs_batch_instance_type
        variables = {"vcpu": cpu, "memory": memory, "labels": tags}
    else:
        capacity = "LOCAL"
        variables = {"env": {MEMORY_LIMIT_ENV: str(memory)}, "labels": tags}
    priced_as = policy.jobs_local_priced_as if kind == LOCAL else capacity
    if priced_as in ("EC2", "SPOT") and kind == LOCAL:
        instance_type = policy.jobs_batch_instance_type
    return Placement(
        size=size,
        deployment_set=deployment_set,
        kind=kind,
        deployment=deployment,
        cpu=cpu,
        memory_mib=memory,
        capacity=capacity,
        priced_as=priced_as,
        instance_type=instance_type,
        job_variables=variables,
        reasons=reasons,
    )


def explain(placement: dict[str, Any] | Placement) -> str:
    """The placement as lines a person reads (what ``jobs create --explain`` prints)."""
    document = placement.to_json() if isinstance(placement, Placement) else placement
    lines = [
        f"triage: {document['size']} → {document['deployment']} ({document['pool']} pool, "
        f"{document['cpu']:g} vCPU, {document['memoryMiB']} MiB, {document['capacity']})",
        *(f"  - {reason}" for reason in document.get("reasons", [])),
        f"  job variables: {document['jobVariables']}",
    ]
    if document.get("estimate"):
        estimate = document["estimate"]
        lines.append(
            f"  estimated cost: {estimate['amount']:.4f} {estimate['currency']} ({estimate['basis']})"
        )
    return "\n".join(lines)
