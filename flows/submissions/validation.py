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
from dataclasses import dataclass, field
from typing import Any

SUBMISSION_KEY = re.compile(r"^(?P<group>[^/]+)/submissions/(?P<name>[^/]+\.json)$")
# A path segment we create from user input (the group): conservative on purpose.
SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+=@-]{0,127}$")
REQUIRED_FIELDS = ("dataname", "configname", "timestamp")
# NeuroCAAS's other submit fields: ``instance_type`` (the job's resources), ``resultpath`` (storage
# bypass), ``exitcode`` (written by the NeuroCAAS interface client). Any other field is accepted too
# and reported in the certificate: a submit file is never refused for carrying more.
KNOWN_FIELDS = (*REQUIRED_FIELDS, "instance_type", "resultpath", "exitcode")
CONFIG_EXTENSIONS = (".json", ".yaml", ".yml")
# Where a config may live: NeuroCAAS's own submits keep some under inputs/.
CONFIG_AREAS = ("configs", "inputs")
MAX_DATASETS = 100
MAX_TIMESTAMP = 128
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
    """One analysis run: a data file (or folder, key ending in '/') of the group's ``inputs/``.

    ``name`` is the raw basename NeuroCAAS names the status file with; ``label`` is unique per
    submission (a ``-2`` suffix for a repeated basename, ``_inst{n}`` for an ensemble run) and
    ``stem`` prefixes the run's outputs in the flat ``process_results/``."""

    key: str
    label: str
    jobnb: int | None = None  # the ensemble run number (NeuroCAAS's ``jobnb``), None outside ensembles
    stem: str = ""

    @property
    def is_directory(self) -> bool:
        return self.key.endswith("/")

    @property
    def name(self) -> str:
        return self.key.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Submission:
    bucket: str
    key: str
    group: str
    datasets: tuple[Dataset, ...]
    configname: str
    timestamp: str
    instance_type: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # fields beyond the required three

    @property
    def results_prefix(self) -> str:
        return results_prefix(self.group, self.bucket, self.timestamp)

    @property
    def job_name(self) -> str:
        return job_name(self.bucket, self.timestamp)


def job_name(bucket: str, timestamp: str) -> str:
    """NeuroCAAS's job name: ``job__{bucket}_{timestamp}`` (the results folder's name)."""
    return f"job__{bucket}_{timestamp}"


def results_prefix(group: str, bucket: str, timestamp: str) -> str:
    return f"{group}/results/{job_name(bucket, timestamp)}/"


def refusal_prefix(group: str, bucket: str, label: str, identity: str) -> str:
    """Where a refusal goes when no results folder can be named (no valid timestamp):
    ``job__{bucket}_{label}__refused-{8 hex of the identity}``."""
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
    """The timestamp as NeuroCAAS uses it: any text that is one path segment.

    Spaces, colons and the like are kept as they are (the folder is
    ``job__{bucket}_{timestamp}`` exactly, where the NeuroCAAS client and website look); a number
    (``int(time.time())``) is used as its decimal text. Refused: empty, longer than 128
    characters, ``/`` or ``\\``, control characters, ``.``/``..`` and ``__refused``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise SubmissionRefused(f"timestamp must be a string, got {type(value).__name__}", field="timestamp")
    problem = None
    if not value.strip():
        problem = "is empty"
    elif len(value) > MAX_TIMESTAMP:
        problem = f"is longer than {MAX_TIMESTAMP} characters"
    elif "/" in value or "\\" in value:
        problem = "contains '/' or '\\' (it names one folder)"
    elif _CONTROL.search(value):
        problem = "contains control characters"
    elif value in (".", "..") or "__refused" in value:
        problem = "is reserved"
    if problem:
        raise SubmissionRefused(
            f"timestamp {value!r} is not a safe path segment: it {problem}", field="timestamp"
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


def check_config_key(value: Any, *, group: str) -> str:
    """A config key: a ``.json``/``.yaml`` file under the group's ``configs/`` or ``inputs/``."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]  # storage-bypass style submits give a one-element list
    problems = []
    for area in CONFIG_AREAS:
        try:
            key = check_key(value, group=group, area=area, field="configname")
            break
        except SubmissionRefused as refused:
            problems.append(refused)
    else:
        # Say what is wrong with it as a configs/ key, unless it is only "not under configs/".
        first = problems[0]
        if "is not under" in first.reason:
            raise SubmissionRefused(
                f"configname {value!r} is not under {group}/configs/ or {group}/inputs/", field="configname"
            )
        raise first
    if not key.lower().endswith(CONFIG_EXTENSIONS):
        raise SubmissionRefused(
            f"configname {key!r} must be a .json or .yaml file (NeuroCAAS reads these two)",
            field="configname",
        )
    return key


