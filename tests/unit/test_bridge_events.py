"""Event shapes → records, on payloads recorded from the local stack (tests/fixtures/events)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interlinked.bridge.events import (
    SHAPE_EVENTBRIDGE,
    SHAPE_MESSAGE,
    SHAPE_S3,
    SHAPE_SNS_MESSAGE,
    SHAPE_SNS_S3,
    MalformedEvent,
    MessageRecord,
    S3Record,
    TestEventRecord,
    parse_message,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"


def body(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_s3_notification_straight_to_sqs_decodes_the_key():
    [record] = parse_message(body("s3-direct.json"))
    assert isinstance(record, S3Record)
    # moto encodes '/' (and ' ' as '+', '+' as %2B): unquote_plus gives the real key back
    assert record.key == "labrec/submissions/submit direct+1.json"
    assert record.bucket == "interlinked-analysis"
    assert record.event_name == "ObjectCreated:Put" and record.created
    assert record.etag == "f48c93879a00d6f80b1b0dfeb3eb48f2"
    assert record.shape == SHAPE_S3


def test_s3_through_sns_non_raw_is_unwrapped():
    [record] = parse_message(body("sns-envelope-s3.json"))
    assert isinstance(record, S3Record)
    assert record.key == "labrec/submissions/via-sns.json"
    assert record.shape == SHAPE_SNS_S3


def test_s3_through_sns_raw_is_the_plain_notification():
    [record] = parse_message(body("sns-raw-s3.json"))
    assert isinstance(record, S3Record) and record.key == "labrec/submissions/via-sns-raw.json"


def test_eventbridge_object_created_keeps_the_key_as_is():
    [record] = parse_message(body("eventbridge-object-created.json"))
    assert isinstance(record, S3Record)
    assert record.key == "labrec/submissions/via eventbridge.json"  # not URL-encoded
    assert record.event_name.startswith("ObjectCreated:") and record.created  # AWS: ObjectCreated:PutObject
    assert record.version_id is None  # moto sends the string "null"
    assert record.sequencer == "617f08299329d189"
    assert record.shape == SHAPE_EVENTBRIDGE


@pytest.mark.parametrize("name", ["s3-test-event.json", "sns-s3-test-event.json"])
def test_s3_test_event_direct_and_through_sns(name):
    [record] = parse_message(body(name))
    assert isinstance(record, TestEventRecord) and record.bucket == "interlinked-analysis"


def test_sns_job_message_has_type_message_id_and_attributes():
    envelope = json.loads(body("sns-envelope-job.json"))
    [record] = parse_message(body("sns-envelope-job.json"), message_id="the-sqs-id")
    assert isinstance(record, MessageRecord)
    assert record.type == "script-job" and record.payload["func"] == "myfunc"
    assert record.message_id == envelope["MessageId"]  # the SNS id, the same in every SQS copy
    assert record.attributes == {"origin": "recorder"}
    assert record.shape == SHAPE_SNS_MESSAGE
    assert record.identity == f"msg:{envelope['MessageId']}"


def test_plain_job_messages_typed_by_field_attribute_or_shape():
    [typed] = parse_message(
        json.dumps({"type": "script-job", "payload": {"script": "a.py"}}), message_id="m1"
    )
    assert typed.type == "script-job" and typed.payload == {"script": "a.py"} and typed.shape == SHAPE_MESSAGE
    [by_attribute] = parse_message(json.dumps({"x": 1}), message_id="m2", attributes={"type": "custom"})
    assert by_attribute.type == "custom" and by_attribute.payload == {"x": 1}
    [by_shape] = parse_message(json.dumps({"script": "a.py", "name": "n"}), message_id="m3")
    assert by_shape.type == "script-job"


def test_dedup_id_wins_over_message_id():
    [explicit] = parse_message(
        json.dumps({"type": "script-job", "idempotency_key": "order-7", "payload": {}}), message_id="m1"
    )
    assert explicit.identity == "msg:order-7"
    [attribute] = parse_message(json.dumps({"script": "a"}), message_id="m1", attributes={"dedup-id": "d9"})
    assert attribute.identity == "msg:d9"
    [fifo] = parse_message(json.dumps({"script": "a"}), message_id="m1", dedup_id="fifo-dedup")
    assert fifo.identity == "msg:fifo-dedup"


def test_the_same_event_has_the_same_identity_in_every_copy():
    direct = parse_message(body("s3-direct.json"))[0]
    again = parse_message(body("s3-direct.json"))[0]
    assert direct.identity == again.identity
    notification = json.loads(body("s3-direct.json"))
    # The same event through SNS (non-raw) is the same event.
    envelope = {
        "Type": "Notification",
        "MessageId": "x",
        "TopicArn": "arn:t",
        "Message": json.dumps(notification),
    }
    assert parse_message(json.dumps(envelope))[0].identity == direct.identity
    # A new write of the same key is a different event.
    notification["Records"][0]["s3"]["object"]["sequencer"] = "0055AED6DCD90281E5"
    assert parse_message(json.dumps(notification))[0].identity != direct.identity


def test_aws_shaped_event_uses_version_and_sequencer():
    notification = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:CompleteMultipartUpload",
                "eventTime": "2024-01-01T00:00:00.000Z",
                "s3": {
                    "bucket": {"name": "b"},
                    "object": {
                        "key": "g%2Fsubmissions%2Fa.json",
                        "eTag": "e1",
                        "versionId": "v1",
                        "sequencer": "00A1",
                    },
                },
            }
        ]
    }
    [record] = parse_message(json.dumps(notification))
    assert record.identity == "s3:b/g/submissions/a.json@v1#00A1"


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ("not json at all", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"Records": []}', "non-empty list"),
        ('{"Records": [{"eventSource": "aws:sqs"}]}', "is not aws:s3"),
        (
            '{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}}}]}',
            "key is missing",
        ),
        (
            '{"Type": "Notification", "TopicArn": "t", "MessageId": "m", "Message": "{oops"}',
            "SNS message m is not JSON",
        ),
        ('{"hello": "world"}', "not an S3 notification"),
        ('{"type": 7}', "'type' must be a string"),
        (
            '{"source": "aws.s3", "detail-type": "Object Created", "detail": {"bucket": {}}}',
            "bucket.name is missing",
        ),
    ],
)
def test_malformed_messages_say_why(payload, words):
    with pytest.raises(MalformedEvent, match=words):
        parse_message(payload)


def _notification(principal: dict | None) -> dict:
    record = json.loads(body("s3-direct.json"))["Records"][0]
    record.pop("userIdentity", None)
    if principal is not None:
        record["userIdentity"] = principal
    return {"Records": [record]}


@pytest.mark.parametrize(
    ("identity", "writer"),
    [
        ({"principalId": "AWS:AIDAJ45Q7YFFAREXAMPLE"}, "AWS:AIDAJ45Q7YFFAREXAMPLE"),  # an IAM user
        ({"principalId": "AWS:AROAEXAMPLE123:alice"}, "AWS:AROAEXAMPLE123:alice"),  # an assumed role
        (None, None),  # moto's own notifications name nobody
        ({}, None),
        ({"principalId": ""}, None),
    ],
)
def test_the_writer_is_the_notifications_principal_id(identity, writer):
    document = _notification(identity)
    [direct] = parse_message(json.dumps(document))
    envelope = json.loads(body("sns-envelope-s3.json"))
    envelope["Message"] = json.dumps(document)
    [through_sns] = parse_message(json.dumps(envelope))
    assert direct.writer == through_sns.writer == writer
    assert through_sns.shape == SHAPE_SNS_S3


def test_eventbridge_events_name_no_writer():
    """S3's EventBridge events carry the requester's account, not its identity: writer unknown."""
    [record] = parse_message(body("eventbridge-object-created.json"))
    assert record.writer is None


def cloudtrail(call: str = "PutObject", **request) -> dict:
    """An S3 data event of CloudTrail as EventBridge delivers it (AWS's documented fields)."""
    return {
        "version": "0",
        "id": "5a1b7c0e-0000-4000-8000-000000000001",
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-12-03T04:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "eventVersion": "1.09",
            "userIdentity": {
                "type": "AssumedRole",
                "principalId": "AROAJBNCAL3UTR5C42U4M:alice",
                "arn": "arn:aws:sts::123456789012:assumed-role/interlinked-group-lab-b/alice",
                "accountId": "123456789012",
                "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": "AROAJBNCAL3UTR5C42U4M"}},
            },
            "eventTime": "2026-12-03T04:00:00Z",
            "eventSource": "s3.amazonaws.com",
            "eventName": call,
            "requestParameters": {
                "bucketName": "analysis-bkt",
                "key": "lab-a/submissions/by b.json",
                **request,
            },
            "responseElements": None,
            "eventID": "3074546e-1bfa-4973-8502-b1bb4d0bda1a",
            "readOnly": False,
            "eventType": "AwsApiCall",
        },
    }


