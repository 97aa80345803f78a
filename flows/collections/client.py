"""The task-collections SDK: what ``interlinked tasks ...`` (and later the drain flow) call.

Every function takes an open :class:`~flows.collections.store.TaskStore` (``open_store()``
gives the configured one). Input is parsed and checked completely before the store is touched,
so a bad line means nothing was written.
"""

from __future__ import annotations

from typing import Any

from flows.collections.model import FAILED, LOCKED, AddResult, TaskInputError, check_collection
from flows.collections.parsing import ParsedTasks, parse_tasks, read_text, tasks_from_ids
from flows.collections.store import TaskStore

__all__ = [
    "add_tasks",
    "collection_status",
    "delete_collection",
    "read_tasks",
    "reset_collection",
    "retry_failed",
]


def read_tasks(
    collection: str,
    *,
    file: str | None = None,
    ids: str | None = None,
    command: str | None = None,
    fmt: str | None = None,
) -> ParsedTasks:
    """The tasks of ``file`` (JSON Lines or TSV), or one per id of ``ids`` with ``command``.

    Reads and checks everything without touching a store; raises :class:`TaskInputError`.
    """
    check_collection(collection)
    if (file is None) == (ids is None):
        raise TaskInputError("give either --file FILE or --ids FILE --command TEMPLATE")
    if ids is not None:
        if command is None:
            raise TaskInputError("--ids needs --command TEMPLATE (with {id} where the id goes)")
        return tasks_from_ids(read_text(ids), command, collection, source=ids)
    if command is not None:
        raise TaskInputError("--command goes with --ids, not with --file")
    return parse_tasks(read_text(file), collection, fmt=fmt, source=file)


def add_tasks(
    store: TaskStore, collection: str, tasks: ParsedTasks, *, max_attempts: int | None = None
) -> AddResult:
    """Add ``tasks`` (from :func:`read_tasks`) to ``collection``, creating the table if needed.

    Ids repeated in the input and ids the collection already has are both counted as duplicates.
    """
    if max_attempts is not None and max_attempts < 1:
        raise TaskInputError("--max-attempts must be at least 1")
    store.ensure()
    result = store.add(collection, list(tasks), max_attempts=max_attempts)
    result.duplicates += tasks.repeats
    return result


def collection_status(
    store: TaskStore, collection: str | None = None, *, failures: int = 10
) -> dict[str, Any]:
    """``{"collections": {name: {"todo", "locked", "done", "failed", "blocked", "total",
    "oldest_lease", "failures"}}}`` (the ``tasks status --json`` document)."""
    if collection is not None:
        check_collection(collection)
    statuses = store.status(collection, failures=failures)
    return {"collections": {name: status.as_dict() for name, status in statuses.items()}}


def reset_collection(store: TaskStore, collection: str, state: str) -> int:
    """Tasks of ``collection`` in ``state`` (``failed`` or ``locked``) back to ``todo``; how many."""
    check_collection(collection)
    if state not in (FAILED, LOCKED):
        raise TaskInputError(f"--state must be failed or locked, not {state!r}")
    return store.reset(collection, state)


def retry_failed(store: TaskStore, collection: str, task_ids: list[str] | None = None) -> int:
    """Failed tasks (all, or those of ``task_ids``) back to ``todo`` with fresh attempts."""
    check_collection(collection)
    return store.retry_failed(collection, task_ids)


def delete_collection(store: TaskStore, collection: str) -> int:
    """Remove ``collection`` and its tasks; how many tasks."""
    check_collection(collection)
    return store.delete(collection)
