"""Create the AWS resources and save the Prefect blocks the flows load by name.

Everything here is idempotent: running it against resources that already exist changes nothing.
It runs before the blocks exist, so its clients come from ``aws_client(service, use_block=False)``:
boto3 reaches the endpoint through its own configuration (``AWS_ENDPOINT_URL``), and the same code
provisions the moto server, LocalStack or an AWS account (though on AWS, Terraform owns the
resources and only :func:`save_blocks` is used).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from botocore.config import Config

from blocks.clients import aws_client
from interlinked.local.parts import analysis_buckets
from interlinked.settings import Settings


@dataclass
class Resources:
    """Names and addresses of the AWS resources, shaped like ``interlinked env --json``."""

    region: str
    buckets: dict[str, str]
    queues: dict[str, str]
    dead_letter_queues: dict[str, str]
    topics: dict[str, str]
    analysis_buckets: dict[str, str] = field(default_factory=dict)  # analysis → its own bucket
    aws_endpoint_url: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _dlq_name(queue_name: str) -> str:
    # A FIFO queue's dead-letter queue must itself be FIFO.
    if queue_name.endswith(".fifo"):
        return queue_name[: -len(".fifo")] + "-dlq.fifo"
    return queue_name + "-dlq"


def _ensure_queue(sqs, name: str, *, max_receive_count: int, visibility_timeout: int) -> tuple[str, str]:
    fifo = name.endswith(".fifo")
    fifo_attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "true"} if fifo else {}
    dlq_url = sqs.create_queue(
        QueueName=_dlq_name(name),
        Attributes={**fifo_attributes, "MessageRetentionPeriod": "1209600"},
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    attributes = {
        **fifo_attributes,
        "VisibilityTimeout": str(visibility_timeout),
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
        ),
    }
    try:
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except sqs.exceptions.QueueNameExists:
        # Exists with other attributes (e.g. an older redrive setting): bring it in line.
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        sqs.set_queue_attributes(
            QueueUrl=url, Attributes={k: v for k, v in attributes.items() if k != "FifoQueue"}
        )
    return url, dlq_url


def ensure_resources(settings: Settings) -> Resources:
    """Create buckets, queues with dead-letter queues and topics if missing; return their addresses."""
    region = Config(region_name=settings.region)
    s3, sqs, sns = (aws_client(service, use_block=False, config=region) for service in ("s3", "sqs", "sns"))

    existing = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
    own = analysis_buckets()  # analyses with a bucket of their own (NeuroCAAS: the bucket is the analysis)
    for bucket in (settings.data_bucket, settings.analysis_bucket, *sorted(set(own.values()))):
        if bucket not in existing:
            if settings.region == "us-east-1":
                s3.create_bucket(Bucket=bucket)
            else:
                s3.create_bucket(
                    Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": settings.region}
                )

    work_url, work_dlq = _ensure_queue(
        sqs, settings.work_queue, max_receive_count=settings.max_receive_count, visibility_timeout=60
    )
    events_url, events_dlq = _ensure_queue(
        sqs, settings.events_queue, max_receive_count=settings.max_receive_count, visibility_timeout=60
    )
    work_results_arn = sns.create_topic(Name=settings.work_results_topic)["TopicArn"]
    job_events_arn = sns.create_topic(Name=settings.job_events_topic)["TopicArn"]

    return Resources(
        region=settings.region,
        buckets={"data": settings.data_bucket, "analysis": settings.analysis_bucket},
        analysis_buckets=own,
        queues={"work": work_url, "events": events_url},
        dead_letter_queues={"work": work_dlq, "events": events_dlq},
        topics={"work_results": work_results_arn, "job_events": job_events_arn},
    )


def save_blocks(resources: Resources, *, endpoint_url: str | None, credentials: dict[str, str] | None = None):
    """Save (or overwrite) every block the flows load, pointing at ``resources``.

    ``endpoint_url`` is recorded in the credentials block's client parameters so that a flow run
    anywhere (a worker without the stack's environment, a laptop shell) reaches the same endpoint;
    ``None`` means "AWS itself".
    """
    from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

    import blocks
    from blocks import SnsTopic, SqsQueue

    credentials = credentials or {}
    aws = AwsCredentials(
        aws_access_key_id=credentials.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=credentials.get("AWS_SECRET_ACCESS_KEY"),
        region_name=resources.region,
        aws_client_parameters=AwsClientParameters(endpoint_url=endpoint_url),
    )
    aws.save(blocks.AWS_CREDENTIALS, overwrite=True)
    # Reload so the nested blocks reference the saved document instead of embedding a copy.
    aws = AwsCredentials.load(blocks.AWS_CREDENTIALS)

    S3Bucket(bucket_name=resources.buckets["data"], credentials=aws).save(blocks.DATA_BUCKET, overwrite=True)
    S3Bucket(bucket_name=resources.buckets["analysis"], credentials=aws).save(
        blocks.ANALYSIS_BUCKET, overwrite=True
    )
    S3Bucket(bucket_name=resources.buckets["data"], bucket_folder="prefect-results", credentials=aws).save(
        blocks.RESULT_STORAGE, overwrite=True
    )
    SqsQueue(
        queue_url=resources.queues["work"],
        dead_letter_queue_url=resources.dead_letter_queues.get("work"),
        credentials=aws,
    ).save(blocks.WORK_QUEUE, overwrite=True)
    SqsQueue(
        queue_url=resources.queues["events"],
        dead_letter_queue_url=resources.dead_letter_queues.get("events"),
        credentials=aws,
    ).save(blocks.EVENTS_QUEUE, overwrite=True)
    SnsTopic(topic_arn=resources.topics["work_results"], credentials=aws).save(
        blocks.WORK_RESULTS_TOPIC, overwrite=True
    )
    SnsTopic(topic_arn=resources.topics["job_events"], credentials=aws).save(
        blocks.JOB_EVENTS_TOPIC, overwrite=True
    )


def save_database_block(url: str) -> None:
    """Save (or overwrite) our own database's block, :data:`blocks.DATABASE`, with libpq URI ``url``."""
    from pydantic import SecretStr

    import blocks
    from blocks.postgres import PostgresDatabase

    PostgresDatabase(url=SecretStr(url)).save(blocks.DATABASE, overwrite=True)
