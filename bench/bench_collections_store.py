"""The task store alone: claim throughput next to the round-trip floor, and status at 100,000 tasks.

    .venv/bin/python bench/bench_collections_store.py [--backends postgres,dynamodb] [--claims 2000]
        [--dynamodb-claims 500] [--status-tasks 100000] [--collections 5] [--status-runs 50]
        [--dynamodb-status-tasks 100000] [--dynamodb-status-runs 3] [--quick] [--json-out FILE]

Starts what it needs itself, on free loopback ports, and stops it at the end: a PostgreSQL cluster
made the way the stack makes one (``interlinked.local.postgres``, in a temporary directory) and a
moto server with atomic DynamoDB requests (``python -m interlinked.local.dynamodb_atomic``, as the
stack and ``tests/collections`` serve it). Nothing of a developer's stack is touched.

1. **Claims**: N no-op tasks in a fresh collection, claimed by one caller until none is left, with
   ``batch`` 1 and 25: claims/s and the latency of one ``claim`` call. Next to it the *floor* of
   one round trip per batch: a trivial round trip measured on the same connection path
   (PostgreSQL: ``SELECT 1`` through the store's pool; DynamoDB: ``GetItem`` of a missing key),
   so ``batch / round trip`` claims/s; and a second floor of one *durable* write per batch (a
   committed one-row ``UPDATE`` — PostgreSQL flushes its WAL at each commit — or one ``UpdateItem``),
   which a claim cannot do without. A PostgreSQL claim is one transaction (BEGIN, the poison
   sweep, the ``SKIP LOCKED`` update, COMMIT: four round trips); a DynamoDB claim is a query of a
   shard of the ``open`` index, then one conditional ``UpdateItem`` per task plus one counter
   ``ADD`` per task (DynamoDB has no multi-item conditional write short of a transaction).
2. **Status**: ``--status-tasks`` tasks in ``--collections`` collections, a per-sample pipeline
   (task i of step k depends on task i of step k-1), with some of each step done, failed (their
   samples ``blocked`` downstream) and locked (an oldest lease to show): p50/p95 of
   ``status()`` of every collection, and of one collection, its round trips (DynamoDB requests,
   SQL statements), and ``flows.collections.progress`` (rate and ETA of one collection).
   Target: p50 <= 50 ms on PostgreSQL. On moto every DynamoDB query walks the whole table (moto
   5.2 keeps no index), so a DynamoDB status costs there what its query count times the table
   size says; on AWS each is a round trip: read the round-trip row for what it would cost.
   PostgreSQL's tasks are added through ``add`` (a chunk at a time); DynamoDB's are written with
   ``BatchWriteItem`` in the store's own item layout (``add`` runs transactions, and moto copies
   the whole table for each one, which makes 100,000 adds take hours locally; on AWS ``add`` is
   the way). The PostgreSQL part also reports whether any status query plan reads the tasks
   table sequentially (``EXPLAIN``): status must not scan.

``--quick`` is a smoke size (a few hundred claims, 2,000 tasks for status) for checking that the
script works; its numbers say little.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_table, summarise

from flows.collections.model import TaskSpec

BATCHES = (1, 25)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


################################################################################
# Servers
################################################################################


class Postgres:
    """A private PostgreSQL cluster under ``root`` (stopped by :meth:`stop`)."""

    def __init__(self, root: Path) -> None:
        from interlinked.local import postgres
        from interlinked.settings import Settings

        self.pg = postgres
        self.settings = Settings(state_dir=root / "state", host="127.0.0.1", postgres_port=_free_port())
        self.log = (root / "postgres.log").open("wb")
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        pg, settings = self.pg, self.settings
        pg.ensure_cluster(settings)
        self.process = subprocess.Popen(
            pg.server_command(settings),
            cwd="/",
            stdout=self.log,
            stderr=subprocess.STDOUT,
            **pg._as_user(pg.system_user()),
        )
        deadline = time.monotonic() + 60
        while not pg.ready(settings):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"postgres did not start; see {self.log.name}")
            time.sleep(0.2)
        pg.ensure_database(settings, pg.INTERLINKED_DATABASE)
        return pg.dsn(settings)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


class Moto:
    """A moto server with atomic DynamoDB requests (the stack's way), stopped by :meth:`stop`."""

    def __init__(self, root: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (root / "moto.log").open("wb")
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "interlinked.local.dynamodb_atomic",
                "-H",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2):
                    return self.url
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"moto did not start; see {self.log.name}") from None
                time.sleep(0.2)

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "dynamodb",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"max_attempts": 4, "mode": "standard"}, max_pool_connections=16),
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


