"""The few Prefect REST calls the bridge makes, with the standard library only.

The Lambda runtime has boto3 but not Prefect (whose install is far over Lambda's size limit), and
the long-running consumer gains nothing from the full client for three calls, so both use this:
``GET /deployments/name/{flow}/{deployment}``, ``POST /deployments/{id}/create_flow_run`` (with an
idempotency key: the server returns the existing run for a repeated key) and ``POST /events``.
Connections are kept alive per thread.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit


class PrefectUnavailable(RuntimeError):
    """The API did not answer, or answered 5xx/429: try again later."""


class PrefectRejected(RuntimeError):
    """The API refused the request (4xx): retrying the same request cannot help."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class PrefectBusy(Exception):
    def __init__(self, message: str, retry_after: float | None):
        super().__init__(message)
        self.retry_after = retry_after


class BulkUnsupported(RuntimeError):
    """The server has no bulk flow-run endpoint: create runs one by one."""


class DeploymentNotFound(PrefectUnavailable):
    """No such deployment (yet): retried, since deployments can appear after the event."""


def auth_header_from_env(environ: dict[str, str] | None = None) -> str | None:
    """``Authorization`` for Prefect Cloud (``PREFECT_API_KEY``) or basic auth (``PREFECT_API_AUTH_STRING``).

    On AWS the value comes from Secrets Manager (``PREFECT_API_KEY_SECRET_ARN``): a value with a
    ``:`` is a basic-auth string (``user:password``), anything else an API key.
    """
    environ = os.environ if environ is None else environ
    if environ.get("PREFECT_API_KEY"):
        return f"Bearer {environ['PREFECT_API_KEY']}"
    if environ.get("PREFECT_API_AUTH_STRING"):
        return "Basic " + base64.b64encode(environ["PREFECT_API_AUTH_STRING"].encode()).decode()
    return None


def auth_headers_from_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """:func:`auth_header_from_env` as headers for an HTTP client (none without a key or auth string)."""
    header = auth_header_from_env(environ)
    return {"Authorization": header} if header else {}


def auth_header_from_secret(value: str) -> str:
    value = value.strip()
    if ":" in value and not value.startswith("pnu_"):
        return "Basic " + base64.b64encode(value.encode()).decode()
    return f"Bearer {value}"


