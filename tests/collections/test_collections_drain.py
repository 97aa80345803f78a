"""The drain engine (flows/collections/drain.py) against the real PostgreSQL store and a moto S3
server, without Prefect: drains run as functions in threads or as `python -m flows.collections.drain
--no-flow` processes, exactly as a Batch array child does (with the flow around it).

Leases are made short where one must expire; waits are for states, never assertions on time.
"""

from __future__ import annotations

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
    return Drain(store, collection, client, bucket=s3.bucket, object_store=s3, options=DrainOptions(**options)).run()


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
        [sys.executable, "-m", "flows.collections.drain", collection, "--no-flow", "--bucket", s3.bucket, *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_drain_runs_every_task_records_outcomes_and_logs(postgres_store, dask, s3, tmp_path):
    store = postgres_store
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
