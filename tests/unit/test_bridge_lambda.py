"""The Lambda front end while the Prefect API is down (issue 12, fault 5), with a fake API.

Before: a record that failed because Prefect was unreachable was reported back to SQS with the
queue's own visibility and, on its last allowed receive, dead-lettered (5 receives x 360 s on
Terraform's defaults). Now it is kept: back-off visibility, a new start before the queue's redrive
would move it, one PREFECT_UNAVAILABLE alert line per invocation, and no call per record while
``/health`` fails. Only invalid or unroutable events reach the DLQ.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from interlinked.bridge import dead_letter, lambda_handler
from interlinked.bridge.core import MALFORMED, Bridge, BridgeFailure
from interlinked.bridge.prefect_api import PrefectUnavailable
from interlinked.bridge.routes import load_routes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
VARIABLES = {"data": "interlinked-data", "analysis": "interlinked-analysis", "deployment_set": "local"}
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:events"
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/events"
DLQ_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/bridge-dlq"
MAX_RECEIVES = 3


class FakePrefect:
    """The Prefect API the bridge sees: up (runs by idempotency key) or down (unreachable)."""

    api_url = "http://prefect.invalid/api"

    def __init__(self, *, up: bool):
        self.up = up
        self.runs: dict[str, str] = {}
        self.calls = 0
        self.health_checks = 0

    def _check(self):
        self.calls += 1
        if not self.up:
            raise PrefectUnavailable(f"Prefect API {self.api_url} unreachable: ConnectionRefusedError")

    def health(self) -> bool:
        self.health_checks += 1
        return self.up

    def deployment_id(self, name):
        self._check()
        return "dep-1"

    def create_flow_runs_bulk(self, deployment, runs):
        self._check()
        results = []
        for run in runs:
            run_id = self.runs.setdefault(run["idempotency_key"], f"run-{len(self.runs) + 1}")
            results.append({"status": "CREATED", "flow_run_id": run_id})
        return results

    def create_flow_run(self, deployment, *, parameters, idempotency_key, tags=None, name=None):
        self._check()
        created = idempotency_key not in self.runs
        return self.runs.setdefault(idempotency_key, f"run-{len(self.runs) + 1}"), created

    def emit_events(self, events):
        self._check()


class RecordingSqs:
    def __init__(self):
        self.sent: list[dict] = []
        self.visibility: list[int] = []

    def send_message(self, **params):
        self.sent.append(params)
        return {"MessageId": f"new-{len(self.sent)}"}

    def change_message_visibility(self, **params):
        assert params["QueueUrl"] == QUEUE_URL
        self.visibility.append(params["VisibilityTimeout"])


@pytest.fixture
def lambda_state(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS", raising=False)
    monkeypatch.setenv("BRIDGE_MAX_RECEIVES", str(MAX_RECEIVES))

    def make(api: FakePrefect) -> dict:
        return {
            "api": api,
            "bridge": Bridge(load_routes(variables=VARIABLES), api),
            "sqs": RecordingSqs(),
            "dlq_url": DLQ_URL,
            "max_receives": {},
            "unavailable_since": None,
        }

    return make


def record(message_id: str, body: str, receive_count: int, attributes: dict | None = None) -> dict:
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": str(receive_count)},
        "messageAttributes": attributes or {},
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
    }


def s3_event(key: str) -> str:
    document = json.loads((FIXTURES / "s3-direct.json").read_text())
    document["Records"][0]["s3"]["object"]["key"] = key
    return json.dumps(document)


def _lambda_spelling(sqs_attributes: dict) -> dict:
    return {
        name: {"stringValue": value["StringValue"], "dataType": value["DataType"]}
        for name, value in sqs_attributes.items()
    }


def test_the_last_receive_while_prefect_is_down_is_not_dead_lettered(lambda_state):
    state = lambda_state(FakePrefect(up=False))
    body = (FIXTURES / "s3-direct.json").read_text()
    lambda_handler._sqs_batch(state, [record("m-1", body, MAX_RECEIVES)])
    assert [sent["QueueUrl"] for sent in state["sqs"].sent] == [QUEUE_URL]


def test_records_are_kept_while_prefect_is_down_never_dead_lettered(lambda_state, caplog):
    state = lambda_state(FakePrefect(up=False))
    sqs = state["sqs"]
    body = (FIXTURES / "s3-direct.json").read_text()
    caplog.set_level(logging.WARNING, logger="interlinked.bridge")

    for receive in range(1, MAX_RECEIVES):
        reply = lambda_handler._sqs_batch(state, [record("m-1", body, receive)])
        assert reply == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    # Back-off visibility: back in 30 s, then 60 s (not the queue's 360 s each time).
    assert sqs.visibility == [30, 60]
    assert sqs.sent == [], "nothing dead-lettered or sent before the last receive"
    alerts = [r for r in caplog.records if r.getMessage().startswith("PREFECT_UNAVAILABLE")]
    assert len(alerts) == MAX_RECEIVES - 1 and alerts[0].levelno == logging.ERROR
    assert "kept in the queue, not dead-lettered" in alerts[0].getMessage()

    # The last allowed receive: the queue's redrive would dead-letter it next, so it starts over.
    reply = lambda_handler._sqs_batch(state, [record("m-1", body, MAX_RECEIVES)])
    assert reply == {"batchItemFailures": []}, "the old copy is settled (deleted by Lambda)"
    [again] = sqs.sent
    assert again["QueueUrl"] == QUEUE_URL and again["MessageBody"] == body
    assert again["DelaySeconds"] == lambda_handler.MAX_HOLD_DELAY
    attributes = dead_letter.plain_attributes(again["MessageAttributes"])
    assert attributes["interlinked.message-id"] == "m-1" and attributes["interlinked.requeues"] == "1"
    assert "interlinked.unavailable-since" in attributes


def test_no_limit_on_new_starts_while_down_and_the_run_is_created_once_back(lambda_state):
    api = FakePrefect(up=False)
    state = lambda_state(api)
    sqs = state["sqs"]
    body = json.dumps({"type": "script-job", "payload": {"script": "a.py"}})  # identity: its message id
    attributes = {
        "interlinked.requeues": {"DataType": "Number", "StringValue": str(lambda_handler.MAX_REQUEUES + 5)},
        "interlinked.message-id": {"DataType": "String", "StringValue": "m-original"},
    }
    reply = lambda_handler._sqs_batch(
        state, [record("m-9", body, MAX_RECEIVES, _lambda_spelling(attributes))]
    )
    assert reply == {"batchItemFailures": []}
    [again] = sqs.sent
    assert again["QueueUrl"] == QUEUE_URL, "kept, however many times it started over"
    kept = dead_letter.plain_attributes(again["MessageAttributes"])
    assert kept["interlinked.message-id"] == "m-original"

    # Still down: one health check, no call per record.
    calls = api.calls
    reply = lambda_handler._sqs_batch(state, [record("m-10", body, 1), record("m-11", body, 1)])
    assert len(reply["batchItemFailures"]) == 2 and api.calls == calls

    # Back: the kept copy creates its run, keyed by the original identity.
    api.up = True
    copy = record("m-new-sqs-id", again["MessageBody"], 1, _lambda_spelling(again["MessageAttributes"]))
    assert lambda_handler._sqs_batch(state, [copy]) == {"batchItemFailures": []}
    assert len(api.runs) == 1 and any("m-original" in key for key in api.runs)
    assert state["unavailable_since"] is None


def test_only_invalid_events_reach_the_dlq(lambda_state):
    state = lambda_state(FakePrefect(up=True))
    sqs = state["sqs"]
    reply = lambda_handler._sqs_batch(
        state, [record("bad", "{not json", MAX_RECEIVES), record("ok", s3_event("x/inputs/a.csv"), 1)]
    )
    assert reply == {"batchItemFailures": []}
    [letter] = sqs.sent
    assert letter["QueueUrl"] == DLQ_URL
    assert letter["MessageAttributes"]["interlinked.dlq.category"]["StringValue"] == MALFORMED


def test_an_asynchronous_event_is_parked_in_the_events_queue_while_prefect_is_down(lambda_state):
    api = FakePrefect(up=False)
    state = lambda_state(api)
    event = json.loads(s3_event("labrec/submissions/parked.json"))
    with pytest.raises(BridgeFailure):  # without a queue to park in: Lambda's own retries, as before
        lambda_handler._async_one(state, json.dumps(event), None, {})
    state["events_queue_url"] = QUEUE_URL
    lambda_handler._async_one(state, json.dumps(event), "sns-1", {"kind": "test"})
    [parked] = state["sqs"].sent
    assert parked["QueueUrl"] == QUEUE_URL and json.loads(parked["MessageBody"]) == event
    attributes = dead_letter.plain_attributes(parked["MessageAttributes"])
    assert attributes == {"kind": "test", "interlinked.message-id": "sns-1"}
    # From the queue, once Prefect answers, the parked event creates its run.
    api.up = True
    copy = record("q-1", parked["MessageBody"], 1, _lambda_spelling(parked["MessageAttributes"]))
    assert lambda_handler._sqs_batch(state, [copy]) == {"batchItemFailures": []}
    assert len(api.runs) == 1
