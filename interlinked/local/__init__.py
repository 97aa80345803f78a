"""`interlinked up | down | env`: the embedded local stack, composed from its parts.

Order of `up`: moto server and Prefect server (started together, both slow to start) → AWS
resources and their event wiring (S3 → events queue) → blocks → the `local` work pool → the
deployments of prefect.yaml → the worker, the analysis service and the event bridge (started
together; the services are long-running processes, not flow runs, so they answer at once).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from interlinked.local.processes import (
    LOCAL_AWS_CREDENTIALS,
    LocalStack,
    Part,
    StackError,
    moto_ready,
    prefect_ready,
    python_tool,
    stack_env,
)
from interlinked.local.provision import Resources, ensure_resources, save_blocks
from interlinked.settings import PROJECT_ROOT, Settings

WORKER_NAME = "interlinked-local-worker"
SERVICES = ("worker", "analysis-service", "bridge")
# Services first, so nothing is left talking to servers that are going away.
STOP_ORDER = ("bridge", "analysis-service", "worker", "prefect-server", "aws")


def _server_env(settings: Settings) -> dict[str, str]:
    home = settings.state_dir / "prefect"
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{settings.state_dir / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": settings.host,
        "PREFECT_SERVER_API_PORT": str(settings.prefect_port),
        "PREFECT_UI_API_URL": settings.prefect_api_url,
    }


def client_env(settings: Settings) -> dict[str, str]:
    """Environment of every process that talks to the stack (workers, services, CLI children)."""
    return {
        **stack_env(settings),
        "PREFECT_HOME": str(settings.state_dir / "prefect"),
        "INTERLINKED_CODE_DIR": str(PROJECT_ROOT),
        # The stock process worker polls every 10 s by default; locally we want runs to start promptly.
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    }


def _parts(settings: Settings) -> dict[str, Part]:
    host = settings.host
    return {
        "aws": Part(
            name="aws",
            command=[python_tool("moto_server"), "-H", host, "-p", str(settings.aws_port)],
            ready=lambda: moto_ready(settings),
            port=settings.aws_port,
        ),
        "prefect-server": Part(
            name="prefect-server",
            command=[
                python_tool("prefect"),
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
            env=client_env(settings),
        ),
        # moto evaluates FIFO group locks only when a long poll starts: short polls keep a
        # follow-up request in a busy group from waiting out a 20 s poll.
        "analysis-service": _service_part(
            settings, "analysis-service", "flows.analysis.service", {"INTERLINKED_ANALYSIS_POLL_SECONDS": "2"}
        ),
        "bridge": _service_part(settings, "bridge", "interlinked.bridge"),
    }


def _service_part(
    settings: Settings, name: str, module: str, extra_env: dict[str, str] | None = None
) -> Part:
    """A long-running service (`python -m MODULE --status-file ...`) with a heartbeat file."""
    return Part(
        name=name,
        command=[sys.executable, "-m", module, "--status-file", str(_status_file(settings, name))],
        ready=lambda: _service_ready(settings, name),
        env={**client_env(settings), **(extra_env or {})},
    )


def _status_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / f"{name}-status.json"


def _service_ready(settings: Settings, name: str) -> bool:
    """The process `up` recorded for ``name`` is the one writing a fresh, ready status file."""
    process = LocalStack(settings, echo=lambda _: None).recorded_process(name)
    if process is None:
        return False
    path = _status_file(settings, name)
    if name == "bridge":
        from interlinked.bridge.consumer import is_ready

        return is_ready(path, pid=process.pid)
    from blocks.status import service_ready

    return service_ready(path, pid=process.pid)


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
            f"{settings.prefect_api_url}/work_pools/{settings.work_pool}/workers/filter", json={}, timeout=5
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


def ensure_work_pool(name: str, worker_type: str, description: str) -> bool:
    """Create the pool with the worker type's default job template; replace it if its type differs.

    Returns True when the pool was (re)created: deployments must then be applied again, since a
    replaced pool's queues are new.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.plugins import load_prefect_collections
    from prefect.workers.base import BaseWorker

    load_prefect_collections()
    worker_class = BaseWorker.get_worker_class_from_type(worker_type)
    if worker_class is None:
        raise StackError(f"work pool {name}: unknown worker type {worker_type!r}")
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(name)
        except ObjectNotFound:
            existing = None
        if existing is not None and existing.type == worker_type:
            return False
        if existing is not None:
            client.delete_work_pool(name)
        client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type=worker_type,
                description=description,
                base_job_template=worker_class.get_default_base_job_template(),
            )
        )
    return True