def parse_submission(bucket: str, key: str, document: Any) -> Submission:
    """Validate a decoded submit file uploaded at ``key``; raise :class:`SubmissionRefused`.

    Fields beyond ``dataname``, ``configname`` and ``timestamp`` are kept in ``extras`` (the flow
    uses ``instance_type``, refuses ``resultpath`` unless storage bypass is set up, and reports the
    rest): a real NeuroCAAS submit file is never refused for carrying them."""
    group, _ = parse_submission_key(key)
    if not isinstance(document, dict):
        raise SubmissionRefused(f"the submit file must be a JSON object, got {type(document).__name__}")
    for name in REQUIRED_FIELDS:
        if name not in document:
            raise SubmissionRefused(f"{name} is missing from the submit file", field=name)
    timestamp = check_timestamp(document["timestamp"])
    instance_type = document.get("instance_type")
    if instance_type is not None and (not isinstance(instance_type, str) or not instance_type.strip()):
        raise SubmissionRefused(
            f"instance_type must be a non-empty string (e.g. 'm5.xlarge'), got {instance_type!r}",
            field="instance_type",
        )

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
    configname = check_config_key(document["configname"], group=group)
    return Submission(
        bucket=bucket,
        key=key,
        group=group,
        datasets=tuple(dataset_labels(keys)),
        configname=configname,
        timestamp=timestamp,
        instance_type=instance_type.strip() if instance_type else None,
        extras={name: value for name, value in document.items() if name not in REQUIRED_FIELDS},
    )


_COMPOUND = (".csv.gz", ".tsv.gz", ".json.gz", ".jsonl.gz", ".tar.gz", ".nii.gz")


def file_stem(name: str) -> str:
    """A file name without its extension (compound ones like ``.csv.gz`` included)."""
    lowered = name.lower()
    for compound in _COMPOUND:
        if lowered.endswith(compound) and len(name) > len(compound):
            return name[: -len(compound)]
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def dataset_labels(keys: list[str], *, ensemble_size: int | None = None) -> list[Dataset]:
    """One :class:`Dataset` per key (``ensemble_size`` runs of a single key for an ensemble).

    The label is the raw basename (what NeuroCAAS names the status file with), made unique with a
    ``-2``, ``-3`` suffix; the stem (basename without extension, made unique the same way) prefixes
    the run's files in the flat ``process_results/``."""
    labels: dict[str, int] = {}
    stems: dict[str, int] = {}
    datasets = []
    for key in keys:
        base = key.rstrip("/").rsplit("/", 1)[-1] or "dataset"
        count = labels.get(base, 0) + 1
        labels[base] = count
        label = base if count == 1 else f"{base}-{count}"
        stem = file_stem(base) if not key.endswith("/") else base
        stem_count = stems.get(stem, 0) + 1
        stems[stem] = stem_count
        stem = stem if stem_count == 1 else f"{stem}-{stem_count}"
        if ensemble_size:
            datasets.extend(
                Dataset(key=key, label=f"{label}_inst{n}", jobnb=n, stem=f"{stem}_inst{n}")
                for n in range(1, ensemble_size + 1)
            )
        else:
            datasets.append(Dataset(key=key, label=label, stem=stem))
    return datasets


def status_file_name(dataset: Dataset) -> str:
    """NeuroCAAS's per-dataset status file: ``DATASET_NAME:{basename}_STATUS.txt`` with the raw
    basename of the dataset (``_inst{n}`` added for an ensemble run, ``-2`` for a repeated name)."""
    return f"DATASET_NAME:{dataset.label}_STATUS.txt"
