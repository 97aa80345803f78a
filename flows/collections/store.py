"""The task store interface: what every backend (DynamoDB, PostgreSQL) must do, and what it promises.

Promises (the tests in ``tests/unit/test_collections_store.py`` check each on every backend):

- ``add`` writes a batch of tasks; ids the collection already has are skipped and counted; a
  validation error writes nothing. A task may be added ``done`` or ``failed`` (an import that
  brings its history, e.g. PiCaS tokens): counted as such, never claimed.
- ``claim`` hands each task to at most one caller at a time: it takes a lease with a fresh fencing
  token (a number that grows with every claim of the task). A task is claimable when it is
  ``todo``, or ``locked`` with an expired lease (so the reaper is the claim itself: there is no
  separate process that can stall), and every ``depends_on`` task is ``done``. A task whose lease
  expired ``max_attempts`` times becomes ``failed`` with the reason instead (poison tasks stop).
- ``heartbeat``, ``complete``, ``fail`` and ``release`` succeed only with the current token:
  a worker that lost its lease gets :class:`~flows.collections.model.LeaseLost` and changes nothing.
- ``status`` reads counters kept by the same writes that change states: it never scans the tasks.
"""

from __future__ import annotations

import os
import socket
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

from flows.collections.model import (
    DEFAULT_LEASE_SECONDS,
    DONE,
    FAILED,
    LOCKED,
    TODO,
    AddResult,
    CollectionStatus,
    LeaseLost,
    Task,
    TaskSpec,
)


