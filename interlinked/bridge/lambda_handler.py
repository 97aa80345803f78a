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

**While the Prefect API is down** (a record failed as unavailable and ``/health`` does not answer)
no event is dead-lettered, however long it lasts: each such record is reported in
``batchItemFailures`` with its visibility set to a back-off (30 s doubling, at most
:data:`MAX_HOLD_DELAY` s, so events flow again at most that long after the API is back), and on its
last allowed receive, before the queue's redrive would move it to the DLQ, it is sent again to the
queue as a new message (same body and identity, ``interlinked.unavailable-since`` kept) and the old
one is reported done. Later invocations check ``/health`` first and do not try the records while it
fails. Each such invocation logs one ``PREFECT_UNAVAILABLE`` error line (how long, how many events
kept): Terraform's bridge module turns it into a metric and an alarm. Busy answers or internal
errors while the API is healthy are retried as before and, after :data:`MAX_REQUEUES` new starts,
dead-lettered with their reason. An asynchronous invocation (SNS, S3, EventBridge) that cannot
reach a down API is parked in the events queue (``INTERLINKED_EVENTS_QUEUE_URL``, set by Terraform)
and so kept the same way, instead of being retried twice and dead-lettered by Lambda.

Imports: stdlib + boto3, and ``blocks.queues`` (botocore only): the Lambda runtime has no Prefect
and no pydantic.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from blocks.queues import queue_redrive
from interlinked.bridge import dead_letter
from interlinked.bridge.core import UNAVAILABLE, Bridge, BridgeFailure, Message, dead_letter_event
from interlinked.bridge.prefect_api import PrefectApi, auth_header_from_env, auth_header_from_secret
from interlinked.bridge.routes import load_routes

logger = logging.getLogger("interlinked.bridge")
logger.setLevel(os.environ.get("INTERLINKED_BRIDGE_LOG_LEVEL", "INFO").upper())
DEFAULT_MAX_RECEIVES = 5
# While Prefect is down: a kept record is back in view after 30 s, doubling per receive, at most
# this long (also the delay of a new start; SQS allows 900 s at most).
HOLD_BASE_DELAY = 30
MAX_HOLD_DELAY = 900
# New starts of a record that failed while the API was healthy (busy, internal error) before it is
# dead-lettered; while the API is down there is no limit.
MAX_REQUEUES = 20
# Message attributes of a new start: how many, the original message id (its identity: the same
# idempotency key) and since when Prefect was unavailable for it.
REQUEUES = "interlinked.requeues"
ORIGINAL_ID = "interlinked.message-id"
UNAVAILABLE_SINCE = "interlinked.unavailable-since"
ALERT = "PREFECT_UNAVAILABLE"

_state: dict[str, Any] = {}


