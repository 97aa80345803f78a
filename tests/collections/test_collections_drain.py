"""The drain engine (flows/collections/drain.py) against the real PostgreSQL store and a moto S3
server, without Prefect: drains run as functions in threads or as `python -m flows.collections.drain
--no-flow` processes, exactly as a Batch array child does (with the flow around it).

Leases are made short where one must expire; waits are for states, never assertions on time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import boto3
import pytest

from blocks.s3 import ObjectStore
from flows.collections.drain import Drain, DrainOptions, dask_client
from flows.collections.model import DONE, FAILED, LOCKED, TODO, LeaseLost, TaskSpec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3(moto_endpoint):
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    bucket = f"data-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    return ObjectStore(bucket, client)


@pytest.fixture(scope="module")
def dask():
    """One in-process Dask cluster for the module's in-thread drains (8 slots)."""
    with dask_client(8) as client:
        yield client


def counts(store, collection: str) -> dict:
    status = store.status(collection)[collection].as_dict()
    return {key: status[key] for key in ("todo", "locked", "done", "failed", "blocked")}


def drain(store, collection, client, s3, **options):
    options.setdefault("poll_seconds", 0.2)
    return Drain(
        store, collection, client, bucket=s3.bucket, object_store=s3, options=DrainOptions(**options)
    ).run()


def wait_for(predicate, timeout: float = 60, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout} s")


