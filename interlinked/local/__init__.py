"""`interlinked up | down | env`: the embedded local stack, composed from its modules.

Order of `up`: PostgreSQL and the moto server (started together) → the databases ``prefect`` and
``interlinked`` → the Prefect server (on PostgreSQL, or SQLite when so set) → AWS resources and
their event wiring (S3/SNS → events queue) → blocks → the `local` work pool → the deployments of prefect.yaml → the worker, the analysis service and the event bridge (started
together; the services are long-running processes, not flow runs, so they answer at once).

Dependencies point one way, all into this module:

- :mod:`.processes` — start, watch and stop processes (:class:`Part`, :class:`LocalStack`);
- :mod:`.postgres` — the PostgreSQL cluster under the state directory, its databases and URLs;
- :mod:`.parts` — which processes the stack has, their environments and readiness checks;
- :mod:`.provision` — the AWS resources and the Prefect blocks that name them;
- :mod:`.wiring` — S3 notifications and the job-requests topic → the events queue;
- :mod:`.deployments` — the work pool and the deployments of prefect.yaml;
- :mod:`.runs` — the flow runs in flight, which `down` cancels.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from interlinked.local import emulator, postgres, runs
from interlinked.local.deployments import deploy, deployed_stamp, ensure_work_pool, local_deployment_names
from interlinked.local.identities import ensure_identities
from interlinked.local.parts import (
    LOCAL_AWS_CREDENTIALS,
    SERVERS,
    SERVICES,
    STOP_ORDER,
    client_env,
    parts,
    prefect_auth_file,
    prefect_auth_string,
    stack_env,
)
from interlinked.local.processes import LocalStack, Part, StackError, stop_processes, thaw
from interlinked.local.provision import Resources, ensure_resources, save_blocks, save_database_block
from interlinked.local.wiring import ensure_event_sources
from interlinked.settings import PROJECT_ROOT, Settings


@contextmanager
def _stack_api(settings: Settings) -> Iterator[None]:
    """Point this process's Prefect client at the stack.

    Prefect reads its settings from the environment once, when it is first imported; a caller
    that imported it before `up` set PREFECT_API_URL would otherwise talk to a temporary server.
    """
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    updates = {PREFECT_API_URL: settings.prefect_api_url}
    if auth := prefect_auth_string(settings):
        updates[PREFECT_API_AUTH_STRING] = auth
    with temporary_settings(updates=updates):
        yield


def stack_file(settings: Settings) -> Path:
    return settings.state_dir / "stack.json"


def _start(stack: LocalStack, settings: Settings, started: list[Part], echo: Callable[[str], None]) -> None:
    """Start the parts that do not answer yet (all at once, without waiting)."""
    for part in started:
        if stack.start(part):
            what = f"worker for pool '{settings.work_pool}'" if part.name == "worker" else part.name
            where = f" on {settings.host}:{part.port}" if part.port is not None else ""
            echo(f"starting {what}{where} (log: {stack.log_path(part.name)})")


def _start_and_wait(
    stack: LocalStack, settings: Settings, started: list[Part], echo: Callable[[str], None]
) -> None:
    """Start the parts that do not answer yet (all at once), then wait until each one answers."""
    _start(stack, settings, started, echo)
    for part in started:
        stack.wait_ready(part)


def _start_servers(stack: LocalStack, settings: Settings, every_part: dict[str, Part], echo) -> None:
    """PostgreSQL and moto together; the databases; then the Prefect server on its database."""
    database, aws, prefect_server = (every_part[name] for name in SERVERS)
    _start(stack, settings, [database, aws], echo)
    stack.wait_ready(database)
    try:
        for name in postgres.DATABASES:
            postgres.ensure_database(settings, name)
    except Exception as error:  # psycopg's errors: the stack cannot go on without its databases
        raise StackError(f"postgres: could not create the databases {postgres.DATABASES}: {error}") from error
    _start_and_wait(stack, settings, [prefect_server], echo)
    stack.wait_ready(aws)


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
        wiring = ensure_event_sources(
            buckets=resources.buckets,
            events_queue_url=resources.queues["events"],
            analysis_buckets=resources.analysis_buckets,
        )
    except Exception as error:
        raise StackError(f"aws resources: could not wire S3/SNS to the events queue: {error}") from error
    resources.topics.setdefault("job_requests", wiring["job_requests_topic"])
    return resources


def install_r_packages(settings: Settings, echo: Callable[[str], None] = print) -> Path | None:
    """Install the repository's R packages (``r/interlinker``, ``r/aws.s3``: the seed's R
    interface) into ``{state_dir}/r-lib``, which every stack process has in ``R_LIBS``; again only
    when their sources changed. Without ``Rscript`` (or ``httr``) nothing is installed and R jobs
    that load them fail saying so."""
    import hashlib
    import shutil
    import subprocess

    sources = PROJECT_ROOT / "r"
    if shutil.which("R") is None or not sources.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(sources.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(sources).as_posix().encode() + path.read_bytes())
    library = settings.state_dir / "r-lib"
    stamp = library / ".interlinked-sources"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return library
    library.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["R", "CMD", "INSTALL", "--no-test-load", "-l", str(library), "interlinker", "aws.s3"],
        cwd=sources,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        echo(f"R packages not installed (R jobs using interlinker will fail): {done.stderr.strip()[-300:]}")
        return None
    stamp.write_text(digest.hexdigest())
    return library


def up(settings: Settings, *, echo: Callable[[str], None] = print) -> dict:
    """Bring the whole local stack up (idempotent) and return what `env --json` prints."""
    started_at = time.monotonic()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    # The Prefect API's secret first (kept in the state directory): the server and every client
    # of the stack get it. This process talks to the stack too (resources, blocks, deployments).
    prefect_auth_string(settings, create=True)
    os.environ.update(client_env(settings))
    stack = LocalStack(settings, echo=echo)
    every_part = parts(settings)

    _start_servers(stack, settings, every_part, echo)
    install_r_packages(settings, echo)
    resources = _provision(settings)
    if settings.emulator_enforce_iam:
        try:
            ensure_identities(settings, resources.analysis_buckets)
        except Exception as error:
            raise StackError(
                f"aws identities: could not create them on {settings.aws_endpoint_url}: {error}"
            ) from error
        # Services and flow runs must use their own keys (their environment), not keys in a block.
        every_part = parts(settings)
    with _stack_api(settings):
        save_blocks(
            resources,
            endpoint_url=settings.aws_endpoint_url,
            credentials=None if settings.emulator_enforce_iam else LOCAL_AWS_CREDENTIALS,
        )
        save_database_block(database_url(settings))
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
        "analysis_buckets": resources.analysis_buckets,
        "script_api_url": settings.script_api_url,
        "work_pool": settings.work_pool,
        "state_dir": str(settings.state_dir),
        "prefect_database": settings.prefect_database,
        "postgres_port": settings.postgres_port,
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


def database_url(settings: Settings) -> str:
    """Our own database: ``INTERLINKED_DATABASE_URL`` when set, else the stack's ``interlinked``."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return postgres.dsn(settings, postgres.INTERLINKED_DATABASE)


