"""The analysis service's wire contract (seed 001): task JSON in, WorkResponse out.

Pure and light (no scanpy, no Prefect, no AWS calls) so that the CLI, the service, the
``prepare-experiment`` flow and the tests share one definition of:

- the tasks and their body fields (:data:`TASK_FIELDS`), validated by :func:`parse_task`;
- the error codes (:class:`ErrorCode`) and :class:`ServiceError`;
- both ``timeout`` forms of the seed (``2021-01-01T00:00:00Z``, ``2099-12-31 00:00:00`` = UTC);
- the WorkResponse document (:func:`work_response`, :func:`error_response`);
- the S3 layout: experiments, the content-addressed result cache, the response records.

Body field names here are the wire's (camelCase); :mod:`flows.analysis.tasks` maps them onto
:mod:`analyses` parameters.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson comes with Prefect
    _orjson = None

# Bump when the result bodies the service builds from analysis results change shape: with
# ``analyses.ANALYSIS_VERSION`` it keys the result cache.
RESULT_FORMAT_VERSION = "2"

#: Largest SNS message (256 KiB, attributes included); bigger results go to S3 (an ``s3-path`` item).
SNS_MAX_BYTES = 256 * 1024
# Room kept for the message attributes and SNS' own envelope.
_SNS_MARGIN_BYTES = 4 * 1024

EXPERIMENTS_PREFIX = "experiments/"
RESULT_CACHE_PREFIX = "analysis-cache/"
RESPONSE_RECORD_PREFIX = "analysis-responses/"
PROCESSED_FILE = "processed.h5ad"

PREPARE_EXPERIMENT = "PrepareExperiment"
#: The real UI's "download the processed matrix" task: answered with the processed ``.h5ad`` itself.
DOWNLOAD_PROCESSED = "DownloadAnnotSeuratObject"
#: Media type of the processed ``.h5ad`` (an HDF5 file).
H5AD_CONTENT_TYPE = "application/x-hdf5"


class ErrorCode:
    """Stable ``errorCode`` values of error WorkResponses."""

    TASK_EXPIRED = "TASK_EXPIRED"
    UNKNOWN_TASK = "UNKNOWN_TASK"
    INVALID_REQUEST = "INVALID_REQUEST"
    EXPERIMENT_NOT_FOUND = "EXPERIMENT_NOT_FOUND"
    INVALID_EXPERIMENT = "INVALID_EXPERIMENT"
    UNKNOWN_CELL_SET = "UNKNOWN_CELL_SET"
    UNKNOWN_GENE = "UNKNOWN_GENE"
    EMBEDDING_UNAVAILABLE = "EMBEDDING_UNAVAILABLE"
    SOURCE_NOT_FOUND = "SOURCE_NOT_FOUND"
    SOURCE_NOT_ALLOWED = "SOURCE_NOT_ALLOWED"
    EXPERIMENT_EXISTS = "EXPERIMENT_EXISTS"
    MISSING_INPUT_FILE = "MISSING_INPUT_FILE"
    INVALID_INPUT_DATA = "INVALID_INPUT_DATA"
    NO_CELLS_LEFT = "NO_CELLS_LEFT"
    PREPARE_FAILED = "PREPARE_FAILED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    CELL_VALUES_UNAVAILABLE = "CELL_VALUES_UNAVAILABLE"
    EMPTY_CELL_SET = "EMPTY_CELL_SET"
    INTERNAL_ERROR = "INTERNAL_ERROR"


ALL_ERROR_CODES = tuple(value for name, value in vars(ErrorCode).items() if name.isupper())


class ServiceError(Exception):
    """A request that gets an error WorkResponse: ``code`` is its ``errorCode``, the message its
    ``userMessage`` (written for the person who sent the request)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UnparseableMessage(Exception):
    """A queue message that is not a task at all (not JSON, or not a JSON object): it cannot be
    answered, since a WorkResponse carries the original task; it goes to the dead-letter queue."""


# ---- tasks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One body field: its JSON types (as named in messages), whether it is required."""

    kinds: tuple[str, ...]
    required: bool = False


def _f(*kinds: str, required: bool = False) -> Field:
    return Field(kinds, required)


