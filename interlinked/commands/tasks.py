"""`interlinked tasks add | status | reset | retry-failed | delete | export`: task collections (seed 002).

    interlinked tasks add COLLECTION --file FILE [--format jsonl|tsv] [--max-attempts N] [--json]
    interlinked tasks add COLLECTION --file FILE --format pyanamo [--separator S] [--nested-delimiter D]
    interlinked tasks add COLLECTION --file FILE --format picas [--type TYPE]
    interlinked tasks add COLLECTION --ids FILE --command TEMPLATE [--max-attempts N] [--json]
    interlinked tasks status [COLLECTION] [--json]
    interlinked tasks reset COLLECTION --state failed|locked [--json]
    interlinked tasks retry-failed COLLECTION [TASK_ID ...] [--json]
    interlinked tasks delete COLLECTION [--json]
    interlinked tasks export COLLECTION --format pyanamo|picas|jsonl [--output FILE]

Thin: parsing, output and exit codes; the work is in ``flows.collections.client``. The store is
the one the settings name (``INTERLINKED_TASKS_BACKEND``; ``INTERLINKED_TASKS_TABLE`` for
DynamoDB; ``INTERLINKED_DATABASE_URL`` or the ``interlinked-database`` block and
``INTERLINKED_TASKS_SCHEMA`` for PostgreSQL).
Exit codes: 0 success, 2 invalid input or unknown collection (nothing written), 3 the store
could not be reached or refused a call.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from interlinked.commands.common import EXIT_INVALID, EXIT_STACK, report_error, use_stack_defaults


def _store():
    from flows.collections.backends import open_store
    from interlinked.settings import get_settings

    settings = get_settings()
    return open_store(settings.tasks_backend, table=settings.tasks_table, schema=settings.tasks_schema)


def _run(action: Callable[[Any], Any]) -> tuple[int, Any]:
    """``(0, result)`` of ``action(store)``, or ``(exit code, None)`` with the error printed."""
    use_stack_defaults()
    from flows.collections.model import TaskInputError, UnknownCollection

    store = None
    try:
        store = _store()
        return 0, action(store)
    except (TaskInputError, UnknownCollection) as error:
        return report_error(str(error), EXIT_INVALID), None
    except Exception as error:  # the store (AWS, Postgres) or Prefect (blocks) unreachable
        return report_error(f"task store: {type(error).__name__}: {error}", EXIT_STACK), None
    finally:
        if store is not None:
            store.close()


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, default=str))


def cmd_add(args: argparse.Namespace) -> int:
    from flows.collections.client import add_tasks
    from flows.collections.formats import read_input
    from flows.collections.model import TaskInputError

    try:  # all input is read and checked before the store is even opened
        tasks = read_input(
            args.collection,
            file=args.file,
            ids=args.ids,
            command=args.command,
            fmt=args.format,
            separator=args.separator,
            nested_delimiter=args.nested_delimiter,
            token_type=args.type,
        )
        if args.max_attempts is not None and args.max_attempts < 1:
            raise TaskInputError("--max-attempts must be at least 1")
    except TaskInputError as error:
        return report_error(str(error), EXIT_INVALID)
    code, result = _run(
        lambda store: add_tasks(store, args.collection, tasks, max_attempts=args.max_attempts)
    )
    if code:
        return code
    skipped = getattr(tasks, "skipped", 0)  # PiCaS: design documents, tokens of other types
    if args.json:
        _print_json({**result.as_dict(), **({"skipped": skipped} if skipped else {})})
    else:
        print(
            f"added {result.added} task(s) to {result.collection}; {result.duplicates} duplicate(s) skipped"
            + (f"; {skipped} document(s) not tasks of this collection skipped" if skipped else "")
        )
    return 0


def _lease_text(lease: dict | None) -> str:
    if not lease:
        return "-"
    left = lease["expires"] - time.time()
    when = dt.datetime.fromtimestamp(lease["expires"], dt.UTC).strftime("%H:%M:%S")
    state = f"expired {-left:.0f}s ago" if left < 0 else f"expires in {left:.0f}s"
    return f"{lease['task']} ({lease['owner']}, {state}, {when} UTC)"


def cmd_status(args: argparse.Namespace) -> int:
    from flows.collections.client import collection_status

    code, document = _run(lambda store: collection_status(store, args.collection, failures=args.failures))
    if code:
        return code
    if args.json:
        _print_json(document)
        return 0
    collections = document["collections"]
    if not collections:
        print("no task collections")
        return 0
    columns = ("todo", "locked", "done", "failed", "blocked", "total")
    width = max(10, *(len(name) for name in collections))
    print(f"{'collection':<{width}}  " + "  ".join(f"{c:>7}" for c in columns) + "  oldest lease")
    for name, status in collections.items():
        counts = "  ".join(f"{status[c]:>7}" for c in columns)
        print(f"{name:<{width}}  {counts}  {_lease_text(status['oldest_lease'])}")
    for name, status in collections.items():
        for failure in status["failures"]:
            code_text = "" if failure["exit_code"] is None else f" exit {failure['exit_code']}"
            print(f"failed {name}/{failure['id']}{code_text}: {failure['error']}")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    from flows.collections.client import reset_collection

    code, count = _run(lambda store: reset_collection(store, args.collection, args.state))
    if code:
        return code
    if args.json:
        _print_json({"collection": args.collection, "state": args.state, "reset": count})
    else:
        print(f"{count} {args.state} task(s) of {args.collection} back to todo")
    return 0


def cmd_retry_failed(args: argparse.Namespace) -> int:
    from flows.collections.client import retry_failed

    code, count = _run(lambda store: retry_failed(store, args.collection, args.task_ids or None))
    if code:
        return code
    if args.json:
        _print_json({"collection": args.collection, "retried": count})
    else:
        print(f"{count} failed task(s) of {args.collection} back to todo")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from flows.collections.client import delete_collection

    code, count = _run(lambda store: delete_collection(store, args.collection))
    if code:
        return code
    if args.json:
        _print_json({"collection": args.collection, "deleted": count})
    else:
        print(f"deleted {args.collection} ({count} task(s))")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from flows.collections.formats import export_collection

    code, text = _run(
        lambda store: export_collection(
            store,
            args.collection,
            args.format,
            separator=args.separator,
            nested_delimiter=args.nested_delimiter,
        )
    )
    if code:
        return code
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    import os
    import tempfile
    from pathlib import Path

    target = Path(args.output)
    try:  # all or nothing: a half-written export never replaces a file
        fd, temporary = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, target)
    except OSError as error:
        return report_error(f"cannot write {args.output}: {error.strerror or error}", EXIT_INVALID)
    print(f"exported {text.count(chr(10))} line(s) of {args.collection} to {args.output}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Add the ``tasks`` command to the ``interlinked`` argument parser."""
    parser = subparsers.add_parser(
        "tasks", help="task collections (PyAnamo/PiCaS): add tasks, see progress, reset, delete"
    )
    actions = parser.add_subparsers(dest="tasks_command", required=True, metavar="ACTION")

    add = actions.add_parser("add", help="add tasks to a collection (created on first use)")
    add.add_argument("collection", metavar="COLLECTION")
    add.add_argument(
        "--file", help="JSON Lines (one task object a line) or TSV (id<TAB>command); - for stdin"
    )
    add.add_argument(
        "--format",
        choices=("jsonl", "tsv", "pyanamo", "picas"),
        help="of --file (default: jsonl or tsv from its first line); pyanamo: itemID|taskID|table|script|"
        "argument lines (taskID|table|script|arg1,arg2,... with --nested-delimiter); picas: tokens "
        "(a JSON document a line, a JSON array, or a CouchDB _all_docs?include_docs=true export)",
    )
    add.add_argument("--separator", help="pyanamo: the field separator (default |)")
    add.add_argument(
        "--nested-delimiter", help="pyanamo: lines are nested items, their arguments split on this (e.g. ,)"
    )
    add.add_argument("--type", help="picas: only tokens of this type (view) go into COLLECTION")
    add.add_argument("--ids", help="a file of task ids, one a line (with --command)")
    add.add_argument("--command", help="command template for --ids; {id} is replaced by each id")
    add.add_argument(
        "--max-attempts",
        type=int,
        help="lease expiries before a task is failed (set when the collection is created; default 3)",
    )
    add.add_argument("--json", action="store_true", help="machine-readable output")
    add.set_defaults(func=cmd_add)

    status = actions.add_parser("status", help="counts per state, the oldest lease, failures")
    status.add_argument("collection", metavar="COLLECTION", nargs="?", help="default: every collection")
    status.add_argument("--failures", type=int, default=10, help="failed tasks to list per collection")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    reset = actions.add_parser("reset", help="tasks in a state back to todo")
    reset.add_argument("collection", metavar="COLLECTION")
    reset.add_argument("--state", required=True, choices=("failed", "locked"))
    reset.add_argument("--json", action="store_true", help="machine-readable output")
    reset.set_defaults(func=cmd_reset)

    retry = actions.add_parser("retry-failed", help="failed tasks back to todo with fresh attempts")
    retry.add_argument("collection", metavar="COLLECTION")
    retry.add_argument("task_ids", metavar="TASK_ID", nargs="*", help="only these (default: all failed)")
    retry.add_argument("--json", action="store_true", help="machine-readable output")
    retry.set_defaults(func=cmd_retry_failed)

    delete = actions.add_parser("delete", help="remove a collection and all its tasks")
    delete.add_argument("collection", metavar="COLLECTION")
    delete.add_argument("--json", action="store_true", help="machine-readable output")
    delete.set_defaults(func=cmd_delete)

    export = actions.add_parser(
        "export", help="write a collection's tasks as PyAnamo lines, PiCaS tokens or JSON Lines"
    )
    export.add_argument("collection", metavar="COLLECTION")
    export.add_argument("--format", required=True, choices=("pyanamo", "picas", "jsonl"))
    export.add_argument("--output", help="file to write (default: standard output)")
    export.add_argument("--separator", help="pyanamo: the field separator (default |)")
    export.add_argument(
        "--nested-delimiter", help="pyanamo: joins a nested item's arguments (default: as imported, or ,)"
    )
    export.set_defaults(func=cmd_export)


def main(argv: list[str] | None = None) -> int:
    """``python -m interlinked.commands.tasks ...``: the same commands without the main CLI."""
    parser = argparse.ArgumentParser(prog="interlinked")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
