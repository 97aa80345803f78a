"""SQS queue block: send, long-poll receive, delete, visibility, dead letters."""

from __future__ import annotations

import json
from typing import Any

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field

from blocks.clients import aws_client
from blocks.queues import Redrive, queue_redrive


class SqsQueue(Block):
    """An SQS queue (standard or FIFO) and, optionally, its dead-letter queue."""

    _block_type_name = "SQS Queue"
    _block_type_slug = "sqs-queue"
    _description = "An Amazon SQS queue with send/receive/delete helpers."

    queue_url: str = Field(description="URL of the queue, as returned by CreateQueue / GetQueueUrl.")
    dead_letter_queue_url: str | None = Field(
        default=None, description="URL of the queue's dead-letter queue, when it has one."
    )
    credentials: AwsCredentials = Field(
        default_factory=AwsCredentials, description="AWS credentials and client parameters."
    )
    wait_time_seconds: int = Field(
        default=20, ge=0, le=20, description="Long-poll wait of receive(), in seconds (SQS allows 0-20)."
    )

    @property
    def is_fifo(self) -> bool:
        return self.queue_url.endswith(".fifo")

    def client(self):
        """The (cached) boto3 SQS client of the credentials block (:func:`blocks.clients.aws_client`)."""
        return aws_client("sqs", credentials=self.credentials)

    def redrive(self) -> Redrive:
        """The queue's dead-letter queue and max receive count, as its redrive policy says."""
        return queue_redrive(self.client(), self.queue_url)

    def send(
        self,
        body: str | dict[str, Any] | list[Any],
        *,
        group_id: str | None = None,
        deduplication_id: str | None = None,
        attributes: dict[str, str] | None = None,
        queue_url: str | None = None,
    ) -> str:
        """Send one message and return its MessageId.

        ``body`` that is not a string is sent as JSON. On a FIFO queue a ``group_id`` is required by
        SQS; when omitted, a single group named ``default`` is used.
        """
        url = queue_url or self.queue_url
        params: dict[str, Any] = {
            "QueueUrl": url,
            "MessageBody": body if isinstance(body, str) else json.dumps(body),
        }
        if url.endswith(".fifo"):
            params["MessageGroupId"] = group_id or "default"
            if deduplication_id:
                params["MessageDeduplicationId"] = deduplication_id
        if attributes:
            params["MessageAttributes"] = {
                key: {"DataType": "String", "StringValue": str(value)} for key, value in attributes.items()
            }
        return self.client().send_message(**params)["MessageId"]

    def receive(
        self,
        *,
        max_messages: int = 10,
        wait_time_seconds: int | None = None,
        visibility_timeout: int | None = None,
        queue_url: str | None = None,
        system_attributes: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Long-poll for up to ``max_messages`` messages, with their attributes and receive count."""
        params: dict[str, Any] = {
            "QueueUrl": queue_url or self.queue_url,
            "MaxNumberOfMessages": max(1, min(max_messages, 10)),
            "WaitTimeSeconds": self.wait_time_seconds if wait_time_seconds is None else wait_time_seconds,
            "MessageAttributeNames": ["All"],
            "MessageSystemAttributeNames": system_attributes or ["All"],
        }
        if visibility_timeout is not None:
            params["VisibilityTimeout"] = visibility_timeout
        return self.client().receive_message(**params).get("Messages", [])

    def delete(self, receipt_handle: str, *, queue_url: str | None = None) -> None:
        self.client().delete_message(QueueUrl=queue_url or self.queue_url, ReceiptHandle=receipt_handle)

    def change_visibility(self, receipt_handle: str, timeout: int, *, queue_url: str | None = None) -> None:
        """Extend (or end, with 0) the invisibility of a message being worked on."""
        self.client().change_message_visibility(
            QueueUrl=queue_url or self.queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=timeout
        )

    def approximate_depth(self, *, queue_url: str | None = None) -> dict[str, int]:
        """Visible and in-flight message counts, as SQS approximates them."""
        attributes = self.client().get_queue_attributes(
            QueueUrl=queue_url or self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return {
            "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        }

    def dead_letter(
        self, message: dict[str, Any], reason: str, *, attributes: dict[str, str] | None = None
    ) -> None:
        """Move ``message`` (as received) to the dead-letter queue with ``reason`` in its attributes,
        then delete the original. When the send fails the original stays, and SQS's own redrive
        moves it after its last receive."""
        dead_letter_url = self.dead_letter_queue_url or self.redrive().dead_letter_queue_url
        if not dead_letter_url:
            raise ValueError(f"queue {self.queue_url} has no dead-letter queue")
        system = message.get("Attributes", {})
        self.send(
            message.get("Body") or "(empty)",
            queue_url=dead_letter_url,
            group_id=system.get("MessageGroupId") or "dead-letters",
            deduplication_id=message["MessageId"],
            attributes={
                "reason": reason[:1000],
                "sourceQueue": self.queue_url,
                "originalMessageId": message["MessageId"],
                "receiveCount": system.get("ApproximateReceiveCount", "1"),
                **(attributes or {}),
            },
        )
        self.delete(message["ReceiptHandle"])

    def receive_dead_letters(self, *, max_messages: int = 10, wait_time_seconds: int = 0) -> list[dict]:
        """Read messages parked in the dead-letter queue (they stay there unless deleted)."""
        dead_letter_url = self.dead_letter_queue_url or self.redrive().dead_letter_queue_url
        if not dead_letter_url:
            raise ValueError(f"queue {self.queue_url} has no dead-letter queue")
        return self.receive(
            max_messages=max_messages, wait_time_seconds=wait_time_seconds, queue_url=dead_letter_url
        )
