"""What the local stack is made of: its processes (:class:`~.processes.Part`), their environments
and their readiness checks.

- ``postgres`` (:mod:`.postgres`): the database under the Prefect server and our own stores, ready
  when our cluster answers on its port;
- ``aws`` (moto server) and ``prefect-server``: ready when their APIs answer;
- ``worker``: the pool's worker, ready once it sent a heartbeat after it started;
- ``analysis-service`` and ``bridge``: long-running services (``python -m MODULE --status-file``),
  ready when the process ``up`` recorded writes a fresh, ready status file (:mod:`blocks.status`).

A new long-running service is one more entry in :func:`parts` and in :data:`STOP_ORDER`.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path

from blocks.status import service_ready
from interlinked.local import emulator, identities, postgres
from interlinked.local.processes import LocalStack, Part, StackError, python_tool
from interlinked.settings import PROJECT_ROOT, Settings

WORKER_NAME = "interlinked-local-worker"
# Started first: postgres and aws together, the Prefect server once its database answers.
SERVERS = ("postgres", "aws", "prefect-server")
SERVICES = ("worker", "analysis-service", "bridge", "script-api")
# Services first, so nothing is left talking to servers that are going away; the database after
# the Prefect server that uses it.
STOP_ORDER = ("script-api", "bridge", "analysis-service", "worker", "prefect-server", "postgres", "aws")
# The emulator writes its final snapshot on SIGTERM: a large state needs more than the default
# grace (processes.DEFAULT_GRACE) to reach disk before `down` would kill it.
EMULATOR_STOP_GRACE = 20.0
# The emulator's admin keys (its user `interlinked-admin` when it enforces IAM, see
# interlinked.local.emulator.iam; any keys are accepted when it does not). The services get keys
# of their own (interlinked.local.identities).
LOCAL_AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


# ---- environments ------------------------------------------------------------------------------


# The Prefect server's basic-auth secret ("user:password", what the UI's login form asks for),
# made once per state directory by `up` when the environment has none.
AUTH_USER = "interlinked"
AUTH_FILE = "prefect-auth"
AUTH_VARIABLES = ("PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING")


def prefect_auth_file(settings: Settings) -> Path:
    """Where `up` keeps the generated Prefect API secret (mode 0600; ``down --wipe`` deletes it)."""
    return settings.state_dir / AUTH_FILE


def prefect_auth_string(settings: Settings, *, create: bool = False) -> str | None:
    """The local Prefect server's basic-auth string (``user:password``), or None without auth.

    None when ``INTERLINKED_PREFECT_AUTH`` is off. Otherwise the user's own
    ``PREFECT_API_AUTH_STRING`` / ``PREFECT_SERVER_API_AUTH_STRING`` (the two must agree: the
    server checks the one, the stack's clients send the other), else the secret in
    :func:`prefect_auth_file`. With ``create`` (only `up`, which starts the server with it) the file
    is made to hold the value in force, a new random one when there is none yet: every later
    command, in any shell, then reaches the server that runs.
    """
    if not settings.prefect_auth:
        return None
    given = {os.environ[name] for name in AUTH_VARIABLES if os.environ.get(name)}
    if len(given) > 1:
        raise StackError(
            "PREFECT_API_AUTH_STRING and PREFECT_SERVER_API_AUTH_STRING differ: the stack's server "
            "would refuse its own clients; set one of them (or both to the same value)"
        )
    path = prefect_auth_file(settings)
    kept = path.read_text().strip() if path.exists() else ""
    value = next(iter(given), None) or kept or None
    if create and value is None:
        value = f"{AUTH_USER}:{secrets.token_urlsafe(24)}"
    if create and value != kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{AUTH_FILE}.{os.getpid()}")
        # Made 0600 from the start, never readable by others even for a moment; then moved in place.
        descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(value + "\n")
        os.replace(staged, path)
    return value


def prefect_auth_env(settings: Settings) -> dict[str, str]:
    """``PREFECT_API_AUTH_STRING`` for a client of the stack (nothing when the stack has no auth)."""
    value = prefect_auth_string(settings)
    return {"PREFECT_API_AUTH_STRING": value} if value else {}


def prefect_auth_headers(settings: Settings) -> dict[str, str]:
    """The ``Authorization`` header of a raw HTTP call to the stack's Prefect API (or none)."""
    from interlinked.bridge.prefect_api import auth_headers_from_env

    return auth_headers_from_env(prefect_auth_env(settings))


def stack_env(settings: Settings) -> dict[str, str]:
    """Environment that points Prefect and boto3 at the local stack (what `interlinked env` prints)."""
    return {
        "PREFECT_API_URL": settings.prefect_api_url,
        **prefect_auth_env(settings),
        "PREFECT_UI_URL": settings.prefect_ui_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "AWS_ENDPOINT_URL": settings.aws_endpoint_url,
        "INTERLINKED_SCRIPT_API_URL": settings.script_api_url,
        "AWS_DEFAULT_REGION": settings.region,
        "AWS_REGION": settings.region,
        **LOCAL_AWS_CREDENTIALS,
    }


def analysis_buckets() -> dict[str, str]:
    """Analyses with a bucket of their own (``INTERLINKED_ANALYSIS_BUCKETS``, environment or ``.env``)."""
    from flows.submissions.quotas import SubmissionSettings

    return dict(SubmissionSettings().analysis_buckets)


# Prefect client settings of every process that talks to the stack, each overridable from the
# environment `up` runs in.
CLIENT_DEFAULTS = {
    # The local server does not enforce CSRF tokens (Prefect's default); with client support on,
    # every new client (a flow run makes three) first asks /csrf-token, only to be told so.
    "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "false",
}


def client_env(settings: Settings) -> dict[str, str]:
    """Environment of every process that talks to the stack (workers, services, CLI children)."""
    own = analysis_buckets()
    return {
        **{name: os.environ.get(name, value) for name, value in CLIENT_DEFAULTS.items()},
        **stack_env(settings),
        # The bridge routes these buckets' submissions and flow runs know them (also when they
        # were set in .env, which only Settings reads).
        **({"INTERLINKED_ANALYSIS_BUCKETS": json.dumps(own, sort_keys=True)} if own else {}),
        "PREFECT_HOME": str(settings.state_dir / "prefect"),
        "INTERLINKED_CODE_DIR": str(PROJECT_ROOT),
        # The repository's R packages (interlinker, aws.s3), installed there by `up`.
        "R_LIBS": str(settings.state_dir / "r-lib"),
        # The stock process worker polls every 10 s by default; locally we want runs to start promptly.
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    }


def prefect_database_url(settings: Settings) -> str:
    """The Prefect server's database: the stack's PostgreSQL (asyncpg) or the SQLite file."""
    if settings.prefect_database == "sqlite":
        return f"sqlite+aiosqlite:///{settings.state_dir / 'prefect.db'}"
    return postgres.sqlalchemy_url(settings, postgres.PREFECT_DATABASE)


# Prefect server settings of the local stack, each overridable from the environment `up` runs in.
SERVER_DEFAULTS = {
    # The late-runs service turns every run that waits more than 15 s into Late: one more state
    # transition (and event) per run of a burst, on the server that is the burst's bottleneck. The
    # local pool's worker takes every scheduled run as soon as a start slot frees, so Late tells a
    # local user nothing a queue of Scheduled runs does not.
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
}
# ... and with PostgreSQL. Prefect keeps 5 connections (plus 10 it opens and closes as needed); a
# burst keeps more requests than that at the database, and each connection opened anew starts a
# PostgreSQL backend and prepares its statements again: with 20 kept, PostgreSQL's CPU per run of a
# burst fell from 76 to 28 ms.
POSTGRES_SERVER_DEFAULTS = {
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "20",
}


def _server_env(settings: Settings) -> dict[str, str]:
    home = settings.state_dir / "prefect"
    return {
        **{name: os.environ.get(name, value) for name, value in SERVER_DEFAULTS.items()},
        **(
            {name: os.environ.get(name, value) for name, value in POSTGRES_SERVER_DEFAULTS.items()}
            if settings.prefect_database != "sqlite"
            else {}
        ),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": prefect_database_url(settings),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": settings.host,
        "PREFECT_SERVER_API_PORT": str(settings.prefect_port),
        "PREFECT_UI_API_URL": settings.prefect_api_url,
        **({"PREFECT_SERVER_API_AUTH_STRING": auth} if (auth := prefect_auth_string(settings)) else {}),
    }


# ---- readiness ---------------------------------------------------------------------------------


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def prefect_ready(settings: Settings) -> bool:
    return _http_ok(f"{settings.prefect_api_url}/health")


def status_file(settings: Settings, name: str) -> Path:
    """Where the service ``name`` writes its heartbeat/status file."""
    return settings.state_dir / f"{name}-status.json"


def _service_ready(settings: Settings, name: str) -> bool:
    """The process `up` recorded for ``name`` is the one writing a fresh, ready status file."""
    process = LocalStack(settings, echo=lambda _: None).recorded_process(name)
    return process is not None and service_ready(status_file(settings, name), pid=process.pid)


def _worker_online(settings: Settings) -> bool:
    """Our worker process is alive and has sent a heartbeat since it started.

    The server remembers a worker as ONLINE for a while after it stopped, so the status alone would
    mistake a worker stopped by `down` for a running one.
    """
    from datetime import datetime

    import httpx

    process = LocalStack(settings, echo=lambda _: None).recorded_process("worker")
    if process is None:
        return False
    try:
        response = httpx.post(
            f"{settings.prefect_api_url}/work_pools/{settings.work_pool}/workers/filter",
            json={},
            headers=prefect_auth_headers(settings),
            timeout=5,
        )
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    for worker in response.json():
        heartbeat = worker.get("last_heartbeat_time")
        if worker.get("name") != WORKER_NAME or not heartbeat:
            continue
        if datetime.fromisoformat(heartbeat.replace("Z", "+00:00")).timestamp() >= process.create_time():
            return True
    return False


# ---- the parts ---------------------------------------------------------------------------------


def _service_part(
    settings: Settings, name: str, module: str, extra_env: dict[str, str] | None = None
) -> Part:
    """A long-running service (`python -m MODULE --status-file ...`) with a heartbeat file."""
    return Part(
        name=name,
        command=[sys.executable, "-m", module, "--status-file", str(status_file(settings, name))],
        ready=lambda: _service_ready(settings, name),
        env={**client_env(settings), **identities.service_env(settings, name), **(extra_env or {})},
    )


def parts(settings: Settings) -> dict[str, Part]:
    """Every process of the local stack, by name."""
    host = settings.host
    return {
        "postgres": postgres.part(settings),
        # moto's server with durable state (interlinked.local.emulator), kept in {state_dir}/aws.
        "aws": Part(
            name="aws",
            command=emulator.command(settings),
            ready=lambda: emulator.ready(settings),
            port=settings.aws_port,
            stop_grace=EMULATOR_STOP_GRACE,
        ),
        "prefect-server": Part(
            name="prefect-server",
            # `prefect server start`, with one hot spot of the server's less costly (see the module).
            command=[
                sys.executable,
                "-m",
                "interlinked.prefect_server",
                "server",
                "start",
                "--host",
                host,
                "--port",
                str(settings.prefect_port),
            ],
            ready=lambda: prefect_ready(settings),
            port=settings.prefect_port,
            env=_server_env(settings),
        ),
        "worker": Part(
            name="worker",
            command=[
                python_tool("prefect"),
                "worker",
                "start",
                "--pool",
                settings.work_pool,
                "--type",
                settings.worker_type,
                "--name",
                WORKER_NAME,
            ],
            ready=lambda: _worker_online(settings),
            env={**client_env(settings), **identities.service_env(settings, "worker")},
        ),
        # moto evaluates FIFO group locks only when a long poll starts: short polls keep a
        # follow-up request in a busy group from waiting out a 20 s poll.
        "analysis-service": _service_part(
            settings, "analysis-service", "flows.analysis.service", {"INTERLINKED_ANALYSIS_POLL_SECONDS": "2"}
        ),
        "bridge": _service_part(settings, "bridge", "interlinked.bridge"),
        # The seed's HTTP API (submitjob, upload, bulk, fetch, exists, log) for its R interface.
        "script-api": _service_part(settings, "script-api", "interlinked.script_api"),
    }
