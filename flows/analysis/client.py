"""Client side of the analysis service: send tasks, wait for their WorkResponses, import experiments.

What ``interlinked request`` and ``interlinked experiments import`` (and the demo) use. Responses
are received the way a web app's API would: an SQS queue subscribed to the ``work_results``
topic (raw delivery, filtered on the request's ``uuid`` attribute), created for the wait and
removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid as uuid_module
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blocks
from blocks.clients import aws_client
from blocks.s3 import ObjectStore, data_store
from flows.analysis.protocol import ServiceError, s3_path_of


@dataclass
class Endpoints:
    """Where tasks go and responses come from, with boto3 clients for them."""

    queue_url: str
    topic_arn: str
    bucket: str
    sqs: Any
    sns: Any
    s3: Any

    @classmethod
    def from_blocks(cls, *, queue_url: str | None = None, topic_arn: str | None = None) -> Endpoints:
        store = data_store()
        return cls(
            queue_url=queue_url or blocks.SqsQueue.load(blocks.WORK_QUEUE).queue_url,
            topic_arn=topic_arn or blocks.SnsTopic.load(blocks.WORK_RESULTS_TOPIC).topic_arn,
            bucket=store.bucket,
            sqs=aws_client("sqs"),
            sns=aws_client("sns"),
            s3=store.client,
        )

    def store(self, bucket: str | None = None) -> ObjectStore:
        """The data bucket (or ``bucket``) through these endpoints' S3 client."""
        return ObjectStore(bucket or self.bucket, self.s3)


class ResponseListener:
    """A temporary SQS queue subscribed to the response topic (optionally filtered by uuid)."""

    def __init__(self, endpoints: Endpoints, *, uuids: list[str] | None = None) -> None:
        self.endpoints = endpoints
        sqs = endpoints.sqs
        self.queue_url = sqs.create_queue(QueueName=f"interlinked-responses-{uuid_module.uuid4().hex[:12]}")[
            "QueueUrl"
        ]
        arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sqs.set_queue_attributes(
            QueueUrl=self.queue_url,
            Attributes={
                "Policy": json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "sns.amazonaws.com"},
                                "Action": "sqs:SendMessage",
                                "Resource": arn,
                                "Condition": {"ArnEquals": {"aws:SourceArn": endpoints.topic_arn}},
                            }
                        ],
                    }
                )
            },
        )
        attributes = {"RawMessageDelivery": "true"}
        if uuids:
            attributes["FilterPolicy"] = json.dumps({"uuid": sorted(set(uuids))})
        self.subscription_arn = endpoints.sns.subscribe(
            TopicArn=endpoints.topic_arn,
            Protocol="sqs",
            Endpoint=arn,
            Attributes=attributes,
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
        self.received: list[dict[str, Any]] = []

    def poll(self, wait_seconds: int = 1) -> list[dict[str, Any]]:
        messages = self.endpoints.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds
        ).get("Messages", [])
        new = []
        for message in messages:
            with contextlib.suppress(ValueError):
                new.append(json.loads(message["Body"]))
            self.endpoints.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        self.received += new
        return new

    def wait_for(self, requests: list[dict[str, Any]], *, timeout: float) -> list[dict[str, Any] | None]:
        """The response to each request (matched on the whole original task), None if none came."""
        pending = {index: request for index, request in enumerate(requests)}
        found: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout

        def match() -> None:
            for response in self.received:
                for index, request in list(pending.items()):
                    if response.get("request") == request:
                        found[index] = response
                        del pending[index]
                        break

        match()
        while pending and time.monotonic() < deadline:
            self.poll(wait_seconds=max(0, min(2, int(deadline - time.monotonic()))))
            match()
        return [found.get(index) for index in range(len(requests))]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.endpoints.sns.unsubscribe(SubscriptionArn=self.subscription_arn)
        with contextlib.suppress(Exception):
            self.endpoints.sqs.delete_queue(QueueUrl=self.queue_url)

    def __enter__(self) -> ResponseListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def complete_task(task: dict[str, Any]) -> dict[str, Any]:
    """The task with a fresh ``uuid`` when it has none (everything else is left as written)."""
    if not isinstance(task, dict):
        raise ServiceError("INVALID_REQUEST", f"a task is a JSON object, got {type(task).__name__}")
    return task if task.get("uuid") else {**task, "uuid": str(uuid_module.uuid4())}


