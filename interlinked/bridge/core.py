"""The routing core: an incoming event → "run deployment X with parameters P, idempotency key K".

Shared by both front ends (the SQS consumer, :mod:`interlinked.bridge.consumer`, and the Lambda
handler, :mod:`interlinked.bridge.lambda_handler`); stdlib + the stdlib Prefect client only.

- :func:`decide` is pure: a record and the route table give an :class:`Decision` (ignore, dispatch,
  emit) or raise :class:`BridgeFailure` (malformed / unroutable).
- :class:`Bridge` carries decisions out: creates the flow run with the idempotency key (a repeated
  key returns the existing run, so a duplicate delivery creates nothing), then emits one Prefect
  event per record acted on (its id derived from the key, so a re-emission is deduplicated by the
  server). Only then may the front end delete the message.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from interlinked.bridge.events import (
    MalformedEvent,
    MessageRecord,
    Record,
    S3Record,
    TestEventRecord,
    parse_message,
)
from interlinked.bridge.prefect_api import BulkUnsupported, PrefectApi, PrefectRejected, PrefectUnavailable
from interlinked.bridge.routes import Route, RouteTable, render

logger = logging.getLogger("interlinked.bridge")

# Namespace of the ids derived from idempotency keys (job ids, Prefect event ids).
NAMESPACE = uuid.UUID("6f1c1f7e-3c0a-4d0e-9a53-2f5d3c0b7a11")
MAX_KEY_LENGTH = 250
BULK_LIMIT = 100  # the server's limit per bulk call
# Tries of a bulk call for runs the server could not create (busy, e.g. SQLite locked): ~3.5 s.
BUSY_ATTEMPTS = 6
# Per-run errors of the bulk endpoint that mean "this run is invalid" (prefect/server/api/deployments.py).
_REFUSALS = (
    "Parameter validation failed",
    "Parameter schema enforcement",
    "Invalid schema",
    "Cannot create flow run in work queue",
    "Error hydrating",
    "Validation failed for field",
)

# Failure categories: the first three cannot succeed on a retry of the same message.
MALFORMED, UNROUTABLE, REJECTED, UNAVAILABLE = "malformed", "unroutable", "rejected", "unavailable"
PERMANENT = {MALFORMED, UNROUTABLE, REJECTED}

S3_CREATED_EVENT = "interlinked.s3.object-created"
MESSAGE_EVENT = "interlinked.message.received"
DEAD_LETTER_EVENT = "interlinked.bridge.dead-lettered"


class BridgeFailure(Exception):
    """A message could not be handled; ``category`` says whether retrying can help."""

    def __init__(self, category: str, reason: str):
        super().__init__(reason)
        self.category = category
        self.reason = reason

    @property
    def permanent(self) -> bool:
        return self.category in PERMANENT


@dataclass
class Decision:
    action: str  # "ignore" | "dispatch" | "emit"
    record: Record
    reason: str | None = None  # why it is ignored
    code: str | None = None  # the same, as a counter name
    route: Route | None = None
    deployment: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    flow_run_name: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Message:
    """One incoming message, whatever the front end."""

    body: str
    message_id: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    dedup_id: str | None = None


@dataclass
class Outcome:
    """What happened to one record."""

    decision: Decision
    flow_run_id: str | None = None
    created: bool | None = None  # False: the run already existed (a duplicate delivery)

    @property
    def status(self) -> str:
        if self.decision.action == "ignore":
            return "ignored"
        if self.decision.action == "emit":
            return "emitted"
        if self.created is None:
            return "dispatched"  # created in bulk: new, or found by its key
        return "created" if self.created else "duplicate"


def idempotency_key(route: Route, record: S3Record | MessageRecord) -> str:
    key = f"{route.name}:{record.identity}"
    if len(key) > MAX_KEY_LENGTH:
        key = f"{route.name}:sha256:{hashlib.sha256(record.identity.encode()).hexdigest()}"
    return key


def derived_id(key: str, purpose: str) -> str:
    """A stable UUID for ``key`` (the same event always maps to the same job id / event id)."""
    return str(uuid.uuid5(NAMESPACE, f"{purpose}:{key}"))


def decide(table: RouteTable, record: Record) -> Decision:
    """Route one record (pure). Raises :class:`BridgeFailure` for an unroutable message."""
    if isinstance(record, TestEventRecord):
        return Decision("ignore", record, reason="s3:TestEvent", code="test-event")
    if isinstance(record, S3Record):
        rule = table.ignored(record.bucket, record.key)
        if rule is not None:
            return Decision("ignore", record, reason=f"{rule.name}: {rule.reason}", code=rule.name)
        if not record.created:
            return Decision(
                "ignore",
                record,
                reason=f"not an object-created event ({record.event_name})",
                code="not-created",
            )
        found = table.route_for_s3(record.bucket, record.key, record.event_name)
        if found is None:
            return Decision("ignore", record, reason="outside every route", code="no-route")
        route, groups = found
        variables: dict[str, Any] = {
            "bucket": record.bucket,
            "key": record.key,
            "key_name": PurePosixPath(record.key).name,
            "etag": record.etag,
            "version_id": record.version_id,
            "sequencer": record.sequencer,
            "size": record.size,
            "event_name": record.event_name,
            "event_time": record.event_time,
            "writer": record.writer,
            **groups,
        }
    else:
        route = table.route_for_message(record.type)
        if route is None:
            known = sorted({r.message_type for r in table.routes if r.message_type})
            raise BridgeFailure(
                UNROUTABLE, f"no route for message type {record.type!r} (routed types: {known})"
            )
        variables = {
            "type": record.type,
            "body": record.body,
            "payload": record.payload,
            "message_id": record.message_id,
        }
    key = idempotency_key(route, record)
    variables.update(
        table.variables,
        idempotency_key=key,
        job_id=derived_id(key, "job"),
        shape=record.shape,
        route=route.name,
    )
    try:
        parameters = render(route.parameters, variables)
        tags = [str(tag) for tag in render(list(route.tags), variables)]
        name = render(route.flow_run_name, variables) if route.flow_run_name else None
    except (KeyError, ValueError, IndexError) as error:  # checked at load; only odd values get here
        raise BridgeFailure(MALFORMED, f"route {route.name!r}: cannot fill its templates: {error}") from None
    return Decision(
        route.action,
        record,
        route=route,
        deployment=route.deployment,
        parameters=parameters,
        tags=tags,
        flow_run_name=str(name)[:200] if name else None,
        idempotency_key=key,
    )


def prefect_event(outcome: Outcome, *, deployment_id: str | None = None) -> dict[str, Any]:
    """The Prefect event announcing what the bridge did with one record."""
    decision = outcome.decision
    record = decision.record
    assert decision.route is not None and decision.idempotency_key is not None
    labels = {
        "interlinked.route": decision.route.name,
        "interlinked.action": decision.action,
        "interlinked.shape": record.shape,
        "interlinked.idempotency-key": decision.idempotency_key,
    }
    if isinstance(record, S3Record):
        name = S3_CREATED_EVENT
        resource = {
            "prefect.resource.id": f"s3://{record.bucket}/{record.key}",
            "prefect.resource.name": record.key,
            "s3.bucket": record.bucket,
            "s3.key": record.key,
            "s3.etag": record.etag or "",
            "s3.version-id": record.version_id or "",
            "s3.writer": record.writer or "",
            **labels,
        }
    else:
        assert isinstance(record, MessageRecord)
        name = MESSAGE_EVENT
        resource = {
            "prefect.resource.id": f"interlinked.message.{record.dedup_id or record.message_id or 'unknown'}",
            "prefect.resource.name": record.type,
            "interlinked.message-type": record.type,
            **labels,
        }
    related = []
    if outcome.flow_run_id:
        related.append(
            {
                "prefect.resource.id": f"prefect.flow-run.{outcome.flow_run_id}",
                "prefect.resource.role": "flow-run",
            }
        )
    if deployment_id:
        related.append(
            {
                "prefect.resource.id": f"prefect.deployment.{deployment_id}",
                "prefect.resource.role": "deployment",
                "prefect.resource.name": decision.deployment or "",
            }
        )
    return {
        "id": derived_id(decision.idempotency_key, "event"),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": resource,
        "related": related,
        "payload": {
            "deployment": decision.deployment,
            "parameters": decision.parameters,
            "flow_run_id": outcome.flow_run_id,
            "created": outcome.created,
            "shape": record.shape,
        },
    }


def dead_letter_event(message_id: str | None, reason: str, category: str, source: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": DEAD_LETTER_EVENT,
        "resource": {
            "prefect.resource.id": f"interlinked.bridge.message.{message_id or 'unknown'}",
            "prefect.resource.name": "dead-lettered message",
            "interlinked.dlq.category": category,
        },
        "related": [],
        "payload": {"reason": reason, "category": category, "source": source},
    }


class Stats:
    """Thread-safe counters (what the consumer reports in its status file)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[name] += amount

    def add_ignored(self, code: str) -> None:
        with self._lock:
            self.counts["ignored"] += 1
            self.ignored[code] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self.counts, "ignored_by_reason": dict(self.ignored)}


