"""Which task store to use: :func:`open_store` picks the backend (its modules import the interface,
so the choice lives here, apart from it)."""

from __future__ import annotations

import os

from flows.collections.store import TaskStore

#: Environment variables the default store reads (the CLI fills them from its settings).
BACKEND_ENV = "INTERLINKED_TASKS_BACKEND"
TABLE_ENV = "INTERLINKED_TASKS_TABLE"
DEFAULT_TABLE = "interlinked-tasks"
SCHEMA_ENV = "INTERLINKED_TASKS_SCHEMA"
DEFAULT_SCHEMA = "interlinked_tasks"


def open_store(
    backend: str | None = None,
    *,
    table: str | None = None,
    dsn: str | None = None,
    schema: str | None = None,
) -> TaskStore:
    """The configured store: ``backend`` (or ``$INTERLINKED_TASKS_BACKEND``), ``postgres`` by default (the
    local stack's PostgreSQL, RDS on AWS); ``dynamodb`` is the serverless option.

    ``table`` names the DynamoDB table (or ``$INTERLINKED_TASKS_TABLE``); ``dsn`` the PostgreSQL
    database (else ``$INTERLINKED_DATABASE_URL`` / the ``interlinked-database`` block) and
    ``schema`` its schema (or ``$INTERLINKED_TASKS_SCHEMA``).
    """
    backend = (backend or os.environ.get(BACKEND_ENV) or "postgres").lower()
    if backend == "dynamodb":
        from flows.collections.dynamodb import DynamoTaskStore

        return DynamoTaskStore(table or os.environ.get(TABLE_ENV) or DEFAULT_TABLE)
    if backend in ("postgres", "postgresql"):
        from flows.collections.postgres import PostgresTaskStore

        return PostgresTaskStore(dsn, schema=schema or os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA)
    raise ValueError(f"unknown task store backend {backend!r} (dynamodb or postgres)")
