"""Validation of a NeuroCAAS-style submit file (seed 003), before anything is read or run.

Pure functions (no AWS, no Prefect): the flow calls them first, and only paths they accept are ever
touched. A submission uploaded at ``{group}/submissions/{name}.json`` in bucket ``B`` is::

    {"dataname": "group/inputs/x.csv" | ["group/inputs/a.csv", ...],
     "configname": "group/configs/config.json",
     "timestamp": "any safe path segment"}

and its results go to ``{group}/results/job__{B}_{timestamp}/``. The group is taken from the
submission's own key; data and config must be keys of the same bucket under that group's
``inputs/`` and ``configs/``; no ``..``, ``.`` or empty segments, no absolute paths, no URLs, no
backslashes, no control characters. A refusal (:class:`SubmissionRefused`) says exactly why.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

SUBMISSION_KEY = re.compile(r"^(?P<group>[^/]+)/submissions/(?P<name>[^/]+\.json)$")
# A path segment we create from user input (timestamp, group): conservative on purpose.
SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+=@-]{0,127}$")
ALLOWED_FIELDS = ("dataname", "configname", "timestamp")
MAX_DATASETS = 100
MAX_KEY_LENGTH = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SubmissionRefused(ValueError):
    """The submission is refused; ``reason`` is what certificate.txt says."""

    def __init__(self, reason: str, *, field: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True)
class Dataset:
    key: str  # the S3 key (a 10x directory ends with '/')
    label: str  # unique per submission: names the status file and the output folder

    @property
    def is_directory(self) -> bool:
        return self.key.endswith("/")


@dataclass(frozen=True)
class Submission:
    bucket: str
    key: str
    group: str
    datasets: tuple[Dataset, ...]
    configname: str
    timestamp: str

    @property
    def results_prefix(self) -> str:
        return results_prefix(self.group, self.bucket, self.timestamp)


def results_prefix(group: str, bucket: str, timestamp: str) -> str:
    return f"{group}/results/job__{bucket}_{timestamp}/"


def refusal_prefix(group: str, bucket: str, label: str, identity: str) -> str:
    """Where a refusal goes when its own results folder cannot be used (no valid timestamp, or the
    timestamp belongs to another job): ``job__{bucket}_{label}__refused-{8 hex of the identity}``."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    return f"{group}/results/job__{bucket}_{label}__refused-{digest}/"


def safe_label(text: str) -> str:
    """A safe segment made from arbitrary text (for refusal folders)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")[:60]
    return cleaned or "submission"


def parse_submission_key(key: str) -> tuple[str, str]:
    """``(group, file name)`` of a submission key, or :class:`SubmissionRefused`."""
    found = SUBMISSION_KEY.match(key)
    if not found:
        raise SubmissionRefused(f"{key!r} is not a submission key ({{group}}/submissions/{{name}}.json)")
    group = found.group("group")
    if not SAFE_SEGMENT.match(group) or ".." in group:
        raise SubmissionRefused(
            f"group {group!r} (from the submission's key) is not a safe name: use letters, digits and . _ : + = @ -"
        )
    return group, found.group("name")


def check_timestamp(value: Any) -> str:
    if not isinstance(value, str):
        raise SubmissionRefused(f"timestamp must be a string, got {type(value).__name__}", field="timestamp")
    if not SAFE_SEGMENT.match(value) or ".." in value or "__refused" in value:
        raise SubmissionRefused(
            f"timestamp {value!r} is not a safe path segment: 1-128 characters, letters, digits and "
            ". _ : + = @ - (not starting with a symbol, no '..', no '/', no '__refused')",
            field="timestamp",
        )
    return value


def check_key(value: Any, *, group: str, area: str, field: str, allow_directory: bool = False) -> str:
    """A key under ``{group}/{area}/`` of the submission's own bucket, or a refusal naming why."""
    if not isinstance(value, str):
        raise SubmissionRefused(f"{field} must be a string, got {type(value).__name__}", field=field)
    if not value:
        raise SubmissionRefused(f"{field} is empty", field=field)
    if len(value) > MAX_KEY_LENGTH:
        raise SubmissionRefused(f"{field} is longer than {MAX_KEY_LENGTH} characters", field=field)
    if _CONTROL.search(value):
        raise SubmissionRefused(f"{field} contains control characters", field=field)
    if "://" in value or value.lower().startswith(("s3:", "arn:")):
        raise SubmissionRefused(
            f"{field} {value!r} is a URL; name a key of this bucket under {group}/{area}/ "
            "(a submission cannot read another bucket)",
            field=field,
        )
    if value.startswith("/"):
        raise SubmissionRefused(f"{field} {value!r} is an absolute path; use {group}/{area}/...", field=field)
    if "\\" in value:
        raise SubmissionRefused(f"{field} {value!r} contains a backslash", field=field)
    body = value[:-1] if allow_directory and value.endswith("/") else value
    segments = body.split("/")
    if ".." in segments:
        raise SubmissionRefused(
            f"{field} {value!r} contains '..' (path traversal is not allowed)", field=field
        )
    if any(segment in ("", ".") for segment in segments):
        raise SubmissionRefused(f"{field} {value!r} has an empty or '.' path segment", field=field)
    prefix = f"{group}/{area}/"
    if not value.startswith(prefix):
        owner = segments[0]
        if len(segments) > 1 and segments[1] == area and owner != group:
            raise SubmissionRefused(
                f"{field} {value!r} belongs to group {owner!r}; a submission of group {group!r} may only "
                f"read {prefix}",
                field=field,
            )
        raise SubmissionRefused(f"{field} {value!r} is not under {prefix}", field=field)
    if len(segments) < 3:
        raise SubmissionRefused(f"{field} {value!r} names the {area}/ folder itself, not a file", field=field)
    return value


