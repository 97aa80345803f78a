"""Task collections in the formats PyAnamo and PiCaS users already have: import and export.

``interlinked tasks add COLLECTION --format pyanamo|picas --file FILE`` reads them;
``interlinked tasks export COLLECTION --format pyanamo|picas|jsonl`` writes them back. Import then
export gives the same tasks back (ids, commands, every field of a token); nothing is locked in.

PyAnamo (``import-items-generic.py``)
-------------------------------------
Delimited lines, ``|`` unless ``--separator`` says otherwise:

- single items ``itemID|taskID|table|script|argument`` (exactly 5 fields; ``itemID`` an integer,
  as PyAnamo stores it). The task id is the itemID (PyAnamo's unique key), the command is
  ``script argument`` (PyAnamo's ``TaskScript``), and ``attributes["pyanamo"]`` keeps ``itemID``,
  ``taskID`` (non-unique in PyAnamo, e.g. the sample), ``table``, ``script`` and ``argument``;
- nested items, with ``--nested-delimiter D`` (PyAnamo's ``-n``): ``taskID|table|script|a1Da2D...``
  (exactly 4 fields), one item holding N nested tasks ``Task_0 .. Task_N-1``, each ``script aK``.
  PyAnamo numbers such items with a table counter; here the task id is the ``taskID`` (a counter
  would collide between two imports and silently drop the second as duplicates).

The ``table`` field is kept, not obeyed: the COLLECTION argument is the table (PyAnamo's own
import also writes every line into the table given on its command line).

Nested tasks
------------
One nested item is one task whose sub-tasks run in parallel inside one lease:
``attributes["nested"] = [{"id": "Task_0", "command": "seq 10", "state": "todo"}, ...]`` is the
first-class shape a nest-aware drain runs (each sub-task on a Dask slot, with its own state and
log, reset one by one). The task's ``command`` is still right when a drain that knows nothing of
nesting runs it: a POSIX shell script that starts every sub-command in the background, waits for
each, names each that failed on stderr and exits 1 if any failed (0 only when all succeeded) —
the item is done exactly when all its nests are, as in PyAnamo. Each sub-command sits in its own
``( ... )`` on its own line, so a ``#`` or ``;`` inside one cannot reach the others. Commands run
in a shell here (PyAnamo splits the script on spaces and runs it without one): quoting characters
in a script are shell syntax.

PiCaS (``picas.documents.Task``, the seed's tokens)
----------------------------------------------------
One JSON document per line, a JSON array of documents, ``{"docs": [...]}``, or a CouchDB
``_all_docs?include_docs=true`` (or view) export ``{"rows": [{"doc": {...}}, ...]}``. Design
documents (``_design/...``) and deleted rows are skipped. Each token needs ``_id`` (the task id,
kept as it is) and ``Task_Script`` (the command, the seed's generic application runs it).

- Payload fields (``Task_ID``, ``files``, ``input``, ``output``, ``uploads`` and any other) become
  ``attributes`` as they are; a ``depends_on`` field becomes the task's dependencies.
- Bookkeeping fields (``type``, ``lock``, ``done``, ``hostname``, ``scrub_count``, ``error``,
  ``exit_code``, and CouchDB's ``_rev``, ``_attachments``, ...) are kept verbatim in
  ``attributes["picas"]``, and give the state as PiCaS's own views would:

  ==================================================  =========================================
  token                                               task
  ==================================================  =========================================
  ``lock == -1`` or ``done == -1`` (``Task.error``)    ``failed``, error = the last ``error[]``
                                                      message
  ``done > 0`` and a non-zero ``exit_code``            ``failed`` (picasclient's *error* view)
  ``done > 0`` otherwise                              ``done``
  ``error[]`` not empty and never scrubbed            ``failed`` with that message
  anything else (also ``lock > 0``: a lease belongs   ``todo``
  to a worker of the old database, not to us)
  ==================================================  =========================================

- ``type`` is PiCaS's view / design document, i.e. the workflow step: one COLLECTION holds one
  type. Tokens go into the COLLECTION named on the command line; a file whose tokens have
  several types is refused unless ``--type TYPE`` picks the ones for this collection (the others
  are skipped and counted). A token's own ``type`` is kept and written back on export; tasks that
  never were tokens are exported with ``type`` = the collection (the seed's convention).

On export a token whose task is still in the state its bookkeeping gave gets that bookkeeping back
unchanged; one that moved on here (drained, failed, reset) gets fields that say so in PiCaS terms
(``lock``/``done`` times, ``exit_code``, our error appended to ``error[]``; a token that came done
or failed and was re-queued here has its ``scrub_count`` raised by one, as PiCaS's ``scrub`` does).

Every input is checked completely before anything is written: any bad line or document refuses
the whole input (exit 2), naming it by line number (documents of an array or export: by their
1-based position and ``_id``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from flows.collections.model import (
    DONE,
    FAILED,
    LOCKED,
    NESTED_KEY,
    PYANAMO_KEY,
    TODO,
    Task,
    TaskInputError,
    TaskSpec,
    check_collection,
    check_task_id,
    dependency_ref,
    nested_command,
)
from flows.collections.parsing import MAX_REPORTED, ParsedTasks, read_text

#: ``tasks add --format``: ours, then theirs.
IMPORT_FORMATS = ("jsonl", "tsv", "pyanamo", "picas")
#: ``tasks export --format``.
EXPORT_FORMATS = ("pyanamo", "picas", "jsonl")
DEFAULT_SEPARATOR = "|"
DEFAULT_NESTED_DELIMITER = ","

#: Token fields that are PiCaS's bookkeeping (state, lock holder, history), kept in attributes.picas.
PICAS_BOOKKEEPING = ("type", "lock", "done", "hostname", "scrub_count", "error", "exit_code")
PICAS_KEY = "picas"

_DIGITS = re.compile(r"[0-9]+")


# -- collecting parsed items (all-or-nothing) ----------------------------------------------------


class _Collector:
    """Specs in input order, first of each id; every problem remembered with where it was."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[str] = []
        self.seen: dict[str, tuple[str, TaskSpec]] = {}
        self.repeats = 0

    def error(self, where: str, message: Any) -> None:
        self.errors.append(f"{self.source} {where}: {message}")

    def add(self, where: str, spec: TaskSpec) -> None:
        first = self.seen.get(spec.id)
        if first is None:
            self.seen[spec.id] = (where, spec)
        elif first[1].same_as(spec):
            self.repeats += 1
        else:
            self.error(where, f"task id {spec.id!r} repeats {first[0]} with different content")

    def result(self, skipped: int = 0) -> ParsedTasks:
        if self.errors:
            more = len(self.errors) - MAX_REPORTED
            shown = self.errors[:MAX_REPORTED] + ([f"... and {more} more problem(s)"] if more > 0 else [])
            raise TaskInputError("nothing was added:\n  " + "\n  ".join(shown))
        if not self.seen:
            raise TaskInputError(f"{self.source}: no tasks (the input is empty)")
        parsed = ParsedTasks((spec for _, spec in self.seen.values()), self.repeats)
        parsed.skipped = skipped
        return parsed


