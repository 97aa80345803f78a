"""One typed settings object for the whole system.

Values come from ``INTERLINKED_*`` environment variables or a ``.env`` file in the working
directory. AWS access itself is *not* configured here: boto3 reads ``AWS_ENDPOINT_URL``, the region
and the credentials from its own standard sources, so the same code runs against the moto server,
LocalStack or real AWS.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The repository root when installed editable (the supported way); state lives next to the code
# so that two checkouts never share a Prefect database.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    """Resource names, the local stack's ports and its state directory."""

    model_config = SettingsConfigDict(
        env_prefix="INTERLINKED_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # -- local stack ------------------------------------------------------------------------
    state_dir: Path = Field(
        default=PROJECT_ROOT / ".interlinked",
        description="Where the local stack keeps its database, logs and process ids.",
    )
    host: str = Field(default="127.0.0.1", description="Loopback address every local service binds to.")
    prefect_port: int = Field(default=4200, description="Port of the local Prefect server (API and UI).")
    aws_port: int = Field(default=5055, description="Port of the local moto server (the AWS emulator).")
    script_api_port: int = Field(
        default=5057, description="Port of the seed's HTTP API (submitjob, upload, fetch, ...) on loopback."
    )
    postgres_port: int = Field(
        default=5433,
        description="Port of the local PostgreSQL server (loopback only; 5433 leaves a system one on 5432 be).",
    )
    emulator_enforce_iam: bool = Field(
        default=True,
        description="The local AWS emulator checks request signatures and IAM policies (as AWS does): "
        "the well-known keys `test`/`test` are an admin user, the stack's services, script jobs and "
        "groups get least-privilege identities of their own. `false`: any keys are accepted.",
    )
    prefect_auth: bool = Field(
        default=True,
        description="The local Prefect server asks every API call for basic auth "
        "(`PREFECT_SERVER_API_AUTH_STRING`): `up` makes a random secret once per state directory "
        "(`{state_dir}/prefect-auth`, mode 0600; or takes `PREFECT_API_AUTH_STRING` from the "
        "environment) and gives it to the stack's own processes, not to script jobs. `off`: no auth.",
    )
    start_timeout: float = Field(default=180.0, description="Seconds `up` waits for a part to answer.")
    region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("INTERLINKED_REGION", "AWS_DEFAULT_REGION", "AWS_REGION"),
        description="AWS region used by the local stack (and as the default elsewhere).",
    )

    # -- AWS resource names (Terraform outputs feed these on AWS) -------------------------------
    data_bucket: str = Field(default="interlinked-data", description="Scripts, jobs, results, logs.")
    analysis_bucket: str = Field(default="interlinked-analysis", description="Group submissions.")
    work_queue: str = Field(
        default="development-queue.fifo",
        validation_alias=AliasChoices("INTERLINKED_WORK_QUEUE", "WORKER_QUEUE"),
        description="FIFO queue the analysis service reads (the seed's WORKER_QUEUE).",
    )
    events_queue: str = Field(default="interlinked-events", description="Queue the event bridge reads.")
    work_results_topic: str = Field(default="interlinked-work-results", description="WorkResponses.")
    job_events_topic: str = Field(default="interlinked-job-events", description="Final job states.")
    max_receive_count: int = Field(default=5, description="Receives before a message goes to its DLQ.")
    bridge_concurrency: int = Field(
        default=16,
        ge=1,
        le=64,
        validation_alias=AliasChoices("INTERLINKED_BRIDGE_CONCURRENCY", "INTERLINKED_BRIDGE_POLLERS"),
        description="Batches of up to 10 events the bridge consumer has in flight at once (each one "
        "received, routed, created as runs, recorded and deleted by a thread of its own); 1 is one "
        "serial loop. A batch mostly waits on SQS and the Prefect server; how many of them are at "
        "the server at once is bridge_prefect_calls.",
    )
    bridge_prefect_calls: int = Field(
        default=4,
        ge=1,
        le=64,
        validation_alias=AliasChoices("INTERLINKED_BRIDGE_PREFECT_CALLS"),
        description="Of the bridge consumer's batches in flight, how many may be at the Prefect server "
        "at once (the others wait their turn, their messages kept invisible). The server makes runs on "
        "one core: more calls at once only queue there, and a call queued longer than the client's "
        "timeout (15 s) is sent again (16 at once under load: timeouts and retries).",
    )

    # -- task collections ---------------------------------------------------------------------
    tasks_backend: str = Field(
        default="postgres",
        description="Where task collections live: `dynamodb` (the tasks table) or `postgres`.",
    )
    tasks_table: str = Field(
        default="interlinked-tasks", description="DynamoDB table of the task collections."
    )
    tasks_schema: str = Field(
        default="interlinked_tasks", description="PostgreSQL schema of the task collections' tables."
    )

    # -- Prefect ------------------------------------------------------------------------------
    work_pool: str = Field(default="local", description="Work pool the local deployments run on.")
    worker_type: str = Field(
        default="warm-process",
        description="Worker type of the local pool: `warm-process` (fork server) or the stock `process`.",
    )
    prefect_database: Literal["postgres", "sqlite"] = Field(
        default="postgres",
        description="Database of the local Prefect server: the stack's PostgreSQL (database `prefect`) "
        "or a SQLite file `{state_dir}/prefect.db` (light single-user use only).",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="libpq URI of our own database (task store), saved in the `interlinked-database` block "
        "by `up`; unset: the local stack's PostgreSQL database `interlinked`.",
    )
    deployment_set: str = Field(
        default="local", description="Which deployments of prefect.yaml submissions target (name suffix)."
    )

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def aws_endpoint_url(self) -> str:
        return f"http://{self.host}:{self.aws_port}"

    @property
    def script_api_url(self) -> str:
        """Base URL of the seed's HTTP API (``interlinker_options("lambda_uri")``), ending in ``/``."""
        return f"http://{self.host}:{self.script_api_port}/"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def deployment(self, flow_name: str) -> str:
        """Full ``flow/deployment`` name of a flow's deployment in the configured set."""
        return f"{flow_name}/{self.deployment_set}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
