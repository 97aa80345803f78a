"""The long-running front end: consume the events queue and hand every message to the routing core.

    python -m interlinked.bridge [--queue-url URL] [--routes FILE] [--status-file PATH]

Started by ``interlinked up`` locally; on AWS the same command runs as an ECS service (or the
Lambda front end is used instead). Configuration comes from the environment: the queue from
``INTERLINKED_EVENTS_QUEUE_URL`` (or the name ``INTERLINKED_EVENTS_QUEUE``), its dead-letter queue
and max receives from the queue's own redrive policy, Prefect from ``PREFECT_API_URL`` (+
``PREFECT_API_KEY`` / ``PREFECT_API_AUTH_STRING``), AWS from boto3's own configuration.

Per message: route it, create the flow run with its idempotency key, record the Prefect event,
then delete it. Up to ``concurrency`` batches (of up to 10 messages each) are in flight at once,
each carried by a thread of its own from receive to delete (``--concurrency``, the setting
``bridge_concurrency``, default 16; 1 is a single serial loop), of which at most ``prefect_calls``
(the setting ``bridge_prefect_calls``, default 4) are at the Prefect server at once: the server
makes runs on one core, and calls queued there beyond the client's timeout would be sent again.
Batches waiting for a call go together in the next one (:class:`SharedCalls`, up to
``COMBINED_MESSAGES``): one bulk creation and one events call for all of them. That is safe because a message is
deleted only by the thread that saw its run created, and two batches holding the same event ask
Prefect for the same idempotency key (the server keeps one run). Each bulk call sends its runs
in key order, so two concurrent calls on PostgreSQL take their key locks in the same order. The
keys of events done lately are remembered (``REMEMBERED_KEYS``): a duplicate of one is deleted
without a Prefect call. While a batch works on its messages they stay invisible: a thread extends
them by the queue's visibility timeout (``ChangeMessageVisibilityBatch``) until the batch deletes
them or sets their retry delay, so a batch held up at a busy server is never delivered again
meanwhile (nor moved to the DLQ by the queue's redrive, without a reason). A malformed message
(its body cannot be read, however often it is received) goes to the dead-letter queue with the
reason on its first receive. Any other failure leaves the message in the queue, back in view after
a short delay (``--retry-seconds`` for messages that cannot succeed, exponential for transient
trouble); on the queue's last allowed receive a message that cannot succeed (unroutable, refused
by Prefect) is moved to the dead-letter queue with the reason attached. One that failed only because
Prefect was busy or down is sent again as a new message instead (same body and identity; at most
``max_requeues`` times, then it too is dead-lettered with its reason). While the Prefect API is
unreachable no message is received at all (one thread probes ``/health``, the others wait for it),
and after a 503 every thread pauses briefly (back-pressure on a busy server). SIGTERM stops the
receiving; batches already received are finished (runs created, messages deleted) before exit.

A status file (``{state_dir}/bridge-status.json``) is rewritten every couple of seconds through
:mod:`blocks.status` (``ready``, ``pid``, ``process_started``, ``heartbeat``, plus ``stopping``,
``concurrency``, ``batches_in_flight``, ``peak_batches_in_flight``, ``batches_carried_along``, ``visibility_timeout``,
``messages_held``, ``visibility_extensions`` and the counters); ``blocks.status.service_ready`` reads it (the local stack's readiness check).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.config import Config

from blocks.clients import aws_client
from blocks.queues import queue_redrive
from blocks.status import heartbeat, write_status
from interlinked.bridge import dead_letter
from interlinked.bridge.core import (
    MALFORMED,
    PERMANENT,
    UNAVAILABLE,
    Bridge,
    BridgeFailure,
    Message,
    Stats,
    dead_letter_event,
)
from interlinked.bridge.prefect_api import PrefectApi, auth_header_from_env
from interlinked.bridge.routes import load_routes

logger = logging.getLogger("interlinked.bridge")
MAX_VISIBILITY_DELAY = 120
# A batch's messages are kept invisible for at most this long (then SQS may deliver them again; their
# idempotency keys make that harmless). Batches end long before: every Prefect call has a timeout.
MAX_HOLD_SECONDS = 900
REMEMBERED_KEYS = 20_000  # events done lately, whose duplicates need no Prefect call
COMBINED_MESSAGES = 50  # messages of waiting batches that one Prefect call carries at most
BUSY_PAUSE_SECONDS = 2.0
REQUEUES = "interlinked.requeues"
ORIGINAL_ID = "interlinked.message-id"  # keeps a requeued message's identity (its original id)


@dataclass
class ConsumerConfig:
    queue_url: str
    dead_letter_url: str | None
    max_receives: int
    prefect_api_url: str
    routes_file: str | None = None
    status_file: Path | None = None
    concurrency: int = 16  # batches in flight at once (threads, each receive → route → delete)
    prefect_calls: int = 4  # of those, batches at the Prefect server at once
    wait_seconds: int = 5
    retry_seconds: int = 2
    max_requeues: int = 20
    visibility_timeout: int = 30  # the queue's; a received message is kept invisible in steps of it


class VisibilityKeeper:
    """Keeps the messages a batch works on invisible until the batch lets them go.

    A batch can take longer than the queue's visibility timeout (a busy Prefect server, many batches
    queued at it); SQS would then deliver its messages again, each delivery counting towards the
    redrive's ``maxReceiveCount``, and move them to the dead-letter queue without the bridge's reason.
    So one thread extends every held message by the visibility timeout once a third of it has passed
    (``ChangeMessageVisibilityBatch``, 10 a call), until the batch deletes it or sets its retry delay,
    or it has been held :data:`MAX_HOLD_SECONDS`.
    """

    def __init__(self, sqs: Any, queue_url: str, timeout: int, *, max_hold: float = MAX_HOLD_SECONDS):
        self.sqs = sqs
        self.queue_url = queue_url
        self.timeout = max(1, int(timeout))
        self.max_hold = max_hold
        self.extended = 0  # extensions made (messages)
        self._lock = threading.Lock()
        self._held: dict[str, list[float]] = {}  # receipt handle → [held since, last extended]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bridge-visibility", daemon=True)

    def hold(self, receipts: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for receipt in receipts:
                self._held[receipt] = [now, now]

    def release(self, receipts: list[str]) -> None:
        with self._lock:
            for receipt in receipts:
                self._held.pop(receipt, None)

    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.timeout / 6):
            try:
                self.extend_due()
            except Exception:  # never die: the worst outcome is a redelivery
                logger.exception("extending the visibility of held messages failed")

    def extend_due(self) -> int:
        """Extend every message held for a third of the timeout since its last extension."""
        now = time.monotonic()
        with self._lock:
            due = [
                receipt
                for receipt, (since, last) in self._held.items()
                if now - last >= self.timeout / 3 and now - since < self.max_hold
            ]
        for start in range(0, len(due), 10):
            chunk = due[start : start + 10]
            entries = [
                {"Id": str(index), "ReceiptHandle": receipt, "VisibilityTimeout": self.timeout}
                for index, receipt in enumerate(chunk)
            ]
            try:
                reply = self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
            except Exception as error:
                logger.warning("could not extend the visibility of %d held messages: %s", len(chunk), error)
                continue
            failed = {item["Id"] for item in reply.get("Failed", [])}
            with self._lock:
                for index, receipt in enumerate(chunk):
                    if str(index) not in failed and receipt in self._held:
                        self._held[receipt][1] = now
                        self.extended += 1
            # A failure here is a message the batch deleted meanwhile (its handle is gone): harmless.
        return len(due)


class _Waiting:
    """A batch's messages waiting for a Prefect call, and what that call gave them."""

    def __init__(self, messages: list[Message]):
        self.messages = messages
        self.taken = False  # a call carries them
        self.done = False
        self.results: list[Any] = []
        self.error: BaseException | None = None

    def outcome(self) -> list[Any]:
        if self.error is not None:
            raise self.error
        return self.results


