"""SQS facts every consumer needs, in plain boto3 (no Prefect: the Lambda bridge imports this too)."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Redrive:
    """Where a queue's dead letters go and after how many receives (``None``: no redrive policy)."""

    dead_letter_queue_url: str | None
    max_receive_count: int | None


def queue_redrive(sqs, queue_url: str, *, resolve_dead_letter_url: bool = True) -> Redrive:
    """The queue's dead-letter queue URL and max receive count, read from its ``RedrivePolicy``.

    ``resolve_dead_letter_url=False`` skips the ``GetQueueUrl`` call (the URL is then None): for a
    caller that needs only the count and may not look the dead-letter queue up (the Lambda bridge).
    """
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"]).get(
        "Attributes", {}
    )
    policy = json.loads(attributes.get("RedrivePolicy") or "null")
    if not policy:
        return Redrive(None, None)
    target = policy.get("deadLetterTargetArn", "")
    dead_letter_url = None
    if target and resolve_dead_letter_url:
        # arn:aws:sqs:region:account:name → the URL as this endpoint spells it
        account, name = target.split(":")[4], target.rsplit(":", 1)[-1]
        dead_letter_url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    count = policy.get("maxReceiveCount")
    return Redrive(dead_letter_url, int(count) if count is not None else None)
