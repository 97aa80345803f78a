"""Where answers go: WorkResponses on the SNS topic, response records in the data bucket."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from blocks.s3 import ObjectStore, WriteConflict
from flows.analysis.protocol import encode, response_attributes, response_record, response_record_key


class Responses:
    """Publishes WorkResponses on ``topic_arn`` and keeps the records of what was published.

    A response record (``analysis-responses/{MessageId}.json``) says that a delivery was answered.
    It is the journal every instance shares: the service writes one for every response it publishes,
    before deleting the message, and the ``prepare-experiment`` flow for every response it publishes;
    any instance that receives the delivery again finds it and does not answer a second time.
    """

    def __init__(self, sns: Any, topic_arn: str, store: ObjectStore) -> None:
        self.sns = sns
        self.topic_arn = topic_arn
        self.store = store
        self.by = f"analysis-service {socket.gethostname()}:{os.getpid()}"

    def publish(self, response: dict[str, Any], message: str | None = None) -> str:
        """Publish a WorkResponse (``message``: its encoding, when already made); the SNS message id."""
        attributes = response_attributes(response["request"], response)
        return self.sns.publish(
            TopicArn=self.topic_arn,
            Message=message if message is not None else encode(response),
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
            },
        )["MessageId"]

    def write_record(self, message_id: str, response: dict[str, Any], sns_id: str) -> bool:
        """Record that ``message_id`` was answered, only if no record exists (a conditional write:
        S3 ``If-None-Match: *``). False when one did: another instance had answered it already."""
        try:
            self.store.put_json(
                response_record_key(message_id),
                response_record(message_id, response, sns_id, by=self.by),
                if_none_match=True,
            )
        except WriteConflict:
            return False
        return True

    def record_exists(self, message_id: str) -> bool:
        return self.store.exists(response_record_key(message_id))

    def read_record(self, message_id: str) -> dict[str, Any] | None:
        """The response record of a delivery (``{"error", "errorCode", "snsMessageId", ...}``), or None."""
        body = self.store.read_bytes(response_record_key(message_id), None)
        if body is None:
            return None
        try:
            record = json.loads(body)
        except ValueError:
            record = None
        # Whatever is there says the delivery was answered, even when it cannot be read.
        return record if isinstance(record, dict) else {"error": False}
