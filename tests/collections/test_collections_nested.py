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
    # ... and PyAnamo's own quartiles (66 %: Q3).
    assert document["quartiles"] == {"todo": 0, "Q1": 0, "Q2": 0, "Q3": 1, "Q4": 0, "done": 1}
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


def _with_nest_states(spec, states, **changes):
    """``spec`` (a parsed nested item) with its nests in ``states`` (an import with its history)."""
    import dataclasses

    nests = [{**sub, "state": state} for sub, state in zip(spec.attributes[NESTED_KEY], states, strict=True)]
    return dataclasses.replace(spec, attributes={**spec.attributes, NESTED_KEY: nests}, **changes)


def test_delete_nests_removes_them_and_recomputes_the_item(store, tmp_path):
    # PyAnamo's manager deletes nests from an item; the item's state follows from those left.
    from flows.collections.formats import export_collection

    s1, s2, s3 = nested_items(
        tmp_path, "S1\tStep_B\tseq\t3,bad,5\nS2\tStep_B\tseq\t1,2,3\nS3\tStep_B\tseq\t7,8\n"
    )
    store.add(
        "nest",
        [
            # S1 failed on its second nest only.
            _with_nest_states(s1, [DONE, FAILED, DONE], state=FAILED, error="1 of 3 failed: Task_1"),
            # S2: one nest done, one failed, one never ran.
            _with_nest_states(s2, [DONE, FAILED, TODO]),
            s3,
        ],
    )
    assert store.status("nest")["nest"].as_dict()["failed"] == 1

    # Deleting S1's failed nest leaves only done ones: the item is done, its command and PyAnamo
    # arguments lose the nest, the others keep their ids.
    item = store.delete_nests("nest", "S1", ["Task_1"])
    assert (item.state, item.error, item.exit_code) == (DONE, None, 0)
    assert [(sub["id"], sub["state"]) for sub in item.attributes[NESTED_KEY]] == [
        ("Task_0", DONE),
        ("Task_2", DONE),
    ]
    assert "bad" not in item.command and "seq 3" in item.command and "seq 5" in item.command
    assert item.attributes["pyanamo"]["arguments"] == ["3", "5"]

    # S2 without the one that never ran: nothing left to run and one failed -> failed, naming it.
    item = store.delete_nests("nest", "S2", ["Task_2"])
    assert item.state == FAILED and "Task_1" in item.error and "Task_0" not in item.error
    # S3 without its first: still todo, and a claim hands out the shorter command.
    item = store.delete_nests("nest", "S3", ["Task_0"])
    assert item.state == TODO and [sub["id"] for sub in item.attributes[NESTED_KEY]] == ["Task_1"]
    counts = store.status("nest")["nest"].as_dict()
    assert (counts["todo"], counts["done"], counts["failed"]) == (1, 1, 1)
    [claimed] = store.claim("nest", owner="w", batch=5, lease_seconds=60)
    assert claimed.id == "S3" and "seq 8" in claimed.command and "seq 7" not in claimed.command

    # Exported as PyAnamo lines: the deleted nests are gone there too.
    lines = export_collection(store, "nest", "pyanamo", separator="\t").splitlines()
    assert "S1\tStep_B\tseq\t3,5" in lines and "S2\tStep_B\tseq\t1,2" in lines

    # What cannot be done is refused, nothing changed: a running item, an unknown nest, every
    # nest, a task that is not nested.
    with pytest.raises(TaskInputError, match="running"):
        store.delete_nests("nest", "S3", ["Task_1"])
    with pytest.raises(TaskInputError, match="no nested task Task_9"):
        store.delete_nests("nest", "S1", ["Task_9"])
    with pytest.raises(TaskInputError, match="nothing to run"):
        store.delete_nests("nest", "S1", ["Task_0", "Task_2"])
    store.add("nest", [TaskSpec(id="plain", command="true")])
    with pytest.raises(TaskInputError, match="not a nested task"):
        store.delete_nests("nest", "plain", ["Task_0"])
    assert [sub["id"] for sub in store.get("nest", "S1").attributes[NESTED_KEY]] == ["Task_0", "Task_2"]
    counts = store.status("nest")["nest"].as_dict()
    assert (counts["todo"], counts["locked"], counts["done"], counts["failed"]) == (1, 1, 1, 1)
