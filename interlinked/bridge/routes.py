"""Routes: which event runs which deployment with which parameters — declared in one JSON file.

The default table is ``routes.json`` next to this module; ``INTERLINKED_BRIDGE_ROUTES`` names
another file. Format (stdlib JSON, so the Lambda needs no YAML parser)::

    {
      "ignore": [                                   # never runs, counted and logged at debug
        {"name": "own-results", "bucket": "{analysis}", "key_regex": "^[^/]+/results/",
         "reason": "a result written by interlinked"}
      ],
      "routes": [                                   # first match wins
        {
          "name": "submission",
          "match": {"source": "s3", "bucket": "{analysis}",
                    "key_regex": "^(?P<group>[^/]+)/submissions/[^/]+\\\\.json$"},
          "action": "dispatch",                     # or "emit": only a Prefect event (for triggers)
          "deployment": "process-submission/{deployment_set}",
          "parameters": {"bucket": "{bucket}", "key": "{key}", "etag": "{etag}"},
          "tags": ["submission", "group:{group}"],
          "flow_run_name": "{group}: {key_name}"
        },
        {"name": "script-job-message", "match": {"source": "message", "type": "script-job"}, ...}
      ]
    }

S3 matches take ``bucket`` and any of ``prefix``, ``suffix``, ``key_regex`` (named groups become
template variables) and ``events`` (default ``["ObjectCreated:*"]``). Message matches take
``type``. Templates: ``"{name}"`` alone is replaced by the value itself (an object, a list, null);
inside a longer string by its text. Settings variables: ``{data}``, ``{analysis}`` (bucket names
from ``INTERLINKED_DATA_BUCKET`` / ``INTERLINKED_ANALYSIS_BUCKET``) and ``{deployment_set}``
(``INTERLINKED_DEPLOYMENT_SET``, default ``local``). A ``bucket`` that is exactly ``"{analysis}"``
also matches every analysis's own bucket (``INTERLINKED_ANALYSIS_BUCKETS``, JSON analysis → bucket:
NeuroCAAS's "the bucket is the analysis"), which has the analysis bucket's layout. Event
variables: see :data:`S3_VARIABLES` and :data:`MESSAGE_VARIABLES`. An unknown variable is an error
when the file is loaded.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ROUTES_FILE = Path(__file__).with_name("routes.json")

SETTINGS_VARIABLES = ("data", "analysis", "deployment_set")
_COMMON = ("idempotency_key", "job_id", "shape", "route")
S3_VARIABLES = (
    *_COMMON,
    "bucket",
    "key",
    "key_name",
    "etag",
    "version_id",
    "sequencer",
    "size",
    "event_name",
    "event_time",
    "writer",  # userIdentity.principalId of the S3 notification (None when the event names none)
)
MESSAGE_VARIABLES = (*_COMMON, "type", "body", "payload", "message_id")
ACTIONS = ("dispatch", "emit")


class RoutesError(ValueError):
    """The routes file is invalid; the message names the file and the entry."""


@dataclass(frozen=True)
class IgnoreRule:
    name: str
    bucket: str
    reason: str
    prefix: str | None = None
    suffix: str | None = None
    key_regex: re.Pattern[str] | None = None
    also_buckets: frozenset[str] = frozenset()

    def matches(self, bucket: str, key: str) -> bool:
        return (bucket == self.bucket or bucket in self.also_buckets) and _key_matches(
            key, self.prefix, self.suffix, self.key_regex
        ) is not None


@dataclass(frozen=True)
class Route:
    name: str
    source: str  # "s3" | "message"
    action: str
    deployment: str | None
    parameters: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    flow_run_name: str | None = None
    bucket: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    key_regex: re.Pattern[str] | None = None
    events: tuple[str, ...] = ("ObjectCreated:*",)
    also_buckets: frozenset[str] = frozenset()
    message_type: str | None = None

    def match_s3(self, bucket: str, key: str, event_name: str) -> dict[str, str] | None:
        """Template variables from ``key_regex`` groups when the object event matches, else None."""
        if self.source != "s3" or (bucket != self.bucket and bucket not in self.also_buckets):
            return None
        if not any(fnmatch.fnmatchcase(event_name, pattern.removeprefix("s3:")) for pattern in self.events):
            return None
        return _key_matches(key, self.prefix, self.suffix, self.key_regex)

    def match_message(self, message_type: str) -> bool:
        return self.source == "message" and message_type == self.message_type


@dataclass(frozen=True)
class RouteTable:
    routes: tuple[Route, ...]
    ignore: tuple[IgnoreRule, ...]
    source: str
    variables: dict[str, str]

    def buckets(self) -> set[str]:
        return {
            bucket for route in self.routes if route.bucket for bucket in {route.bucket, *route.also_buckets}
        }

    def route_for_s3(self, bucket: str, key: str, event_name: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            groups = route.match_s3(bucket, key, event_name)
            if groups is not None:
                return route, groups
        return None

    def ignored(self, bucket: str, key: str) -> IgnoreRule | None:
        return next((rule for rule in self.ignore if rule.matches(bucket, key)), None)

    def route_for_message(self, message_type: str) -> Route | None:
        return next((route for route in self.routes if route.match_message(message_type)), None)


def _key_matches(
    key: str, prefix: str | None, suffix: str | None, key_regex: re.Pattern[str] | None
) -> dict[str, str] | None:
    if prefix is not None and not key.startswith(prefix):
        return None
    if suffix is not None and not key.endswith(suffix):
        return None
    if key_regex is None:
        return {}
    found = key_regex.search(key)
    if found is None:
        return None
    return {name: value for name, value in found.groupdict().items() if value is not None}


def settings_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{data}``, ``{analysis}``, ``{deployment_set}`` from the environment (same names and defaults
    as ``interlinked.settings``, without importing it: the Lambda stays stdlib + boto3)."""
    environ = os.environ if environ is None else environ
    return {
        "data": environ.get("INTERLINKED_DATA_BUCKET", "interlinked-data"),
        "analysis": environ.get("INTERLINKED_ANALYSIS_BUCKET", "interlinked-analysis"),
        "deployment_set": environ.get("INTERLINKED_DEPLOYMENT_SET", "local"),
    }


