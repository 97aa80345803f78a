"""The SQS consumer with several batches in flight, against an in-process queue and Prefect API.

The fakes are narrow stand-ins: a thread-safe queue with receive counts, visibility and a DLQ, and
a Prefect API that keeps one run per idempotency key and can hold bulk calls until several are in
flight at once (so overlap is observed, not timed). The real queue and server are in
``tests/integration/test_bridge.py``.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest

from blocks.status import read_status
from interlinked.bridge.consumer import Consumer, ConsumerConfig
from interlinked.bridge.core import decide
from interlinked.bridge.events import parse_message
from interlinked.bridge.prefect_api import PrefectUnavailable
from interlinked.bridge.routes import load_routes

QUEUE = "http://sqs/burst"
DLQ = "http://sqs/burst-dlq"
ROUTES = {
    "routes": [
        {
            "name": "burst",
            "match": {"source": "message", "type": "burst"},
            "deployment": "burst/idle",
            "parameters": {"n": "{payload}"},
        }
    ]
}


class FakeQueue:
    """An SQS queue (and its DLQ): receive counts, receipt handles, visibility, batch deletes."""

    def __init__(self, key_of, api):
        self._lock = threading.Lock()
        self._next = 0
        self.messages: dict[str, dict] = {}  # id → {"body", "attributes", "receives", "visible", "receipt"}
        self.dead: list[dict] = []
        self.received = 0
        self.deleted: list[str] = []
        self.deleted_before_run: list[str] = []  # must stay empty
        self._key_of = key_of
        self._api = api

    def add(self, body: str, attributes: dict[str, str] | None = None) -> str:
        with self._lock:
            self._next += 1
            message_id = f"m-{self._next}"
            self.messages[message_id] = {
                "body": body,
                "attributes": {
                    k: {"DataType": "String", "StringValue": v} for k, v in (attributes or {}).items()
                },
                "receives": 0,
                "visible": True,
                "receipt": None,
            }
            return message_id

    def receive_message(self, *, QueueUrl, MaxNumberOfMessages, WaitTimeSeconds, **_):
        with self._lock:
            batch = []
            for message_id, message in self.messages.items():
                if message["visible"] and len(batch) < MaxNumberOfMessages:
                    message["visible"] = False
                    message["receives"] += 1
                    message["receipt"] = f"{message_id}#{message['receives']}"
                    batch.append(
                        {
                            "MessageId": message_id,
                            "ReceiptHandle": message["receipt"],
                            "Body": message["body"],
                            "Attributes": {"ApproximateReceiveCount": str(message["receives"])},
                            "MessageAttributes": message["attributes"],
                        }
                    )
            self.received += len(batch)
        if not batch:
            time.sleep(0.01)  # a (very short) long poll
        return {"Messages": batch} if batch else {}

    def _by_receipt(self, receipt: str) -> str | None:
        message_id = receipt.split("#")[0]
        message = self.messages.get(message_id)
        return message_id if message and message["receipt"] == receipt else None

    def delete_message_batch(self, *, QueueUrl, Entries):
        failed = []
        with self._lock:
            for entry in Entries:
                message_id = self._by_receipt(entry["ReceiptHandle"])
                if message_id is None:
                    failed.append({"Id": entry["Id"], "Code": "ReceiptHandleIsInvalid"})
                    continue
                key = self._key_of(self.messages[message_id])
                requeued = any(  # a copy of it (same identity) still waits in the queue
                    self._key_of(other) == key
                    for other_id, other in self.messages.items()
                    if other_id != message_id
                )
                if key is not None and key not in self._api.runs and not requeued:
                    self.deleted_before_run.append(message_id)
                del self.messages[message_id]
                self.deleted.append(message_id)
        return {"Successful": [], "Failed": failed}

    def change_message_visibility_batch(self, *, QueueUrl, Entries):
        with self._lock:  # the bridge extends what it holds: still in flight
            failed = [
                {"Id": entry["Id"], "Code": "ReceiptHandleIsInvalid"}
                for entry in Entries
                if self._by_receipt(entry["ReceiptHandle"]) is None
            ]
        return {"Successful": [], "Failed": failed}

    def change_message_visibility(self, *, QueueUrl, ReceiptHandle, VisibilityTimeout):
        with self._lock:  # back in view at once (the delay itself is SQS's business)
            message_id = self._by_receipt(ReceiptHandle)
            if message_id is not None:
                self.messages[message_id]["visible"] = True

    def send_message(self, *, QueueUrl, MessageBody, MessageAttributes=None, **_):
        if QueueUrl == DLQ:
            with self._lock:
                self.dead.append({"Body": MessageBody, "MessageAttributes": MessageAttributes})
            return {"MessageId": "dead"}
        with self._lock:  # a requeue: a new message, same body and attributes
            self._next += 1
            message_id = f"m-{self._next}"
            self.messages[message_id] = {
                "body": MessageBody,
                "attributes": MessageAttributes or {},
                "receives": 0,
                "visible": True,
                "receipt": None,
            }
        return {"MessageId": message_id}

    def empty(self) -> bool:
        with self._lock:
            return not self.messages


class SlowApi:
    """Prefect: one run per idempotency key; bulk calls held until ``overlap`` are in flight at once
    (once; then they run freely), or for ``gate_seconds`` at most."""

    def __init__(self, *, overlap: int = 1, gate_seconds: float = 3.0):
        self._lock = threading.Condition()
        self.runs: dict[str, str] = {}
        self.requests: list[str] = []  # every key asked for, duplicates included
        self.events: list[dict] = []
        self.active = 0
        self.peak = 0
        self.overlap = overlap
        self.gate_seconds = gate_seconds
        self.opened = threading.Event()  # set once `overlap` calls were in flight together
        self.hold = threading.Event()  # while clear, calls also wait for release()
        self.hold.set()
        self.down_calls = 0  # the next bulk calls that find Prefect unreachable
        self.healthy_after = 0  # health() answers False this many times first
        self.probing = 0
        self.peak_probing = 0
        self.health_calls = 0
        self.api_url = "http://prefect/api"

    def create_flow_runs_bulk(self, deployment, runs):
        with self._lock:
            if self.down_calls > 0:
                self.down_calls -= 1
                raise PrefectUnavailable("Prefect API http://prefect/api unreachable: ConnectionRefusedError")
            self.active += 1
            self.peak = max(self.peak, self.active)
            if self.active >= self.overlap:
                self.opened.set()
                self._lock.notify_all()
            self._lock.wait_for(self.opened.is_set, timeout=self.gate_seconds)
        self.hold.wait(timeout=30)
        with self._lock:
            results = []
            for run in runs:
                key = run["idempotency_key"]
                self.requests.append(key)
                run_id = self.runs.setdefault(key, f"run-{len(self.runs) + 1}")
                results.append({"status": "CREATED", "flow_run_id": run_id})
            self.active -= 1
            return results

    def deployment_id(self, name):
        return "dep-1"

    def emit_events(self, events):
        with self._lock:
            self.events.extend(events)

    def health(self) -> bool:
        with self._lock:
            self.probing += 1
            self.peak_probing = max(self.peak_probing, self.probing)
            self.health_calls += 1
            healthy = self.health_calls > self.healthy_after
        time.sleep(0.05)  # long enough for a second prober to show up, if there were one
        with self._lock:
            self.probing -= 1
        return healthy


@pytest.fixture
def routes_file(tmp_path) -> Path:
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(ROUTES))
    return path


def setup(routes_file: Path, tmp_path: Path, api: SlowApi, *, concurrency: int, max_receives: int = 2):
    table = load_routes(str(routes_file))

    def key_of(message: dict) -> str | None:  # the run a message stands for (None: poison)
        attributes = {k: v["StringValue"] for k, v in message["attributes"].items()}
        try:
            [record] = parse_message(message["body"], message_id="x", attributes=attributes)
        except Exception:
            return None
        return decide(table, record).idempotency_key

    queue = FakeQueue(key_of, api)
    config = ConsumerConfig(
        queue_url=QUEUE,
        dead_letter_url=DLQ,
        max_receives=max_receives,
        prefect_api_url=api.api_url,
        routes_file=str(routes_file),
        status_file=tmp_path / "bridge-status.json",
        concurrency=concurrency,
        wait_seconds=0,
        retry_seconds=0,
    )
    consumer = Consumer(config, sqs=queue, api=api)
    return consumer, queue


def burst(queue: FakeQueue, unique: int, duplicates: int, poison: int, seed: int = 3) -> list[str]:
    """Queue a shuffled burst; returns the dedup ids of the unique events."""
    rng = random.Random(seed)
    ids = [f"event-{index}" for index in range(unique)]
    bodies = [
        (json.dumps({"type": "burst", "payload": {"n": i}}), {"dedup-id": ids[i]}) for i in range(unique)
    ]
    bodies += [bodies[rng.randrange(unique)] for _ in range(duplicates)]
    bodies += [("{not json", {})] * poison
    rng.shuffle(bodies)
    for body, attributes in bodies:
        queue.add(body, attributes)
    return ids


def run_until(consumer: Consumer, done, timeout: float = 60) -> threading.Thread:
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            consumer.stop()
            thread.join(timeout=10)
            raise AssertionError(f"not done within {timeout} s: {consumer.stats.snapshot()}")
        time.sleep(0.02)
    return thread


def test_batches_overlap_and_each_event_is_one_run_created_before_its_message_is_deleted(
    routes_file, tmp_path
):
    api = SlowApi(overlap=3)
    consumer, queue = setup(routes_file, tmp_path, api, concurrency=3)
    ids = burst(queue, unique=60, duplicates=30, poison=4)

    thread = run_until(consumer, lambda: queue.empty() and len(queue.dead) == 4)
    consumer.stop()
    thread.join(timeout=30)
    assert not thread.is_alive()

    assert api.peak == 3  # three bulk calls were in flight together
    assert queue.deleted_before_run == []  # no message was deleted before its run existed (or a copy)
    assert sorted(api.runs) == sorted(f"burst:msg:{i}" for i in ids)  # one run per event, none missing
    assert [d["Body"] for d in queue.dead] == ["{not json"] * 4  # untouched, with the reason beside it
    counts = consumer.stats.snapshot()
    # Malformed poison can never be read: dead-lettered on its first receive, not retried.
    assert counts["received"] == queue.received == 90 + 4
    # Every valid delivery; a duplicate of an event done lately is done without a Prefect call.
    assert counts["dispatched"] + counts.get("duplicate", 0) == 90
    assert counts["dead_lettered"] == counts["dead_lettered_malformed"] == 4
    assert counts.get("retried", 0) == 0
    status = read_status(tmp_path / "bridge-status.json")
    assert status["stopping"] is True and status["counts"] == counts
    assert status["concurrency"] == 3 and status["batches_in_flight"] == 0
    assert status["peak_batches_in_flight"] == 3


def test_stop_finishes_the_batches_in_flight_and_leaves_the_rest_in_the_queue(routes_file, tmp_path):
    api = SlowApi(overlap=2)
    api.hold.clear()  # bulk calls wait until the test lets them go
    consumer, queue = setup(routes_file, tmp_path, api, concurrency=2)
    burst(queue, unique=50, duplicates=0, poison=0)

    thread = run_until(consumer, lambda: api.active == 2)  # two batches of 10 in flight
    consumer.stop()  # SIGTERM's handler
    api.hold.set()
    thread.join(timeout=30)
    assert not thread.is_alive()

    assert queue.received == 20 and len(queue.deleted) == 20 and len(api.runs) == 20
    assert queue.deleted_before_run == []
    waiting = list(queue.messages.values())
    assert len(waiting) == 30 and all(m["visible"] and m["receives"] == 0 for m in waiting)
    status = read_status(tmp_path / "bridge-status.json")
    assert status["stopping"] is True and status["counts"]["dispatched"] == 20


def test_prefect_down_keeps_every_event_one_thread_probes_and_all_runs_follow(routes_file, tmp_path):
    api = SlowApi(overlap=1)
    api.down_calls = 8  # every batch thread finds Prefect unreachable, some twice (max receives 2)
    api.healthy_after = 2
    consumer, queue = setup(routes_file, tmp_path, api, concurrency=4)
    ids = burst(queue, unique=40, duplicates=10, poison=0)

    thread = run_until(consumer, lambda: queue.empty())
    consumer.stop()
    thread.join(timeout=30)

    assert queue.dead == []  # Prefect being down is no reason to dead-letter
    assert sorted(api.runs) == sorted(f"burst:msg:{i}" for i in ids)
    assert queue.deleted_before_run == []
    assert api.peak_probing == 1  # one thread probed /health; the others waited for it
    counts = consumer.stats.snapshot()
    assert counts["dispatched"] + counts.get("duplicate", 0) == 50
    assert counts["retried"] + counts.get("requeued", 0) >= 8


def test_concurrency_setting_is_described_and_bounded(monkeypatch):
    from pydantic import ValidationError

    from interlinked.settings import Settings

    field = Settings.model_fields["bridge_concurrency"]
    assert field.description and field.default >= 2
    monkeypatch.setenv("INTERLINKED_BRIDGE_CONCURRENCY", "7")
    assert Settings().bridge_concurrency == 7
    monkeypatch.setenv("INTERLINKED_BRIDGE_CONCURRENCY", "0")
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Settings()


def test_a_bulk_call_sends_its_runs_in_key_order(routes_file):
    """Two bulk calls sharing keys then wait on each other in one order (no deadlock in PostgreSQL)."""
    from interlinked.bridge.core import Bridge, Message

    api = SlowApi()
    bridge = Bridge(load_routes(str(routes_file)), api)
    ids = [f"event-{index}" for index in (7, 3, 9, 1, 5)]
    messages = [
        Message(body=json.dumps({"type": "burst", "payload": {"n": i}}), attributes={"dedup-id": dedup})
        for i, dedup in enumerate(ids)
    ]
    results = bridge.handle_batch(messages)
    assert all(isinstance(result, list) for result in results)
    assert api.requests == sorted(f"burst:msg:{dedup}" for dedup in ids)


def test_zero_batches_in_flight_is_refused_with_the_reason():
    import argparse

    from interlinked.bridge.consumer import config_from_env

    with pytest.raises(ValueError, match="--concurrency must be at least 1, got 0"):
        config_from_env(argparse.Namespace(concurrency=0))


def test_held_messages_are_kept_invisible_until_released():
    from interlinked.bridge.consumer import VisibilityKeeper

    class Recording:
        def __init__(self):
            self.calls: list[list[dict]] = []

        def change_message_visibility_batch(self, *, QueueUrl, Entries):
            self.calls.append(Entries)
            return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}

    sqs = Recording()
    keeper = VisibilityKeeper(sqs, "http://sqs/q", 3, max_hold=60)
    receipts = [f"h{index}" for index in range(12)]
    keeper.hold(receipts)
    assert keeper.extend_due() == 0 and sqs.calls == []  # a third of the timeout has not passed

    def age(seconds: float, *, since: float = 0.0) -> None:
        for held in keeper._held.values():
            held[0] -= since
            held[1] -= seconds

    age(1.1)
    assert keeper.extend_due() == 12
    assert [len(call) for call in sqs.calls] == [10, 2]  # batches of 10, each by the full timeout
    assert {e["VisibilityTimeout"] for call in sqs.calls for e in call} == {3}
    assert keeper.extend_due() == 0  # just extended
    keeper.release(receipts[:11])
    age(1.1)
    assert keeper.extend_due() == 1 and sqs.calls[-1][0]["ReceiptHandle"] == "h11"
    age(1.1, since=61)  # held longer than max_hold: left to SQS
    assert keeper.extend_due() == 0 and keeper.extended == 13


def _shared_calls_scenario(limit, first, waiting):
    """One slot; ``first`` holds it inside its call while the ``waiting`` batches queue up."""
    from interlinked.bridge.consumer import SharedCalls

    calls = SharedCalls(slots=1, limit=limit)
    release = threading.Event()
    seen: list[list[str]] = []
    results: dict[str, object] = {}

    def handle(messages):
        seen.append(list(messages))
        if len(seen) == 1:
            release.wait(10)
        if "boom" in messages:
            raise RuntimeError("the call failed")
        return [f"done {message}" for message in messages]

    def batch(name, messages):
        try:
            results[name] = calls.call(messages, handle)
        except RuntimeError as error:
            results[name] = str(error)

    threads = [threading.Thread(target=batch, args=first)]
    threads[0].start()
    while not seen:
        time.sleep(0.01)
    for count, item in enumerate(waiting, start=1):
        threads.append(threading.Thread(target=batch, args=item))
        threads[-1].start()
        while len(calls._waiting) < count:  # queued behind the held slot, in this order
            time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(timeout=10)
    return calls, seen, results


def test_batches_waiting_for_a_prefect_call_go_together_and_each_gets_its_own_results():
    """With every slot taken, waiting batches ride along in the next call (up to the limit of
    messages), and each batch gets its own results."""
    waiting = [("w1", ["b", "c"]), ("w2", ["d"]), ("w3", ["e", "f"]), ("w4", ["g"])]
    calls, seen, results = _shared_calls_scenario(5, ("first", ["a"]), waiting)
    assert seen[0] == ["a"]
    # Six waiting messages, at most five per call: two calls (which batch got the slot first
    # decides the split), where four calls went before.
    assert len(seen) == 3 and sorted(len(call) for call in seen[1:]) in ([1, 5], [2, 4])
    assert sorted(message for call in seen[1:] for message in call) == list("bcdefg")
    assert results == {
        "first": ["done a"],
        "w1": ["done b", "done c"],
        "w2": ["done d"],
        "w3": ["done e", "done f"],
        "w4": ["done g"],
    }
    assert calls.carried == 2


def test_a_failed_shared_call_fails_every_batch_it_carried():
    _, seen, results = _shared_calls_scenario(10, ("x", ["x"]), [("y", ["boom"]), ("z", ["z"])])
    assert len(seen) == 2 and sorted(seen[1]) == ["boom", "z"]
    assert results == {"x": ["done x"], "y": "the call failed", "z": "the call failed"}
