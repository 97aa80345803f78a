"""The routing core carrying out decisions, the dead-letter format and the stdlib Prefect client."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from interlinked.bridge import dead_letter
from interlinked.bridge.core import (
    MALFORMED,
    REJECTED,
    S3_CREATED_EVENT,
    UNAVAILABLE,
    UNROUTABLE,
    Bridge,
    BridgeFailure,
    derived_id,
)
from interlinked.bridge.prefect_api import (
    DeploymentNotFound,
    PrefectApi,
    PrefectRejected,
    PrefectUnavailable,
    auth_header_from_secret,
)
from interlinked.bridge.routes import DEFAULT_ROUTES_FILE, load_routes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
VARIABLES = {"data": "interlinked-data", "analysis": "interlinked-analysis", "deployment_set": "local"}


class FakeApi:
    """Stands in for the Prefect API: idempotency keys map to one run each."""

    def __init__(
        self, *, fail: Exception | None = None, fail_events: Exception | None = None, locked_calls: int = 0
    ):
        self.locked_calls = locked_calls  # bulk calls answering "database is locked" for every run
        self.runs: dict[str, dict] = {}
        self.events: list[dict] = []
        self.fail = fail
        self.fail_events = fail_events

    def create_flow_run(self, deployment, *, parameters, idempotency_key, tags=None, name=None):
        if self.fail:
            raise self.fail
        if idempotency_key in self.runs:
            return self.runs[idempotency_key]["id"], False
        run = {
            "id": f"run-{len(self.runs) + 1}",
            "deployment": deployment,
            "parameters": parameters,
            "tags": tags,
        }
        self.runs[idempotency_key] = run
        return run["id"], True

    def create_flow_runs_bulk(self, deployment, runs):
        self.bulk_calls = getattr(self, "bulk_calls", 0) + 1
        if self.bulk_calls <= self.locked_calls:
            return [
                {"status": "FAILED", "error": "(sqlite3.OperationalError) database is locked"} for _ in runs
            ]
        results = []
        for run in runs:
            if '"bad"' in json.dumps(run["parameters"]):
                results.append({"status": "FAILED", "error": "Parameter validation failed"})
                continue
            run_id, _ = self.create_flow_run(deployment, **run)
            results.append({"status": "CREATED", "flow_run_id": run_id})
        return results

    def deployment_id(self, name):
        return "dep-1"

    def emit_events(self, events):
        if self.fail_events:
            raise self.fail_events
        self.events.extend(events)


@pytest.fixture
def table():
    return load_routes(variables=VARIABLES)


def body(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_a_duplicate_delivery_creates_no_second_run(table):
    api = FakeApi()
    bridge = Bridge(table, api)
    first = bridge.handle(body("s3-direct.json"), message_id="sqs-1")
    again = bridge.handle(body("s3-direct.json"), message_id="sqs-2")  # redelivered: another SQS id
    assert [o.status for o in first] == ["created"] and [o.status for o in again] == ["duplicate"]
    assert first[0].flow_run_id == again[0].flow_run_id and len(api.runs) == 1
    # The Prefect event has an id derived from the key: the re-emission is deduplicated by the server.
    assert (
        api.events[0]["id"] == api.events[1]["id"] == derived_id(first[0].decision.idempotency_key, "event")
    )
    event = api.events[0]
    assert event["event"] == S3_CREATED_EVENT
    assert (
        event["resource"]["prefect.resource.id"]
        == "s3://interlinked-analysis/labrec/submissions/submit direct+1.json"
    )
    assert event["resource"]["interlinked.route"] == "submission"
    assert {r["prefect.resource.role"] for r in event["related"]} == {"flow-run", "deployment"}
    assert bridge.stats.snapshot()["created"] == 1 and bridge.stats.snapshot()["duplicate"] == 1


def test_ignored_records_emit_nothing_and_are_counted(table):
    api = FakeApi()
    bridge = Bridge(table, api)
    assert [o.status for o in bridge.handle(body("s3-test-event.json"))] == ["ignored"]
    assert [o.status for o in bridge.handle(body("sns-s3-test-event.json"))] == ["ignored"]
    assert api.runs == {} and api.events == []
    assert bridge.stats.snapshot()["ignored_by_reason"] == {"test-event": 2}


def test_emit_routes_record_an_event_without_a_run(tmp_path, monkeypatch):
    routes = json.loads(DEFAULT_ROUTES_FILE.read_text())
    routes["routes"][0]["action"] = "emit"
    routes["routes"][0]["name"] = "submission-triggered"
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(routes))
    api = FakeApi()
    bridge = Bridge(load_routes(path, variables=VARIABLES), api)
    [outcome] = bridge.handle(body("sns-envelope-s3.json"))
    assert outcome.status == "emitted" and api.runs == {}
    [event] = api.events
    assert event["resource"]["interlinked.action"] == "emit" and event["related"] == []
    assert event["resource"]["s3.key"] == "labrec/submissions/via-sns.json"


@pytest.mark.parametrize(
    ("error", "category"),
    [
        (PrefectRejected(409, "parameters do not match"), REJECTED),
        (PrefectUnavailable("unreachable"), UNAVAILABLE),
        (DeploymentNotFound("no deployment"), UNAVAILABLE),
    ],
)
def test_api_failures_become_categorised_bridge_failures(table, error, category):
    with pytest.raises(BridgeFailure) as failure:
        Bridge(table, FakeApi(fail=error)).handle(body("s3-direct.json"))
    assert failure.value.category == category


def test_a_failed_event_emission_keeps_the_message(table):
    with pytest.raises(BridgeFailure) as failure:
        Bridge(table, FakeApi(fail_events=PrefectUnavailable("down"))).handle(body("s3-direct.json"))
    assert failure.value.category == UNAVAILABLE and "Prefect event" in failure.value.reason


def test_malformed_body_is_a_permanent_failure(table):
    with pytest.raises(BridgeFailure) as failure:
        Bridge(table, FakeApi()).handle("{{{")
    assert failure.value.category == MALFORMED and failure.value.permanent


def test_a_batch_is_one_bulk_call_and_each_message_gets_its_own_result(table):
    from interlinked.bridge.core import Message

    api = FakeApi()
    bridge = Bridge(table, api)
    job = json.dumps({"type": "script-job", "payload": {"script": "a.py"}})
    batch = [
        Message(body("s3-direct.json"), message_id="a"),
        Message(body("s3-direct.json"), message_id="b"),  # the same event twice in one batch
        Message(job, message_id="c", attributes={"dedup-id": "j1"}),
        Message(body("s3-test-event.json"), message_id="d"),
        Message("{oops", message_id="e"),
        Message(json.dumps({"type": "launch"}), message_id="f"),
    ]
    results = bridge.handle_batch(batch)
    assert [o.status for o in results[0]] == ["dispatched"] and results[0][0].flow_run_id == results[1][
        0
    ].flow_run_id
    assert [o.status for o in results[2]] == ["dispatched"] and [o.status for o in results[3]] == ["ignored"]
    assert results[4].category == MALFORMED and results[5].category == "unroutable"
    assert len(api.runs) == 2 and api.bulk_calls == 2  # two deployments, one call each
    assert len({event["id"] for event in api.events}) == 2  # one event per key


def test_a_run_refused_in_bulk_fails_only_its_message(table):
    from interlinked.bridge.core import Message

    api = FakeApi()
    bridge = Bridge(table, api)
    good = Message(json.dumps({"type": "script-job", "payload": {"script": "a.py"}}), message_id="g")
    bad = Message(json.dumps({"type": "script-job", "payload": {"bad": True}}), message_id="b")
    good_result, bad_result = bridge.handle_batch([good, bad])
    assert (
        good_result[0].flow_run_id
        and bad_result.category == REJECTED
        and "Parameter validation" in bad_result.reason
    )
    failing = Bridge(table, FakeApi(fail_events=PrefectUnavailable("down")))
    [result] = failing.handle_batch([good])
    assert isinstance(result, BridgeFailure) and result.category == UNAVAILABLE


def test_a_duplicate_of_an_event_done_lately_asks_prefect_nothing(table):
    from interlinked.bridge.core import Message

    api = FakeApi()
    bridge = Bridge(table, api, remember=2)
    job = json.dumps({"type": "script-job", "payload": {"script": "a.py"}})
    [first] = bridge.handle_batch([Message(job, message_id="a", attributes={"dedup-id": "j1"})])
    calls, events = api.bulk_calls, len(api.events)
    [again] = bridge.handle_batch([Message(job, message_id="b", attributes={"dedup-id": "j1"})])
    assert again[0].status == "duplicate" and again[0].flow_run_id == first[0].flow_run_id
    assert (api.bulk_calls, len(api.events)) == (calls, events)  # no bulk call, no second event
    # Only what is done (run and event recorded) is remembered; the oldest key is dropped first.
    failing = Bridge(table, FakeApi(fail_events=PrefectUnavailable("down")), remember=2)
    failing.handle_batch([Message(job, message_id="a", attributes={"dedup-id": "j1"})])
    assert failing._known_run(first[0].decision.idempotency_key) is None
    for dedup in ("j2", "j3"):
        bridge.handle_batch([Message(job, message_id=dedup, attributes={"dedup-id": dedup})])
    assert bridge._known_run(first[0].decision.idempotency_key) is None
    [later] = bridge.handle_batch([Message(job, message_id="c", attributes={"dedup-id": "j1"})])
    assert later[0].status == "dispatched" and later[0].flow_run_id == first[0].flow_run_id  # found by key


def test_runs_the_server_was_too_busy_to_create_are_sent_again(table, monkeypatch):
    from interlinked.bridge import core
    from interlinked.bridge.core import Message

    monkeypatch.setattr(core.time, "sleep", lambda seconds: None)
    job = Message(json.dumps({"type": "script-job", "payload": {"script": "a.py"}}), message_id="j")
    api = FakeApi(locked_calls=2)
    [result] = Bridge(table, api).handle_batch([job])
    assert result[0].flow_run_id and api.bulk_calls == 3 and len(api.runs) == 1
    # Still locked after every try: the message fails as retryable (not dead-lettered at once).
    api = FakeApi(locked_calls=core.BUSY_ATTEMPTS)
    [result] = Bridge(table, api).handle_batch([job])
    assert isinstance(result, BridgeFailure) and result.category == UNAVAILABLE and "locked" in result.reason


# ---- dead letters ---------------------------------------------------------------------------------


def test_dead_letter_keeps_body_and_attributes_and_adds_the_reason():
    attributes = {"origin": {"DataType": "String", "StringValue": "tests"}}
    params = dead_letter.dead_letter_message(
        queue_url="https://q/dlq",
        body="oops",
        attributes=attributes,
        reason="not JSON",
        category=MALFORMED,
        source="https://q/events",
        message_id="m1",
        receive_count=5,
    )
    assert params["MessageBody"] == "oops"
    assert params["MessageAttributes"]["origin"] == attributes["origin"]
    received = {"Body": params["MessageBody"], "MessageAttributes": params["MessageAttributes"]}
    assert dead_letter.reason_of(received) == {
        "reason": "not JSON",
        "category": MALFORMED,
        "message_id": "m1",
        "body": "oops",
    }


def test_dead_letter_wraps_when_attributes_would_exceed_ten():
    attributes = {f"a{i}": {"DataType": "String", "StringValue": str(i)} for i in range(8)}
    params = dead_letter.dead_letter_message(
        queue_url="https://q/dlq.fifo",
        body="oops",
        attributes=attributes,
        reason="r" * 5000,
        category=MALFORMED,
        source="s",
        message_id="m1",
        receive_count=5,
    )
    assert len(params["MessageAttributes"]) <= 10 and params["MessageGroupId"] == "dead-letters"
    wrapper = json.loads(params["MessageBody"])
    assert wrapper["body"] == "oops" and wrapper["attributes"]["a3"] == "3"
    reason = dead_letter.reason_of(
        {"Body": params["MessageBody"], "MessageAttributes": params["MessageAttributes"]}
    )
    assert reason["body"] == "oops" and reason["message_id"] == "m1" and len(reason["reason"]) == 1000


def test_lambda_attribute_spelling_is_converted():
    converted = dead_letter.sqs_attributes_from_lambda({"origin": {"stringValue": "x", "dataType": "String"}})
    assert converted == {"origin": {"DataType": "String", "StringValue": "x"}}
    assert dead_letter.plain_attributes(converted) == {"origin": "x"}


# ---- the stdlib Prefect client against a tiny HTTP server -------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    calls: list = []
    busy_left = 0

    def _reply(self, status: int, payload=None):
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        type(self).calls.append(("GET", self.path, self.headers.get("Authorization")))
        if self.path == "/api/deployments/name/my-flow/local":
            return self._reply(200, {"id": "dep-42"})
        return self._reply(404, {"detail": "Deployment not found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        payload = json.loads(self.rfile.read(length) or b"null")
        type(self).calls.append(("POST", self.path, payload))
        if type(self).busy_left > 0:
            type(self).busy_left -= 1
            return self._reply(503, {"exception_message": "Service Unavailable"})
        if self.path == "/api/deployments/dep-42/create_flow_run":
            if payload["parameters"].get("bad"):
                return self._reply(409, {"detail": "Error creating flow run: bad parameters"})
            return self._reply(201, {"id": "run-1"})
        if self.path == "/api/events":
            return self._reply(204)
        return self._reply(404, {"detail": "nope"})

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.calls = []
    _Handler.busy_left = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/api"
    httpd.shutdown()


def test_client_creates_runs_with_the_key_and_retries_a_busy_server(server):
    api = PrefectApi(server, authorization=auth_header_from_secret("pnu_abc"))
    _Handler.busy_left = 2
    assert api.create_flow_run("my-flow/local", parameters={"a": 1}, idempotency_key="k1", tags=["t"]) == (
        "run-1",
        True,
    )
    posts = [call for call in _Handler.calls if call[0] == "POST"]
    assert len(posts) == 3 and posts[-1][2]["idempotency_key"] == "k1" and posts[-1][2]["tags"] == ["t"]
    assert _Handler.calls[0][2] == "Bearer pnu_abc"
    api.emit_events([{"id": "e"}])


def test_client_errors_are_typed(server):
    api = PrefectApi(server)
    with pytest.raises(DeploymentNotFound):
        api.create_flow_run("other/local", parameters={}, idempotency_key="k")
    with pytest.raises(PrefectRejected, match="bad parameters"):
        api.create_flow_run("my-flow/local", parameters={"bad": True}, idempotency_key="k")
    with pytest.raises(PrefectUnavailable, match="unreachable"):
        PrefectApi("http://127.0.0.1:9/api", timeout=1).create_flow_run(
            "my-flow/local", parameters={}, idempotency_key="k"
        )


def test_basic_auth_from_a_secret_holding_user_and_password():
    assert auth_header_from_secret("admin:pass") == "Basic YWRtaW46cGFzcw=="


# ---- the consumer's retry / requeue / dead-letter decisions -----------------------------------------


class RecordingSqs:
    def __init__(self):
        self.sent: list[dict] = []
        self.visibility: list[int] = []

    def send_message(self, **params):
        self.sent.append(params)
        return {"MessageId": "new"}

    def change_message_visibility(self, **params):
        self.visibility.append(params["VisibilityTimeout"])


def consumer(max_requeues: int = 2):
    from interlinked.bridge.consumer import Consumer, ConsumerConfig

    config = ConsumerConfig(
        queue_url="http://sqs/events",
        dead_letter_url="http://sqs/events-dlq",
        max_receives=3,
        prefect_api_url="http://prefect/api",
        retry_seconds=1,
        max_requeues=max_requeues,
    )
    sqs = RecordingSqs()
    return Consumer(config, sqs=sqs, api=FakeApi(fail=PrefectUnavailable("busy: 503"))), sqs


def message(body: str, receive_count: int, attributes: dict | None = None) -> dict:
    return {
        "MessageId": "m-1",
        "ReceiptHandle": "h",
        "Body": body,
        "Attributes": {"ApproximateReceiveCount": str(receive_count)},
        "MessageAttributes": attributes or {},
    }


UNROUTABLE_BODY = json.dumps({"type": "no-such-type"})


def test_failures_before_the_last_receive_come_back_soon():
    bridge, sqs = consumer()
    assert bridge.process_message(message(UNROUTABLE_BODY, 1)) is False  # permanent: in retry_seconds
    assert (
        bridge.process_message(message((FIXTURES / "s3-direct.json").read_text(), 2)) is False
    )  # transient: backoff
    assert sqs.visibility == [1, 2] and sqs.sent == []


def test_poison_is_dead_lettered_on_the_last_receive():
    bridge, sqs = consumer()
    assert bridge.process_message(message(UNROUTABLE_BODY, 3)) is True
    [letter] = sqs.sent
    assert letter["QueueUrl"] == "http://sqs/events-dlq" and letter["MessageBody"] == UNROUTABLE_BODY
    assert letter["MessageAttributes"]["interlinked.dlq.category"]["StringValue"] == UNROUTABLE


def test_a_malformed_message_is_dead_lettered_on_its_first_receive():
    bridge, sqs = consumer()
    assert bridge.process_message(message("{bad", 1)) is True  # can never be read: no retries
    [letter] = sqs.sent
    assert letter["QueueUrl"] == "http://sqs/events-dlq" and letter["MessageBody"] == "{bad"
    assert letter["MessageAttributes"]["interlinked.dlq.category"]["StringValue"] == MALFORMED
    assert sqs.visibility == []


def test_an_event_prefect_could_not_take_is_requeued_with_its_identity_then_dead_lettered():
    from interlinked.bridge.events import parse_message

    bridge, sqs = consumer(max_requeues=1)
    body = json.dumps({"type": "script-job", "payload": {"script": "a.py"}})
    assert bridge.process_message(message(body, 3)) is True
    [again] = sqs.sent
    assert again["QueueUrl"] == "http://sqs/events" and again["MessageBody"] == body
    attributes = dead_letter.plain_attributes(again["MessageAttributes"])
    assert attributes["interlinked.requeues"] == "1"
    # The copy has a new SQS message id but keeps the original's identity (the same idempotency key).
    [record] = parse_message(body, message_id="a-new-sqs-id", attributes=attributes)
    assert record.identity == "msg:m-1"
    assert bridge.process_message(message(body, 3, again["MessageAttributes"])) is True  # out of requeues
    letter = sqs.sent[-1]
    assert letter["QueueUrl"] == "http://sqs/events-dlq"
    assert letter["MessageAttributes"]["interlinked.dlq.category"]["StringValue"] == UNAVAILABLE
