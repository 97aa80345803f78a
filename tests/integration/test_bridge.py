"""The event bridge on the real local stack: every event shape end to end, duplicates, S3's
TestEvent, poison messages, the Lambda front end and the Prefect-native trigger."""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path

import boto3
import pytest
from test_bridge_fixtures import (
    bridge_env,
    flow_runs,
    put_json,
    read_text,
    runs_for_key,
    start_consumer,
    wait_for_dead_letters,
    wait_for_object,
)

from _stack import grant_stack_access
from interlinked.bridge import dead_letter
from interlinked.bridge.core import derived_id
from interlinked.bridge.events import parse_message
from interlinked.bridge.routes import DEFAULT_ROUTES_FILE

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
ADD = b"def add(args):\n    return args['a'] + args['b']\n"


@pytest.fixture(scope="module")
def env(stack_handle, aws, tmp_path_factory):
    environment = bridge_env(stack_handle, aws, tmp_path_factory)
    environment.s3.put_object(Bucket=environment.data, Key="scripts/bridge-add.py", Body=ADD)
    yield environment
    environment.consumer.stop()


def job(a: int, b: int, name: str) -> dict:
    return {"func": "add", "arguments": {"a": a, "b": b}, "name": name, "script": "bridge-add.py"}


def make_queue(sqs, name: str, max_receives: int) -> tuple[str, str]:
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives)}
            )
        },
    )["QueueUrl"]
    return url, dlq


@pytest.fixture(scope="module")
def private(env, tmp_path_factory):
    """A queue of its own (3 receives) with its own consumer, so counters and the DLQ are ours alone.

    Its routes are the default ones plus an `emit` route for the submissions of a bucket of its own
    (``{analysis}`` there): those S3 events only become Prefect events, and the deployment trigger of
    ``process-submission`` starts the run — the Prefect-native path."""
    suffix = uuid.uuid4().hex[:6]
    queue, dlq = make_queue(env.sqs, f"bridge-private-{suffix}", 3)
    bucket = f"trigger-{suffix}"
    env.s3.create_bucket(Bucket=bucket)
    grant_stack_access(bucket)
    queue_arn = env.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    env.s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    routes = json.loads(DEFAULT_ROUTES_FILE.read_text())
    emit = copy.deepcopy(routes["routes"][0])
    emit.update(name="submission-triggered", action="emit")
    routes["routes"].insert(0, emit)
    directory = tmp_path_factory.mktemp("private-bridge")
    (directory / "routes.json").write_text(json.dumps(routes))
    consumer = start_consumer(
        directory,
        extra_env={
            "INTERLINKED_BRIDGE_ROUTES": str(directory / "routes.json"),
            "INTERLINKED_ANALYSIS_BUCKET": bucket,
        },
        args=["--queue-url", queue],
    )
    yield {"queue": queue, "dlq": dlq, "consumer": consumer, "bucket": bucket}
    consumer.stop()


def handled(consumer) -> int:
    """Valid deliveries a consumer carried out: runs created or found by key, or known duplicates."""
    counts = consumer.counts()
    return counts.get("dispatched", 0) + counts.get("duplicate", 0)


