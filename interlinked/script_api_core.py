"""The request handling of the seed's HTTP API (erikor/interlinked-lambda), shared by its two front
ends: the local stack's server (:mod:`interlinked.script_api`) and the AWS Lambda behind API
Gateway (:mod:`interlinked.script_api_lambda`).

Endpoints (all ``POST`` with a JSON body, as the seed's R template and README call them; every
string field may also come as a one-element array, which is what R's ``toJSON`` makes without
``auto_unbox``):

- ``submitjob`` ``{func, arguments, name, script, debug?}`` → the job is stored at
  ``s3://{data}/jobs/{id}.json`` and run as a script job (its script an object under
  ``scripts/``); the reply is ``{"jobName", "jobId", "flowRunId"}`` and the script sees
  ``LAMBDA_JOB_ID={id}``;
- ``upload`` ``{bucket, key, data, subdir?, gzip?}`` → ``data`` as JSON at ``{subdir/}{key}``; ``ok``;
- ``bulk`` ``{bucket, subdir?, gzip?, items: {key: data} | [{key, data}]}`` → each item as ``upload``;
- ``fetch`` ``{bucket, key, subdir?, gzip?}`` → the object's text;
- ``exists`` ``{bucket, key, subdir?}`` → 200 ``{"result": "ok"}`` or 404 with the reason;
- ``log`` ``{message, level?, bucket?}`` → prepends ``{time} {LEVEL} {message}`` to ``log/{LEVEL}``
  (the seed's ``log/DEBUG``), keeping the newest 5000 lines.

The seed's bucket ``interlinked`` is the stack's data bucket; no other bucket is served. Bad input
is a 400 with ``{"error": "..."}`` naming the field.

What differs between the front ends is behind :class:`Backend`: the data bucket's objects and how
a validated job description becomes a flow run. This module imports the standard library only,
so the Lambda package stays small (see ``tests/unit/test_layout.py``).
"""

from __future__ import annotations

import gzip
import json
import re
import threading
from datetime import UTC, datetime
from typing import Any, Protocol

SEED_BUCKET = "interlinked"
MAX_BODY = 16 * 1024 * 1024
MAX_LOG_LINES = 5000
ENDPOINTS = ("submitjob", "upload", "bulk", "fetch", "exists", "log")
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+=@/ -]{0,1023}$")
_log_lock = threading.Lock()


class ApiError(ValueError):
    """A request that cannot be served; ``status`` is the HTTP status the client gets."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Backend(Protocol):
    """The data bucket and the job submission of one front end."""

    bucket: str

    def put(self, key: str, body: bytes, *, content_type: str, content_encoding: str | None = None) -> None:
        """Write an object."""

    def read(self, key: str) -> bytes | None:
        """An object's bytes, or None when it does not exist."""

    def exists(self, key: str) -> bool:
        """Whether the object exists."""

    def submit(self, description: dict[str, Any]) -> dict[str, Any]:
        """Validate and run a job description; ``{"jobName", "jobId", "flowRunId"}``.

        Raises :class:`ApiError` for an invalid description or a script that is not there."""


