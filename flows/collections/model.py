"""The task model of task collections (seed 002): what a task is, its states, and the names it may use.

A *collection* is a named to-do list (one workflow step); a *task* is
``{"id", "command", "depends_on"?, "attributes"?}`` (ARCHITECTURE.md, "Task collections"). Once
stored, a task also has a state (``todo | locked | done | failed``), attempts, a lease (owner,
fencing token, expiry), an exit code, an error, a log key and timestamps. ``blocked`` is not a
stored state: it is a ``todo`` task one of whose dependencies (transitively) has ``failed``, and
status reports it apart.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

TODO, LOCKED, DONE, FAILED = "todo", "locked", "done", "failed"
#: The stored states, in the order status prints them.
STATES = (TODO, LOCKED, DONE, FAILED)
#: Shown by status only: todo tasks held back by a failed dependency.
BLOCKED = "blocked"

#: Leases expired (worker gone) this many times make a task ``failed`` (a poison task stops).
DEFAULT_MAX_ATTEMPTS = 3
#: How long a claim holds a task unless the worker heartbeats.
DEFAULT_LEASE_SECONDS = 300.0

# A collection name is also a DynamoDB key part and a PostgreSQL value: keep it plain.
_COLLECTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A task id is also an S3 key segment (logs/{task_id}.log) and half of "COLLECTION/ID": no "/".
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=@-]{0,254}")


#: ``attributes[NESTED_KEY]``: the sub-tasks of a nested task (PyAnamo's nests), each
#: ``{"id", "command", "state"}`` plus, once run, ``exit_code``, ``error`` and ``log_key``.
NESTED_KEY = "nested"

#: ``attributes[PYANAMO_KEY]``: a PyAnamo item's own fields (``flows.collections.formats``).
PYANAMO_KEY = "pyanamo"


def nested_command(subtasks: list[dict[str, Any]]) -> str:
    """A POSIX shell script running every sub-task's command in parallel; exit 0 only when all
    succeed, else 1 with each failed sub-task named on stderr (why: the nested-task section of
    ``flows.collections.formats``). Here so the store can rebuild it without importing formats."""
    lines = [f"# {len(subtasks)} nested task(s) in parallel; fails naming each that failed"]
    for index, sub in enumerate(subtasks):
        lines.append(f"( {sub['command']}\n) & pid_{index}=$!")
    lines.append("rc=0")
    for index, sub in enumerate(subtasks):
        lines.append(f'wait "$pid_{index}" || {{ rc=1; echo "nested task {sub["id"]} failed" >&2; }}')
    lines.append('exit "$rc"')
    return "\n".join(lines)


#: States a task may be added in (``locked`` belongs to a worker's lease, never to an import).
INITIAL_STATES = (TODO, DONE, FAILED)


class TaskInputError(ValueError):
    """Invalid tasks or names given by the user; nothing was written."""


class LeaseLost(RuntimeError):
    """A state change after a claim was refused: the caller's fencing token is no longer the task's
    (the lease expired and someone else claimed it, or it was reset or released)."""


class UnknownCollection(LookupError):
    """The collection has no tasks and was never created."""


def check_collection(name: str) -> str:
    """``name`` when it is a valid collection name, else :class:`TaskInputError`."""
    if not isinstance(name, str) or not _COLLECTION.fullmatch(name):
        raise TaskInputError(
            f"invalid collection name {name!r}: letters, digits, '.', '_', '-' (max 128, "
            "starting with a letter or digit)"
        )
    return name


def check_task_id(task_id: Any) -> str:
    """``task_id`` when it is a valid task id (a string; no '/', spaces or shell characters)."""
    if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
        raise TaskInputError(
            f"invalid task id {task_id!r}: letters, digits and . _ : + = @ - (max 255, "
            "starting with a letter or digit)"
        )
    return task_id


#: Priorities are small integers (a DynamoDB index partition per level in use).
MAX_PRIORITY = 1000


def check_priority(value: Any, what: str = "priority") -> int:
    """``value`` when it is an integer in ``-MAX_PRIORITY..MAX_PRIORITY``, else :class:`TaskInputError`."""
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_PRIORITY:
        raise TaskInputError(
            f"{what} must be an integer from -{MAX_PRIORITY} to {MAX_PRIORITY}, got {value!r}"
        )
    return value


def check_initial_state(spec: TaskSpec) -> TaskSpec:
    """``spec`` when its ``state`` is one a task may be added in (:data:`INITIAL_STATES`)."""
    if spec.state not in INITIAL_STATES:
        raise TaskInputError(f"task {spec.id!r}: cannot be added as {spec.state!r} (todo, done or failed)")
    return spec


def dependency_ref(ref: Any, collection: str) -> str:
    """The dependency ``ref`` as ``"COLLECTION/TASK_ID"``; a bare id means the same collection."""
    if not isinstance(ref, str) or not ref:
        raise TaskInputError(f"invalid dependency {ref!r}: expected 'COLLECTION/TASK_ID'")
    other, slash, task_id = ref.rpartition("/")
    if not slash:
        other = collection
    check_collection(other)
    check_task_id(task_id)
    return f"{other}/{task_id}"


def split_ref(ref: str) -> tuple[str, str]:
    """``("COLLECTION", "TASK_ID")`` of a normalised dependency reference."""
    collection, _, task_id = ref.rpartition("/")
    return collection, task_id


@dataclass(frozen=True)
class TaskSpec:
    """A task as the user gives it (validated): what to run and what must be done first."""

    id: str
    command: str
    depends_on: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    #: The state the task starts in: ``todo``, or ``done`` / ``failed`` when it is imported with
    #: its history (a PiCaS token that is already done or in error, a ``tasks export`` line).
    state: str = TODO
    #: With ``state="failed"``: why (shown by status); and the exit code where one is known.
    error: str | None = None
    exit_code: int | None = None
    #: Higher is claimed first (PiCaS's prioritized views); 0 by default.
    priority: int = 0

    def same_as(self, other: TaskSpec) -> bool:
        return (
            self.command,
            self.depends_on,
            self.attributes,
            self.state,
            self.error,
            self.exit_code,
            self.priority,
        ) == (
            other.command,
            other.depends_on,
            other.attributes,
            other.state,
            other.error,
            other.exit_code,
            other.priority,
        )


@dataclass
class Task:
    """A stored task and its bookkeeping. Times are seconds since the epoch (UTC)."""

    collection: str
    id: str
    command: str
    depends_on: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    state: str = TODO
    attempts: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    lease_owner: str | None = None
    #: Fencing token of the current lease: grows with every claim of this task, never reused.
    lease_token: int | None = None
    lease_expires: float | None = None
    exit_code: int | None = None
    error: str | None = None
    log_key: str | None = None
    created_at: float | None = None
    updated_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    priority: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["depends_on"] = list(self.depends_on)
        return data


@dataclass
class AddResult:
    """What ``add`` did: tasks written, and ids skipped because the collection already had them."""

    collection: str
    added: int = 0
    duplicates: int = 0
    duplicate_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "added": self.added,
            "duplicates": self.duplicates,
            "duplicate_ids": self.duplicate_ids[:100],
        }


@dataclass
class CollectionStatus:
    """Counts per state of one collection (``todo`` excludes ``blocked``), the oldest lease and the
    failures. ``total`` is the sum of the stored states."""

    collection: str
    todo: int = 0
    locked: int = 0
    done: int = 0
    failed: int = 0
    blocked: int = 0
    #: Earliest expiry among current leases (seconds since the epoch), None without leases.
    oldest_lease_expires: float | None = None
    oldest_lease_task: str | None = None
    oldest_lease_owner: str | None = None
    #: A few failed tasks: ``{"id", "error", "exit_code", "attempts"}``.
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.todo + self.blocked + self.locked + self.done + self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "todo": self.todo,
            "locked": self.locked,
            "done": self.done,
            "failed": self.failed,
            "blocked": self.blocked,
            "total": self.total,
            "oldest_lease": None
            if self.oldest_lease_expires is None
            else {
                "expires": self.oldest_lease_expires,
                "task": self.oldest_lease_task,
                "owner": self.oldest_lease_owner,
            },
            "failures": self.failures,
        }
