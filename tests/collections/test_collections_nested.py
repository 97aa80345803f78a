"""Nested tasks (PyAnamo's nests) run first-class by the drain, their sub-states written back under
the fencing token, nests reset one by one or all; the drain's budgets (``max_tasks`` and the
average-task-time rule). Real stores (PostgreSQL, DynamoDB on moto) and a moto S3 server."""

from __future__ import annotations

import uuid

import boto3
import pytest

from blocks.s3 import ObjectStore
from flows.collections.client import nested_status
from flows.collections.drain import Drain, DrainOptions, dask_client
from flows.collections.formats import parse_pyanamo
from flows.collections.model import DONE, FAILED, NESTED_KEY, TODO, LeaseLost, TaskInputError, TaskSpec


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
    return ObjectStore(bucket, client), client


@pytest.fixture(scope="module")
def dask():
    with dask_client(4) as client:
        yield client


def run_drain(store, collection, dask, s3, **options):
    options.setdefault("poll_seconds", 0.2)
    objects, _ = s3
    return Drain(
        store, collection, dask, bucket=objects.bucket, object_store=objects, options=DrainOptions(**options)
    ).run()


def nested_items(tmp_path, lines: str):
    path = tmp_path / "items.txt"
    path.write_text(lines)
    return parse_pyanamo(path.read_text(), "nest", separator="\t", nested_delimiter=",", source=str(path))


def test_a_nested_item_runs_its_nests_in_parallel_and_fails_naming_the_failing_one(store, dask, s3, tmp_path):
    # Two PyAnamo nested items: S1's three nests all succeed; S2's second nest fails. Each nest
    # writes a marker and waits for its siblings' markers: they finish only when run in parallel.
    marks = tmp_path / "marks"
    marks.mkdir()
    runs = tmp_path / "runs.txt"
    script = (
        f"bash -c 'echo $TASK_ID.$NESTED_TASK_ID >> {runs}; touch {marks}/$TASK_ID.$NESTED_TASK_ID; n=0; "
        f"while set -- {marks}/$TASK_ID.*; [ $# -lt 3 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done; "
        '[ $n -lt 100 ] || exit 9; echo "$0 of $TASK_ID"; [ "$0" != bad ] || exit 5\''
    )
    tasks = nested_items(tmp_path, f"S1\tt\t{script}\ta,b,c\nS2\tt\t{script}\ta,bad,c\n")
    store.add("nest", tasks)
    stats = run_drain(store, "nest", dask, s3, concurrency=2)
    assert (stats.done, stats.failed) == (1, 1)

    done = store.get("nest", "S1")
    assert done.state == DONE
    assert [sub["state"] for sub in done.attributes[NESTED_KEY]] == [DONE, DONE, DONE]
    failed = store.get("nest", "S2")
    assert failed.state == FAILED
    assert "Task_1" in failed.error and "Task_0" not in failed.error and "exit code 5" in failed.error
    subs = {sub["id"]: sub for sub in failed.attributes[NESTED_KEY]}
    assert [subs[k]["state"] for k in ("Task_0", "Task_1", "Task_2")] == [DONE, FAILED, DONE]
    assert subs["Task_1"]["exit_code"] == 5
    objects, client = s3
    key = "collections/nest/logs/S2/Task_2.log"
    assert subs["Task_2"]["log_key"] == key
    assert client.get_object(Bucket=objects.bucket, Key=key)["Body"].read().decode() == "c of S2\n"

    # PyAnamo's progress buckets: S1 done; S2 2 of 3 nests done (67 %: 26-75 %).
    document = nested_status(store, "nest")
    assert document["items"] == 2
    assert document["buckets"] == {"todo": 0, "1-25%": 0, "26-75%": 1, "76-99%": 0, "done": 1}
    assert document["nests"] == {DONE: 5, FAILED: 1}

    # Reset the failing nest only: the item is todo again and the drain re-runs just that nest.
    reset = store.reset_nests("nest", "S2", ["Task_1"])
    assert reset.state == TODO
    assert [sub["state"] for sub in reset.attributes[NESTED_KEY]] == [DONE, TODO, DONE]
    store.reset_nests("nest", "S2", ["Task_1"])  # idempotent on a todo item
    assert store.status("nest")["nest"].todo == 1
    # Only the reset nest runs again (the others stay done, with their logs).
    stats = run_drain(store, "nest", dask, s3, concurrency=2, task_timeout=30)
    assert (stats.done, stats.failed) == (0, 1)
    ran = runs.read_text().split()
    assert sorted(r for r in ran if r.startswith("S2.")) == [
        "S2.Task_0",
        "S2.Task_1",
        "S2.Task_1",
        "S2.Task_2",
    ]
    after = {sub["id"]: sub for sub in store.get("nest", "S2").attributes[NESTED_KEY]}
    assert [after[k]["state"] for k in ("Task_0", "Task_1", "Task_2")] == [DONE, FAILED, DONE]

    # All nests: every one runs again.
    again = store.reset_nests("nest", "S1")
    assert [sub["state"] for sub in again.attributes[NESTED_KEY]] == [TODO, TODO, TODO]
    assert store.status("nest")["nest"].as_dict()["done"] == 0


