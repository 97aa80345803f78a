"""The emulator keeps its state: SIGTERM + restart, `kill -9` mid-traffic, a corrupt snapshot.

Most tests run their own emulator process (``python -m interlinked.local.emulator``) on a free
port with a temporary state directory and talk to it with boto3 over HTTP; the last one goes
through the session stack's `interlinked down` / `up`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from _stack import run_cli
from interlinked.local import emulator

pytestmark = pytest.mark.integration

# A write acknowledged this long before a `kill -9` is on disk: snapshots are taken at most every
# second (--interval 1) and one takes well under half a second for this much state.
LOSS_BOUND_SECONDS = 2.0
ACCOUNT = "123456789012"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmulatorProcess:
    """One emulator process on a free port, restartable on the same state directory."""

    def __init__(self, state_dir: Path, log: Path):
        self.state_dir = state_dir
        self.log = log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        command = [sys.executable, "-m", "interlinked.local.emulator", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--state-dir", str(self.state_dir), "--interval", "1"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"the emulator exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/config", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"the emulator did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def cleanup(self) -> None:
        """End the process group this test started (the server and a snapshot writer, if any)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def client(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=60),
        )


@pytest.fixture
def emu(tmp_path):
    process = EmulatorProcess(tmp_path / "aws", tmp_path / "emulator.log")
    process.start()
    yield process
    process.cleanup()


def _lambda_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


def _receive_all(sqs, queue_url: str) -> list[dict]:
    messages: list[dict] = []
    while batch := sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600, MessageAttributeNames=["All"]
    ).get("Messages", []):
        messages.extend(batch)
    return messages


def test_everything_survives_sigterm_and_restart(emu):
    s3, sqs, sns, dynamodb = (emu.client(name) for name in ("s3", "sqs", "sns", "dynamodb"))
    iam, ecs, lambda_ = emu.client("iam"), emu.client("ecs"), emu.client("lambda")
    s3.create_bucket(Bucket="data")
    s3.put_object(Bucket="data", Key="small.txt", Body=b"hello")
    large = os.urandom(1024 * 1024) * 105  # 105 MB
    s3.put_object(Bucket="data", Key="large.bin", Body=large)
    work = sqs.create_queue(QueueName="work")["QueueUrl"]
    for body in ("a", "b", "c"):
        sqs.send_message(QueueUrl=work, MessageBody=body)
    in_flight = sqs.receive_message(QueueUrl=work, MaxNumberOfMessages=1, VisibilityTimeout=900)["Messages"]
    assert len(in_flight) == 1
    fifo = sqs.create_queue(QueueName="orders.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    for body, dedup in (("m1", "d1"), ("m2", "d2")):
        sqs.send_message(QueueUrl=fifo, MessageBody=body, MessageGroupId="g1", MessageDeduplicationId=dedup)
    events = sqs.create_queue(QueueName="events")["QueueUrl"]
    fanout = sqs.create_queue(QueueName="fanout")["QueueUrl"]
    s3.put_bucket_notification_configuration(
        Bucket="data",
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:events", "Events": ["s3:ObjectCreated:*"]}
            ]
        },
    )
    topic = sns.create_topic(Name="results")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=f"arn:aws:sqs:{REGION}:{ACCOUNT}:fanout")
    dynamodb.create_table(
        TableName="jobs",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName="jobs", Item={"id": {"S": "job-1"}, "state": {"S": "RUNNING"}})
    role = iam.create_role(RoleName="runner", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    ecs.create_cluster(clusterName="jobs")
    lambda_.create_function(
        FunctionName="bridge", Runtime="python3.11", Role=role, Handler="handler.handler",
        Code={"ZipFile": _lambda_zip()},
    )  # fmt: skip

    assert emu.terminate() == 0  # no flush: SIGTERM alone must write what is left
    emu.start()

    assert s3.get_object(Bucket="data", Key="small.txt")["Body"].read() == b"hello"
    restored = s3.get_object(Bucket="data", Key="large.bin")["Body"].read()
    assert hashlib.sha256(restored).digest() == hashlib.sha256(large).digest()
    # The in-flight message (900 s visibility) is delivered again right away, with the others.
    assert sorted(m["Body"] for m in _receive_all(sqs, work)) == ["a", "b", "c"]
    # FIFO: order kept; the deduplication id still suppresses a resend.
    sqs.send_message(QueueUrl=fifo, MessageBody="m1-again", MessageGroupId="g1", MessageDeduplicationId="d1")
    assert [m["Body"] for m in _receive_all(sqs, fifo)] == ["m1", "m2"]
    # The S3 → SQS notification configuration and the SNS → SQS subscription still deliver.
    s3.put_object(Bucket="data", Key="after-restart.txt", Body=b"x")
    assert any("after-restart.txt" in m["Body"] for m in _receive_all(sqs, events))
    sns.publish(TopicArn=topic, Message="published after restart")
    assert any("published after restart" in m["Body"] for m in _receive_all(sqs, fanout))
    item = dynamodb.get_item(TableName="jobs", Key={"id": {"S": "job-1"}})["Item"]
    assert item["state"] == {"S": "RUNNING"}
    assert iam.get_role(RoleName="runner")["Role"]["Arn"] == role
    assert ecs.describe_clusters(clusters=["jobs"])["clusters"][0]["clusterName"] == "jobs"
    assert lambda_.get_function(FunctionName="bridge")["Configuration"]["Handler"] == "handler.handler"


def test_kill_9_mid_traffic_loses_at_most_the_last_seconds(emu):
    s3, sqs = emu.client("s3"), emu.client("sqs")
    s3.create_bucket(Bucket="traffic")
    queue = sqs.create_queue(QueueName="traffic")["QueueUrl"]
    # Well before the kill: five messages taken and not deleted (in flight), five taken and deleted.
    for i in range(10):
        sqs.send_message(QueueUrl=queue, MessageBody=f"early-{i}")
    taken = _receive_all(sqs, queue)
    assert len(taken) == 10
    for message in taken:
        if message["Body"] in {f"early-{i}" for i in range(5, 10)}:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])

    acknowledged: list[tuple[float, str, str]] = []  # (when the answer came, kind, name)
    stop = threading.Event()

    def traffic() -> None:
        i = 0
        while not stop.is_set():
            try:
                s3.put_object(Bucket="traffic", Key=f"obj-{i}", Body=f"body-{i}".encode())
                acknowledged.append((time.monotonic(), "object", f"obj-{i}"))
                sqs.send_message(QueueUrl=queue, MessageBody=f"msg-{i}")
                acknowledged.append((time.monotonic(), "message", f"msg-{i}"))
            except Exception:  # the server is gone: stop writing
                return
            i += 1

    writer = threading.Thread(target=traffic, daemon=True)
    writer.start()
    time.sleep(5)
    killed_at = time.monotonic()
    emu.kill9()
    stop.set()
    writer.join(timeout=30)
    assert len(acknowledged) > 20, "too little traffic to say anything"

    emu.start()
    objects = {
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="traffic")
        for item in page.get("Contents", [])
    }
    messages = [m["Body"] for m in _receive_all(sqs, queue)]
    present = objects | set(messages)
    lost = [(when, name) for when, _kind, name in acknowledged if name not in present]
    window = killed_at - min((when for when, _ in lost), default=killed_at)
    print(f"kill -9: {len(acknowledged)} writes acknowledged, {len(lost)} lost, loss window {window:.2f} s")
    assert [name for when, name in lost if when < killed_at - LOSS_BOUND_SECONDS] == []
    assert len(lost) < len(acknowledged)  # something of the recent traffic made it
    # In flight before the kill: delivered again; deleted before the kill: not delivered again.
    early = sorted(body for body in messages if body.startswith("early-"))
    assert early == [f"early-{i}" for i in range(5)]
    assert len(messages) == len(set(messages))


