"""The PostgreSQL job store: one row per job, its JSON in a ``jsonb`` column, a version for
conditional writes.

Locally the database is the stack's ``interlinked`` database; on AWS the RDS instance (both through
the ``interlinked-database`` block, :func:`blocks.postgres.database`). A write is one statement in
its own transaction; ``replace`` is ``UPDATE ... WHERE id = %s AND version = %s``, so of two writers
that read the same version exactly one updates a row (PostgreSQL re-checks the condition after the
first one's commit) and the other is told to re-read (:func:`flows.jobs.store.change`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from flows.jobs.model import Job, JobError, JobNotFound
from flows.jobs.store import LIVE_EXECUTION_FIELDS, LIVE_STATES, JobStore

if TYPE_CHECKING:
    import psycopg

TABLE = "jobs"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id          text PRIMARY KEY,
    job_type    text NOT NULL,
    state       text NOT NULL,
    version     integer NOT NULL,
    document    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {TABLE}_state_created ON {TABLE} (state, created_at DESC);
CREATE INDEX IF NOT EXISTS {TABLE}_type_state_created ON {TABLE} (job_type, state, created_at DESC);
"""

Connect = Callable[[], AbstractContextManager["psycopg.Connection"]]


class PostgresJobStore(JobStore):
    """Jobs in the ``jobs`` table. ``connect`` gives a connection context manager per operation:
    ``lambda: psycopg.connect(dsn)`` or a pool's ``pool.connection``."""

    def __init__(self, connect: Connect, *, create_table: bool = True):
        self._connect = connect
        self._create_table = create_table
        self._ensured = False
        self._lock = threading.Lock()

    @classmethod
    def from_dsn(cls, dsn: str, **options: Any) -> PostgresJobStore:
        import psycopg

        return cls(lambda: psycopg.connect(dsn), **options)

    def ensure(self) -> None:
        """Create the table and its indexes (idempotent; concurrent callers serialise on a lock)."""
        with self._connect() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"interlinked:{TABLE}",))
            connection.execute(SCHEMA)
        self._ensured = True

    def _ready(self) -> None:
        if self._create_table and not self._ensured:
            with self._lock:
                if not self._ensured:
                    self.ensure()

    @staticmethod
    def _document(job: Job) -> Any:
        from psycopg.types.json import Jsonb

        return Jsonb(job.to_json())

    def insert(self, job: Job) -> Job:
        import psycopg

        self._ready()
        stored = job.model_copy(update={"version": 1})
        try:
            with self._connect() as connection:
                connection.execute(
                    f"INSERT INTO {TABLE} (id, job_type, state, version, document) VALUES (%s, %s, %s, %s, %s)",
                    (stored.id, stored.job_type, stored.state, stored.version, self._document(stored)),
                )
        except psycopg.errors.UniqueViolation:
            raise JobError(f"a job with id {job.id} exists already") from None
        return stored

    def get(self, job_id: str) -> Job:
        self._ready()
        with self._connect() as connection:
            row = connection.execute(f"SELECT document FROM {TABLE} WHERE id = %s", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id!r}")
        return Job.from_json(row[0])

    def replace(self, job: Job, expected_version: int) -> bool:
        self._ready()
        with self._connect() as connection:
            cursor = connection.execute(
                f"UPDATE {TABLE} SET state = %s, version = %s, document = %s, updated_at = now() "
                "WHERE id = %s AND version = %s",
                (job.state, job.version, self._document(job), job.id, expected_version),
            )
            updated = cursor.rowcount
        if updated == 0:
            with self._connect() as connection:
                if connection.execute(f"SELECT 1 FROM {TABLE} WHERE id = %s", (job.id,)).fetchone() is None:
                    raise JobNotFound(f"no job {job.id!r}")
            return False
        return True

    def list(self, *, job_type: str | None = None, state: str | None = None, limit: int = 100) -> list[Job]:
        self._ready()
        conditions, parameters = [], []
        if job_type is not None:
            conditions.append("job_type = %s")
            parameters.append(job_type)
        if state is not None:
            conditions.append("state = %s")
            parameters.append(state)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._connect() as connection:
            rows = connection.execute(
                f"SELECT document FROM {TABLE} {where} ORDER BY created_at DESC, id LIMIT %s",
                (*parameters, int(limit)),
            ).fetchall()
        return [Job.from_json(row[0]) for row in rows]

    def list_changed_since(self, since: str | None = None, *, limit: int = 1_000_000) -> list[Job]:
        self._ready()
        where, parameters = ("WHERE updated_at >= %s::timestamptz", [since]) if since else ("", [])
        with self._connect() as connection:
            rows = connection.execute(
                f"SELECT document FROM {TABLE} {where} ORDER BY updated_at DESC, id LIMIT %s",
                (*parameters, int(limit)),
            ).fetchall()
        return [Job.from_json(row[0]) for row in rows]

    def live(self) -> list[dict[str, Any]]:
        """Every DISPATCHED or EXECUTING job, trimmed (:func:`flows.jobs.store.live_view`), in one
        query on the ``(state, created_at)`` index; the documents' large parts stay in the database."""
        self._ready()
        current = ", ".join(
            f"'{name}', document #> '{{currentExecution,{name}}}'" for name in LIVE_EXECUTION_FIELDS
        )
        query = f"""
            SELECT jsonb_build_object(
                'id', id, 'jobType', job_type, 'state', state, 'version', version,
                'flowRunId', document -> 'flowRunId', 'dispatchedAt', document -> 'dispatchedAt',
                'updatedAt', document -> 'updatedAt',
                'estimations', coalesce(document -> 'estimations', '{{}}'::jsonb),
                'executionCount', coalesce(jsonb_array_length(document -> 'executions'), 0),
                'currentExecution', CASE WHEN jsonb_typeof(document -> 'currentExecution') = 'object'
                    THEN jsonb_build_object({current}) END)
            FROM {TABLE} WHERE state = ANY(%s)
        """
        with self._connect() as connection:
            rows = connection.execute(query, (list(LIVE_STATES),)).fetchall()
        return [row[0] for row in rows]
