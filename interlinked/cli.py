"""The `interlinked` command: builds the parser from the command groups and dispatches.

The commands live in :mod:`interlinked.commands` (one module per group). Exit codes: 0 success,
1 the job failed, 2 invalid input (nothing was created), 3 the stack or an AWS/Prefect call failed.
"""

from __future__ import annotations

import argparse
import sys

from interlinked.commands import register
from interlinked.commands.common import EXIT_FAILED, EXIT_INVALID, EXIT_STACK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interlinked",
        description="Prefect dataflows for scientific analysis on AWS (or the local stack).",
    )
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


__all__ = ["EXIT_FAILED", "EXIT_INVALID", "EXIT_STACK", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
