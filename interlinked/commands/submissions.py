"""`interlinked submissions upload | watch`: S3 submissions (seed 003) from the command line.

    interlinked submissions upload GROUP DATA [DATA ...] CONFIG [--timestamp T] [--json]
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
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from interlinked.commands.common import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_STACK,
    report_error,
    use_stack_defaults,
)


class UploadError(ValueError):
    """Invalid input: nothing was uploaded."""


def analysis_s3(bucket: str | None = None) -> tuple[Any, str]:
    """An S3 client and the analysis bucket name, from the stack's blocks (endpoint included)."""
    from prefect_aws import AwsCredentials, S3Bucket

    import blocks

    credentials = AwsCredentials.load(blocks.AWS_CREDENTIALS)
    if bucket is None:
        bucket = S3Bucket.load(blocks.ANALYSIS_BUCKET).bucket_name
    return credentials.get_s3_client(), bucket


def default_timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"-{os.urandom(2).hex()}"


@dataclass
class Uploaded:
    bucket: str
    group: str
    timestamp: str
    submission_key: str
    datanames: list[str]
    configname: str
    results_path: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _exists(s3, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    if key.endswith("/"):
        return s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("KeyCount", 0) > 0
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def upload_submission(
    group: str,
    data: list[str],
    config: str,
    *,
    timestamp: str | None = None,
    s3=None,
    bucket: str | None = None,
) -> Uploaded:
    """Validate, upload inputs and config, then the submit file. Raises :class:`UploadError`."""
    from flows.analysis_registry import ConfigRefused, check_inputs, parse_config
    from flows.submission_validation import (
        SAFE_SEGMENT,
        SubmissionRefused,
        check_timestamp,
        parse_submission,
        results_prefix,
    )

    if not SAFE_SEGMENT.match(group) or ".." in group:
        raise UploadError(f"group {group!r} is not a safe name: use letters, digits and . _ : + = @ -")
    timestamp = timestamp or default_timestamp()
    try:
        check_timestamp(timestamp)
    except SubmissionRefused as error:
        raise UploadError(error.reason) from None
    config_path = Path(config)
    if not config_path.is_file():
        raise UploadError(f"config {config} is not a file")
    try:
        config_document = json.loads(config_path.read_text())
    except ValueError as error:
        raise UploadError(f"config {config} is not valid JSON: {error}") from None
    try:
        analysis_config = parse_config(config_document)
    except ConfigRefused as error:
        raise UploadError(str(error)) from None

    if s3 is None or bucket is None:
        s3, bucket = analysis_s3(bucket)
    plan: list[tuple[Path | None, str]] = []  # (local source, key) — directories expand below
    datanames = []
    for item in data:
        local = Path(item)
        if local.is_file():
            key = f"{group}/inputs/{local.name}"
            plan.append((local, key))
        elif local.is_dir():
            files = sorted(path for path in local.iterdir() if path.is_file())
            if not files:
                raise UploadError(f"data directory {item} has no files")
            key = f"{group}/inputs/{local.name}/"
            plan.extend((path, key + path.name) for path in files)
        elif item.startswith(f"{group}/inputs/"):
            if not _exists(s3, bucket, item):
                raise UploadError(f"data {item} is neither a local path nor an object in s3://{bucket}")
            key = item
        else:
            raise UploadError(
                f"data {item} is neither a local file or directory nor a key under {group}/inputs/"
            )
        datanames.append(key)
    try:
        check_inputs(analysis_config, datanames)
    except ConfigRefused as error:
        raise UploadError(str(error)) from None
    configname = f"{group}/configs/{config_path.name}"
    submission_key = f"{group}/submissions/submit_{timestamp}.json"
    document = {
        "dataname": datanames[0] if len(datanames) == 1 else datanames,
        "configname": configname,
        "timestamp": timestamp,
    }
    try:
        parse_submission(bucket, submission_key, document)  # exactly what the flow will check
    except SubmissionRefused as error:
        raise UploadError(error.reason) from None
    prefix = results_prefix(group, bucket, timestamp)
    if _exists(s3, bucket, prefix):
        raise UploadError(
            f"timestamp {timestamp!r} is already used: s3://{bucket}/{prefix} exists (results folders are immutable)"
        )

    for local, key in plan:
        s3.upload_file(str(local), bucket, key)
    s3.upload_file(str(config_path), bucket, configname)
    # Last: the submit file is what starts the job.
    s3.put_object(
        Bucket=bucket,
        Key=submission_key,
        Body=json.dumps(document, indent=2).encode(),
        ContentType="application/json",
    )
    return Uploaded(
        bucket=bucket,
        group=group,
        timestamp=timestamp,
        submission_key=submission_key,
        datanames=datanames,
        configname=configname,
        results_path=f"s3://{bucket}/{prefix}",
    )


def parse_results_path(path: str, default_bucket: str | None) -> tuple[str, str]:
    """``s3://bucket/prefix/`` or ``prefix/`` (in the analysis bucket) → ``(bucket, prefix/)``."""
    if path.startswith("s3://"):
        bucket, _, prefix = path[len("s3://") :].partition("/")
    else:
        if default_bucket is None:
            raise UploadError("give the results path as s3://bucket/...")
        bucket, prefix = default_bucket, path
    if not bucket or "/results/job__" not in f"/{prefix}":
        raise UploadError(f"{path} is not a results path ({{group}}/results/job__{{bucket}}_{{timestamp}}/)")
    return bucket, prefix.rstrip("/") + "/"


def watch_results(
    s3, bucket: str, prefix: str, *, timeout: float = 3600.0, interval: float = 1.0, out=None
) -> str | None:
    """Print the certificate as it grows until ``end.txt`` exists; return end.txt's status (or None)."""
    from botocore.exceptions import ClientError

    out = out or sys.stdout

    def read(key: str) -> str | None:
        try:
            return s3.get_object(Bucket=bucket, Key=prefix + key)["Body"].read().decode()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    deadline = time.monotonic() + timeout
    printed_header = False
    printed_lines = 0
    while True:
        end = read("process_results/end.txt")  # read first: the certificate is complete once end exists
        certificate = read("logs/certificate.txt")
        if certificate is not None:
            header, _, log = certificate.partition("\nlog:\n")
            if not printed_header:
                print(
                    "\n".join(line for line in header.splitlines() if not line.startswith("updated")),
                    file=out,
                )
                print("log:", file=out)
                printed_header = True
            lines = [line for line in log.splitlines() if line.strip()]
            for line in lines[printed_lines:]:
                print(line, file=out)
            printed_lines = max(printed_lines, len(lines))
            out.flush()
        if end is not None:
            status = end.splitlines()[0].strip() if end.strip() else "UNKNOWN"
            print(f"end.txt: {' — '.join(end.strip().splitlines())}", file=out)
            return status
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def cmd_upload(args: argparse.Namespace) -> int:
    use_stack_defaults()
    try:
        uploaded = upload_submission(
            args.group, args.data, args.config, timestamp=args.timestamp, bucket=args.bucket
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
        s3, default_bucket = analysis_s3(args.bucket)
        bucket, prefix = parse_results_path(args.results_path, default_bucket)
        status = watch_results(s3, bucket, prefix, timeout=args.timeout, interval=args.interval)
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