# -- PyAnamo ---------------------------------------------------------------------------------------


def _join(script: str, argument: str) -> str:
    """PyAnamo's ``TaskScript``: ``script argument`` (no dangling space without an argument)."""
    return f"{script} {argument}" if argument else script


def _pyanamo_single(fields: list[str]) -> TaskSpec:
    if len(fields) != 5:
        hint = ""
        if len(fields) == 4:
            hint = " (a nested line? those need --nested-delimiter)"
        elif len(fields) > 5:
            hint = " (does a field contain the separator? choose another with --separator)"
        raise TaskInputError(
            f"expected 5 fields itemID|taskID|table|script|argument, got {len(fields)}{hint}"
        )
    item_id, task_id, table, script, argument = fields
    item_id = item_id.strip()
    if not _DIGITS.fullmatch(item_id):
        raise TaskInputError(f"itemID {item_id!r} is not an integer")
    command = _join(script, argument)
    if not command.strip():
        raise TaskInputError(f"item {item_id}: empty script")
    return TaskSpec(
        id=check_task_id(item_id),
        command=command,
        attributes={
            PYANAMO_KEY: {
                "itemID": int(item_id),
                "taskID": task_id,
                "table": table,
                "script": script,
                "argument": argument,
            }
        },
    )


def _pyanamo_nested(fields: list[str], delimiter: str) -> TaskSpec:
    if len(fields) != 4:
        hint = ""
        if len(fields) == 5:
            hint = " (a single-item line? those are read without --nested-delimiter)"
        elif len(fields) > 4:
            hint = " (does a field contain the separator? choose another with --separator)"
        raise TaskInputError(f"expected 4 fields taskID|table|script|arguments, got {len(fields)}{hint}")
    task_id, table, script, arguments = fields
    try:
        check_task_id(task_id)
    except TaskInputError as error:
        raise TaskInputError(f"taskID {task_id!r} cannot be a task id: {error}") from None
    args = arguments.split(delimiter)
    subtasks = []
    for index, argument in enumerate(args):
        command = _join(script, argument)
        if not command.strip():
            raise TaskInputError(f"item {task_id}: nested task Task_{index} has an empty command")
        subtasks.append({"id": f"Task_{index}", "command": command, "state": TODO})
    return TaskSpec(
        id=task_id,
        command=nested_command(subtasks),
        attributes={
            PYANAMO_KEY: {
                "taskID": task_id,
                "table": table,
                "script": script,
                "arguments": args,
                "nested_delimiter": delimiter,
            },
            NESTED_KEY: subtasks,
        },
    )