def wait_until(predicate, timeout: float = 30, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{message} not reached within {timeout} s")


def queue_empty(sqs, url: str) -> bool:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return (
        attributes["ApproximateNumberOfMessages"] == "0"
        and attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    )


def result_of(env, flow_name: str, predicate, timeout: float = 90):
    """The script job started by the run matching ``predicate``: wait for its result.json."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [run for run in flow_runs(flow_name=flow_name) if predicate(run)]
        if runs:
            job_id = runs[0].parameters["job_id"]
            return runs, json.loads(
                wait_for_object(env.s3, env.data, f"results/{job_id}/result.json", consumer=env.consumer)
            )
        time.sleep(0.3)
    raise AssertionError(
        f"no {flow_name} run matched within {timeout} s; bridge log:\n{env.consumer.log()[-2000:]}"
    )


# ---- every event shape, end to end ----------------------------------------------------------------


def submission(env, group: str, name: str, timestamp: str) -> str:
    env.s3.put_object(Bucket=env.analysis, Key=f"{group}/inputs/t.csv", Body=f"v\n1\n{len(name)}\n".encode())
    put_json(env.s3, env.analysis, f"{group}/configs/d.json", {"analysis": "describe"})
    key = f"{group}/submissions/{name}.json"
    put_json(
        env.s3,
        env.analysis,
        key,
        {
            "dataname": f"{group}/inputs/t.csv",
            "configname": f"{group}/configs/d.json",
            "timestamp": timestamp,
        },
    )
    return key


def prefect_events(resource_id: str) -> list[dict]:
    """The bridge's events about one resource, as the UI's event feed shows them."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    event_filter = EventFilter(
        event=EventNameFilter(prefix=["interlinked."]), resource=EventResourceFilter(id=[resource_id])
    )
    deadline = time.monotonic() + 15  # the server stores events asynchronously
    while True:
        with get_client(sync_client=True) as client:
            reply = client.request(
                "POST", "/events/filter", json={"filter": event_filter.model_dump(mode="json")}
            )
        events = reply.json()["events"]
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_s3_straight_to_sqs_runs_once_and_is_a_prefect_event(env):
    key = submission(env, "lab-direct", "direct", "d1")
    end = wait_for_object(
        env.s3,
        env.analysis,
        f"lab-direct/results/job__{env.analysis}_d1/process_results/end.txt",
        consumer=env.consumer,
    )
    assert end.startswith("COMPLETED")
    [run] = runs_for_key(key)
    [event] = prefect_events(f"s3://{env.analysis}/{key}")
    assert f"prefect.flow-run.{run.id}" in {related["prefect.resource.id"] for related in event["related"]}
    assert event["resource"]["interlinked.shape"] == "s3-notification"


def test_s3_through_sns_raw_and_enveloped(env):
    """S3 → SNS → SQS with raw delivery (the body is the notification) and without (an SNS envelope)."""
    queue_arn = env.wiring["events_queue_arn"]
    topics = {}
    for delivery in ("raw", "envelope"):
        topic = env.sns.create_topic(Name=f"s3-{delivery}-{uuid.uuid4().hex[:6]}")["TopicArn"]
        env.sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "true" if delivery == "raw" else "false"},
        )
        topics[delivery] = topic
    saved = env.s3.get_bucket_notification_configuration(Bucket=env.analysis)
    saved.pop("ResponseMetadata", None)
    env.s3.put_bucket_notification_configuration(
        Bucket=env.analysis,
        NotificationConfiguration={
            "TopicConfigurations": [
                {
                    "TopicArn": topic,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {
                            "FilterRules": [{"Name": "prefix", "Value": f"lab-sns/submissions/{delivery}"}]
                        }
                    },
                }
                for delivery, topic in topics.items()
            ]
        },
    )
    try:
        keys = {delivery: submission(env, "lab-sns", f"{delivery}-1", delivery) for delivery in topics}
    finally:
        env.s3.put_bucket_notification_configuration(Bucket=env.analysis, NotificationConfiguration=saved)
    for delivery, key in keys.items():
        end = wait_for_object(
            env.s3,
            env.analysis,
            f"lab-sns/results/job__{env.analysis}_{delivery}/process_results/end.txt",
            consumer=env.consumer,
        )
        assert end.startswith("COMPLETED"), (delivery, end)
        assert len(runs_for_key(key)) == 1
    # Raw delivery is the plain notification; the other one arrived in an SNS envelope.
    assert [
        e["resource"]["interlinked.shape"] for e in prefect_events(f"s3://{env.analysis}/{keys['raw']}")
    ] == ["s3-notification"]
    assert [
        e["resource"]["interlinked.shape"] for e in prefect_events(f"s3://{env.analysis}/{keys['envelope']}")
    ] == ["sns-envelope/s3-notification"]


