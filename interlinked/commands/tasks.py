"""`interlinked tasks add | status | reset | retry-failed | delete | export`: task collections (seed 002).

    interlinked tasks add COLLECTION --file FILE [--format jsonl|tsv] [--max-attempts N] [--priority P] [--json]
    interlinked tasks add COLLECTION --file FILE --format pyanamo [--separator S] [--nested-delimiter D]
    interlinked tasks add COLLECTION --file FILE --format picas [--type TYPE]
    interlinked tasks add COLLECTION --ids FILE --command TEMPLATE [--max-attempts N] [--json]
    interlinked tasks status [COLLECTION] [--watch [--interval S]] [--samples] [--json]
    interlinked tasks status COLLECTION --nested [--json]
    interlinked tasks status [COLLECTION] --by-instance | --orphans [--release] [--json]
    interlinked tasks drain COLLECTION [LOWER_COLLECTION ...] [--workers N] [--concurrency K] [--pool local|ecs|batch]
                            [--time-budget S] [--max-tasks N] [--task-timeout S] [--wait] [--json]
    interlinked tasks reset COLLECTION --state failed|locked [--json]
    interlinked tasks reset COLLECTION TASK_ID [--nest Task_K [--nest ...] | --all-nests] [--json]
    interlinked tasks retry-failed COLLECTION [TASK_ID ...] [--json]
    interlinked tasks delete COLLECTION [--json]
    interlinked tasks delete COLLECTION TASK_ID --nest Task_K [--nest ...] [--json]
    interlinked tasks export COLLECTION --format pyanamo|picas|jsonl [--output FILE]

Thin: parsing, output and exit codes; the work is in ``flows.collections.client``. The store is
the one the settings name (``INTERLINKED_TASKS_BACKEND``; ``INTERLINKED_TASKS_TABLE`` for
DynamoDB; ``INTERLINKED_DATABASE_URL`` or the ``interlinked-database`` block and
``INTERLINKED_TASKS_SCHEMA`` for PostgreSQL).
Exit codes: 0 success, 2 invalid input or unknown collection (nothing written), 3 the store
(or, for ``drain``, the Prefect API) could not be reached or refused a call; ``drain --wait``: 1
when tasks failed or every drain ended with tasks left.
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


def _backend() -> str:
    from interlinked.settings import get_settings

    return get_settings().tasks_backend


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
        if args.priority is not None:
            import dataclasses

            from flows.collections.model import check_priority

            check_priority(args.priority, "--priority")
            parsed = tasks
            tasks = type(parsed)(
                (spec if spec.priority else dataclasses.replace(spec, priority=args.priority))
                for spec in parsed
            )
            tasks.repeats = parsed.repeats
            tasks.skipped = getattr(parsed, "skipped", 0)
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


def _eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _rate_text(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1f}/s"


_COLUMNS = ("todo", "locked", "done", "failed", "blocked", "total")


def _status_lines(collections: dict[str, dict]) -> list[str]:
    width = max(10, *(len(name) for name in collections))
    lines = [
        f"{'collection':<{width}}  "
        + "  ".join(f"{c:>7}" for c in _COLUMNS)
        + f"  {'rate':>8}  {'eta':>6}  oldest lease"
    ]
    for name, status in collections.items():
        counts = "  ".join(f"{status[c]:>7}" for c in _COLUMNS)
        lines.append(
            f"{name:<{width}}  {counts}  {_rate_text(status.get('throughput')):>8}  "
            f"{_eta_text(status.get('eta_seconds')):>6}  {_lease_text(status['oldest_lease'])}"
        )
    for name, status in collections.items():
        for failure in status["failures"]:
            code_text = "" if failure["exit_code"] is None else f" exit {failure['exit_code']}"
            lines.append(f"failed {name}/{failure['id']}{code_text}: {failure['error']}")
    return lines


def _watch_status(store: Any, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from flows.collections.client import collection_status

    console = Console()
    try:
        if not args.json and not console.is_terminal:  # piped: plain tables, one per refresh
            while True:
                document = collection_status(store, args.collection, failures=args.failures)
                print("\n".join(_status_lines(document["collections"]) or ["no task collections"]))
                print(flush=True)
                time.sleep(args.interval)
        if args.json:
            while True:
                document = collection_status(store, args.collection, failures=args.failures)
                print(json.dumps({"time": time.time(), **document}, default=str), flush=True)
                time.sleep(args.interval)
        with Live(console=console, auto_refresh=False) as live:
            while True:
                document = collection_status(store, args.collection, failures=args.failures)
                stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S UTC")
                body = "\n".join(_status_lines(document["collections"]) or ["no task collections"])
                live.update(
                    Text(f"{body}\n({stamp}; every {args.interval:g}s, Ctrl-C to stop)"), refresh=True
                )
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def _print_samples(document: dict) -> None:
    steps, samples = document["steps"], document["samples"]
    if not samples:
        print(f"no tasks with attributes.{document['key']} in {', '.join(steps) or 'any collection'}")
        return
    width = max(6, *(len(sample) for sample in samples))
    widths = [max(len(step), 9, *(len(row.get(step, "-")) for row in samples.values())) for step in steps]
    print(f"{'sample':<{width}}  " + "  ".join(f"{step:<{w}}" for step, w in zip(steps, widths, strict=True)))
    for sample, row in samples.items():
        cells = "  ".join(f"{row.get(step, '-'):<{w}}" for step, w in zip(steps, widths, strict=True))
        print(f"{sample:<{width}}  {cells}")


def _print_nested(document: dict) -> None:
    from flows.collections.client import NEST_BUCKETS

    print(f"{document['collection']}: {document['items']} nested item(s)")
    print("  " + "  ".join(f"{bucket:>7}" for bucket in NEST_BUCKETS))
    print("  " + "  ".join(f"{document['buckets'][bucket]:>7}" for bucket in NEST_BUCKETS))
    nests = ", ".join(f"{n} {state}" for state, n in sorted(document["nests"].items()))
    print(f"  nests: {nests or 'none'}")


def _print_instances(document: dict) -> None:
    if not document["instances"]:
        print(f"no leases in {', '.join(document['collections']) or 'any collection'}")
        return
    print(f"{document['leases']} lease(s) held by {len(document['instances'])} instance(s):")
    for entry in document["instances"]:
        where = [f"host {entry['host']}", f"pid {entry['pid']}"]
        if entry["batch_job"]:
            where.append(f"Batch job {entry['batch_job']}")
        if entry["flow_run"]:
            where.append(f"flow run {entry['flow_run']}")
        counts = ", ".join(f"{name}: {n}" for name, n in entry["by_collection"].items())
        print(f"  {entry['owner']}  {entry['tasks']} task(s) ({counts}); {', '.join(where)}")
        more = entry["tasks"] - len(entry["task_ids"])
        print("    " + " ".join(entry["task_ids"]) + (f" ... and {more} more" if more > 0 else ""))


def _print_orphans(document: dict, released: int | None) -> None:
    found = document["orphans"]
    print(
        f"{document['checked']} lease(s) checked: {len(found)} orphaned"
        + (f", {document['unknown']} on other hosts not checkable" if document["unknown"] else "")
    )
    for orphan in found:
        state = "expired" if orphan["expired"] else "live"
        print(
            f"  {orphan['collection']}/{orphan['id']}  {orphan['owner']}  ({state} lease): {orphan['reason']}"
        )
    if released is not None:
        print(f"{released} orphaned lease(s) ended (tasks back to todo, or failed without attempts left)")


def cmd_status(args: argparse.Namespace) -> int:
    from flows.collections.client import collection_status, sample_table

    chosen = [args.collection] if args.collection else None
    if args.release and not args.orphans:
        return report_error("--release goes with --orphans", EXIT_INVALID)
    if args.by_instance:
        from flows.collections.client import instances

        code, document = _run(lambda store: instances(store, chosen))
        if code:
            return code
        _print_json(document) if args.json else _print_instances(document)
        return 0
    if args.orphans:
        from flows.collections.client import orphans, release_orphans

        def check(store: Any) -> tuple[dict, int | None]:
            document = orphans(store, chosen)
            return document, (release_orphans(store, document["orphans"]) if args.release else None)

        code, result = _run(check)
        if code:
            return code
        document, released = result
        if args.json:
            _print_json({**document, **({"released": released} if released is not None else {})})
        else:
            _print_orphans(document, released)
        return 0

    if args.nested:
        if not args.collection:
            return report_error("--nested needs a COLLECTION", EXIT_INVALID)
        from flows.collections.client import nested_status

        code, document = _run(lambda store: nested_status(store, args.collection))
        if code:
            return code
        if args.json:
            _print_json(document)
        else:
            _print_nested(document)
        return 0

    if args.samples:
        code, document = _run(
            lambda store: sample_table(store, [args.collection] if args.collection else None)
        )
        if code:
            return code
        if args.json:
            _print_json(document)
        else:
            _print_samples(document)
        return 0
    if args.watch:
        if args.interval <= 0:
            return report_error("--interval must be positive", EXIT_INVALID)
        code, result = _run(lambda store: _watch_status(store, args))
        return code or result
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
    print("\n".join(_status_lines(collections)))
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    from flows.collections.client import drain_requests
    from flows.collections.model import TaskInputError

    args.collection, *lower = args.collections
    try:
        request = drain_requests(
            args.collection,
            lower_priority=lower,
            workers=args.workers,
            concurrency=args.concurrency,
            pool=args.pool,
            time_budget=args.time_budget,
            task_timeout=args.task_timeout,
            batch=args.batch,
            lease_seconds=args.lease_seconds,
            scheduler_address=args.scheduler_address,
            max_tasks=args.max_tasks,
            nested_concurrency=args.nested_concurrency,
            backend=_backend(),
        )
    except TaskInputError as error:
        return report_error(str(error), EXIT_INVALID)
    # The collections must exist (a clear error now, not N drains that find nothing).
    code, _ = _run(lambda store: [store.status(name, failures=0) for name in args.collections])
    if code:
        return code
    from flows.collections.client import start_drains

    try:
        runs = start_drains(request)
    except Exception as error:
        return report_error(
            f"could not start {request.deployment}: {type(error).__name__}: {error}", EXIT_STACK
        )
    started = {
        "collection": args.collection,
        **({"lower_priority": lower} if lower else {}),
        "deployment": request.deployment,
        "job_variables": request.job_variables,
        "flow_runs": [{"id": str(run.id), "name": run.name} for run in runs],
    }
    if not args.json:
        array = f" (one AWS Batch array job of {args.workers})" if request.job_variables else ""
        print(f"started {len(runs)} run(s) of {request.deployment}{array}: {', '.join(r.name for r in runs)}")
    if not args.wait:
        if args.json:
            _print_json(started)
        return 0
    code, outcome = _run(lambda store: _wait_drained(store, args.collections, [run.id for run in runs], args))
    if code:
        return code
    if args.json:
        _print_json({**started, **outcome})
    else:
        status = outcome["status"]
        print(
            f"{' then '.join(args.collections)}: {status['done']} done, {status['failed']} failed, "
            f"{status['todo'] + status['locked']} open, {status['blocked']} blocked ({outcome['reason']})"
        )
        for failure in status["failures"]:
            print(f"failed {failure['collection']}/{failure['id']}: {failure['error']}")
    return 0 if outcome["reason"] == "drained" and not outcome["status"]["failed"] else 1


def _final_runs(run_ids: list[Any]) -> bool:
    """Whether every one of these flow runs has ended."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return all(
            (run.state is not None and run.state.is_final())
            for run in (client.read_flow_run(i) for i in run_ids)
        )