class PrefectApi:
    def __init__(self, api_url: str, *, authorization: str | None = None, timeout: float = 15.0):
        parts = urlsplit(api_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"PREFECT_API_URL must be an http(s) URL, got {api_url!r}")
        self.api_url = api_url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._base = parts.path
        self._timeout = timeout
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if authorization:
            self._headers["Authorization"] = authorization
        self._local = threading.local()
        self._deployments: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- transport ---------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            if self._scheme == "https":
                connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=ssl.create_default_context()
                )
            else:
                connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            self._local.connection = connection
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._local.connection = None

    def request(self, method: str, path: str, body: Any = None, *, attempts: int = 6) -> tuple[int, Any]:
        """One call. A busy server (429/503, e.g. SQLite locked) is retried a few times within about
        3.5 s before :class:`PrefectUnavailable` is raised (the caller then retries later)."""
        for attempt in range(1, attempts + 1):
            try:
                return self._request_once(method, path, body)
            except PrefectBusy as busy:
                if attempt == attempts:
                    raise PrefectUnavailable(str(busy)) from None
                time.sleep(min(1.0, busy.retry_after or 0.1 * 2**attempt))
        raise AssertionError("unreachable")

    def _request_once(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One call; a stale kept-alive connection is retried once on a fresh one."""
        payload = None if body is None else json.dumps(body, default=str).encode()
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request(method, self._base + path, body=payload, headers=self._headers)
                response = connection.getresponse()
                data = response.read()
                status = response.status
                if response.getheader("Connection", "").lower() == "close":
                    self._drop_connection()
                break
            except (TimeoutError, http.client.HTTPException, OSError) as error:
                self._drop_connection()
                if attempt == 2:
                    raise PrefectUnavailable(
                        f"Prefect API {self.api_url} unreachable: {type(error).__name__}: {error}"
                    ) from None
        try:
            decoded = json.loads(data) if data else None
        except ValueError:
            decoded = data.decode(errors="replace")
        if status in (429, 503):
            retry_after = response.getheader("Retry-After")
            raise PrefectBusy(
                f"Prefect API {method} {path} answered {status}: {_detail(decoded)}",
                float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None,
            )
        if status >= 500:
            raise PrefectUnavailable(f"Prefect API {method} {path} answered {status}: {_detail(decoded)}")
        return status, decoded

    # -- calls -------------------------------------------------------------------------------
    def health(self) -> bool:
        try:
            status, _ = self.request("GET", "/health")
        except PrefectUnavailable:
            return False
        return status == 200

    def deployment_id(self, name: str) -> str:
        with self._lock:
            cached = self._deployments.get(name)
        if cached:
            return cached
        flow_name, _, deployment_name = name.partition("/")
        status, body = self.request(
            "GET", f"/deployments/name/{quote(flow_name, safe='')}/{quote(deployment_name, safe='')}"
        )
        if status == 404:
            raise DeploymentNotFound(f"deployment {name!r} does not exist on {self.api_url}")
        if status != 200:
            raise PrefectRejected(status, f"reading deployment {name!r}: {status} {_detail(body)}")
        with self._lock:
            self._deployments[name] = body["id"]
        return body["id"]

    def create_flow_run(
        self,
        deployment: str,
        *,
        parameters: dict[str, Any],
        idempotency_key: str,
        tags: list[str] | None = None,
        name: str | None = None,
        job_variables: dict[str, Any] | None = None,
    ) -> tuple[str, bool]:
        """Create (or find, for a repeated key) the flow run; return ``(run id, created now)``.
        ``job_variables`` override the deployment's (e.g. a job's memory, from triage)."""
        deployment_id = self.deployment_id(deployment)
        body: dict[str, Any] = {
            "parameters": parameters,
            "idempotency_key": idempotency_key,
            "tags": tags or [],
        }
        if name:
            body["name"] = name
        if job_variables:
            body["job_variables"] = job_variables
        status, reply = self.request("POST", f"/deployments/{deployment_id}/create_flow_run", body)
        if status == 404:
            with self._lock:
                self._deployments.pop(deployment, None)
            raise DeploymentNotFound(f"deployment {deployment!r} ({deployment_id}) no longer exists")
        if status not in (200, 201):
            raise PrefectRejected(
                status, f"Prefect refused the run of {deployment!r} ({status}): {_detail(reply)}"
            )
        return reply["id"], status == 201

    def create_flow_runs_bulk(self, deployment: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create up to 100 runs of one deployment in one transaction (``/create_flow_run/bulk``).

        Each entry is ``{"parameters", "idempotency_key", "tags", "name"}``; a repeated key yields the
        existing run. Returns the server's per-run results, in order: ``{"status": "CREATED",
        "flow_run_id"}`` (created now or found by its key) or ``{"status": "FAILED", "error"}``.
        Raises :class:`BulkUnsupported` when the server has no bulk endpoint.
        """
        deployment_id = self.deployment_id(deployment)
        body = [
            {
                key: value
                for key, value in run.items()
                if value is not None and not (key == "name" and not value)
            }
            for run in runs
        ]
        status, reply = self.request("POST", f"/deployments/{deployment_id}/create_flow_run/bulk", body)
        if status in (404, 405) and not (
            isinstance(reply, dict) and "Deployment" in str(reply.get("detail"))
        ):
            raise BulkUnsupported(f"{self.api_url} has no bulk flow-run endpoint ({status})")
        if status == 404:
            with self._lock:
                self._deployments.pop(deployment, None)
            raise DeploymentNotFound(f"deployment {deployment!r} ({deployment_id}) no longer exists")
        if status != 200 or not isinstance(reply, dict) or len(reply.get("results", [])) != len(runs):
            raise PrefectRejected(
                status, f"Prefect refused the runs of {deployment!r} ({status}): {_detail(reply)}"
            )
        return reply["results"]

    def read_flow_run(self, flow_run_id: str) -> dict[str, Any]:
        status, body = self.request("GET", f"/flow_runs/{flow_run_id}")
        if status != 200:
            raise PrefectRejected(status, f"reading flow run {flow_run_id}: {status} {_detail(body)}")
        return body

    def emit_events(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        status, body = self.request("POST", "/events", events)
        if status not in (200, 201, 204):
            raise PrefectRejected(status, f"Prefect refused the events ({status}): {_detail(body)}")

    def wait_healthy(
        self, *, timeout: float, interval: float = 1.0, stop: threading.Event | None = None
    ) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.health():
                return True
            if stop is not None and stop.wait(interval):
                return False
            if stop is None:
                time.sleep(interval)
        return False


def _detail(body: Any) -> str:
    if isinstance(body, dict) and "detail" in body:
        body = body["detail"]
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text if len(text) <= 500 else text[:500] + "…"
