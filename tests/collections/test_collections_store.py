"""The task store's promises (flows/collections/store.py), on every backend, against real servers.

Leases are made short where a test needs one to expire; the waits are for the lease, never
assertions on elapsed time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from flows.collections.model import (
    DONE,
    FAILED,
    LOCKED,
    TODO,
    LeaseLost,
    TaskInputError,
    TaskSpec,
    UnknownCollection,
)


def specs(n: int, prefix: str = "t", depends: str | None = None) -> list[TaskSpec]:
    return [
        TaskSpec(f"{prefix}{i}", f"echo {i}", depends_on=(f"{depends}/{prefix}{i}",) if depends else ())
        for i in range(n)
    ]


def counts(store, collection: str) -> dict:
    status = store.status(collection)[collection].as_dict()
    return {key: status[key] for key in ("todo", "locked", "done", "failed", "blocked", "total")}


def wait_past(expiry: float) -> None:
    while time.time() <= expiry + 0.05:
        time.sleep(0.05)


def test_add_counts_duplicates_and_status_counts(store):
    first = store.add("step", specs(30))
    again = store.add("step", specs(35))
    assert (first.added, first.duplicates) == (30, 0)
    assert (again.added, again.duplicates) == (5, 30)
    assert counts(store, "step") == {
        "todo": 35,
        "locked": 0,
        "done": 0,
        "failed": 0,
        "blocked": 0,
        "total": 35,
    }
    assert store.collections() == ["step"]
    task = store.get("step", "t3")
    assert (task.command, task.state, task.attempts) == ("echo 3", TODO, 0)


def test_invalid_tasks_write_nothing(store):
    with pytest.raises(TaskInputError, match="empty command"):
        store.add("step", [TaskSpec("a", "true"), TaskSpec("b", "  ")])
    with pytest.raises(TaskInputError, match="invalid task id"):
        store.add("step", [TaskSpec("a", "true"), TaskSpec("b/c", "true")])
    assert store.collections() == []
    with pytest.raises(UnknownCollection):
        store.status("step")


def test_claim_complete_and_fail_move_the_counters(store):
    store.add("step", specs(4))
    claimed = store.claim("step", owner="w1", batch=3, lease_seconds=60)
    assert len(claimed) == 3
    assert all(task.state == LOCKED and task.lease_owner == "w1" and task.attempts == 1 for task in claimed)
    assert counts(store, "step")["locked"] == 3
    first, second, third = claimed
    store.complete("step", first.id, first.lease_token, exit_code=0, log_key="collections/step/logs/x.log")
    assert store.fail("step", second.id, second.lease_token, error="exit 3", exit_code=3) == FAILED
    store.release("step", third.id, third.lease_token)
    assert counts(store, "step") == {"todo": 2, "locked": 0, "done": 1, "failed": 1, "blocked": 0, "total": 4}
    done = store.get("step", first.id)
    assert (done.state, done.exit_code, done.log_key) == (DONE, 0, "collections/step/logs/x.log")
    released = store.get("step", third.id)
    assert (released.state, released.attempts) == (TODO, 0)  # a release is not an attempt
    status = store.status("step")["step"]
    assert status.failures == [{"id": second.id, "error": "exit 3", "exit_code": 3, "attempts": 1}]


def test_a_stale_token_changes_nothing(store):
    store.add("step", specs(1))
    [old] = store.claim("step", owner="lost-worker", lease_seconds=0.5)
    wait_past(old.lease_expires)
    [new] = store.claim("step", owner="w2", lease_seconds=60)  # takes over the expired lease
    assert new.id == old.id and new.lease_token > old.lease_token and new.attempts == 2
    for late in (
        lambda: store.complete("step", old.id, old.lease_token),
        lambda: store.fail("step", old.id, old.lease_token, error="late"),
        lambda: store.heartbeat("step", old.id, old.lease_token, 60),
        lambda: store.release("step", old.id, old.lease_token),
    ):
        with pytest.raises(LeaseLost):
            late()
    assert store.get("step", old.id).lease_owner == "w2"
    store.complete("step", new.id, new.lease_token)
    assert counts(store, "step") == {"todo": 0, "locked": 0, "done": 1, "failed": 0, "blocked": 0, "total": 1}


def test_a_heartbeat_keeps_the_lease(store):
    store.add("step", specs(1))
    [task] = store.claim("step", owner="w1", lease_seconds=0.5)
    store.heartbeat("step", task.id, task.lease_token, 60)
    wait_past(task.lease_expires)
    assert store.claim("step", owner="w2", lease_seconds=60) == []
    status = store.status("step")["step"]
    assert (status.oldest_lease_task, status.oldest_lease_owner) == (task.id, "w1")
    assert status.oldest_lease_expires > task.lease_expires


def test_a_poison_task_fails_after_max_attempts(store):
    store.add("step", specs(1), max_attempts=2)
    for _ in range(2):
        [task] = store.claim("step", owner="crashing", lease_seconds=0.3)
        wait_past(task.lease_expires)
    assert store.claim("step", owner="w", lease_seconds=60) == []
    failed = store.get("step", task.id)
    assert failed.state == FAILED and failed.attempts == 2
    assert "lease expired 2 time(s)" in failed.error and "max_attempts=2" in failed.error
    assert counts(store, "step") == {"todo": 0, "locked": 0, "done": 0, "failed": 1, "blocked": 0, "total": 1}
    assert store.retry_failed("step") == 1
    assert store.get("step", task.id).attempts == 0
    assert len(store.claim("step", owner="w", lease_seconds=60)) == 1


def test_fail_with_retry_goes_back_to_todo_while_attempts_remain(store):
    store.add("step", specs(1), max_attempts=2)
    [task] = store.claim("step", owner="w", lease_seconds=60)
    assert store.fail("step", task.id, task.lease_token, error="flaky", retry=True) == TODO
    [task] = store.claim("step", owner="w", lease_seconds=60)
    assert store.fail("step", task.id, task.lease_token, error="flaky", retry=True) == FAILED


def test_reset_locked_voids_the_leases_and_retry_failed_takes_ids(store):
    store.add("step", specs(3))
    claimed = store.claim("step", owner="stuck", batch=3, lease_seconds=600)
    store.fail("step", claimed[0].id, claimed[0].lease_token, error="bad")
    assert store.reset("step", LOCKED) == 2
    with pytest.raises(LeaseLost):
        store.complete("step", claimed[1].id, claimed[1].lease_token)
    assert counts(store, "step")["todo"] == 2
    assert store.retry_failed("step", ["t-none", claimed[0].id]) == 1
    assert counts(store, "step") == {"todo": 3, "locked": 0, "done": 0, "failed": 0, "blocked": 0, "total": 3}
    with pytest.raises(TaskInputError):
        store.reset("step", DONE)


def test_dependencies_across_collections(store):
    store.add("align", specs(2, "S"))
    store.add("call", specs(2, "S", depends="align"))
    store.add("qc", [TaskSpec("S1", "qc S1", depends_on=("call/S1",))])
    assert store.claim("call", owner="w", batch=2, lease_seconds=60) == []  # align not done yet
    a0, a1 = sorted(store.claim("align", owner="w", batch=2, lease_seconds=60), key=lambda t: t.id)
    store.complete("align", a0.id, a0.lease_token)
    store.fail("align", a1.id, a1.lease_token, error="bad reads")
    time.sleep(0.1)  # past the store's (test-sized) back-off for tasks that were not ready
    [c0] = store.claim("call", owner="w", batch=2, lease_seconds=60)
    assert c0.id == "S0"  # S1 waits for a failed task: blocked, not claimable
    assert counts(store, "call") == {"todo": 0, "locked": 1, "done": 0, "failed": 0, "blocked": 1, "total": 2}
    assert counts(store, "qc")["blocked"] == 1  # transitively
    assert store.retry_failed("align") == 1
    assert counts(store, "call")["blocked"] == 0 and counts(store, "qc")["blocked"] == 0
    [a1] = store.claim("align", owner="w", lease_seconds=60)
    store.complete("align", a1.id, a1.lease_token)
    time.sleep(0.1)
    [c1] = store.claim("call", owner="w", lease_seconds=60)
    assert c1.id == "S1"


def test_delete_removes_the_collection(store):
    store.add("align", specs(3))
    store.add("call", specs(3, depends="align"))
    assert store.delete("call") == 3
    assert store.collections() == ["align"]
    assert store.get("call", "t0") is None
    with pytest.raises(UnknownCollection):
        store.delete("call")
    store.add("call", specs(1))  # a new collection of the same name starts empty
    assert counts(store, "call")["total"] == 1


def test_each_task_is_claimed_and_completed_exactly_once_under_concurrent_claimers(store):
    total, workers = 2000, 4
    store.add("many", specs(total))
    claims: list[list[str]] = [[] for _ in range(workers)]
    completed: list[list[str]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            owner = f"w{index}"
            while True:
                batch = store.claim("many", owner=owner, batch=10, lease_seconds=600)
                if not batch:
                    return
                for task in batch:
                    claims[index].append(task.id)
                    store.complete("many", task.id, task.lease_token)
                    completed[index].append(task.id)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    claimed = Counter(task_id for ids in claims for task_id in ids)
    done = Counter(task_id for ids in completed for task_id in ids)
    assert len(claimed) == total and set(claimed.values()) == {1}
    assert len(done) == total and set(done.values()) == {1}
    assert sum(1 for ids in claims if ids) > 1  # the work was really shared
    assert counts(store, "many") == {
        "todo": 0,
        "locked": 0,
        "done": total,
        "failed": 0,
        "blocked": 0,
        "total": total,
    }


def test_dynamodb_recount_repairs_a_counter_left_behind(dynamodb_store):
    """A worker killed between its conditional write and the counter write leaves a count off by
    one (DynamoDB keeps them in two writes); recount rebuilds them from the tasks."""
    store = dynamodb_store
    store.add("step", specs(5))
    [task] = store.claim("step", owner="w", lease_seconds=60)
    store.client.update_item(  # the claim's counter write, done a second time (as a retry would)
        **store._counter_update("step", {TODO: -1, LOCKED: 1})["Update"]
    )
    assert counts(store, "step")["locked"] == 2
    assert store.recount("step") == {TODO: 4, LOCKED: 1, DONE: 0, FAILED: 0}
    assert counts(store, "step") == {"todo": 4, "locked": 1, "done": 0, "failed": 0, "blocked": 0, "total": 5}
    store.complete("step", task.id, task.lease_token)
    assert counts(store, "step")["done"] == 1
