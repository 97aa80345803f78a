"""`interlinked up | down | env`: the embedded local stack, composed from its modules.

Order of `up`: moto server and Prefect server (started together, both slow to start) → AWS
resources and their event wiring (S3/SNS → events queue) → blocks → the `local` work pool → the
deployments of prefect.yaml → the worker, the analysis service and the event bridge (started
together; the services are long-running processes, not flow runs, so they answer at once).

Dependencies point one way, all into this module:

- :mod:`.processes` — start, watch and stop processes (:class:`Part`, :class:`LocalStack`);
- :mod:`.parts` — which processes the stack has, their environments and readiness checks;
- :mod:`.provision` — the AWS resources and the Prefect blocks that name them;
- :mod:`.wiring` — S3 notifications and the job-requests topic → the events queue;
- :mod:`.deployments` — the work pool and the deployments of prefect.yaml.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from interlinked.local.deployments import deploy, ensure_work_pool, local_deployment_names
from interlinked.local.parts import (
    LOCAL_AWS_CREDENTIALS,
    SERVERS,
    SERVICES,
    STOP_GRACE,
    STOP_ORDER,
    client_env,
    parts,
    stack_env,
)
from interlinked.local.processes import LocalStack, Part, StackError
from interlinked.local.provision import Resources, ensure_resources, save_blocks
from interlinked.local.wiring import ensure_event_sources
from interlinked.settings import Settings


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


def _start_and_wait(
    stack: LocalStack, settings: Settings, started: list[Part], echo: Callable[[str], None]
) -> None:
    """Start the parts that do not answer yet (all at once), then wait until each one answers."""
    for part in started:
        if stack.start(part):
            what = f"worker for pool '{settings.work_pool}'" if part.name == "worker" else part.name
            where = f" on {settings.host}:{part.port}" if part.port is not None else ""
            echo(f"starting {what}{where} (log: {stack.log_path(part.name)})")
    for part in started:
        stack.wait_ready(part)


def _provision(settings: Settings) -> Resources:
    """The AWS resources and their event wiring (each failure a :class:`StackError` with its reason)."""
    try:
        resources = ensure_resources(settings)
    except Exception as error:  # any boto3 failure here is a stack failure with a reason
        raise StackError(
            f"aws resources: could not create them on {settings.aws_endpoint_url}: {error}"
        ) from error
    resources.aws_endpoint_url = settings.aws_endpoint_url
    try:
        wiring = ensure_event_sources(buckets=resources.buckets, events_queue_url=resources.queues["events"])
    except Exception as error:
        raise StackError(f"aws resources: could not wire S3/SNS to the events queue: {error}") from error
    resources.topics.setdefault("job_requests", wiring["job_requests_topic"])
    return resources


def up(settings: Settings, *, echo: Callable[[str], None] = print) -> dict:
    """Bring the whole local stack up (idempotent) and return what `env --json` prints."""
    started_at = time.monotonic()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    # This process talks to the stack too (resources, blocks, deployments).
    os.environ.update(client_env(settings))
    stack = LocalStack(settings, echo=echo)
    every_part = parts(settings)

    _start_and_wait(stack, settings, [every_part[name] for name in SERVERS], echo)
    resources = _provision(settings)
    with _stack_api(settings):
        save_blocks(resources, endpoint_url=settings.aws_endpoint_url, credentials=LOCAL_AWS_CREDENTIALS)
        pool_created = ensure_work_pool(
            settings.work_pool, settings.worker_type, "Local stack: runs flows as processes on this machine."
        )
        deploy(settings, echo, force=pool_created)
    _start_and_wait(stack, settings, [every_part[name] for name in SERVICES], echo)

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
    return [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]


def down(settings: Settings, *, echo: Callable[[str], None] = print) -> list[str]:
    """Stop what `up` started (and only that); return the names stopped."""
    stack = LocalStack(settings, echo=echo)
    stopped = stack.stop_all(STOP_ORDER, grace=STOP_GRACE)
    for name in stopped:
        echo(f"stopped {name}")
    if not stopped:
        echo("nothing of ours was running")
    return stopped


__all__ = [
    "StackError",
    "client_env",
    "describe",
    "down",
    "ensure_work_pool",
    "env_lines",
    "local_deployment_names",
    "read_description",
    "stack_file",
    "up",
]