# Body fields per task (besides "name"), as the real Cellenics UI and API send them (sources:
# hms-dbmi-cellenics/api src/specs/models/work-request-bodies/*.v1.yaml and *.v2.yaml, the UI's
# redux actions) plus this service's own options. Fields not listed are accepted and ignored (the
# real worker ignores what it does not read); listed fields must have the listed JSON types.
# Values are checked further by the analyses themselves.
_NO_FIELDS: dict[str, Field] = {}
TASK_FIELDS: dict[str, dict[str, Field]] = {
    "GetEmbedding": {
        "type": _f("string", required=True),
        "config": _f(
            "object", "null"
        ),  # umap: minimumDistance, distanceMetric; tsne: perplexity, learningRate
        "useSaved": _f("boolean"),
        "computeIfMissing": _f("boolean"),
        "nNeighbors": _f("integer"),
        "randomState": _f("integer"),
    },
    "ListGenes": {
        "selectFields": _f("string list"),
        "orderBy": _f("string", "null"),
        "orderDirection": _f("string"),
        "offset": _f("integer"),
        "limit": _f("integer", "null"),
        "geneNamesFilter": _f("string", "null"),
    },
    "GeneExpression": {
        "genes": _f("string list", required=True),
        "cellSets": _f("string list", "null"),
        "scale": _f("boolean"),  # real UI: never true; expression is always the normalised data
        "downsampleSettings": _f("object", "null"),  # current UI; every cell is returned
    },
    "ClusterCells": {
        "type": _f("string"),
        "config": _f("object"),  # {resolution}
        "cellSetKey": _f("string"),
        "cellSetName": _f("string"),
        "resolution": _f("number"),
        "nNeighbors": _f("integer"),
        "randomState": _f("integer"),
    },
    "DifferentialExpression": {
        "cellSet": _f("string", "string list", required=True),
        "compareWith": _f("string", "string list"),
        "basis": _f("string", "null"),
        "comparisonType": _f("string"),
        "experimentId": _f("string"),
        "maxNum": _f("integer", "null"),
        "method": _f("string"),
        "correctionMethod": _f("string"),
        "nGenes": _f("integer", "null"),
        "genesOnly": _f("boolean"),
    },
    "MarkerGenes": {
        "groupBy": _f("string"),
        "nGenes": _f("integer"),
        "method": _f("string"),
    },
    "MarkerHeatmap": {
        "nGenes": _f("number"),
        "cellSetKey": _f("string"),
        "selectedCellSet": _f("string"),  # current UI's name of cellSetKey
    },
    "DotPlot": {
        "groupBy": _f("string", required=True),
        "filterBy": _f("object"),
        "useMarkerGenes": _f("boolean"),
        "numberOfMarkers": _f("integer"),
        "customGenesList": _f("string list"),
    },
    "GetExpressionCellSets": {
        "genesConfig": _f("object list", required=True),
        "config": _f("object"),
    },
    "GetNormalizedExpression": {"subsetBy": _f("object", "null")},
    "GetMitochondrialContent": _NO_FIELDS,
    "GetDoubletScore": _NO_FIELDS,
    "GetNGenes": _NO_FIELDS,
    "GetNUmis": _NO_FIELDS,
    # api WorkRequestGetBackgroundExpressedGenes.v2.yaml; the UI sends DifferentialExpression's body
    "GetBackgroundExpressedGenes": {
        "cellSet": _f("string", required=True),
        "compareWith": _f("string", required=True),
        "basis": _f("string", "null"),
        "comparisonType": _f("string"),
        "experimentId": _f("string"),
    },
    # api WorkRequestBatchDifferentialExpression.v2.yaml, ui getBatchDiffExpr.js
    "BatchDifferentialExpression": {
        "cellSet": _f("string list", required=True),
        "basis": _f("string list", required=True),
        "compareWith": _f("string"),
        "comparisonType": _f("string"),
        "experimentId": _f("string"),
    },
    # worker cell_cycle_scoring.py: the body is the name alone (the API and JWT come with the envelope)
    "CellCycleScoring": _NO_FIELDS,
    # api WorkRequestScTypeAnnotate.v2.yaml, ui runCellSetsAnnotation.js
    "ScTypeAnnotate": {"species": _f("string", required=True), "tissue": _f("string", required=True)},
    # api WorkRequestTrajectoryAnalysisGet{StartingNodes,PseudoTime}.v2.yaml
    "GetTrajectoryAnalysisStartingNodes": {
        "embedding": _f("object", required=True),  # {ETag, method, methodSettings}
        "clustering": _f("object", required=True),  # {method, resolution}
        "cellSets": _f("string list", required=True),
    },
    "GetTrajectoryAnalysisPseudoTime": {
        "embedding": _f("object", required=True),
        "clustering": _f("object", required=True),
        "cellSets": _f("string list", required=True),
        "rootNodes": _f("integer list", required=True),
    },
    # api WorkRequestDownloadAnnotSeuratObject.v2.yaml; ui downloadProcessedMatrix.js adds isObj2s,
    # the real API adds embeddingETag. Answered with the processed .h5ad, which holds every
    # embedding and cell set of the experiment, so none of them is needed.
    DOWNLOAD_PROCESSED: {
        "embeddingMethod": _f("string"),
        "isObj2s": _f("boolean"),
        "embeddingETag": _f("string", "null"),
    },
    PREPARE_EXPERIMENT: {
        "sourceBucket": _f("string", required=True),
        "sourceMatrixPath": _f("string", required=True),
        "config": _f("object"),
        "overwrite": _f("boolean"),  # ours: replace an existing experiment of that id
    },
}
#: Result media types other than JSON (the real worker's GetNormalizedExpression sends a CSV file).
RESULT_CONTENT_TYPES: dict[str, str] = {
    "GetNormalizedExpression": "text/csv",
    DOWNLOAD_PROCESSED: H5AD_CONTENT_TYPE,
}

