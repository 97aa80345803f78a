"""`interlinked jobs create | dispatch | list | show | cancel | retry | cost`: the job lifecycle (seed 004).

Thin: argument parsing, output and exit codes; the work is in ``flows.jobs.client``. ``--json``
prints the job's JSON (the seed's field names); ``show --watch`` and ``list --watch`` follow
progress live. Exit codes: 0 success, 1 a watched job FAILED or was CANCELLED, 2 invalid input or a
request the job's state refuses (nothing was changed), 3 the stack (database, Prefect, S3) failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from flows.jobs.model import JOB_STATES
from interlinked.commands.common import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_STACK,
    report_error,
    use_stack_defaults,
)
from interlinked.settings import get_settings

CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen: the --watch redraw on a terminal
_sleep = time.sleep  # tests replace it to move a job on between looks


def parse_json_value(text: str, what: str) -> Any:
    """Inline JSON, or ``@FILE`` (``@-``: standard input); ``ValueError`` with the line to show."""
    source = "the argument"
    if text.startswith("@"):
        path = text[1:]
        source = "standard input" if path == "-" else path
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
        except OSError as error:
            raise ValueError(f"{what}: cannot read {path}: {error.strerror}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} is not valid JSON ({source}): {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _prepare() -> None:
    use_stack_defaults()
    os.environ.setdefault("INTERLINKED_DEPLOYMENT_SET", get_settings().deployment_set)


def _bar(progress: float, width: int = 20) -> str:
    filled = round(progress * width)
    return "[" + "#" * filled + "." * (width - filled) + f"] {progress:4.0%}"


def _print_job(job: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(job, indent=2))
        return
    rows = [
        ("job", job["id"]),
        ("type", job["jobType"]),
        ("state", job["state"]),
        ("created", job["createdAt"]),
        ("updated", job["updatedAt"]),
        ("flow run", job.get("flowRunId") or "-"),
        ("group", job.get("group") or "-"),
        ("input", json.dumps(job["inputData"])),
    ]
    if job["inputFiles"]:
        rows.append(("files", json.dumps(job["inputFiles"])))
    for label, value in rows:
        print(f"{label:>10}: {value}")
    for execution in job["executions"]:
        line = (
            f"  #{execution['attempt']} {execution['executionId']} {execution['state']:<9} "
            f"{_bar(execution['progress'])}"
        )
        if execution["failureReason"]:
            code = execution.get("failureCode")
            reason = execution["failureReason"]
            line += f" — {reason}" if not code or reason.startswith(code) else f" — {code}: {reason}"
        print(line)
        if execution["metrics"]:
            print(f"      metrics: {json.dumps(execution['metrics'])}")
        resources = execution.get("resources")
        if resources:
            print(
                f"      resources: {resources['pool']} pool, {resources['cpu']:g} vCPU, "
                f"{resources['memoryMiB']} MiB ({resources['deployment']})"
            )
        if execution.get("cost"):
            cost = execution["cost"]
            print(
                f"      cost: {cost['amount']:.6f} {cost['currency']} for {cost['seconds']:g} s ({cost['basis']})"
            )
        if execution.get("checkpointedAt"):
            print(
                f"      checkpoint ({execution['checkpointedAt']}): {json.dumps(execution['checkpoint'])[:200]}"
            )
    if job["outputData"]:
        print(f"{'output':>10}: {json.dumps(job['outputData'])}")
    if job["outputFiles"]:
        print(f"{'out files':>10}: {json.dumps(job['outputFiles'])}")


def _run(action, *, as_json: bool, quiet_id: bool = False) -> int:
    """Call ``action`` (returns a job dict), print it, map errors to exit codes."""
    from flows.jobs.model import JobError

    try:
        job = action()
    except JobError as error:
        return report_error(str(error), EXIT_INVALID)
    except Exception as error:  # database, Prefect or S3 unreachable, deployment missing, ...
        return report_error(f"{type(error).__name__}: {error}", EXIT_STACK)
    if quiet_id and not as_json:
        print(job["id"])
    else:
        _print_job(job, as_json=as_json)
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    _prepare()
    try:
        input_data = parse_json_value(args.input, "--input")
        input_files = parse_json_value(args.input_files, "--input-files") if args.input_files else None
        estimations = parse_json_value(args.estimations, "--estimations") if args.estimations else None
    except ValueError as error:
        return report_error(str(error), EXIT_INVALID)
    from flows.jobs import client
    from flows.jobs.model import JobError
    from flows.jobs.types import load_job_types

    try:  # before the database is contacted: a typo is refused even when the stack is down
        load_job_types().deployment(args.job_type)
    except JobError as error:
        return report_error(str(error), EXIT_INVALID)

    explained: list[str] = []

    def action() -> dict[str, Any]:
        from flows.jobs.triage import explain

        job = client.create(args.job_type, input_data, input_files, estimations, group=args.group)
        if args.dispatch:
            job = client.signal(job["id"], "DISPATCH")
        if args.explain:  # what the dispatch chose, or what one would choose now
            explained.append(explain(job["placement"] if args.dispatch else client.place(job["id"])))
        return job

    code = _run(action, as_json=args.json, quiet_id=True)
    if explained:
        print(explained[0], file=sys.stderr if args.json else sys.stdout)
    return code


def cmd_dispatch(args: argparse.Namespace) -> int:
    _prepare()
    from flows.jobs import client

    return _run(lambda: client.signal(args.job_id, "DISPATCH"), as_json=args.json, quiet_id=True)


def _redraw() -> None:
    if sys.stdout.isatty():
        print(CLEAR, end="")


def _execution_line(job: dict[str, Any]) -> str:
    current = job["currentExecution"]
    if current is None:
        return f"{job['updatedAt']}  {job['state']}"
    line = f"{job['updatedAt']}  {job['state']:<10} #{current['attempt']} {_bar(current['progress'])}"
    return line + (f" — {current['failureReason']}" if current["failureReason"] else "")


def _watch_job(job_id: str, *, as_json: bool, interval: float) -> int:
    """Show the job each time it changes until it ends: 0 SUCCEEDED, 1 FAILED or CANCELLED.

    On a terminal the view is redrawn; otherwise one line per change (``--json``: one JSON document
    a line)."""
    from flows.jobs import client
    from flows.jobs.model import TERMINAL_JOB_STATES, JobError

    seen = None
    while True:
        try:
            job = client.get(job_id)
        except JobError as error:
            return report_error(str(error), EXIT_INVALID)
        except Exception as error:
            return report_error(f"{type(error).__name__}: {error}", EXIT_STACK)
        if job["version"] != seen:
            seen = job["version"]
            if as_json:
                print(json.dumps(job))
            elif sys.stdout.isatty():
                _redraw()
                _print_job(job, as_json=False)
            else:
                print(_execution_line(job))
            sys.stdout.flush()
        if job["state"] in TERMINAL_JOB_STATES:
            return 0 if job["state"] == "SUCCEEDED" else EXIT_FAILED
        _sleep(interval)


def cmd_show(args: argparse.Namespace) -> int:
    _prepare()
    from flows.jobs import client

    if args.watch:
        return _watch_job(args.job_id, as_json=args.json, interval=args.interval)
    return _run(lambda: client.get(args.job_id), as_json=args.json)


def cmd_cancel(args: argparse.Namespace) -> int:
    _prepare()
    from flows.jobs import client

    return _run(lambda: client.cancel(args.job_id), as_json=args.json)


def cmd_retry(args: argparse.Namespace) -> int:
    _prepare()
    from flows.jobs import client

    return _run(lambda: client.retry(args.job_id, force=args.force), as_json=args.json)


def _print_list(jobs: list[dict[str, Any]]) -> None:
    for job in jobs:
        current = job["currentExecution"]
        progress = _bar(current["progress"], 10) if current else ""
        print(f"{job['id']}  {job['jobType']:<14} {job['state']:<10} {job['createdAt']}  {progress}")


def cmd_list(args: argparse.Namespace) -> int:
    """The jobs; with ``--watch`` again each time one of them changes, until all of them ended."""
    _prepare()
    from flows.jobs import client
    from flows.jobs.model import TERMINAL_JOB_STATES, JobError

    if args.limit < 1:
        return report_error(f"--limit must be at least 1, got {args.limit}", EXIT_INVALID)
    seen = None
    while True:
        try:
            jobs = client.list_jobs(job_type=args.type, state=args.state, limit=args.limit)
        except JobError as error:
            return report_error(str(error), EXIT_INVALID)
        except Exception as error:
            return report_error(f"{type(error).__name__}: {error}", EXIT_STACK)
        versions = [(job["id"], job["version"]) for job in jobs]
        if versions != seen:
            seen = versions
            if args.json:
                print(json.dumps({"jobs": jobs}) if args.watch else json.dumps({"jobs": jobs}, indent=2))
            else:
                if args.watch:
                    _redraw()
                _print_list(jobs)
                if args.watch and not sys.stdout.isatty():
                    print()
            sys.stdout.flush()
        if not args.watch or all(job["state"] in TERMINAL_JOB_STATES for job in jobs):
            return 0
        _sleep(args.interval)


def _print_cost(summary: dict[str, Any]) -> None:
    currency = summary["currency"]
    scope = f"group {summary['group']}" if summary["group"] else "all groups"
    since = f"since {summary['since']}" if summary["since"] else "all time"
    print(
        f"cost of ended executions, {scope}, {since} ({currency}; prices {summary['region']} "
        f"as of {summary['pricesAsOf']})"
    )
    for line in summary["executions"]:
        mark = "" if line["recorded"] else " (computed now)"
        print(
            f"  {line['finishedAt']}  {line['jobId']}  #{line['attempt']} {line['state']:<9} "
            f"{line['group']:<12} {line['seconds']:>9.1f} s  {line['amount']:>12.6f}{mark}"
        )
    for group, amount in summary["groups"].items():
        budget = summary["budgets"].get(group)
        of = f" of a budget of {budget:g} per {summary['budgetPeriod']}" if budget is not None else ""
        print(f"{'group ' + group:>24}: {amount:.6f}{of}")
    print(f"{'total':>24}: {summary['total']:.6f}")


def cmd_cost(args: argparse.Namespace) -> int:
    """Cost per execution, per group and in all; ``--json`` prints the summary document."""
    _prepare()
    from flows.jobs import client
    from flows.jobs.model import JobError

    try:
        summary = client.cost_summary(group=args.group, since=args.since)
    except JobError as error:
        return report_error(str(error), EXIT_INVALID)
    except Exception as error:
        return report_error(f"{type(error).__name__}: {error}", EXIT_STACK)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_cost(summary)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """One sweep for stuck, orphaned and never-started executions (what the scheduled
    ``job-sweeper`` flow does every 30 s); prints its verdicts, actions and cost."""
    _prepare()
    from flows.jobs.sweeper import sweep_once

    try:
        report = sweep_once().to_json()
    except Exception as error:
        return report_error(f"{type(error).__name__}: {error}", EXIT_STACK)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    verdicts = ", ".join(f"{count} {name.lower()}" for name, count in sorted(report["verdicts"].items()))
    print(
        f"swept {report['live']} live jobs in {report['seconds']:.3f} s ({verdicts or 'none'}; "
        f"{report['prefectCalls']} Prefect calls, {report['awsCalls']} AWS calls)"
    )
    for action in report["actions"]:
        target = action.get("jobId") or action.get("flowRunId")
        print(
            f"  {target} {action['verdict']}: {action.get('reason') or action.get('note', '')} → {action['done']}"
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``jobs`` and its subcommands."""
    jobs = subparsers.add_parser(
        "jobs", help="job lifecycle: create, dispatch, list, show, cancel, retry, cost"
    )
    commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="JOBS_COMMAND")

    def json_flag(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the job's JSON")

    def watch_flags(parser: argparse.ArgumentParser, until: str) -> None:
        parser.add_argument("--watch", action="store_true", help=f"follow progress live, {until}")
        parser.add_argument(
            "--interval", type=_positive, default=1.0, help="seconds between looks (default 1)"
        )

    create = commands.add_parser("create", help="create a job (prints its id)")
    create.add_argument("job_type", metavar="JOB_TYPE", help="e.g. script")
    create.add_argument("--input", required=True, help="inputData: JSON text or @FILE (@- for stdin)")
    create.add_argument("--input-files", help="inputFiles: JSON text or @FILE")
    create.add_argument("--estimations", help="estimations: JSON text or @FILE (cpu, memoryMiB, ...)")
    create.add_argument("--group", help="who pays: cost-allocation tag and budget (default: default)")
    create.add_argument("--dispatch", action="store_true", help="dispatch it right away")
    create.add_argument(
        "--explain",
        action="store_true",
        help="print the triage: pool, job variables and why (stderr with --json)",
    )
    json_flag(create)
    create.set_defaults(func=cmd_create)

    dispatch = commands.add_parser("dispatch", help="create the job's flow run")
    dispatch.add_argument("job_id", metavar="JOB_ID")
    json_flag(dispatch)
    dispatch.set_defaults(func=cmd_dispatch)

    listing = commands.add_parser("list", help="jobs, newest first")
    listing.add_argument("--type", help="only this job type")
    listing.add_argument("--state", choices=JOB_STATES, help="only jobs in this state")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    watch_flags(listing, "until every listed job has ended")
    json_flag(listing)
    listing.set_defaults(func=cmd_list)

    show = commands.add_parser("show", help="a job with its executions")
    show.add_argument("job_id", metavar="JOB_ID")
    watch_flags(show, "until the job ends (exit code 0 SUCCEEDED, 1 FAILED or CANCELLED)")
    json_flag(show)
    show.set_defaults(func=cmd_show)

    cancel = commands.add_parser("cancel", help="cancel a job and its flow run")
    cancel.add_argument("job_id", metavar="JOB_ID")
    json_flag(cancel)
    cancel.set_defaults(func=cmd_cancel)

    retry = commands.add_parser("retry", help="dispatch a FAILED or CANCELLED job again")
    retry.add_argument("job_id", metavar="JOB_ID")
    retry.add_argument("--force", action="store_true", help="even past estimations.maxAttempts")
    json_flag(retry)
    retry.set_defaults(func=cmd_retry)

    costs = commands.add_parser("cost", help="cost of ended executions, per group and in all")
    costs.add_argument("--group", help="only this group")
    costs.add_argument("--since", help="only executions that ended at or after this ISO 8601 date/time")
    costs.add_argument("--json", action="store_true", help="print the summary as JSON")
    costs.set_defaults(func=cmd_cost)
    sweep = commands.add_parser("sweep", help="one sweep for stuck, orphaned and never-started executions")
    sweep.add_argument("--json", action="store_true", help="print the sweep's report as JSON")
    sweep.set_defaults(func=cmd_sweep)
