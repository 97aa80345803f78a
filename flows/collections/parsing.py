"""Reading tasks from what the user gives ``interlinked tasks add``.

- JSON Lines: one ``{"id", "command", "depends_on"?, "attributes"?}`` object a line (plus
  ``"state"``, ``"error"``, ``"exit_code"`` as ``tasks export --format jsonl`` writes them);
- TSV: ``id<TAB>command`` (the command is everything after the first tab);
- a list of ids (one a line) and a command template with ``{id}`` substituted.

A file is JSON Lines when its first non-blank line starts with ``{``, else TSV. Blank lines and
lines starting with ``#`` are skipped. Every line is checked before anything is written: on any
bad line the whole input is refused with :class:`TaskInputError`, naming each bad line by number
(up to :data:`MAX_REPORTED`). The same id twice with the same content counts as a duplicate;
with different content it is an error (which one was meant?).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flows.collections.model import (
    INITIAL_STATES,
    LOCKED,
    TODO,
    TaskInputError,
    TaskSpec,
    check_collection,
    check_priority,
    check_task_id,
    dependency_ref,
)

MAX_REPORTED = 10
_FIELDS = {"id", "command", "depends_on", "attributes", "state", "error", "exit_code", "priority"}


class ParsedTasks(list):
    """The tasks of an input, first occurrence of each id, plus how many repeats were dropped."""

    def __init__(self, tasks: Iterable[TaskSpec] = (), repeats: int = 0) -> None:
        super().__init__(tasks)
        self.repeats = repeats


def task_from_object(data: Any, collection: str) -> TaskSpec:
    """A :class:`TaskSpec` from one decoded task object (raises :class:`TaskInputError`)."""
    if not isinstance(data, dict):
        raise TaskInputError(f"expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise TaskInputError(f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_FIELDS))})")
    if "id" not in data:
        raise TaskInputError("missing 'id'")
    task_id = check_task_id(data["id"])
    command = data.get("command")
    if not isinstance(command, str) or not command.strip():
        raise TaskInputError(f"task {task_id!r}: 'command' must be a non-empty string")
    depends_on = data.get("depends_on") or []
    if isinstance(depends_on, str):
        depends_on = [depends_on]
    if not isinstance(depends_on, list):
        raise TaskInputError(f"task {task_id!r}: 'depends_on' must be a list of 'COLLECTION/TASK_ID'")
    refs = tuple(dict.fromkeys(dependency_ref(ref, collection) for ref in depends_on))
    if f"{collection}/{task_id}" in refs:
        raise TaskInputError(f"task {task_id!r} depends on itself")
    attributes = data.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise TaskInputError(f"task {task_id!r}: 'attributes' must be a JSON object")
    # A task exported with its history (``tasks export --format jsonl``) keeps it; a lease does not
    # travel (it belongs to a worker of the store it came from): ``locked`` comes back as ``todo``.
    state = data.get("state") or TODO
    if state == LOCKED:
        state = TODO
    if state not in INITIAL_STATES:
        raise TaskInputError(f"task {task_id!r}: 'state' must be todo, locked, done or failed")
    error = data.get("error")
    if error is not None and not isinstance(error, str):
        raise TaskInputError(f"task {task_id!r}: 'error' must be a string")
    exit_code = data.get("exit_code")
    if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(exit_code, int)):
        raise TaskInputError(f"task {task_id!r}: 'exit_code' must be an integer")
    if state == TODO:
        error = exit_code = None
    priority = check_priority(data.get("priority", 0), f"task {task_id!r}: 'priority'")
    return TaskSpec(
        id=task_id,
        command=command,
        depends_on=refs,
        attributes=attributes,
        state=state,
        error=error,
        exit_code=exit_code,
        priority=priority,
    )


def _parse_line(line: str, fmt: str, collection: str) -> TaskSpec:
    if fmt == "jsonl":
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise TaskInputError(f"not valid JSON ({error.msg} at column {error.colno})") from None
        return task_from_object(data, collection)
    task_id, tab, command = line.partition("\t")
    if not tab:
        raise TaskInputError("expected 'id<TAB>command' (no tab found)")
    if not command.strip():
        raise TaskInputError(f"task {task_id.strip()!r}: empty command")
    return TaskSpec(id=check_task_id(task_id.strip()), command=command.strip())


def detect_format(text: str) -> str:
    """``"jsonl"`` when the first non-blank, non-comment line starts with ``{``, else ``"tsv"``."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return "jsonl" if stripped.startswith("{") else "tsv"
    return "tsv"


def _collect(lines: Iterable[tuple[int, TaskSpec | Exception]], source: str) -> ParsedTasks:
    errors: list[str] = []
    seen: dict[str, tuple[int, TaskSpec]] = {}
    repeats = 0
    for number, item in lines:
        if isinstance(item, Exception):
            errors.append(f"{source} line {number}: {item}")
            continue
        first = seen.get(item.id)
        if first is None:
            seen[item.id] = (number, item)
        elif first[1].same_as(item):
            repeats += 1
        else:
            errors.append(
                f"{source} line {number}: task id {item.id!r} repeats line {first[0]} with different content"
            )
    if errors:
        more = len(errors) - MAX_REPORTED
        shown = errors[:MAX_REPORTED] + ([f"... and {more} more bad line(s)"] if more > 0 else [])
        raise TaskInputError("nothing was added:\n  " + "\n  ".join(shown))
    if not seen:
        raise TaskInputError(f"{source}: no tasks (the input is empty)")
    return ParsedTasks((spec for _, spec in seen.values()), repeats)


def parse_tasks(text: str, collection: str, *, fmt: str | None = None, source: str = "input") -> ParsedTasks:
    """Every task in ``text`` (JSON Lines or TSV, see the module doc) for ``collection``.

    Raises :class:`TaskInputError` naming every bad line (by number, 1-based) when any is bad.
    """
    check_collection(collection)
    fmt = fmt or detect_format(text)
    if fmt not in ("jsonl", "tsv"):
        raise TaskInputError(f"unknown format {fmt!r} (jsonl or tsv)")

    def lines():
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                yield number, _parse_line(line.rstrip("\r\n"), fmt, collection)
            except TaskInputError as error:
                yield number, error

    return _collect(lines(), source)


def tasks_from_ids(ids_text: str, template: str, collection: str, *, source: str = "ids") -> ParsedTasks:
    """One task per id in ``ids_text`` (one a line), its command ``template`` with ``{id}`` replaced.

    Only ``{id}`` is substituted (shell ``${VAR}`` and other braces stay as written).
    """
    check_collection(collection)
    if not template or not template.strip():
        raise TaskInputError("empty command template")

    def lines():
        for number, line in enumerate(ids_text.splitlines(), start=1):
            task_id = line.strip()
            if not task_id or task_id.startswith("#"):
                continue
            try:
                yield number, TaskSpec(id=check_task_id(task_id), command=template.replace("{id}", task_id))
            except TaskInputError as error:
                yield number, error

    return _collect(lines(), source)


def read_text(path: str) -> str:
    """The text of ``path`` (``-``: standard input), or :class:`TaskInputError` saying why not."""
    import sys

    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TaskInputError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