def test_eventbridge_object_created_runs_the_submission(env):
    events = __import__("boto3").session.Session().client("events")
    rule = f"s3-created-{uuid.uuid4().hex[:6]}"
    events.put_rule(
        Name=rule,
        EventPattern=json.dumps(
            {
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {"bucket": {"name": [env.analysis]}},
            }
        ),
    )
    events.put_targets(Rule=rule, Targets=[{"Id": "events-queue", "Arn": env.wiring["events_queue_arn"]}])
    saved = env.s3.get_bucket_notification_configuration(Bucket=env.analysis)
    saved.pop("ResponseMetadata", None)
    env.s3.put_bucket_notification_configuration(
        Bucket=env.analysis, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    try:
        key = submission(env, "lab-eb", "via eventbridge", "e1")
    finally:
        env.s3.put_bucket_notification_configuration(Bucket=env.analysis, NotificationConfiguration=saved)
        events.remove_targets(Rule=rule, Ids=["events-queue"])
        events.delete_rule(Name=rule)
    end = wait_for_object(
        env.s3,
        env.analysis,
        f"lab-eb/results/job__{env.analysis}_e1/process_results/end.txt",
        consumer=env.consumer,
    )
    assert end.startswith("COMPLETED")
    [run] = runs_for_key(key)
    assert run.name == "lab-eb: via eventbridge.json"


def test_job_description_dropped_in_s3_runs_as_a_script_job(env):
    key = f"jobs/incoming/drop-{uuid.uuid4().hex[:6]}.json"
    put_json(env.s3, env.data, key, job(1, 2, "dropped"))
    runs, value = result_of(env, "script-job-submission", lambda run: run.parameters.get("key") == key)
    assert value == 3
    job_id = runs[0].parameters["job_id"]
    assert f"job:{job_id}" in runs[0].tags
    spec = json.loads(read_text(env.s3, env.data, f"jobs/{job_id}.json"))
    assert spec["name"] == "dropped"


def test_job_description_published_to_sns_runs_as_a_script_job(env):
    message_id = env.sns.publish(
        TopicArn=env.wiring["job_requests_topic"], Message=json.dumps(job(20, 22, "published"))
    )["MessageId"]
    expected = derived_id(f"script-job-message:msg:{message_id}", "job")
    _, value = result_of(env, "script-job-submission", lambda run: run.parameters.get("job_id") == expected)
    assert value == 42


def test_plain_sqs_job_message_runs_as_a_script_job(env):
    dedup = f"order-{uuid.uuid4().hex[:6]}"
    env.sqs.send_message(
        QueueUrl=env.events_queue,
        MessageBody=json.dumps({"type": "script-job", "payload": job(5, 6, "queued")}),
        MessageAttributes={"dedup-id": {"DataType": "String", "StringValue": dedup}},
    )
    expected = derived_id(f"script-job-message:msg:{dedup}", "job")
    _, value = result_of(env, "script-job-submission", lambda run: run.parameters.get("job_id") == expected)
    assert value == 11


# ---- duplicates, TestEvent, own writes, poison (on a queue of our own) ------------------------------------


def test_duplicate_deliveries_create_one_run(env, private):
    sqs, queue = env.sqs, private["queue"]
    dedup = f"dup-{uuid.uuid4().hex[:6]}"
    body = json.dumps({"type": "script-job", "payload": job(2, 2, "duplicated")})
    for _ in range(5):  # the producer retried, SQS delivered twice, ...
        sqs.send_message(
            QueueUrl=queue,
            MessageBody=body,
            MessageAttributes={"dedup-id": {"DataType": "String", "StringValue": dedup}},
        )
    drop = json.loads((FIXTURES / "s3-direct.json").read_text())
    drop["Records"][0]["s3"]["bucket"]["name"] = env.data
    drop["Records"][0]["s3"]["object"]["key"] = f"jobs%2Fincoming%2Fdup-{dedup}.json"
    # (The object itself is not written: that would send a real notification to the stack's queue too.)
    drop_key = "script-job-drop:" + parse_message(json.dumps(drop))[0].identity
    for _ in range(2):
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(drop))
    # The same S3 event once more, through SNS (another path, the same event identity).
    envelope = {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
        "Message": json.dumps(drop),
    }
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(envelope))
    wait_until(lambda: queue_empty(sqs, queue), message="queue drained")
    message_key = f"script-job-message:msg:{dedup}"
    assert len(flow_runs(idempotency_keys=[message_key])) == 1
    assert len(flow_runs(idempotency_keys=[drop_key])) == 1
    # 8 deliveries handled (counters lag up to 2 s), 2 runs: the others found the run by its key
    # (or, done lately, by the consumer's memory of the key: counted as duplicates).
    wait_until(lambda: handled(private["consumer"]) >= 8, message="8 deliveries counted")
    assert wait_for_dead_letters(sqs, private["dlq"], 1, timeout=1) == []


