"""The jobs SDK as a Lambda (``interlinked.jobs_lambda.handler``): any language drives jobs with
``aws lambda invoke``, as Archimedes' SDK does (seed 004: ``require("archimedes")(FUNCTION_NAME)``).

Wired by ``infra/terraform/modules/jobs_api``. One invocation is one SDK action, as JSON::

    {"action": "create", "payload": {"jobType": "script", "inputData": {...}, "inputFiles": {...},
                                     "estimations": {...}, "group": "lab-a"}}
    {"action": "signal", "payload": {"jobId": ID, "state": "DISPATCH"}}          # or "EXECUTE"
    {"action": "get", "payload": {"jobId": ID}}
    {"action": "updateExecution", "payload": {"jobId": ID, "executionId": EID, "progress": 0.5,
                                              "metrics": {"cpu": 1234}, "checkpoint": {...}}}
    {"action": "update", "payload": {"jobId": ID, "outputData": {...}, "outputFiles": {...}}}
    {"action": "signalExecution", "payload": {"jobId": ID, "executionId": EID, "state": "FAILURE",
                                              "failureReason": "..."}}
    {"action": "list", "payload": {"jobType": T, "state": S, "limit": 100}}
    {"action": "cancel", "payload": {"jobId": ID}}
    {"action": "retry", "payload": {"jobId": ID, "force": false}}
    {"action": "getCheckpoint", "payload": {"jobId": ID}}

Action names are the seed's (``updateExecution``, ``signalExecution``); the Python SDK's names
(``update_execution``, ``signal_execution``, ``get_checkpoint``) are accepted too. The payload's
fields are the seed's camelCase names; the payload may also be given inline (no ``"payload"`` key).
``EXECUTE`` from another language takes ``flowRunId`` and ``infrastructureId`` (e.g.
``batch:$AWS_BATCH_JOB_ID``, ``ecs:CLUSTER::TASK_ARN``): the sweeper checks that infrastructure.

The reply is the job's JSON (the seed's field names) or an error — never a stack trace::

    {"ok": true, "action": "create", "job": {...}}          # list: "jobs": [...]; getCheckpoint: "checkpoint"
    {"ok": false, "action": "signalExecution", "error": {"code": "JOB_REFUSED", "reason": "cannot SUCCESS ..."}}

Error codes (stable): ``BAD_REQUEST`` (not a JSON object, a missing or mistyped field, an unknown
field), ``UNKNOWN_ACTION``, ``JOB_NOT_FOUND``, ``JOB_REFUSED`` (the job refused the request:
:class:`flows.jobs.model.JobError`'s reason — a transition its state does not allow, progress outside
[0, 1], an unknown execution or job type), ``NOT_CONFIGURED`` (the function lacks a setting, e.g.
no Prefect API for DISPATCH), ``DEPLOYMENT_NOT_FOUND``, ``UNAVAILABLE`` (the database or the
Prefect API did not answer: try again), ``INTERNAL`` (a bug: the reason names the request id, the
details are in the function's log). Every error leaves the job as it was: a change is one
conditional write after all checks (:func:`flows.jobs.store.change`), and a dispatch whose flow run
cannot be created is undone.

Configuration (environment): the job store is PostgreSQL — ``INTERLINKED_DATABASE_URL``, or on AWS
``INTERLINKED_DATABASE_URL_TEMPLATE`` (``{password}`` in place of the password, the database
module's ``connection_url_template``) with ``INTERLINKED_DATABASE_SECRET_ARN`` (the RDS-managed
secret ``{"username", "password"}``); ``PREFECT_API_URL`` (+ ``PREFECT_API_KEY_SECRET_ARN``) for
DISPATCH, retry and cancel, through :class:`interlinked.bridge.prefect_api.PrefectApi` (no Prefect in
the package); ``INTERLINKED_DATA_BUCKET``: each change's JSON copy at
``results/{job_id}/job.json``; ``INTERLINKED_DEPLOYMENT_SET``, ``INTERLINKED_JOB_TYPES_FILE`` and
``INTERLINKED_JOBS_*`` as for the Python SDK.

Imports: the standard library, boto3, and what ``package_lambda.py --installed pydantic-settings
--installed psycopg --installed psycopg-binary`` puts in the zip. ``flows.jobs.client`` imports
Prefect only inside the functions that use the Prefect client (its dispatcher, the run context),
which this module never calls (``tests/unit/test_jobs_lambda.py`` runs it with Prefect blocked).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from flows.jobs.model import EXECUTE, Job, JobError, JobNotFound

logger = logging.getLogger("interlinked.jobs_lambda")
logger.setLevel(os.environ.get("INTERLINKED_JOBS_API_LOG_LEVEL", "INFO").upper())

MAX_LIST = 1000


class RequestError(Exception):
    """A request the function answers with an error: ``code`` (stable) and ``reason`` (for people)."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