################################################################################
# Measurements
################################################################################


def timed(call: Callable[[], Any], runs: int) -> list[float]:
    """Wall seconds of ``runs`` calls of ``call``."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def measure_claims(
    store, round_trip: Callable[[], Any], write: Callable[[], Any], tasks: int, round_trips: int
) -> dict:
    """Claims/s at each batch size (one caller, until the collection is empty) and the floors: a
    trivial round trip, and one durable write of one row/item (what a claim cannot do without)."""
    floor = timed(round_trip, round_trips)
    writes = timed(write, round_trips)
    results: dict[str, Any] = {"round_trip": summarise(floor), "write": summarise(writes), "batches": {}}
    for batch in BATCHES:
        collection = f"claims-b{batch}-{uuid.uuid4().hex[:6]}"
        for start in range(0, tasks, 1000):
            store.add(collection, [TaskSpec(f"t{i}", "true") for i in range(start, min(tasks, start + 1000))])
        calls: list[float] = []
        claimed = 0
        started = time.perf_counter()
        while True:
            before = time.perf_counter()
            got = store.claim(collection, owner="bench", batch=batch)
            calls.append(time.perf_counter() - before)
            if not got:
                break
            claimed += len(got)
        elapsed = time.perf_counter() - started
        calls.pop()  # the last, empty claim
        status = store.status(collection)[collection]
        assert (status.locked, claimed) == (tasks, tasks), (status.as_dict(), claimed)
        results["batches"][batch] = {
            "claimed": claimed,
            "seconds": elapsed,
            "claims_per_second": claimed / elapsed,
            "call": summarise(calls),
            "floor_claims_per_second": batch / statistics.median(floor),
            "write_floor_claims_per_second": batch / statistics.median(writes),
        }
        store.delete(collection)
    return results


def pipeline_specs(step: int, first: int, last: int) -> list[TaskSpec]:
    """Tasks ``first..last-1`` of step ``step``; each depends on the same sample's previous step."""
    return [
        TaskSpec(
            f"s{i:06d}",
            f"run-step {step} s{i:06d}",
            depends_on=(f"bench-step{step - 1}/s{i:06d}",) if step > 1 else (),
            attributes={"sample": f"s{i:06d}"},
        )
        for i in range(first, last)
    ]


