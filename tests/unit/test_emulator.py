"""Snapshots of moto's state, round trip in-process (moto's in-process mock: a narrow unit test).

The emulator process itself, over HTTP, is exercised in
``tests/integration/test_emulator_durability.py``.
"""

from __future__ import annotations

import fcntl
import os

import boto3
import pytest
from moto import mock_aws
from moto.backends import get_backend
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.base_backend import BackendDict

from interlinked.local import emulator
from interlinked.local.emulator import server, snapshot
from interlinked.local.parts import parts
from interlinked.settings import Settings

REGION = "us-east-1"
BIG = 9 * 1024 * 1024 + 7  # above moto's in-memory buffer: the body lives in a temporary file


@pytest.fixture
def aws(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    snapshot.install_blob_ids()
    with mock_aws():
        yield {name: boto3.client(name, region_name=REGION) for name in ("s3", "sqs", "dynamodb")}


def _forget_everything() -> None:
    """What a new process starts with: no backend holds state."""
    BackendDict.reset()


def test_round_trip_objects_messages_tables(aws, tmp_path):
    s3, sqs, dynamodb = aws["s3"], aws["sqs"], aws["dynamodb"]
    s3.create_bucket(Bucket="data")
    s3.put_object(Bucket="data", Key="small.txt", Body=b"hello")
    big = os.urandom(BIG)
    s3.put_object(Bucket="data", Key="big.bin", Body=big)
    queue = sqs.create_queue(QueueName="work")["QueueUrl"]
    for body in ("one", "two"):
        sqs.send_message(QueueUrl=queue, MessageBody=body)
    in_flight = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1, VisibilityTimeout=900)["Messages"]
    assert len(in_flight) == 1
    dynamodb.create_table(
        TableName="jobs",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName="jobs", Item={"id": {"S": "a"}, "n": {"N": "3"}})

    written = snapshot.write_snapshot(tmp_path, seq=42)
    assert written.skipped == [] and written.blobs_written == 1  # "hello" is inside the snapshot
    _forget_everything()
    assert s3.list_buckets()["Buckets"] == []

    report = snapshot.restore(tmp_path)
    assert report.seq == 42 and report.failed == [] and report.warnings == []
    assert s3.get_object(Bucket="data", Key="small.txt")["Body"].read() == b"hello"
    assert s3.get_object(Bucket="data", Key="big.bin")["Body"].read() == big
    # The message that was in flight (900 s visibility) is visible again at once.
    bodies = sorted(
        m["Body"] for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    )
    assert bodies == ["one", "two"]
    assert dynamodb.get_item(TableName="jobs", Key={"id": {"S": "a"}})["Item"]["n"] == {"N": "3"}


def test_large_bodies_are_written_once_and_dropped_when_unreferenced(aws, tmp_path):
    s3 = aws["s3"]
    first, second = b"1" * (snapshot.INLINE_MAX + 1), b"2" * (snapshot.INLINE_MAX + 1)
    s3.create_bucket(Bucket="data")
    s3.put_object(Bucket="data", Key="k", Body=first)
    assert snapshot.write_snapshot(tmp_path, seq=1).blobs_written == 1
    assert snapshot.write_snapshot(tmp_path, seq=2).blobs_written == 0  # unchanged: nothing rewritten
    s3.put_object(Bucket="data", Key="k", Body=second)
    assert snapshot.write_snapshot(tmp_path, seq=3).blobs_written == 1
    blobs = list((tmp_path / snapshot.BLOBS_NAME).iterdir())
    assert [blob.read_bytes() for blob in blobs] == [second]  # the old body is gone