def _config_key() -> tuple:
    names = (
        "PREFECT_API_URL",
        "PREFECT_API_KEY_SECRET_ARN",
        "PREFECT_API_KEY",
        "PREFECT_API_AUTH_STRING",
        "BRIDGE_DLQ_URL",
        "BRIDGE_MAX_RECEIVES",
        "INTERLINKED_EVENTS_QUEUE_URL",
        "INTERLINKED_BRIDGE_ROUTES",
        "INTERLINKED_DATA_BUCKET",
        "INTERLINKED_ANALYSIS_BUCKET",
        "INTERLINKED_ANALYSIS_BUCKETS",
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
        unavailable_since=None,
        events_queue_url=os.environ.get("INTERLINKED_EVENTS_QUEUE_URL") or None,
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
    api_down: bool | None = None
    if state.get("unavailable_since") is not None:
        # Down at the last invocation: one health check instead of a call per record.
        api_down = not state["api"].health()
    if api_down:
        failure = BridgeFailure(UNAVAILABLE, f"Prefect API {state['api'].api_url} unreachable (/health)")
        results: list = [failure] * len(records)
    else:
        try:
            results = state["bridge"].handle_batch(messages)
        except Exception as error:  # a bug must not lose the batch: retry every record
            logger.exception("unexpected error on a batch of %d records", len(records))
            results = [BridgeFailure(UNAVAILABLE, f"internal error: {type(error).__name__}: {error}")] * len(
                records
            )
        if any(isinstance(r, BridgeFailure) and r.category == UNAVAILABLE for r in results):
            api_down = not state["api"].health()
    if api_down:
        state["unavailable_since"] = state.get("unavailable_since") or time.time()
    else:
        state["unavailable_since"] = None
    failures = []
    kept = []
    for record, attributes, result in zip(records, converted, results, strict=True):
        if not isinstance(result, BridgeFailure):
            continue
        if result.category == UNAVAILABLE and api_down:
            settled, delay = _keep(state, record, attributes, result)
            kept.append(delay)
        else:
            settled = _failed(state, record, attributes, result)
        if not settled:
            failures.append({"itemIdentifier": record.get("messageId")})
    if kept:
        since = state["unavailable_since"]
        logger.error(
            "%s: the Prefect API %s does not answer (unavailable for %d s, since %s); %d event(s) "
            "kept in the queue, not dead-lettered: back within %d s",
            ALERT,
            state["api"].api_url,
            time.time() - since,
            datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds"),
            len(kept),
            max(kept),
        )
    return {"batchItemFailures": failures}


def _keep(
    state: dict[str, Any], record: dict[str, Any], sqs_attributes: dict, failure: BridgeFailure
) -> tuple[bool, int]:
    """Keep a record that failed because the Prefect API is down; return (settled, back in s).

    Before its last allowed receive it is left in the queue with a back-off visibility. On the last
    one (the queue's redrive would move it to the DLQ next) it starts over as a new message; only
    when that send fails is it left to the redrive, with an error in the log.
    """
    receive_count = int((record.get("attributes") or {}).get("ApproximateReceiveCount", "1"))
    max_receives = _max_receives(state, record.get("eventSourceARN"))
    if receive_count >= max_receives:
        delay = MAX_HOLD_DELAY
        if _requeue(state, record, sqs_attributes, failure, limit=None, delay=delay):
            return True, delay
        logger.error(
            "record %s could not be kept (receive %d of %d); the queue's redrive may dead-letter it: %s",
            record.get("messageId"),
            receive_count,
            max_receives,
            failure.reason,
        )
        return False, delay
    delay = min(MAX_HOLD_DELAY, HOLD_BASE_DELAY * 2 ** max(0, receive_count - 1))
    _set_visibility(state, record, delay)
    return False, delay


def _requeue(
    state: dict[str, Any],
    record: dict[str, Any],
    sqs_attributes: dict,
    failure: BridgeFailure,
    *,
    limit: int | None,
    delay: int,
) -> bool:
    """Send the record again to its queue as a new message (same body; its identity, the count of
    new starts and since when Prefect was unavailable in attributes). False when it may not
    (``limit`` reached, a FIFO queue, too many attributes) or the send failed."""
    arn = record.get("eventSourceARN")
    if not arn or arn.endswith(".fifo"):
        return False
    attributes = dict(sqs_attributes)
    plain = dead_letter.plain_attributes(attributes)
    requeues = int(plain.get(REQUEUES, "0"))
    if limit is not None and requeues >= limit:
        return False
    attributes[REQUEUES] = {"DataType": "Number", "StringValue": str(requeues + 1)}
    attributes.setdefault(ORIGINAL_ID, {"DataType": "String", "StringValue": record.get("messageId") or "-"})
    if state.get("unavailable_since") is not None:
        since = datetime.fromtimestamp(state["unavailable_since"], UTC).isoformat(timespec="seconds")
        attributes.setdefault(UNAVAILABLE_SINCE, {"DataType": "String", "StringValue": since})
    if len(attributes) > dead_letter.MAX_ATTRIBUTES:
        return False
    try:
        state["sqs"].send_message(
            QueueUrl=_queue_url(arn),
            MessageBody=record.get("body", ""),
            MessageAttributes=attributes,
            DelaySeconds=min(900, delay),
        )
    except Exception as error:
        logger.error("could not requeue %s: %s", record.get("messageId"), error)
        return False
    logger.warning(
        "record %s started over as a new message (%d) after its last allowed receive: %s",
        record.get("messageId"),
        requeues + 1,
        failure.reason,
    )
    return True


def _set_visibility(state: dict[str, Any], record: dict[str, Any], seconds: int) -> None:
    if not (record.get("receiptHandle") and record.get("eventSourceARN")):
        return
    try:
        state["sqs"].change_message_visibility(
            QueueUrl=_queue_url(record["eventSourceARN"]),
            ReceiptHandle=record["receiptHandle"],
            VisibilityTimeout=seconds,
        )
    except Exception as error:
        logger.debug("could not change the visibility of %s: %s", record.get("messageId"), error)


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
    if receive_count >= max_receives:
        # Busy or erroring while healthy: start over a bounded number of times, then dead-letter.
        if failure.category == UNAVAILABLE and _requeue(
            state, record, sqs_attributes, failure, limit=MAX_REQUEUES, delay=HOLD_BASE_DELAY
        ):
            return True
        if state["dlq_url"]:
            return _dead_letter(
                state, record.get("body", ""), sqs_attributes, record.get("messageId"), failure, receive_count
            )
    if failure.permanent:
        _set_visibility(state, record, 2)  # no point waiting the whole visibility timeout
    return False


def _async_one(state: dict[str, Any], body: str, message_id: str | None, attributes: dict[str, str]) -> None:
    [result] = state["bridge"].handle_batch(
        [Message(body=body, message_id=message_id, attributes=attributes)]
    )
    if isinstance(result, BridgeFailure):
        failure = result
        parkable = failure.category == UNAVAILABLE and state.get("events_queue_url")
        if parkable and not state["api"].health() and _park(state, body, message_id, attributes, failure):
            return
        if not failure.permanent or not state["dlq_url"]:
            raise failure  # Lambda retries asynchronous invocations, then uses the function's DLQ
        sqs_attributes = {
            name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
        }
        if not _dead_letter(state, body, sqs_attributes, message_id, failure, 1):
            raise failure


def _park(
    state: dict[str, Any],
    body: str,
    message_id: str | None,
    attributes: dict[str, str],
    failure: BridgeFailure,
) -> bool:
    """Put an event of an asynchronous invocation into the events queue while Prefect is down; the
    queue path then keeps it until the API answers. False when the send failed."""
    state["unavailable_since"] = state.get("unavailable_since") or time.time()
    sqs_attributes = {
        name: {"DataType": "String", "StringValue": value} for name, value in attributes.items() if value
    }
    if message_id:
        sqs_attributes.setdefault(ORIGINAL_ID, {"DataType": "String", "StringValue": message_id})
    if len(sqs_attributes) > dead_letter.MAX_ATTRIBUTES:
        return False
    try:
        state["sqs"].send_message(
            QueueUrl=state["events_queue_url"],
            MessageBody=body,
            MessageAttributes=sqs_attributes,
            DelaySeconds=HOLD_BASE_DELAY,
        )
    except Exception as error:
        logger.error("could not park %s in the events queue: %s", message_id, error)
        return False
    logger.error(
        "%s: the Prefect API %s does not answer (%s); event %s parked in the events queue, not dead-lettered",
        ALERT,
        state["api"].api_url,
        failure.reason,
        message_id or "(no id)",
    )
    return True


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
