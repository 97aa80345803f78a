"""The PostgreSQL task store (the local default in the stack's Postgres; RDS/Aurora on AWS).

Tables, in one schema (``interlinked_tasks`` unless told otherwise):

- ``collections (name, max_attempts, created_at)``;
- ``tasks`` — one row a task, key ``(collection, id)``, with partial indexes on the open tasks
  ``(collection, due) WHERE state IN ('todo', 'locked')``, the leases and the failures (so no
  query ever reads done tasks);
- ``task_deps (collection, id, dep_collection, dep_id)`` — the dependency edges, indexed both ways;
- ``task_counts (collection, state, shard, n)`` — counters, moved by the same transaction that
  moves the tasks (a random one of :data:`COUNTER_SHARDS` rows each time, so concurrent
  transactions rarely wait on the same row; rows are always locked in state order: no deadlock);
- ``task_rates (collection, minute, shard, done, failed)`` — tasks finished per minute (server
  time), moved with the counters by the write that finishes a task: throughput and ETA
  (:mod:`flows.collections.progress`) without reading tasks.

A claim is one transaction: tasks whose lease expired ``max_attempts`` times become ``failed``
with the reason; then ``SELECT … FOR UPDATE SKIP LOCKED`` picks up to ``batch`` claimable tasks
(todo, or locked with an expired lease; every dependency ``done``), highest ``priority`` first
and, within a priority, oldest ``due`` first, and one
``UPDATE`` takes their leases with fresh fencing tokens. Times are the server's (``now()``), so
workers' clocks do not matter. Every later change is conditional on the token.
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from flows.collections.model import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DONE,
    FAILED,
    LOCKED,
    STATES,
    TODO,
    AddResult,
    CollectionStatus,
    LeaseLost,
    Task,
    TaskInputError,
    TaskSpec,
    UnknownCollection,
    check_collection,
    check_initial_state,
    check_task_id,
)
from flows.collections.store import TaskStore, check_rewrite, first_of_each

DEFAULT_SCHEMA = "interlinked_tasks"
COUNTER_SHARDS = 8
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
T = TypeVar("T")

_TASK_COLUMNS = """t.collection, t.id, t.command, t.depends_on, t.attributes, t.state, t.attempts,
    t.max_attempts, t.lease_owner, t.lease_token, extract(epoch from t.lease_expires)::float8,
    t.exit_code, t.error, t.log_key, extract(epoch from t.created_at)::float8,
    extract(epoch from t.updated_at)::float8, extract(epoch from t.started_at)::float8,
    extract(epoch from t.finished_at)::float8, t.priority"""


def _task(row: Sequence[Any]) -> Task:
    return Task(
        collection=row[0],
        id=row[1],
        command=row[2],
        depends_on=tuple(row[3] or ()),
        attributes=row[4] or {},
        state=row[5],
        attempts=row[6],
        max_attempts=row[7],
        lease_owner=row[8],
        lease_token=row[9],
        lease_expires=row[10],
        exit_code=row[11],
        error=row[12],
        log_key=row[13],
        created_at=row[14],
        updated_at=row[15],
        started_at=row[16],
        finished_at=row[17],
        priority=row[18],
    )


class PostgresTaskStore(TaskStore):
    """Task collections in PostgreSQL (see the module doc for the tables).

    Parameters
    ----------
    dsn
        libpq URI; default: the ``interlinked-database`` block (``INTERLINKED_DATABASE_URL`` wins).
    schema
        Where the tables live (created by :meth:`ensure`).
    pool_size
        Connections kept for this store (one per concurrent caller is enough).
    """

    def __init__(self, dsn: str | None = None, *, schema: str = DEFAULT_SCHEMA, pool_size: int = 8) -> None:
        if not _SCHEMA.fullmatch(schema):
            raise ValueError(f"invalid schema name {schema!r}")
        if dsn is None:
            import os

            from blocks.postgres import URL_ENV, database

            # The variable wins over the block (as in the block itself), and needs no Prefect API.
            dsn = os.environ.get(URL_ENV) or database().dsn()
        from psycopg_pool import ConnectionPool

        self.schema = schema
        self._pool = ConnectionPool(dsn, min_size=1, max_size=pool_size, open=True, name="interlinked-tasks")
        self._ensured = False
        self._lock = threading.Lock()

    def close(self) -> None:
        self._pool.close()

    # -- plumbing -------------------------------------------------------------------------------

    def _sql(self, text: str) -> str:
        return text.replace("{s}", f'"{self.schema}"')

    def _tx(self, work: Callable[[Any], T]) -> T:
        """``work(cursor)`` in one transaction, retried when Postgres picks it as a deadlock victim."""
        import psycopg

        for attempt in range(5):
            try:
                with self._pool.connection() as connection, connection.transaction():
                    return work(connection.cursor())
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _count(self, cursor: Any, collection: str, deltas: dict[str, int], *, finished: bool = True) -> None:
        """Move the counters of ``collection`` by ``deltas`` (inside the caller's transaction);
        with ``finished``, tasks moved to done or failed also count as finished this minute."""
        deltas = {state: delta for state, delta in sorted(deltas.items()) if delta}
        if not deltas:
            return
        shard = random.randrange(COUNTER_SHARDS)
        cursor.executemany(
            self._sql(
                "INSERT INTO {s}.task_counts (collection, state, shard, n) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (collection, state, shard) DO UPDATE SET n = {s}.task_counts.n + excluded.n"
            ),
            [(collection, state, shard, delta) for state, delta in deltas.items()],
        )
        done, failed = max(deltas.get(DONE, 0), 0), max(deltas.get(FAILED, 0), 0)
        if finished and (done or failed):
            cursor.execute(
                self._sql(
                    "INSERT INTO {s}.task_rates (collection, minute, shard, done, failed) "
                    "VALUES (%s, floor(extract(epoch from now()) / 60)::bigint, %s, %s, %s) "
                    "ON CONFLICT (collection, minute, shard) DO UPDATE SET "
                    "done = {s}.task_rates.done + excluded.done, failed = {s}.task_rates.failed + excluded.failed"
                ),
                (collection, shard, done, failed),
            )

    def _exists(self, cursor: Any, collection: str) -> bool:
        cursor.execute(self._sql("SELECT 1 FROM {s}.collections WHERE name = %s"), (collection,))
        return cursor.fetchone() is not None

    def _require(self, cursor: Any, collection: str) -> None:
        check_collection(collection)
        self.ensure()
        if not self._exists(cursor, collection):
            raise UnknownCollection(f"no collection named {collection!r}")

    # -- schema ---------------------------------------------------------------------------------

    def ensure(self) -> None:
        with self._lock:
            if self._ensured:
                return

            def create(cursor: Any) -> None:
                # One creator at a time across processes (CREATE ... IF NOT EXISTS can still race).
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"interlinked-tasks:{self.schema}",)
                )
                # A tasks table from before priorities: add the column, replace the open index (only
                # then: ALTER TABLE locks the table even when there is nothing to do).
                cursor.execute(
                    "SELECT count(*) FILTER (WHERE column_name = 'priority'), count(*) "
                    "FROM information_schema.columns WHERE table_schema = %s AND table_name = 'tasks'",
                    (self.schema,),
                )
                has_priority, columns = cursor.fetchone()
                if columns and not has_priority:
                    cursor.execute(
                        self._sql(
                            "ALTER TABLE {s}.tasks ADD COLUMN priority integer NOT NULL DEFAULT 0; "
                            "DROP INDEX IF EXISTS {s}.tasks_open"
                        )
                    )
                cursor.execute(
                    self._sql(
                        """
                CREATE SCHEMA IF NOT EXISTS {s};
                CREATE TABLE IF NOT EXISTS {s}.collections (
                    name text PRIMARY KEY,
                    max_attempts integer NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now());
                CREATE TABLE IF NOT EXISTS {s}.tasks (
                    collection text NOT NULL,
                    id text NOT NULL,
                    command text NOT NULL,
                    depends_on text[] NOT NULL DEFAULT '{}',
                    attributes jsonb NOT NULL DEFAULT '{}',
                    state text NOT NULL DEFAULT 'todo'
                        CHECK (state IN ('todo', 'locked', 'done', 'failed')),
                    attempts integer NOT NULL DEFAULT 0,
                    max_attempts integer NOT NULL,
                    fence bigint NOT NULL DEFAULT 0,
                    lease_owner text,
                    lease_token bigint,
                    lease_expires timestamptz,
                    exit_code integer,
                    error text,
                    log_key text,
                    due timestamptz NOT NULL DEFAULT now(),
                    created_at timestamptz NOT NULL DEFAULT now(),
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    started_at timestamptz,
                    finished_at timestamptz,
                    priority integer NOT NULL DEFAULT 0,
                    PRIMARY KEY (collection, id));
                CREATE INDEX IF NOT EXISTS tasks_open_priority ON {s}.tasks (collection, priority DESC, due)
                    WHERE state IN ('todo', 'locked');
                CREATE INDEX IF NOT EXISTS tasks_leased ON {s}.tasks (collection, lease_expires)
                    WHERE state = 'locked';
                CREATE INDEX IF NOT EXISTS tasks_failed ON {s}.tasks (collection, finished_at)
                    WHERE state = 'failed';
                -- Only the old throughput query read it; every finish paid for its upkeep.
                DROP INDEX IF EXISTS {s}.tasks_finished;
                CREATE TABLE IF NOT EXISTS {s}.task_deps (
                    collection text NOT NULL,
                    id text NOT NULL,
                    dep_collection text NOT NULL,
                    dep_id text NOT NULL,
                    PRIMARY KEY (collection, id, dep_collection, dep_id));
                CREATE INDEX IF NOT EXISTS task_deps_dep ON {s}.task_deps (dep_collection, dep_id);
                CREATE TABLE IF NOT EXISTS {s}.task_counts (
                    collection text NOT NULL,
                    state text NOT NULL,
                    shard integer NOT NULL,
                    n bigint NOT NULL DEFAULT 0,
                    PRIMARY KEY (collection, state, shard));
                CREATE TABLE IF NOT EXISTS {s}.task_rates (
                    collection text NOT NULL,
                    minute bigint NOT NULL,
                    shard integer NOT NULL,
                    done bigint NOT NULL DEFAULT 0,
                    failed bigint NOT NULL DEFAULT 0,
                    PRIMARY KEY (collection, minute, shard));
                """
                    )
                )

            self._tx(create)
            self._ensured = True

    # -- add ------------------------------------------------------------------------------------

    def add(
        self, collection: str, tasks: Sequence[TaskSpec], *, max_attempts: int | None = None
    ) -> AddResult:
        check_collection(collection)
        for spec in tasks:
            check_task_id(spec.id)
            check_initial_state(spec)
            if not spec.command.strip():
                raise TaskInputError(f"task {spec.id!r}: empty command")
        if max_attempts is not None and max_attempts < 1:
            raise TaskInputError("max_attempts must be at least 1")
        result = AddResult(collection)
        if not tasks:
            return result
        self.ensure()
        tasks = first_of_each(tasks, result)

        rows = json.dumps(
            [
                {
                    "id": spec.id,
                    "command": spec.command,
                    "depends_on": list(spec.depends_on),
                    "attributes": spec.attributes,
                    "state": spec.state,
                    "error": spec.error,
                    "exit_code": spec.exit_code,
                    "priority": spec.priority,
                }
                for spec in tasks
            ]
        )

        def write(cursor: Any) -> None:
            cursor.execute(
                self._sql(
                    "INSERT INTO {s}.collections (name, max_attempts) VALUES (%s, %s) ON CONFLICT DO NOTHING"
                ),
                (collection, max_attempts or DEFAULT_MAX_ATTEMPTS),
            )
            cursor.execute(
                self._sql(
                    """
                WITH incoming AS (
                    SELECT x.id, x.command, coalesce(x.depends_on, '{}') AS depends_on,
                           coalesce(x.attributes, '{}') AS attributes, x.state, x.error, x.exit_code,
                           coalesce(x.priority, 0) AS priority
                    FROM jsonb_to_recordset(%s::jsonb)
                         AS x(id text, command text, depends_on text[], attributes jsonb, state text,
                              error text, exit_code integer, priority integer)),
                inserted AS (
                    INSERT INTO {s}.tasks (collection, id, command, depends_on, attributes, max_attempts,
                                           state, error, exit_code, priority, finished_at)
                    SELECT %s, i.id, i.command, i.depends_on, i.attributes, c.max_attempts,
                           i.state, i.error, i.exit_code, i.priority,
                           CASE WHEN i.state = 'todo' THEN NULL ELSE now() END
                    FROM incoming i, {s}.collections c WHERE c.name = %s
                    ON CONFLICT (collection, id) DO NOTHING
                    RETURNING id, depends_on, state),
                edges AS (
                    INSERT INTO {s}.task_deps (collection, id, dep_collection, dep_id)
                    SELECT %s, inserted.id, split_part(dep, '/', 1),
                           substr(dep, length(split_part(dep, '/', 1)) + 2)
                    FROM inserted, unnest(inserted.depends_on) AS dep
                    ON CONFLICT DO NOTHING)
                SELECT id, state FROM inserted
                """
                ),
                (rows, collection, collection, collection),
            )
            added = dict(cursor.fetchall())
            result.added = len(added)
            result.duplicate_ids += [spec.id for spec in tasks if spec.id not in added]
            result.duplicates = len(result.duplicate_ids)
            deltas: dict[str, int] = {}
            for state in added.values():
                deltas[state] = deltas.get(state, 0) + 1
            self._count(cursor, collection, deltas)

        self._tx(write)
        return result

    # -- claim ----------------------------------------------------------------------------------

    def claim(
        self,
        collection: str,
        *,
        owner: str,
        batch: int = 1,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> list[Task]:
        check_collection(collection)
        self.ensure()

        def take(cursor: Any) -> list[Task]:
            # Poison tasks: leases that expired max_attempts times end here, with the reason.
            cursor.execute(
                self._sql(
                    """
                UPDATE {s}.tasks t SET state = 'failed', finished_at = now(), updated_at = now(),
                    lease_expires = NULL,
                    error = format('lease expired %%s time(s) without the task finishing (worker lost; '
                                   'max_attempts=%%s); last owner %%s', t.attempts, t.max_attempts, t.lease_owner)
                FROM (SELECT collection, id FROM {s}.tasks
                      WHERE collection = %s AND state = 'locked' AND lease_expires < now()
                        AND attempts >= max_attempts
                      FOR UPDATE SKIP LOCKED) p
                WHERE t.collection = p.collection AND t.id = p.id
                """
                ),
                (collection,),
            )
            if cursor.rowcount:
                self._count(cursor, collection, {LOCKED: -cursor.rowcount, FAILED: cursor.rowcount})
            cursor.execute(
                self._sql(
                    f"""
                WITH picked AS (
                    SELECT t.collection, t.id, t.state AS old_state FROM {{s}}.tasks t
                    WHERE t.collection = %(c)s AND t.state IN ('todo', 'locked') AND t.due <= now()
                      AND (t.state = 'todo' OR (t.lease_expires < now() AND t.attempts < t.max_attempts))
                      AND NOT EXISTS (
                          SELECT 1 FROM {{s}}.task_deps d
                          LEFT JOIN {{s}}.tasks p ON p.collection = d.dep_collection AND p.id = d.dep_id
                          WHERE d.collection = t.collection AND d.id = t.id
                            AND p.state IS DISTINCT FROM 'done')
                    ORDER BY t.priority DESC, t.due
                    LIMIT %(batch)s
                    FOR UPDATE OF t SKIP LOCKED)
                UPDATE {{s}}.tasks t SET state = 'locked', lease_owner = %(owner)s,
                    fence = t.fence + 1, lease_token = t.fence + 1,
                    lease_expires = now() + make_interval(secs => %(lease)s),
                    due = now() + make_interval(secs => %(lease)s),
                    attempts = t.attempts + 1, started_at = now(), updated_at = now()
                FROM picked
                WHERE t.collection = picked.collection AND t.id = picked.id
                RETURNING {_TASK_COLUMNS}, picked.old_state
                """
                ),
                {"c": collection, "batch": batch, "owner": owner, "lease": float(lease_seconds)},
            )
            rows = cursor.fetchall()
            taken_from_todo = sum(1 for row in rows if row[-1] == TODO)
            self._count(cursor, collection, {TODO: -taken_from_todo, LOCKED: taken_from_todo})
            # UPDATE ... RETURNING has no order: hand them out highest priority first.
            return sorted((_task(row[:-1]) for row in rows), key=lambda task: -task.priority)

        return self._tx(take)

    # -- changes under a lease ------------------------------------------------------------------

    def _leased(
        self,
        collection: str,
        task_id: str,
        token: int,
        assignments: str,
        values: dict[str, Any],
        deltas: Callable[[Any], dict[str, int]] | None = None,
        returning: str = "t.state",
    ) -> Any:
        """``UPDATE`` the task if ``token`` is its current lease, else :class:`LeaseLost`."""
        self.ensure()

        def change(cursor: Any) -> Any:
            cursor.execute(
                self._sql(
                    f"UPDATE {{s}}.tasks t SET {assignments}, updated_at = now() "
                    "WHERE t.collection = %(c)s AND t.id = %(id)s AND t.state = 'locked' "
                    f"AND t.lease_token = %(token)s RETURNING {returning}"
                ),
                {"c": collection, "id": task_id, "token": int(token), **values},
            )
            row = cursor.fetchone()
            if row is None:
                cursor.execute(
                    self._sql(
                        "SELECT state, lease_token, lease_owner FROM {s}.tasks WHERE collection = %s AND id = %s"
                    ),
                    (collection, task_id),
                )
                current = cursor.fetchone()
                if current is None:
                    raise LeaseLost(f"{collection}/{task_id}: no such task")
                raise LeaseLost(
                    f"{collection}/{task_id}: token {token} is stale (the task is {current[0]}, "
                    f"token {current[1]}, owner {current[2]})"
                )
            if deltas is not None:
                self._count(cursor, collection, deltas(row))
            return row[0]

        return self._tx(change)

    def heartbeat(self, collection: str, task_id: str, token: int, lease_seconds: float) -> float:
        return self._leased(
            collection,
            task_id,
            token,
            "lease_expires = now() + make_interval(secs => %(lease)s), "
            "due = now() + make_interval(secs => %(lease)s)",
            {"lease": float(lease_seconds)},
            returning="extract(epoch from t.lease_expires)::float8",
        )

    def complete(
        self,
        collection: str,
        task_id: str,
        token: int,
        *,
        exit_code: int = 0,
        log_key: str | None = None,
    ) -> None:
        self._leased(
            collection,
            task_id,
            token,
            "state = 'done', exit_code = %(code)s, log_key = coalesce(%(log)s, t.log_key), "
            "error = NULL, finished_at = now(), lease_expires = NULL",
            {"code": int(exit_code), "log": log_key},
            lambda _row: {LOCKED: -1, DONE: 1},
        )

    def complete_many(
        self, collection: str, results: Sequence[tuple[str, int, int, str | None]]
    ) -> list[str]:
        """One ``UPDATE`` for the whole batch, each row conditional on its own token."""
        if not results:
            return []
        self.ensure()
        ids = [task_id for task_id, _, _, _ in results]

        def change(cursor: Any) -> list[str]:
            cursor.execute(
                self._sql(
                    """
                UPDATE {s}.tasks t SET state = 'done', exit_code = r.code,
                    log_key = coalesce(r.log, t.log_key), error = NULL, finished_at = now(),
                    lease_expires = NULL, updated_at = now()
                FROM unnest(%s::text[], %s::bigint[], %s::int[], %s::text[]) AS r(id, token, code, log)
                WHERE t.collection = %s AND t.id = r.id AND t.state = 'locked' AND t.lease_token = r.token
                RETURNING t.id
                """
                ),
                (
                    ids,
                    [int(token) for _, token, _, _ in results],
                    [int(code) for _, _, code, _ in results],
                    [key for _, _, _, key in results],
                    collection,
                ),
            )
            done = {row[0] for row in cursor.fetchall()}
            self._count(cursor, collection, {LOCKED: -len(done), DONE: len(done)})
            return [task_id for task_id in ids if task_id not in done]

        return self._tx(change)

    def fail(
        self,
        collection: str,
        task_id: str,
        token: int,
        *,
        error: str,
        exit_code: int | None = None,
        log_key: str | None = None,
        retry: bool = False,
    ) -> str:
        again = "(%(retry)s AND t.attempts < t.max_attempts)"
        return self._leased(
            collection,
            task_id,
            token,
            f"state = CASE WHEN {again} THEN 'todo' ELSE 'failed' END, "
            f"finished_at = CASE WHEN {again} THEN NULL ELSE now() END, "
            "due = now(), error = %(error)s, exit_code = %(code)s, "
            "log_key = coalesce(%(log)s, t.log_key), lease_expires = NULL",
            {"retry": bool(retry), "error": error or "failed", "code": exit_code, "log": log_key},
            lambda row: {LOCKED: -1, row[0]: 1},
        )

    def release(self, collection: str, task_id: str, token: int) -> None:
        self._leased(
            collection,
            task_id,
            token,
            "state = 'todo', due = now(), attempts = t.attempts - 1, lease_expires = NULL",
            {},
            lambda _row: {LOCKED: -1, TODO: 1},
        )

    def set_attributes(self, collection: str, task_id: str, token: int, updates: dict[str, Any]) -> None:
        self._leased(
            collection,
            task_id,
            token,
            "attributes = t.attributes || %(updates)s::jsonb",
            {"updates": json.dumps(updates, default=str)},
        )

    def reopen(self, collection: str, task_id: str, *, expect_state: str, attributes: dict[str, Any]) -> bool:
        if expect_state not in (TODO, DONE, FAILED):
            raise TaskInputError(f"cannot reopen a {expect_state} task")
        self.ensure()

        def change(cursor: Any) -> bool:
            cursor.execute(
                self._sql(
                    "UPDATE {s}.tasks SET state = 'todo', attributes = %s::jsonb, attempts = 0, "
                    "due = now(), updated_at = now(), finished_at = NULL, error = NULL, exit_code = NULL, "
                    "lease_token = NULL, lease_expires = NULL "
                    "WHERE collection = %s AND id = %s AND state = %s"
                ),
                (json.dumps(attributes, default=str), collection, task_id, expect_state),
            )
            if not cursor.rowcount:
                return False
            if expect_state != TODO:
                self._count(cursor, collection, {expect_state: -1, TODO: 1})
            return True

        return self._tx(change)

    def rewrite(
        self,
        collection: str,
        task_id: str,
        *,
        expect_state: str,
        state: str,
        command: str,
        attributes: dict[str, Any],
        error: str | None = None,
        exit_code: int | None = None,
    ) -> bool:
        check_rewrite(task_id, expect_state=expect_state, state=state, command=command)
        self.ensure()

        def change(cursor: Any) -> bool:
            cursor.execute(
                self._sql(
                    "UPDATE {s}.tasks SET state = %(state)s, command = %(command)s, "
                    "attributes = %(attributes)s::jsonb, error = %(error)s, exit_code = %(code)s, "
                    "attempts = CASE WHEN %(state)s = 'todo' THEN 0 ELSE attempts END, "
                    "finished_at = CASE WHEN %(state)s = 'todo' THEN NULL "
                    "WHEN state = %(state)s THEN finished_at ELSE now() END, "
                    "due = now(), updated_at = now(), lease_token = NULL, lease_expires = NULL "
                    "WHERE collection = %(c)s AND id = %(id)s AND state = %(expect)s"
                ),
                {
                    "state": state,
                    "command": command,
                    "attributes": json.dumps(attributes, default=str),
                    "error": error,
                    "code": exit_code,
                    "c": collection,
                    "id": task_id,
                    "expect": expect_state,
                },
            )
            if not cursor.rowcount:
                return False
            if expect_state != state:
                self._count(cursor, collection, {expect_state: -1, state: 1}, finished=False)
            return True

        return self._tx(change)

    # -- bulk changes ---------------------------------------------------------------------------

    def reset(self, collection: str, state: str) -> int:
        if state not in (FAILED, LOCKED):
            raise TaskInputError(f"reset takes --state failed or --state locked, not {state!r}")
        if state == FAILED:
            return self.retry_failed(collection)

        def reopen(cursor: Any) -> int:
            self._require(cursor, collection)
            # Voids the leases: their holders' tokens no longer match anything.
            cursor.execute(
                self._sql(
                    "UPDATE {s}.tasks SET state = 'todo', due = now(), updated_at = now(), "
                    "lease_token = NULL, lease_expires = NULL WHERE collection = %s AND state = 'locked'"
                ),
                (collection,),
            )
            count = cursor.rowcount
            self._count(cursor, collection, {LOCKED: -count, TODO: count})
            return count

        return self._tx(reopen)

    def retry_failed(self, collection: str, task_ids: Sequence[str] | None = None) -> int:
        ids = None if task_ids is None else [check_task_id(task_id) for task_id in task_ids]

        def reopen(cursor: Any) -> int:
            self._require(cursor, collection)
            cursor.execute(
                self._sql(
                    "UPDATE {s}.tasks SET state = 'todo', due = now(), updated_at = now(), attempts = 0, "
                    "error = NULL, exit_code = NULL, finished_at = NULL, lease_token = NULL, "
                    "lease_expires = NULL WHERE collection = %s AND state = 'failed' "
                    "AND (%s::text[] IS NULL OR id = ANY(%s::text[]))"
                ),
                (collection, ids, ids),
            )
            count = cursor.rowcount
            self._count(cursor, collection, {FAILED: -count, TODO: count})
            return count

        return self._tx(reopen)

    def delete(self, collection: str) -> int:
        def remove(cursor: Any) -> int:
            self._require(cursor, collection)
            cursor.execute(self._sql("DELETE FROM {s}.tasks WHERE collection = %s"), (collection,))
            count = cursor.rowcount
            for table in ("task_deps", "task_counts", "task_rates"):
                cursor.execute(self._sql(f"DELETE FROM {{s}}.{table} WHERE collection = %s"), (collection,))
            cursor.execute(self._sql("DELETE FROM {s}.collections WHERE name = %s"), (collection,))
            return count

        return self._tx(remove)

    # -- reading --------------------------------------------------------------------------------

    def get(self, collection: str, task_id: str) -> Task | None:
        self.ensure()

        def read(cursor: Any) -> Task | None:
            cursor.execute(
                self._sql(f"SELECT {_TASK_COLUMNS} FROM {{s}}.tasks t WHERE t.collection = %s AND t.id = %s"),
                (collection, task_id),
            )
            row = cursor.fetchone()
            return None if row is None else _task(row)

        return self._tx(read)

    def iter_tasks(self, collection: str, *, page: int = 1000) -> Iterator[Task]:
        check_collection(collection)
        self.ensure()
        if not self._tx(lambda cursor: self._exists(cursor, collection)):
            raise UnknownCollection(f"no collection named {collection!r}")
        after = ""
        while True:
            # Keyset pages on the primary key: each page is one short query, none holds a snapshot.
            rows = self._tx(
                lambda cursor, after=after: cursor.execute(
                    self._sql(
                        f"SELECT {_TASK_COLUMNS} FROM {{s}}.tasks t WHERE t.collection = %s AND t.id > %s "
                        "ORDER BY t.id LIMIT %s"
                    ),
                    (collection, after, page),
                ).fetchall()
            )
            yield from (_task(row) for row in rows)
            if len(rows) < page:
                return
            after = rows[-1][1]

    def leases(self, collection: str) -> list[dict[str, Any]]:
        check_collection(collection)
        self.ensure()

        def read(cursor: Any) -> list[dict[str, Any]]:
            self._require(cursor, collection)
            cursor.execute(
                self._sql(
                    "SELECT id, lease_owner, lease_token, extract(epoch from lease_expires)::float8 "
                    "FROM {s}.tasks WHERE collection = %s AND state = 'locked' ORDER BY lease_expires"
                ),
                (collection,),
            )
            return [
                {"id": row[0], "owner": row[1], "token": row[2], "expires": row[3]}
                for row in cursor.fetchall()
            ]

        return self._tx(read)

    def collections(self) -> list[str]:
        self.ensure()

        def read(cursor: Any) -> list[str]:
            cursor.execute(self._sql("SELECT name FROM {s}.collections ORDER BY name"))
            return [row[0] for row in cursor.fetchall()]

        return self._tx(read)

    def samples(
        self, collections: Sequence[str], key: str = "sample"
    ) -> dict[str, dict[str, dict[str, int]]]:
        names = [check_collection(name) for name in collections]
        self.ensure()

        def read(cursor: Any) -> dict[str, dict[str, dict[str, int]]]:
            cursor.execute(
                self._sql(
                    """
                WITH RECURSIVE blocked (collection, id) AS (
                    SELECT d.collection, d.id FROM {s}.tasks f
                    JOIN {s}.task_deps d ON d.dep_collection = f.collection AND d.dep_id = f.id
                    WHERE f.state = 'failed'
                    UNION
                    SELECT d.collection, d.id FROM blocked b
                    JOIN {s}.task_deps d ON d.dep_collection = b.collection AND d.dep_id = b.id)
                SELECT t.attributes ->> %(key)s, t.collection,
                       CASE WHEN t.state = 'todo' AND b.id IS NOT NULL THEN 'blocked' ELSE t.state END,
                       count(*)
                FROM {s}.tasks t
                LEFT JOIN blocked b ON b.collection = t.collection AND b.id = t.id
                WHERE t.collection = ANY(%(names)s) AND t.attributes ? %(key)s
                GROUP BY 1, 2, 3
                """
                ),
                {"key": key, "names": names},
            )
            result: dict[str, dict[str, dict[str, int]]] = {}
            for sample, collection, state, count in cursor.fetchall():
                result.setdefault(str(sample), {}).setdefault(collection, {})[state] = int(count)
            return result

        return self._tx(read)

    def finished_per_minute(
        self, collection: str, *, minutes: int
    ) -> tuple[float, dict[int, tuple[int, int]]]:
        self.ensure()

        def read(cursor: Any) -> tuple[float, dict[int, tuple[int, int]]]:
            cursor.execute(
                self._sql(
                    "SELECT extract(epoch from now())::float8, r.minute, sum(r.done)::bigint, "
                    "sum(r.failed)::bigint FROM (SELECT 1) one LEFT JOIN {s}.task_rates r "
                    "ON r.collection = %s AND r.minute > floor(extract(epoch from now()) / 60)::bigint - %s "
                    "GROUP BY 1, r.minute"
                ),
                (collection, int(minutes)),
            )
            rows = cursor.fetchall()
            buckets = {int(row[1]): (int(row[2]), int(row[3])) for row in rows if row[1] is not None}
            return float(rows[0][0]), buckets

        return self._tx(read)

    def status(self, collection: str | None = None, *, failures: int = 10) -> dict[str, CollectionStatus]:
        self.ensure()

        def read(cursor: Any) -> dict[str, CollectionStatus]:
            if collection is not None:
                self._require(cursor, collection)
                names = [collection]
            else:
                cursor.execute(self._sql("SELECT name FROM {s}.collections ORDER BY name"))
                names = [row[0] for row in cursor.fetchall()]
            result = {name: CollectionStatus(name) for name in names}
            cursor.execute(
                self._sql(
                    "SELECT collection, state, sum(n)::bigint FROM {s}.task_counts "
                    "WHERE collection = ANY(%s) GROUP BY collection, state"
                ),
                (names,),
            )
            for name, state, count in cursor.fetchall():
                if state in STATES:
                    setattr(result[name], state, int(count))
            # Todo tasks downstream of a failure (transitively): from the few failed tasks along
            # the dependency edges, never over the whole table. Each step is a LATERAL lookup
            # fenced with OFFSET 0 so it stays an index probe per row: as plain joins, the planner
            # (which guesses the recursive term's size) hashes the whole edge or task table.
            cursor.execute(
                self._sql(
                    """
                WITH RECURSIVE blocked (collection, id) AS (
                    SELECT d.collection, d.id FROM {s}.tasks f
                    CROSS JOIN LATERAL (
                        SELECT e.collection, e.id FROM {s}.task_deps e
                        WHERE e.dep_collection = f.collection AND e.dep_id = f.id OFFSET 0) d
                    WHERE f.state = 'failed'
                    UNION
                    SELECT d.collection, d.id FROM blocked b
                    CROSS JOIN LATERAL (
                        SELECT e.collection, e.id FROM {s}.task_deps e
                        WHERE e.dep_collection = b.collection AND e.dep_id = b.id OFFSET 0) d)
                SELECT b.collection, count(*) FROM blocked b
                CROSS JOIN LATERAL (
                    SELECT 1 FROM {s}.tasks t
                    WHERE t.collection = b.collection AND t.id = b.id AND t.state = 'todo' OFFSET 0) t
                WHERE b.collection = ANY(%s)
                GROUP BY b.collection
                """
                ),
                (names,),
            )
            for name, count in cursor.fetchall():
                status = result[name]
                status.blocked = min(int(count), status.todo)
                status.todo -= status.blocked
            for name, status in result.items():
                if status.locked:
                    cursor.execute(
                        self._sql(
                            "SELECT id, lease_owner, extract(epoch from lease_expires)::float8 FROM {s}.tasks "
                            "WHERE collection = %s AND state = 'locked' ORDER BY lease_expires LIMIT 1"
                        ),
                        (name,),
                    )
                    row = cursor.fetchone()
                    if row is not None:
                        status.oldest_lease_task, status.oldest_lease_owner, status.oldest_lease_expires = row
                if status.failed and failures:
                    cursor.execute(
                        self._sql(
                            "SELECT id, error, exit_code, attempts FROM {s}.tasks "
                            "WHERE collection = %s AND state = 'failed' ORDER BY finished_at DESC LIMIT %s"
                        ),
                        (name, failures),
                    )
                    status.failures = [
                        {"id": row[0], "error": row[1], "exit_code": row[2], "attempts": row[3]}
                        for row in cursor.fetchall()
                    ]
            return result

        return self._tx(read)