# -- reading the payload -------------------------------------------------------------------------
_MISSING = object()


class Payload:
    """The action's fields, checked by name and type; unknown fields are refused (a typo such as
    ``progres`` must not pass silently)."""

    def __init__(self, action: str, fields: dict[str, Any]):
        self.action = action
        self.fields = fields
        self.read: set[str] = set()

    def _get(self, name: str, kinds: tuple[type, ...], kind_name: str, required: bool) -> Any:
        self.read.add(name)
        value = self.fields.get(name, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise RequestError("BAD_REQUEST", f"{self.action} needs {name!r}")
            return None
        if isinstance(value, bool) and bool not in kinds:
            raise RequestError("BAD_REQUEST", f"{name!r} must be {kind_name}, got a boolean")
        if not isinstance(value, kinds):
            raise RequestError("BAD_REQUEST", f"{name!r} must be {kind_name}, got {type(value).__name__}")
        return value

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self._get(name, (str,), "a string", required)
        if required and not value.strip():
            raise RequestError("BAD_REQUEST", f"{name!r} must not be empty")
        return value

    def any(self, name: str) -> Any:
        """A value of any JSON type (objects, numbers: the SDK checks them and says what is wrong)."""
        self.read.add(name)
        return self.fields.get(name)

    def integer(self, name: str, default: int) -> int:
        value = self._get(name, (int,), "an integer", False)
        return default if value is None else value

    def flag(self, name: str) -> bool:
        return bool(self._get(name, (bool,), "true or false", False))

    def done(self) -> None:
        unknown = sorted(set(self.fields) - self.read)
        if unknown:
            raise RequestError(
                "BAD_REQUEST",
                f"unknown field(s) for {self.action}: {', '.join(unknown)}; it takes {', '.join(sorted(self.read))}",
            )


# -- the actions ----------------------------------------------------------------------------------
def _create(service: Any, p: Payload) -> dict[str, Any]:
    job_type = p.text("jobType", required=True)
    job = service.create(
        job_type,
        p.any("inputData"),
        p.any("inputFiles"),
        p.any("estimations"),
        group=p.text("group"),
    )
    return {"job": job}


def _signal(service: Any, p: Payload) -> dict[str, Any]:
    job_id = p.text("jobId", required=True)
    state = p.text("state", required=True)
    flow_run_id, infrastructure_id = p.text("flowRunId"), p.text("infrastructureId")
    if state == EXECUTE:
        # The work runs where the caller is, not in this function: only what it says is recorded.
        return {
            "job": service.signal(job_id, state, flow_run_id=flow_run_id, infrastructure_id=infrastructure_id)
        }
    if flow_run_id is not None or infrastructure_id is not None:
        raise RequestError("BAD_REQUEST", "flowRunId and infrastructureId go with state EXECUTE only")
    return {"job": service.signal(job_id, state)}


def _get(service: Any, p: Payload) -> dict[str, Any]:
    return {"job": service.get(p.text("jobId", required=True))}


def _update_execution(service: Any, p: Payload) -> dict[str, Any]:
    job_id = p.text("jobId", required=True)
    execution_id = p.text("executionId", required=True)
    job = service.update_execution(
        job_id,
        execution_id,
        progress=p.any("progress"),
        metrics=p.any("metrics"),
        checkpoint=p.any("checkpoint"),
    )
    return {"job": job}


def _update(service: Any, p: Payload) -> dict[str, Any]:
    job_id = p.text("jobId", required=True)
    return {"job": service.update(job_id, output_data=p.any("outputData"), output_files=p.any("outputFiles"))}


def _signal_execution(service: Any, p: Payload) -> dict[str, Any]:
    job_id = p.text("jobId", required=True)
    execution_id = p.text("executionId", required=True)
    state = p.text("state", required=True)
    evidence = p._get("failureEvidence", (dict,), "a JSON object", False)
    job = service.signal_execution(
        job_id,
        execution_id,
        state,
        failure_reason=p.text("failureReason"),
        failure_code=p.text("failureCode"),
        failure_evidence=evidence,
    )
    return {"job": job}


def _list(service: Any, p: Payload) -> dict[str, Any]:
    limit = p.integer("limit", 100)
    if not 1 <= limit <= MAX_LIST:
        raise RequestError("BAD_REQUEST", f"'limit' must be between 1 and {MAX_LIST}, got {limit}")
    jobs = service.list(job_type=p.text("jobType"), state=p.text("state"), limit=limit)
    return {"jobs": jobs}


def _cancel(service: Any, p: Payload) -> dict[str, Any]:
    job_id = p.text("jobId", required=True)
    reason = p.text("reason")
    return {"job": service.cancel(job_id, reason=reason or "cancelled by the user")}


def _retry(service: Any, p: Payload) -> dict[str, Any]:
    job_id = p.text("jobId", required=True)
    return {"job": service.retry(job_id, force=p.flag("force"))}


def _get_checkpoint(service: Any, p: Payload) -> dict[str, Any]:
    return {"checkpoint": service.get_checkpoint(p.text("jobId", required=True))}


ACTIONS: dict[str, Callable[[Any, Payload], dict[str, Any]]] = {
    "create": _create,
    "signal": _signal,
    "get": _get,
    "updateExecution": _update_execution,
    "update": _update,
    "signalExecution": _signal_execution,
    "list": _list,
    "cancel": _cancel,
    "retry": _retry,
    "getCheckpoint": _get_checkpoint,
}
ALIASES = {
    "update_execution": "updateExecution",
    "signal_execution": "signalExecution",
    "get_checkpoint": "getCheckpoint",
}


def _jsonable(reply: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in reply.items():
        if isinstance(value, Job):
            out[key] = value.to_json()
        elif isinstance(value, list):
            out[key] = [item.to_json() if isinstance(item, Job) else item for item in value]
        else:
            out[key] = value
    return out


def _request(event: Any) -> tuple[str, dict[str, Any]]:
    """(canonical action, payload fields) of an invocation event."""
    if isinstance(event, str | bytes):
        try:
            event = json.loads(event)
        except ValueError:
            raise RequestError("BAD_REQUEST", "the event is not JSON") from None
    if not isinstance(event, dict):
        raise RequestError("BAD_REQUEST", f"the event must be a JSON object, got {type(event).__name__}")
    action = event.get("action")
    if not isinstance(action, str) or not action:
        raise RequestError("BAD_REQUEST", f'the event needs "action": one of {", ".join(ACTIONS)}')
    canonical = ALIASES.get(action, action)
    if canonical not in ACTIONS:
        raise RequestError("UNKNOWN_ACTION", f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    if "payload" in event:
        extra = sorted(set(event) - {"action", "payload"})
        if extra:
            raise RequestError("BAD_REQUEST", f"fields outside the payload: {', '.join(extra)}")
        fields = event["payload"]
        if fields is None:
            fields = {}
        if not isinstance(fields, dict):
            raise RequestError("BAD_REQUEST", f'"payload" must be a JSON object, got {type(fields).__name__}')
    else:
        fields = {key: value for key, value in event.items() if key != "action"}
    return canonical, fields


def _unavailable(error: BaseException) -> bool:
    """The database or an AWS endpoint did not answer (worth a retry by the caller)."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(
        names & {"OperationalError", "InterfaceError", "EndpointConnectionError", "ConnectTimeoutError"}
    )


def handle(event: Any, service: Any, *, request_id: str | None = None) -> dict[str, Any]:
    """One invocation answered with ``service`` (a :class:`flows.jobs.client.JobService`): the reply
    document, success or error. Never raises."""
    action: str | None = None
    try:
        action, fields = _request(event)
        payload = Payload(action, fields)
        # Every field is read (and type-checked) before the service is called, so a bad request
        # fails before anything is looked up or changed.
        handler_of = ACTIONS[action]
        reply = handler_of(_Checked(service, payload), payload)
        return {"ok": True, "action": action, **_jsonable(reply)}
    except RequestError as error:
        code, reason = error.code, error.reason
    except JobNotFound as error:
        code, reason = "JOB_NOT_FOUND", str(error)
    except JobError as error:
        code, reason = "JOB_REFUSED", str(error)
    except Exception as error:  # the store, Prefect, S3, or a bug: a code and a reason, no trace
        code, reason = _classify(error, request_id)
    if code in ("INTERNAL", "UNAVAILABLE"):
        logger.error("%s: %s -> %s %s", request_id, action, code, reason)
    return {"ok": False, "action": action, "error": {"code": code, "reason": reason}}


def _classify(error: Exception, request_id: str | None) -> tuple[str, str]:
    from interlinked.bridge.prefect_api import DeploymentNotFound, PrefectRejected, PrefectUnavailable

    if isinstance(error, DeploymentNotFound):
        return "DEPLOYMENT_NOT_FOUND", f"{error}; nothing was changed"
    if isinstance(error, PrefectUnavailable):
        logger.warning("Prefect unavailable: %s", error)
        return "UNAVAILABLE", "the Prefect API did not answer; nothing was changed, try again"
    if isinstance(error, PrefectRejected):
        return "UPSTREAM_REJECTED", f"{error}; nothing was changed"
    if isinstance(error, NotConfigured):
        return "NOT_CONFIGURED", str(error)
    if _unavailable(error):
        logger.warning("store unavailable: %s: %s", type(error).__name__, error)
        return "UNAVAILABLE", "the job store did not answer; try again"
    logger.exception("request %s failed", request_id)
    return "INTERNAL", f"internal error (request {request_id or 'unknown'}); see the function's log"


class _Checked:
    """The service, called only after the payload's fields were all read: unknown fields are
    refused first (:meth:`Payload.done`), so a bad request changes nothing."""

    def __init__(self, service: Any, payload: Payload):
        self._service = service
        self._payload = payload

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._service, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self._payload.done()
            return method(*args, **kwargs)

        return call


# -- the service (one per warm container) ----------------------------------------------------------
class NotConfigured(RuntimeError):
    """The function lacks a setting the action needs (its message names it)."""


_state: dict[str, Any] = {}
_CONFIG = (
    "INTERLINKED_DATABASE_URL",
    "INTERLINKED_DATABASE_URL_TEMPLATE",
    "INTERLINKED_DATABASE_SECRET_ARN",
    "INTERLINKED_DATA_BUCKET",
    "INTERLINKED_DEPLOYMENT_SET",
    "INTERLINKED_JOB_TYPES_FILE",
    "PREFECT_API_URL",
    "PREFECT_API_KEY_SECRET_ARN",
    "PREFECT_API_KEY",
    "PREFECT_API_AUTH_STRING",
    "AWS_ENDPOINT_URL",
)


def database_url(secrets: Any = None, environ: dict[str, str] | None = None) -> str:
    """The job store's libpq URL: ``INTERLINKED_DATABASE_URL``, or the template with the password
    of the RDS-managed secret (URL-quoted) in place of ``{password}``."""
    environ = os.environ if environ is None else environ
    url = environ.get("INTERLINKED_DATABASE_URL")
    if url:
        return url
    template = environ.get("INTERLINKED_DATABASE_URL_TEMPLATE")
    secret_arn = environ.get("INTERLINKED_DATABASE_SECRET_ARN")
    if not template or not secret_arn:
        raise NotConfigured(
            "the job store is not configured: set INTERLINKED_DATABASE_URL, or "
            "INTERLINKED_DATABASE_URL_TEMPLATE with INTERLINKED_DATABASE_SECRET_ARN"
        )
    if secrets is None:
        import boto3

        secrets = boto3.session.Session().client("secretsmanager")
    secret = json.loads(secrets.get_secret_value(SecretId=secret_arn)["SecretString"])
    return template.replace("{password}", quote(str(secret["password"]), safe=""))


class ReusedConnection:
    """One PostgreSQL connection per warm container, handed to the store as its ``connect``: each
    operation commits (or rolls back) on exit; a broken connection is replaced on the next one."""

    def __init__(self, url: str):
        self.url = url
        self.connection: Any = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[Any]:
        import psycopg

        if self.connection is None or self.connection.closed or self.connection.broken:
            self.connection = psycopg.connect(self.url, connect_timeout=10)
        connection = self.connection
        try:
            yield connection
        except BaseException:
            if not connection.broken:
                connection.rollback()
            raise
        else:
            connection.commit()


class PrefectApiDispatcher:
    """The SDK's dispatcher over the Prefect REST API (what :class:`flows.jobs.client.PrefectDispatcher`
    does with the Prefect client, which the Lambda package does not carry)."""

    def __init__(self, api: Any):
        self.api = api

    def create_run(self, job: Job, deployment: str) -> str:
        name = str(job.input_data.get("name") or job.job_type)
        flow_run_id, _ = self.api.create_flow_run(
            deployment,
            parameters={"id": job.id},
            # One run per dispatch: the job's version at dispatch is unique to it.
            idempotency_key=f"job:{job.id}:v{job.version}",
            tags=[f"job:{job.id}", f"job-type:{job.job_type}", "interlinked-job"],
            name=f"{name} (job {job.id[:8]}, attempt {len(job.executions) + 1})"[:200],
            job_variables=(job.placement or {}).get("jobVariables") or None,
        )
        return str(flow_run_id)

    def cancel_run(self, flow_run_id: str) -> None:
        from interlinked.bridge.prefect_api import PrefectRejected

        status, reply = self.api.request(
            "POST",
            f"/flow_runs/{flow_run_id}/set_state",
            {"state": {"type": "CANCELLING", "message": "job cancelled"}, "force": True},
        )
        if status not in (200, 201):
            raise PrefectRejected(status, f"cancelling flow run {flow_run_id}: {status} {reply}")


class _NoDispatcher:
    def create_run(self, job: Job, deployment: str) -> str:
        raise NotConfigured("DISPATCH needs the Prefect API: PREFECT_API_URL is not set for this function")

    def cancel_run(self, flow_run_id: str) -> None:
        logger.warning("PREFECT_API_URL is not set: flow run %s is not cancelled", flow_run_id)


def build_service(environ: dict[str, str] | None = None, session: Any = None) -> Any:
    """The job service from the environment: PostgreSQL, the S3 copy, dispatch through Prefect."""
    from flows.jobs.client import JobService, write_copy
    from flows.jobs.postgres import PostgresJobStore
    from interlinked.bridge.prefect_api import PrefectApi, auth_header_from_env, auth_header_from_secret

    environ = os.environ if environ is None else environ
    if session is None:
        import boto3

        session = boto3.session.Session()
    secrets = session.client("secretsmanager")
    store = PostgresJobStore(ReusedConnection(database_url(secrets, environ)))

    mirror = None
    bucket = environ.get("INTERLINKED_DATA_BUCKET")
    if bucket:
        from blocks.s3 import ObjectStore

        objects = ObjectStore(bucket, client=session.client("s3"))

        def mirror(job: Job) -> None:
            write_copy(objects, job)

    dispatcher: Any = _NoDispatcher()
    api_url = environ.get("PREFECT_API_URL")
    if api_url:
        authorization = auth_header_from_env(environ)
        secret_arn = environ.get("PREFECT_API_KEY_SECRET_ARN")
        if secret_arn and not authorization:
            secret = secrets.get_secret_value(SecretId=secret_arn)
            if secret.get("SecretString"):
                authorization = auth_header_from_secret(secret["SecretString"])
        dispatcher = PrefectApiDispatcher(PrefectApi(api_url, authorization=authorization, timeout=10))
    return JobService(store, mirror=mirror, dispatcher=dispatcher)


def use_service(service: Any) -> None:
    """Answer with ``service`` from now on (tests; None: build it from the environment again)."""
    _state.clear()
    if service is not None:
        _state.update(service=service, key="given")


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """The Lambda entry point (``interlinked.jobs_lambda.handler``)."""
    request_id = getattr(context, "aws_request_id", None) or str(uuid.uuid4())
    if _state.get("key") != "given":
        key = tuple(os.environ.get(name) for name in _CONFIG)
        if _state.get("key") != key:
            try:
                service = build_service()
            except Exception as error:
                code, reason = (
                    ("NOT_CONFIGURED", str(error))
                    if isinstance(error, NotConfigured)
                    else _classify(error, request_id)
                )
                logger.error("%s: setup failed: %s %s", request_id, code, reason)
                action = event.get("action") if isinstance(event, dict) else None
                return {"ok": False, "action": action, "error": {"code": code, "reason": reason}}
            _state.clear()
            _state.update(service=service, key=key)
    return handle(event, _state["service"], request_id=request_id)