def unbox(value: Any) -> Any:
    """A one-element array (R's ``toJSON`` without ``auto_unbox``) as its element."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _text(
    payload: dict[str, Any], name: str, *, required: bool = True, default: str | None = None
) -> str | None:
    value = unbox(payload.get(name, default))
    if value is None:
        if required:
            raise ApiError(f"{name}: missing (required)")
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(f"{name}: expected a non-empty string, got {json.dumps(value)[:80]}")
    return value


def _check_bucket(payload: dict[str, Any], backend: Backend) -> None:
    """A request may only use the stack's data bucket (the seed's ``interlinked``)."""
    bucket = _text(payload, "bucket", required=False, default=SEED_BUCKET)
    if bucket not in (SEED_BUCKET, backend.bucket):
        raise ApiError(
            f"bucket: {bucket!r} is not served here (use {SEED_BUCKET!r} or {backend.bucket!r})", 403
        )


def _key(payload: dict[str, Any], key: str | None = None) -> str:
    key = key if key is not None else _text(payload, "key")
    subdir = _text(payload, "subdir", required=False)
    full = f"{subdir.strip('/')}/{key}" if subdir else key
    full = full.replace("\\", "/")
    if not _KEY.match(full) or any(part in ("", ".", "..") for part in full.split("/")):
        raise ApiError(f"key: {full!r} is not a safe key (no '..', no empty segments)")
    return full


def _flag(payload: dict[str, Any], name: str) -> bool:
    value = unbox(payload.get(name, False))
    if not isinstance(value, bool):
        raise ApiError(f"{name}: expected true or false")
    return value


def _put(backend: Backend, key: str, data: Any, zipped: bool) -> None:
    body = json.dumps(data).encode()
    if zipped:
        backend.put(key, gzip.compress(body), content_type="application/json", content_encoding="gzip")
    else:
        backend.put(key, body, content_type="application/json")


def job_description(payload: dict[str, Any]) -> dict[str, Any]:
    """The job description of a ``submitjob`` body (validated by the backend's ``submit``)."""
    description = {name: unbox(payload[name]) for name in ("func", "name", "script") if name in payload}
    description["arguments"] = payload.get("arguments", {})
    if "debug" in payload:
        description["debug"] = _flag(payload, "debug")
    return description


def submitjob(payload: dict[str, Any], backend: Backend) -> tuple[int, Any]:
    return 200, backend.submit(job_description(payload))


def upload(payload: dict[str, Any], backend: Backend) -> tuple[int, Any]:
    _check_bucket(payload, backend)
    if "data" not in payload:
        raise ApiError("data: missing (required)")
    _put(backend, _key(payload), payload["data"], _flag(payload, "gzip"))
    return 200, "ok"


def bulk(payload: dict[str, Any], backend: Backend) -> tuple[int, Any]:
    _check_bucket(payload, backend)
    items = payload.get("items")
    if isinstance(items, dict):
        pairs = list(items.items())
    elif isinstance(items, list) and all(isinstance(i, dict) and "key" in i and "data" in i for i in items):
        pairs = [(unbox(i["key"]), i["data"]) for i in items]
    else:
        raise ApiError('items: expected {"key": data, ...} or [{"key": ..., "data": ...}, ...]')
    keys = [_key(payload, str(key)) for key, _ in pairs]  # all checked before any is written
    zipped = _flag(payload, "gzip")
    for key, (_, data) in zip(keys, pairs, strict=True):
        _put(backend, key, data, zipped)
    return 200, {"result": "ok", "stored": len(keys)}


def fetch(payload: dict[str, Any], backend: Backend) -> tuple[int, Any]:
    _check_bucket(payload, backend)
    key = _key(payload)
    body = backend.read(key)
    if body is None:
        raise ApiError(f"object {key} does not exist", 404)
    if _flag(payload, "gzip") or body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    return 200, body.decode("utf-8")


def exists(payload: dict[str, Any], backend: Backend) -> tuple[int, Any]:
    _check_bucket(payload, backend)
    key = _key(payload)
    if not backend.exists(key):
        return 404, {"result": f"object {key} does not exist", "message": "Not Found"}
    return 200, {"result": "ok"}


def log(payload: dict[str, Any], backend: Backend) -> tuple[int, Any]:
    _check_bucket(payload, backend)
    message = unbox(payload.get("message"))
    if message is None:
        raise ApiError("message: missing (required)")
    level = (_text(payload, "level", required=False, default="INFO") or "INFO").upper()
    if not re.fullmatch(r"[A-Z]{1,16}", level):
        raise ApiError(f"level: {level!r} is not a log level")
    key = f"log/{level}"
    line = f"{datetime.now(UTC).isoformat(timespec='milliseconds')} {level} {message}"
    # Serialized within one process; concurrent Lambda instances may each drop the other's line
    # (as the seed's read-modify-write did).
    with _log_lock:
        before = (backend.read(key) or b"").decode("utf-8", errors="replace")
        text = "\n".join([line, *before.splitlines()][:MAX_LOG_LINES]) + "\n"
        backend.put(key, text.encode(), content_type="text/plain; charset=utf-8")
    return 200, {"result": "ok", "key": f"s3://{backend.bucket}/{key}"}


ROUTES = {
    "submitjob": submitjob,
    "upload": upload,
    "bulk": bulk,
    "fetch": fetch,
    "exists": exists,
    "log": log,
}


def handle(path: str, body: bytes, backend: Backend) -> tuple[int, Any]:
    """Answer one request: ``(status, JSON-able body)``; the endpoint is the path's last segment
    (so an API Gateway stage prefix such as ``/Prod/upload`` is fine)."""
    name = path.strip("/").rsplit("/", 1)[-1]
    if name not in ROUTES:
        return 404, {"error": f"no endpoint {name!r} (endpoints: {', '.join(ENDPOINTS)})"}
    try:
        payload = json.loads(body or b"{}")
    except ValueError as error:
        return 400, {"error": f"the body is not JSON: {error}"}
    if not isinstance(payload, dict):
        return 400, {"error": "the body must be a JSON object"}
    try:
        return ROUTES[name](payload, backend)
    except ApiError as error:
        return error.status, {"error": str(error)}


def encode_reply(reply: Any) -> bytes:
    """The response body: a text reply (``upload``'s ``ok``, ``fetch``'s object) as it is, else JSON."""
    return (reply if isinstance(reply, str) else json.dumps(reply)).encode()