def test_reset_nests_refuses_what_it_cannot_do(store):
    store.add(
        "nest",
        [
            TaskSpec(id="plain", command="true"),
            TaskSpec(
                id="item",
                command="true",
                attributes={NESTED_KEY: [{"id": "Task_0", "command": "true", "state": TODO}]},
            ),
        ],
    )
    with pytest.raises(TaskInputError, match="not a nested task"):
        store.reset_nests("nest", "plain")
    with pytest.raises(TaskInputError, match="no nested task Task_7"):
        store.reset_nests("nest", "item", ["Task_7"])
    [claimed] = [t for t in store.claim("nest", owner="w", batch=2) if t.id == "item"] or [None]
    if claimed is not None:
        with pytest.raises(TaskInputError, match="running"):
            store.reset_nests("nest", "item")


def test_set_attributes_needs_the_current_token(store):
    store.add("attrs", [TaskSpec(id="a", command="true", attributes={"sample": "S1"})])
    [task] = store.claim("attrs", owner="w1", lease_seconds=60)
    store.set_attributes("attrs", "a", task.lease_token, {NESTED_KEY: [{"id": "Task_0", "state": DONE}]})
    assert store.get("attrs", "a").attributes == {
        "sample": "S1",
        NESTED_KEY: [{"id": "Task_0", "state": DONE}],
    }
    with pytest.raises(LeaseLost):
        store.set_attributes("attrs", "a", task.lease_token + 1, {"sample": "other"})
    store.release("attrs", "a", task.lease_token)
    with pytest.raises(LeaseLost):  # released: the old token is stale
        store.set_attributes("attrs", "a", task.lease_token, {"sample": "other"})
    assert store.get("attrs", "a").attributes["sample"] == "S1"


def test_max_tasks_stops_the_drain_after_that_many(postgres_store, dask, s3):
    postgres_store.add("budget", [TaskSpec(id=f"t{i}", command="true") for i in range(12)])
    stats = run_drain(postgres_store, "budget", dask, s3, concurrency=2, batch=4, max_tasks=5)
    assert stats.stop_reason == "max tasks"
    assert (stats.claimed, stats.done) == (5, 5)
    assert postgres_store.status("budget")["budget"].todo == 7


def test_the_average_time_rule_does_not_start_what_the_budget_cannot_finish(postgres_store, dask, s3):
    # Tasks of ~1 s, one slot, a 2.6 s budget without margin: after the first, the mean says one
    # more fits at most; a drain without the rule would have claimed a whole batch ahead.
    postgres_store.add("avg", [TaskSpec(id=f"t{i}", command="sleep 1") for i in range(6)])
    stats = run_drain(
        postgres_store, "avg", dask, s3, concurrency=1, batch=6, time_budget=2.6, budget_margin=0.0
    )
    assert stats.stop_reason == "time budget"
    assert stats.done <= 2
    assert stats.released == 0  # nothing was claimed that had to be given back unstarted
    assert postgres_store.status("avg")["avg"].todo == 6 - stats.done