def _deployment_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in [PROJECT_ROOT / "prefect.yaml", *sorted((PROJECT_ROOT / "flows").rglob("*.py"))]:
        digest.update(path.relative_to(PROJECT_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def local_deployment_names() -> list[str]:
    """``flow/deployment`` names of the local set declared in prefect.yaml."""
    import yaml

    config = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    names = []
    for deployment in config.get("deployments", []):
        if deployment.get("name") == "local":
            flow_function = deployment["entrypoint"].split(":")[-1]
            names.append(f"{flow_function.replace('_', '-')}/local")
    return names


def _missing_deployments(names: list[str]) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    missing = []
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                client.read_deployment_by_name(name)
            except ObjectNotFound:
                missing.append(name)
    return missing


def _deploy(settings: Settings, echo: Callable[[str], None], *, force: bool = False) -> None:
    """`prefect deploy --name local`, skipped when nothing it depends on changed."""
    stamp = settings.state_dir / "deployed.sha256"
    fingerprint = _deployment_fingerprint()
    expected = local_deployment_names()
    unchanged = not force and stamp.exists() and stamp.read_text() == fingerprint
    if unchanged and not _missing_deployments(expected):
        return
    echo(f"deploying {', '.join(expected)} from prefect.yaml")
    log = settings.logs_dir / "deploy.log"
    with log.open("ab") as out:
        result = subprocess.run(
            [python_tool("prefect"), "--no-prompt", "deploy", "--name", "local"],
            cwd=PROJECT_ROOT,
            env={**os.environ, **client_env(settings)},
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    missing = _missing_deployments(expected)
    if result.returncode != 0 or missing:
        tail = "\n    ".join(log.read_text(errors="replace").splitlines()[-20:])
        raise StackError(
            f"deployments: `prefect deploy --name local` exited {result.returncode}"
            f"{'; missing ' + ', '.join(missing) if missing else ''}; its log is {log}\n    {tail}"
        )
    stamp.write_text(fingerprint)


@contextmanager
def _stack_api(settings: Settings) -> Iterator[None]:
    """Point this process's Prefect client at the stack.

    Prefect reads its settings from the environment once, when it is first imported; a caller
    that imported it before `up` set PREFECT_API_URL would otherwise talk to a temporary server.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: settings.prefect_api_url}):
        yield


def stack_file(settings: Settings) -> Path:
    return settings.state_dir / "stack.json"


def up(settings: Settings, *, echo: Callable[[str], None] = print) -> dict:
    """Bring the whole local stack up (idempotent) and return what `env --json` prints."""
    started_at = time.monotonic()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    # This process talks to the stack too (resources, blocks, deployments).
    os.environ.update(client_env(settings))
    stack = LocalStack(settings, echo=echo)
    parts = _parts(settings)

    servers = [parts["aws"], parts["prefect-server"]]
    for part in servers:
        if stack.start(part):
            echo(f"starting {part.name} on {settings.host}:{part.port} (log: {stack.log_path(part.name)})")
    for part in servers:
        stack.wait_ready(part)

    try:
        resources = ensure_resources(settings)
    except Exception as error:  # any boto3 failure here is a stack failure with a reason
        raise StackError(
            f"aws resources: could not create them on {settings.aws_endpoint_url}: {error}"
        ) from error
    resources.aws_endpoint_url = settings.aws_endpoint_url
    try:
        from interlinked.local.wiring import ensure_event_sources

        wiring = ensure_event_sources(buckets=resources.buckets, events_queue_url=resources.queues["events"])
    except Exception as error:
        raise StackError(f"aws resources: could not wire S3/SNS to the events queue: {error}") from error
    resources.topics.setdefault("job_requests", wiring["job_requests_topic"])
    with _stack_api(settings):
        save_blocks(resources, endpoint_url=settings.aws_endpoint_url, credentials=LOCAL_AWS_CREDENTIALS)
        pool_created = ensure_work_pool(
            settings.work_pool, settings.worker_type, "Local stack: runs flows as processes on this machine."
        )
        _deploy(settings, echo, force=pool_created)

    services = [parts[name] for name in SERVICES]
    for part in services:
        if stack.start(part):
            what = f"worker for pool '{settings.work_pool}'" if part.name == "worker" else part.name
            echo(f"starting {what} (log: {stack.log_path(part.name)})")
    for part in services:
        stack.wait_ready(part)

    description = describe(settings, resources)
    stack_file(settings).write_text(json.dumps(description, indent=2))
    echo(f"local stack up in {time.monotonic() - started_at:.1f} s — Prefect UI: {settings.prefect_ui_url}")
    return description


def describe(settings: Settings, resources: Resources) -> dict:
    """The `interlinked env --json` document (the fixed contract plus a few extras)."""
    return {
        "prefect_api_url": settings.prefect_api_url,
        "prefect_ui_url": settings.prefect_ui_url,
        "aws_endpoint_url": settings.aws_endpoint_url,
        "region": resources.region,
        "buckets": resources.buckets,
        "queues": resources.queues,
        "dead_letter_queues": resources.dead_letter_queues,
        "topics": resources.topics,
        "work_pool": settings.work_pool,
        "state_dir": str(settings.state_dir),
    }


def read_description(settings: Settings) -> dict:
    path = stack_file(settings)
    if not path.exists():
        raise StackError(
            f"the local stack has not been brought up here ({path} is missing): run `interlinked up`"
        )
    return json.loads(path.read_text())


def env_lines(settings: Settings) -> list[str]:
    """`export NAME=value` lines for a shell: Prefect and boto3 then reach the local stack."""
    description = read_description(settings)
    variables = {
        **stack_env(settings),
        "INTERLINKED_DATA_BUCKET": description["buckets"]["data"],
        "INTERLINKED_ANALYSIS_BUCKET": description["buckets"]["analysis"],
        "INTERLINKED_WORK_QUEUE_URL": description["queues"]["work"],
        "INTERLINKED_EVENTS_QUEUE_URL": description["queues"]["events"],
        "INTERLINKED_WORK_RESULTS_TOPIC_ARN": description["topics"]["work_results"],
        "INTERLINKED_JOB_EVENTS_TOPIC_ARN": description["topics"]["job_events"],
    }
    return [f"export {name}={_shell_quote(value)}" for name, value in variables.items()]


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


def down(settings: Settings, *, echo: Callable[[str], None] = print) -> list[str]:
    """Stop what `up` started (and only that); return the names stopped."""
    stack = LocalStack(settings, echo=echo)
    stopped = stack.stop_all(STOP_ORDER)
    for name in stopped:
        echo(f"stopped {name}")
    if not stopped:
        echo("nothing of ours was running")
    return stopped