def analysis_bucket_names(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The analyses' own buckets from ``INTERLINKED_ANALYSIS_BUCKETS`` (JSON analysis → bucket, as
    ``flows.submissions.quotas.SubmissionSettings.analysis_buckets``, without importing it)."""
    environ = os.environ if environ is None else environ
    raw = environ.get("INTERLINKED_ANALYSIS_BUCKETS", "").strip()
    if not raw:
        return frozenset()
    try:
        mapping = json.loads(raw)
    except ValueError as error:
        raise RoutesError(f"INTERLINKED_ANALYSIS_BUCKETS is not JSON: {error}") from None
    if not isinstance(mapping, dict) or not all(
        isinstance(bucket, str) and bucket for bucket in mapping.values()
    ):
        raise RoutesError('INTERLINKED_ANALYSIS_BUCKETS must be a JSON object {"analysis": "bucket", ...}')
    return frozenset(mapping.values())


def load_routes(
    path: str | Path | None = None,
    *,
    variables: Mapping[str, str] | None = None,
    analysis_buckets: frozenset[str] | None = None,
) -> RouteTable:
    """Load and check a routes file (default: ``INTERLINKED_BRIDGE_ROUTES`` or ``routes.json``)."""
    path = Path(path or os.environ.get("INTERLINKED_BRIDGE_ROUTES") or DEFAULT_ROUTES_FILE)
    try:
        document = json.loads(path.read_text())
    except OSError as error:
        raise RoutesError(f"cannot read the routes file {path}: {error.strerror}") from None
    except ValueError as error:
        raise RoutesError(f"the routes file {path} is not JSON: {error}") from None
    return parse_routes(document, variables=variables, source=str(path), analysis_buckets=analysis_buckets)


def parse_routes(
    document: Any,
    *,
    variables: Mapping[str, str] | None = None,
    source: str = "<routes>",
    analysis_buckets: frozenset[str] | None = None,
) -> RouteTable:
    """``analysis_buckets`` (default: from the environment when ``variables`` is, else none) are
    matched wherever a bucket is ``"{analysis}"``."""
    if analysis_buckets is None:
        analysis_buckets = analysis_bucket_names() if variables is None else frozenset()
    variables = dict(settings_variables() if variables is None else variables)
    if not isinstance(document, dict):
        raise RoutesError(f"{source}: expected a JSON object with 'routes' (and optionally 'ignore')")
    unknown = set(document) - {"routes", "ignore", "description", "$comment"}
    if unknown:
        raise RoutesError(f"{source}: unknown top-level field(s) {sorted(unknown)}")
    raw_routes = document.get("routes")
    if not isinstance(raw_routes, list) or not raw_routes:
        raise RoutesError(f"{source}: 'routes' must be a non-empty list")
    routes = [
        _parse_route(entry, index, variables, source, analysis_buckets)
        for index, entry in enumerate(raw_routes)
    ]
    names = [route.name for route in routes]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RoutesError(f"{source}: route names must be unique; repeated: {duplicates}")
    raw_ignore = document.get("ignore", [])
    if not isinstance(raw_ignore, list):
        raise RoutesError(f"{source}: 'ignore' must be a list")
    ignore = [
        _parse_ignore(entry, index, variables, source, analysis_buckets)
        for index, entry in enumerate(raw_ignore)
    ]
    return RouteTable(routes=tuple(routes), ignore=tuple(ignore), source=source, variables=variables)


def _settings_only(value: Any, variables: Mapping[str, str], where: str) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RoutesError(f"{where} must be a string")
    names = template_names(value)
    unknown = names - set(variables)
    if unknown:
        raise RoutesError(
            f"{where}: unknown variable(s) {sorted(unknown)} (here only {list(SETTINGS_VARIABLES)} are known)"
        )
    return value.format_map(dict(variables))


def _compile(pattern: Any, where: str) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise RoutesError(f"{where} must be a string")
    try:
        return re.compile(pattern)
    except re.error as error:
        raise RoutesError(f"{where}: invalid regular expression: {error}") from None


def _also_buckets(raw: Any, analysis_buckets: frozenset[str]) -> frozenset[str]:
    """The analyses' own buckets where a bucket is exactly ``{analysis}``."""
    return analysis_buckets if isinstance(raw, str) and raw.strip() == "{analysis}" else frozenset()


