"""The ``aws-batch`` pool's job variables and the job configuration a flow run is submitted with.

:class:`BatchVariables` are what a pool's base job template and a deployment's ``job_variables``
may set; :class:`BatchJobConfiguration` is their rendered form for one flow run: it checks what AWS
would refuse less clearly and builds the ``batch.submit_job`` request.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import TYPE_CHECKING, Any, Self
from uuid import UUID

from prefect.client.schemas.objects import FlowRun
from prefect.workers.base import BaseJobConfiguration, BaseVariables
from prefect_aws.credentials import AwsCredentials
from pydantic import Field, model_validator

if TYPE_CHECKING:
    from prefect.client.schemas.objects import APIFlow, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse

# Settings that describe the worker's own machine; a container gets its own.
WORKER_LOCAL_SETTINGS = ("PREFECT_HOME", "PREFECT_PROFILES_PATH", "PREFECT_LOCAL_STORAGE_PATH")
DEFAULT_SECRET_ENV_NAMES = ["PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"]
# AWS Batch limits: job names and tags.
_JOB_NAME_INVALID = re.compile(r"[^A-Za-z0-9_-]+")
_TAG_INVALID = re.compile(r"[^\w .:/=+\-@]+")
_MAX_TAGS = 50
# Commands whose process is the Prefect engine: it reports the flow run's state itself.
_ENGINE_MARKERS = ("prefect.engine", "prefect flow-run execute")


def runs_prefect_engine(command: str | None) -> bool:
    """Whether ``command`` starts the Prefect engine for the flow run (which then owns its state)."""
    normalized = " ".join(shlex.split(command or ""))
    return any(marker in normalized for marker in _ENGINE_MARKERS)


def batch_job_name(name: str | None, fallback: str = "prefect-flow-run") -> str:
    """A valid Batch job name: letters, digits, ``-`` and ``_``, starting alphanumeric, 2-128 long."""
    cleaned = _JOB_NAME_INVALID.sub("-", name or "").strip("-_")
    if not cleaned:
        cleaned = fallback
    if not cleaned[0].isalnum():
        cleaned = f"p{cleaned}"
    if len(cleaned) < 2:
        cleaned = f"{cleaned}-{fallback}"
    return cleaned[:128]


def batch_tags(labels: dict[str, str]) -> dict[str, str]:
    """Prefect labels as Batch tags (allowed characters, lengths, no ``aws:`` keys, at most 50)."""
    tags: dict[str, str] = {}
    for key, value in labels.items():
        if value is None:
            continue
        key = _TAG_INVALID.sub("_", str(key))[:128]
        if not key or key.lower().startswith("aws:"):
            continue
        tags[key] = _TAG_INVALID.sub("_", str(value))[:256]
        if len(tags) == _MAX_TAGS:
            break
    return tags


class BatchJobConfiguration(BaseJobConfiguration):
    """What the worker needs to submit one flow run as an AWS Batch job."""

    aws_credentials: AwsCredentials = Field(default_factory=AwsCredentials)
    job_queue: str | None = Field(default=None)
    job_definition: str | None = Field(default=None)
    vcpu: float | None = Field(default=None)
    memory: int | None = Field(default=None)
    retry_strategy: dict[str, Any] | None = Field(default=None)
    timeout_seconds: int | None = Field(default=None)
    array_size: int | None = Field(default=None)
    share_identifier: str | None = Field(default=None)
    secret_env_names: list[str] = Field(default_factory=lambda: list(DEFAULT_SECRET_ENV_NAMES))
    runnable_warning_seconds: float | None = Field(default=600)
    runnable_timeout_seconds: float | None = Field(default=None)
    poll_interval_seconds: float = Field(default=5.0)
    cancel_grace_seconds: float = Field(default=60)

    @model_validator(mode="after")
    def _check_limits(self) -> Self:
        if self.vcpu is not None and self.vcpu <= 0:
            raise ValueError(f"vcpu must be positive, got {self.vcpu}")
        if self.memory is not None and self.memory < 4:
            raise ValueError(f"memory is in MiB and must be at least 4, got {self.memory}")
        if self.timeout_seconds is not None and self.timeout_seconds < 60:
            raise ValueError(
                f"timeout_seconds must be at least 60 (AWS Batch minimum), got {self.timeout_seconds}"
            )
        if self.array_size is not None and not 2 <= self.array_size <= 10_000:
            raise ValueError(f"array_size must be between 2 and 10000 (or unset), got {self.array_size}")
        if self.poll_interval_seconds <= 0:
            raise ValueError(f"poll_interval_seconds must be positive, got {self.poll_interval_seconds}")
        return self

    def prepare_for_flow_run(
        self,
        flow_run: FlowRun,
        deployment: DeploymentResponse | None = None,
        flow: APIFlow | None = None,
        work_pool: WorkPool | None = None,
        worker_name: str | None = None,
        worker_id: UUID | None = None,
    ) -> None:
        own_env = dict(self.env)
        super().prepare_for_flow_run(flow_run, deployment, flow, work_pool, worker_name, worker_id=worker_id)
        for name in WORKER_LOCAL_SETTINGS:
            if name not in own_env:
                self.env.pop(name, None)

    @property
    def command_args(self) -> list[str]:
        return shlex.split(self.command or self._base_flow_run_command())

    def check_submittable(self) -> None:
        """Clear errors for what AWS would refuse less clearly (or accept and then misbehave)."""
        missing = [name for name in ("job_queue", "job_definition") if not getattr(self, name)]
        if missing:
            raise ValueError(
                f"the aws-batch work pool needs {' and '.join(missing)}: set it in the pool's base job "
                "template (Terraform outputs batch_job_queue_arn / batch_job_definition_name) or in "
                "the deployment's job_variables"
            )
        if self.array_size and runs_prefect_engine(self.command):
            raise ValueError(
                f"array_size={self.array_size} would start the same flow run {self.array_size} times: "
                "an array job needs a command that takes its share of the work from "
                "AWS_BATCH_JOB_ARRAY_INDEX, not the Prefect engine"
            )

    def submit_job_request(self) -> dict[str, Any]:
        """The keyword arguments of ``batch.submit_job`` for this (prepared) configuration."""
        hidden = set(self.secret_env_names)
        environment = [
            {"name": name, "value": value}
            for name, value in sorted(self.env.items())
            if value is not None and name not in hidden
        ]
        overrides: dict[str, Any] = {"command": self.command_args, "environment": environment}
        resources = []
        if self.vcpu is not None:
            resources.append({"type": "VCPU", "value": f"{self.vcpu:g}"})
        if self.memory is not None:
            resources.append({"type": "MEMORY", "value": str(self.memory)})
        if resources:
            overrides["resourceRequirements"] = resources
        request: dict[str, Any] = {
            "jobName": batch_job_name(self.name),
            "jobQueue": self.job_queue,
            "jobDefinition": self.job_definition,
            "containerOverrides": overrides,
        }
        if self.retry_strategy:
            request["retryStrategy"] = self.retry_strategy
        if self.timeout_seconds:
            request["timeout"] = {"attemptDurationSeconds": int(self.timeout_seconds)}
        if self.array_size:
            request["arrayProperties"] = {"size": int(self.array_size)}
        if self.share_identifier:
            request["shareIdentifier"] = self.share_identifier
        tags = batch_tags(self.labels)
        if tags:
            request["tags"] = tags
        return request

    def describe_request(self) -> str:
        """One line for the flow run's log: where the job goes and what it asks for."""
        parts = [
            f"queue {self.job_queue}",
            f"definition {self.job_definition}",
            f"command {shlex.join(self.command_args)}",
        ]
        if self.vcpu is not None:
            parts.append(f"vCPU {self.vcpu:g}")
        if self.memory is not None:
            parts.append(f"memory {self.memory} MiB")
        if self.timeout_seconds:
            parts.append(f"attempt timeout {self.timeout_seconds} s")
        if self.retry_strategy:
            parts.append(f"retry strategy {json.dumps(self.retry_strategy, sort_keys=True)}")
        if self.array_size:
            parts.append(f"array size {self.array_size}")
        return ", ".join(parts)