def parse_pyanamo(
    text: str,
    collection: str,
    *,
    separator: str | None = None,
    nested_delimiter: str | None = None,
    source: str = "input",
) -> ParsedTasks:
    """The tasks of PyAnamo import lines: single items, or nested items with ``nested_delimiter``.

    Blank lines and lines starting with ``#`` are skipped; any bad line refuses the whole input
    (:class:`TaskInputError` naming each by number).
    """
    check_collection(collection)
    separator = separator or DEFAULT_SEPARATOR
    if nested_delimiter is not None and (not nested_delimiter or nested_delimiter == separator):
        raise TaskInputError("--nested-delimiter must be non-empty and differ from --separator")
    collector = _Collector(source)
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(separator)
        try:
            if nested_delimiter is None:
                spec = _pyanamo_single(fields)
            else:
                spec = _pyanamo_nested(fields, nested_delimiter)
        except TaskInputError as error:
            collector.error(f"line {number}", error)
            continue
        collector.add(f"line {number}", spec)
    return collector.result()


def _check_field(task: Task, name: str, value: str, separator: str) -> str:
    if separator in value or "\n" in value or "\r" in value:
        what = "the separator " + repr(separator) if separator in value else "a line break"
        raise TaskInputError(
            f"task {task.id!r}: its {name} {value!r} contains {what}; export with another --separator "
            "(or --format jsonl, which keeps everything)"
        )
    return value