#: Tasks whose responses must not be cached (``cacheable: false``), as in the real worker.
NOT_CACHEABLE: frozenset[str] = frozenset(
    {"ClusterCells", "GetExpressionCellSets", "CellCycleScoring", "ScTypeAnnotate"}
)
TASK_NAMES: tuple[str, ...] = tuple(TASK_FIELDS)

EXPERIMENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Task:
    """A validated task: the original JSON plus what the service needs from it."""

    request: dict[str, Any]
    name: str
    experiment_id: str
    body: dict[str, Any]
    deadline: datetime | None

    @property
    def uuid(self) -> str:
        """The request's id: ``uuid`` (SNS-era envelope) or ``ETag`` (current envelope)."""
        return str(self.request.get("uuid") or self.request.get("ETag"))

    @property
    def current_envelope(self) -> bool:
        """The current Cellenics envelope (``ETag``, no ``uuid``): the result goes to S3 under the
        ETag and the notification carries its ``signedUrl``."""
        return "uuid" not in self.request and isinstance(self.request.get("ETag"), str)

    @property
    def pagination(self) -> dict[str, Any] | None:
        """The page asked for: the SNS-era envelope's ``pagination``; in the current envelope
        ``requestProps.pagination``, where the current UI puts it (ui src/utils/work/fetchWork.js
        passes ``extras`` as ``requestProps``) and the current worker reads it (worker
        python/src/worker/tasks/differential_expression.py), else the top-level ``pagination`` the
        real API's WorkRequest.v2.yaml documents."""
        if self.current_envelope:
            props = self.request.get("requestProps") or {}
            if props.get("pagination"):
                return props["pagination"]
        return self.request.get("pagination") or None

    @property
    def content_type(self) -> str:
        """The media type of this task's result."""
        return RESULT_CONTENT_TYPES.get(self.name, RESULT_CONTENT_TYPE)

    @property
    def cacheable(self) -> bool:
        return self.name not in NOT_CACHEABLE

    def expired(self, now: datetime | None = None) -> bool:
        return self.deadline is not None and (now or datetime.now(UTC)) >= self.deadline


def decode_message(text: str | bytes) -> dict[str, Any]:
    """The JSON object of a queue message, or :class:`UnparseableMessage` saying why not."""
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        preview = text[:80] if isinstance(text, str) else text[:80].decode("utf-8", "replace")
        raise UnparseableMessage(f"the message is not JSON ({error}); it starts with {preview!r}") from None
    if not isinstance(value, dict):
        raise UnparseableMessage(
            f"the message is JSON but not an object (a task); got {type(value).__name__}"
        )
    return value


