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
    for execution in status.get("executions") or []:
        line = f"  #{execution['attempt']} {execution['executionId']} {execution['state']} {execution['progress']:.0%}"
        print(line + (f" — {execution['failureReason']}" if execution.get("failureReason") else ""))


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


SCRIPT_JOB_TYPES = ("script", "script-job")


def _lifecycle_job(job_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the job of the job lifecycle with this id, or None; why it could not be read, or None)."""
    from flows.jobs import client
    from flows.jobs.model import JobNotFound

    try:
        return client.get(job_id), None
    except JobNotFound:
        return None, None
    except Exception as error:  # the job store is down: the run's own status still shows
        return None, f"{type(error).__name__}: {error}"


def job_view(job: dict[str, Any], ui_url: str | None) -> dict[str, Any]:
    """``interlinked status`` of a job that is no script job (a submission's dataset, a
    prepare-experiment run, ...): its state, its latest execution's progress and reason, outputs,
    and every execution (the seed's JSON, as ``jobs show`` prints them)."""
    current = job.get("currentExecution") or {}
    flow_run_id = current.get("flowRunId") or job.get("flowRunId")
    return {
        "job_id": job["id"],
        "job_type": job["jobType"],
        "state": job["state"],
        "job_state": job["state"],
        "progress": current.get("progress"),
        "error": current.get("failureReason") or None,
        "failure_code": current.get("failureCode"),
        "flow_run_id": flow_run_id,
        "start_time": current.get("createdAt"),
        "end_time": current.get("finishedAt"),
        "input_data": job.get("inputData"),
        "output_data": job.get("outputData"),
        "output_files": job.get("outputFiles"),
        "ui_url": f"{ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}" if ui_url and flow_run_id else None,
        "executions": job.get("executions", []),
    }


def cmd_status(args: argparse.Namespace) -> int:
    use_stack_defaults()
    from flows.script_jobs.client import ScriptJobError, job_status

    job, job_problem = _lifecycle_job(args.job_id)
    if job is not None and job["jobType"] not in SCRIPT_JOB_TYPES:
        view = job_view(job, _ui_url())
        if args.json:
            print(json.dumps(view, indent=2, default=str))
        else:
            from interlinked.commands.jobs import _print_job

            _print_job(job, as_json=False)
        return 0
    try:
        status = job_status(args.job_id, ui_url=_ui_url())
    except ScriptJobError as error:
        return report_error(
            str(error) + (f"; the job store could not be read: {job_problem}" if job_problem else ""),
            EXIT_INVALID,
        )
    except Exception as error:
        return report_error(f"could not read the job's status: {type(error).__name__}: {error}", EXIT_STACK)
    if job is not None:  # a script job of the job lifecycle: its executions too
        status.update(job_type=job["jobType"], job_state=job["state"], executions=job["executions"])
    elif job_problem:
        status["executions_error"] = f"the job store could not be read: {job_problem}"
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

    status = subparsers.add_parser(
        "status",
        help="show a job's state, times, result, log, UI link and executions (script jobs, a "
        "submission's datasets, prepare-experiment runs: any job id)",
    )
    status.add_argument("job_id", metavar="JOB_ID")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