def pyanamo_lines(
    tasks: Iterable[Task],
    collection: str,
    *,
    separator: str | None = None,
    nested_delimiter: str | None = None,
) -> list[str]:
    """PyAnamo import lines for ``tasks``: what ``tasks add --format pyanamo`` reads back.

    Tasks imported from PyAnamo get their own line back. Other tasks become single items: the id
    is the itemID when it is an integer, else the next free integer (the id is then the taskID);
    the command is the script, with no argument. PyAnamo lines have no state and no dependencies.
    A collection mixing single and nested items cannot be one PyAnamo file (refused).
    """
    separator = separator or DEFAULT_SEPARATOR
    tasks = list(tasks)
    numeric = [int(task.id) for task in tasks if _DIGITS.fullmatch(task.id)]
    next_item = max(numeric, default=0) + 1
    singles: list[str] = []
    nested: list[str] = []
    delimiters: set[str] = set()
    for task in tasks:
        origin = task.attributes.get(PYANAMO_KEY)
        if isinstance(origin, dict) and isinstance(origin.get("arguments"), list):
            delimiter = nested_delimiter or origin.get("nested_delimiter") or DEFAULT_NESTED_DELIMITER
            delimiters.add(delimiter)
            arguments = [str(argument) for argument in origin["arguments"]]
            for argument in arguments:
                if delimiter in argument:
                    raise TaskInputError(
                        f"task {task.id!r}: argument {argument!r} contains the nested delimiter "
                        f"{delimiter!r}; export with another --nested-delimiter"
                    )
            fields = [
                str(origin.get("taskID", task.id)),
                str(origin.get("table", collection)),
                str(origin["script"]),
            ]
            fields.append(delimiter.join(arguments))
            nested.append(
                separator.join(
                    _check_field(task, name, value, separator)
                    for name, value in zip(("taskID", "table", "script", "arguments"), fields, strict=True)
                )
            )
            continue
        if isinstance(origin, dict) and "script" in origin:
            fields = [
                task.id,
                str(origin.get("taskID", task.id)),
                str(origin.get("table", collection)),
                str(origin["script"]),
                str(origin.get("argument", "")),
            ]
        else:
            item_id = task.id
            if not _DIGITS.fullmatch(item_id):
                item_id, next_item = str(next_item), next_item + 1
            fields = [item_id, task.id, collection, task.command, ""]
        singles.append(
            separator.join(
                _check_field(task, name, value, separator)
                for name, value in zip(
                    ("itemID", "taskID", "table", "script", "argument"), fields, strict=True
                )
            )
        )
    if singles and nested:
        raise TaskInputError(
            f"{collection} holds {len(singles)} single and {len(nested)} nested item(s): a PyAnamo "
            "file is one or the other; export with --format jsonl (or picas) instead"
        )
    if len(delimiters) > 1:
        raise TaskInputError(
            f"nested items of {collection} were imported with different delimiters "
            f"({', '.join(sorted(map(repr, delimiters)))}): give --nested-delimiter"
        )
    return singles or nested


# -- PiCaS -----------------------------------------------------------------------------------------


def _number(value: Any, name: str) -> float:
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TaskInputError(f"'{name}' must be a number, not {value!r}")
    return value