def test_what_does_not_pickle_is_skipped_and_the_rest_kept(aws, tmp_path):
    sqs = aws["sqs"]
    queue = sqs.create_queue(QueueName="work")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="kept")
    backend = get_backend("sqs")[DEFAULT_ACCOUNT_ID][REGION]
    backend.unpicklable = lambda: None  # a local function: pickle refuses it

    written = snapshot.write_snapshot(tmp_path, seq=1)
    assert len(written.skipped) == 1 and ".unpicklable" in written.skipped[0]
    _forget_everything()
    report = snapshot.restore(tmp_path)
    assert report.failed == []
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in messages] == ["kept"]
    assert not hasattr(get_backend("sqs")[DEFAULT_ACCOUNT_ID][REGION], "unpicklable")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_an_unreadable_snapshot_is_set_aside_and_start_is_empty(aws, tmp_path, damage, caplog):
    aws["s3"].create_bucket(Bucket="data")
    snapshot.write_snapshot(tmp_path, seq=5)
    path = tmp_path / snapshot.SNAPSHOT_NAME
    damaged = b"not a snapshot" if damage == "garbage" else path.read_bytes()[:-40]
    path.write_bytes(damaged)
    with pytest.raises(snapshot.SnapshotError):
        snapshot.restore(tmp_path)
    _forget_everything()

    assert server.restore_state(tmp_path) == 0
    kept = list(tmp_path.glob(f"{snapshot.SNAPSHOT_NAME}.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged
    assert not path.exists()
    assert "set aside" in caplog.text and "starting EMPTY" in caplog.text
    assert aws["s3"].list_buckets()["Buckets"] == []


def test_a_service_that_does_not_load_leaves_the_others(aws, tmp_path, caplog):
    aws["s3"].create_bucket(Bucket="data")
    aws["sqs"].create_queue(QueueName="work")
    snapshot.write_snapshot(tmp_path, seq=1)
    path = tmp_path / snapshot.SNAPSHOT_NAME
    # Rename the SQS record's module so that it no longer imports (as after a moto upgrade).
    path.write_bytes(path.read_bytes().replace(b"moto.sqs.models:", b"moto.sqx.models:"))
    _forget_everything()

    assert server.restore_state(tmp_path) == 1
    assert [b["Name"] for b in aws["s3"].list_buckets()["Buckets"]] == ["data"]
    assert aws["sqs"].list_queues().get("QueueUrls", []) == []
    assert "service not restored" in caplog.text
    assert list(tmp_path.glob(f"{snapshot.SNAPSHOT_NAME}.partial-*"))


def test_wipe_state_deletes_and_refuses_while_running(tmp_path):
    settings = Settings(_env_file=None, state_dir=tmp_path / "state")
    assert not emulator.wipe_state(settings)
    directory = emulator.state_dir(settings)
    directory.mkdir(parents=True)
    (directory / snapshot.SNAPSHOT_NAME).write_bytes(b"x")
    fd = server.lock_state_dir(directory)  # what a running emulator holds
    try:
        assert emulator.in_use(directory)
        with pytest.raises(RuntimeError, match="interlinked down"):
            emulator.wipe_state(settings)
        assert directory.exists()
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert emulator.wipe_state(settings)
    assert not directory.exists()


def test_command_runs_the_module_on_the_stack_port(tmp_path):
    settings = Settings(_env_file=None, state_dir=tmp_path / "state", aws_port=5999)
    argv = emulator.command(settings)
    assert argv[1:3] == ["-m", "interlinked.local.emulator"]
    assert argv[argv.index("--port") + 1] == "5999"
    assert argv[argv.index("--state-dir") + 1] == str(tmp_path / "state" / "aws")
    # The stack runs it as its `aws` part, and `down` waits for its final snapshot.
    assert parts(settings)["aws"].command == argv
    assert parts(settings)["aws"].stop_grace >= 20


def test_batch_queues_and_jobs_survive_although_jobs_are_threads(aws, tmp_path):
    iam, batch = boto3.client("iam", region_name=REGION), boto3.client("batch", region_name=REGION)
    role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    batch.create_compute_environment(computeEnvironmentName="local-ce", type="UNMANAGED", serviceRole=role)
    batch.create_job_queue(
        jobQueueName="jobs",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": "local-ce"}],
    )
    batch.register_job_definition(
        jobDefinitionName="script",
        type="container",
        containerProperties={"image": "python:3.11", "vcpus": 1, "memory": 128, "command": ["true"]},
    )
    job = batch.submit_job(jobName="job-1", jobQueue="jobs", jobDefinition="script")["jobId"]

    written = snapshot.write_snapshot(tmp_path, seq=1)
    assert written.skipped == []
    _forget_everything()
    assert snapshot.restore(tmp_path).failed == []
    assert [q["jobQueueName"] for q in batch.describe_job_queues()["jobQueues"]] == ["jobs"]
    assert [j["jobName"] for j in batch.describe_jobs(jobs=[job])["jobs"]] == ["job-1"]