def parse_timeout(value: object) -> datetime | None:
    """A task's ``timeout`` as an aware UTC datetime (``None`` when absent).

    Accepts ISO 8601 with ``T`` or a space, with ``Z``, an offset or none (then UTC).
    """
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"timeout must be a date-time string like '2099-12-31 00:00:00' or '2021-01-01T00:00:00Z', got {value!r}",
        )
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"timeout {value!r} is not a date-time; use '2099-12-31 00:00:00' (UTC) or '2021-01-01T00:00:00Z'",
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_task(request: dict[str, Any], *, check_expiry: bool = True) -> Task:
    """Validate a task (the decoded message) and return it; :class:`ServiceError` otherwise.

    Order of checks: the envelope (``uuid``, ``experimentId``, ``body.name``), the task name
    (``UNKNOWN_TASK``), the ``timeout`` (``TASK_EXPIRED`` when past), then the body's fields.
    """
    uuid = request.get("uuid", request.get("ETag"))
    if not isinstance(uuid, str) or not uuid:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"uuid (or the current envelope's ETag) must be a non-empty string, got {uuid!r}",
        )
    body = request.get("body")
    if not isinstance(body, dict):
        raise ServiceError(
            ErrorCode.INVALID_REQUEST, f"body must be an object with the task's 'name', got {body!r}"
        )
    name = body.get("name")
    if not isinstance(name, str):
        raise ServiceError(ErrorCode.INVALID_REQUEST, f"body.name must be the task name, got {name!r}")
    if name not in TASK_FIELDS:
        raise ServiceError(
            ErrorCode.UNKNOWN_TASK, f"Unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}"
        )
    experiment_id = request.get("experimentId")
    if not isinstance(experiment_id, str) or not EXPERIMENT_ID_PATTERN.match(experiment_id):
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            "experimentId must be 1-128 letters, digits, '.', '_' or '-' (starting with a letter or "
            f"digit), got {experiment_id!r}",
        )
    deadline = parse_timeout(request.get("timeout"))
    if check_expiry and deadline is not None and datetime.now(UTC) >= deadline:
        raise ServiceError(
            ErrorCode.TASK_EXPIRED,
            f"The task expired at {deadline.isoformat().replace('+00:00', 'Z')} before it could be "
            "started; send it again with a later timeout",
        )
    _check_body(name, body)
    check_pagination(request.get("pagination"))
    props = request.get("requestProps")
    if props is not None and not isinstance(props, dict):
        raise ServiceError(ErrorCode.INVALID_REQUEST, f"requestProps must be an object, got {props!r}")
    check_pagination((props or {}).get("pagination"), field="requestProps.pagination")
    return Task(request=request, name=name, experiment_id=experiment_id, body=body, deadline=deadline)


def _check_body(name: str, body: dict[str, Any]) -> None:
    fields = TASK_FIELDS[name]
    for field_name, field in fields.items():
        if field_name not in body:
            if field.required:
                raise ServiceError(
                    ErrorCode.INVALID_REQUEST, f"{name}: body field {field_name!r} is required"
                )
            continue
        value = body[field_name]
        if not any(_is_kind(value, kind) for kind in field.kinds):
            raise ServiceError(
                ErrorCode.INVALID_REQUEST,
                f"{name}: body field {field_name!r} must be {' or '.join(field.kinds)}, got {value!r}",
            )


_PAGINATION_FIELDS = {
    "orderBy": "string",
    "orderDirection": "string",
    "offset": "integer",
    "limit": "integer",
    "responseKey": "integer",
}


def check_pagination(pagination: object, *, field: str = "pagination") -> None:
    """Validate a ``pagination`` (real API: ``WorkRequest.v1.yaml`` / ``WorkRequest.v2.yaml``):
    ``orderBy``, ``orderDirection`` (ASC/DESC), ``offset``, ``limit`` (>= 0), ``responseKey``,
    ``filters``: text ``{columnName, type: "text", expression}`` or numeric ``{columnName, type:
    "numeric", comparison: greaterThan | lessThan, value}``. ``field`` names it in errors."""
    if pagination is None:
        return
    if not isinstance(pagination, dict):
        raise ServiceError(ErrorCode.INVALID_REQUEST, f"{field} must be an object, got {pagination!r}")
    for key, kind in _PAGINATION_FIELDS.items():
        if key not in pagination:
            if key != "responseKey":
                raise ServiceError(ErrorCode.INVALID_REQUEST, f"{field}.{key} is required")
            continue
        value = pagination[key]
        if not _is_kind(value, kind) or (kind == "integer" and value < 0):
            raise ServiceError(
                ErrorCode.INVALID_REQUEST,
                f"{field}.{key} must be {'a non-negative integer' if kind == 'integer' else 'a string'}, "
                f"got {value!r}",
            )
    if str(pagination["orderDirection"]).upper() not in ("ASC", "DESC"):
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"{field}.orderDirection must be ASC or DESC, got {pagination['orderDirection']!r}",
        )
    filters = pagination.get("filters") or []
    if not isinstance(filters, list) or not all(
        isinstance(item, dict) and isinstance(item.get("columnName"), str) for item in filters
    ):
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"{field}.filters must be a list of {{columnName, type, ...}} objects",
        )
    for item in filters:
        if item.get("type") == "text" and not isinstance(item.get("expression"), str):
            raise ServiceError(
                ErrorCode.INVALID_REQUEST, f"{field}.filters: a text filter needs a string expression"
            )
        if item.get("type") == "numeric" and (
            item.get("comparison") not in ("greaterThan", "lessThan")
            or not _is_kind(item.get("value"), "number")
        ):
            raise ServiceError(
                ErrorCode.INVALID_REQUEST,
                f"{field}.filters: a numeric filter needs comparison greaterThan or lessThan and a number "
                f"value, got {item!r}",
            )
        if item.get("type") not in ("text", "numeric"):
            raise ServiceError(
                ErrorCode.INVALID_REQUEST,
                f"{field}.filters: type must be 'text' or 'numeric', got {item.get('type')!r}",
            )