def test_a_corrupt_snapshot_is_set_aside_and_the_emulator_starts_empty(emu):
    s3 = emu.client("s3")
    s3.create_bucket(Bucket="data")
    s3.put_object(Bucket="data", Key="k", Body=b"v")
    emulator.flush(emu.url)
    assert emu.terminate() == 0
    snapshot_file = emu.state_dir / "state.pickle"
    snapshot_file.write_bytes(b"\x00garbage, not a snapshot")

    emu.start()  # starts, never refuses
    assert s3.list_buckets()["Buckets"] == []
    kept = list(emu.state_dir.glob("state.pickle.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"\x00garbage, not a snapshot"
    log = emu.log.read_text()
    assert "could not be read" in log and "starting EMPTY" in log and str(kept[0]) in log
    # And it keeps state again from here on.
    s3.create_bucket(Bucket="fresh")
    assert emulator.flush(emu.url)["dirty"] is False
    assert emu.terminate() == 0
    emu.start()
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["fresh"]


def test_flush_reports_everything_acknowledged_as_persisted(emu):
    sqs = emu.client("sqs")
    queue = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="x")
    before = emulator.status(emu.url)
    after = emulator.flush(emu.url)
    assert after["persisted"] >= before["completed"] >= 2 and after["last_error"] is None
    header = (emu.state_dir / "state.pickle").read_bytes()
    assert header.startswith(b"INTERLINKED-EMULATOR-SNAPSHOT")
    # Reads and empty receives (idle polling) change nothing and cause no snapshot; a receive that
    # takes a message does.
    sqs.get_queue_url(QueueName="q")
    assert sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1, VisibilityTimeout=600)["Messages"]
    taken = emulator.status(emu.url)["completed"]
    assert taken == after["completed"] + 1
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0)
    assert emulator.status(emu.url)["completed"] == taken


def test_an_object_and_a_queued_message_survive_stack_down_and_up(stack, stack_handle):
    # Our own bucket and queue: the stack's services never consume them.
    name = f"durable-{uuid.uuid4().hex[:12]}"
    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="result.json", Body=b'{"ok": true}')
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="queued request")

    result = run_cli("down")
    stack_handle.mark_down()
    assert result.returncode == 0, result.stderr
    assert "stopped aws" in result.stderr
    stack_handle.ensure_up()

    assert s3.get_object(Bucket=name, Key="result.json")["Body"].read() == b'{"ok": true}'
    assert [m["Body"] for m in _receive_all(sqs, queue)] == ["queued request"]
