"""The emulator's faster SQS paths (:mod:`interlinked.local.emulator.sqs_speed`) keep moto's behaviour.

In-process moto (a narrow unit test): the patched paths answer as moto's own do — retention still
drops old messages, deletes accept old and repeated handles and refuse unknown ones, named
attributes are validated and read — and a receive no longer walks the queue per message.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs import models
from moto.sqs.models import sqs_backends

from interlinked.local.emulator import sqs_speed

REGION = "us-east-1"


@pytest.fixture
def sqs(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    sqs_speed.install()
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


def _queue(sqs, name="q", **attributes):
    url = sqs.create_queue(QueueName=name, Attributes={k: str(v) for k, v in attributes.items()})["QueueUrl"]
    return url, sqs_backends[DEFAULT_ACCOUNT_ID][REGION].queues[name]


def test_install_is_idempotent_and_patches_moto():
    sqs_speed.install()
    patched = models.Queue.delete_message
    sqs_speed.install()
    assert models.Queue.delete_message is patched is sqs_speed._delete_message


def test_a_receive_does_not_count_the_queue_per_message(sqs, monkeypatch):
    url, _ = _queue(sqs)
    for start in range(0, 200, 10):
        sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(10)]
        )
    counted = []
    original = models.Queue.approximate_number_of_messages_not_visible
    monkeypatch.setattr(
        models.Queue,
        "approximate_number_of_messages_not_visible",
        property(lambda self: counted.append(1) or original.fget(self)),
    )
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert len(got) == 10
    assert counted == []  # moto's own retention check counted the queue once per message handed out


def test_retention_still_drops_old_messages(sqs):
    url, queue = _queue(sqs, MessageRetentionPeriod=60)
    sqs.send_message(QueueUrl=url, MessageBody="old")
    sqs.send_message(QueueUrl=url, MessageBody="new")
    old = next(m for m in queue._messages if m.body == "old")
    old.sent_timestamp -= 61_000  # sent 61 s ago: past its retention
    reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    assert "old" not in [m["Body"] for m in reply.get("Messages", [])]  # (moto then stops the receive)
    fresh = sqs.send_message(QueueUrl=url, MessageBody="fresh")["MessageId"]
    reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    assert fresh in [m["MessageId"] for m in reply.get("Messages", [])]


def test_delete_by_current_old_repeated_and_unknown_handles(sqs):
    url, queue = _queue(sqs, VisibilityTimeout=0)
    sqs.send_message(QueueUrl=url, MessageBody="a")
    sqs.send_message(QueueUrl=url, MessageBody="b")
    first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"][0]
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert first["Body"] in {m["Body"] for m in again}  # visible again (timeout 0): a new handle
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])  # its older handle
    assert [m.body for m in queue._messages] == [b for b in ("a", "b") if b != first["Body"]]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])  # again: accepted
    reply = sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": "x", "ReceiptHandle": "not-a-handle"}])
    assert [f["Code"] for f in reply["Failed"]] == ["ReceiptHandleIsInvalid"]
    assert len(queue._messages) == 1


def test_named_attributes_are_validated_and_read(sqs):
    url, _ = _queue(sqs, VisibilityTimeout=7)
    sqs.send_message(QueueUrl=url, MessageBody="a")
    got = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["VisibilityTimeout", "ApproximateNumberOfMessages"]
    )["Attributes"]
    assert got == {"VisibilityTimeout": "7", "ApproximateNumberOfMessages": "1"}
    assert "QueueArn" in sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    with pytest.raises(ClientError) as error:
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["NoSuchAttribute"])
    assert "NoSuchAttribute" in str(error.value)
