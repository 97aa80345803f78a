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


def test_status_throughput_and_eta_come_from_the_finish_counts(store):
    """Both backends: `tasks status` (and the drain's artifact, which prints the same document) has
    the rate of the per-minute finish counts and the ETA of what is left at that rate."""
    from flows.collections.client import collection_status
    from flows.collections.progress import progress

    store.add("step", [TaskSpec(f"t{i}", "true") for i in range(8)])
    idle = collection_status(store, "step")["collections"]["step"]
    assert idle["throughput"] == 0.0 and idle["eta_seconds"] is None  # nothing finished: no rate
    tasks = store.claim("step", owner="w", batch=5, lease_seconds=60)
    assert store.complete_many("step", [(t.id, t.lease_token, 0, None) for t in tasks]) == []
    status = collection_status(store, "step")["collections"]["step"]
    (expected,) = progress(store, "step", window_minutes=1).values()
    assert expected.finished == 5 and expected.remaining == 3
    assert status["throughput"] > 0
    assert status["throughput"] == pytest.approx(expected.per_second, rel=0.2)
    assert status["eta_seconds"] == pytest.approx(3 / status["throughput"], rel=0.2)
    assert (
        collection_status(store, "step", throughput_window=None)["collections"]["step"]["throughput"] is None
    )
    for task in store.claim("step", owner="w", batch=3, lease_seconds=60):
        store.complete("step", task.id, task.lease_token)
    assert collection_status(store, "step")["collections"]["step"]["eta_seconds"] == 0.0
