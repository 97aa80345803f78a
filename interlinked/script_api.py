"""The seed's HTTP API (erikor/interlinked-lambda), served by the local stack: ``python -m
interlinked.script_api``.

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
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SEED_BUCKET = "interlinked"
MAX_BODY = 16 * 1024 * 1024
MAX_LOG_LINES = 5000
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+=@/ -]{0,1023}$")
_log_lock = threading.Lock()


class ApiError(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


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


def _store(payload: dict[str, Any]):
    """The store a request may use: the stack's data bucket (the seed's ``interlinked``)."""
    from blocks.s3 import data_store

    store = data_store()
    bucket = _text(payload, "bucket", required=False, default=SEED_BUCKET)
    if bucket not in (SEED_BUCKET, store.bucket):
        raise ApiError(
            f"bucket: {bucket!r} is not served here (use {SEED_BUCKET!r} or {store.bucket!r})", 403
        )
    return store


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


def _put(store, key: str, data: Any, zipped: bool) -> None:
    body = json.dumps(data).encode()
    extra = {"ContentEncoding": "gzip"} if zipped else {}
    store.put(key, gzip.compress(body) if zipped else body, content_type="application/json", **extra)


def submitjob(payload: dict[str, Any], deployment: str) -> tuple[int, Any]:
    from flows.script_jobs.client import submit_script_job
    from flows.script_jobs.layout import ScriptJobError
    from flows.script_jobs.spec import JobSpecError

    description = {name: unbox(payload[name]) for name in ("func", "name", "script") if name in payload}
    description["arguments"] = payload.get("arguments", {})
    if "debug" in payload:
        description["debug"] = _flag(payload, "debug")
    try:
        job = submit_script_job(description, deployment=deployment, allow_local=False)
    except (JobSpecError, ScriptJobError) as error:
        raise ApiError(str(error)) from None
    return 200, {"jobName": job.spec.name, "jobId": job.job_id, "flowRunId": job.flow_run_id}


def upload(payload: dict[str, Any]) -> tuple[int, Any]:
    store = _store(payload)
    if "data" not in payload:
        raise ApiError("data: missing (required)")
    _put(store, _key(payload), payload["data"], _flag(payload, "gzip"))
    return 200, "ok"


def bulk(payload: dict[str, Any]) -> tuple[int, Any]:
    store = _store(payload)
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
        _put(store, key, data, zipped)
    return 200, {"result": "ok", "stored": len(keys)}


def fetch(payload: dict[str, Any]) -> tuple[int, Any]:
    from blocks.s3 import ObjectMissing

    store = _store(payload)
    key = _key(payload)
    try:
        body = store.read_bytes(key)
    except ObjectMissing:
        raise ApiError(f"object {key} does not exist", 404) from None
    if _flag(payload, "gzip") or body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    return 200, body.decode("utf-8")


def exists(payload: dict[str, Any]) -> tuple[int, Any]:
    store = _store(payload)
    key = _key(payload)
    if store.head(key) is None:
        return 404, {"result": f"object {key} does not exist", "message": "Not Found"}
    return 200, {"result": "ok"}


def log(payload: dict[str, Any]) -> tuple[int, Any]:
    store = _store(payload)
    message = unbox(payload.get("message"))
    if message is None:
        raise ApiError("message: missing (required)")
    level = (_text(payload, "level", required=False, default="INFO") or "INFO").upper()
    if not re.fullmatch(r"[A-Z]{1,16}", level):
        raise ApiError(f"level: {level!r} is not a log level")
    key = f"log/{level}"
    line = f"{datetime.now(UTC).isoformat(timespec='milliseconds')} {level} {message}"
    with _log_lock:
        before = store.read_text(key, "")
        store.put_text(key, "\n".join([line, *before.splitlines()][:MAX_LOG_LINES]) + "\n")
    return 200, {"result": "ok", "key": f"s3://{store.bucket}/{key}"}


ROUTES = {"upload": upload, "bulk": bulk, "fetch": fetch, "exists": exists, "log": log}


def handle(path: str, body: bytes, deployment: str) -> tuple[int, Any]:
    """Answer one request (pure apart from S3 and Prefect): ``(status, JSON-able body)``."""
    name = path.strip("/").rsplit("/", 1)[-1]
    if name not in ROUTES and name != "submitjob":
        return 404, {"error": f"no endpoint {name!r} (endpoints: submitjob, {', '.join(ROUTES)})"}
    try:
        payload = json.loads(body or b"{}")
    except ValueError as error:
        return 400, {"error": f"the body is not JSON: {error}"}
    if not isinstance(payload, dict):
        return 400, {"error": "the body must be a JSON object"}
    try:
        return submitjob(payload, deployment) if name == "submitjob" else ROUTES[name](payload)
    except ApiError as error:
        return error.status, {"error": str(error)}


def serve(host: str, port: int, deployment: str, status_file: str | None = None) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                status, reply = 413, {"error": f"the body is larger than {MAX_BODY} bytes"}
            else:
                try:
                    status, reply = handle(self.path, self.rfile.read(length), deployment)
                except Exception as error:  # a bug or AWS error: say so, keep serving
                    status, reply = 500, {"error": f"{type(error).__name__}: {error}"}
            data = (reply if isinstance(reply, str) else json.dumps(reply)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    if status_file:
        from blocks.status import heartbeat, write_status

        def beat() -> None:
            while True:
                write_status(status_file, {**heartbeat(ready=True), "url": f"http://{host}:{port}/"})
                time.sleep(3)

        threading.Thread(target=beat, daemon=True).start()
    server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    from interlinked.settings import Settings

    parser = argparse.ArgumentParser(
        prog="python -m interlinked.script_api", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--status-file", help="heartbeat/readiness file (see blocks.status.service_ready)")
    args = parser.parse_args(argv)
    settings = Settings()
    serve(settings.host, settings.script_api_port, settings.deployment("script-job"), args.status_file)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
