"""The DynamoDB task store (PyAnamo's choice; moto locally, on-demand table on AWS).

One table, key ``pk`` (S) + ``sk`` (S), holds everything:

============================  ==========================  ==========================================
item                          key                         what
============================  ==========================  ==========================================
collection registry           ``COLLECTIONS`` / name      ``max_attempts``, ``created_at``
counter shard                 ``N#coll`` / ``00``..``07`` ``todo locked done failed`` (ADD deltas)
task                          ``T#coll#SS`` / task id     the task; ``SS`` = shard of the id (00..15)
dependency edge               ``D#dep-coll#dep-id`` /     "this task waits for that one", found from
                              ``coll/task-id``            the dependency when it fails (``blocked``)
downstream collections        ``DOWNSTREAM`` / coll       string set of collections depending on it
finished per minute           ``R#coll`` / ``MMMM#SS``    ``done failed`` (ADD) of minute ``MMMM`` (since the
                              (minute, shard)             epoch), ``expires_at`` for the table's TTL
============================  ==========================  ==========================================

Three *sparse* global secondary indexes, none keyed on the bare state (that would put every
claim of every collection on one hot partition, PyAnamo's mistake):

- ``open`` (``open_pk`` = ``coll#SS``, ``due``): todo and locked tasks, ``due`` being when the task
  becomes claimable (when it became todo; for a locked task its lease expiry). A claim queries a
  random shard for ``due <= now`` and so finds todo tasks *and* expired leases in one query.
  Priorities: a task of priority ``p`` != 0 sits in ``coll#pP#SS`` instead (its level's own 16
  shards); the registry item keeps the set of levels in use (``priorities``), and a claim walks
  the levels highest first, the shards of each in a random order — still no index keyed on the
  state, and a level only costs queries while a claim reaches it;
- ``leased`` (``lease_pk`` = ``coll#SS``, ``lease_expires``): locked tasks only; the oldest lease
  and ``reset --state locked``;
- ``failed`` (``failed_pk`` = coll, ``finished_at``): failed tasks only (few); failures with their
  reasons and ``retry-failed``.

The index is eventually consistent and only proposes candidates; the truth is the conditional
write on the task item. A claim is one ``UpdateItem`` whose condition accepts a todo task *or* an
expired lease with attempts left (``state = todo OR (state = locked AND lease_expires < now AND
attempts < max_attempts)``); it returns the old item (``ALL_OLD``), so the claimer knows which it
was, and on a lost condition the current one (``ReturnValuesOnConditionCheckFailure``). Every
later change is conditional on the fencing token (``lease_token``), which is the task's ``fence``
counter, incremented by every claim. The counter shards are moved by a second write right after
each state change (not a transaction: that costs double on DynamoDB and copies the whole table
per call on moto); a process killed between the two leaves a count off by one until
:meth:`DynamoTaskStore.recount`. Times come from the clients' clocks (DynamoDB has no server
time): lease lengths must dwarf clock skew (the default lease is 5 minutes).

Adding is validated first, then written in transactions of up to 100 items; duplicates (ids the
collection has) are skipped and counted. A crash in the middle of a large ``add`` leaves a prefix
written; running the same ``add`` again completes it (the rest are then counted as duplicates).

Terraform (``infra/terraform/modules/tasks_table``): the same table, ``PAY_PER_REQUEST``, SSE on,
point-in-time recovery on, the three GSIs below (:data:`INDEXES`), TTL on ``expires_at``;
``ensure()`` creates it locally only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from blocks.errors import error_code
from flows.collections.model import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DONE,
    FAILED,
    LOCKED,
    STATES,
    TODO,
    AddResult,
    CollectionStatus,
    LeaseLost,
    Task,
    TaskInputError,
    TaskSpec,
    UnknownCollection,
    check_collection,
    check_initial_state,
    check_task_id,
    split_ref,
)
from flows.collections.store import TaskStore, check_rewrite, first_of_each

#: Task shards per collection (fixed for a table: the shard is part of the task's key).
SHARDS = 16
#: Counter items per collection (spread the ADDs so no single item is hot).
COUNTER_SHARDS = 8
#: A todo task whose dependencies are not done yet is looked at again after this many seconds.
WAIT_BACKOFF = 5.0
#: ... and one with a failed dependency (blocked) after this many.
BLOCKED_BACKOFF = 60.0
_TRANSACTION_ITEMS = 100
#: Seconds a store reuses a collection's priority levels before reading them again.
PRIORITY_CACHE_SECONDS = 2.0
#: Per-minute finished counts are kept this long (seconds; the table's TTL removes them after).
RATE_TTL = 7 * 24 * 3600
#: Independent reads of one status call (a query per lease shard, per failed task's edges) run this
#: many at a time: the call then costs a few round trips, not one per query.
READ_CONCURRENCY = 16
_T = TypeVar("_T")
_R = TypeVar("_R")

INDEXES = {
    "open": ("open_pk", "due"),
    "leased": ("lease_pk", "lease_expires"),
    "failed": ("failed_pk", "finished_at"),
}


def shard_of(task_id: str) -> int:
    """The task's shard: a stable hash of its id (the same in every process and version)."""
    return int.from_bytes(hashlib.blake2b(task_id.encode(), digest_size=2).digest(), "big") % SHARDS


def _s(value: str) -> dict:
    return {"S": value}


def _n(value: float | int) -> dict:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def _num(item: dict, name: str) -> float | None:
    value = item.get(name)
    if value is None:
        return None
    number = float(value["N"])
    return int(number) if number.is_integer() and name in ("attempts", "max_attempts", "fence") else number


def _str(item: dict, name: str) -> str | None:
    value = item.get(name)
    return None if value is None else value["S"]


def _int(item: dict, name: str) -> int | None:
    value = item.get(name)
    return None if value is None else int(float(value["N"]))