def _exit_code(value: Any) -> int | None:
    """PiCaS's ``exit_code`` (an int, or a string the views ``parseInt``), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        return int(value)
    return None


def _error_message(entry: Any) -> str:
    if isinstance(entry, dict):
        message = entry.get("message") or entry.get("exception")
        if isinstance(message, str) and message:
            return message
    if isinstance(entry, str):
        return entry
    return json.dumps(entry, sort_keys=True)


def picas_outcome(bookkeeping: dict[str, Any]) -> tuple[str, str | None, int | None]:
    """``(state, error, exit_code)`` of a token's bookkeeping fields, as PiCaS's views see it (the
    table in the module doc)."""
    lock = _number(bookkeeping.get("lock"), "lock")
    done = _number(bookkeeping.get("done"), "done")
    errors = bookkeeping.get("error") or []
    if not isinstance(errors, list):
        errors = [errors]
    message = _error_message(errors[-1]) if errors else None
    exit_code = _exit_code(bookkeeping.get("exit_code"))
    if lock == -1 or done == -1:
        return FAILED, message or "PiCaS error state (lock = -1)", exit_code
    if done > 0:
        if exit_code not in (None, 0):
            return FAILED, message or f"exit code {exit_code}", exit_code
        return DONE, None, exit_code
    if errors and not bookkeeping.get("scrub_count"):
        return FAILED, message, exit_code
    return TODO, None, None


def token_to_spec(doc: Any, collection: str) -> TaskSpec:
    """A :class:`TaskSpec` from one PiCaS token (raises :class:`TaskInputError`)."""
    if not isinstance(doc, dict):
        raise TaskInputError(f"expected a JSON object (a token), got {type(doc).__name__}")
    if "_id" not in doc:
        raise TaskInputError("token has no '_id'")
    token_id = doc["_id"]
    try:
        check_task_id(token_id)
    except TaskInputError as error:
        raise TaskInputError(f"token _id {token_id!r} cannot be a task id: {error}") from None
    script = doc.get("Task_Script")
    if not isinstance(script, str) or not script.strip():
        raise TaskInputError(f"token {token_id!r} has no Task_Script (the shell command to run)")
    if PICAS_KEY in doc:
        raise TaskInputError(f"token {token_id!r}: the field name {PICAS_KEY!r} is reserved")
    bookkeeping = {
        key: value
        for key, value in doc.items()
        if key in PICAS_BOOKKEEPING or (key.startswith("_") and key != "_id")
    }
    attributes = {
        key: value
        for key, value in doc.items()
        if key not in bookkeeping and key not in ("_id", "Task_Script", "depends_on")
    }
    depends_on = doc.get("depends_on") or []
    if isinstance(depends_on, str):
        depends_on = [depends_on]
    if not isinstance(depends_on, list):
        raise TaskInputError(f"token {token_id!r}: 'depends_on' must be a list of 'COLLECTION/TASK_ID'")
    refs = tuple(dict.fromkeys(dependency_ref(ref, collection) for ref in depends_on))
    try:
        state, error, exit_code = picas_outcome(bookkeeping)
    except TaskInputError as problem:
        raise TaskInputError(f"token {token_id!r}: {problem}") from None
    attributes[PICAS_KEY] = bookkeeping
    return TaskSpec(
        id=token_id,
        command=script,
        depends_on=refs,
        attributes=attributes,
        state=state,
        error=error,
        exit_code=exit_code,
    )


def _json_error(source: str, error: json.JSONDecodeError) -> TaskInputError:
    return TaskInputError(
        f"nothing was added:\n  {source} line {error.lineno}: not valid JSON ({error.msg} at column {error.colno})"
    )


def _picas_documents(text: str, source: str) -> Iterator[tuple[str, Any]]:
    """``(where, document or TaskInputError)`` for every document of a PiCaS input (see the
    module doc for the shapes); raises :class:`TaskInputError` when the whole is not JSON."""
    stripped = text.strip()
    if not stripped:
        return
    whole: Any = None
    if stripped[0] in "[{":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as error:
            first = stripped.splitlines()[0]
            try:
                json.loads(first)
                first_parses = True
            except json.JSONDecodeError:
                first_parses = False
            if stripped[0] == "[" or not (error.msg == "Extra data" or first_parses):
                raise _json_error(source, error) from None
            whole = None  # JSON Lines: one token a line, each named by its line
    if whole is None:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as error:
                yield (
                    f"line {number}",
                    TaskInputError(f"not valid JSON ({error.msg} at column {error.colno})"),
                )
        return
    if isinstance(whole, list):
        for index, doc in enumerate(whole, start=1):
            yield _where("document", index, doc), doc
        return
    if not isinstance(whole, dict):
        raise TaskInputError(f"{source}: expected JSON documents (tokens), got {type(whole).__name__}")
    if isinstance(whole.get("rows"), list):  # CouchDB _all_docs / view export
        for index, row in enumerate(whole["rows"], start=1):
            if not isinstance(row, dict):
                yield f"row {index}", TaskInputError("expected a row object")
                continue
            row_id = row.get("id")
            value = row.get("value")
            if (isinstance(value, dict) and value.get("deleted")) or row.get("error") == "not_found":
                continue
            if "doc" not in row:
                yield (
                    f"row {index}" + (f" (id {row_id!r})" if row_id else ""),
                    TaskInputError("no 'doc': export the tokens with ?include_docs=true"),
                )
                continue
            yield _where("row", index, row["doc"]), row["doc"]
        return
    if isinstance(whole.get("docs"), list):  # _find results, _bulk_docs input
        for index, doc in enumerate(whole["docs"], start=1):
            yield _where("document", index, doc), doc
        return
    yield _where("document", 1, whole), whole


def _where(kind: str, index: int, doc: Any) -> str:
    doc_id = doc.get("_id") if isinstance(doc, dict) else None
    return f"{kind} {index}" + (f" (_id {doc_id!r})" if isinstance(doc_id, str) else "")


def parse_picas(
    text: str, collection: str, *, token_type: str | None = None, source: str = "input"
) -> ParsedTasks:
    """The tasks of PiCaS tokens (see the module doc); ``token_type`` keeps only tokens of that
    ``type``. Any bad document refuses the whole input (:class:`TaskInputError` naming each)."""
    check_collection(collection)
    collector = _Collector(source)
    skipped = 0
    types: dict[Any, int] = {}
    for where, doc in _picas_documents(text, source):
        if isinstance(doc, TaskInputError):
            collector.error(where, doc)
            continue
        if isinstance(doc, dict) and (str(doc.get("_id", "")).startswith("_design/") or doc.get("_deleted")):
            skipped += 1
            continue
        if token_type is not None and isinstance(doc, dict) and doc.get("type") != token_type:
            skipped += 1
            continue
        try:
            spec = token_to_spec(doc, collection)
        except TaskInputError as error:
            collector.error(where, error)
            continue
        kind = spec.attributes[PICAS_KEY].get("type")
        types[kind] = types.get(kind, 0) + 1
        collector.add(where, spec)
    if len(types) > 1 and not collector.errors:
        listed = ", ".join(f"{kind!r}: {count}" for kind, count in sorted(types.items(), key=str))
        raise TaskInputError(
            f"nothing was added: {source} holds tokens of {len(types)} types ({listed}); a collection "
            "is one type (one PiCaS view, one workflow step): add each type to its own collection "
            "with --type TYPE"
        )
    return collector.result(skipped)


def task_to_token(task: Task, collection: str) -> dict[str, Any]:
    """The PiCaS token of ``task``: its own fields back when it came from one and its state is
    unchanged, else PiCaS fields saying what happened here (see the module doc)."""
    attributes = dict(task.attributes)
    original = attributes.pop(PICAS_KEY, None)
    bookkeeping = dict(original) if isinstance(original, dict) else None
    state = task.state
    unchanged = bookkeeping is not None and picas_outcome(bookkeeping) == (
        task.state,
        task.error if task.state == FAILED else None,
        task.exit_code if task.state != TODO else None,
    )
    if not unchanged:
        fields = bookkeeping or {"type": collection, "hostname": "", "scrub_count": 0, "error": []}
        fields = {**fields}
        if bookkeeping is not None and picas_outcome(bookkeeping)[0] != TODO:
            # It came done or failed and has moved on: it was re-queued here (retry-failed, reset),
            # which is PiCaS's scrub — counted, so the token reads as re-queued, not as failed.
            count = fields.get("scrub_count")
            if count is None or count == "" or (isinstance(count, int) and not isinstance(count, bool)):
                fields["scrub_count"] = (count or 0) + 1
        errors = fields.get("error")
        errors = list(errors) if isinstance(errors, list) else ([] if errors in (None, "") else [errors])
        started = int(task.started_at or task.finished_at or task.updated_at or 0)
        finished = int(task.finished_at or task.updated_at or 0)
        fields.pop("exit_code", None)
        if state == TODO:
            fields.update(lock=0, done=0)
        elif state == LOCKED:
            fields.update(lock=started or 1, done=0)
            if task.lease_owner:
                fields["hostname"] = task.lease_owner.split(":", 1)[0]
        elif state == DONE:
            fields.update(lock=started or 1, done=finished or 1)
            if task.exit_code is not None:
                fields["exit_code"] = task.exit_code
        else:  # failed: PiCaS's error state, our reason appended to its history
            message = task.error or "failed"
            if not errors or _error_message(errors[-1]) != message:
                errors.append({"time": finished, "message": message})
            fields.update(lock=-1, done=-1)
            if task.exit_code is not None:
                fields["exit_code"] = task.exit_code
        fields["error"] = errors
        bookkeeping = fields
    token: dict[str, Any] = {"_id": task.id}
    token.update({key: bookkeeping[key] for key in bookkeeping if key.startswith("_")})
    token.update({key: value for key, value in bookkeeping.items() if not key.startswith("_")})
    token.update(attributes)
    if task.depends_on:
        token["depends_on"] = list(task.depends_on)
    token["Task_Script"] = task.command
    return token


# -- JSON Lines ------------------------------------------------------------------------------------


def task_to_json(task: Task) -> dict[str, Any]:
    """The ``tasks add --format jsonl`` object of ``task``, with its state (and error, exit code)."""
    document: dict[str, Any] = {"id": task.id, "command": task.command}
    if task.depends_on:
        document["depends_on"] = list(task.depends_on)
    if task.attributes:
        document["attributes"] = task.attributes
    document["state"] = task.state
    if task.error is not None:
        document["error"] = task.error
    if task.exit_code is not None:
        document["exit_code"] = task.exit_code
    if task.priority:
        document["priority"] = task.priority
    return document


# -- the two entry points --------------------------------------------------------------------------


def _natural(task: Task) -> tuple:
    """Order for export: by id with its numbers compared as numbers (``token_2`` before ``token_10``)."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"([0-9]+)", task.id)
    )


