"""`interlinked submissions upload | watch`: S3 submissions (seed 003) from the command line.

    interlinked submissions upload GROUP DATA [DATA ...] CONFIG [--timestamp T] [--rerun] [--json]
    interlinked submissions watch RESULTS_PATH [--timeout S]

``upload`` checks everything it can before writing anything (the group and timestamp are safe
names, the config is JSON naming a registered analysis with valid parameters, the data can be
read by that analysis, the results folder is not taken yet), then puts the data under
``{group}/inputs/``, the config under ``{group}/configs/`` and finally the submit file under
``{group}/submissions/`` (which starts the job through the event bridge), and prints the results
path. DATA is a local file, a local 10x matrix directory, or the key of an object already under
``{group}/inputs/``. ``watch`` prints ``certificate.txt`` as it grows until ``end.txt`` appears.

Exit codes: 0 success, 1 the job did not complete (refused, failed, partial, or gave up waiting),
2 invalid input (nothing uploaded), 3 the stack or an AWS/Prefect call failed.
"""

from __future__ import annotations

import argparse
import json
import sys

from flows.submissions.client import UploadError, results_folder, upload_submission, watch_results
from interlinked.commands.common import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_STACK,
    report_error,
    use_stack_defaults,
)


def cmd_upload(args: argparse.Namespace) -> int:
    use_stack_defaults()
    try:
        uploaded = upload_submission(
            args.group, args.data, args.config, timestamp=args.timestamp, bucket=args.bucket, rerun=args.rerun
        )
    except UploadError as error:
        return report_error(str(error), EXIT_INVALID)
    except Exception as error:  # Prefect (blocks) or S3 unreachable
        return report_error(f"could not upload the submission: {type(error).__name__}: {error}", EXIT_STACK)
    if args.json:
        print(json.dumps(uploaded.as_dict(), indent=2))
    else:
        print(uploaded.results_path)
        print(
            f"submitted s3://{uploaded.bucket}/{uploaded.submission_key}; follow it with: "
            f"interlinked submissions watch {uploaded.results_path}",
            file=sys.stderr,
        )
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    use_stack_defaults()
    try:
        store, prefix = results_folder(args.results_path, args.bucket)
        status = watch_results(store, prefix, timeout=args.timeout, interval=args.interval)
    except UploadError as error:
        return report_error(str(error), EXIT_INVALID)
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        return report_error(f"could not read the results: {type(error).__name__}: {error}", EXIT_STACK)
    if status is None:
        return report_error(f"gave up waiting after {args.timeout:g} s (no end.txt yet)", EXIT_FAILED)
    return 0 if status == "COMPLETED" else EXIT_FAILED


def register(subparsers) -> None:
    """Add the ``submissions`` command to the ``interlinked`` argument parser."""
    parser = subparsers.add_parser(
        "submissions",
        help="S3 submissions (NeuroCAAS layout): upload inputs + config + submit file, watch results",
    )
    actions = parser.add_subparsers(dest="submissions_command", required=True, metavar="ACTION")

    upload = actions.add_parser(
        "upload", help="upload data, config and the submit file; print the results path"
    )
    upload.add_argument("group", metavar="GROUP", help="the group (first segment of every key)")
    upload.add_argument(
        "data",
        metavar="DATA",
        nargs="+",
        help="local file, local 10x directory, or a key under GROUP/inputs/ (several: one analysis each)",
    )
    upload.add_argument(
        "config", metavar="CONFIG", help='local config JSON: {"analysis": NAME, "params": {...}}'
    )
    upload.add_argument(
        "--timestamp", help="names the results folder (default: the current UTC time + 4 hex)"
    )
    upload.add_argument("--bucket", help="analysis bucket (default: the stack's)")
    upload.add_argument(
        "--rerun",
        action="store_true",
        help="re-use a timestamp that has results: the job re-runs there, the earlier results move to "
        "{group}/results/superseded/ (what a re-upload from the NeuroCAAS website does)",
    )
    upload.add_argument("--json", action="store_true", help="machine-readable output")
    upload.set_defaults(func=cmd_upload)

    watch = actions.add_parser("watch", help="print certificate.txt as it changes until end.txt appears")
    watch.add_argument(
        "results_path",
        metavar="RESULTS_PATH",
        help="s3://BUCKET/GROUP/results/job__.../ (or without s3://BUCKET/)",
    )
    watch.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds to wait for end.txt (default 3600)"
    )
    watch.add_argument("--interval", type=float, default=1.0, help="seconds between reads (default 1)")
    watch.add_argument(
        "--bucket", help="bucket for a path without s3:// (default: the stack's analysis bucket)"
    )
    watch.set_defaults(func=cmd_watch)


def main(argv: list[str] | None = None) -> int:
    """``python -m interlinked.commands.submissions ...``: the same commands without the main CLI."""
    parser = argparse.ArgumentParser(prog="interlinked")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
