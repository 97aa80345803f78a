"""Settings of the job lifecycle's resource policy: checkpoints, memory escalation, triage, prices
and budgets (``INTERLINKED_JOBS_*`` environment variables or ``.env``).

They live here, not in :mod:`interlinked.settings`, because ``flows/`` never imports
``interlinked/``; the names are what they would be there (prefix ``INTERLINKED_``). Nested values
(the price table, per-group budgets) are JSON, e.g.
``INTERLINKED_JOBS_BUDGETS='{"lab-a": 25, "lab-b": 100}'``.

Default prices (:data:`PRICES_AS_OF`): AWS us-east-1 public list prices, Linux/x86, as of that date
(https://aws.amazon.com/fargate/pricing/, https://aws.amazon.com/ec2/pricing/on-demand/). Spot
prices move with supply; the Spot defaults are a typical price on that date, not a quote. Set your
own region's prices with ``INTERLINKED_JOBS_PRICES``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PRICES_AS_OF = "2024-11-01"
PRICES_REGION = "us-east-1"

Capacity = Literal["FARGATE", "FARGATE_SPOT", "EC2", "SPOT"]


class FargatePrice(BaseModel):
    """Fargate's price per vCPU-hour and per GB-hour (Linux/x86)."""

    model_config = ConfigDict(extra="forbid")

    vcpu_hour: float = Field(ge=0, description="USD per vCPU-hour.")
    gb_hour: float = Field(ge=0, description="USD per GB-hour of memory.")


class InstancePrice(BaseModel):
    """An EC2 instance type: its size and its hourly prices (on demand and a typical Spot price)."""

    model_config = ConfigDict(extra="forbid")

    vcpu: float = Field(gt=0, description="vCPUs of the instance.")
    memory_gib: float = Field(gt=0, description="Memory of the instance, GiB.")
    on_demand_hour: float = Field(ge=0, description="USD per instance-hour, on demand.")
    spot_hour: float = Field(ge=0, description="USD per instance-hour on Spot (typical; Spot prices move).")


def _instance(vcpu: float, memory_gib: float, on_demand: float, spot: float) -> InstancePrice:
    return InstancePrice(vcpu=vcpu, memory_gib=memory_gib, on_demand_hour=on_demand, spot_hour=spot)


class PriceTable(BaseModel):
    """What a unit of compute costs, by capacity. Defaults: us-east-1 as of :data:`PRICES_AS_OF`."""

    model_config = ConfigDict(extra="forbid")

    as_of: str = Field(default=PRICES_AS_OF, description="Date the prices were taken (shown with costs).")
    region: str = Field(default=PRICES_REGION, description="Region the prices are for.")
    currency: str = Field(default="USD", description="Currency of every price.")
    fargate: FargatePrice = Field(
        default_factory=lambda: FargatePrice(vcpu_hour=0.04048, gb_hour=0.004445),
        description="Fargate on demand (ECS tasks, Batch on FARGATE).",
    )
    fargate_spot: FargatePrice = Field(
        default_factory=lambda: FargatePrice(vcpu_hour=0.012545, gb_hour=0.001377),
        description="Fargate Spot (typical price on the date; it moves).",
    )
    instances: dict[str, InstancePrice] = Field(
        default_factory=lambda: {
            "m5.large": _instance(2, 8, 0.096, 0.038),
            "m5.xlarge": _instance(4, 16, 0.192, 0.077),
            "m5.2xlarge": _instance(8, 32, 0.384, 0.155),
            "c5.large": _instance(2, 4, 0.085, 0.034),
            "c5.xlarge": _instance(4, 8, 0.17, 0.068),
            "c5.2xlarge": _instance(8, 16, 0.34, 0.137),
            "r5.large": _instance(2, 16, 0.126, 0.043),
            "r5.xlarge": _instance(4, 32, 0.252, 0.087),
        },
        description="EC2 instance types (Batch on EC2 or SPOT): size, on-demand and Spot hourly prices.",
    )