def test_test_events_and_own_writes_are_ignored(env, private):
    sqs, queue = env.sqs, private["queue"]

    def keyed_runs() -> int:  # runs of the routed flows (subflows of earlier jobs may still appear)
        return len(flow_runs(flow_name="process-submission")) + len(
            flow_runs(flow_name="script-job-submission")
        )

    runs_before = keyed_runs()
    for name in ("s3-test-event.json", "sns-s3-test-event.json"):
        sqs.send_message(QueueUrl=queue, MessageBody=(FIXTURES / name).read_text())
    own = json.loads((FIXTURES / "s3-direct.json").read_text())
    own["Records"][0]["s3"]["object"]["key"] = "lab%2Fresults%2Fjob__x_t%2Flogs%2Fsubmission.json"
    own["Records"][0]["s3"]["bucket"]["name"] = private["bucket"]
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(own))
    wait_until(
        lambda: private["consumer"].counts().get("ignored_by_reason", {}).get("test-event", 0) >= 2,
        message="TestEvents counted",
    )
    wait_until(
        lambda: (
            private["consumer"].counts().get("ignored_by_reason", {}).get("own-submission-results", 0) >= 1
        ),
        message="own write counted",
    )
    wait_until(lambda: queue_empty(sqs, queue), message="queue drained")
    assert keyed_runs() == runs_before
    assert "s3:TestEvent" in private["consumer"].log()  # logged at debug
    assert wait_for_dead_letters(sqs, private["dlq"], 1, timeout=1) == []


def test_poison_messages_reach_the_dlq_with_their_reason_and_the_bridge_lives_on(env, private):
    sqs, queue = env.sqs, private["queue"]
    many = {f"attr{i}": {"DataType": "String", "StringValue": str(i)} for i in range(8)}
    poison = {
        "not-json": ("<xml>nope</xml>", {}, "not JSON"),
        "unroutable": (
            json.dumps({"type": "launch-rockets"}),
            {},
            "no route for message type 'launch-rockets'",
        ),
        "bad-s3": (
            json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {}}]}),
            {},
            "s3.bucket.name is missing",
        ),
        "bad-sns": (
            json.dumps({"Type": "Notification", "TopicArn": "t", "MessageId": "m", "Message": "{"}),
            {},
            "SNS message m is not JSON",
        ),
        "rejected": (
            json.dumps({"type": "script-job", "payload": "not an object"}),
            {},
            "Prefect refused the run",
        ),
        "wrapped": ("][", many, "not JSON"),
    }
    ids = {}
    for name, (body, attributes, _) in poison.items():
        ids[sqs.send_message(QueueUrl=queue, MessageBody=body, MessageAttributes=attributes)["MessageId"]] = (
            name
        )
    letters = wait_for_dead_letters(sqs, private["dlq"], len(poison), timeout=60)
    reasons = {ids[dead_letter.reason_of(m)["message_id"]]: dead_letter.reason_of(m) for m in letters}
    assert set(reasons) == set(poison), reasons
    for name, (body, _, words) in poison.items():
        assert words in reasons[name]["reason"], (name, reasons[name])
        assert reasons[name]["body"] == body  # the original, untouched
    wrapped = next(m for m in letters if ids[dead_letter.reason_of(m)["message_id"]] == "wrapped")
    assert json.loads(wrapped["Body"])["attributes"]["attr3"] == "3"

    def receive_count(name: str) -> str:
        letter = next(m for m in letters if ids[dead_letter.reason_of(m)["message_id"]] == name)
        return letter["MessageAttributes"]["interlinked.dlq.receive-count"]["StringValue"]

    assert receive_count("not-json") == "1"  # malformed: it can never be read, no retries
    assert receive_count("unroutable") == "3"  # after max receives
    consumer = private["consumer"]
    assert consumer.alive()
    wait_until(
        lambda: consumer.counts().get("dead_lettered", 0) >= len(poison), message="dead letters counted"
    )
    # Still working: a good message right after.
    dedup = f"after-{uuid.uuid4().hex[:6]}"
    sqs.send_message(
        QueueUrl=queue,
        MessageBody=json.dumps(
            {"type": "script-job", "idempotency_key": dedup, "payload": job(1, 1, "after poison")}
        ),
    )
    _, value = result_of(
        env,
        "script-job-submission",
        lambda r: r.parameters.get("job_id") == derived_id(f"script-job-message:msg:{dedup}", "job"),
    )
    assert value == 2


