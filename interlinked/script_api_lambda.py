"""The AWS Lambda front end of the seed's HTTP API (``interlinked.script_api_lambda.handler``).

Wired by ``infra/terraform/modules/script_api``: an API Gateway HTTP API whose routes
``POST /submitjob|upload|bulk|fetch|exists|log`` invoke this function (proxy integration, payload
format 2.0; REST API proxy events, format 1.0, are understood too). The request handling is
:mod:`interlinked.script_api_core`, the same as the local stack's server; here the data bucket is
``INTERLINKED_DATA_BUCKET`` through boto3 and a job becomes a flow run of ``script-job/{set}``
(``INTERLINKED_DEPLOYMENT_SET``) through the Prefect REST API (``PREFECT_API_URL``, the key read
from ``PREFECT_API_KEY_SECRET_ARN`` as the bridge Lambda does).

Imports: the standard library, boto3 (in the Lambda runtime) and, for ``submitjob``'s validation,
:mod:`flows.script_jobs.spec` with pydantic, which the package carries
(``package_lambda.py --installed pydantic``). No Prefect: its install is far over Lambda's size
limit; the three REST calls are :class:`interlinked.bridge.prefect_api.PrefectApi`'s.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from typing import Any

from interlinked.bridge.prefect_api import (
    PrefectApi,
    PrefectRejected,
    PrefectUnavailable,
    auth_header_from_env,
    auth_header_from_secret,
)
from interlinked.script_api_core import MAX_BODY, ApiError, encode_reply, handle

logger = logging.getLogger("interlinked.script_api")
logger.setLevel(os.environ.get("INTERLINKED_SCRIPT_API_LOG_LEVEL", "INFO").upper())

# Where a job lives in the data bucket: flows/script_jobs/layout.py (job_spec_key, script_key),
# repeated here because that module reaches blocks.s3 (Prefect); tests/unit keeps them equal.
JOBS_PREFIX = "jobs/"
SCRIPTS_PREFIX = "scripts/"
MISSING_CODES = {"404", "NoSuchKey", "NotFound"}

_state: dict[str, Any] = {}


def _config_key() -> tuple:
    names = (
        "INTERLINKED_DATA_BUCKET",
        "INTERLINKED_DEPLOYMENT_SET",
        "PREFECT_API_URL",
        "PREFECT_API_KEY_SECRET_ARN",
        "PREFECT_API_KEY",
        "PREFECT_API_AUTH_STRING",
        "AWS_ENDPOINT_URL",
    )
    return tuple(os.environ.get(name) for name in names)


class LambdaBackend:
    """The data bucket through boto3 and job runs through the Prefect REST API."""

    def __init__(self, bucket: str, deployment: str, s3: Any, prefect: Any = None, secrets: Any = None):
        self.bucket = bucket
        self.deployment = deployment
        self.s3 = s3
        self._prefect = prefect
        self._secrets = secrets

    # -- objects ---------------------------------------------------------------------------------
    def put(self, key: str, body: bytes, *, content_type: str, content_encoding: str | None = None) -> None:
        extra = {"ContentEncoding": content_encoding} if content_encoding else {}
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, **extra)

    def read(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as error:
            if _missing(error):
                return None
            raise

    def exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except Exception as error:
            if _missing(error):
                return False
            raise
        return True

    # -- jobs ------------------------------------------------------------------------------------
    @property
    def prefect(self) -> PrefectApi:
        """The Prefect API client, built on first use (only ``submitjob`` needs it)."""
        if self._prefect is None:
            api_url = os.environ.get("PREFECT_API_URL")
            if not api_url:
                raise ApiError("the API is not configured: PREFECT_API_URL is not set", 500)
            authorization = auth_header_from_env()
            secret_arn = os.environ.get("PREFECT_API_KEY_SECRET_ARN")
            if secret_arn and not authorization and self._secrets is not None:
                secret = self._secrets.get_secret_value(SecretId=secret_arn)
                if secret.get("SecretString"):
                    authorization = auth_header_from_secret(secret["SecretString"])
            self._prefect = PrefectApi(api_url, authorization=authorization, timeout=10)
        return self._prefect

    def submit(self, description: dict[str, Any]) -> dict[str, Any]:
        from flows.script_jobs.spec import JobSpecError, parse_job_spec

        try:
            spec = parse_job_spec(description)
        except JobSpecError as error:
            raise ApiError(str(error)) from None
        script = SCRIPTS_PREFIX + spec.script
        if not self.exists(script):
            # The HTTP API never reads a file of the machine serving it: scripts are objects.
            raise ApiError(f"script {spec.script!r} is not an object at s3://{self.bucket}/{script}")
        job_id = str(uuid.uuid4())
        self.put(
            f"{JOBS_PREFIX}{job_id}.json",
            spec.model_dump_json(exclude_none=True).encode(),
            content_type="application/json",
        )
        try:
            flow_run_id, _ = self.prefect.create_flow_run(
                self.deployment,
                parameters={"job_id": job_id},
                idempotency_key=f"script-api:{job_id}",
                tags=[f"job:{job_id}", "script-job"],
                name=spec.name,
            )
        except PrefectUnavailable as error:
            raise ApiError(f"job {job_id} stored but not started: {error}", 503) from None
        except PrefectRejected as error:
            raise ApiError(f"job {job_id} stored but not started: {error}", 502) from None
        return {"jobName": spec.name, "jobId": job_id, "flowRunId": flow_run_id}


def _missing(error: BaseException) -> bool:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code")) in MISSING_CODES


def _backend() -> LambdaBackend:
    """Cold-start setup, reused while the configuration is unchanged (warm invocations)."""
    key = _config_key()
    if _state.get("key") == key:
        return _state["backend"]
    import boto3

    bucket = os.environ.get("INTERLINKED_DATA_BUCKET")
    if not bucket:
        raise RuntimeError("INTERLINKED_DATA_BUCKET is not set")
    deployment = f"script-job/{os.environ.get('INTERLINKED_DEPLOYMENT_SET') or 'ecs'}"
    session = boto3.session.Session()
    backend = LambdaBackend(
        bucket, deployment, session.client("s3"), secrets=session.client("secretsmanager")
    )
    _state.clear()
    _state.update(key=key, backend=backend)
    return backend


def request_of(event: Any) -> tuple[str, str, bytes]:
    """``(method, path, body)`` of an API Gateway proxy event (HTTP API 2.0 or REST API 1.0).

    Raises :class:`ApiError` (400) for an event that is neither."""
    if not isinstance(event, dict):
        raise ApiError("not an API Gateway proxy event")
    context = event.get("requestContext") or {}
    if event.get("version") == "2.0" or "http" in context:
        method = (context.get("http") or {}).get("method")
        path = event.get("rawPath") or (context.get("http") or {}).get("path")
    else:
        method = event.get("httpMethod")
        path = event.get("path")
    if not method or not path:
        raise ApiError("not an API Gateway proxy event (no method or path)")
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            data = base64.b64decode(body, validate=True)
        except ValueError:
            raise ApiError("the body is not valid base64 although isBase64Encoded is set") from None
    else:
        data = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode()
    return method.upper(), path, data


def response(status: int, reply: Any) -> dict[str, Any]:
    """An API Gateway proxy response: the status and the reply as the local server sends it."""
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": encode_reply(reply).decode("utf-8"),
        "isBase64Encoded": False,
    }


def handle_event(event: Any, backend: Any) -> dict[str, Any]:
    """One API Gateway proxy event answered with ``backend`` (what :func:`handler` calls)."""
    try:
        method, path, body = request_of(event)
    except ApiError as error:
        return response(error.status, {"error": str(error)})
    if method != "POST":
        return response(
            405, {"error": f"{method} is not allowed: every endpoint takes POST with a JSON body"}
        )
    if len(body) > MAX_BODY:
        return response(413, {"error": f"the body is larger than {MAX_BODY} bytes"})
    try:
        status, reply = handle(path, body, backend)
    except ApiError as error:
        status, reply = error.status, {"error": str(error)}
    except Exception as error:  # a bug or AWS error: say so in the reply and the log
        logger.exception("%s %s failed", method, path)
        status, reply = 500, {"error": f"{type(error).__name__}: {error}"}
    if status >= 500:
        logger.error("%s %s -> %s %s", method, path, status, reply)
    return response(status, reply)


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """The Lambda entry point (``interlinked.script_api_lambda.handler``)."""
    try:
        backend = _backend()
    except Exception as error:
        logger.exception("the API is not configured")
        return response(500, {"error": f"the API is not configured: {error}"})
    return handle_event(event, backend)
