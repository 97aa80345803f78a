"""Throughput and ETA on both stores: the writes that finish tasks count them per minute, and
``flows.collections.progress`` turns those counts and the status counters into a rate and an ETA."""

from __future__ import annotations

import pytest

from flows.collections.model import TaskSpec
from flows.collections.progress import progress


def test_finishing_tasks_counts_them_per_minute(store):
    store.add("step", [TaskSpec(f"t{i}", "true") for i in range(10)])
    tasks = store.claim("step", owner="w", batch=6)
    assert store.finished_per_minute("step", minutes=5)[1] == {}
    for task in tasks[:3]:
        store.complete("step", task.id, task.lease_token)
    store.fail("step", tasks[3].id, tasks[3].lease_token, error="boom")
    # Back to todo for another try: not finished, not counted.
    assert store.fail("step", tasks[4].id, tasks[4].lease_token, error="flaky", retry=True) == "todo"
    store.release("step", tasks[5].id, tasks[5].lease_token)

    now, buckets = store.finished_per_minute("step", minutes=5)
    assert sum(done for done, _ in buckets.values()) == 3
    assert sum(failed for _, failed in buckets.values()) == 1
    assert all(now // 60 - 5 < minute <= now // 60 for minute in buckets)

    (result,) = progress(store, "step").values()
    assert (result.finished, result.done, result.remaining) == (4, 3, 6)
    assert result.per_minute > 0 and result.eta_seconds is not None and result.eta_seconds > 0
    assert set(progress(store)) == {"step"}


def test_retried_failures_and_delete_reset_the_history(store):
    store.add("step", [TaskSpec("a", "true")])
    (task,) = store.claim("step", owner="w")
    store.fail("step", task.id, task.lease_token, error="boom")
    assert store.retry_failed("step") == 1
    (result,) = progress(store, "step").values()
    # The failure happened (it is history), and the task is left again.
    assert (result.finished, result.remaining) == (1, 1)
    store.delete("step")
    store.add("step", [TaskSpec("a", "true")])
    assert store.finished_per_minute("step", minutes=60)[1] == {}


def test_progress_of_an_unknown_collection_is_refused(store):
    from flows.collections.model import UnknownCollection

    with pytest.raises(UnknownCollection):
        progress(store, "nope")
