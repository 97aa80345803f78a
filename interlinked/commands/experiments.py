"""`interlinked experiments import` and `interlinked request`: the analysis service from a shell.

Thin: argument parsing, output and exit codes; the work is in ``flows.analysis.client``.
Exit codes: 0 success, 1 the request got an error response (or no response in time), 2 invalid
input (nothing was sent), 3 the stack or an AWS/Prefect call failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from interlinked.commands.common import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_STACK,
    read_json_argument,
    report_error,
    use_stack_defaults,
)


def cmd_experiments_import(args: argparse.Namespace) -> int:
    if bool(args.file) == bool(args.example):
        return report_error("give either FILE.h5ad or --example NAME", EXIT_INVALID)
    if args.file and not Path(args.file).is_file():
        return report_error(f"cannot read {args.file}: no such file", EXIT_INVALID)
    use_stack_defaults()
    from flows.analysis.client import import_example, import_experiment
    from flows.analysis.protocol import ErrorCode, ServiceError

    try:
        if args.example:
            imported = import_example(args.example, args.id)
        else:
            imported = import_experiment(args.file, args.id)
    except ServiceError as error:
        code = (
            EXIT_INVALID
            if error.code in (ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_EXPERIMENT)
            else EXIT_STACK
        )
        return report_error(error.message, code)
    except Exception as error:
        return report_error(f"could not import the experiment: {type(error).__name__}: {error}", EXIT_STACK)
    if args.json:
        print(json.dumps(imported.__dict__, indent=2))
    else:
        print(f"experiment {imported.experiment_id}: {imported.cells} cells x {imported.genes} genes")
        print(f"  stored at {imported.uri} (version {imported.version})")
        print(
            f"  {imported.cell_sets} cell sets; embeddings: {', '.join(imported.embeddings) or 'none stored'}"
        )
    return 0


def _read_task(path: str):
    task = read_json_argument(path)
    if not isinstance(task, dict):
        raise ValueError(f"{path} must hold one task (a JSON object), got {type(task).__name__}")
    return task


def cmd_request(args: argparse.Namespace) -> int:
    try:
        task = _read_task(args.task)
    except ValueError as error:
        return report_error(str(error), EXIT_INVALID)
    use_stack_defaults()
    from flows.analysis.client import request

    try:
        [(sent, message_id, response)] = request(
            [task], wait=args.wait, timeout=args.timeout, group_id=args.group_id
        )
    except Exception as error:
        return report_error(f"could not send the task: {type(error).__name__}: {error}", EXIT_STACK)
    if not args.wait:
        print(json.dumps({"uuid": sent["uuid"], "messageId": message_id}))
        return 0
    if response is None:
        return report_error(
            f"no response to task {sent['uuid']} within {args.timeout:g} s (is the analysis service running?)",
            EXIT_FAILED,
        )
    print(json.dumps(response, indent=None if args.compact else 2))
    details = response["response"]
    if details.get("error"):
        print(f"{details.get('errorCode')}: {details.get('userMessage')}", file=sys.stderr)
        return EXIT_FAILED
    if details.get("resultKey"):
        print(
            f"(result too large for SNS: s3://{details.get('resultBucket')}/{details['resultKey']})",
            file=sys.stderr,
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    experiments = subparsers.add_parser("experiments", help="manage experiments of the analysis service")
    actions = experiments.add_subparsers(dest="experiments_command", required=True, metavar="ACTION")
    importing = actions.add_parser(
        "import",
        help="store an .h5ad as s3://{data}/experiments/ID/processed.h5ad",
        description="Store an AnnData file (or a bundled example) as an experiment of the analysis service.",
    )
    importing.add_argument("file", nargs="?", metavar="FILE.h5ad", help="the AnnData file")
    importing.add_argument("--id", required=True, help="experiment id (letters, digits, '.', '_', '-')")
    importing.add_argument(
        "--example", metavar="NAME", help="a bundled example instead of a file: pbmc68k_reduced"
    )
    importing.add_argument("--json", action="store_true", help="machine-readable output")
    importing.set_defaults(func=cmd_experiments_import)

    send = subparsers.add_parser(
        "request",
        help="send an analysis task (TASK.json) to the work queue; --wait prints the response",
        description=(
            "Send one task (the seed's JSON: uuid, experimentId, timeout, body) to the analysis "
            "service's work queue. A missing uuid is generated."
        ),
    )
    send.add_argument("task", metavar="TASK.json", help="task file ('-' for stdin)")
    send.add_argument("--wait", action="store_true", help="wait for the WorkResponse and print it")
    send.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits (default 300)")
    send.add_argument("--compact", action="store_true", help="print the response on one line")
    send.add_argument(
        "--group-id", help="FIFO message group (default: a new one per task; one group is answered in order)"
    )
    send.set_defaults(func=cmd_request)