# ---- a burst through several batches in flight ------------------------------------------------------------


IDLE_FLOW = """from prefect import flow


@flow(name="bridge-burst-idle")
def idle(payload: dict | None = None) -> dict | None:
    return payload
"""


def test_a_burst_through_concurrent_batches_lands_exactly_once(env, tmp_path_factory):
    """60 events, each delivered twice, and 3 poison messages, through a consumer with 4 batches in
    flight: one run per event, every poison message dead-lettered, the counters add up."""
    import random

    from prefect import flow

    from interlinked.local import ensure_work_pool

    directory = tmp_path_factory.mktemp("burst")
    (directory / "idle.py").write_text(IDLE_FLOW)
    ensure_work_pool("bridge-burst-idle", "process", "tests: a pool without a worker (runs stay scheduled)")
    flow.from_source(source=str(directory), entrypoint="idle.py:idle").deploy(
        name="idle", work_pool_name="bridge-burst-idle", print_next_steps=False
    )
    suffix = uuid.uuid4().hex[:6]
    queue, dlq = make_queue(env.sqs, f"bridge-burst-{suffix}", 3)
    route = f"burst-{suffix}"
    routes = {
        "routes": [
            {
                "name": route,
                "match": {"source": "message", "type": "burst"},
                "deployment": "bridge-burst-idle/idle",
                "parameters": {"payload": "{payload}"},
            }
        ]
    }
    (directory / "routes.json").write_text(json.dumps(routes))
    events = [f"{suffix}-{index}" for index in range(60)]
    deliveries = [
        ({"type": "burst", "payload": {"n": index}}, dedup) for index, dedup in enumerate(events)
    ] * 2
    deliveries += [("{not json", None)] * 3
    random.Random(5).shuffle(deliveries)
    for start in range(0, len(deliveries), 10):
        entries = []
        for offset, (body, dedup) in enumerate(deliveries[start : start + 10]):
            entry = {"Id": str(offset), "MessageBody": body if isinstance(body, str) else json.dumps(body)}
            if dedup:
                entry["MessageAttributes"] = {"dedup-id": {"DataType": "String", "StringValue": dedup}}
            entries.append(entry)
        assert not env.sqs.send_message_batch(QueueUrl=queue, Entries=entries).get("Failed")

    consumer = start_consumer(
        directory,
        extra_env={"INTERLINKED_BRIDGE_ROUTES": str(directory / "routes.json")},
        args=["--queue-url", queue, "--concurrency", "4"],
    )
    try:
        letters = wait_for_dead_letters(env.sqs, dlq, 3, timeout=240)
        wait_until(lambda: queue_empty(env.sqs, queue), timeout=240, message="burst drained")
        wait_until(lambda: handled(consumer) >= 120, message="120 deliveries counted")
    finally:
        consumer.stop()
    keys = [f"{route}:msg:{dedup}" for dedup in events]
    runs = flow_runs(idempotency_keys=keys)
    assert sorted(run.idempotency_key for run in runs) == sorted(keys)  # each event once, none lost
    assert {run.parameters["payload"]["n"] for run in runs} == set(range(60))
    assert [m["Body"] for m in letters] == ["{not json"] * 3
    assert wait_for_dead_letters(env.sqs, dlq, 1, timeout=1) == []  # and nothing else
    status = consumer.status()
    assert status["stopping"] is True and status["concurrency"] == 4
    counts = status["counts"]
    # Each delivery is received and counted once (a batch that outlives the visibility timeout keeps
    # its messages invisible); a duplicate of an event done lately is counted as one.
    assert counts["dispatched"] + counts.get("duplicate", 0) == 120 and counts["dead_lettered_malformed"] == 3
    assert counts["received"] == 120 + 3  # malformed poison: dead-lettered on its first receive
    assert consumer.process.returncode == 0


# ---- the Prefect-native alternative: a deployment trigger on the bridge's events ---------------------------


