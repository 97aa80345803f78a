"""Dead letters with their reason attached.

SQS's own redrive moves a message to the DLQ unchanged, so nobody could tell why it failed. The
bridge therefore moves a message itself on its last allowed receive: it sends a copy to the
dead-letter queue with the original body and attributes plus the reason as message attributes —
or, when the attributes would exceed SQS's limit of 10, a JSON wrapper
``{"interlinked_dead_letter": {reason...}, "body": "<original body>", "attributes": {...}}`` — and
only then deletes the original. If that send fails the original stays (SQS's redrive still catches
it after the next receive): nothing is lost.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

REASON = "interlinked.dlq.reason"
CATEGORY = "interlinked.dlq.category"
SOURCE = "interlinked.dlq.source"
MESSAGE_ID = "interlinked.dlq.message-id"
RECEIVE_COUNT = "interlinked.dlq.receive-count"
WRAPPED = "interlinked.dlq.wrapped"
MAX_ATTRIBUTES = 10
MAX_REASON = 1000


def _string(value: Any) -> dict[str, str]:
    return {"DataType": "String", "StringValue": str(value) if str(value) else "-"}


def sqs_attributes_from_lambda(attributes: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Lambda SQS records spell message attributes ``{"stringValue", "dataType"}``; SQS wants
    ``{"StringValue", "DataType"}``."""
    converted = {}
    for name, value in (attributes or {}).items():
        data_type = value.get("dataType") or value.get("DataType") or "String"
        if value.get("stringValue") is not None or value.get("StringValue") is not None:
            converted[name] = {
                "DataType": data_type,
                "StringValue": value.get("stringValue", value.get("StringValue")),
            }
        elif value.get("binaryValue") is not None or value.get("BinaryValue") is not None:
            converted[name] = {"DataType": data_type, "BinaryValue": value.get("binaryValue", value.get("BinaryValue"))}
    return converted


def plain_attributes(attributes: dict[str, dict[str, Any]] | None) -> dict[str, str]:
    """String message attributes as ``{name: value}`` (what the event parser looks at)."""
    plain = {}
    for name, value in (attributes or {}).items():
        text = value.get("StringValue", value.get("stringValue"))
        if text is not None:
            plain[name] = str(text)
    return plain


def dead_letter_message(
    *,
    queue_url: str,
    body: str,
    attributes: dict[str, dict[str, Any]] | None,
    reason: str,
    category: str,
    source: str,
    message_id: str | None,
    receive_count: int | None,
) -> dict[str, Any]:
    """``send_message`` arguments for the dead-letter copy of one message."""
    reason = reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"
    original = {
        name: value for name, value in (attributes or {}).items() if not name.startswith("interlinked.dlq.")
    }
    extra = {
        REASON: _string(reason),
        CATEGORY: _string(category),
        SOURCE: _string(source),
        MESSAGE_ID: _string(message_id or "-"),
        RECEIVE_COUNT: {"DataType": "Number", "StringValue": str(receive_count or 0)},
    }
    if len(original) + len(extra) <= MAX_ATTRIBUTES:
        params: dict[str, Any] = {"QueueUrl": queue_url, "MessageBody": body, "MessageAttributes": {**original, **extra}}
    else:
        wrapper = {
            "interlinked_dead_letter": {
                "reason": reason,
                "category": category,
                "source": source,
                "message_id": message_id,
                "receive_count": receive_count,
                "dead_lettered_at": datetime.now(UTC).isoformat(),
            },
            "body": body,
            "attributes": {name: value.get("StringValue") for name, value in original.items()},
        }
        params = {
            "QueueUrl": queue_url,
            "MessageBody": json.dumps(wrapper),
            "MessageAttributes": {REASON: extra[REASON], CATEGORY: extra[CATEGORY], WRAPPED: _string("true")},
        }
    if queue_url.endswith(".fifo"):
        params["MessageGroupId"] = "dead-letters"
        params["MessageDeduplicationId"] = (message_id or "unknown")[:128]
    return params


def reason_of(message: dict[str, Any]) -> dict[str, str | None]:
    """Read the reason back from a received dead letter (attribute or wrapper form)."""
    attributes = plain_attributes(message.get("MessageAttributes"))
    result = {
        "reason": attributes.get(REASON),
        "category": attributes.get(CATEGORY),
        "message_id": attributes.get(MESSAGE_ID),
        "body": message.get("Body"),
    }
    if attributes.get(WRAPPED) == "true":
        wrapper = json.loads(message["Body"])
        result["body"] = wrapper["body"]
        result["message_id"] = wrapper["interlinked_dead_letter"].get("message_id")
    return result
