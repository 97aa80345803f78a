"""SNS topic block: publish JSON or text messages."""

from __future__ import annotations

import json
from typing import Any

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field

from blocks.clients import aws_client


class SnsTopic(Block):
    """An SNS topic that flows and services publish to."""

    _block_type_name = "SNS Topic"
    _block_type_slug = "sns-topic"
    _description = "An Amazon SNS topic with a publish helper."

    topic_arn: str = Field(description="ARN of the topic.")
    credentials: AwsCredentials = Field(
        default_factory=AwsCredentials, description="AWS credentials and client parameters."
    )

    def client(self):
        """The (cached) boto3 SNS client of the credentials block (:func:`blocks.clients.aws_client`)."""
        return aws_client("sns", credentials=self.credentials)

    def publish(
        self,
        message: str | dict[str, Any] | list[Any],
        *,
        subject: str | None = None,
        attributes: dict[str, str] | None = None,
        group_id: str | None = None,
        deduplication_id: str | None = None,
    ) -> str:
        """Publish one message (non-strings as JSON) and return its MessageId."""
        params: dict[str, Any] = {
            "TopicArn": self.topic_arn,
            "Message": message if isinstance(message, str) else json.dumps(message),
        }
        if subject:
            params["Subject"] = subject[:100]
        if attributes:
            params["MessageAttributes"] = {
                key: {"DataType": "String", "StringValue": str(value)} for key, value in attributes.items()
            }
        if self.topic_arn.endswith(".fifo"):
            params["MessageGroupId"] = group_id or "default"
            if deduplication_id:
                params["MessageDeduplicationId"] = deduplication_id
        return self.client().publish(**params)["MessageId"]
