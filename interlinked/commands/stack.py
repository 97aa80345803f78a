"""`interlinked up | down | env | demo`: the local stack (``interlinked.local``) and the demo.

Exit codes: 0 success, 1 the demo had a row that did not end as expected, 3 the stack failed.
"""

from __future__ import annotations

import argparse
import json
import sys

from interlinked.commands.common import EXIT_STACK, report_error
from interlinked.settings import get_settings


def _echo(line: str) -> None:
    print(line, file=sys.stderr)


def cmd_up(args: argparse.Namespace) -> int:
    from interlinked.local import StackError, up

    settings = get_settings()
    try:
        up(settings, echo=_echo)
    except StackError as error:
        return report_error(str(error), EXIT_STACK)
    print(f"Prefect UI: {settings.prefect_ui_url}")
    if settings.prefect_auth:
        from interlinked.local.parts import prefect_auth_file

        print(
            "Its login asks for PREFECT_API_AUTH_STRING as `interlinked env` prints it "
            f"(kept in {prefect_auth_file(settings)})"
        )
    print('Use it from a shell: eval "$(interlinked env)"; stop it with: interlinked down')
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from interlinked.local import StackError, down

    try:
        down(get_settings(), echo=_echo, wipe=args.wipe, keep_runs=args.keep_runs)
    except StackError as error:
        return report_error(str(error), EXIT_STACK)
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from interlinked.local import StackError, env_lines, read_description

    settings = get_settings()
    try:
        if args.json:
            print(json.dumps(read_description(settings), indent=2))
        else:
            print("\n".join(env_lines(settings)))
    except StackError as error:
        return report_error(str(error), EXIT_STACK)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from interlinked.demo import run_demo

    return run_demo(get_settings())


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``up``, ``down``, ``env`` and ``demo``."""
    subparsers.add_parser("up", help="start the local stack (idempotent)").set_defaults(func=cmd_up)
    down = subparsers.add_parser(
        "down", help="cancel the flow runs in flight and stop what `up` started (its data stays)"
    )
    down.add_argument(
        "--keep-runs",
        action="store_true",
        help="do not cancel the flow runs in flight: their processes go on without a worker and "
        "Prefect shows them Running",
    )
    down.add_argument(
        "--wipe",
        action="store_true",
        help="also delete the local state (PostgreSQL cluster, Prefect database, emulator state): "
        "the next `up` starts empty",
    )
    down.set_defaults(func=cmd_down)
    env = subparsers.add_parser("env", help="print `export` lines (or --json) for the local stack")
    env.add_argument("--json", action="store_true", help="print the resource description as JSON")
    env.set_defaults(func=cmd_env)
    subparsers.add_parser("demo", help="bring the stack up and run every capability").set_defaults(
        func=cmd_demo
    )