def test_prefect_yaml_trigger_on_bridge_events_runs_the_submission(env, private):
    bucket = private["bucket"]
    env.s3.put_object(Bucket=bucket, Key="lab-t/inputs/t.csv", Body=b"v\n1\n2\n")
    put_json(env.s3, bucket, "lab-t/configs/d.json", {"analysis": "describe"})
    key = "lab-t/submissions/by-trigger.json"
    put_json(
        env.s3,
        bucket,
        key,
        {"dataname": "lab-t/inputs/t.csv", "configname": "lab-t/configs/d.json", "timestamp": "tr1"},
    )
    end = wait_for_object(
        env.s3,
        bucket,
        f"lab-t/results/job__{bucket}_tr1/process_results/end.txt",
        timeout=90,
        consumer=private["consumer"],
    )
    assert end.startswith("COMPLETED")
    [run] = [r for r in flow_runs(flow_name="process-submission") if r.parameters.get("key") == key]
    assert run.created_by is not None and run.created_by.type == "AUTOMATION"  # not the bridge
    assert run.parameters["bucket"] == bucket
    admin = boto3.client("iam").get_user(UserName="interlinked-admin")["User"]["UserId"]
    assert run.parameters["writer"] == f"AWS:{admin}"  # the event's s3.writer (the uploader: admin)
    # The count can lag the run: an events call that timed out on a busy server may still have
    # stored the event (the trigger fired); the message is then retried and counted later.
    wait_until(
        lambda: private["consumer"].counts().get("emitted", 0) >= 1, timeout=90, message="emit counted"
    )


# ---- the Lambda front end with recorded payloads -----------------------------------------------------------


def lambda_sqs_record(body: str, *, message_id: str, receive_count: int = 1, queue_arn: str) -> dict:
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "1700000000000"},
        "messageAttributes": {"origin": {"stringValue": "recorded", "dataType": "String"}},
        "md5OfBody": "-",
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "us-east-1",
    }


