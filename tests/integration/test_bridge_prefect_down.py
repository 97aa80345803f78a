"""Both front ends of the event bridge keep every event while the real Prefect server is stopped for
longer than the queue's redrive allows, and create each run once when it is back (issue 12 item 5).

The queues here let a message be received twice before SQS moves it to the DLQ, and a received
message is back in view after a second or two: the limit that dead-lettered events of a down API
(``maxReceiveCount`` receives x the visibility) is a few seconds, and the Prefect server stays down
for several times that. The Lambda handler runs in this process behind a loop that does what
Lambda's SQS event source mapping does (receive, invoke with the records, delete what did not fail);
the long-running consumer is the real ``python -m interlinked.bridge`` process.
"""

from __future__ import annotations

import json
import time
import uuid

import psutil
import pytest
from test_bridge_fixtures import bridge_env, flow_runs, start_consumer

from _stack import run_cli
from interlinked.bridge.core import derived_id

pytestmark = pytest.mark.integration

MAX_RECEIVES = 2
VISIBILITY = 1  # seconds: the queue's default, so the old limit was about MAX_RECEIVES x 1 s
DOWN_SECONDS = 20  # the Prefect server stays down this long: several times the old limit
EVENTS = 4  # per front end


@pytest.fixture(scope="module")
def env(stack_handle, aws, tmp_path_factory):
    environment = bridge_env(stack_handle, aws, tmp_path_factory)
    yield environment
    environment.consumer.stop()


def _queue(sqs, name: str) -> tuple[str, str, str]:
    """A queue with its DLQ after ``MAX_RECEIVES`` receives: (url, arn, dlq url)."""
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(VISIBILITY),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVES)}
            ),
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn, dlq


def _send_jobs(sqs, url: str, label: str) -> list[str]:
    """``EVENTS`` script-job messages; the job ids their runs will have."""
    expected = []
    for index in range(EVENTS):
        dedup = f"{label}-{uuid.uuid4().hex[:8]}"
        body = {
            "type": "script-job",
            "payload": {
                "func": "add",
                "arguments": {"a": index, "b": 1},
                "name": label,
                "script": "down-add.py",
            },
        }
        sqs.send_message(
            QueueUrl=url,
            MessageBody=json.dumps(body),
            MessageAttributes={"dedup-id": {"DataType": "String", "StringValue": dedup}},
        )
        expected.append(derived_id(f"script-job-message:msg:{dedup}", "job"))
    return expected


def _count(sqs, url: str) -> int:
    """Messages in the queue: visible, in flight, or delayed (a kept event started over as a new
    message comes back after a delay)."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes.get(name, 0)) for name in names)


class EventSourceMapping:
    """What Lambda's SQS event source mapping does with ``ReportBatchItemFailures``, in this process."""

    def __init__(self, sqs, url: str, arn: str):
        self.sqs, self.url, self.arn = sqs, url, arn
        self.invocations = 0

    def poll(self) -> None:
        from interlinked.bridge import lambda_handler

        messages = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return
        records = [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": {
                    name: {"stringValue": value.get("StringValue"), "dataType": value.get("DataType")}
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                "eventSource": "aws:sqs",
                "eventSourceARN": self.arn,
                "awsRegion": "us-east-1",
            }
            for message in messages
        ]
        self.invocations += 1
        reply = lambda_handler.handler({"Records": records}, None)
        failed = {item["itemIdentifier"] for item in reply.get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])


def _runs_by_job(job_ids: list[str]) -> dict[str, int]:
    runs = flow_runs(flow_name="script-job-submission", limit=200)
    return {job_id: sum(run.parameters.get("job_id") == job_id for run in runs) for job_id in job_ids}


def _stop_prefect(stack_handle) -> None:
    server = psutil.Process(stack_handle.pids()["prefect-server"])
    processes = [server, *server.children(recursive=True)]
    for process in processes:
        process.kill()
    psutil.wait_procs(processes, timeout=20)


def test_both_front_ends_keep_events_while_prefect_is_down_and_run_each_once(
    env, stack_handle, monkeypatch, tmp_path
):
    from interlinked.bridge import lambda_handler

    sqs = env.sqs
    env.s3.put_object(
        Bucket=env.data, Key="scripts/down-add.py", Body=b"def add(args):\n    return args['a'] + args['b']\n"
    )
    suffix = uuid.uuid4().hex[:6]
    lambda_url, lambda_arn, lambda_redrive_dlq = _queue(sqs, f"down-lambda-{suffix}")
    consumer_url, _, consumer_redrive_dlq = _queue(sqs, f"down-consumer-{suffix}")
    own_dlq = sqs.create_queue(QueueName=f"down-bridge-dlq-{suffix}")["QueueUrl"]

    # The Lambda as Terraform configures it, with back-off delays scaled to this test's queues.
    monkeypatch.setenv("BRIDGE_DLQ_URL", own_dlq)
    monkeypatch.setenv("INTERLINKED_EVENTS_QUEUE_URL", lambda_url)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "interlinked-test-down")
    monkeypatch.delenv("BRIDGE_MAX_RECEIVES", raising=False)  # read from the queue's redrive policy
    monkeypatch.setattr(lambda_handler, "HOLD_BASE_DELAY", 1, raising=False)
    monkeypatch.setattr(lambda_handler, "MAX_HOLD_DELAY", 2, raising=False)
    mapping = EventSourceMapping(sqs, lambda_url, lambda_arn)
    consumer = start_consumer(tmp_path, args=["--queue-url", consumer_url])
    try:
        _stop_prefect(stack_handle)
        expected = _send_jobs(sqs, lambda_url, "down-lambda") + _send_jobs(sqs, consumer_url, "down-consumer")

        deadline = time.monotonic() + DOWN_SECONDS
        while time.monotonic() < deadline:
            mapping.poll()
        # Several times the old limit has passed: nothing was dead-lettered by either front end or
        # by SQS's redrive, and every event is still in its queue.
        dead = {
            name: _count(sqs, url)
            for name, url in (
                ("lambda redrive DLQ", lambda_redrive_dlq),
                ("consumer redrive DLQ", consumer_redrive_dlq),
                ("the bridge's own DLQ", own_dlq),
            )
        }
        assert dead == dict.fromkeys(dead, 0), (
            f"dead-lettered while Prefect was down: {dead}\n{consumer.log()[-3000:]}"
        )
        assert mapping.invocations >= MAX_RECEIVES + 1, (
            "the Lambda was not invoked enough to pass the old limit"
        )
        assert _count(sqs, lambda_url) == EVENTS and _count(sqs, consumer_url) == EVENTS

        result = run_cli("up")  # starts the Prefect server again (and anything that died with it)
        assert result.returncode == 0, result.stderr

        deadline = time.monotonic() + 120
        counts = {}
        while time.monotonic() < deadline:
            mapping.poll()
            counts = _runs_by_job(expected)
            if all(counts.values()) and _count(sqs, lambda_url) == 0 and _count(sqs, consumer_url) == 0:
                break
        assert counts == dict.fromkeys(expected, 1), (
            f"runs per event after Prefect came back: {counts}\n{consumer.log()[-3000:]}"
        )
        assert _count(sqs, lambda_url) == 0 and _count(sqs, consumer_url) == 0
        assert all(_count(sqs, url) == 0 for url in (lambda_redrive_dlq, consumer_redrive_dlq, own_dlq))
    finally:
        consumer.stop()
        if "prefect-server" not in stack_handle.pids() or not psutil.pid_exists(
            stack_handle.pids()["prefect-server"]
        ):
            run_cli("up")