def down(
    settings: Settings, *, echo: Callable[[str], None] = print, wipe: bool = False, keep_runs: bool = False
) -> list[str]:
    """Stop what `up` started (and only that); return the names stopped.

    Flow runs in flight on the stack's pool are cancelled first (:mod:`.runs`): their process
    groups and scripts are stopped, including forked warm-pool runs and the scripts they started in
    sessions of their own, and they end Cancelled in Prefect. ``keep_runs`` leaves them running
    (without a worker; Prefect still shows them Running) and says so.

    The data stays (PostgreSQL is stopped with a fast shutdown) unless ``wipe``: then every piece
    of local state goes too (:func:`wipe_state`), and the next `up` starts empty.
    """
    stack = LocalStack(settings, echo=echo)
    unfinished: list[runs.FlowRunRef] | None = []
    if keep_runs:
        in_flight = runs.active_runs(settings) if stack.recorded_process("prefect-server") else None
        if in_flight:
            echo(
                f"leaving {len(in_flight)} flow run(s) running (--keep-runs): {runs.describe_runs(in_flight)}; "
                "their processes go on without a worker and Prefect shows them Running"
            )
    elif stack.recorded_process("prefect-server") is not None:
        # Without a worker nobody acts on Cancelling: stop the processes at once, mark them after.
        wait = runs.CANCEL_WAIT if stack.recorded_process("worker") is not None else 0.0
        unfinished = runs.cancel_active_runs(settings, echo, wait=wait)
    # Everything the services started, taken before they stop: an orphan leaves the tree. The
    # worker's tree is frozen first, so no run it forks meanwhile (a scheduled sweep) escapes.
    leftovers = {
        name: stack.freeze(name) if name == "worker" else stack.descendants(name)
        for name in SERVICES
        if not (keep_runs and name == "worker")
    }
    stopped = []
    try:
        for name in STOP_ORDER[: STOP_ORDER.index("prefect-server")]:
            if stack.stop(name):
                stopped.append(name)
    except BaseException:
        thaw(leftovers.get("worker", []))  # never leave a run suspended
        raise
    strays = stop_processes(process for processes in leftovers.values() for process in processes)
    if strays:
        echo(f"stopped {len(strays)} process(es) the services had started in sessions of their own")
    if unfinished:
        not_marked = runs.mark_cancelled(settings, unfinished)
        if not_marked:
            echo(f"could not mark {runs.describe_runs(not_marked)} Cancelled in Prefect")
    stopped += stack.stop_all(STOP_ORDER)
    for name in stopped:
        echo(f"stopped {name}")
    if not stopped:
        echo("nothing of ours was running")
    if wipe:
        for path in wipe_state(settings):
            echo(f"deleted {path}")
    return stopped


def wipe_state(settings: Settings) -> list[Path]:
    """Delete the local stack's state (it must be stopped): the PostgreSQL cluster, the SQLite
    Prefect database, the stack description, the deployments' stamp, the Prefect API's secret, the
    services' status files and journals, and the emulator's state. Logs are kept. Return what was deleted."""
    running = LocalStack(settings, echo=lambda _: None).running()
    if running:
        raise StackError(f"wipe: {', '.join(running)} still run(s) on {settings.state_dir}; stop them first")
    deleted = []
    if postgres.wipe(settings):
        deleted.append(postgres.cluster_dir(settings))
    sqlite = settings.state_dir / "prefect.db"
    files = [sqlite, sqlite.with_name("prefect.db-wal"), sqlite.with_name("prefect.db-shm")]
    files += [stack_file(settings), deployed_stamp(settings), prefect_auth_file(settings)]
    # The services' heartbeat files and the analysis service's journal of answered message ids.
    files += sorted(settings.state_dir.glob("*-status.json")) + sorted(
        settings.state_dir.glob("*-status.json.*")
    )
    for path in files:
        if path.exists():
            path.unlink()
            deleted.append(path)
    try:
        if emulator.wipe_state(settings):
            deleted.append(emulator.state_dir(settings))
    except RuntimeError as error:
        raise StackError(f"wipe: {error}") from error
    return deleted


__all__ = [
    "StackError",
    "client_env",
    "database_url",
    "describe",
    "down",
    "ensure_work_pool",
    "env_lines",
    "local_deployment_names",
    "read_description",
    "stack_file",
    "up",
    "wipe_state",
]