def test_lambda_handler_with_recorded_payloads(env, monkeypatch):
    from interlinked.bridge import lambda_handler

    suffix = uuid.uuid4().hex[:6]
    bucket = f"lambda-{suffix}"
    env.s3.create_bucket(Bucket=bucket)
    grant_stack_access(bucket)
    lambda_dlq = env.sqs.create_queue(QueueName=f"bridge-lambda-dlq-{suffix}")["QueueUrl"]
    monkeypatch.setenv("BRIDGE_DLQ_URL", lambda_dlq)
    monkeypatch.setenv("BRIDGE_MAX_RECEIVES", "3")
    monkeypatch.setenv("INTERLINKED_ANALYSIS_BUCKET", bucket)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "interlinked-test-event-bridge")

    def recorded(name: str) -> str:
        return (FIXTURES / name).read_text().replace("interlinked-analysis", bucket)

    env.s3.put_object(Bucket=bucket, Key="labrec/inputs/t.csv", Body=b"v\n3\n4\n")
    put_json(env.s3, bucket, "labrec/configs/d.json", {"analysis": "describe"})
    submissions = {
        "labrec/submissions/submit direct+1.json": "direct",
        "labrec/submissions/via-sns.json": "sns",
        "labrec/submissions/via eventbridge.json": "eventbridge",
    }
    for key, timestamp in submissions.items():
        put_json(
            env.s3,
            bucket,
            key,
            {
                "dataname": "labrec/inputs/t.csv",
                "configname": "labrec/configs/d.json",
                "timestamp": timestamp,
            },
        )
    queue_arn = "arn:aws:sqs:us-east-1:123456789012:interlinked-events"
    batch = {
        "Records": [
            lambda_sqs_record(recorded("s3-direct.json"), message_id="m-direct", queue_arn=queue_arn),
            lambda_sqs_record(recorded("sns-envelope-s3.json"), message_id="m-sns", queue_arn=queue_arn),
            lambda_sqs_record(recorded("s3-test-event.json"), message_id="m-test", queue_arn=queue_arn),
            lambda_sqs_record("garbage", message_id="m-poison-first", receive_count=1, queue_arn=queue_arn),
            lambda_sqs_record("garbage", message_id="m-poison-last", receive_count=3, queue_arn=queue_arn),
        ]
    }
    reply = lambda_handler.handler(batch, None)
    assert reply == {"batchItemFailures": [{"itemIdentifier": "m-poison-first"}]}
    [letter] = wait_for_dead_letters(env.sqs, lambda_dlq, 1, timeout=5)
    reason = dead_letter.reason_of(letter)
    assert (
        reason["message_id"] == "m-poison-last"
        and "not JSON" in reason["reason"]
        and reason["body"] == "garbage"
    )
    assert letter["MessageAttributes"]["origin"]["StringValue"] == "recorded"
    assert (
        letter["MessageAttributes"]["interlinked.dlq.source"]["StringValue"]
        == "lambda:interlinked-test-event-bridge"
    )

    # EventBridge and SNS invoke the function directly (asynchronous invocations).
    assert lambda_handler.handler(json.loads(recorded("eventbridge-object-created.json")), None) == {
        "batchItemFailures": []
    }
    envelope = json.loads(recorded("sns-envelope-job.json"))
    envelope["Message"] = json.dumps(job(7, 8, "lambda sns"))
    sns_event = {
        "Records": [
            {
                "EventSource": "aws:sns",
                "Sns": {**envelope, "MessageAttributes": {"origin": {"Type": "String", "Value": "recorded"}}},
            }
        ]
    }
    assert lambda_handler.handler(sns_event, None) == {"batchItemFailures": []}

    for key, timestamp in submissions.items():
        end = wait_for_object(
            env.s3, bucket, f"labrec/results/job__{bucket}_{timestamp}/process_results/end.txt", timeout=90
        )
        assert end.startswith("COMPLETED"), (key, end)
    _, value = result_of(
        env,
        "script-job-submission",
        lambda r: (
            r.parameters.get("job_id") == derived_id(f"script-job-message:msg:{envelope['MessageId']}", "job")
        ),
    )
    assert value == 15

    # Delivered again (SQS at-least-once, a Lambda retry): no new run.
    before = {key: [run.id for run in runs_for_key(key)] for key in submissions}
    assert lambda_handler.handler(batch, None)["batchItemFailures"] == [{"itemIdentifier": "m-poison-first"}]
    assert lambda_handler.handler(json.loads(recorded("eventbridge-object-created.json")), None) == {
        "batchItemFailures": []
    }
    after = {key: [run.id for run in runs_for_key(key)] for key in submissions}
    assert before == after and all(len(ids) == 1 for ids in after.values())


def test_up_creates_and_wires_an_analysis_s_own_bucket(env, monkeypatch):
    """INTERLINKED_ANALYSIS_BUCKETS (NeuroCAAS: the bucket is the analysis): `up` creates each
    analysis's bucket and wires its submissions to the events queue, as the analysis bucket's; the
    services and flow runs get the map in their environment (also when it came from `.env`)."""
    from interlinked.local.parts import client_env
    from interlinked.local.provision import ensure_resources
    from interlinked.local.wiring import ensure_event_sources
    from interlinked.settings import Settings

    bucket = f"describe-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("INTERLINKED_ANALYSIS_BUCKETS", json.dumps({"describe": bucket}))
    settings = Settings(_env_file=None)
    resources = ensure_resources(settings)  # what `up` does, against the running stack (idempotent)
    assert resources.analysis_buckets == {"describe": bucket}
    assert json.loads(client_env(settings)["INTERLINKED_ANALYSIS_BUCKETS"]) == {"describe": bucket}
    wiring = ensure_event_sources(
        buckets=resources.buckets,
        events_queue_url=resources.queues["events"],
        analysis_buckets=resources.analysis_buckets,
    )
    assert bucket in wiring["changed"] and wiring["notifications"][bucket] == [
        {"Name": "suffix", "Value": ".json"}
    ]
    [target] = env.s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert target["QueueArn"] == wiring["events_queue_arn"]
    # A submission there reaches the stack's bridge (which, started without the map, has no route).
    before = env.consumer.counts().get("ignored_by_reason", {}).get("no-route", 0)
    put_json(env.s3, bucket, "lab-own/submissions/s.json", {"dataname": "lab-own/inputs/x.csv"})
    wait_until(
        lambda: env.consumer.counts().get("ignored_by_reason", {}).get("no-route", 0) > before,
        message="the bucket's event reached the bridge",
    )
