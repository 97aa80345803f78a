"""Tuning of the analysis service: ``INTERLINKED_ANALYSIS_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Tuning of the service; ``INTERLINKED_ANALYSIS_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="INTERLINKED_ANALYSIS_", extra="ignore")

    queue_url: str | None = Field(default=None, description="Work queue; default: the work-queue block.")
    topic_arn: str | None = Field(
        default=None, description="Response topic; default: the work-results block."
    )
    data_bucket: str | None = Field(
        default=None, description="Experiments, cache, records; default: data block."
    )
    results_bucket: str | None = Field(
        default=None,
        description="Current-envelope (ETag) results, gzip JSON under the ETag; default: the data bucket.",
    )
    results_prefix: str = Field(
        default="worker-results/",
        description="Key prefix of ETag results in results_bucket ('' for a bucket of their own, as Cellenics).",
    )
    signed_url_seconds: int = Field(
        default=3600, ge=60, description="Validity of the signedUrl a current-envelope response carries."
    )
    prepare_sources: list[str] = Field(
        default_factory=list,
        description=(
            "Where PrepareExperiment may read its source matrix, besides the data bucket: 'bucket' "
            "(all of it) or 'bucket/prefix/'; '*' allows any bucket the flow's role can read."
        ),
    )
    prepare_deployment: str = Field(
        default="prepare-experiment/local", description="Flow/deployment for PrepareExperiment."
    )
    workers: int = Field(default=4, ge=1, description="Requests computed at the same time.")
    visibility_seconds: int = Field(
        default=30, ge=2, le=43200, description="Invisibility per receive; extended while working."
    )
    poll_seconds: int = Field(default=20, ge=0, le=20, description="SQS long-poll wait.")
    refresh_seconds: float = Field(
        default=2.0, gt=0, description="How often experiment ETags are re-checked."
    )
    max_experiments: int = Field(default=4, ge=1, description="Experiments kept in memory.")
    max_experiment_bytes: int | None = Field(
        default=None, description="Memory budget of the experiments (bytes)."
    )
    result_memory_bytes: int = Field(default=256 << 20, ge=0, description="In-memory result cache budget.")
    s3_cache_min_compute_seconds: float = Field(
        default=0.02, ge=0, description="Results that took at least this long to compute are cached in S3."
    )
    status_file: Path | None = Field(default=None, description="Heartbeat/readiness file.")
    journal_file: Path | None = Field(
        default=None,
        description="Ids of the messages answered here (default: next to the status file, if any).",
    )
    fault_after: Literal["publish", "record"] | None = Field(
        default=None,
        description=(
            "Fault injection for tests: the process kills itself (SIGKILL) right after this step of "
            "the first message it answers: 'publish' (response published, nothing recorded) or "
            "'record' (response record written, message not yet deleted). Never set it in production."
        ),
    )
    event_batch_seconds: float = Field(
        default=1.0, gt=0, description="Longest wait before request events go out."
    )
    event_batch_size: int = Field(default=200, ge=1, description="Requests per Prefect event at most.")
    heartbeat_seconds: float = Field(default=2.0, gt=0)
    summary_seconds: float = Field(default=60.0, gt=0, description="Summary artifact update interval.")
    prepare_poll_seconds: float = Field(default=2.0, gt=0, description="Polling of PrepareExperiment runs.")
    max_receive_count: int | None = Field(default=None, description="Default: the queue's redrive policy.")

    def journal_path(self) -> Path | None:
        """The journal file: ``journal_file``, else next to the status file (if any)."""
        if self.journal_file is not None or self.status_file is None:
            return self.journal_file
        return self.status_file.with_name(self.status_file.name + ".journal")