def make_progress(store, collections: list[str], per_collection: int) -> dict[str, int]:
    """Claim a slice of every step and complete most of it, fail a few (blocking their samples
    downstream) and leave some locked: what a status table of a running workflow shows."""
    shape = {
        "claimed": max(10, per_collection // 20),
        "failed": max(1, per_collection // 1000),
        "locked": max(2, per_collection // 200),
    }
    for name in collections:
        claimed: list = []
        while len(claimed) < shape["claimed"]:
            got = store.claim(name, owner="bench-progress", batch=min(100, shape["claimed"] - len(claimed)))
            if not got:
                break
            claimed += got
        random.shuffle(claimed)
        failed, locked = (
            claimed[: shape["failed"]],
            claimed[shape["failed"] : shape["failed"] + shape["locked"]],
        )
        for task in failed:
            store.fail(name, task.id, task.lease_token, error="exit 1: bench failure", exit_code=1)
        for task in claimed[shape["failed"] + len(locked) :]:
            store.complete(name, task.id, task.lease_token)
    return shape


def load_postgres(store, collections: list[str], per_collection: int) -> None:
    for step, name in enumerate(collections, 1):
        for start in range(0, per_collection, 5000):
            store.add(name, pipeline_specs(step, start, min(per_collection, start + 5000)))


def load_dynamodb(store, collections: list[str], per_collection: int) -> None:
    """The store's own items (tasks, dependency edges, counters, registry) with BatchWriteItem."""
    from flows.collections.model import DEFAULT_MAX_ATTEMPTS, TODO

    now = time.time()
    client, table = store.client, store.table
    for step, name in enumerate(collections, 1):
        items: list[dict] = [
            {
                "pk": {"S": "COLLECTIONS"},
                "sk": {"S": name},
                "max_attempts": {"N": str(DEFAULT_MAX_ATTEMPTS)},
                "created_at": {"N": repr(now)},
            },
            {"pk": {"S": f"N#{name}"}, "sk": {"S": "00"}, TODO: {"N": str(per_collection)}},
        ]
        if step > 1:
            client.update_item(
                TableName=table,
                Key={"pk": {"S": "DOWNSTREAM"}, "sk": {"S": collections[step - 2]}},
                UpdateExpression="ADD collections :c",
                ExpressionAttributeValues={":c": {"SS": [name]}},
            )
        for spec in pipeline_specs(step, 0, per_collection):
            items.append(store._task_item(name, spec, DEFAULT_MAX_ATTEMPTS, now))
            for ref in spec.depends_on:
                items.append({"pk": {"S": f"D#{ref.replace('/', '#', 1)}"}, "sk": {"S": f"{name}/{spec.id}"}})
        for start in range(0, len(items), 25):
            pending = {table: [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]}
            while pending:
                pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def seq_scans_in_status(store, dsn: str) -> list[str]:
    """Statements of a status call whose plan reads the tasks table sequentially (should be none)."""
    import psycopg

    statements: list[tuple[str, Any]] = []

    class Recorder:
        def __init__(self, cursor):
            self.cursor = cursor

        def execute(self, query, params=None):
            statements.append((query, params))
            return self.cursor.execute(query, params)

        def __getattr__(self, name):
            return getattr(self.cursor, name)

    original = store._tx
    store._tx = lambda work: original(lambda cursor: work(Recorder(cursor)))
    try:
        store.status()
    finally:
        store._tx = original
    found = []
    with psycopg.connect(dsn) as connection:
        for query, params in statements:
            if not query.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            plan = "\n".join(row[0] for row in connection.execute("EXPLAIN " + query, params).fetchall())
            if "Seq Scan on tasks" in plan:
                found.append(" ".join(query.split())[:90])
    return found


def requests_of(store, call: Callable[[], Any]) -> int:
    """Round trips one ``call`` makes: DynamoDB requests, or SQL statements plus BEGIN and COMMIT."""
    client = getattr(store, "client", None)
    if client is not None:
        seen = [0]

        def count(**_kwargs: Any) -> None:
            seen[0] += 1

        client.meta.events.register("before-call.dynamodb", count)
        try:
            call()
        finally:
            client.meta.events.unregister("before-call.dynamodb", count)
        return seen[0]
    statements = [0]

    class Counter:
        def __init__(self, cursor):
            self.cursor = cursor

        def execute(self, query, params=None):
            statements[0] += 1
            return self.cursor.execute(query, params)

        def __getattr__(self, name):
            return getattr(self.cursor, name)

    original = store._tx
    store._tx = lambda work: original(lambda cursor: work(Counter(cursor)))
    try:
        call()
    finally:
        store._tx = original
    return statements[0] + 2


def measure_status(store, load, collections: list[str], tasks: int, runs: int, dsn: str | None) -> dict:
    per_collection = tasks // len(collections)
    started = time.perf_counter()
    load(store, collections, per_collection)
    loaded = time.perf_counter() - started
    shape = make_progress(store, collections, per_collection)
    all_status = store.status()
    counted = sum(all_status[name].total for name in collections)
    assert counted == per_collection * len(collections), (counted, per_collection)
    blocked = sum(all_status[name].blocked for name in collections)
    store.status()  # warm caches and connections
    every = timed(store.status, runs)
    one = timed(lambda: store.status(collections[-1]), runs)
    from flows.collections.progress import progress

    eta = timed(lambda: progress(store, collections[-1]), runs)
    result = {
        "tasks": per_collection * len(collections),
        "collections": len(collections),
        "load_seconds": loaded,
        "shape_per_collection": shape,
        "blocked": blocked,
        "every": summarise(every),
        "one": summarise(one),
        "progress": summarise(eta),
        "requests_every": requests_of(store, store.status),
        "requests_one": requests_of(store, lambda: store.status(collections[-1])),
    }
    if dsn is not None:
        result["seq_scans"] = seq_scans_in_status(store, dsn)
    return result


def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> dict:
    names = [f"bench-step{step}" for step in range(1, args.collections + 1)]
    if backend == "postgres":
        from flows.collections.postgres import PostgresTaskStore

        server = Postgres(workdir)
        dsn = server.start()
        try:
            store = PostgresTaskStore(dsn, schema="bench_tasks")
            store.ensure()

            def round_trip() -> None:
                with store._pool.connection() as connection:
                    connection.execute("SELECT 1").fetchone()

            with store._pool.connection() as connection:
                connection.execute("CREATE TABLE IF NOT EXISTS bench_floor (id int PRIMARY KEY, n bigint)")
                connection.execute("INSERT INTO bench_floor VALUES (1, 0) ON CONFLICT DO NOTHING")

            def write() -> None:
                with store._pool.connection() as connection, connection.transaction():
                    connection.execute("UPDATE bench_floor SET n = n + 1 WHERE id = 1")

            print("[postgres] claims …", file=sys.stderr)
            claims = measure_claims(store, round_trip, write, args.claims, args.round_trips)
            print(f"[postgres] status at {args.status_tasks} tasks …", file=sys.stderr)
            status = measure_status(store, load_postgres, names, args.status_tasks, args.status_runs, dsn)
            store.close()
        finally:
            server.stop()
        return {"claims": claims, "status": status}
    if backend == "dynamodb":
        from flows.collections.dynamodb import DynamoTaskStore

        server = Moto(workdir)
        server.start()
        try:
            client = server.client()
            store = DynamoTaskStore(f"bench-{uuid.uuid4().hex[:8]}", client=client)
            store.ensure()

            def round_trip() -> None:
                client.get_item(TableName=store.table, Key={"pk": {"S": "none"}, "sk": {"S": "none"}})

            def write() -> None:
                client.update_item(
                    TableName=store.table,
                    Key={"pk": {"S": "bench-floor"}, "sk": {"S": "n"}},
                    UpdateExpression="ADD n :one",
                    ExpressionAttributeValues={":one": {"N": "1"}},
                )

            print("[dynamodb] claims …", file=sys.stderr)
            claims = measure_claims(store, round_trip, write, args.dynamodb_claims, args.round_trips)
            print(f"[dynamodb] status at {args.dynamodb_status_tasks} tasks …", file=sys.stderr)
            store = DynamoTaskStore(f"bench-{uuid.uuid4().hex[:8]}", client=client)
            store.ensure()
            status = measure_status(
                store, load_dynamodb, names, args.dynamodb_status_tasks, args.dynamodb_status_runs, None
            )
        finally:
            server.stop()
        return {"claims": claims, "status": status}
    raise SystemExit(f"unknown backend {backend!r} (postgres, dynamodb)")


################################################################################
# Report
################################################################################


def print_report(results: dict[str, dict]) -> None:
    names = list(results)
    width = 14

    def row(label: str, values: list[str]) -> None:
        print(f"{label:<60}" + "".join(f"{value:>{width}}" for value in values))

    print("\nTask store alone: claims (one caller, this machine)")
    row("", names)
    print("-" * (60 + width * len(names)))
    row(
        "tasks claimed per batch size",
        [str(results[n]["claims"]["batches"][BATCHES[0]]["claimed"]) for n in names],
    )
    row(
        "trivial round trip p50 (ms)",
        [f"{results[n]['claims']['round_trip']['p50'] * 1000:.2f}" for n in names],
    )
    row(
        "one durable write of one row/item p50 (ms)",
        [f"{results[n]['claims']['write']['p50'] * 1000:.2f}" for n in names],
    )
    for batch in BATCHES:
        row(
            f"batch {batch}: claims/s",
            [f"{results[n]['claims']['batches'][batch]['claims_per_second']:.0f}" for n in names],
        )
        row(
            f"batch {batch}: floor, one round trip per batch (claims/s)",
            [f"{results[n]['claims']['batches'][batch]['floor_claims_per_second']:.0f}" for n in names],
        )
        row(
            f"batch {batch}: floor, one durable write per batch (claims/s)",
            [f"{results[n]['claims']['batches'][batch]['write_floor_claims_per_second']:.0f}" for n in names],
        )
        row(
            f"batch {batch}: claim call p50 / p95 (ms)",
            [
                f"{results[n]['claims']['batches'][batch]['call']['p50'] * 1000:.1f}/"
                f"{results[n]['claims']['batches'][batch]['call']['p95'] * 1000:.1f}"
                for n in names
            ],
        )
        row(
            f"batch {batch}: round trips' worth per claim call",
            [
                f"{results[n]['claims']['batches'][batch]['call']['p50'] / results[n]['claims']['round_trip']['p50']:.1f}"
                for n in names
            ],
        )

    first = results[names[0]]["status"]
    print(
        f"\nstatus in {first['collections']} collections (target p50 <= 50 ms on postgres at 100,000 tasks)"
    )
    row("", names)
    print("-" * (60 + width * len(names)))
    row("tasks", [str(results[n]["status"]["tasks"]) for n in names])
    row("load (s)", [f"{results[n]['status']['load_seconds']:.1f}" for n in names])
    row(
        "per collection: claimed / failed / left locked",
        ["{claimed}/{failed}/{locked}".format(**results[n]["status"]["shape_per_collection"]) for n in names],
    )
    row("blocked tasks shown", [str(results[n]["status"]["blocked"]) for n in names])
    for key, label in (("every", "status() of every collection"), ("one", "status(one collection)")):
        for stat in ("p50", "p95"):
            row(f"{label} {stat} (ms)", [f"{results[n]['status'][key][stat] * 1000:.1f}" for n in names])
    row(
        "progress(one collection): rate + ETA p50 (ms)",
        [f"{results[n]['status']['progress']['p50'] * 1000:.1f}" for n in names],
    )
    row(
        "round trips per status(): every / one collection",
        [f"{results[n]['status']['requests_every']}/{results[n]['status']['requests_one']}" for n in names],
    )
    row(
        "status statements planned with a seq scan of tasks",
        [
            str(len(results[n]["status"].get("seq_scans", [])))
            if "seq_scans" in results[n]["status"]
            else "-"
            for n in names
        ],
    )
    for n in names:
        for query in results[n]["status"].get("seq_scans", []):
            print(f"  {n}: {query}")
    rows = {}
    for n in names:
        rows[f"{n}: status() every collection"] = results[n]["status"]["every"]
        rows[f"{n}: status(one)"] = results[n]["status"]["one"]
        rows[f"{n}: progress(one)"] = results[n]["status"]["progress"]
        for batch in BATCHES:
            rows[f"{n}: claim call, batch {batch}"] = results[n]["claims"]["batches"][batch]["call"]
        rows[f"{n}: trivial round trip"] = results[n]["claims"]["round_trip"]
        rows[f"{n}: one durable write"] = results[n]["claims"]["write"]
    print_table("Latencies (seconds)", rows)
    load = os.getloadavg()
    print(
        f"\nload average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} ({os.cpu_count()} cores)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="postgres,dynamodb")
    parser.add_argument("--claims", type=int, default=2000, help="tasks claimed per batch size (PostgreSQL)")
    parser.add_argument(
        "--dynamodb-claims", type=int, default=500, help="tasks claimed per batch size (DynamoDB)"
    )
    parser.add_argument(
        "--round-trips", type=int, default=200, help="trivial round trips timed for the floor"
    )
    parser.add_argument("--status-tasks", type=int, default=100_000)
    parser.add_argument("--collections", type=int, default=5)
    parser.add_argument("--status-runs", type=int, default=50)
    parser.add_argument(
        "--dynamodb-status-tasks",
        type=int,
        default=100_000,
        help="status size on DynamoDB (on moto every query reads the whole table)",
    )
    parser.add_argument("--dynamodb-status-runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke size: checks the script, not the store")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.claims, args.dynamodb_claims, args.round_trips = 100, 50, 30
        args.status_tasks, args.status_runs = 2000, 5
        args.dynamodb_status_tasks, args.dynamodb_status_runs = 2000, 3

    workdir = Path(tempfile.mkdtemp(prefix="bench-collections-store-"))
    results = {backend: run_backend(backend, args, workdir) for backend in args.backends.split(",")}
    out = args.json_out or workdir / "results.json"
    out.write_text(json.dumps(results, indent=2))
    print_report(results)
    print(f"raw results: {out}")


if __name__ == "__main__":
    main()
