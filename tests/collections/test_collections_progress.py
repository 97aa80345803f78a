"""What the drain and `tasks status` add to the store: batched completions, throughput, samples."""

from __future__ import annotations

import pytest

from flows.collections.model import DONE, FAILED, LOCKED, TaskSpec


def test_complete_many_marks_its_batch_done_and_refuses_stale_tokens(store):
    store.add("step", [TaskSpec(f"t{i}", "true") for i in range(4)])
    claimed = {task.id: task for task in store.claim("step", owner="w", batch=4, lease_seconds=60)}
    store.reset("step", "locked")  # voids every lease
    again = {task.id: task for task in store.claim("step", owner="w2", batch=2, lease_seconds=60)}
    stale = [(task_id, claimed[task_id].lease_token, 0, None) for task_id in sorted(again)]
    assert sorted(store.complete_many("step", stale)) == sorted(again)
    fresh = [(task_id, task.lease_token, 0, f"logs/{task_id}") for task_id, task in again.items()]
    assert store.complete_many("step", fresh) == []
    for task_id in again:
        task = store.get("step", task_id)
        assert (task.state, task.exit_code, task.log_key) == (DONE, 0, f"logs/{task_id}")
    status = store.status("step")["step"]
    assert (status.todo, status.locked, status.done) == (2, 0, 2)


def test_samples_show_where_each_sample_is_across_steps(store):
    store.add(
        "align",
        [TaskSpec(f"s{i}", "true", attributes={"sample": f"S{i}"}) for i in range(3)]
        + [TaskSpec("other", "true")],
    )
    store.add(
        "call",
        [
            TaskSpec(f"s{i}", "true", depends_on=(f"align/s{i}",), attributes={"sample": f"S{i}"})
            for i in range(3)
        ],
    )
    by_id = {task.id: task for task in store.claim("align", owner="w", batch=4, lease_seconds=60)}
    store.complete("align", "s0", by_id["s0"].lease_token)
    store.fail("align", "s1", by_id["s1"].lease_token, error="bad reads", exit_code=2)
    samples = store.samples(["align", "call"])
    assert samples["S0"] == {"align": {DONE: 1}, "call": {"todo": 1}}
    assert samples["S1"] == {"align": {FAILED: 1}, "call": {"blocked": 1}}
    assert samples["S2"]["align"] in ({LOCKED: 1}, {"todo": 1})
    assert set(samples) == {"S0", "S1", "S2"}


def test_postgres_throughput_counts_recent_finishes(postgres_store):
    store = postgres_store
    store.add("step", [TaskSpec(f"t{i}", "true") for i in range(5)])
    assert store.throughput("step") == 0.0
    tasks = store.claim("step", owner="w", batch=5, lease_seconds=60)
    assert store.complete_many("step", [(t.id, t.lease_token, 0, None) for t in tasks]) == []
    assert store.throughput("step", window=60) == pytest.approx(5.0, rel=0.01)
