"""What a status query costs: it reads counters and sparse indexes, never the tasks table at large.

DynamoDB: the requests of one ``status()`` are counted on the client (botocore events): the counters
of every collection come in one ``BatchGetItem`` (their keys are known), so the number of requests
does not grow with the number of collections; the oldest lease is the earliest head of the lease
shards. PostgreSQL: at 20,000 tasks (a two-step pipeline with failures, blocked samples and live
leases, statistics gathered), no statement of ``status()`` is planned with a sequential scan of
the tasks or the dependency edges (``EXPLAIN``). ``bench/bench_collections_store.py`` times it
at 100,000 tasks.
"""

from __future__ import annotations

import collections
import contextlib

import pytest

from flows.collections.model import TaskSpec


@contextlib.contextmanager
def dynamodb_requests(client):
    """Count the DynamoDB operations ``client`` sends meanwhile, by operation name."""
    seen: collections.Counter[str] = collections.Counter()

    def count(model, **_kwargs):
        seen[model.name] += 1

    client.meta.events.register("before-call.dynamodb", count)
    try:
        yield seen
    finally:
        client.meta.events.unregister("before-call.dynamodb", count)


def test_dynamodb_status_reads_every_collections_counters_in_one_request(dynamodb_store):
    store = dynamodb_store
    names = [f"c{index}" for index in range(9)]
    for index, name in enumerate(names):
        store.add(name, [TaskSpec(f"t{i}", "true") for i in range(index + 1)])
    task = store.claim("c3", owner="w", batch=1)[0]
    store.complete("c3", task.id, task.lease_token)

    with dynamodb_requests(store.client) as few:
        status = store.status("c0")
    with dynamodb_requests(store.client) as many:
        everything = store.status()

    assert status["c0"].todo == 1
    assert [everything[name].total for name in names] == list(range(1, 10))
    assert (everything["c3"].todo, everything["c3"].done) == (3, 1)
    # One BatchGetItem for the counters of all nine collections; the only queries are the
    # registry of collections and the list of collections others depend on.
    assert many["BatchGetItem"] == 1, dict(many)
    assert many["Query"] == 2, dict(many)
    assert sum(many.values()) - sum(few.values()) <= 1, (dict(few), dict(many))


def test_dynamodb_oldest_lease_is_the_earliest_over_the_shards(dynamodb_store):
    store = dynamodb_store
    store.add("leases", [TaskSpec(f"t{i}", "true") for i in range(40)])
    claimed = store.claim("leases", owner="w", batch=40, lease_seconds=600)
    assert len(claimed) == 40
    # Extend every lease but one: that one expires first, wherever its shard is.
    keep = claimed[17]
    for task in claimed:
        if task is not keep:
            store.heartbeat("leases", task.id, task.lease_token, 1200)
    status = store.status("leases")["leases"]
    assert status.locked == 40
    assert status.oldest_lease_task == keep.id
    assert status.oldest_lease_expires == pytest.approx(keep.lease_expires, abs=1e-3)


def _statements_of_status(store) -> list[tuple[str, object]]:
    """The SQL statements (and their parameters) one ``status()`` call runs."""
    statements: list[tuple[str, object]] = []

    class Recorder:
        def __init__(self, cursor):
            self._cursor = cursor

        def execute(self, query, params=None):
            statements.append((query, params))
            return self._cursor.execute(query, params)

        def __getattr__(self, name):
            return getattr(self._cursor, name)

    original = store._tx
    store._tx = lambda work: original(lambda cursor: work(Recorder(cursor)))
    try:
        store.status()
    finally:
        store._tx = original
    return statements


def test_postgres_status_never_scans_the_tasks(postgres_store, postgres_dsn):
    import psycopg

    store = postgres_store
    samples = 10_000
    ids = [f"s{i:05d}" for i in range(samples)]
    for start in range(0, samples, 5000):
        store.add("align", [TaskSpec(i, "true") for i in ids[start : start + 5000]])
        store.add(
            "call",
            [TaskSpec(i, "true", depends_on=(f"align/{i}",)) for i in ids[start : start + 5000]],
        )
    claimed = store.claim("align", owner="w", batch=200)
    for task in claimed[:10]:
        store.fail("align", task.id, task.lease_token, error="boom")
    for task in claimed[10:150]:
        store.complete("align", task.id, task.lease_token)
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(f'ANALYZE "{store.schema}".tasks, "{store.schema}".task_deps')

    status = store.status()
    assert (status["align"].failed, status["align"].locked, status["align"].done) == (10, 50, 140)
    assert status["call"].blocked == 10 and status["call"].total == samples
    assert status["align"].oldest_lease_task is not None and len(status["align"].failures) == 10

    statements = [
        (q, p) for q, p in _statements_of_status(store) if q.lstrip().upper().startswith(("SELECT", "WITH"))
    ]
    assert len(statements) >= 4
    scans = []
    with psycopg.connect(postgres_dsn) as connection:
        for query, params in statements:
            plan = "\n".join(row[0] for row in connection.execute("EXPLAIN " + query, params).fetchall())
            if "Seq Scan on tasks" in plan or "Seq Scan on task_deps" in plan:
                scans.append(f"{' '.join(query.split())[:120]}\n{plan}")
    assert not scans, "status statements planned with a sequential scan:\n\n" + "\n\n".join(scans)
