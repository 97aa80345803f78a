"""The AWS Lambda front end of the event bridge (``interlinked.bridge.lambda_handler.handler``).

Wired by ``infra/terraform/modules/bridge``: an SQS event source mapping on the events queue with
``ReportBatchItemFailures``; environment ``PREFECT_API_URL``, ``PREFECT_API_KEY_SECRET_ARN`` (a
Secrets Manager secret holding an API key, or ``user:password`` for basic auth) and
``BRIDGE_DLQ_URL`` (the function's own dead-letter queue, where rejects go with their reason).

Accepted invocations: SQS batches (the normal path), SNS records (a topic subscribed to the
function), S3 notifications invoking it directly, and EventBridge events. Each record goes through
the same routing core as the long-running consumer. For SQS, a failed record is reported in
``batchItemFailures`` (SQS retries it) until its last allowed receive, when it is sent to
``BRIDGE_DLQ_URL`` with the reason and reported done. For asynchronous invocations a permanent
failure goes to ``BRIDGE_DLQ_URL`` at once; a transient one raises, so Lambda retries it and
finally parks it in the function's DLQ.

Imports: stdlib + boto3, and ``blocks.queues`` (botocore only): the Lambda runtime has no Prefect
and no pydantic.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from blocks.queues import queue_redrive
from interlinked.bridge import dead_letter
from interlinked.bridge.core import UNAVAILABLE, Bridge, BridgeFailure, Message, dead_letter_event
from interlinked.bridge.prefect_api import PrefectApi, auth_header_from_env, auth_header_from_secret
from interlinked.bridge.routes import load_routes

logger = logging.getLogger("interlinked.bridge")
logger.setLevel(os.environ.get("INTERLINKED_BRIDGE_LOG_LEVEL", "INFO").upper())
DEFAULT_MAX_RECEIVES = 5

_state: dict[str, Any] = {}


def _config_key() -> tuple:
    names = (
        "PREFECT_API_URL",
        "PREFECT_API_KEY_SECRET_ARN",
        "PREFECT_API_KEY",
        "PREFECT_API_AUTH_STRING",
        "BRIDGE_DLQ_URL",
        "BRIDGE_MAX_RECEIVES",
        "INTERLINKED_BRIDGE_ROUTES",
        "INTERLINKED_DATA_BUCKET",
        "INTERLINKED_ANALYSIS_BUCKET",
        "INTERLINKED_DEPLOYMENT_SET",
        "AWS_ENDPOINT_URL",
    )
    return tuple(os.environ.get(name) for name in names)


def _session():
    """Cold-start setup, reused while the configuration is unchanged (warm invocations)."""
    key = _config_key()
    if _state.get("key") == key:
        return _state
    import boto3

    session = boto3.session.Session()
    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        raise RuntimeError("PREFECT_API_URL is not set")
    authorization = auth_header_from_env()
    secret_arn = os.environ.get("PREFECT_API_KEY_SECRET_ARN")
    if secret_arn and not authorization:
        secret = session.client("secretsmanager").get_secret_value(SecretId=secret_arn)
        if secret.get("SecretString"):
            authorization = auth_header_from_secret(secret["SecretString"])
    api = PrefectApi(api_url, authorization=authorization, timeout=10)
    _state.clear()
    _state.update(
        key=key,
        api=api,
        bridge=Bridge(load_routes(), api),
        sqs=session.client("sqs"),
        dlq_url=os.environ.get("BRIDGE_DLQ_URL") or None,
        max_receives={},
    )
    return _state


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    state = _session()
    records = event.get("Records") if isinstance(event, dict) else None
    if isinstance(records, list) and records and all(_source(r) == "aws:sqs" for r in records):
        return _sqs_batch(state, records)
    if isinstance(records, list) and records and all(_source(r) == "aws:sns" for r in records):
        for record in records:
            sns = record.get("Sns", {})
            attributes = {
                name: str(value.get("Value"))
                for name, value in (sns.get("MessageAttributes") or {}).items()
                if isinstance(value, dict)
            }
            _async_one(state, sns.get("Message", ""), sns.get("MessageId"), attributes)
        return {"batchItemFailures": []}
    # S3 invoking the function directly, an EventBridge event, or anything else: one message.
    message_id = event.get("id") if isinstance(event, dict) else None
    _async_one(state, json.dumps(event), message_id, {})
    return {"batchItemFailures": []}


def _source(record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    return record.get("eventSource") or record.get("EventSource")


def _sqs_batch(state: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    converted = [
        dead_letter.sqs_attributes_from_lambda(record.get("messageAttributes")) for record in records
    ]
    messages = [
        Message(
            body=record.get("body", ""),
            message_id=record.get("messageId"),
            attributes=dead_letter.plain_attributes(attributes),
            dedup_id=(record.get("attributes") or {}).get("MessageDeduplicationId"),
        )
        for record, attributes in zip(records, converted, strict=True)
    ]
    try:
        results = state["bridge"].handle_batch(messages)
    except Exception as error:  # a bug must not lose the batch: retry every record
        logger.exception("unexpected error on a batch of %d records", len(records))
        results = [BridgeFailure(UNAVAILABLE, f"internal error: {type(error).__name__}: {error}")] * len(
            records
        )
    failures = []
    for record, attributes, result in zip(records, converted, results, strict=True):
        if isinstance(result, BridgeFailure) and not _failed(state, record, attributes, result):
            failures.append({"itemIdentifier": record.get("messageId")})
    return {"batchItemFailures": failures}


def _failed(
    state: dict[str, Any], record: dict[str, Any], sqs_attributes: dict, failure: BridgeFailure
) -> bool:
    """True when the record is settled (dead-lettered with its reason); False: let SQS retry it."""
    receive_count = int((record.get("attributes") or {}).get("ApproximateReceiveCount", "1"))
    max_receives = _max_receives(state, record.get("eventSourceARN"))
    logger.warning(
        "record %s failed (receive %d of %d, %s): %s",
        record.get("messageId"),
        receive_count,
        max_receives,
        failure.category,
        failure.reason,
    )
    if receive_count >= max_receives and state["dlq_url"]:
        return _dead_letter(
            state, record.get("body", ""), sqs_attributes, record.get("messageId"), failure, receive_count
        )
    if failure.permanent and record.get("receiptHandle") and record.get("eventSourceARN"):
        try:  # no point waiting the whole visibility timeout for a message that cannot succeed
            state["sqs"].change_message_visibility(
                QueueUrl=_queue_url(record["eventSourceARN"]),
                ReceiptHandle=record["receiptHandle"],
                VisibilityTimeout=2,
            )
        except Exception as error:
            logger.debug("could not shorten the visibility: %s", error)
    return False


def _async_one(state: dict[str, Any], body: str, message_id: str | None, attributes: dict[str, str]) -> None:
    [result] = state["bridge"].handle_batch(
        [Message(body=body, message_id=message_id, attributes=attributes)]
    )
    if isinstance(result, BridgeFailure):
        failure = result
        if not failure.permanent or not state["dlq_url"]:
            raise failure  # Lambda retries asynchronous invocations, then uses the function's DLQ
        sqs_attributes = {
            name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
        }
        if not _dead_letter(state, body, sqs_attributes, message_id, failure, 1):
            raise failure


def _dead_letter(
    state: dict[str, Any],
    body: str,
    sqs_attributes: dict,
    message_id: str | None,
    failure: BridgeFailure,
    receive_count: int,
) -> bool:
    params = dead_letter.dead_letter_message(
        queue_url=state["dlq_url"],
        body=body,
        attributes=sqs_attributes,
        reason=failure.reason,
        category=failure.category,
        source="lambda:" + os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "interlinked-event-bridge"),
        message_id=message_id,
        receive_count=receive_count,
    )
    try:
        state["sqs"].send_message(**params)
    except Exception as error:
        logger.error("could not dead-letter %s: %s", message_id, error)
        return False
    logger.error("dead-lettered %s: %s", message_id, failure.reason)
    try:
        state["api"].emit_events(
            [dead_letter_event(message_id, failure.reason, failure.category, params["QueueUrl"])]
        )
    except Exception as error:
        logger.debug("could not emit the dead-letter event: %s", error)
    return True


def _queue_url(arn: str) -> str:
    _, _, _, region, account, name = arn.split(":", 5)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_SQS") or os.environ.get("AWS_ENDPOINT_URL")
    base = endpoint.rstrip("/") if endpoint else f"https://sqs.{region}.amazonaws.com"
    return f"{base}/{account}/{name}"


def _max_receives(state: dict[str, Any], arn: str | None) -> int:
    if os.environ.get("BRIDGE_MAX_RECEIVES"):
        return int(os.environ["BRIDGE_MAX_RECEIVES"])
    if not arn:
        return DEFAULT_MAX_RECEIVES
    cache = state["max_receives"]
    if arn not in cache:
        try:
            # Only the count: the function's role may not look up the queue's own dead-letter queue.
            redrive = queue_redrive(state["sqs"], _queue_url(arn), resolve_dead_letter_url=False)
            cache[arn] = redrive.max_receive_count or DEFAULT_MAX_RECEIVES
        except Exception as error:
            logger.debug("could not read the redrive policy of %s: %s", arn, error)
            return DEFAULT_MAX_RECEIVES
    return cache[arn]
