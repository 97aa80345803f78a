"""A batch that outlives the queue's visibility timeout is not delivered again meanwhile (issue 10).

The bridge benchmark found messages in the dead-letter queue without the bridge's reason: with many
batches queued at a busy Prefect server, a batch was held longer than the queue's visibility
timeout, SQS delivered its messages again (counting towards ``maxReceiveCount``) and then moved
them to the DLQ by its own redrive. Here the real consumer (``python -m interlinked.bridge``) reads
a queue of the stack's emulator whose visibility timeout is 2 s, through a proxy in front of the
real Prefect server that holds every bulk run creation for 3 times that. Every message must be
received once, its run created once, and nothing may reach the redrive's DLQ.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from test_bridge_fixtures import bridge_env, flow_runs, start_consumer

from _stack import TEST_ENV
from interlinked.bridge.core import derived_id

pytestmark = pytest.mark.integration

VISIBILITY = 2  # seconds
SLOW_SECONDS = 3 * VISIBILITY  # each bulk run creation takes this long
MAX_RECEIVES = 2
EVENTS = 6


class SlowPrefect(ThreadingHTTPServer):
    """Forwards to the real Prefect API; bulk flow-run creations wait ``SLOW_SECONDS`` first."""

    daemon_threads = True

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.slowed = 0
        super().__init__(("127.0.0.1", 0), _Forward)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api"


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def log_message(self, *_args) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.command == "POST" and self.path.endswith("/create_flow_run/bulk"):
            self.server.slowed += 1
            time.sleep(SLOW_SECONDS)
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        headers = {
            name: value
            for name, value in self.headers.items()
            if name.lower() not in ("host", "connection", "content-length", "accept-encoding")
        }
        upstream.request(self.command, self.path, body=body, headers=headers)
        reply = upstream.getresponse()
        data = reply.read()
        upstream.close()
        self.send_response(reply.status)
        for name, value in reply.getheaders():
            if name.lower() not in ("connection", "content-length", "transfer-encoding", "date", "server"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def env(stack_handle, aws, tmp_path_factory):
    return bridge_env(stack_handle, aws, tmp_path_factory)


@pytest.fixture
def slow_prefect():
    server = SlowPrefect(TEST_ENV["PREFECT_API_URL"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _count(sqs, url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes.get(name, 0)) for name in names)


def test_a_batch_held_longer_than_the_visibility_timeout_is_not_redelivered(env, slow_prefect, tmp_path):
    sqs = env.sqs
    env.s3.put_object(
        Bucket=env.data, Key="scripts/slow-add.py", Body=b"def add(args):\n    return args['a'] + args['b']\n"
    )
    suffix = uuid.uuid4().hex[:6]
    redrive_dlq = sqs.create_queue(QueueName=f"slow-{suffix}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=redrive_dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName=f"slow-{suffix}",
        Attributes={
            "VisibilityTimeout": str(VISIBILITY),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVES)}
            ),
        },
    )["QueueUrl"]
    expected = []
    for index in range(EVENTS):
        dedup = f"slow-{suffix}-{index}"
        body = {
            "type": "script-job",
            "payload": {
                "func": "add",
                "arguments": {"a": index, "b": 1},
                "name": "slow",
                "script": "slow-add.py",
            },
        }
        sqs.send_message(
            QueueUrl=url,
            MessageBody=json.dumps(body),
            MessageAttributes={"dedup-id": {"DataType": "String", "StringValue": dedup}},
        )
        expected.append(derived_id(f"script-job-message:msg:{dedup}", "job"))

    consumer = start_consumer(
        tmp_path,
        extra_env={"PREFECT_API_URL": slow_prefect.api_url},
        args=["--queue-url", url, "--concurrency", "3"],
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = consumer.counts().get("dispatched", 0) + consumer.counts().get("duplicate", 0)
            if (done >= EVENTS and _count(sqs, url) == 0) or _count(sqs, redrive_dlq):
                break
            time.sleep(0.5)
        time.sleep(2 * VISIBILITY)  # a redelivery would show by now
        counts = consumer.counts()
        status = consumer.status()
        log = consumer.log()
    finally:
        consumer.stop()

    assert slow_prefect.slowed >= 1, "no bulk call went through the slow proxy"
    redriven = _count(sqs, redrive_dlq)
    assert redriven == 0, f"{redriven} message(s) redriven by SQS without the bridge's reason\n{log[-3000:]}"
    assert counts.get("received") == EVENTS, f"received again while held: {counts}\n{log[-3000:]}"
    assert _count(sqs, url) == 0
    runs = flow_runs(flow_name="script-job-submission", limit=200)
    per_job = {job: sum(run.parameters.get("job_id") == job for run in runs) for job in expected}
    assert per_job == dict.fromkeys(expected, 1)
    assert status["visibility_timeout"] == VISIBILITY and status["visibility_extensions"] >= EVENTS
