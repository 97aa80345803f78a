"""Per-group limits of S3 submissions: concurrent jobs, parallel datasets, budget and price.

Defaults come from ``INTERLINKED_SUBMISSION_*`` environment variables (or ``.env``), per-group
overrides from ``INTERLINKED_SUBMISSION_GROUPS`` (JSON) and — editable at run time in the Prefect
UI, without restarting anything — from the Prefect Variable ``submission-quotas``::

    {"price_per_hour": 1.5,
     "defaults": {"max_concurrent_jobs": 2, "budget": 50},
     "groups": {"lab-a": {"max_concurrent_jobs": 1, "dataset_concurrency": 2, "budget": 10.0}}}

The Variable wins over the environment, a group's own entry over the defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class GroupLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_concurrent_jobs: int | None = Field(default=None, ge=1)
    dataset_concurrency: int | None = Field(default=None, ge=1)
    budget: float | None = Field(default=None, ge=0)


class SubmissionSettings(BaseSettings):
    """Fields are named as they would be in ``interlinked.settings.Settings`` (prefix ``INTERLINKED_``)."""

    model_config = SettingsConfigDict(env_prefix="INTERLINKED_", env_file=".env", extra="ignore")

    submission_max_concurrent_jobs: int = Field(default=2, ge=1, description="Running jobs per group.")
    submission_dataset_concurrency: int = Field(default=4, ge=1, description="Datasets analysed at once per job.")
    submission_budget: float = Field(default=50.0, ge=0, description="Estimated spend allowed per group.")
    submission_price_per_hour: float = Field(default=1.0, ge=0, description="Price of one analysis-hour.")
    submission_slot_wait_seconds: float = Field(
        default=6 * 3600,
        ge=0,
        description="How long a submission waits for a free job slot of its group before it is refused.",
    )
    submission_groups: dict[str, GroupLimits] = Field(default_factory=dict, description="Per-group overrides.")
    submission_quota_variable: str = Field(
        default="submission-quotas", description="Prefect Variable with run-time overrides (JSON)."
    )


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
            raise ValueError(f"Prefect Variable {settings.submission_quota_variable!r} is invalid: {error}") from None
        if "price_per_hour" in overrides:
            price = float(overrides["price_per_hour"])
    return Quota(
        group=group, price_per_hour=price, slot_wait_seconds=settings.submission_slot_wait_seconds, **values
    )