class SharedCalls:
    """At most ``slots`` calls at the Prefect server at once; batches waiting for one go together.

    A batch that finds every slot taken waits here. The next batch to get a slot carries every
    waiting batch along (up to ``limit`` messages in all) in one call to the routing core, which
    makes one bulk run creation per deployment and one events call for all of them, and hands each
    batch its own results (or the call's error). The Prefect server creates runs on one core and
    spends about as much on a call as on half a dozen runs: fewer, bigger calls leave it more for
    runs. A batch that gets a slot at once goes alone, as before.
    """

    def __init__(self, slots: int, limit: int):
        self._cond = threading.Condition()
        self._free = max(1, slots)
        self._waiting: list[_Waiting] = []
        self.limit = max(1, limit)
        self.carried = 0  # batches that went in another batch's call

    def call(self, messages: list[Message], handle: Any) -> list[Any]:
        """``handle(messages)`` for this batch, maybe in one call with other waiting batches."""
        mine = _Waiting(messages)
        with self._cond:
            self._waiting.append(mine)
            while not mine.taken and self._free == 0:
                self._cond.wait()
            if mine.taken:  # another batch's call carries this one
                while not mine.done:
                    self._cond.wait()
                return mine.outcome()
            self._free -= 1
            self._waiting.remove(mine)
            group, size = [mine], len(messages)
            while self._waiting and size + len(self._waiting[0].messages) <= self.limit:
                other = self._waiting.pop(0)
                group.append(other)
                size += len(other.messages)
                self.carried += 1
            for waiting in group:
                waiting.taken = True
        results: list[Any] = []
        error: BaseException | None = None
        try:
            results = handle([message for waiting in group for message in waiting.messages])
        except BaseException as raised:  # each batch gets it, as its own call would have
            error = raised
        with self._cond:
            start = 0
            for waiting in group:
                waiting.results = results[start : start + len(waiting.messages)] if error is None else []
                waiting.error = error
                waiting.done = True
                start += len(waiting.messages)
            self._free += 1
            self._cond.notify_all()
        return mine.outcome()