def _is_kind(value: object, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "string list":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "object list":
        return isinstance(value, list) and all(isinstance(item, dict) for item in value)
    if kind == "integer list":
        return isinstance(value, list) and all(_is_kind(item, "integer") for item in value)
    raise AssertionError(kind)


# ---- responses ----------------------------------------------------------------------------------


#: Media type and encoding of every result item (the real worker's ``Result`` defaults).
RESULT_CONTENT_TYPE = "application/json"
RESULT_CONTENT_ENCODING = "utf-8"


def result_item(
    body: str, *, where: str = "inline", content_type: str = RESULT_CONTENT_TYPE
) -> dict[str, str]:
    """One ``results`` item in the real worker's format: ``type`` is ``inline`` (``body`` is the
    result's JSON text) or ``s3-path`` (``body`` is ``"<bucket>/<key>"`` of that text)."""
    return {
        "content-type": content_type,
        "content-encoding": RESULT_CONTENT_ENCODING,
        "type": where,
        "body": body,
    }


def work_response(
    request: dict[str, Any], body: str, *, cacheable: bool = True, content_type: str = RESULT_CONTENT_TYPE
) -> dict[str, Any]:
    """A successful WorkResponse carrying ``body`` (JSON text, or ``content_type``) inline."""
    return {
        "type": "WorkResponse",
        "request": request,
        "response": {"error": False, "errorCode": None, "userMessage": None, "cacheable": cacheable},
        "results": [result_item(body, content_type=content_type)],
    }


def offloaded_response(
    request: dict[str, Any],
    *,
    bucket: str,
    key: str,
    cacheable: bool = True,
    content_type: str = RESULT_CONTENT_TYPE,
) -> dict[str, Any]:
    """A successful WorkResponse whose result is too large for SNS and lives at ``s3://bucket/key``:
    its item is ``{"type": "s3-path", "body": "bucket/key"}`` (the real API reads it from there)."""
    return {
        "type": "WorkResponse",
        "request": request,
        "response": {"error": False, "errorCode": None, "userMessage": None, "cacheable": cacheable},
        "results": [result_item(f"{bucket}/{key}", where="s3-path", content_type=content_type)],
    }


def file_response(
    request: dict[str, Any], *, bucket: str, key: str, signed_url: str | None = None
) -> dict[str, Any]:
    """The WorkResponse of :data:`DOWNLOAD_PROCESSED`: an ``s3-path`` item naming the ``.h5ad`` as
    it is (``content-encoding: identity``, not gzip: the current UI saves the downloaded bytes
    as they come, as it does the real worker's ``.rds``), and for the current envelope its
    ``signedUrl``."""
    response: dict[str, Any] = {
        "error": False,
        "errorCode": None,
        "userMessage": None,
        "cacheable": True,
    }
    if signed_url is not None:
        response["signedUrl"] = signed_url
    item = {
        **result_item(f"{bucket}/{key}", where="s3-path", content_type=H5AD_CONTENT_TYPE),
        "content-encoding": "identity",
    }
    return {"type": "WorkResponse", "request": request, "response": response, "results": [item]}


def current_response(
    request: dict[str, Any],
    *,
    bucket: str | None,
    key: str | None,
    signed_url: str | None,
    body: str | None = None,
    cacheable: bool = True,
    content_type: str = RESULT_CONTENT_TYPE,
) -> dict[str, Any]:
    """The WorkResponse of a current-envelope request (``ETag``): ``response.signedUrl`` is what the
    current Cellenics UI downloads (the gzip result stored under the ETag, as the real worker's
    ``Response._upload``); ``results`` names the same object (``s3-path``, ``content-encoding:
    gzip``), or carries ``body`` inline when the result is not stored (not cacheable)."""
    if key is not None:
        item = {
            **result_item(f"{bucket}/{key}", where="s3-path", content_type=content_type),
            "content-encoding": "gzip",
        }
    else:
        item = result_item(body or "null", content_type=content_type)
    return {
        "type": "WorkResponse",
        "request": request,
        "response": {
            "error": False,
            "errorCode": None,
            "userMessage": None,
            "cacheable": cacheable,
            "signedUrl": signed_url,
        },
        "results": [item],
    }


def s3_path_of(item: dict[str, Any]) -> tuple[str, str] | None:
    """``(bucket, key)`` of an ``s3-path`` result item, ``None`` for an inline one."""
    if item.get("type") != "s3-path":
        return None
    bucket, _, key = str(item["body"]).partition("/")
    return bucket, key


def error_response(request: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    return {
        "type": "WorkResponse",
        "request": request,
        "response": {"error": True, "errorCode": code, "userMessage": message, "cacheable": False},
        "results": [],
    }


def encode(document: Any) -> str:
    """Compact JSON text of a result or response.

    Uses orjson (a Prefect dependency): result bodies of large experiments hold millions of floats,
    which it encodes about ten times faster than the standard library. Non-finite floats become
    ``null``, the convention of :mod:`analyses` (which already returns ``None`` for them).
    """
    if _orjson is not None:
        try:
            return _orjson.dumps(document).decode()
        except TypeError:  # a type orjson does not know: let json raise its own message
            pass
    return json.dumps(_finite(document), separators=(",", ":"), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def fits_sns(message: str) -> bool:
    return len(message.encode()) <= SNS_MAX_BYTES - _SNS_MARGIN_BYTES


def response_attributes(request: dict[str, Any], response: dict[str, Any]) -> dict[str, str]:
    """SNS message attributes of a WorkResponse (for subscription filter policies)."""
    body = request.get("body") if isinstance(request.get("body"), dict) else {}
    attributes = {
        "type": "WorkResponse",
        "error": "true" if response["response"]["error"] else "false",
    }
    for name, value in (
        ("uuid", request.get("uuid") or request.get("ETag")),
        ("experimentId", request.get("experimentId")),
        ("taskName", body.get("name")),
        ("errorCode", response["response"].get("errorCode")),
    ):
        if isinstance(value, str) and value:
            attributes[name] = value[:256]
    return attributes


# ---- S3 layout ----------------------------------------------------------------------------------


def experiment_key(experiment_id: str) -> str:
    return f"{EXPERIMENTS_PREFIX}{experiment_id}/{PROCESSED_FILE}"


def cache_key(*, experiment_id: str, version: str, body: dict[str, Any], analysis_version: str) -> str:
    """Content address of a result: experiment version + request body + analysis version."""
    material = json.dumps(
        {
            "experiment": experiment_id,
            "version": version,
            "body": body,
            "analysis": analysis_version,
            "format": RESULT_FORMAT_VERSION,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(material.encode()).hexdigest()
    return f"{RESULT_CACHE_PREFIX}{experiment_id}/{digest}.json"


def page_key(key: str, pagination: dict[str, Any]) -> str:
    """Where one page (``pagination``) of the result at ``key`` is stored when it is offloaded."""
    digest = hashlib.sha256(json.dumps(pagination, sort_keys=True).encode()).hexdigest()[:16]
    return f"{key.removesuffix('.json')}-page-{digest}.json"


def response_record_key(response_id: str) -> str:
    """Where the record "a response to this delivery was published" lives."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", response_id)[:200]
    return f"{RESPONSE_RECORD_PREFIX}{safe}.json"


def response_record(
    response_id: str, response: dict[str, Any], sns_message_id: str, *, by: str
) -> dict[str, Any]:
    """The record "the response to delivery ``response_id`` was published as ``sns_message_id``"
    (stored at :func:`response_record_key` by whoever published it)."""
    return {
        "messageId": response_id,
        "uuid": response["request"].get("uuid"),
        "snsMessageId": sns_message_id,
        "error": response["response"]["error"],
        "errorCode": response["response"].get("errorCode"),
        "publishedAt": datetime.now(UTC).isoformat(),
        "by": by,
    }


def request_identity(request: dict[str, Any]) -> str:
    """A stable id of a request when no queue message id is known (uuid + body hash)."""
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]
    return f"{request.get('uuid', 'no-uuid')}-{digest}"