class DynamoTaskStore(TaskStore):
    """Task collections in one DynamoDB table (see the module doc for the layout).

    Parameters
    ----------
    table
        The table's name.
    client
        A boto3 DynamoDB client; default ``blocks.clients.aws_client("dynamodb")``.
    wait_backoff, blocked_backoff
        Seconds a todo task whose dependencies are not done (or one failed) is passed over.
    """

    def __init__(
        self,
        table: str,
        *,
        client: Any | None = None,
        wait_backoff: float = WAIT_BACKOFF,
        blocked_backoff: float = BLOCKED_BACKOFF,
    ) -> None:
        self.table = table
        self.wait_backoff, self.blocked_backoff = wait_backoff, blocked_backoff
        if client is None:
            from blocks.clients import aws_client

            client = aws_client("dynamodb")
        self.client = client
        self._levels: dict[str, tuple[float, list[int]]] = {}

    # -- keys ---------------------------------------------------------------------------------

    @staticmethod
    def _task_key(collection: str, task_id: str) -> dict:
        return {"pk": _s(f"T#{collection}#{shard_of(task_id):02d}"), "sk": _s(task_id)}

    @staticmethod
    def _shard_pk(collection: str, shard: int) -> str:
        return f"{collection}#{shard:02d}"

    @staticmethod
    def _open_pk(collection: str, shard: int, priority: int = 0) -> str:
        """The ``open`` index partition of a task: its collection's shard, and its priority level
        when not 0 (``coll#p5#SS``; '#' never occurs in a collection name)."""
        if not priority:
            return f"{collection}#{shard:02d}"
        return f"{collection}#p{priority}#{shard:02d}"

    def _priorities(self, collection: str) -> list[int]:
        """The priority levels ``collection`` has tasks at, highest first (0 always included);
        read from the registry at most every :data:`PRIORITY_CACHE_SECONDS` per store (a level
        added by another process is seen that much later; this process's own adds at once)."""
        now = time.monotonic()
        cached = self._levels.get(collection)
        if cached is not None and now - cached[0] < PRIORITY_CACHE_SECONDS:
            return cached[1]
        item = self._registry(collection) or {}
        levels = sorted(
            {int(value) for value in item.get("priorities", {}).get("NS", [])} | {0}, reverse=True
        )
        self._levels[collection] = (now, levels)
        return levels

    def _counter_update(self, collection: str, deltas: dict[str, int]) -> dict:
        """A transaction item adding ``deltas`` to a random counter shard of ``collection``."""
        names = {f"#{state}": state for state in deltas}
        values = {f":{state}": _n(delta) for state, delta in deltas.items()}
        return {
            "Update": {
                "TableName": self.table,
                "Key": {"pk": _s(f"N#{collection}"), "sk": _s(f"{random.randrange(COUNTER_SHARDS):02d}")},
                "UpdateExpression": "ADD " + ", ".join(f"#{state} :{state}" for state in deltas),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def _count(self, collection: str, deltas: dict[str, int], *, finished: bool = True) -> None:
        """Add ``deltas`` to the counters, right after the conditional write that moved the task;
        with ``finished``, tasks moved to done or failed also count as finished this minute.

        Not in one transaction with it: a transaction costs two writes per item on DynamoDB and
        a copy of the whole table per call on moto. A process killed between the two writes
        leaves a counter off by one until :meth:`recount`.
        """
        self.client.update_item(**self._counter_update(collection, deltas)["Update"])
        done, failed = max(deltas.get(DONE, 0), 0), max(deltas.get(FAILED, 0), 0)
        if finished and (done or failed):
            # Tasks finished this minute, for throughput and ETA (a shard per writer, as counters).
            now = time.time()
            self.client.update_item(
                TableName=self.table,
                Key={
                    "pk": _s(f"R#{collection}"),
                    "sk": _s(f"{int(now // 60):012d}#{random.randrange(COUNTER_SHARDS):02d}"),
                },
                UpdateExpression="SET expires_at = :x ADD #done :d, #failed :f",
                ExpressionAttributeNames={"#done": DONE, "#failed": FAILED},
                ExpressionAttributeValues={":x": _n(int(now + RATE_TTL)), ":d": _n(done), ":f": _n(failed)},
            )

    def finished_per_minute(
        self, collection: str, *, minutes: int
    ) -> tuple[float, dict[int, tuple[int, int]]]:
        now = time.time()
        first = int(now // 60) - int(minutes) + 1
        buckets: dict[int, tuple[int, int]] = {}
        for item in self._query(
            KeyConditionExpression="pk = :p AND sk >= :first",
            ExpressionAttributeValues={":p": _s(f"R#{collection}"), ":first": _s(f"{first:012d}")},
            ConsistentRead=True,
        ):
            minute = int(item["sk"]["S"].split("#", 1)[0])
            done, failed = buckets.get(minute, (0, 0))
            buckets[minute] = (done + (_int(item, DONE) or 0), failed + (_int(item, FAILED) or 0))
        return now, buckets

    # -- table --------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the table and its indexes when missing, and wait until it is active."""
        try:
            self.client.describe_table(TableName=self.table)
            return
        except ClientError as error:
            if error_code(error) != "ResourceNotFoundException":
                raise
        definitions = {"pk": "S", "sk": "S"}
        indexes = []
        for name, (hash_key, range_key) in INDEXES.items():
            definitions[hash_key] = "S"
            definitions[range_key] = "N"
            indexes.append(
                {
                    "IndexName": name,
                    "KeySchema": [
                        {"AttributeName": hash_key, "KeyType": "HASH"},
                        {"AttributeName": range_key, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            )
        try:
            self.client.create_table(
                TableName=self.table,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[
                    {"AttributeName": name, "AttributeType": kind} for name, kind in definitions.items()
                ],
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                GlobalSecondaryIndexes=indexes,
                SSESpecification={"Enabled": True},
            )
        except ClientError as error:
            if error_code(error) != "ResourceInUseException":  # created meanwhile by someone else
                raise
        self.client.get_waiter("table_exists").wait(
            TableName=self.table, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        with contextlib.suppress(ClientError):  # the per-minute counts expire (an emulator may not)
            self.client.update_time_to_live(
                TableName=self.table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
            )
        # An emulator without point-in-time recovery: nothing to recover locally anyway.
        with contextlib.suppress(ClientError):
            self.client.update_continuous_backups(
                TableName=self.table,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )

    def _table_exists(self) -> bool:
        try:
            self.client.describe_table(TableName=self.table)
            return True
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return False
            raise

    # -- reading helpers ------------------------------------------------------------------------

    def _query(self, **kwargs: Any) -> Iterator[dict]:
        while True:
            page = self.client.query(TableName=self.table, **kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _batch_get(self, keys: list[dict], projection: str | None = None) -> list[dict]:
        """Items for ``keys`` (consistent reads), unprocessed keys retried; missing ones absent."""
        found: list[dict] = []
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {"Keys": keys[start : start + 100], "ConsistentRead": True}
            if projection:
                request["ProjectionExpression"] = projection
                request["ExpressionAttributeNames"] = {"#pk": "pk", "#sk": "sk"}
            pending = {self.table: request}
            delay = 0.05
            while pending:
                page = self.client.batch_get_item(RequestItems=pending)
                found.extend(page.get("Responses", {}).get(self.table, []))
                pending = page.get("UnprocessedKeys") or {}
                if pending:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
        return found

    def _batch_delete(self, keys: Iterable[dict]) -> None:
        keys = list(keys)
        for start in range(0, len(keys), 25):
            pending = {self.table: [{"DeleteRequest": {"Key": key}} for key in keys[start : start + 25]]}
            delay = 0.05
            while pending:
                page = self.client.batch_write_item(RequestItems=pending)
                pending = page.get("UnprocessedItems") or {}
                if pending:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)

    def _transact(self, items: list[dict]) -> list[dict] | None:
        """Run a transaction; None when it went through, else the cancellation reasons (one per
        item: ``{"Code": ..., "Item"?: old item}``). A conflict with another transaction is retried."""
        delay = 0.02
        for _ in range(8):
            try:
                self.client.transact_write_items(TransactItems=items)
                return None
            except ClientError as error:
                if error_code(error) != "TransactionCanceledException":
                    raise
                reasons = error.response.get("CancellationReasons") or []
                codes = {reason.get("Code") for reason in reasons}
                if "ConditionalCheckFailed" in codes or not codes & {
                    "TransactionConflict",
                    "ThrottlingError",
                }:
                    return reasons
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)
        raise RuntimeError("DynamoDB transaction kept conflicting with others (8 tries)")

    def _task(self, item: dict) -> Task:
        attributes = _str(item, "attributes")
        deps = item.get("deps", {}).get("L", [])
        return Task(
            collection=_str(item, "collection") or "",
            id=item["sk"]["S"],
            command=_str(item, "command") or "",
            depends_on=tuple(dep["S"] for dep in deps),
            attributes=json.loads(attributes) if attributes else {},
            state=_str(item, "state") or TODO,
            attempts=_int(item, "attempts") or 0,
            max_attempts=_int(item, "max_attempts") or DEFAULT_MAX_ATTEMPTS,
            lease_owner=_str(item, "lease_owner"),
            lease_token=_int(item, "lease_token"),
            lease_expires=_num(item, "lease_expires"),
            exit_code=_int(item, "exit_code"),
            error=_str(item, "error"),
            log_key=_str(item, "log_key"),
            created_at=_num(item, "created_at"),
            updated_at=_num(item, "updated_at"),
            started_at=_num(item, "started_at"),
            finished_at=_num(item, "finished_at"),
            priority=_int(item, "priority") or 0,
        )

    def _registry(self, collection: str) -> dict | None:
        try:
            return self.client.get_item(
                TableName=self.table,
                Key={"pk": _s("COLLECTIONS"), "sk": _s(collection)},
                ConsistentRead=True,
            ).get("Item")
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":  # no table: no collections yet
                return None
            raise

    def _require(self, collection: str) -> dict:
        check_collection(collection)
        item = self._registry(collection)
        if item is None:
            raise UnknownCollection(f"no collection named {collection!r}")
        return item

    # -- add ------------------------------------------------------------------------------------

    def add(
        self, collection: str, tasks: Sequence[TaskSpec], *, max_attempts: int | None = None
    ) -> AddResult:
        check_collection(collection)
        for spec in tasks:
            check_task_id(spec.id)
            check_initial_state(spec)
            if not spec.command.strip():
                raise TaskInputError(f"task {spec.id!r}: empty command")
        if max_attempts is not None and max_attempts < 1:
            raise TaskInputError("max_attempts must be at least 1")
        result = AddResult(collection)
        if not tasks:
            return result
        tasks = first_of_each(tasks, result)
        now = time.time()
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    "pk": _s("COLLECTIONS"),
                    "sk": _s(collection),
                    "max_attempts": _n(max_attempts or DEFAULT_MAX_ATTEMPTS),
                    "created_at": _n(now),
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
        levels = sorted({spec.priority for spec in tasks if spec.priority})
        if levels:  # before the tasks: a claim never misses a level that has tasks
            self.client.update_item(
                TableName=self.table,
                Key={"pk": _s("COLLECTIONS"), "sk": _s(collection)},
                UpdateExpression="ADD priorities :levels",
                ExpressionAttributeValues={":levels": {"NS": [str(level) for level in levels]}},
            )
            self._levels.pop(collection, None)
        limit = _int(self._registry(collection) or {}, "max_attempts") or DEFAULT_MAX_ATTEMPTS

        existing = {
            item["sk"]["S"]
            for item in self._batch_get(
                [self._task_key(collection, spec.id) for spec in tasks], projection="#pk, #sk"
            )
        }
        fresh = []
        for spec in tasks:
            if spec.id in existing:
                result.duplicates += 1
                result.duplicate_ids.append(spec.id)
            else:
                fresh.append(spec)

        upstream = sorted({split_ref(ref)[0] for spec in fresh for ref in spec.depends_on} - {collection})
        for other in upstream:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": _s("DOWNSTREAM"), "sk": _s(other)},
                UpdateExpression="ADD collections :c",
                ExpressionAttributeValues={":c": {"SS": [collection]}},
            )
        if any(spec.depends_on for spec in fresh):
            self._note_downstream(collection, fresh)

        chunk: list[TaskSpec] = []
        size = 1  # the counter update
        for spec in fresh:
            need = 1 + len(spec.depends_on)
            if chunk and size + need > _TRANSACTION_ITEMS:
                self._add_chunk(collection, chunk, limit, now, result)
                chunk, size = [], 1
            chunk.append(spec)
            size += need
        if chunk:
            self._add_chunk(collection, chunk, limit, now, result)
        return result

    def _note_downstream(self, collection: str, specs: Sequence[TaskSpec]) -> None:
        """Same-collection dependencies: the collection is downstream of itself."""
        if any(split_ref(ref)[0] == collection for spec in specs for ref in spec.depends_on):
            self.client.update_item(
                TableName=self.table,
                Key={"pk": _s("DOWNSTREAM"), "sk": _s(collection)},
                UpdateExpression="ADD collections :c",
                ExpressionAttributeValues={":c": {"SS": [collection]}},
            )

    def _task_item(self, collection: str, spec: TaskSpec, max_attempts: int, now: float) -> dict:
        shard = shard_of(spec.id)
        item = {
            **self._task_key(collection, spec.id),
            "collection": _s(collection),
            "command": _s(spec.command),
            "state": _s(spec.state),
            "attempts": _n(0),
            "max_attempts": _n(max_attempts),
            "fence": _n(0),
            "due": _n(now),
            "created_at": _n(now),
            "updated_at": _n(now),
        }
        if spec.priority:
            item["priority"] = _n(spec.priority)
        if spec.state == TODO:
            item["open_pk"] = _s(self._open_pk(collection, shard, spec.priority))
        else:  # imported with its outcome (done, or failed with the reason)
            item["finished_at"] = _n(now)
            if spec.state == FAILED:
                item["failed_pk"] = _s(collection)
        if spec.error is not None:
            item["error"] = _s(spec.error)
        if spec.exit_code is not None:
            item["exit_code"] = _n(spec.exit_code)
        if spec.depends_on:
            item["deps"] = {"L": [_s(ref) for ref in spec.depends_on]}
        if spec.attributes:
            item["attributes"] = _s(json.dumps(spec.attributes, sort_keys=True))
        return item

    def _add_chunk(
        self, collection: str, chunk: list[TaskSpec], limit: int, now: float, result: AddResult
    ) -> None:
        while chunk:
            items: list[dict] = []
            owners: list[TaskSpec | None] = []
            for spec in chunk:
                items.append(
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": self._task_item(collection, spec, limit, now),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                )
                owners.append(spec)
                for ref in spec.depends_on:
                    items.append(
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": {
                                    "pk": _s(f"D#{ref.replace('/', '#', 1)}"),
                                    "sk": _s(f"{collection}/{spec.id}"),
                                },
                            }
                        }
                    )
                    owners.append(None)
            deltas: dict[str, int] = {}
            for spec in chunk:
                deltas[spec.state] = deltas.get(spec.state, 0) + 1
            items.append(self._counter_update(collection, deltas))
            reasons = self._transact(items)
            if reasons is None:
                result.added += len(chunk)
                return
            # Someone added some of these ids meanwhile: they are duplicates now; retry the rest.
            taken = {
                owner.id
                for owner, reason in zip(owners, reasons, strict=False)
                if owner is not None and reason.get("Code") == "ConditionalCheckFailed"
            }
            if not taken:
                raise RuntimeError(f"adding tasks to {collection!r} was refused: {reasons}")
            result.duplicates += len(taken)
            result.duplicate_ids.extend(sorted(taken))
            chunk = [spec for spec in chunk if spec.id not in taken]

    # -- claim ----------------------------------------------------------------------------------

    def claim(
        self,
        collection: str,
        *,
        owner: str,
        batch: int = 1,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> list[Task]:
        check_collection(collection)
        claimed: list[Task] = []
        # Priority levels highest first; within a level, the shards in a random order.
        levels = self._priorities(collection)
        for priority, shard in ((p, s) for p in levels for s in random.sample(range(SHARDS), SHARDS)):
            if len(claimed) >= batch:
                break
            now = time.time()
            page = self.client.query(
                TableName=self.table,
                IndexName="open",
                KeyConditionExpression="open_pk = :p AND due <= :now",
                ExpressionAttributeValues={
                    ":p": _s(self._open_pk(collection, shard, priority)),
                    ":now": _n(now),
                },
                Limit=max(4 * batch, 8),
            )
            candidates = page.get("Items", [])
            random.shuffle(candidates)
            for item in candidates:
                if len(claimed) >= batch:
                    break
                task = self._try_claim(collection, item, owner, lease_seconds)
                if task is not None:
                    claimed.append(task)
        return claimed

    def _dependencies_ready(self, item: dict) -> str:
        """``"ready"``, ``"waiting"`` (some not done yet or not added yet) or ``"blocked"`` (one failed)."""
        refs = [dep["S"] for dep in item.get("deps", {}).get("L", [])]
        if not refs:
            return "ready"
        states = self._dependency_states([self._task_key(*split_ref(ref)) for ref in refs])
        if len(states) < len(refs):
            return "waiting"
        if FAILED in states:
            return "blocked"
        return "ready" if all(state == DONE for state in states) else "waiting"

    def _dependency_states(self, keys: list[dict]) -> list[str | None]:
        found: list[dict] = []
        for start in range(0, len(keys), 100):
            pending = {
                self.table: {
                    "Keys": keys[start : start + 100],
                    "ConsistentRead": True,
                    "ProjectionExpression": "#state",
                    "ExpressionAttributeNames": {"#state": "state"},
                }
            }
            while pending:
                page = self.client.batch_get_item(RequestItems=pending)
                found.extend(page.get("Responses", {}).get(self.table, []))
                pending = page.get("UnprocessedKeys") or {}
        return [_str(item, "state") for item in found]

    def _try_claim(self, collection: str, item: dict, owner: str, lease_seconds: float) -> Task | None:
        now = time.time()
        state = _str(item, "state")
        attempts = _int(item, "attempts") or 0
        limit = _int(item, "max_attempts") or DEFAULT_MAX_ATTEMPTS
        if state == LOCKED and (_num(item, "lease_expires") or 0) > now:
            return None  # the index lags: this lease is live
        readiness = self._dependencies_ready(item)
        if readiness != "ready":
            backoff = self.blocked_backoff if readiness == "blocked" else self.wait_backoff
            self._postpone(item, now + backoff)
            return None
        if state == LOCKED and attempts >= limit:
            self._give_up(collection, item, now)
            return None
        key = {"pk": item["pk"], "sk": item["sk"]}
        update = {
            "TableName": self.table,
            "Key": key,
            "UpdateExpression": (
                "SET #state = :locked, lease_owner = :owner, lease_expires = :expires, due = :expires, "
                "lease_pk = :lease_pk, lease_token = fence + :one, fence = fence + :one, "
                "attempts = attempts + :one, started_at = :now, updated_at = :now"
            ),
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": {
                ":locked": _s(LOCKED),
                ":owner": _s(owner),
                ":expires": _n(now + lease_seconds),
                ":one": _n(1),
                ":now": _n(now),
                ":lease_pk": _s(self._shard_pk(collection, shard_of(item["sk"]["S"]))),
            },
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        # One conditional write: a todo task, or an expired lease with attempts left (the reaper is
        # this claim). The old item says which it was (the counters move only for todo).
        update["ConditionExpression"] = (
            "#state = :todo OR (#state = :locked AND lease_expires < :now AND attempts < max_attempts)"
        )
        update["ExpressionAttributeValues"][":todo"] = _s(TODO)
        update["ReturnValues"] = "ALL_OLD"
        try:
            old = self.client.update_item(**update)["Attributes"]
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return None  # someone else holds it (error.response["Item"] says who)
            raise
        if _str(old, "state") == TODO:
            self._count(collection, {TODO: -1, LOCKED: 1})
        task = self._task(old)
        task.state, task.lease_owner = LOCKED, owner
        task.lease_token = (_int(old, "fence") or 0) + 1
        task.lease_expires, task.attempts = now + lease_seconds, (_int(old, "attempts") or 0) + 1
        task.started_at = task.updated_at = now
        return task

    def _postpone(self, item: dict, due: float) -> None:
        """Move a todo task that cannot run yet to the back of its shard's queue."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": item["pk"], "sk": item["sk"]},
                UpdateExpression="SET due = :due",
                ConditionExpression="#state = :todo",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":due": _n(due), ":todo": _s(TODO)},
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise

    def _give_up(self, collection: str, item: dict, now: float) -> None:
        """An expired lease on a task that used all its attempts: ``failed``, with the reason."""
        attempts = _int(item, "attempts") or 0
        reason = (
            f"lease expired {attempts} time(s) without the task finishing (worker lost; "
            f"max_attempts={_int(item, 'max_attempts')}); last owner {_str(item, 'lease_owner')}"
        )
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": item["pk"], "sk": item["sk"]},
                UpdateExpression=(
                    "SET #state = :failed, #error = :reason, failed_pk = :coll, finished_at = :now, "
                    "updated_at = :now REMOVE open_pk, due, lease_pk, lease_expires"
                ),
                ConditionExpression="#state = :locked AND lease_token = :token AND lease_expires < :now",
                ExpressionAttributeNames={"#state": "state", "#error": "error"},
                ExpressionAttributeValues={
                    ":failed": _s(FAILED),
                    ":reason": _s(reason),
                    ":coll": _s(collection),
                    ":now": _n(now),
                    ":locked": _s(LOCKED),
                    ":token": item.get("lease_token", _n(-1)),
                },
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return
            raise
        self._count(collection, {LOCKED: -1, FAILED: 1})

    # -- changes under a lease ------------------------------------------------------------------

    def _leased_change(
        self,
        collection: str,
        task_id: str,
        token: int,
        update: str,
        values: dict,
        deltas: dict[str, int] | None,
        names: dict | None = None,
    ) -> None:
        """Apply ``update`` if ``token`` is the task's current lease; else :class:`LeaseLost`."""
        request = {
            "TableName": self.table,
            "Key": self._task_key(collection, task_id),
            "UpdateExpression": update,
            "ConditionExpression": "#state = :locked AND lease_token = :token",
            "ExpressionAttributeNames": {"#state": "state", **(names or {})},
            "ExpressionAttributeValues": {":locked": _s(LOCKED), ":token": _n(int(token)), **values},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        try:
            self.client.update_item(**request)
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                raise self._lost(collection, task_id, token, error.response.get("Item")) from None
            raise
        if deltas:
            self._count(collection, deltas)

    def _lost(self, collection: str, task_id: str, token: int, old: dict | None) -> LeaseLost:
        if not old:
            return LeaseLost(f"{collection}/{task_id}: no such task")
        return LeaseLost(
            f"{collection}/{task_id}: token {token} is stale (the task is {_str(old, 'state')}, "
            f"token {_int(old, 'lease_token')}, owner {_str(old, 'lease_owner')})"
        )

    def heartbeat(self, collection: str, task_id: str, token: int, lease_seconds: float) -> float:
        now = time.time()
        expires = now + lease_seconds
        self._leased_change(
            collection,
            task_id,
            token,
            "SET lease_expires = :expires, due = :expires, updated_at = :now",
            {":expires": _n(expires), ":now": _n(now)},
            None,
        )
        return expires

    def complete(
        self,
        collection: str,
        task_id: str,
        token: int,
        *,
        exit_code: int = 0,
        log_key: str | None = None,
    ) -> None:
        now = time.time()
        values = {":done": _s(DONE), ":now": _n(now), ":code": _n(int(exit_code))}
        update = "SET #state = :done, exit_code = :code, finished_at = :now, updated_at = :now"
        if log_key:
            update += ", log_key = :log"
            values[":log"] = _s(log_key)
        update += " REMOVE open_pk, due, lease_pk, lease_expires, #error"
        self._leased_change(
            collection, task_id, token, update, values, {LOCKED: -1, DONE: 1}, names={"#error": "error"}
        )

    def fail(
        self,
        collection: str,
        task_id: str,
        token: int,
        *,
        error: str,
        exit_code: int | None = None,
        log_key: str | None = None,
        retry: bool = False,
    ) -> str:
        now = time.time()
        task = self.get(collection, task_id) if retry else None
        again = retry and task is not None and task.attempts < task.max_attempts
        values: dict[str, Any] = {":now": _n(now), ":error": _s(error or "failed")}
        sets = ["#error = :error", "updated_at = :now"]
        if exit_code is not None:
            sets.append("exit_code = :code")
            values[":code"] = _n(int(exit_code))
        if log_key:
            sets.append("log_key = :log")
            values[":log"] = _s(log_key)
        if again:
            sets += ["#state = :todo", "due = :now"]
            values[":todo"] = _s(TODO)
            update = "SET " + ", ".join(sets) + " REMOVE lease_pk, lease_expires"
            deltas = {LOCKED: -1, TODO: 1}
        else:
            sets += ["#state = :failed", "failed_pk = :coll", "finished_at = :now"]
            values[":failed"] = _s(FAILED)
            values[":coll"] = _s(collection)
            update = "SET " + ", ".join(sets) + " REMOVE open_pk, due, lease_pk, lease_expires"
            deltas = {LOCKED: -1, FAILED: 1}
        self._leased_change(collection, task_id, token, update, values, deltas, names={"#error": "error"})
        return TODO if again else FAILED

    def release(self, collection: str, task_id: str, token: int) -> None:
        now = time.time()
        self._leased_change(
            collection,
            task_id,
            token,
            "SET #state = :todo, due = :now, updated_at = :now, attempts = attempts - :one "
            "REMOVE lease_pk, lease_expires",
            {":todo": _s(TODO), ":now": _n(now), ":one": _n(1)},
            {LOCKED: -1, TODO: 1},
        )

    def set_attributes(self, collection: str, task_id: str, token: int, updates: dict[str, Any]) -> None:
        # Only the lease holder writes attributes, and only under its token: a read, a merge and a
        # write conditional on the token cannot lose another writer's change.
        task = self.get(collection, task_id)
        if task is None or task.lease_token != int(token) or task.state != LOCKED:
            raise LeaseLost(
                f"{collection}/{task_id}: token {token} is stale"
                + ("" if task is None else f" (the task is {task.state}, token {task.lease_token})")
            )
        merged = {**task.attributes, **updates}
        self._leased_change(
            collection,
            task_id,
            token,
            "SET attributes = :attributes, updated_at = :now",
            {":attributes": _s(json.dumps(merged, sort_keys=True, default=str)), ":now": _n(time.time())},
            None,
        )

    def reopen(self, collection: str, task_id: str, *, expect_state: str, attributes: dict[str, Any]) -> bool:
        if expect_state not in (TODO, DONE, FAILED):
            raise TaskInputError(f"cannot reopen a {expect_state} task")
        now = time.time()
        current = self.get(collection, task_id)
        priority = current.priority if current is not None else 0
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self._task_key(collection, task_id),
                UpdateExpression=(
                    "SET #state = :todo, due = :now, updated_at = :now, attempts = :zero, "
                    "open_pk = :open, attributes = :attributes "
                    "REMOVE failed_pk, finished_at, #error, exit_code, lease_token, lease_expires, lease_pk"
                ),
                ConditionExpression="#state = :from",
                ExpressionAttributeNames={"#state": "state", "#error": "error"},
                ExpressionAttributeValues={
                    ":todo": _s(TODO),
                    ":now": _n(now),
                    ":zero": _n(0),
                    ":open": _s(self._open_pk(collection, shard_of(task_id), priority)),
                    ":attributes": _s(json.dumps(attributes, sort_keys=True, default=str)),
                    ":from": _s(expect_state),
                },
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        if expect_state != TODO:
            self._count(collection, {expect_state: -1, TODO: 1})
        return True

    def rewrite(
        self,
        collection: str,
        task_id: str,
        *,
        expect_state: str,
        state: str,
        command: str,
        attributes: dict[str, Any],
        error: str | None = None,
        exit_code: int | None = None,
    ) -> bool:
        check_rewrite(task_id, expect_state=expect_state, state=state, command=command)
        now = time.time()
        current = self.get(collection, task_id)
        priority = current.priority if current is not None else 0
        sets = ["#state = :state", "command = :command", "attributes = :attributes", "updated_at = :now"]
        removes = ["lease_token", "lease_expires", "lease_pk"]
        values: dict[str, Any] = {
            ":state": _s(state),
            ":command": _s(command),
            ":attributes": _s(json.dumps(attributes, sort_keys=True, default=str)),
            ":now": _n(now),
            ":from": _s(expect_state),
        }
        if state == TODO:  # open again: in the open index of its priority, fresh attempts
            sets += ["due = :now", "open_pk = :open", "attempts = :zero"]
            values[":open"] = _s(self._open_pk(collection, shard_of(task_id), priority))
            values[":zero"] = _n(0)
            removes += ["failed_pk", "finished_at"]
        else:
            removes += ["open_pk", "due"]
            if state != expect_state:
                sets.append("finished_at = :now")
            if state == FAILED:
                sets.append("failed_pk = :coll")
                values[":coll"] = _s(collection)
            else:
                removes.append("failed_pk")
        if error is None:
            removes.append("#error")
        else:
            sets.append("#error = :error")
            values[":error"] = _s(error)
        if exit_code is None:
            removes.append("exit_code")
        else:
            sets.append("exit_code = :code")
            values[":code"] = _n(int(exit_code))
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self._task_key(collection, task_id),
                UpdateExpression="SET " + ", ".join(sets) + " REMOVE " + ", ".join(removes),
                ConditionExpression="#state = :from",
                ExpressionAttributeNames={"#state": "state", "#error": "error"},
                ExpressionAttributeValues=values,
            )
        except ClientError as problem:
            if error_code(problem) == "ConditionalCheckFailedException":
                return False
            raise
        if expect_state != state:
            self._count(collection, {expect_state: -1, state: 1}, finished=False)
        return True

    # -- bulk changes ---------------------------------------------------------------------------

    def _reopen(self, collection: str, item: dict, from_state: str) -> bool:
        """One failed or locked task back to todo (conditional on what was read); True if it was."""
        now = time.time()
        values = {":todo": _s(TODO), ":now": _n(now), ":from": _s(from_state)}
        condition = "#state = :from"
        if from_state == LOCKED:
            # Voids the lease: the next claim issues a new token, the old holder's token is stale.
            update = (
                "SET #state = :todo, due = :now, updated_at = :now, open_pk = :open "
                "REMOVE lease_pk, lease_expires, lease_token"
            )
            condition += " AND lease_token = :token"
            values[":token"] = item.get("lease_token", _n(-1))
        else:
            update = (
                "SET #state = :todo, due = :now, updated_at = :now, attempts = :zero, open_pk = :open "
                "REMOVE failed_pk, finished_at, #error, exit_code, lease_token, lease_expires"
            )
            values[":zero"] = _n(0)
        values[":open"] = _s(
            self._open_pk(collection, shard_of(item["sk"]["S"]), _int(item, "priority") or 0)
        )
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": item["pk"], "sk": item["sk"]},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#state": "state", "#error": "error"}
                if "#error" in update
                else {"#state": "state"},
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        self._count(collection, {from_state: -1, TODO: 1})
        return True

    def reset(self, collection: str, state: str) -> int:
        if state not in (FAILED, LOCKED):
            raise TaskInputError(f"reset takes --state failed or --state locked, not {state!r}")
        self._require(collection)
        if state == FAILED:
            return self.retry_failed(collection)
        count = 0
        for shard in range(SHARDS):
            for item in self._query(
                IndexName="leased",
                KeyConditionExpression="lease_pk = :p",
                ExpressionAttributeValues={":p": _s(self._shard_pk(collection, shard))},
            ):
                count += self._reopen(collection, item, LOCKED)
        return count

    def retry_failed(self, collection: str, task_ids: Sequence[str] | None = None) -> int:
        self._require(collection)
        if task_ids is not None:
            items = [
                item
                for item in self._batch_get([self._task_key(collection, check_task_id(t)) for t in task_ids])
                if _str(item, "state") == FAILED
            ]
        else:
            items = list(
                self._query(
                    IndexName="failed",
                    KeyConditionExpression="failed_pk = :c",
                    ExpressionAttributeValues={":c": _s(collection)},
                )
            )
        return sum(self._reopen(collection, item, FAILED) for item in items)

    def delete(self, collection: str) -> int:
        self._require(collection)
        count = 0
        for shard in range(SHARDS):
            keys = []
            for item in self._query(
                KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": _s(f"T#{collection}#{shard:02d}")},
                ProjectionExpression="pk, sk, deps",
            ):
                keys.append({"pk": item["pk"], "sk": item["sk"]})
                for dep in item.get("deps", {}).get("L", []):
                    keys.append(
                        {
                            "pk": _s(f"D#{dep['S'].replace('/', '#', 1)}"),
                            "sk": _s(f"{collection}/{item['sk']['S']}"),
                        }
                    )
                count += 1
            self._batch_delete(keys)
        self._batch_delete(
            {"pk": item["pk"], "sk": item["sk"]}
            for item in self._query(
                KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": _s(f"R#{collection}")},
                ProjectionExpression="pk, sk",
            )
        )
        self._batch_delete(
            [{"pk": _s(f"N#{collection}"), "sk": _s(f"{shard:02d}")} for shard in range(COUNTER_SHARDS)]
            + [
                {"pk": _s("DOWNSTREAM"), "sk": _s(collection)},
                {"pk": _s("COLLECTIONS"), "sk": _s(collection)},
            ]
        )
        return count

    def recount(self, collection: str) -> dict[str, int]:
        """Rebuild the counters of ``collection`` from its tasks (a query per shard, not a table
        scan). Repairs a drift left by a killed process; run it while no drain is active."""
        self._require(collection)
        totals = dict.fromkeys(STATES, 0)
        for shard in range(SHARDS):
            for item in self._query(
                KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": _s(f"T#{collection}#{shard:02d}")},
                ProjectionExpression="#state",
                ExpressionAttributeNames={"#state": "state"},
                ConsistentRead=True,
            ):
                totals[_str(item, "state") or TODO] += 1
        self._batch_delete(
            [{"pk": _s(f"N#{collection}"), "sk": _s(f"{shard:02d}")} for shard in range(1, COUNTER_SHARDS)]
        )
        self.client.put_item(
            TableName=self.table,
            Item={
                "pk": _s(f"N#{collection}"),
                "sk": _s("00"),
                **{state: _n(count) for state, count in totals.items()},
            },
        )
        return totals

    # -- reading --------------------------------------------------------------------------------

    def get(self, collection: str, task_id: str) -> Task | None:
        item = self.client.get_item(
            TableName=self.table, Key=self._task_key(collection, task_id), ConsistentRead=True
        ).get("Item")
        return None if item is None else self._task(item)

    def iter_tasks(self, collection: str) -> Iterator[Task]:
        self._require(collection)
        for shard in range(SHARDS):  # a query per shard (paged), never a table scan
            for item in self._query(
                KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": _s(f"T#{collection}#{shard:02d}")},
                ConsistentRead=True,
            ):
                yield self._task(item)

    def collections(self) -> list[str]:
        if not self._table_exists():
            return []
        return sorted(
            item["sk"]["S"]
            for item in self._query(
                KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": _s("COLLECTIONS")},
                ConsistentRead=True,
            )
        )

    def _counts(self, collection: str) -> dict[str, int]:
        return self._counts_of([collection])[collection]

    def _counts_of(self, collections: Sequence[str]) -> dict[str, dict[str, int]]:
        """The counters of ``collections``: their shard items have known keys, so one
        ``BatchGetItem`` per 12 collections reads them (no query: a query costs a round trip per
        collection, and on moto a pass over the whole table)."""
        totals = {name: dict.fromkeys(STATES, 0) for name in collections}
        keys = [
            {"pk": _s(f"N#{name}"), "sk": _s(f"{shard:02d}")}
            for name in collections
            for shard in range(COUNTER_SHARDS)
        ]
        for item in self._batch_get(keys):
            name = item["pk"]["S"][2:]
            for state in STATES:
                totals[name][state] += _int(item, state) or 0
        return totals

    @staticmethod
    def _parallel(work: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
        """``work`` over ``items``, up to :data:`READ_CONCURRENCY` at a time, results in order
        (the boto3 client is thread-safe)."""
        items = list(items)
        if len(items) <= 1:
            return [work(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(READ_CONCURRENCY, len(items))) as pool:
            return list(pool.map(work, items))

    def _failed_items(self, collection: str, limit: int | None = None) -> Iterator[dict]:
        kwargs: dict[str, Any] = {
            "IndexName": "failed",
            "KeyConditionExpression": "failed_pk = :c",
            "ExpressionAttributeValues": {":c": _s(collection)},
            "ScanIndexForward": False,
        }
        if limit is not None:
            kwargs["Limit"] = max(limit, 1)
            page = self.client.query(TableName=self.table, **kwargs).get("Items", [])
            yield from page[:limit]
            return
        yield from self._query(**kwargs)

    def blocked(self) -> dict[str, set[str]]:
        """Todo tasks held back by a failed dependency (transitively), by collection.

        Walks from the failed tasks of collections that others depend on, along the dependency
        edges: the cost grows with failures and what hangs off them, not with the table.
        """
        downstream = {
            item["sk"]["S"]
            for item in self._query(
                KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": _s("DOWNSTREAM")}
            )
        }
        names = sorted(downstream)
        failed = self._parallel(lambda collection: list(self._failed_items(collection)), names)
        frontier = [
            f"{collection}/{item['sk']['S']}"
            for collection, items in zip(names, failed, strict=True)
            for item in items
        ]
        blocked: dict[str, set[str]] = {}
        seen = set(frontier)

        def edges(ref: str) -> list[dict]:
            return list(
                self._query(
                    KeyConditionExpression="pk = :p",
                    ExpressionAttributeValues={":p": _s(f"D#{ref.replace('/', '#', 1)}")},
                )
            )

        while frontier:
            dependents: list[str] = []
            for found in self._parallel(edges, frontier):
                for edge in found:
                    target = edge["sk"]["S"]
                    if target not in seen:
                        seen.add(target)
                        dependents.append(target)
            frontier = []
            for item in self._batch_get([self._task_key(*split_ref(ref)) for ref in dependents]):
                if _str(item, "state") == TODO:
                    collection = _str(item, "collection") or ""
                    blocked.setdefault(collection, set()).add(item["sk"]["S"])
                    frontier.append(f"{collection}/{item['sk']['S']}")
        return blocked

    def samples(
        self, collections: Sequence[str], key: str = "sample"
    ) -> dict[str, dict[str, dict[str, int]]]:
        """One query per task shard of each collection (every task item is read)."""
        blocked = self.blocked()
        result: dict[str, dict[str, dict[str, int]]] = {}
        for collection in collections:
            check_collection(collection)
            held = blocked.get(collection, set())
            for shard in range(SHARDS):
                for item in self._query(
                    KeyConditionExpression="pk = :p",
                    ExpressionAttributeValues={":p": _s(f"T#{collection}#{shard:02d}")},
                    ProjectionExpression="sk, #state, #attributes",
                    ExpressionAttributeNames={"#state": "state", "#attributes": "attributes"},
                ):
                    attributes = _str(item, "attributes")
                    sample = (json.loads(attributes) if attributes else {}).get(key)
                    if sample is None:
                        continue
                    state = _str(item, "state") or TODO
                    if state == TODO and item["sk"]["S"] in held:
                        state = "blocked"
                    states = result.setdefault(str(sample), {}).setdefault(collection, {})
                    states[state] = states.get(state, 0) + 1
        return result

    def leases(self, collection: str) -> list[dict[str, Any]]:
        self._require(collection)

        def shard_leases(shard: int) -> list[dict]:
            return list(
                self._query(
                    IndexName="leased",
                    KeyConditionExpression="lease_pk = :p",
                    ExpressionAttributeValues={":p": _s(self._shard_pk(collection, shard))},
                )
            )

        items = [item for items in self._parallel(shard_leases, range(SHARDS)) for item in items]
        leases = [
            {
                "id": item["sk"]["S"],
                "owner": _str(item, "lease_owner"),
                "token": _int(item, "lease_token"),
                "expires": _num(item, "lease_expires"),
            }
            for item in items
            if _str(item, "state") == LOCKED
        ]
        return sorted(leases, key=lambda lease: lease["expires"] or 0.0)

    def _oldest_lease(self, collection: str) -> dict | None:
        """The lease that expires first: the head of each shard of the ``leased`` index, read
        concurrently, and the earliest of those."""

        def head(shard: int) -> list[dict]:
            return self.client.query(
                TableName=self.table,
                IndexName="leased",
                KeyConditionExpression="lease_pk = :p",
                ExpressionAttributeValues={":p": _s(self._shard_pk(collection, shard))},
                Limit=1,
            ).get("Items", [])

        heads = [items[0] for items in self._parallel(head, range(SHARDS)) if items]
        return min(heads, key=lambda item: _num(item, "lease_expires") or 0.0, default=None)

    def status(self, collection: str | None = None, *, failures: int = 10) -> dict[str, CollectionStatus]:
        names = [collection] if collection is not None else self.collections()
        if collection is not None:
            self._require(collection)
        blocked = self.blocked()
        counted = self._counts_of(names)
        result = {}
        for name in names:
            status = CollectionStatus(name, **counted[name])
            status.blocked = min(len(blocked.get(name, ())), status.todo)
            status.todo -= status.blocked
            oldest = self._oldest_lease(name) if status.locked else None
            if oldest is not None:
                status.oldest_lease_expires = _num(oldest, "lease_expires")
                status.oldest_lease_task = oldest["sk"]["S"]
                status.oldest_lease_owner = _str(oldest, "lease_owner")
            if status.failed and failures:
                status.failures = [
                    {
                        "id": item["sk"]["S"],
                        "error": _str(item, "error"),
                        "exit_code": _int(item, "exit_code"),
                        "attempts": _int(item, "attempts"),
                    }
                    for item in self._failed_items(name, failures)
                ]
            result[name] = status
        return result