class BatchVariables(BaseVariables):
    """Job variables of the ``aws-batch`` work pool (pool defaults, overridden per deployment)."""

    aws_credentials: AwsCredentials = Field(
        title="AWS Credentials",
        default_factory=AwsCredentials,
        description=(
            "AWS credentials block used to submit, watch and terminate jobs (region, keys, and "
            "aws_client_parameters.endpoint_url for an emulator). Without one, boto3's own "
            "configuration (AWS_ENDPOINT_URL, AWS_REGION, instance/task role) applies."
        ),
    )
    job_queue: str = Field(
        title="Job queue",
        description="Name or ARN of the AWS Batch job queue (Terraform output batch_job_queue_arn).",
    )
    job_definition: str = Field(
        title="Job definition",
        description=(
            "Job definition running the project image: name (latest active revision), name:revision "
            "or ARN (Terraform output batch_job_definition_name). Batch cannot override the image "
            "per job; the image is the definition's."
        ),
    )
    vcpu: float | None = Field(
        default=None,
        gt=0,
        title="vCPU",
        description="vCPUs of the job (VCPU resource requirement). Unset: the job definition's.",
    )
    memory: int | None = Field(
        default=None,
        ge=4,
        description="Memory of the job in MiB (MEMORY resource requirement). Unset: the job definition's.",
    )
    retry_strategy: dict[str, Any] | None = Field(
        default=None,
        title="Retry strategy",
        description=(
            'Batch retryStrategy, e.g. {"attempts": 2, "evaluateOnExit": [{"onStatusReason": '
            '"Host EC2*", "action": "RETRY"}, {"onReason": "*", "action": "EXIT"}]}. Replaces the '
            "job definition's strategy entirely. Unset: the definition's."
        ),
    )
    timeout_seconds: int | None = Field(
        default=None,
        ge=60,
        title="Attempt timeout (seconds)",
        description="Batch kills an attempt running longer than this. Unset: the job definition's.",
    )
    array_size: int | None = Field(
        default=None,
        ge=2,
        le=10000,
        title="Array size",
        description=(
            "Submit an array job of this many children; each gets AWS_BATCH_JOB_ARRAY_INDEX. Needs a "
            "command that takes its share of the work (not the Prefect engine); the run completes "
            "when every child succeeds."
        ),
    )
    share_identifier: str | None = Field(
        default=None,
        title="Share identifier",
        description="Fair-share identifier (required by job queues with a scheduling policy).",
    )
    secret_env_names: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SECRET_ENV_NAMES),
        title="Secret environment names",
        description=(
            "Variables the job definition supplies from Secrets Manager: never sent as plain "
            "environment overrides (describe-jobs would show them)."
        ),
    )
    runnable_warning_seconds: float | None = Field(
        default=600,
        ge=0,
        title="RUNNABLE warning (seconds)",
        description=(
            "Warn in the flow run's log (and emit aws-batch.job.stuck-runnable) when the job stays "
            "RUNNABLE this long: the compute environment cannot place it. Unset: never."
        ),
    )
    runnable_timeout_seconds: float | None = Field(
        default=None,
        ge=0,
        title="RUNNABLE limit (seconds)",
        description="Terminate the job and report the run crashed after this long RUNNABLE. Unset: wait.",
    )
    poll_interval_seconds: float = Field(
        default=5.0,
        gt=0,
        title="Poll interval (seconds)",
        description="How often the worker describes the job (and reads the flow run's state).",
    )
    cancel_grace_seconds: float = Field(
        default=60,
        ge=0,
        title="Cancellation grace (seconds)",
        description=(
            "A cancelled flow run whose job is RUNNING the Prefect engine gets this long to stop "
            "itself (prefect flow-run execute cancels the flow gracefully) before the job is "
            "terminated. A job that has not started is terminated at once."
        ),
    )