def _parse_ignore(
    entry: Any, index: int, variables: Mapping[str, str], source: str, analysis_buckets: frozenset[str]
) -> IgnoreRule:
    where = f"{source}: ignore[{index}]"
    if not isinstance(entry, dict):
        raise RoutesError(f"{where} must be an object")
    unknown = set(entry) - {"name", "bucket", "prefix", "suffix", "key_regex", "reason"}
    if unknown:
        raise RoutesError(f"{where}: unknown field(s) {sorted(unknown)}")
    if not entry.get("bucket"):
        raise RoutesError(f"{where}: 'bucket' is required")
    return IgnoreRule(
        name=str(entry.get("name") or f"ignore-{index}"),
        bucket=_settings_only(entry["bucket"], variables, f"{where}.bucket"),
        reason=str(entry.get("reason") or "ignored by the routes file"),
        prefix=_settings_only(entry.get("prefix"), variables, f"{where}.prefix"),
        suffix=_settings_only(entry.get("suffix"), variables, f"{where}.suffix"),
        key_regex=_compile(entry.get("key_regex"), f"{where}.key_regex"),
        also_buckets=_also_buckets(entry["bucket"], analysis_buckets),
    )


def _parse_route(
    entry: Any, index: int, variables: Mapping[str, str], source: str, analysis_buckets: frozenset[str]
) -> Route:
    where = f"{source}: routes[{index}]"
    if not isinstance(entry, dict):
        raise RoutesError(f"{where} must be an object")
    unknown = set(entry) - {
        "name",
        "description",
        "match",
        "action",
        "deployment",
        "parameters",
        "tags",
        "flow_run_name",
    }
    if unknown:
        raise RoutesError(f"{where}: unknown field(s) {sorted(unknown)}")
    name = entry.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise RoutesError(f"{where}: 'name' must be a simple identifier (letters, digits, - _ .)")
    where = f"{source}: route {name!r}"
    match = entry.get("match")
    if not isinstance(match, dict):
        raise RoutesError(f"{where}: 'match' must be an object")
    kind = match.get("source")
    action = entry.get("action", "dispatch")
    if action not in ACTIONS:
        raise RoutesError(f"{where}: 'action' must be one of {list(ACTIONS)}")
    deployment = _settings_only(entry.get("deployment"), variables, f"{where}.deployment")
    if action == "dispatch" and (not deployment or deployment.count("/") != 1):
        raise RoutesError(f"{where}: 'deployment' must be '<flow name>/<deployment name>'")

    if kind == "s3":
        allowed = {"source", "bucket", "prefix", "suffix", "key_regex", "events"}
        event_variables = set(S3_VARIABLES)
    elif kind == "message":
        allowed = {"source", "type"}
        event_variables = set(MESSAGE_VARIABLES)
    else:
        raise RoutesError(f"{where}: match.source must be 's3' or 'message'")
    unknown = set(match) - allowed
    if unknown:
        raise RoutesError(f"{where}: unknown match field(s) {sorted(unknown)} for source {kind!r}")

    key_regex = _compile(match.get("key_regex"), f"{where}.match.key_regex") if kind == "s3" else None
    if key_regex is not None:
        event_variables |= set(key_regex.groupindex)
    known = event_variables | set(variables)

    parameters = entry.get("parameters", {})
    if not isinstance(parameters, dict):
        raise RoutesError(f"{where}: 'parameters' must be an object")
    tags = entry.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise RoutesError(f"{where}: 'tags' must be a list of strings")
    flow_run_name = entry.get("flow_run_name")
    if flow_run_name is not None and not isinstance(flow_run_name, str):
        raise RoutesError(f"{where}: 'flow_run_name' must be a string")
    for label, value in (("parameters", parameters), ("tags", tags), ("flow_run_name", flow_run_name)):
        unknown_names = _all_template_names(value) - known
        if unknown_names:
            raise RoutesError(
                f"{where}.{label}: unknown variable(s) {sorted(unknown_names)}; known: {sorted(known)}"
            )

    common = {
        "name": name,
        "action": action,
        "deployment": deployment,
        "parameters": parameters,
        "tags": tuple(tags),
        "flow_run_name": flow_run_name,
    }
    if kind == "s3":
        if not match.get("bucket"):
            raise RoutesError(f"{where}: match.bucket is required for S3 routes")
        events = match.get("events", ["ObjectCreated:*"])
        if not isinstance(events, list) or not all(isinstance(event, str) for event in events):
            raise RoutesError(f"{where}: match.events must be a list of event name patterns")
        return Route(
            source="s3",
            **common,
            bucket=_settings_only(match["bucket"], variables, f"{where}.match.bucket"),
            prefix=_settings_only(match.get("prefix"), variables, f"{where}.match.prefix"),
            suffix=_settings_only(match.get("suffix"), variables, f"{where}.match.suffix"),
            key_regex=key_regex,
            events=tuple(events),
            also_buckets=_also_buckets(match["bucket"], analysis_buckets),
        )
    if not isinstance(match.get("type"), str) or not match["type"]:
        raise RoutesError(f"{where}: match.type is required for message routes")
    return Route(source="message", **common, message_type=match["type"])


# ---- templates ---------------------------------------------------------------------------------

_FORMATTER = string.Formatter()
_WHOLE = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def template_names(text: str) -> set[str]:
    try:
        return {name for _, name, _, _ in _FORMATTER.parse(text) if name}
    except ValueError as error:
        raise RoutesError(f"invalid template {text!r}: {error}") from None


def _all_template_names(value: Any) -> set[str]:
    if isinstance(value, str):
        return template_names(value)
    if isinstance(value, dict):
        return set().union(*(_all_template_names(item) for item in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(_all_template_names(item) for item in value)) if value else set()
    return set()


def render(value: Any, variables: Mapping[str, Any]) -> Any:
    """Fill templates: ``"{x}"`` alone → the value of x itself; otherwise string formatting."""
    if isinstance(value, str):
        whole = _WHOLE.match(value)
        if whole:
            return variables[whole.group(1)]
        return value.format_map({name: "" if item is None else item for name, item in variables.items()})
    if isinstance(value, dict):
        return {name: render(item, variables) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [render(item, variables) for item in value]
    return value