def parse_submission(bucket: str, key: str, document: Any) -> Submission:
    """Validate a decoded submit file uploaded at ``key``; raise :class:`SubmissionRefused`."""
    group, _ = parse_submission_key(key)
    if not isinstance(document, dict):
        raise SubmissionRefused(f"the submit file must be a JSON object, got {type(document).__name__}")
    unknown = sorted(set(document) - set(ALLOWED_FIELDS))
    if unknown:
        raise SubmissionRefused(
            f"unknown field(s) {unknown} in the submit file (allowed: {', '.join(ALLOWED_FIELDS)})",
            field=unknown[0],
        )
    for name in ALLOWED_FIELDS:
        if name not in document:
            raise SubmissionRefused(f"{name} is missing from the submit file", field=name)
    timestamp = check_timestamp(document["timestamp"])

    dataname = document["dataname"]
    if isinstance(dataname, str):
        names = [dataname]
        fields = ["dataname"]
    elif isinstance(dataname, list):
        if not dataname:
            raise SubmissionRefused("dataname is an empty list", field="dataname")
        if len(dataname) > MAX_DATASETS:
            raise SubmissionRefused(
                f"dataname lists {len(dataname)} datasets; at most {MAX_DATASETS} per submission",
                field="dataname",
            )
        names = dataname
        fields = [f"dataname[{index}]" for index in range(len(dataname))]
    else:
        raise SubmissionRefused(
            f"dataname must be a string or a list of strings, got {type(dataname).__name__}", field="dataname"
        )
    keys = [
        check_key(name, group=group, area="inputs", field=field, allow_directory=True)
        for name, field in zip(names, fields, strict=True)
    ]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise SubmissionRefused(f"dataname lists {repeated[0]!r} more than once", field="dataname")
    configname = check_key(document["configname"], group=group, area="configs", field="configname")
    if not configname.endswith(".json"):
        raise SubmissionRefused(f"configname {configname!r} must be a .json file", field="configname")
    return Submission(
        bucket=bucket,
        key=key,
        group=group,
        datasets=tuple(dataset_labels(keys)),
        configname=configname,
        timestamp=timestamp,
    )


def dataset_labels(keys: list[str]) -> list[Dataset]:
    """Label each dataset by its file (or directory) name, made unique with a ``-2``, ``-3`` suffix."""
    seen: dict[str, int] = {}
    datasets = []
    for key in keys:
        base = key.rstrip("/").rsplit("/", 1)[-1]
        base = re.sub(r"[^A-Za-z0-9._:+=@-]", "_", base) or "dataset"
        count = seen.get(base, 0) + 1
        seen[base] = count
        datasets.append(Dataset(key=key, label=base if count == 1 else f"{base}-{count}"))
    return datasets


def status_file_name(dataset: Dataset) -> str:
    """NeuroCAAS-style per-dataset status file: ``DATASET_NAME:{file}_STATUS.txt``."""
    return f"DATASET_NAME:{dataset.label}_STATUS.txt"
