"""Priorities: higher is claimed first on both stores (PostgreSQL orders the claim; DynamoDB walks
its sharded open index level by level), kept through retry, reset and export."""

from __future__ import annotations

import json

import pytest

from flows.collections.formats import export_collection
from flows.collections.model import TaskInputError, TaskSpec
from flows.collections.parsing import task_from_object


def test_higher_priority_is_claimed_first(store):
    # Added low first, so age alone would hand out the low ones first.
    store.add("prio", [TaskSpec(f"low{i}", "true") for i in range(6)])
    store.add("prio", [TaskSpec(f"mid{i}", "true", priority=5) for i in range(4)])
    store.add("prio", [TaskSpec(f"high{i}", "true", priority=50) for i in range(3)])
    store.add("prio", [TaskSpec("neg", "true", priority=-3)])

    order = []
    while True:
        batch = store.claim("prio", owner="w", batch=2, lease_seconds=600)
        if not batch:
            break
        order += [task.id.rstrip("0123456789") for task in batch]
        for task in batch:
            store.complete("prio", task.id, task.lease_token)
    assert order == ["high"] * 3 + ["mid"] * 4 + ["low"] * 6 + ["neg"]
    assert store.get("prio", "high0").priority == 50


def test_priority_survives_retry_and_is_exported(store):
    store.add("p2", [TaskSpec("a", "false", priority=7), TaskSpec("b", "true")])
    [first] = store.claim("p2", owner="w", lease_seconds=600)
    assert first.id == "a"
    store.fail("p2", "a", first.lease_token, error="boom")
    assert store.retry_failed("p2") == 1
    [again] = store.claim("p2", owner="w", lease_seconds=600)
    assert (again.id, again.priority) == ("a", 7)
    lines = [json.loads(line) for line in export_collection(store, "p2", "jsonl").splitlines()]
    assert {line["id"]: line.get("priority") for line in lines} == {"a": 7, "b": None}


def test_bad_priorities_are_refused():
    for value in ("high", 1.5, True, 10**6):
        with pytest.raises(TaskInputError, match="priority"):
            task_from_object({"id": "a", "command": "true", "priority": value}, "c")
    assert task_from_object({"id": "a", "command": "true", "priority": -2}, "c").priority == -2


def test_a_tasks_table_from_before_priorities_gets_the_column(postgres_dsn, postgres_store):
    import psycopg

    from flows.collections.postgres import PostgresTaskStore

    postgres_store.add("old", [TaskSpec("a", "true")])
    schema = postgres_store.schema
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(f'DROP INDEX "{schema}".tasks_open_priority')
        connection.execute(f'ALTER TABLE "{schema}".tasks DROP COLUMN priority')
        connection.execute(
            f"CREATE INDEX tasks_open ON \"{schema}\".tasks (collection, due) WHERE state IN ('todo', 'locked')"
        )
    store = PostgresTaskStore(postgres_dsn, schema=schema)
    try:
        store.add("old", [TaskSpec("b", "true", priority=3)])
        assert [task.id for task in store.claim("old", owner="w", batch=2)] == ["b", "a"]
        with psycopg.connect(postgres_dsn) as connection:
            indexes = {
                row[0]
                for row in connection.execute(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,)
                )
            }
        assert "tasks_open_priority" in indexes and "tasks_open" not in indexes
    finally:
        store.close()
