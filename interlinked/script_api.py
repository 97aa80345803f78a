"""The seed's HTTP API (erikor/interlinked-lambda), served by the local stack: ``python -m
interlinked.script_api``.

The endpoints and their rules are :mod:`interlinked.script_api_core` (shared with the AWS Lambda
behind API Gateway, :mod:`interlinked.script_api_lambda`); here the data bucket is the saved
``S3Bucket`` block's and a job becomes a flow run through the Prefect client
(:func:`flows.script_jobs.client.submit_script_job`).
"""

from __future__ import annotations

import argparse
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from interlinked.script_api_core import (
    MAX_BODY,
    SEED_BUCKET,
    ApiError,
    _key,
    encode_reply,
    unbox,
)
from interlinked.script_api_core import handle as handle_request

__all__ = ["SEED_BUCKET", "ApiError", "LocalBackend", "_key", "handle", "main", "serve", "unbox"]


class LocalBackend:
    """The local stack's data bucket (its ``S3Bucket`` block) and ``submit_script_job``."""

    def __init__(self, deployment: str):
        self.deployment = deployment
        self._store = None

    @property
    def store(self):
        if self._store is None:
            from blocks.s3 import data_store

            self._store = data_store()
        return self._store

    @property
    def bucket(self) -> str:
        return self.store.bucket

    def put(self, key: str, body: bytes, *, content_type: str, content_encoding: str | None = None) -> None:
        extra = {"ContentEncoding": content_encoding} if content_encoding else {}
        self.store.put(key, body, content_type=content_type, **extra)

    def read(self, key: str) -> bytes | None:
        return self.store.read_bytes(key, None)

    def exists(self, key: str) -> bool:
        return self.store.head(key) is not None

    def submit(self, description: dict[str, Any]) -> dict[str, Any]:
        from flows.script_jobs.client import submit_script_job
        from flows.script_jobs.layout import ScriptJobError
        from flows.script_jobs.spec import JobSpecError

        try:
            job = submit_script_job(description, deployment=self.deployment, allow_local=False)
        except (JobSpecError, ScriptJobError) as error:
            raise ApiError(str(error)) from None
        return {"jobName": job.spec.name, "jobId": job.job_id, "flowRunId": job.flow_run_id}


def handle(path: str, body: bytes, deployment: str) -> tuple[int, Any]:
    """Answer one request (pure apart from S3 and Prefect): ``(status, JSON-able body)``."""
    return handle_request(path, body, LocalBackend(deployment))


def serve(host: str, port: int, deployment: str, status_file: str | None = None) -> None:
    backend = LocalBackend(deployment)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                status, reply = 413, {"error": f"the body is larger than {MAX_BODY} bytes"}
            else:
                try:
                    status, reply = handle_request(self.path, self.rfile.read(length), backend)
                except Exception as error:  # a bug or AWS error: say so, keep serving
                    status, reply = 500, {"error": f"{type(error).__name__}: {error}"}
            data = encode_reply(reply)
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