class Bridge:
    """Carry out routing decisions against a Prefect API.

    ``remember``: how many idempotency keys of events done lately (run created or found, Prefect
    event recorded) to keep in memory with their run ids, least recently used dropped first. A
    duplicate of one of them is done at once, without asking Prefect again (it would return the same
    run and deduplicate the same event). 0 keeps none; the server's idempotency keys stay the
    guarantee either way.
    """

    def __init__(self, table: RouteTable, api: PrefectApi, *, stats: Stats | None = None, remember: int = 0):
        self.table = table
        self.api = api
        self.stats = stats or Stats()
        self.remember = remember
        self._done: OrderedDict[str, str] = OrderedDict()  # key → run id, most recent last
        self._done_lock = threading.Lock()

    def _known_run(self, key: str | None) -> str | None:
        if not self.remember or key is None:
            return None
        with self._done_lock:
            run = self._done.get(key)
            if run is not None:
                self._done.move_to_end(key)
            return run

    def _remember(self, outcomes: list[Outcome]) -> None:
        if not self.remember:
            return
        with self._done_lock:
            for outcome in outcomes:
                key = outcome.decision.idempotency_key
                if outcome.decision.action == "dispatch" and key and outcome.flow_run_id:
                    self._done[key] = outcome.flow_run_id
                    self._done.move_to_end(key)
            while len(self._done) > self.remember:
                self._done.popitem(last=False)

    def handle(
        self,
        body: str,
        *,
        message_id: str | None = None,
        attributes: dict[str, str] | None = None,
        dedup_id: str | None = None,
    ) -> list[Outcome]:
        """Handle one message. Returns the outcomes once every record is done (runs exist, events
        are recorded): only then may the message be deleted. Raises :class:`BridgeFailure`."""
        try:
            records = parse_message(body, message_id=message_id, attributes=attributes, dedup_id=dedup_id)
        except MalformedEvent as error:
            raise BridgeFailure(MALFORMED, str(error)) from None
        outcomes = [self._carry_out(decide(self.table, record)) for record in records]
        events = [event for outcome in outcomes if (event := self._event_for(outcome)) is not None]
        try:
            self.api.emit_events(events)
        except PrefectUnavailable as error:
            raise BridgeFailure(UNAVAILABLE, f"could not record the Prefect event: {error}") from None
        except PrefectRejected as error:
            raise BridgeFailure(REJECTED, f"Prefect refused the event: {error}") from None
        for outcome in outcomes:
            self._count(outcome, message_id)
        return outcomes

    def handle_batch(self, messages: list[Message]) -> list[list[Outcome] | BridgeFailure]:
        """Handle a batch of messages with one bulk call per deployment and one events call.

        Returns, per message, its outcomes (done: it may be deleted) or the :class:`BridgeFailure`
        that keeps it. A key repeated within the batch is sent once.
        """
        results: list[list[Outcome] | BridgeFailure] = []
        decisions: dict[int, list[Decision]] = {}
        for index, message in enumerate(messages):
            try:
                records = parse_message(
                    message.body,
                    message_id=message.message_id,
                    attributes=message.attributes,
                    dedup_id=message.dedup_id,
                )
                decisions[index] = [decide(self.table, record) for record in records]
                results.append([])
            except MalformedEvent as error:
                results.append(BridgeFailure(MALFORMED, str(error)))
            except BridgeFailure as failure:
                results.append(failure)

        # One request per idempotency key, grouped by deployment; none for a key done lately.
        known: dict[str, str] = {}
        wanted: dict[str, dict[str, Decision]] = {}
        for items in decisions.values():
            for decision in items:
                if decision.action != "dispatch":
                    continue
                run_id = self._known_run(decision.idempotency_key)
                if run_id is not None:
                    known[decision.idempotency_key] = run_id
                    continue
                wanted.setdefault(decision.deployment, {}).setdefault(decision.idempotency_key, decision)
        runs: dict[str, str | BridgeFailure] = {}  # key → run id, or why not
        for deployment, by_key in wanted.items():
            runs.update(self._create_many(deployment, list(by_key.values())))

        events: list[dict[str, Any]] = []
        pending: dict[int, list[Outcome]] = {}
        for index, items in decisions.items():
            outcomes = []
            fresh = []  # outcomes whose Prefect event is still to be recorded
            for decision in items:
                if decision.action == "dispatch" and decision.idempotency_key in known:
                    # Done lately (its run exists, its event is recorded): a duplicate delivery.
                    outcomes.append(
                        Outcome(decision, flow_run_id=known[decision.idempotency_key], created=False)
                    )
                    continue
                if decision.action == "dispatch":
                    run = runs[decision.idempotency_key]
                    if isinstance(run, BridgeFailure):
                        results[index] = run
                        break
                    outcomes.append(Outcome(decision, flow_run_id=run, created=None))
                else:
                    outcomes.append(Outcome(decision))
                fresh.append(outcomes[-1])
            else:
                pending[index] = outcomes
                events.extend(event for outcome in fresh if (event := self._event_for(outcome)) is not None)
        try:
            self.api.emit_events(events)
        except (PrefectUnavailable, PrefectRejected) as error:
            failure = BridgeFailure(UNAVAILABLE, f"could not record the Prefect events: {error}")
            return [failure if index in pending else result for index, result in enumerate(results)]
        for index, outcomes in pending.items():
            results[index] = outcomes
            self._remember(outcomes)
            for outcome in outcomes:
                self._count(outcome, messages[index].message_id)
        return results

    def _create_many(self, deployment: str, decisions: list[Decision]) -> dict[str, str | BridgeFailure]:
        results: dict[str, str | BridgeFailure] = {}
        # In key order: two bulk calls in flight at once (the consumer's concurrent batches, or
        # Lambda invocations) that share keys then wait on each other in the same order in
        # PostgreSQL's unique index, never in a cycle (a deadlock would fail both transactions).
        decisions = sorted(decisions, key=lambda decision: decision.idempotency_key or "")
        try:
            for start in range(0, len(decisions), BULK_LIMIT):
                chunk = decisions[start : start + BULK_LIMIT]
                pending = chunk
                for attempt in range(1, BUSY_ATTEMPTS + 1):
                    replies = self.api.create_flow_runs_bulk(
                        deployment,
                        [
                            {
                                "parameters": d.parameters,
                                "idempotency_key": d.idempotency_key,
                                "tags": d.tags,
                                "name": d.flow_run_name,
                            }
                            for d in pending
                        ],
                    )
                    busy = []
                    for decision, reply in zip(pending, replies, strict=True):
                        if reply.get("status") == "CREATED" and reply.get("flow_run_id"):
                            results[decision.idempotency_key] = str(reply["flow_run_id"])
                            continue
                        error = str(reply.get("error"))
                        # Only a refusal of the run itself is final; anything else (e.g. "database
                        # is locked") is the server's trouble: those runs are sent again (their
                        # idempotency keys make that safe), then the message is retried later.
                        category = REJECTED if error.startswith(_REFUSALS) else UNAVAILABLE
                        if category == UNAVAILABLE and attempt < BUSY_ATTEMPTS:
                            busy.append(decision)
                            continue
                        verb = "refused" if category == REJECTED else "could not create"
                        results[decision.idempotency_key] = BridgeFailure(
                            category, f"Prefect {verb} the run of {deployment!r}: {error}"
                        )
                    if not busy:
                        break
                    time.sleep(min(1.0, 0.1 * 2**attempt))
                    pending = busy
        except BulkUnsupported:
            for decision in decisions:
                if decision.idempotency_key in results:
                    continue
                try:
                    results[decision.idempotency_key] = self._carry_out(decision).flow_run_id or ""
                except BridgeFailure as failure:
                    results[decision.idempotency_key] = failure
        except PrefectRejected as error:
            failure = BridgeFailure(REJECTED, str(error))
            results.update(
                {d.idempotency_key: failure for d in decisions if d.idempotency_key not in results}
            )
        except PrefectUnavailable as error:
            failure = BridgeFailure(UNAVAILABLE, str(error))
            results.update(
                {d.idempotency_key: failure for d in decisions if d.idempotency_key not in results}
            )
        return results

    def _carry_out(self, decision: Decision) -> Outcome:
        if decision.action != "dispatch":
            return Outcome(decision)
        assert decision.deployment is not None and decision.idempotency_key is not None
        try:
            run_id, created = self.api.create_flow_run(
                decision.deployment,
                parameters=decision.parameters,
                idempotency_key=decision.idempotency_key,
                tags=decision.tags,
                name=decision.flow_run_name,
            )
        except PrefectRejected as error:
            raise BridgeFailure(REJECTED, str(error)) from None
        except PrefectUnavailable as error:
            raise BridgeFailure(UNAVAILABLE, str(error)) from None
        return Outcome(decision, flow_run_id=run_id, created=created)

    def _event_for(self, outcome: Outcome) -> dict[str, Any] | None:
        if outcome.decision.action == "ignore":
            return None
        deployment_id = None
        if outcome.decision.deployment and outcome.flow_run_id:
            try:
                deployment_id = self.api.deployment_id(outcome.decision.deployment)
            except (PrefectUnavailable, PrefectRejected):
                deployment_id = None
        return prefect_event(outcome, deployment_id=deployment_id)

    def _count(self, outcome: Outcome, message_id: str | None) -> None:
        decision = outcome.decision
        status = outcome.status
        if status == "ignored":
            self.stats.add_ignored(decision.code or "ignored")
            logger.debug("ignored message %s: %s", message_id, decision.reason)
            return
        self.stats.add(status)
        logger.info(
            "%s %s → %s %s (key %s)",
            status,
            _describe(decision.record),
            decision.deployment or "(event only)",
            outcome.flow_run_id or "",
            decision.idempotency_key,
        )


def _describe(record: Record) -> str:
    if isinstance(record, S3Record):
        return f"s3://{record.bucket}/{record.key} [{record.shape}]"
    if isinstance(record, MessageRecord):
        return f"{record.type} message {record.dedup_id or record.message_id} [{record.shape}]"
    return "s3:TestEvent"
