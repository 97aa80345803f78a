"""The job record (seed 004, Archimedes) and its error.

A job's JSON keeps the seed's field names so Archimedes users read what they know::

    {"id", "jobType", "inputData", "inputFiles", "estimations", "state", "createdAt", "updatedAt",
     "flowRunId", "currentExecution": {"executionId", "attempt", "createdAt", "updatedAt", "metrics",
     "progress", "state", "failureReason", "finishedAt", "flowRunId", "infrastructureId",
     "checkpoint", "checkpointedAt", "resources", "cost"},
     "executions": [...every attempt...], "outputData", "outputFiles", "group", "placement", "version"}

``currentExecution`` is the last entry of ``executions`` (null before the first ``EXECUTE``).
``version`` grows by one with every stored change; stores use it for conditional writes.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator
from pydantic.alias_generators import to_camel

# Job states. A job is CREATED, DISPATCHED (a flow run exists or is being created), EXECUTING (an
# execution reported EXECUTE), then SUCCEEDED, FAILED or CANCELLED; a retry dispatches it again.
CREATED, DISPATCHED, EXECUTING, SUCCEEDED, FAILED, CANCELLED = (
    "CREATED",
    "DISPATCHED",
    "EXECUTING",
    "SUCCEEDED",
    "FAILED",
    "CANCELLED",
)
JOB_STATES = (CREATED, DISPATCHED, EXECUTING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL_JOB_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})

# Execution states: one execution per attempt, EXECUTING until SUCCESS, FAILURE or CANCELLED.
EXECUTION_EXECUTING, SUCCESS, FAILURE, EXECUTION_CANCELLED = "EXECUTING", "SUCCESS", "FAILURE", "CANCELLED"
EXECUTION_STATES = (EXECUTION_EXECUTING, SUCCESS, FAILURE, EXECUTION_CANCELLED)

# The signals of the SDK.
DISPATCH, EXECUTE = "DISPATCH", "EXECUTE"
JOB_SIGNALS = (DISPATCH, EXECUTE)
EXECUTION_SIGNALS = (SUCCESS, FAILURE)

DEFAULT_MAX_ATTEMPTS = 3


class JobError(ValueError):
    """A request the job cannot take (unknown job, type or execution, a transition its state does not
    allow, a value out of range); the message says why. Nothing was changed."""


class JobNotFound(JobError, LookupError):
    """No job with that id."""


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds and ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Estimations(_Camel):
    """What the system needs to know to triage and watch a job; other keys are kept as given."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    cpu: float | None = Field(default=None, gt=0, description="vCPUs the work needs.")
    memory_mib: int | None = Field(
        default=None, gt=0, alias="memoryMiB", description="Memory the work needs, MiB."
    )
    expected_seconds: float | None = Field(default=None, gt=0, description="Expected run time, seconds.")
    heartbeat_timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description="No progress update for longer = stuck: the execution is stopped, failed and retried.",
    )
    max_attempts: int = Field(
        default=DEFAULT_MAX_ATTEMPTS, ge=1, le=100, description="Executions in all (first run + retries)."
    )


class Execution(_Camel):
    """One attempt at a job, linked to its flow run and the infrastructure that ran it."""

    execution_id: str
    attempt: int = Field(ge=1)
    created_at: str
    updated_at: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    progress: float = 0.0
    state: str = EXECUTION_EXECUTING
    failure_reason: str = ""
    finished_at: str | None = None
    flow_run_id: str | None = None
    infrastructure_id: str | None = None
    # Resource policy (flows/jobs/checkpoints.py, memory.py, triage.py, cost.py):
    checkpoint: Any = Field(
        default=None, description="The last checkpoint of the job (carried over from earlier executions)."
    )
    checkpointed_at: str | None = None
    resources: dict[str, Any] | None = Field(
        default=None, description="What this execution ran with: pool, cpu, memoryMiB, capacity."
    )
    cost: dict[str, Any] | None = Field(default=None, description="Its cost, recorded when it ended.")
    failure_code: str | None = Field(
        default=None, description="Stable code of the failure (flows.jobs.failures.FailureCode)."
    )
    failure_evidence: dict[str, Any] = Field(
        default_factory=dict,
        description="What the failure code was read from (exit code, reason texts, ...).",
    )


class Job(_Camel):
    """A job: what to do, how big it is, where it stands, every execution, and its outputs."""

    id: str
    job_type: str
    input_data: dict[str, Any] = Field(default_factory=dict)
    input_files: dict[str, Any] = Field(default_factory=dict)
    estimations: Estimations = Field(default_factory=Estimations)
    state: str = CREATED
    created_at: str
    updated_at: str
    flow_run_id: str | None = Field(default=None, description="The flow run of the latest dispatch.")
    dispatched_at: str | None = None
    executions: list[Execution] = Field(default_factory=list)
    output_data: dict[str, Any] = Field(default_factory=dict)
    output_files: dict[str, Any] = Field(default_factory=dict)
    group: str | None = Field(default=None, description="Who pays: cost-allocation tag and budget.")
    placement: dict[str, Any] | None = Field(
        default=None, description="Where the latest dispatch sent the job and why (triage)."
    )
    sweep: dict[str, Any] = Field(
        default_factory=dict,
        description="The sweeper's last verdict on this job when it was not healthy (flows.jobs.sweeper).",
    )
    version: int = 0

    @computed_field(alias="currentExecution")
    @property
    def current_execution(self) -> Execution | None:
        return self.executions[-1] if self.executions else None

    @field_validator("state")
    @classmethod
    def _known_state(cls, value: str) -> str:
        if value not in JOB_STATES:
            raise ValueError(f"unknown job state {value!r}")
        return value

    def execution(self, execution_id: str) -> Execution:
        """The execution ``execution_id`` of this job (:class:`JobError` when it has none such)."""
        for execution in self.executions:
            if execution.execution_id == execution_id:
                return execution
        known = ", ".join(e.execution_id for e in self.executions) or "none yet"
        raise JobError(f"job {self.id} has no execution {execution_id!r} (its executions: {known})")

    def to_json(self) -> dict[str, Any]:
        """The job as the seed's JSON (camelCase names, ``currentExecution`` included)."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Job:
        return cls.model_validate(document)


def check_progress(progress: Any) -> float:
    """``progress`` as a float in [0, 1], else :class:`JobError`."""
    if isinstance(progress, bool) or not isinstance(progress, int | float):
        raise JobError(f"progress must be a number in [0, 1], got {progress!r}")
    value = float(progress)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise JobError(f"progress must be in [0, 1], got {progress!r}")
    return value


def check_mapping(name: str, value: Any) -> dict[str, Any]:
    """``value`` as a JSON object (None → {}), else :class:`JobError` naming the field."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise JobError(f"{name} must be a JSON object, got {type(value).__name__}")
    if not all(isinstance(key, str) for key in value):
        raise JobError(f"{name} must have string keys")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise JobError(f"{name} must be plain JSON: {error}") from None
    return value