class Consumer:
    def __init__(self, config: ConsumerConfig, *, sqs=None, api: PrefectApi | None = None):
        self.config = config
        self.sqs = sqs or aws_client("sqs", use_block=False)
        self.api = api or PrefectApi(config.prefect_api_url, authorization=auth_header_from_env())
        self.table = load_routes(config.routes_file)
        self.stats = Stats()
        self.bridge = Bridge(self.table, self.api, stats=self.stats, remember=REMEMBERED_KEYS)
        self.keeper = VisibilityKeeper(self.sqs, config.queue_url, config.visibility_timeout)
        self.calls = SharedCalls(config.prefect_calls, COMBINED_MESSAGES)
        self.stop_event = threading.Event()
        self.api_down = threading.Event()
        self._probing = threading.Lock()  # held by the one thread that probes a down API
        self._busy_lock = threading.Lock()
        self.busy_until = 0.0
        self._flight_lock = threading.Lock()
        self.in_flight = 0  # batches received and not yet finished
        self.peak_in_flight = 0
        self.started_at = datetime.now(UTC).isoformat()

    # -- loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        """Consume until :meth:`stop`; batches already received are finished before it returns."""
        logger.info(
            "event bridge consuming %s (dead letters: %s after %d receives; routes: %s; Prefect: %s; "
            "%d batches in flight at most)",
            self.config.queue_url,
            self.config.dead_letter_url or "the queue's redrive",
            self.config.max_receives,
            self.table.source,
            self.config.prefect_api_url,
            self.config.concurrency,
        )
        heartbeat = threading.Thread(target=self._heartbeat, name="bridge-heartbeat", daemon=True)
        heartbeat.start()
        self.keeper.start()
        workers = [
            threading.Thread(target=self._poll, name=f"bridge-batch-{index}", daemon=True)
            for index in range(max(1, self.config.concurrency))
        ]
        for worker in workers:
            worker.start()
        try:
            while not self.stop_event.wait(0.5):
                if not any(worker.is_alive() for worker in workers):
                    logger.error("every batch thread stopped; exiting")
                    break
        finally:
            self.stop_event.set()
            # A thread in a long poll returns within wait_seconds; one in a batch finishes it (its
            # Prefect calls are bounded by the client's timeout and retries).
            deadline = time.monotonic() + self.config.wait_seconds + 60
            for worker in workers:
                worker.join(timeout=max(0.1, deadline - time.monotonic()))
            unfinished = sum(worker.is_alive() for worker in workers)
            self.keeper.stop()
            if unfinished:  # their messages stay in the queue and come back after the visibility timeout
                logger.warning(
                    "%d batch(es) still in flight at exit; SQS will deliver them again", unfinished
                )
            self._write_status()
            logger.info("event bridge stopped: %s", json.dumps(self.stats.snapshot()))

    def stop(self, *_: Any) -> None:
        self.stop_event.set()

    def _poll(self) -> None:
        """One batch thread: receive up to 10 messages, carry them out, delete them; again."""
        while not self.stop_event.is_set():
            if self.api_down.is_set():
                self._wait_for_api()
                continue
            with self._busy_lock:
                pause = self.busy_until - time.monotonic()
            if pause > 0:
                self.stop_event.wait(pause)
                continue
            try:
                messages = self.sqs.receive_message(
                    QueueUrl=self.config.queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=self.config.wait_seconds,
                    VisibilityTimeout=self.keeper.timeout,
                    MessageAttributeNames=["All"],
                    MessageSystemAttributeNames=["ApproximateReceiveCount", "MessageDeduplicationId"],
                ).get("Messages", [])
            except Exception as error:  # SQS unreachable: keep trying, never die
                logger.warning("receiving from %s failed: %s", self.config.queue_url, error)
                self.stop_event.wait(2)
                continue
            if not messages:
                continue
            # Received messages are always carried out, even once stopping: they would otherwise be
            # invisible until their visibility timeout ends.
            receipts = [message["ReceiptHandle"] for message in messages]
            self.keeper.hold(receipts)
            with self._flight_lock:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                self.process_batch(messages)
            finally:
                self.keeper.release(receipts)  # (process_batch released those it let go already)
                with self._flight_lock:
                    self.in_flight -= 1

    def _wait_for_api(self) -> None:
        """Wait until the Prefect API answers again; one thread probes, the others wait for it."""
        if not self._probing.acquire(blocking=False):
            while self.api_down.is_set() and not self.stop_event.wait(0.5):
                pass
            return
        try:
            if not self.api_down.is_set():
                return
            logger.warning(
                "Prefect API unavailable: pausing receives until %s/health answers", self.api.api_url
            )
            while not self.stop_event.is_set():
                if self.api.health():
                    logger.info("Prefect API is back")
                    self.api_down.clear()
                    return
                self.stop_event.wait(2)
        finally:
            self._probing.release()

    def process_batch(self, messages: list[dict[str, Any]]) -> None:
        """Route a received batch (one bulk run creation per deployment), then delete what is done."""
        self.stats.add("received", len(messages))
        incoming = [
            Message(
                body=message["Body"],
                message_id=message.get("MessageId"),
                attributes=dead_letter.plain_attributes(message.get("MessageAttributes")),
                dedup_id=message.get("Attributes", {}).get("MessageDeduplicationId"),
            )
            for message in messages
        ]
        try:
            # Waiting batches (their messages kept invisible) go together in the next free call.
            results = self.calls.call(incoming, self.bridge.handle_batch)
        except Exception as error:  # a bug must not stop the bridge; the messages are retried
            logger.exception("unexpected error on a batch of %d messages", len(messages))
            results = [BridgeFailure(UNAVAILABLE, f"internal error: {type(error).__name__}: {error}")] * len(
                messages
            )
        done = []
        letters: list[dict[str, Any]] = []  # the batch's dead-letter events, recorded in one call
        for index, (message, result) in enumerate(zip(messages, results, strict=True)):
            if isinstance(result, BridgeFailure):
                receive_count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
                if not self._failed(message, result, receive_count, events=letters):
                    continue
            done.append({"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]})
        if letters:
            self._emit_dead_letter_events(letters)
        # Let go of them before deleting: an extension must not race the delete of its message.
        self.keeper.release([entry["ReceiptHandle"] for entry in done])
        if done:
            try:
                reply = self.sqs.delete_message_batch(QueueUrl=self.config.queue_url, Entries=done)
                for failure in reply.get("Failed", []):
                    # Harmless: the message comes back and its key finds the existing run.
                    logger.warning("could not delete a handled message: %s", failure)
            except Exception as error:
                logger.warning(
                    "could not delete %d handled messages (they will be seen again): %s", len(done), error
                )

    def process_message(self, message: dict[str, Any]) -> bool:
        """Handle one message on its own; True when it may be deleted (done, ignored or dead-lettered)."""
        receive_count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        incoming = Message(
            body=message["Body"],
            message_id=message.get("MessageId"),
            attributes=dead_letter.plain_attributes(message.get("MessageAttributes")),
            dedup_id=message.get("Attributes", {}).get("MessageDeduplicationId"),
        )
        try:
            [result] = self.bridge.handle_batch([incoming])
        except Exception as error:
            logger.exception("unexpected error on message %s", message.get("MessageId"))
            result = BridgeFailure(UNAVAILABLE, f"internal error: {type(error).__name__}: {error}")
        if isinstance(result, BridgeFailure):
            return self._failed(message, result, receive_count)
        return True

    def _failed(
        self,
        message: dict[str, Any],
        failure: BridgeFailure,
        receive_count: int,
        *,
        events: list[dict[str, Any]] | None = None,
    ) -> bool:
        message_id = message.get("MessageId")
        if failure.category == UNAVAILABLE:
            if "unreachable" in failure.reason:
                self.api_down.set()
            else:  # busy (503/429) or erroring: ease off for a moment
                with self._busy_lock:
                    self.busy_until = max(self.busy_until, time.monotonic() + BUSY_PAUSE_SECONDS)
        if failure.category == MALFORMED and self.config.dead_letter_url:
            # Its body can never be read, however often it is received: no point in waiting.
            return self._dead_letter(message, failure, receive_count, events=events)
        if receive_count >= self.config.max_receives:
            # Prefect being busy or down is no reason to give up on an event: start it over as a
            # new message (same body, same identity), a bounded number of times.
            if failure.category == UNAVAILABLE and self._requeue(message, failure):
                return True
            if self.config.dead_letter_url:
                return self._dead_letter(message, failure, receive_count, events=events)
        if failure.category in PERMANENT:
            delay = self.config.retry_seconds
        else:
            delay = min(MAX_VISIBILITY_DELAY, self.config.retry_seconds * 2 ** max(0, receive_count - 1))
        self.stats.add("retried")
        logger.warning(
            "message %s failed (receive %d of %d, %s): %s — back in %d s",
            message_id,
            receive_count,
            self.config.max_receives,
            failure.category,
            failure.reason,
            delay,
        )
        self.keeper.release([message["ReceiptHandle"]])  # back in view after `delay`, not extended
        try:
            self.sqs.change_message_visibility(
                QueueUrl=self.config.queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=delay,
            )
        except Exception as error:
            logger.debug("could not shorten the visibility of %s: %s", message_id, error)
        return False

    def _requeue(self, message: dict[str, Any], failure: BridgeFailure) -> bool:
        attributes = dict(message.get("MessageAttributes") or {})
        plain = dead_letter.plain_attributes(attributes)
        requeues = int(plain.get(REQUEUES, "0"))
        if requeues >= self.config.max_requeues or self.config.queue_url.endswith(".fifo"):
            return False
        attributes[REQUEUES] = {"DataType": "Number", "StringValue": str(requeues + 1)}
        attributes.setdefault(
            ORIGINAL_ID, {"DataType": "String", "StringValue": message.get("MessageId") or "-"}
        )
        if len(attributes) > dead_letter.MAX_ATTRIBUTES:
            return False
        try:
            self.sqs.send_message(
                QueueUrl=self.config.queue_url,
                MessageBody=message["Body"],
                MessageAttributes=attributes,
                DelaySeconds=min(900, self.config.retry_seconds * 2 ** min(requeues, 8)),
            )
        except Exception as error:
            logger.warning("could not requeue %s (it stays): %s", message.get("MessageId"), error)
            return False
        self.stats.add("requeued")
        logger.warning(
            "message %s: Prefect still unavailable after %d receives (%s); requeued (%d of %d)",
            message.get("MessageId"),
            self.config.max_receives,
            failure.reason,
            requeues + 1,
            self.config.max_requeues,
        )
        return True

    def _dead_letter(
        self,
        message: dict[str, Any],
        failure: BridgeFailure,
        receive_count: int,
        *,
        events: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Send it to the dead-letter queue with the reason; its Prefect event is recorded now, or
        appended to ``events`` for the caller to record with others."""
        message_id = message.get("MessageId")
        params = dead_letter.dead_letter_message(
            queue_url=self.config.dead_letter_url,
            body=message["Body"],
            attributes=message.get("MessageAttributes"),
            reason=failure.reason,
            category=failure.category,
            source=self.config.queue_url,
            message_id=message_id,
            receive_count=receive_count,
        )
        try:
            self.sqs.send_message(**params)
        except Exception as error:
            logger.error("could not dead-letter %s (kept in the queue): %s", message_id, error)
            return False
        self.stats.add("dead_lettered")
        self.stats.add(f"dead_lettered_{failure.category}")
        logger.error(
            "dead-lettered message %s after %d receives: %s", message_id, receive_count, failure.reason
        )
        event = dead_letter_event(message_id, failure.reason, failure.category, self.config.queue_url)
        if events is not None:
            events.append(event)
        else:
            self._emit_dead_letter_events([event])
        return True

    def _emit_dead_letter_events(self, events: list[dict[str, Any]]) -> None:
        try:
            self.api.emit_events(events)
        except Exception as error:  # the dead letters themselves hold the reason
            logger.debug("could not emit %d dead-letter event(s): %s", len(events), error)

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        stopping = self.stop_event.is_set()
        with self._flight_lock:
            in_flight, peak = self.in_flight, self.peak_in_flight
        return {
            **heartbeat(ready=not stopping),
            "started_at": self.started_at,
            "queue_url": self.config.queue_url,
            "dead_letter_url": self.config.dead_letter_url,
            "max_receives": self.config.max_receives,
            "routes": self.table.source,
            "prefect_api_url": self.config.prefect_api_url,
            "prefect_api_available": not self.api_down.is_set(),
            "stopping": stopping,
            "concurrency": self.config.concurrency,
            "prefect_calls": self.config.prefect_calls,
            "batches_in_flight": in_flight,
            "peak_batches_in_flight": peak,
            "batches_carried_along": self.calls.carried,
            "visibility_timeout": self.keeper.timeout,
            "messages_held": self.keeper.held(),
            "visibility_extensions": self.keeper.extended,
            "counts": self.stats.snapshot(),
        }

    def _write_status(self) -> None:
        path = self.config.status_file
        if path is None:
            return
        try:
            write_status(path, self.status())
        except OSError as error:
            logger.debug("could not write the status file %s: %s", path, error)

    def _heartbeat(self) -> None:
        while True:
            self._write_status()
            if self.stop_event.wait(2):
                return


def config_from_env(args: argparse.Namespace | None = None) -> tuple[ConsumerConfig, Any]:
    from interlinked.settings import get_settings

    settings = get_settings()
    region = os.environ.get("AWS_REGION") or settings.region
    concurrency = getattr(args, "concurrency", None)
    if concurrency is None:
        concurrency = settings.bridge_concurrency
    if concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, got {concurrency}")
    # One shared client; its connection pool holds a connection per batch thread (+ the heartbeat's).
    sqs = aws_client(
        "sqs",
        use_block=False,
        config=Config(region_name=region, max_pool_connections=max(10, concurrency + 2)),
    )
    queue_url = (
        getattr(args, "queue_url", None)
        or os.environ.get("INTERLINKED_EVENTS_QUEUE_URL")
        or sqs.get_queue_url(QueueName=settings.events_queue)["QueueUrl"]
    )
    redrive = queue_redrive(sqs, queue_url)
    visibility = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"])
    visibility_timeout = int(visibility.get("Attributes", {}).get("VisibilityTimeout", 30))
    dead_letter_url = os.environ.get("BRIDGE_DLQ_URL") or redrive.dead_letter_queue_url
    status_file = getattr(args, "status_file", None) or os.environ.get("INTERLINKED_BRIDGE_STATUS_FILE")
    config = ConsumerConfig(
        queue_url=queue_url,
        dead_letter_url=dead_letter_url,
        max_receives=redrive.max_receive_count or settings.max_receive_count,
        prefect_api_url=os.environ.get("PREFECT_API_URL") or settings.prefect_api_url,
        routes_file=getattr(args, "routes", None),
        status_file=Path(status_file) if status_file else settings.state_dir / "bridge-status.json",
        concurrency=concurrency,
        prefect_calls=settings.bridge_prefect_calls,
        visibility_timeout=visibility_timeout,
        wait_seconds=int(os.environ.get("INTERLINKED_BRIDGE_WAIT_SECONDS", 5)),
        retry_seconds=int(
            getattr(args, "retry_seconds", None) or os.environ.get("INTERLINKED_BRIDGE_RETRY_SECONDS", 2)
        ),
    )
    return config, sqs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m interlinked.bridge", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--queue-url", help="events queue (default: INTERLINKED_EVENTS_QUEUE_URL or its name)"
    )
    parser.add_argument(
        "--routes", help="routes file (default: INTERLINKED_BRIDGE_ROUTES or the built-in one)"
    )
    parser.add_argument(
        "--status-file", help="status/heartbeat file (default: {state_dir}/bridge-status.json)"
    )
    parser.add_argument(
        "--concurrency",
        "--pollers",
        type=int,
        help="batches in flight at once (default: INTERLINKED_BRIDGE_CONCURRENCY, 16)",
    )
    parser.add_argument(
        "--retry-seconds", type=int, help="delay before a failed message is retried (default 2)"
    )
    parser.add_argument("--log-level", default=os.environ.get("INTERLINKED_BRIDGE_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config, sqs = config_from_env(args)
        consumer = Consumer(config, sqs=sqs)
    except Exception as error:
        logger.error("the event bridge cannot start: %s: %s", type(error).__name__, error)
        return 3
    signal.signal(signal.SIGTERM, consumer.stop)
    signal.signal(signal.SIGINT, consumer.stop)
    consumer.run()
    return 0
