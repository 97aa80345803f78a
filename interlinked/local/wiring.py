"""Wire the event sources to the events queue (what Terraform's messaging module does on AWS).

- analysis bucket: every ``*.json`` → events queue (S3 filters have no inner wildcard, so the
  bridge keeps ``{group}/submissions/*.json`` and ignores the rest, as on AWS by default);
- data bucket: ``jobs/incoming/*.json`` → events queue;
- a ``job-requests`` SNS topic subscribed to the events queue, for publishing job descriptions.

:func:`ensure_event_sources` is idempotent: notification configurations of other owners on the
same buckets are kept, and an unchanged configuration is not written again (each write makes S3
send an ``s3:TestEvent``, which the bridge ignores anyway). It runs before the blocks exist: its
clients come from ``aws_client(service, use_block=False)``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from blocks.clients import aws_client

SUBMISSIONS_ID = "interlinked-bridge-analysis-json"
JOB_DROPS_ID = "interlinked-bridge-job-drops"
DEFAULT_JOB_REQUESTS_TOPIC = "interlinked-job-requests"


def _queue_arn(sqs, queue_url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _allow_senders(sqs, queue_url: str, queue_arn: str, source_arns: list[str]) -> None:
    """Queue policy letting S3 (for these buckets) and SNS (for these topics) send to the queue."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "InterlinkedEventSources",
                "Effect": "Allow",
                "Principal": {"Service": ["s3.amazonaws.com", "sns.amazonaws.com"]},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnLike": {"aws:SourceArn": sorted(source_arns)}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})


def _put_queue_notification(
    s3, bucket: str, config_id: str, queue_arn: str, rules: list[dict[str, str]]
) -> bool:
    """Add/replace our queue configuration on ``bucket``; True when something was written."""
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    current.pop("ResponseMetadata", None)
    wanted = {
        "Id": config_id,
        "QueueArn": queue_arn,
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": rules}},
    }
    queues = [entry for entry in current.get("QueueConfigurations", []) if entry.get("Id") != config_id]
    existing = next((e for e in current.get("QueueConfigurations", []) if e.get("Id") == config_id), None)
    if existing is not None and _same(existing, wanted):
        return False
    configuration = {
        key: value
        for key, value in current.items()
        if key.endswith("Configurations") or key == "EventBridgeConfiguration"
    }
    configuration["QueueConfigurations"] = [*queues, wanted]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=configuration)
    return True


def _same(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    def rules(entry):
        return sorted(
            (rule["Name"].lower(), rule["Value"])
            for rule in entry.get("Filter", {}).get("Key", {}).get("FilterRules", [])
        )

    return (
        existing.get("QueueArn") == wanted["QueueArn"]
        and sorted(existing.get("Events", [])) == sorted(wanted["Events"])
        and rules(existing) == rules(wanted)
    )


def ensure_job_requests_topic(sns, sqs, queue_url: str, *, name: str | None = None) -> str:
    """The job-requests topic, subscribed (non-raw: the SNS message id is kept) to the queue."""
    name = name or os.environ.get("INTERLINKED_JOB_REQUESTS_TOPIC", DEFAULT_JOB_REQUESTS_TOPIC)
    topic_arn = sns.create_topic(Name=name)["TopicArn"]
    queue_arn = _queue_arn(sqs, queue_url)
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic_arn).get("Subscriptions", [])
    if not any(sub.get("Endpoint") == queue_arn and sub.get("Protocol") == "sqs" for sub in subscriptions):
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return topic_arn


def ensure_event_sources(
    *,
    buckets: dict[str, str],
    events_queue_url: str,
    job_requests_topic: str | None = None,
    analysis_buckets: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Wire S3 notifications and the job-requests topic to the events queue (idempotent).

    ``buckets`` is the ``env --json`` mapping (``data``, ``analysis``); ``analysis_buckets`` the
    analyses' own buckets (analysis → bucket), wired like the analysis bucket. Returns what was wired:
    ``{"job_requests_topic": arn, "notifications": {bucket: [filter, ...]}, "changed": [...]}``.
    """
    s3, sqs, sns = (aws_client(service, use_block=False) for service in ("s3", "sqs", "sns"))
    queue_arn = _queue_arn(sqs, events_queue_url)
    topic_arn = ensure_job_requests_topic(sns, sqs, events_queue_url, name=job_requests_topic)
    own = sorted(set((analysis_buckets or {}).values()))
    bucket_arns = [f"arn:aws:s3:::{name}" for name in (buckets["analysis"], buckets["data"], *own)]
    _allow_senders(sqs, events_queue_url, queue_arn, [*bucket_arns, topic_arn])
    wiring = {
        buckets["analysis"]: (SUBMISSIONS_ID, [{"Name": "suffix", "Value": ".json"}]),
        buckets["data"]: (
            JOB_DROPS_ID,
            [{"Name": "prefix", "Value": "jobs/incoming/"}, {"Name": "suffix", "Value": ".json"}],
        ),
        **{name: (SUBMISSIONS_ID, [{"Name": "suffix", "Value": ".json"}]) for name in own},
    }
    changed = []
    for bucket, (config_id, rules) in wiring.items():
        if _put_queue_notification(s3, bucket, config_id, queue_arn, rules):
            changed.append(bucket)
    return {
        "job_requests_topic": topic_arn,
        "events_queue_arn": queue_arn,
        "notifications": {bucket: rules for bucket, (_, rules) in wiring.items()},
        "changed": changed,
    }