class JobPolicy(BaseSettings):
    """Resource policy of jobs: checkpoint size, memory escalation, triage thresholds, prices, budgets."""

    model_config = SettingsConfigDict(env_prefix="INTERLINKED_", env_file=".env", extra="ignore")

    # -- checkpoints ------------------------------------------------------------------------------
    jobs_checkpoint_max_bytes: int = Field(
        default=64 * 1024,
        ge=16,
        le=350 * 1024,
        description="Largest checkpoint (as compact JSON, UTF-8 bytes). It is stored in the job's record "
        "and its S3 copy, rewritten on every change, so keep big state in S3 and checkpoint its key.",
    )

    # -- memory and triage ----------------------------------------------------------------------
    jobs_default_cpu: float = Field(default=1.0, gt=0, description="vCPUs of a job without estimations.cpu.")
    jobs_default_memory_mib: int = Field(
        default=2048, ge=16, description="Memory of a job without estimations.memoryMiB, MiB."
    )
    jobs_max_memory_mib: int = Field(
        default=30720,
        ge=16,
        description="Cap of memory escalation (and of estimations.memoryMiB), MiB, for job types whose "
        "entry in job_types.json sets no maxMemoryMiB.",
    )
    jobs_retry_on_oom: bool = Field(
        default=True,
        description="An execution that failed OUT_OF_MEMORY is retried at once with twice the memory "
        "(up to the cap) while the job has attempts left (estimations.maxAttempts).",
    )
    jobs_small_max_cpu: float = Field(
        default=4.0, gt=0, description="Triage: a job needing at most this many vCPUs can be small."
    )
    jobs_small_max_memory_mib: int = Field(
        default=8192, ge=16, description="Triage: a job needing at most this much memory (MiB) can be small."
    )
    jobs_small_max_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="Triage: a job expected to run at most this long (s) can be small; longer is large.",
    )
    jobs_small_set: str | None = Field(
        default=None,
        description="Deployment set of small jobs (`local`, or `ecs` on AWS). Unset: the configured "
        "deployment set (INTERLINKED_DEPLOYMENT_SET).",
    )
    jobs_large_set: str | None = Field(
        default=None,
        description="Deployment set of large jobs (`batch` on AWS). Unset: the same as small jobs (the "
        "local stack has one pool).",
    )

    # -- cost -------------------------------------------------------------------------------------
    jobs_prices: PriceTable = Field(default_factory=PriceTable, description="The price table (JSON).")
    jobs_ecs_capacity: Literal["FARGATE", "FARGATE_SPOT"] = Field(
        default="FARGATE", description="Capacity ECS tasks run on (Terraform's default capacity provider)."
    )
    jobs_batch_capacity: Capacity = Field(
        default="FARGATE",
        description="Capacity of the Batch compute environment (Terraform batch_compute_type; SPOT = EC2 Spot).",
    )
    jobs_batch_instance_type: str = Field(
        default="m5.xlarge",
        description="Instance type priced for Batch on EC2 or SPOT (a key of the price table's instances); "
        "a job pays its share of it: max(vCPU share, memory share).",
    )
    jobs_local_priced_as: Capacity | Literal["FREE"] = Field(
        default="FARGATE",
        description="How runs on the local pool are priced: as what they would cost on this capacity, or FREE.",
    )
    jobs_default_group: str = Field(default="default", description="Group of a job created without one.")
    jobs_budget: float | None = Field(
        default=None, ge=0, description="Budget (USD per period) of every group without its own; unset: none."
    )
    jobs_budgets: dict[str, float] = Field(
        default_factory=dict, description="Budget (USD per period) per group, JSON: {group: amount}."
    )
    jobs_budget_period: Literal["month", "day", "all"] = Field(
        default="month",
        description="What a budget covers: the calendar month (UTC) so far, the day so far, or all time.",
    )

    def budget_of(self, group: str) -> float | None:
        """The group's budget per period (None: no limit)."""
        return self.jobs_budgets.get(group, self.jobs_budget)
