"""The `interlinked` command. Thin: parsing, output and exit codes; the work lives elsewhere.

Exit codes: 0 success, 1 the job failed, 2 invalid input (nothing was created), 3 the stack or an
AWS/Prefect call failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from interlinked.commands.common import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_STACK,
    report_error,
    use_stack_defaults,
)
from interlinked.settings import get_settings


def _ui_url() -> str | None:
    return os.environ.get("PREFECT_UI_URL")


# ---- stack --------------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from interlinked.local import up
    from interlinked.local.processes import StackError

    settings = get_settings()
    try:
        up(settings, echo=lambda line: print(line, file=sys.stderr))
    except StackError as error:
        return report_error(str(error), EXIT_STACK)
    print(f"Prefect UI: {settings.prefect_ui_url}")
    print('Use it from a shell: eval "$(interlinked env)"; stop it with: interlinked down')
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from interlinked.local import down

    down(get_settings(), echo=lambda line: print(line, file=sys.stderr))
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from interlinked.local import env_lines, read_description
    from interlinked.local.processes import StackError

    settings = get_settings()
    try:
        if args.json:
            print(json.dumps(read_description(settings), indent=2))
        else:
            print("\n".join(env_lines(settings)))
    except StackError as error:
        return report_error(str(error), EXIT_STACK)
    return 0


# ---- script jobs --------------------------------------------------------------------------------


def _load_description(path: str):
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def _print_status(status: dict, *, as_json: bool) -> None:
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
        description = _load_description(args.job)
    except ValueError as error:
        return report_error(str(error), EXIT_INVALID)
    base_dir = Path.cwd() if args.job == "-" else Path(args.job).resolve().parent
    try:
        submitted = submit_script_job(
            description, deployment=settings.deployment("script-job"), base_dir=base_dir
        )
    except JobSpecError as error:
        return report_error(str(error), EXIT_INVALID)
    except ScriptJobError as error:
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


def cmd_demo(args: argparse.Namespace) -> int:
    from interlinked.demo import run_demo

    return run_demo(get_settings())


# ---- entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interlinked",
        description="Prefect dataflows for scientific analysis on AWS (or the local stack).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("up", help="start the local stack (idempotent)").set_defaults(func=cmd_up)
    commands.add_parser("down", help="stop what `up` started").set_defaults(func=cmd_down)
    env = commands.add_parser("env", help="print `export` lines (or --json) for the local stack")
    env.add_argument("--json", action="store_true", help="print the resource description as JSON")
    env.set_defaults(func=cmd_env)
    commands.add_parser("demo", help="bring the stack up and run every capability").set_defaults(
        func=cmd_demo
    )

    submit = commands.add_parser("submit", help="submit a script job described by JOB.json")
    submit.add_argument("job", metavar="JOB.json", help="job description file ('-' for stdin)")
    submit.add_argument("--wait", action="store_true", help="wait and print the result or the failure")
    submit.add_argument("--json", action="store_true", help="machine-readable output")
    submit.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits (default 3600)")
    submit.set_defaults(func=cmd_submit)

    status = commands.add_parser("status", help="show a job's state, times, result, log and UI link")
    status.add_argument("job_id", metavar="JOB_ID")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    from interlinked.commands import register

    register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