def send_task(
    endpoints: Endpoints, task: dict[str, Any], *, group_id: str | None = None, unique: bool = True
) -> str:
    """Send one task to the work queue; returns the SQS message id.

    On a FIFO queue each task gets its own message group unless ``group_id`` is given (as the
    seed's ``--message-group-id "$(date +%s)"``): tasks of one group are answered one after the
    other, and a PrepareExperiment holds its group until the experiment is ready. ``unique`` sends
    with a fresh deduplication id, so sending the same file twice within the queue's 5-minute
    deduplication window is two requests (a web app relying on content-based deduplication sends
    without one).
    """
    parameters: dict[str, Any] = {"QueueUrl": endpoints.queue_url, "MessageBody": json.dumps(task)}
    if endpoints.queue_url.endswith(".fifo"):
        parameters["MessageGroupId"] = group_id or uuid_module.uuid4().hex
        if unique:
            parameters["MessageDeduplicationId"] = uuid_module.uuid4().hex
    return endpoints.sqs.send_message(**parameters)["MessageId"]


def request(
    tasks: list[dict[str, Any]],
    *,
    wait: bool = True,
    timeout: float = 300.0,
    group_id: str | None = None,
    endpoints: Endpoints | None = None,
) -> list[tuple[dict[str, Any], str, dict[str, Any] | None]]:
    """Send tasks and (with ``wait``) collect their responses: ``(task, message id, response)``."""
    endpoints = endpoints or Endpoints.from_blocks()
    tasks = [complete_task(task) for task in tasks]
    if not wait:
        return [(task, send_task(endpoints, task, group_id=group_id), None) for task in tasks]
    uuids = [str(task["uuid"]) for task in tasks]
    with ResponseListener(endpoints, uuids=uuids) as listener:
        sent = [(task, send_task(endpoints, task, group_id=group_id)) for task in tasks]
        responses = listener.wait_for([task for task, _ in sent], timeout=timeout)
    return [
        (task, message_id, response) for (task, message_id), response in zip(sent, responses, strict=True)
    ]


def result_of(response: dict[str, Any], endpoints: Endpoints | None = None) -> Any:
    """The decoded result of a successful WorkResponse (fetched from S3 when it was too large)."""
    details = response["response"]
    if details.get("error"):
        raise ServiceError(details.get("errorCode") or "ERROR", details.get("userMessage") or "")
    item = response["results"][0]
    where = s3_path_of(item)
    if where is not None:  # too large for SNS, or an ETag result: the item's body is "bucket/key"
        endpoints = endpoints or Endpoints.from_blocks()
        store = endpoints.store(where[0])
        if item.get("content-encoding") == "gzip":  # current envelope: stored gzip-compressed
            import gzip

            return json.loads(gzip.decompress(store.read_bytes(where[1])))
        return store.read_json(where[1])
    return json.loads(item["body"])


def import_experiment(path: Path | str, experiment_id: str, *, endpoints: Endpoints | None = None):
    """Store a local ``.h5ad`` as an experiment (``ImportedExperiment``)."""
    from flows.analysis.experiments import upload_experiment_file

    endpoints = endpoints or Endpoints.from_blocks()
    return upload_experiment_file(endpoints.store(), Path(path), experiment_id)


def import_example(name: str, experiment_id: str, *, endpoints: Endpoints | None = None):
    """Store a bundled example (``pbmc68k_reduced``) as an experiment."""
    from flows.analysis.experiments import example_anndata, upload_anndata

    endpoints = endpoints or Endpoints.from_blocks()
    return upload_anndata(endpoints.store(), example_anndata(name), experiment_id)