def _wait_drained(store: Any, collections: list[str], run_ids: list[Any], args: argparse.Namespace) -> dict:
    """Poll the collections (a rich progress bar unless ``--json``) until no open task is left, or
    every drain run ended with tasks left; ``{"reason", "status"}`` (the status summed over them)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flows.collections.client import collection_status

    def read() -> dict:
        statuses = {}
        for name in collections:
            statuses.update(collection_status(store, name, failures=5)["collections"])
        total: dict[str, Any] = {
            key: sum(status[key] for status in statuses.values())
            for key in ("todo", "locked", "done", "failed", "blocked", "total")
        }
        rates = [status.get("throughput") for status in statuses.values()]
        known = [rate for rate in rates if rate is not None]
        total["throughput"] = sum(known) if known else None
        etas = [status.get("eta_seconds") for status in statuses.values()]
        total["eta_seconds"] = None if None in etas else max(etas, default=0.0)
        total["failures"] = [
            {"collection": name, **failure}
            for name, status in statuses.items()
            for failure in status["failures"]
        ]
        return total

    progress = Progress(
        TextColumn("[bold]{task.fields[name]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        disable=args.json,
        transient=False,
    )
    reason = "drained"
    checked_runs = 0.0
    with progress:
        bar = progress.add_task("drain", total=None, name=" then ".join(collections), detail="")
        try:
            while True:
                status = read()
                finished = status["done"] + status["failed"]
                detail = (
                    f"failed {status['failed']}  running {status['locked']}  blocked {status['blocked']}  "
                    f"{_rate_text(status.get('throughput'))}  eta {_eta_text(status.get('eta_seconds'))}"
                )
                progress.update(
                    bar, completed=finished, total=status["total"] - status["blocked"], detail=detail
                )
                if status["todo"] + status["locked"] == 0:
                    break
                now = time.monotonic()
                if now - checked_runs > 5:
                    checked_runs = now
                    if _final_runs(run_ids):
                        status = read()
                        if status["todo"] + status["locked"]:
                            reason = "every drain ended with tasks left"
                        break
                time.sleep(1.0)
        except KeyboardInterrupt:
            reason = "stopped watching (the drains go on)"
    return {"reason": reason, "status": status}


def cmd_reset(args: argparse.Namespace) -> int:
    from flows.collections.client import reset_collection

    nests = bool(args.nest) or args.all_nests
    if args.task_id is not None and not nests and args.state is None:  # one task (PyAnamo's item reset)

        def reset_one(store: Any) -> tuple[str, Any]:
            current = store.get(args.collection, args.task_id)
            return (current.state if current is not None else "?"), store.reset_task(
                args.collection, args.task_id
            )

        code, result = _run(reset_one)
        if code:
            return code
        before, task = result
        if args.json:
            _print_json({"collection": args.collection, "task": task.id, "state": task.state, "was": before})
        else:
            print(f"{args.collection}/{task.id}: back to {task.state} (was {before})")
        return 0
    if nests or args.task_id is not None:
        if args.task_id is None or not nests or args.state is not None:
            return report_error(
                "reset one task as: tasks reset COLLECTION TASK_ID [--nest Task_K [...] | --all-nests] "
                "(without --state)",
                EXIT_INVALID,
            )
        if args.nest and args.all_nests:
            return report_error("give --nest or --all-nests, not both", EXIT_INVALID)
        code, task = _run(
            lambda store: store.reset_nests(
                args.collection, args.task_id, None if args.all_nests else args.nest
            )
        )
        if code:
            return code
        from flows.collections.model import NESTED_KEY

        subs = task.attributes.get(NESTED_KEY, [])
        reset = [sub["id"] for sub in subs] if args.all_nests else list(dict.fromkeys(args.nest))
        if args.json:
            _print_json(
                {"collection": args.collection, "task": task.id, "state": task.state, "nests_reset": reset}
            )
        else:
            print(
                f"{args.collection}/{task.id}: nested task(s) {', '.join(reset)} back to todo (the item is {task.state})"
            )
        return 0
    if args.state is None:
        return report_error("give --state failed|locked, or TASK_ID with --nest/--all-nests", EXIT_INVALID)
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

    if args.task_id is not None or args.nest:
        if args.task_id is None or not args.nest:
            return report_error(
                "delete nested tasks as: tasks delete COLLECTION TASK_ID --nest Task_K [--nest ...]",
                EXIT_INVALID,
            )
        nests = list(dict.fromkeys(args.nest))
        code, task = _run(lambda store: store.delete_nests(args.collection, args.task_id, nests))
        if code:
            return code
        from flows.collections.model import NESTED_KEY

        left = [sub["id"] for sub in task.attributes.get(NESTED_KEY, [])]
        if args.json:
            _print_json(
                {
                    "collection": args.collection,
                    "task": task.id,
                    "state": task.state,
                    "nests_deleted": nests,
                    "nests_left": left,
                }
            )
        else:
            print(
                f"{args.collection}/{task.id}: nested task(s) {', '.join(nests)} deleted; "
                f"{len(left)} left ({', '.join(left)}), the item is {task.state}"
            )
        return 0
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
    add.add_argument(
        "--priority",
        type=int,
        help="priority of the added tasks that have none of their own (higher is claimed first; default 0)",
    )
    add.add_argument("--json", action="store_true", help="machine-readable output")
    add.set_defaults(func=cmd_add)

    status = actions.add_parser("status", help="counts per state, the oldest lease, failures")
    status.add_argument("collection", metavar="COLLECTION", nargs="?", help="default: every collection")
    status.add_argument("--failures", type=int, default=10, help="failed tasks to list per collection")
    status.add_argument(
        "--watch", action="store_true", help="refresh until Ctrl-C (with --json: a line each time)"
    )
    status.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes of --watch")
    status.add_argument(
        "--samples", action="store_true", help="where each sample (attributes.sample) is across the steps"
    )
    status.add_argument(
        "--by-instance",
        action="store_true",
        help="which drain (host, pid, Batch job, flow run) holds which tasks",
    )
    status.add_argument(
        "--orphans",
        action="store_true",
        help="leases whose holder is gone (Batch DescribeJobs; the process table on this host)",
    )
    status.add_argument(
        "--release", action="store_true", help="with --orphans: end those leases now (as if they expired)"
    )
    status.add_argument(
        "--nested",
        action="store_true",
        help="nested items by share of nests done (PyAnamo's buckets: todo, 1-25%%, 26-75%%, 76-99%%, done)",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    drain = actions.add_parser("drain", help="start drains (flow runs) that run a collection's tasks")
    drain.add_argument(
        "collections",
        metavar="COLLECTION",
        nargs="+",
        help="the collection to drain; more: each drain claims from a later one only when those "
        "before have nothing claimable (PiCaS's prioritized views: high first, then low)",
    )
    drain.add_argument("--workers", type=int, default=1, help="drains (flow runs; on batch: array children)")
    drain.add_argument("--concurrency", type=int, default=4, help="Dask slots (tasks at once) per drain")
    drain.add_argument(
        "--pool", choices=("local", "ecs", "batch"), default="local", help="where the drains run"
    )
    drain.add_argument(
        "--time-budget", type=float, help="seconds each drain may run (it stops cleanly before)"
    )
    drain.add_argument(
        "--max-tasks",
        type=int,
        help="tasks each drain may claim (PiCaS max_tasks); with --time-budget, a drain also starts "
        "only what the time left can finish at the observed mean task time",
    )
    drain.add_argument(
        "--nested-concurrency", type=int, help="sub-tasks of one nested task at once (default all)"
    )
    drain.add_argument(
        "--task-timeout", type=float, help="seconds a task may run before it is killed and failed"
    )
    drain.add_argument("--batch", type=int, default=25, help="tasks claimed per claim")
    drain.add_argument("--lease-seconds", type=float, help="lease of a claim (heartbeats extend it)")
    drain.add_argument("--scheduler-address", help="an existing Dask scheduler instead of a LocalCluster")
    drain.add_argument("--wait", action="store_true", help="show progress until the collection is drained")
    drain.add_argument("--json", action="store_true", help="machine-readable output")
    drain.set_defaults(func=cmd_drain)

    reset = actions.add_parser(
        "reset",
        help="tasks in a state back to todo; or one task, or nests of one nested task (PyAnamo's resets)",
    )
    reset.add_argument("collection", metavar="COLLECTION")
    reset.add_argument(
        "task_id",
        metavar="TASK_ID",
        nargs="?",
        help="one task back to todo (not while it runs; a nested one with all its nests); with "
        "--nest/--all-nests only those nests",
    )
    reset.add_argument("--state", choices=("failed", "locked"))
    reset.add_argument(
        "--nest",
        action="append",
        default=[],
        metavar="NEST_ID",
        help="this nested task (e.g. Task_3); repeatable",
    )
    reset.add_argument("--all-nests", action="store_true", help="every nested task of TASK_ID")
    reset.add_argument("--json", action="store_true", help="machine-readable output")
    reset.set_defaults(func=cmd_reset)

    retry = actions.add_parser("retry-failed", help="failed tasks back to todo with fresh attempts")
    retry.add_argument("collection", metavar="COLLECTION")
    retry.add_argument("task_ids", metavar="TASK_ID", nargs="*", help="only these (default: all failed)")
    retry.add_argument("--json", action="store_true", help="machine-readable output")
    retry.set_defaults(func=cmd_retry_failed)

    delete = actions.add_parser(
        "delete", help="remove a collection and all its tasks; or nests of one nested task (PyAnamo's)"
    )
    delete.add_argument("collection", metavar="COLLECTION")
    delete.add_argument(
        "task_id", metavar="TASK_ID", nargs="?", help="a nested task (with --nest): delete only its nests"
    )
    delete.add_argument(
        "--nest",
        action="append",
        default=[],
        metavar="NEST_ID",
        help="this nested task of TASK_ID (e.g. Task_3); repeatable. The item's state is recomputed "
        "from the nests left",
    )
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
