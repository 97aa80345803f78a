"""`interlinked submit | status`: script jobs (seed 000) from a shell.

Thin: argument parsing, output and exit codes; the work is in ``flows.script_jobs.client``.
Exit codes: 0 success, 1 the job failed (or --wait gave up), 2 invalid input (nothing was
created), 3 the stack or an AWS/Prefect call failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from interlinked.commands.common import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_STACK,
    read_json_argument,
    report_error,
    use_stack_defaults,
)
from interlinked.settings import get_settings


def _ui_url() -> str | None:
    return os.environ.get("PREFECT_UI_URL")


def _print_status(status: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(status, indent=2, default=str))
        return
    rows = [
        ("job", f"{status['job_id']}" + (f" ({status['name']})" if status.get("name") else "")),
        ("state", status["state"] + (f" — {status['error']}" if status.get("error") else "")),
        ("started", status.get("start_time") or "-"),
        ("ended", status.get("end_time") or "-"),
        ("spec", status["spec"]),
        ("result", status.get("result") or "-"),
        ("log", status["log"]),
        ("ui", status.get("ui_url") or "-"),
    ]
    for label, value in rows:
        print(f"{label:>8}: {value}")
    if status["state"] == "COMPLETED":
        print(f"{'value':>8}: {json.dumps(status.get('result_value'))}")


def cmd_submit(args: argparse.Namespace) -> int:
    use_stack_defaults()
    from flows.script_jobs.client import ScriptJobError, submit_script_job, wait_for_job
    from flows.script_jobs.spec import JobSpecError

    settings = get_settings()
    try:
        description = read_json_argument(args.job)
    except ValueError as error:
        return report_error(str(error), EXIT_INVALID)
    base_dir = Path.cwd() if args.job == "-" else Path(args.job).resolve().parent
    try:
        submitted = submit_script_job(
            description, deployment=settings.deployment("script-job"), base_dir=base_dir
        )
    except (JobSpecError, ScriptJobError) as error:
        return report_error(str(error), EXIT_INVALID)
    except Exception as error:  # Prefect or AWS unreachable, deployment missing, ...
        return report_error(f"could not submit the job: {type(error).__name__}: {error}", EXIT_STACK)

    if not args.wait:
        if args.json:
            print(
                json.dumps(
                    {
                        "job_id": submitted.job_id,
                        "flow_run_id": submitted.flow_run_id,
                        "spec": submitted.spec_uri,
                    }
                )
            )
        else:
            print(submitted.job_id)
        return 0
    if not args.json:
        print(submitted.job_id)
        print(f"waiting for {submitted.spec.name!r} ...", file=sys.stderr)
    status = wait_for_job(submitted.job_id, timeout=args.timeout, ui_url=_ui_url())
    if args.json:
        _print_status(status, as_json=True)
    elif status["state"] == "COMPLETED":
        print(json.dumps(status["result_value"]))
    else:
        print(
            f"job {status['state']}: {status.get('error') or status.get('state_message') or ''}",
            file=sys.stderr,
        )
        print(f"log: {status['log']}", file=sys.stderr)
    if status["state"] == "COMPLETED":
        return 0
    if status["state"] not in ("FAILED", "CRASHED", "CANCELLED"):
        return report_error(
            f"gave up waiting after {args.timeout:g} s; the job is {status['state']}", EXIT_FAILED
        )
    return EXIT_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    use_stack_defaults()
    from flows.script_jobs.client import ScriptJobError, job_status

    try:
        status = job_status(args.job_id, ui_url=_ui_url())
    except ScriptJobError as error:
        return report_error(str(error), EXIT_INVALID)
    except Exception as error:
        return report_error(f"could not read the job's status: {type(error).__name__}: {error}", EXIT_STACK)
    _print_status(status, as_json=args.json)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``submit`` and ``status``."""
    submit = subparsers.add_parser("submit", help="submit a script job described by JOB.json")
    submit.add_argument("job", metavar="JOB.json", help="job description file ('-' for stdin)")
    submit.add_argument("--wait", action="store_true", help="wait and print the result or the failure")
    submit.add_argument("--json", action="store_true", help="machine-readable output")
    submit.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits (default 3600)")
    submit.set_defaults(func=cmd_submit)

    status = subparsers.add_parser("status", help="show a job's state, times, result, log and UI link")
    status.add_argument("job_id", metavar="JOB_ID")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