def test_a_cloudtrail_put_object_is_an_object_created_event_naming_its_writer():
    [record] = parse_message(json.dumps(cloudtrail()))
    assert isinstance(record, S3Record) and record.created
    assert (record.bucket, record.key) == ("analysis-bkt", "lab-a/submissions/by b.json")  # not encoded
    assert record.event_name == "ObjectCreated:Put"
    assert record.writer == "AROAJBNCAL3UTR5C42U4M:alice"
    assert record.sequencer == "3074546e-1bfa-4973-8502-b1bb4d0bda1a"  # each call its own identity
    envelope = json.loads(body("sns-envelope-s3.json"))
    envelope["Message"] = json.dumps(cloudtrail())
    [wrapped] = parse_message(json.dumps(envelope))
    assert wrapped.identity == record.identity and wrapped.writer == record.writer


def test_other_cloudtrail_calls_are_not_object_created_and_bad_ones_say_what_is_missing():
    [read] = parse_message(json.dumps(cloudtrail("GetObject")))
    assert read.event_name == "ApiCall:GetObject" and not read.created
    broken = cloudtrail()
    del broken["detail"]["requestParameters"]["bucketName"]
    with pytest.raises(MalformedEvent, match=r"requestParameters\.bucketName is missing"):
        parse_message(json.dumps(broken))