def export_text(
    tasks: Iterable[Task],
    collection: str,
    fmt: str,
    *,
    separator: str | None = None,
    nested_delimiter: str | None = None,
) -> str:
    """``tasks`` of ``collection`` as a file of format ``fmt`` (:data:`EXPORT_FORMATS`), in id order
    (numbers in ids compared as numbers); raises :class:`TaskInputError` when the format cannot
    hold them (then nothing is written)."""
    check_collection(collection)
    if fmt not in EXPORT_FORMATS:
        raise TaskInputError(f"unknown export format {fmt!r} ({', '.join(EXPORT_FORMATS)})")
    if fmt != "pyanamo" and (separator is not None or nested_delimiter is not None):
        raise TaskInputError("--separator and --nested-delimiter go with --format pyanamo")
    ordered = sorted(tasks, key=_natural)
    if fmt == "pyanamo":
        lines = pyanamo_lines(ordered, collection, separator=separator, nested_delimiter=nested_delimiter)
    elif fmt == "picas":
        lines = [json.dumps(task_to_token(task, collection), ensure_ascii=False) for task in ordered]
    else:
        lines = [json.dumps(task_to_json(task), ensure_ascii=False) for task in ordered]
    return "".join(line + "\n" for line in lines)


def export_collection(
    store: Any,
    collection: str,
    fmt: str,
    *,
    separator: str | None = None,
    nested_delimiter: str | None = None,
) -> str:
    """Every task of ``collection`` in ``store`` as :func:`export_text` writes it."""
    check_collection(collection)
    return export_text(
        store.iter_tasks(collection), collection, fmt, separator=separator, nested_delimiter=nested_delimiter
    )


