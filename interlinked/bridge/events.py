"""Incoming event shapes → normalised records (stdlib only: the Lambda imports this).

One SQS message (or Lambda record) may carry, in its body:

- an S3 notification delivered straight to SQS: ``{"Records": [{"eventSource": "aws:s3", ...}]}``;
- the same through SNS, non-raw delivery: an SNS envelope ``{"Type": "Notification", "Message":
  "<the S3 notification as JSON text>", ...}``; with raw delivery the body is the S3 notification;
- an EventBridge ``Object Created`` event: ``{"detail-type": "Object Created", "source": "aws.s3",
  "detail": {...}}``;
- an S3 data event of CloudTrail through EventBridge: ``{"detail-type": "AWS API Call via
  CloudTrail", "source": "aws.s3", "detail": {"eventName": "PutObject", "requestParameters":
  {"bucketName", "key"}, "userIdentity": {...}, ...}}`` (PutObject, CopyObject, PostObject,
  CompleteMultipartUpload are object-created events; other calls keep their name and are ignored);
- S3's ``s3:TestEvent`` (sent when a notification configuration is saved), direct or through SNS;
- a job message: a JSON object, plain or inside an SNS envelope, typed by its ``type`` field, a
  ``type`` message attribute, or its shape (a script-job description has a ``script``).

:func:`parse_message` turns any of these into :class:`S3Record` / :class:`MessageRecord` items (or
one :class:`TestEventRecord`), or raises :class:`MalformedEvent` saying what is wrong.
Keys in S3 notifications are URL-encoded (moto encodes ``/`` too): they are decoded with
``unquote_plus``. EventBridge keys are not encoded.

The identity that wrote the object (:attr:`S3Record.writer`) is S3's ``userIdentity.principalId``
of a notification record (``AWS:<UserId>`` for an IAM user, ``AWS:<RoleId>:<session name>`` for an
assumed role), or CloudTrail's ``detail.userIdentity.principalId`` (the same without ``AWS:``).
S3's own EventBridge events name no principal (their ``detail.requester`` is an account or a
service), so their writer is unknown (None).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

# How the record reached us (recorded in the Prefect event; never changes the routing).
SHAPE_S3 = "s3-notification"
SHAPE_SNS_S3 = "sns-envelope/s3-notification"
SHAPE_EVENTBRIDGE = "eventbridge"
SHAPE_SNS_EVENTBRIDGE = "sns-envelope/eventbridge"
SHAPE_MESSAGE = "message"
SHAPE_SNS_MESSAGE = "sns-envelope/message"


class MalformedEvent(ValueError):
    """The message is not an event the bridge understands; the text says why."""


@dataclass(frozen=True)
class S3Record:
    """One object event, whatever the delivery path."""

    bucket: str
    key: str
    event_name: str  # "ObjectCreated:Put", "ObjectRemoved:Delete", ... (no "s3:" prefix)
    etag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None
    size: int | None = None
    event_time: str | None = None
    shape: str = SHAPE_S3
    writer: str | None = None  # userIdentity.principalId of the request that caused the event

    @property
    def created(self) -> bool:
        return self.event_name.startswith("ObjectCreated")

    @property
    def identity(self) -> str:
        """What makes this event unique: bucket, key, version (or etag) and sequencer.

        A redelivery of the same event, or the same event through another path (direct, SNS,
        EventBridge), has the same identity on AWS. moto omits the sequencer from direct and SNS
        deliveries, so the event time stands in for it (identical in every copy of one message).
        """
        version = self.version_id or self.etag or "-"
        order = self.sequencer or self.event_time or "-"
        return f"s3:{self.bucket}/{self.key}@{version}#{order}"


@dataclass(frozen=True)
class TestEventRecord:
    """``s3:TestEvent``: S3 checking that it can deliver; never a reason to run anything."""

    __test__ = False  # not a pytest test class
    bucket: str | None
    shape: str = SHAPE_S3


@dataclass(frozen=True)
class MessageRecord:
    """A job message: a JSON object with a type."""

    type: str
    body: dict[str, Any]
    payload: Any
    message_id: str | None
    dedup_id: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    shape: str = SHAPE_MESSAGE

    @property
    def identity(self) -> str:
        return f"msg:{self.dedup_id or self.message_id or '-'}"


Record = S3Record | TestEventRecord | MessageRecord

# Message attributes that carry a type or an explicit deduplication id.
TYPE_ATTRIBUTES = ("type", "interlinked-type", "interlinked.type")
DEDUP_ATTRIBUTES = (
    "idempotency-key",
    "idempotency_key",
    "dedup-id",
    "dedup_id",
    "interlinked.idempotency-key",
)


def parse_message(
    body: str,
    *,
    message_id: str | None = None,
    attributes: dict[str, str] | None = None,
    dedup_id: str | None = None,
) -> list[Record]:
    """Decode one message body (plus its SQS message id / attributes) into records.

    ``attributes`` are the message attributes as plain strings; ``dedup_id`` is a FIFO queue's
    ``MessageDeduplicationId``. Raises :class:`MalformedEvent`.
    """
    attributes = dict(attributes or {})
    # A message the consumer requeued keeps the identity of the original delivery.
    message_id = attributes.get("interlinked.message-id") or message_id
    try:
        document = json.loads(body)
    except (TypeError, ValueError) as error:
        raise MalformedEvent(f"the message body is not JSON ({error}): {_preview(body)}") from None
    return parse_document(document, message_id=message_id, attributes=attributes, dedup_id=dedup_id)


def parse_document(
    document: Any,
    *,
    message_id: str | None = None,
    attributes: dict[str, str] | None = None,
    dedup_id: str | None = None,
    enveloped: bool = False,
) -> list[Record]:
    """Like :func:`parse_message` for an already decoded body."""
    attributes = dict(attributes or {})
    if not isinstance(document, dict):
        raise MalformedEvent(f"expected a JSON object, got {type(document).__name__}: {_preview(document)}")
    if document.get("Type") == "Notification" and "Message" in document and "TopicArn" in document:
        if enveloped:
            raise MalformedEvent("an SNS envelope inside an SNS envelope")
        return _parse_sns_envelope(document, attributes=attributes, dedup_id=dedup_id)
    if document.get("Event") == "s3:TestEvent":
        return [TestEventRecord(bucket=document.get("Bucket"), shape=_shape(SHAPE_S3, enveloped))]
    if "Records" in document:
        return _parse_s3_notification(document, enveloped=enveloped)
    if document.get("source") == "aws.s3" and document.get("detail-type") == CLOUDTRAIL_DETAIL_TYPE:
        return [_parse_cloudtrail(document, enveloped=enveloped)]
    if document.get("source") == "aws.s3" and "detail-type" in document:
        return [_parse_eventbridge(document, enveloped=enveloped)]
    return [_parse_job_message(document, message_id, attributes, dedup_id, enveloped=enveloped)]


def _shape(base: str, enveloped: bool) -> str:
    return f"sns-envelope/{base}" if enveloped else base


def _parse_sns_envelope(envelope: dict, *, attributes: dict[str, str], dedup_id: str | None) -> list[Record]:
    message = envelope["Message"]
    sns_attributes = {
        name: str(value.get("Value"))
        for name, value in (envelope.get("MessageAttributes") or {}).items()
        if isinstance(value, dict) and "Value" in value
    }
    try:
        inner = json.loads(message) if isinstance(message, str) else message
    except ValueError as error:
        raise MalformedEvent(
            f"the SNS message {envelope.get('MessageId')} is not JSON ({error}): {_preview(message)}"
        ) from None
    return parse_document(
        inner,
        message_id=envelope.get("MessageId"),
        attributes={**attributes, **sns_attributes},
        dedup_id=dedup_id or envelope.get("MessageDeduplicationId"),
        enveloped=True,
    )


def _parse_s3_notification(document: dict, *, enveloped: bool) -> list[Record]:
    records = document.get("Records")
    if not isinstance(records, list) or not records:
        raise MalformedEvent("'Records' must be a non-empty list")
    parsed: list[Record] = []
    for index, record in enumerate(records):
        where = f"Records[{index}]"
        if not isinstance(record, dict):
            raise MalformedEvent(f"{where} is not an object")
        source = record.get("eventSource") or record.get("EventSource")
        if source != "aws:s3":
            raise MalformedEvent(f"{where}: eventSource {source!r} is not aws:s3")
        s3 = record.get("s3")
        bucket = _get(s3, "bucket", "name")
        key = _get(s3, "object", "key")
        event_name = record.get("eventName")
        if not isinstance(bucket, str) or not bucket:
            raise MalformedEvent(f"{where}: s3.bucket.name is missing")
        if not isinstance(key, str) or not key:
            raise MalformedEvent(f"{where}: s3.object.key is missing")
        if not isinstance(event_name, str) or not event_name:
            raise MalformedEvent(f"{where}: eventName is missing")
        obj = s3["object"]
        parsed.append(
            S3Record(
                bucket=bucket,
                key=unquote_plus(key),
                event_name=event_name.removeprefix("s3:"),
                etag=_text(obj.get("eTag") or obj.get("etag")),
                version_id=_text(obj.get("versionId")),
                sequencer=_text(obj.get("sequencer")),
                size=obj.get("size") if isinstance(obj.get("size"), int) else None,
                event_time=_text(record.get("eventTime")),
                shape=_shape(SHAPE_S3, enveloped),
                writer=_text(_get(record, "userIdentity", "principalId")),
            )
        )
    return parsed


# EventBridge detail types of S3 → the notification event names they correspond to.
_DETAIL_TYPES = {
    "Object Created": "ObjectCreated",
    "Object Deleted": "ObjectRemoved",
    "Object Restore Initiated": "ObjectRestore:Post",
    "Object Restore Completed": "ObjectRestore:Completed",
    "Object Tags Added": "ObjectTagging:Put",
    "Object Tags Deleted": "ObjectTagging:Delete",
}


def _parse_eventbridge(document: dict, *, enveloped: bool) -> S3Record:
    detail = document.get("detail")
    detail_type = document.get("detail-type")
    bucket = _get(detail, "bucket", "name")
    key = _get(detail, "object", "key")
    if not isinstance(bucket, str) or not bucket:
        raise MalformedEvent("EventBridge event: detail.bucket.name is missing")
    if not isinstance(key, str) or not key:
        raise MalformedEvent("EventBridge event: detail.object.key is missing")
    obj = detail["object"]
    base = _DETAIL_TYPES.get(detail_type, str(detail_type).replace(" ", ""))
    reason = detail.get("reason")
    event_name = f"{base}:{reason}" if base == "ObjectCreated" and isinstance(reason, str) else base
    return S3Record(
        bucket=bucket,
        key=key,  # EventBridge keys are not URL-encoded
        event_name=event_name,
        etag=_text(obj.get("etag") or obj.get("eTag")),
        version_id=_text(obj.get("version-id")),
        sequencer=_text(obj.get("sequencer")),
        size=obj.get("size") if isinstance(obj.get("size"), int) else None,
        event_time=_text(document.get("time")),
        shape=_shape(SHAPE_EVENTBRIDGE, enveloped),
    )


CLOUDTRAIL_DETAIL_TYPE = "AWS API Call via CloudTrail"
# CloudTrail's S3 calls that create an object → the notification event names they correspond to.
_CLOUDTRAIL_CREATED = {
    "PutObject": "ObjectCreated:Put",
    "PostObject": "ObjectCreated:Post",
    "CopyObject": "ObjectCreated:Copy",
    "CompleteMultipartUpload": "ObjectCreated:CompleteMultipartUpload",
}


def _parse_cloudtrail(document: dict, *, enveloped: bool) -> S3Record:
    """An S3 data event recorded by CloudTrail, through EventBridge. It has no ETag or sequencer:
    the event id orders it (each call is its own event; a duplicate delivery keeps the id)."""
    detail = document.get("detail")
    call = _get(detail, "eventName")
    bucket = _get(detail, "requestParameters", "bucketName")
    key = _get(detail, "requestParameters", "key")
    if not isinstance(call, str) or not call:
        raise MalformedEvent("CloudTrail event: detail.eventName is missing")
    if _get(detail, "eventSource") != "s3.amazonaws.com":
        raise MalformedEvent(f"CloudTrail event {call}: detail.eventSource is not s3.amazonaws.com")
    if not isinstance(bucket, str) or not bucket:
        raise MalformedEvent(f"CloudTrail event {call}: detail.requestParameters.bucketName is missing")
    if not isinstance(key, str) or not key:
        raise MalformedEvent(f"CloudTrail event {call}: detail.requestParameters.key is missing")
    return S3Record(
        bucket=bucket,
        key=key,  # not URL-encoded
        event_name=_CLOUDTRAIL_CREATED.get(call, f"ApiCall:{call}"),
        version_id=_text(_get(detail, "responseElements", "x-amz-version-id")),
        sequencer=_text(_get(detail, "eventID")),
        event_time=_text(_get(detail, "eventTime") or document.get("time")),
        shape=_shape(SHAPE_EVENTBRIDGE, enveloped),
        writer=_text(_get(detail, "userIdentity", "principalId")),
    )


def _parse_job_message(
    document: dict,
    message_id: str | None,
    attributes: dict[str, str],
    dedup_id: str | None,
    *,
    enveloped: bool,
) -> MessageRecord:
    explicit = document.get("type")
    if explicit is not None and not isinstance(explicit, str):
        raise MalformedEvent(f"'type' must be a string, got {type(explicit).__name__}")
    attribute_type = next((attributes[name] for name in TYPE_ATTRIBUTES if attributes.get(name)), None)
    if explicit:
        message_type = explicit
        payload = document.get("payload", {k: v for k, v in document.items() if k != "type"})
    elif attribute_type:
        message_type, payload = attribute_type, document
    elif "script" in document:
        message_type, payload = "script-job", document
    else:
        raise MalformedEvent(
            "not an S3 notification, an EventBridge S3 event or a job message (a job message has a "
            f"'type', a 'type' message attribute, or is a job description with a 'script'): {_preview(document)}"
        )
    explicit_key = document.get("idempotency_key") if explicit else None
    if explicit_key is not None and not isinstance(explicit_key, str):
        raise MalformedEvent("'idempotency_key' must be a string")
    attribute_key = next((attributes[name] for name in DEDUP_ATTRIBUTES if attributes.get(name)), None)
    return MessageRecord(
        type=message_type,
        body=document,
        payload=payload,
        message_id=message_id,
        dedup_id=explicit_key or attribute_key or dedup_id,
        attributes=attributes,
        shape=_shape(SHAPE_MESSAGE, enveloped),
    )


def _get(mapping: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(name)
    return mapping


def _text(value: Any) -> str | None:
    return None if value in (None, "", "null") else str(value)


def _preview(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "…"
