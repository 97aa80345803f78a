"""The submissions SDK: upload a submission (inputs, config, then the submit file) and watch its
results folder until ``end.txt`` appears. What ``interlinked submissions upload|watch`` call.

S3 access goes through :class:`blocks.s3.ObjectStore`: :func:`submissions_store` gives the stack's
analysis bucket (or another bucket, with the stack's credentials and endpoint).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.submissions.folder import CERTIFICATE, END

if TYPE_CHECKING:
    from blocks.s3 import ObjectStore

__all__ = [
    "UploadError",
    "Uploaded",
    "analysis_s3",
    "parse_results_path",
    "results_folder",
    "submissions_store",
    "upload_submission",
    "watch_results",
]


class UploadError(ValueError):
    """Invalid input: nothing was uploaded."""


def submissions_store(bucket: str | None = None) -> ObjectStore:
    """The bucket submissions go to: the stack's analysis bucket, or ``bucket`` when given."""
    from blocks.s3 import ObjectStore, analysis_store

    return analysis_store() if bucket is None else ObjectStore(bucket)


def analysis_s3(bucket: str | None = None) -> tuple[Any, str]:
    """``(boto3 S3 client, bucket name)`` of :func:`submissions_store`, for callers that use the
    client directly (the demo)."""
    store = submissions_store(bucket)
    return store.client, store.bucket


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


def upload_submission(
    group: str,
    data: list[str],
    config: str,
    *,
    timestamp: str | None = None,
    s3=None,
    bucket: str | None = None,
    rerun: bool = False,
) -> Uploaded:
    """Validate, upload inputs and config, then the submit file. Raises :class:`UploadError`.

    ``s3`` and ``bucket``: a boto3 client and the bucket to use (default: :func:`submissions_store`;
    ``bucket`` alone: that bucket with the stack's credentials). A timestamp that already has
    results is refused unless ``rerun`` (then the job re-runs there, as a re-upload does).
    """
    from blocks.s3 import ObjectStore
    from flows.submissions.quotas import analysis_for_bucket
    from flows.submissions.registry import (
        ConfigRefused,
        check_inputs,
        input_kind,
        parse_config,
        parse_config_text,
    )
    from flows.submissions.validation import (
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

    store = ObjectStore(bucket, s3) if s3 is not None and bucket is not None else submissions_store(bucket)
    bucket = store.bucket
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
            if not store.exists(item):
                raise UploadError(f"data {item} is neither a local path nor an object in s3://{bucket}")
            key = item
        else:
            raise UploadError(
                f"data {item} is neither a local file or directory nor a key under {group}/inputs/"
            )
        datanames.append(key)
    try:
        config_document = parse_config_text(config_path.read_bytes(), config_path.name)
        analysis_config = parse_config(
            config_document,
            bucket_analysis=analysis_for_bucket(bucket),
            kinds=[input_kind(key) for key in datanames],
        )
        check_inputs(analysis_config, datanames)
    except ConfigRefused as error:
        raise UploadError(str(error)) from None
    configname = f"{group}/configs/{config_path.name}"
    submission_key = f"{group}/submissions/submit_{timestamp}.json".replace(" ", "_")
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
    if store.prefix_exists(prefix) and not rerun:
        raise UploadError(
            f"timestamp {timestamp!r} is already used: s3://{bucket}/{prefix} exists (pass --rerun to run "
            "again there; the earlier results move to results/superseded/)"
        )

    for local, key in plan:
        store.upload(local, key)
    store.upload(config_path, configname)
    store.put_json(submission_key, document, indent=2)  # last: the submit file is what starts the job
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


def results_folder(path: str, bucket: str | None = None) -> tuple[ObjectStore, str]:
    """The bucket and prefix of a results path (``s3://BUCKET/PREFIX`` or a ``PREFIX`` in ``bucket``,
    by default the stack's analysis bucket), ready for :func:`watch_results`."""
    if bucket is None and not path.startswith("s3://"):
        bucket = submissions_store().bucket
    name, prefix = parse_results_path(path, bucket)
    return submissions_store(name), prefix


def watch_results(
    store: ObjectStore, prefix: str, *, timeout: float = 3600.0, interval: float = 1.0, out=None
) -> str | None:
    """Print the certificate's job-manager log as it grows until ``end.txt`` exists, then its
    per-dataset monitoring rows; return end.txt's status (or None on timeout)."""
    from flows.submissions.folder import DIVIDER

    out = out or sys.stdout

    def read(relative: str) -> str | None:
        return store.read_text(prefix + relative, None)

    deadline = time.monotonic() + timeout
    printed = 0
    while True:
        end = read(END)  # read first: the certificate is complete once end exists
        certificate = read(CERTIFICATE)
        if certificate is not None:
            _, _, log = certificate.partition("JOB MANAGER SETUP LOG:\n")
            lines = [line.split("\t [+")[0] for line in log.splitlines() if line.strip()]
            for line in lines[printed:]:
                print(line, file=out)
            printed = max(printed, len(lines))
            out.flush()
        if end is not None:
            if certificate is not None:
                parts = certificate.split("\n")
                marks = [i for i, line in enumerate(parts) if line == DIVIDER]
                if len(marks) >= 2:
                    for row in parts[marks[0] + 1 : marks[1]]:
                        print(row, file=out)
            status = end.splitlines()[0].strip() if end.strip() else "UNKNOWN"
            print(f"end.txt: {' — '.join(end.strip().splitlines())}", file=out)
            return status
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)