def read_input(
    collection: str,
    *,
    file: str | None = None,
    ids: str | None = None,
    command: str | None = None,
    fmt: str | None = None,
    separator: str | None = None,
    nested_delimiter: str | None = None,
    token_type: str | None = None,
) -> ParsedTasks:
    """The tasks ``tasks add`` was given, in any of :data:`IMPORT_FORMATS` (reads and checks
    everything without touching a store; raises :class:`TaskInputError`)."""
    from flows.collections.client import read_tasks

    check_collection(collection)
    if fmt not in ("pyanamo", "picas"):
        if separator is not None or nested_delimiter is not None:
            raise TaskInputError("--separator and --nested-delimiter go with --format pyanamo")
        if token_type is not None:
            raise TaskInputError("--type goes with --format picas")
        return read_tasks(collection, file=file, ids=ids, command=command, fmt=fmt)
    if file is None or ids is not None or command is not None:
        raise TaskInputError(f"--format {fmt} reads --file FILE (not --ids/--command)")
    text = read_text(file)
    if fmt == "pyanamo":
        if token_type is not None:
            raise TaskInputError("--type goes with --format picas")
        return parse_pyanamo(
            text, collection, separator=separator, nested_delimiter=nested_delimiter, source=file
        )
    if separator is not None or nested_delimiter is not None:
        raise TaskInputError("--separator and --nested-delimiter go with --format pyanamo")
    return parse_picas(text, collection, token_type=token_type, source=file)