def new_owner() -> str:
    """A worker id that is never reused, even after a restart on the same host: ``host:pid:random``,
    then ``|batch=JOB_ID`` inside an AWS Batch job (an array child's id ends in ``:INDEX``) and
    ``|flow=FLOW_RUN_ID`` inside a Prefect flow run, so ``tasks status --by-instance`` can say
    which drain holds what and ``--orphans`` can check whether its holder still exists."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    batch_job = os.environ.get("AWS_BATCH_JOB_ID")
    if batch_job:
        owner += f"|batch={batch_job}"
    flow_run = os.environ.get("PREFECT__FLOW_RUN_ID")
    if flow_run:
        owner += f"|flow={flow_run}"
    return owner


def parse_owner(owner: str | None) -> dict[str, Any]:
    """``{"host", "pid", "batch_job", "flow_run"}`` of an owner written by :func:`new_owner`
    (None for what it does not say; an owner of another shape gives only ``host`` None)."""
    parts = (owner or "").split("|")
    host, _, rest = parts[0].partition(":")
    pid_text = rest.partition(":")[0]
    tags = dict(part.partition("=")[::2] for part in parts[1:])
    return {
        "host": host or None,
        "pid": int(pid_text) if pid_text.isdigit() else None,
        "batch_job": tags.get("batch") or None,
        "flow_run": tags.get("flow") or None,
    }


def check_rewrite(task_id: str, *, expect_state: str, state: str, command: str) -> None:
    """What :meth:`TaskStore.rewrite` accepts on every backend (:class:`TaskInputError` otherwise):
    a ``todo``, ``done`` or ``failed`` task, to one of those states, with a command."""
    from flows.collections.model import TaskInputError

    if expect_state not in (TODO, DONE, FAILED) or state not in (TODO, DONE, FAILED):
        raise TaskInputError(f"cannot rewrite a {expect_state} task as {state}")
    if not command.strip():
        raise TaskInputError(f"task {task_id!r}: empty command")


class TaskStore(ABC):
    """A store of task collections. Thread-safe: one instance may serve many threads."""

    @abstractmethod
    def ensure(self) -> None:
        """Create the table(s) when missing (idempotent). On AWS, Terraform owns them instead."""

    @abstractmethod
    def add(
        self, collection: str, tasks: Sequence[TaskSpec], *, max_attempts: int | None = None
    ) -> AddResult:
        """Add ``tasks`` to ``collection`` (created on first use; ``max_attempts`` is fixed then)."""

    @abstractmethod
    def claim(
        self,
        collection: str,
        *,
        owner: str,
        batch: int = 1,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> list[Task]:
        """Up to ``batch`` claimable tasks, each now ``locked`` by ``owner`` with a new ``lease_token``."""

    @abstractmethod
    def heartbeat(self, collection: str, task_id: str, token: int, lease_seconds: float) -> float:
        """Extend the lease to now + ``lease_seconds``; the new expiry (raises ``LeaseLost``)."""

    @abstractmethod
    def complete(
        self,
        collection: str,
        task_id: str,
        token: int,
        *,
        exit_code: int = 0,
        log_key: str | None = None,
    ) -> None:
        """Mark the task ``done`` (raises ``LeaseLost`` for a stale token)."""

    def complete_many(
        self, collection: str, results: Sequence[tuple[str, int, int, str | None]]
    ) -> list[str]:
        """Mark several tasks ``done`` at once: ``results`` are ``(task_id, token, exit_code,
        log_key)``. Each is conditional on its own token; returns the ids refused as stale (the
        others are done). Backends that can do it in one round trip override this loop."""
        refused = []
        for task_id, token, exit_code, key in results:
            try:
                self.complete(collection, task_id, token, exit_code=exit_code, log_key=key)
            except LeaseLost:
                refused.append(task_id)
        return refused

    @abstractmethod
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
        """Mark the task ``failed`` with ``error`` (or back to ``todo`` when ``retry`` and attempts
        remain); returns the new state (raises ``LeaseLost`` for a stale token)."""

    @abstractmethod
    def set_attributes(self, collection: str, task_id: str, token: int, updates: dict[str, Any]) -> None:
        """Replace the top-level ``updates`` keys of the task's attributes (the others stay), only
        while ``token`` is its lease (raises ``LeaseLost``): how a drain writes the sub-states of a
        nested task back."""

    @abstractmethod
    def reopen(self, collection: str, task_id: str, *, expect_state: str, attributes: dict[str, Any]) -> bool:
        """One ``done``, ``failed`` or ``todo`` task back to ``todo`` with fresh attempts and
        ``attributes``, if it is still in ``expect_state`` (else False, nothing changed)."""

    def _idle_nested_task(self, collection: str, task_id: str) -> tuple[Task, list[dict[str, Any]]]:
        """Nested task ``task_id`` and its sub-tasks, as it is now: :class:`UnknownCollection` /
        :class:`TaskInputError` when it does not exist, is not nested, or runs (its drain would
        overwrite whatever is changed)."""
        from flows.collections.model import NESTED_KEY, TaskInputError, UnknownCollection, check_task_id

        task = self.get(collection, check_task_id(task_id))
        if task is None:
            self.status(collection, failures=0)  # UnknownCollection for an unknown collection
            raise UnknownCollection(f"no task {task_id!r} in {collection}")
        nests = task.attributes.get(NESTED_KEY)
        if not isinstance(nests, list) or not nests:
            raise TaskInputError(f"{collection}/{task_id} is not a nested task")
        if task.state == LOCKED:
            raise TaskInputError(
                f"{collection}/{task_id} is running (locked by {task.lease_owner}); "
                "wait for it or reset --state locked first"
            )
        return task, nests

    def reset_nests(self, collection: str, task_id: str, nest_ids: Sequence[str] | None = None) -> Task:
        """Nested task ``task_id``: the sub-tasks ``nest_ids`` (all when None) back to ``todo``, and
        the task with them (a drain then runs only the sub-tasks not ``done``). Refused while the
        task is locked (its drain would overwrite the sub-states). The task as it is now."""
        from flows.collections.model import NESTED_KEY, TaskInputError

        for _ in range(5):
            task, nests = self._idle_nested_task(collection, task_id)
            known = [sub.get("id") for sub in nests]
            wanted = set(known if nest_ids is None else nest_ids)
            unknown = sorted(wanted - set(known))
            if unknown:
                raise TaskInputError(
                    f"{collection}/{task_id} has no nested task {', '.join(unknown)} (it has {', '.join(known)})"
                )
            fresh = [
                {"id": sub["id"], "command": sub["command"], "state": TODO}
                if sub.get("id") in wanted
                else sub
                for sub in nests
            ]
            attributes = {**task.attributes, NESTED_KEY: fresh}
            if self.reopen(collection, task_id, expect_state=task.state, attributes=attributes):
                return self.get(collection, task_id) or task
        raise TaskInputError(f"{collection}/{task_id} kept changing while being reset; try again")

    def reset_task(self, collection: str, task_id: str) -> Task:
        """PyAnamo's reset of one item: the ``done``, ``failed`` or ``todo`` task ``task_id`` back
        to ``todo`` with fresh attempts, its error and exit code cleared; a nested task with every
        sub-task ``todo`` again (as ``reset_nests`` of all). Refused while it is locked (its drain
        holds it: ``reset --state locked`` voids the leases). The task as it is now."""
        from flows.collections.model import NESTED_KEY, TaskInputError, UnknownCollection, check_task_id

        for _ in range(5):
            task = self.get(collection, check_task_id(task_id))
            if task is None:
                self.status(collection, failures=0)  # UnknownCollection for an unknown collection
                raise UnknownCollection(f"no task {task_id!r} in {collection}")
            if task.state == LOCKED:
                raise TaskInputError(
                    f"{collection}/{task_id} is running (locked by {task.lease_owner}); "
                    "wait for it or reset --state locked first"
                )
            if isinstance(task.attributes.get(NESTED_KEY), list) and task.attributes[NESTED_KEY]:
                return self.reset_nests(collection, task_id)
            if self.reopen(collection, task_id, expect_state=task.state, attributes=task.attributes):
                return self.get(collection, task_id) or task
        raise TaskInputError(f"{collection}/{task_id} kept changing while being reset; try again")

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
        """One ``todo``, ``done`` or ``failed`` task given a new ``command``, ``attributes`` and
        ``state`` (one of those three; ``todo`` with fresh attempts), if it is still in
        ``expect_state`` (else False, nothing changed); the counters move with it, the
        finished-per-minute counts do not (nothing ran). How deleting nests recomputes an item."""
        raise NotImplementedError(f"{type(self).__name__} cannot rewrite tasks")

    def delete_nests(self, collection: str, task_id: str, nest_ids: Sequence[str]) -> Task:
        """PyAnamo's "delete nests": remove the sub-tasks ``nest_ids`` from nested task ``task_id``
        and recompute the item from those left: ``done`` when all are done, ``failed`` naming the
        failed ones when none is left to run, else ``todo`` (a drain runs the ones not done). Its
        command (the shell script a nest-unaware drain runs) and a PyAnamo item's ``arguments``
        (what ``tasks export --format pyanamo`` writes) lose the deleted nests too; the others keep
        their ids, states and logs. Refused while the task is locked, for an unknown nest, and for
        deleting every nest (an item with nothing to run). The task as it is now."""
        from flows.collections.model import NESTED_KEY, PYANAMO_KEY, TaskInputError, nested_command

        if not nest_ids:
            raise TaskInputError("name the nested task(s) to delete (e.g. Task_3)")
        for _ in range(5):
            task, nests = self._idle_nested_task(collection, task_id)
            known = [sub.get("id") for sub in nests]
            wanted = set(nest_ids)
            unknown = sorted(wanted - set(known))
            if unknown:
                raise TaskInputError(
                    f"{collection}/{task_id} has no nested task {', '.join(unknown)} (it has {', '.join(known)})"
                )
            keep = [index for index, sub in enumerate(nests) if sub.get("id") not in wanted]
            if not keep:
                raise TaskInputError(
                    f"deleting every nested task of {collection}/{task_id} would leave it nothing to run; "
                    "keep at least one (or delete the collection)"
                )
            left = [nests[index] for index in keep]
            attributes = {**task.attributes, NESTED_KEY: left}
            origin = attributes.get(PYANAMO_KEY)
            arguments = origin.get("arguments") if isinstance(origin, dict) else None
            if isinstance(arguments, list) and len(arguments) == len(nests):  # aligned: drop the same
                attributes[PYANAMO_KEY] = {**origin, "arguments": [arguments[index] for index in keep]}
            states = [sub.get("state", TODO) for sub in left]
            failed = [sub for sub in left if sub.get("state") == FAILED]
            error = exit_code = None
            if all(state == DONE for state in states):
                state = DONE
                exit_code = 0
            elif failed and all(state in (DONE, FAILED) for state in states):
                state = FAILED
                exit_code = 1
                names = ", ".join(str(sub["id"]) for sub in failed)
                first = failed[0].get("error") or "failed"
                error = f"{len(failed)} of {len(left)} nested task(s) failed: {names} ({failed[0]['id']}: {first})"
            else:
                state = TODO
            if self.rewrite(
                collection,
                task_id,
                expect_state=task.state,
                state=state,
                command=nested_command(left),
                attributes=attributes,
                error=error,
                exit_code=exit_code,
            ):
                return self.get(collection, task_id) or task
        raise TaskInputError(f"{collection}/{task_id} kept changing while its nests were deleted; try again")

    @abstractmethod
    def release(self, collection: str, task_id: str, token: int) -> None:
        """Give the task back (``todo``) without counting the attempt: the SIGTERM path."""

    @abstractmethod
    def reset(self, collection: str, state: str) -> int:
        """Every task in ``state`` (``failed`` or ``locked``) back to ``todo``; how many. Resetting
        ``locked`` voids the leases (their tokens become stale); resetting ``failed`` clears errors
        and attempts."""

    @abstractmethod
    def retry_failed(self, collection: str, task_ids: Sequence[str] | None = None) -> int:
        """Failed tasks (all, or those of ``task_ids``) back to ``todo`` with fresh attempts."""

    @abstractmethod
    def delete(self, collection: str) -> int:
        """Remove the collection and all its tasks; how many tasks were removed."""

    @abstractmethod
    def get(self, collection: str, task_id: str) -> Task | None:
        """One task, read consistently, or None."""

    def iter_tasks(self, collection: str) -> Iterator[Task]:
        """Every task of ``collection`` (``tasks export``): read page by page, not all at once.
        Raises ``UnknownCollection`` for an unknown collection."""
        raise NotImplementedError(f"{type(self).__name__} cannot list tasks")

    def leases(self, collection: str) -> list[dict[str, Any]]:
        """The current leases of ``collection`` (its locked tasks): ``{"id", "owner", "token",
        "expires"}`` each, from the lease index (never the done tasks). Raises ``UnknownCollection``."""
        raise NotImplementedError(f"{type(self).__name__} cannot list leases")

    @abstractmethod
    def collections(self) -> list[str]:
        """Names of every collection, sorted."""

    @abstractmethod
    def status(self, collection: str | None = None, *, failures: int = 10) -> dict[str, CollectionStatus]:
        """Counts per state for ``collection`` (or every collection), the oldest lease and up to
        ``failures`` failed tasks each. Raises ``UnknownCollection`` for a named unknown collection."""

    def samples(
        self, collections: Sequence[str], key: str = "sample"
    ) -> dict[str, dict[str, dict[str, int]]]:
        """Where each sample is across steps: ``{sample: {collection: {state: n}}}`` for the tasks of
        ``collections`` whose ``attributes[key]`` names a sample; ``blocked`` counts todo tasks held
        back by a failed dependency. Reads every task of those collections (an explicit request)."""
        raise NotImplementedError(f"{type(self).__name__} cannot list samples")

    def finished_per_minute(
        self, collection: str, *, minutes: int
    ) -> tuple[float, dict[int, tuple[int, int]]]:
        """``(now, {minute: (done, failed)})``: the tasks of ``collection`` that finished in each of
        the last ``minutes`` minutes (minutes since the epoch; ``now`` in seconds, both on the
        store's clock), from per-minute counts kept by the writes that finish tasks: the one source
        of throughput and ETA (:mod:`flows.collections.progress`, for ``tasks status`` and the
        drain's artifacts). A store without them has no history."""
        import time

        return time.time(), {}

    def close(self) -> None:
        """Release connections (a no-op where there are none)."""
        return None


def first_of_each(tasks: Sequence[TaskSpec], result: AddResult) -> list[TaskSpec]:
    """``tasks`` without repeated ids (the first wins; repeats are counted as duplicates)."""
    seen: set[str] = set()
    unique = []
    for spec in tasks:
        if spec.id in seen:
            result.duplicates += 1
            result.duplicate_ids.append(spec.id)
        else:
            seen.add(spec.id)
            unique.append(spec)
    return unique
