"""Fixtures for tests that run against the real local stack."""

from __future__ import annotations

import json
import time
import uuid

import boto3
import pytest


@pytest.fixture(scope="session")
def aws(stack_handle):
    stack_handle.ensure_up()
    session = boto3.session.Session()
    return {name: session.client(name) for name in ("s3", "sqs", "sns")}


class TopicListener:
    """An SQS queue subscribed (raw delivery) to an SNS topic, as a consumer of the topic would be."""

    def __init__(self, sqs, sns, topic_arn: str):
        self.sqs = sqs
        self.url = sqs.create_queue(QueueName=f"test-listener-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
        )
        self.seen: list[dict] = []

    def drain(self) -> None:
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return
            for message in messages:
                self.seen.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])

    def wait_for(self, predicate, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain()
            for message in self.seen:
                if predicate(message):
                    return message
            time.sleep(0.3)
        raise AssertionError(f"no matching message within {timeout} s; saw {self.seen}")


@pytest.fixture(scope="session")
def job_events(stack_handle, aws):
    description = stack_handle.ensure_up()
    return TopicListener(aws["sqs"], aws["sns"], description["topics"]["job_events"])