def drain_process(postgres_dsn, store, moto_endpoint, s3, collection, *extra: str) -> subprocess.Popen:
    """A drain as its own process (the --no-flow entry point of flows.collections.drain)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_API"))},
        "INTERLINKED_DATABASE_URL": postgres_dsn,
        "INTERLINKED_TASKS_BACKEND": "postgres",
        "INTERLINKED_TASKS_SCHEMA": store.schema,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.collections.drain",
            collection,
            "--no-flow",
            "--bucket",
            s3.bucket,
            *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_drain_runs_every_task_records_outcomes_and_logs(store, dask, s3, tmp_path):
    out = tmp_path / "ran"
    store.add(
        "step",
        [
            TaskSpec("ok1", f'echo "hello $TASK_ID from $COLLECTION"; echo $TASK_ID >> {out}'),
            TaskSpec("ok2", f"echo $TASK_ID >> {out}", attributes={"sample": "s2"}),
            TaskSpec("bad", "echo going wrong; exit 7"),
            TaskSpec("quiet", "true"),
        ],
    )
    stats = drain(store, "step", dask, s3)
    assert stats.stop_reason == "drained"
    assert (stats.done, stats.failed, stats.lost) == (3, 1, 0)
    assert counts(store, "step") == {"todo": 0, "locked": 0, "done": 3, "failed": 1, "blocked": 0}
    assert sorted(out.read_text().split()) == ["ok1", "ok2"]

    ok1 = store.get("step", "ok1")
    assert (ok1.state, ok1.exit_code, ok1.log_key) == (DONE, 0, "collections/step/logs/ok1.log")
    assert s3.read_text("collections/step/logs/ok1.log") == "hello ok1 from step\n"
    bad = store.get("step", "bad")
    assert (bad.state, bad.exit_code) == (FAILED, 7)
    assert bad.error == "exit code 7: going wrong"
    assert s3.read_text("collections/step/logs/bad.log") == "going wrong\n"
    # No output, no log object (no request for it).
    assert store.get("step", "quiet").log_key is None
    assert not s3.exists("collections/step/logs/quiet.log")


def test_a_drain_of_several_collections_takes_a_lower_one_only_when_those_before_have_nothing(
    store, dask, s3, tmp_path
):
    # `tasks drain high low`: PiCaS's PrioritizedViewIterator (high view first, then low). The
    # same task ids in both collections: each outcome and log goes to its own collection.
    for name in ("low", "high"):  # low added first: by age alone it would be handed out first
        store.add(name, [TaskSpec(f"t{i}", f"echo $TASK_ID of $COLLECTION; echo {name}") for i in range(4)])
    store.add("high", [TaskSpec("bad", "exit 3")])
    stats = Drain(
        store,
        "high",
        dask,
        bucket=s3.bucket,
        object_store=s3,
        options=DrainOptions(concurrency=2, batch=3, poll_seconds=0.2),
        lower_priority=["low"],
    ).run()
    assert stats.stop_reason == "drained"
    assert (stats.claimed, stats.done, stats.failed, stats.lost) == (9, 8, 1, 0)
    assert stats.lower_priority == ["low"]
    assert [(f["collection"], f["id"]) for f in stats.failures] == [("high", "bad")]
    assert counts(store, "high") == {"todo": 0, "locked": 0, "done": 4, "failed": 1, "blocked": 0}
    assert counts(store, "low") == {"todo": 0, "locked": 0, "done": 4, "failed": 0, "blocked": 0}
    high = [store.get("high", task_id) for task_id in ("t0", "t1", "t2", "t3", "bad")]
    low = [store.get("low", f"t{i}") for i in range(4)]
    assert max(task.started_at for task in high) <= min(task.started_at for task in low)
    assert s3.read_text("collections/low/logs/t0.log") == "t0 of low\nlow\n"
    assert s3.read_text("collections/high/logs/t0.log") == "t0 of high\nhigh\n"


def test_a_task_past_its_timeout_is_killed_and_failed(postgres_store, dask, s3, tmp_path):
    store = postgres_store
    store.add("step", [TaskSpec("slow", f"echo started; sleep 30; touch {tmp_path / 'finished'}")])
    stats = drain(store, "step", dask, s3, task_timeout=1)
    task = store.get("step", "slow")
    assert (stats.failed, task.state) == (1, FAILED)
    assert task.error == "timed out after 1 s (killed)"
    assert s3.read_text("collections/step/logs/slow.log") == "started\n"
    assert not (tmp_path / "finished").exists()


def test_four_concurrent_drains_complete_every_task_exactly_once(postgres_dsn, postgres_store, s3, tmp_path):
    from flows.collections.postgres import PostgresTaskStore

    out = tmp_path / "ran"
    postgres_store.add("many", [TaskSpec(f"t{i}", f"echo $TASK_ID >> {out}") for i in range(2000)])
    results, errors = [], []

    def one_drain():
        store = PostgresTaskStore(postgres_dsn, schema=postgres_store.schema)
        try:
            with dask_client(4) as client:
                results.append(drain(store, "many", client, s3, concurrency=4, batch=25))
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            store.close()

    threads = [threading.Thread(target=one_drain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    ran = Counter(out.read_text().split())
    assert len(ran) == 2000 and set(ran.values()) == {1}, [k for k, v in ran.items() if v != 1][:10]
    assert counts(postgres_store, "many") == {"todo": 0, "locked": 0, "done": 2000, "failed": 0, "blocked": 0}
    assert sum(r.done for r in results) == 2000
    assert all(r.lost == 0 for r in results)
    assert sum(1 for r in results if r.done) >= 2, "the drains shared the work"


def test_heartbeats_keep_a_task_longer_than_its_lease(postgres_store, dask, s3, tmp_path):
    # Without heartbeats the 2 s lease expires while the task runs and the second drain runs it again.
    store = postgres_store
    out = tmp_path / "ran"
    store.add("long", [TaskSpec("t", f"echo $TASK_ID >> {out}; sleep 6")])
    first = threading.Thread(target=drain, args=(store, "long", dask, s3), kwargs={"lease_seconds": 2})
    first.start()
    wait_for(lambda: out.exists(), what="the task to start")
    second = drain(store, "long", dask, s3, lease_seconds=2)
    first.join()
    assert out.read_text().split() == ["t"]
    task = store.get("long", "t")
    assert (task.state, task.attempts) == (DONE, 1)
    assert second.claimed == 0


def test_sigterm_gives_the_tasks_back_at_once_and_kills_them(
    postgres_dsn, postgres_store, moto_endpoint, s3, tmp_path
):
    store = postgres_store
    pids = tmp_path / "pids"
    pids.mkdir()
    store.add("held", [TaskSpec(f"t{i}", f"echo $$ > {pids}/$TASK_ID; exec sleep 120") for i in range(3)])
    process = drain_process(postgres_dsn, store, moto_endpoint, s3, "held", "--concurrency", "3")
    try:
        wait_for(lambda: len(list(pids.iterdir())) == 3, what="three running tasks")
        assert counts(store, "held")["locked"] == 3
        process.send_signal(signal.SIGTERM)
        # The lease is 300 s: todo again now means released, not expired.
        wait_for(lambda: counts(store, "held")["todo"] == 3, timeout=10, what="the tasks back in todo")
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    stdout, stderr = process.communicate()
    assert process.returncode == -signal.SIGTERM, stderr
    stats = json.loads(stdout.strip().splitlines()[-1])
    assert (stats["released"], stats["done"], stats["stop_reason"]) == (3, 0, "stopped: SIGTERM")
    for path in pids.iterdir():
        pid = int(path.read_text())
        wait_for(lambda pid=pid: not _alive(pid), timeout=10, what=f"task process {pid} to end")
    for i in range(3):
        task = store.get("held", f"t{i}")
        assert (task.state, task.attempts) == (TODO, 0)
        with pytest.raises(LeaseLost):
            store.complete("held", f"t{i}", task.lease_token)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (its parent, the killed drain's child, may not reap it).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_killed_drains_task_reruns_elsewhere_and_its_late_done_is_refused(
    postgres_dsn, postgres_store, moto_endpoint, s3, dask, tmp_path
):
    store = postgres_store
    runs = tmp_path / "runs"
    # First run: records itself and hangs; a re-run finds the record and finishes.
    command = f'echo "$$" >> {runs}; [ "$(wc -l < {runs})" -gt 1 ] || exec sleep 120'
    store.add("fragile", [TaskSpec("t", command)])
    process = drain_process(postgres_dsn, store, moto_endpoint, s3, "fragile", "--lease-seconds", "2")
    try:
        wait_for(lambda: runs.exists() and runs.read_text().strip(), what="the first run to start")
        stale = store.get("fragile", "t")
        assert stale.state == LOCKED
        process.kill()  # kill -9: no release, no more heartbeats
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    orphan = int(runs.read_text().split()[0])
    try:
        # The lease expires; a drain elsewhere takes the task over and runs it again.
        stats = drain(store, "fragile", dask, s3, lease_seconds=30)
        task = store.get("fragile", "t")
        assert (stats.done, task.state, task.attempts) == (1, DONE, 2)
        assert task.lease_token != stale.lease_token
        assert len(runs.read_text().split()) == 2
        # The killed worker's late "done" with its stale token changes nothing.
        with pytest.raises(LeaseLost, match="stale"):
            store.complete("fragile", "t", stale.lease_token, exit_code=0)
        assert store.complete_many("fragile", [("t", stale.lease_token, 0, None)]) == ["t"]
        assert counts(store, "fragile") == {"todo": 0, "locked": 0, "done": 1, "failed": 0, "blocked": 0}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGKILL)


def test_a_drain_stops_before_its_time_budget_and_gives_back_its_tasks(postgres_store, dask, s3):
    store = postgres_store
    store.add("budget", [TaskSpec(f"t{i}", "sleep 60") for i in range(2)])
    stats = drain(store, "budget", dask, s3, concurrency=2, time_budget=3, budget_margin=1)
    assert (stats.stop_reason, stats.released, stats.done) == ("time budget", 2, 0)
    assert counts(store, "budget")["todo"] == 2
