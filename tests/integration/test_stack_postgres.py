"""The local stack's Prefect server runs on its PostgreSQL, keeps its runs across `down`/`up`,
starts empty after `down --wipe`, and still runs on SQLite when so set.

The session stack is stopped and wiped here, so this module runs after the others (file order);
the SQLite stack is a second stack of its own (state directory and ports).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from pathlib import Path

import psutil
import psycopg
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from _stack import INTERLINKED, ROOT, TEST_ENV, _free_port, run_cli

pytestmark = pytest.mark.integration


def _prefect_dsn(port: int | str) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/prefect"


@flow(name="postgres-probe")
def probe(token: str) -> str:
    return token


def _server_database_url(pid: int) -> str:
    return psutil.Process(pid).environ()["PREFECT_SERVER_DATABASE_CONNECTION_URL"]


def _flow_run_row(flow_run_id) -> tuple | None:
    with psycopg.connect(_prefect_dsn(TEST_ENV["INTERLINKED_POSTGRES_PORT"])) as connection:
        return connection.execute(
            "SELECT state_type, parameters FROM flow_run WHERE id = %s", (flow_run_id,)
        ).fetchone()


def _read_flow_run(flow_run_id):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


@pytest.fixture(scope="module")
def completed_run(stack_handle):
    """A flow run the session stack's Prefect server recorded as Completed."""
    stack_handle.ensure_up()
    token = uuid.uuid4().hex
    state = probe(token, return_state=True)
    assert state.is_completed()
    return state.state_details.flow_run_id, token


def test_prefect_server_runs_on_the_stacks_postgres(stack, stack_handle, completed_run):
    pids = stack_handle.pids()
    assert "postgres" in pids
    port = TEST_ENV["INTERLINKED_POSTGRES_PORT"]
    assert _server_database_url(pids["prefect-server"]) == (
        f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    )
    assert not (stack_handle.state_dir / "prefect.db").exists()
    flow_run_id, token = completed_run
    row = _flow_run_row(flow_run_id)
    assert row is not None and row[0] == "COMPLETED" and row[1] == {"token": token}
    # Our own database exists beside it, and the block for it points at it.
    from blocks.postgres import database

    with database().connect() as connection:
        assert connection.execute("SELECT current_database()").fetchone() == ("interlinked",)


def test_down_then_up_keeps_the_flow_runs(stack, stack_handle, completed_run):
    flow_run_id, _ = completed_run
    postgres_before = stack_handle.pids()["postgres"]
    result = run_cli("down")
    stack_handle.mark_down()
    assert result.returncode == 0, result.stderr
    assert "stopped postgres" in result.stderr
    assert not psutil.pid_exists(postgres_before)
    assert (stack_handle.state_dir / "postgres" / "PG_VERSION").exists()

    stack_handle.ensure_up()
    assert stack_handle.pids()["postgres"] != postgres_before
    assert _read_flow_run(flow_run_id).state.is_completed()


def test_down_wipe_starts_empty(stack, stack_handle, completed_run):
    flow_run_id, _ = completed_run
    state_dir = stack_handle.state_dir
    (state_dir / "aws").mkdir(exist_ok=True)  # where the emulator keeps its state
    result = run_cli("down", "--wipe")
    stack_handle.mark_down()
    assert result.returncode == 0, result.stderr
    assert stack_handle.pids() == {}
    for gone in ("postgres", "stack.json", "deployed.sha256", "aws"):
        assert not (state_dir / gone).exists(), gone
        assert f"deleted {state_dir / gone}" in result.stderr
    assert (state_dir / "logs").exists()  # logs are kept

    stack_handle.ensure_up()
    with pytest.raises(ObjectNotFound):
        _read_flow_run(flow_run_id)
    assert _flow_run_row(flow_run_id) is None


def test_wipe_refuses_while_the_stack_runs(stack, stack_handle):
    """Deleting a running server's files is never done: a clear error, nothing deleted."""
    from interlinked.local import wipe_state
    from interlinked.local.processes import StackError
    from interlinked.settings import Settings

    settings = Settings(_env_file=None)
    assert settings.state_dir == stack_handle.state_dir
    with pytest.raises(StackError, match="still run"):
        wipe_state(settings)
    assert (stack_handle.state_dir / "postgres" / "PG_VERSION").exists()
    assert (stack_handle.state_dir / "stack.json").exists()


@pytest.fixture(scope="module")
def sqlite_stack():
    """A second stack with INTERLINKED_PREFECT_DATABASE=sqlite, its own state directory and ports."""
    base = Path(tempfile.mkdtemp(prefix="interlinked-sqlite-test-"))
    prefect_port, aws_port, postgres_port, api_port = _free_port(), _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        **TEST_ENV,
        "INTERLINKED_PREFECT_DATABASE": "sqlite",
        "INTERLINKED_STATE_DIR": str(base / "state"),
        "INTERLINKED_PREFECT_PORT": str(prefect_port),
        "INTERLINKED_AWS_PORT": str(aws_port),
        "INTERLINKED_POSTGRES_PORT": str(postgres_port),
        "INTERLINKED_SCRIPT_API_PORT": str(api_port),
        "INTERLINKED_SCRIPT_API_URL": f"http://127.0.0.1:{api_port}/",
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_UI_URL": f"http://127.0.0.1:{prefect_port}",
        "PREFECT_HOME": str(base / "prefect-home"),
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{aws_port}",
    }

    # No secret given: this stack's `up` makes its own (the session stack's is given, tests/_stack.py).
    for name in ("PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING"):
        env.pop(name, None)

    def cli(*args: str):
        return subprocess.run(
            [INTERLINKED, *args], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT
        )

    result = cli("up")
    try:
        assert result.returncode == 0, result.stderr
        yield {
            "cli": cli,
            "state_dir": base / "state",
            "postgres_port": postgres_port,
            "prefect_api_url": env["PREFECT_API_URL"],
        }
    finally:
        cli("down")
        shutil.rmtree(base, ignore_errors=True)


def test_sqlite_stack_runs_prefect_on_its_file(sqlite_stack):
    state_dir = sqlite_stack["state_dir"]
    pids = {p.stem: json.loads(p.read_text())["pid"] for p in (state_dir / "pids").glob("*.json")}
    assert {"postgres", "prefect-server"} <= set(pids)
    assert _server_database_url(pids["prefect-server"]) == f"sqlite+aiosqlite:///{state_dir / 'prefect.db'}"
    # `up` deployed into the SQLite file; the PostgreSQL `prefect` database stays unused.
    with sqlite3.connect(state_dir / "prefect.db") as connection:
        (deployments,) = connection.execute("SELECT count(*) FROM deployment").fetchone()
    assert deployments > 0
    with psycopg.connect(_prefect_dsn(sqlite_stack["postgres_port"])) as connection:
        assert connection.execute("SELECT to_regclass('public.deployment')").fetchone() == (None,)
    description = json.loads(sqlite_stack["cli"]("env", "--json").stdout)
    assert description["prefect_database"] == "sqlite"
    secret = _check_the_made_secret(sqlite_stack, pids["prefect-server"])

    # `down` (a CLI process without the secret in its environment) lists the runs in flight
    # through the API with the secret from the state directory; --wipe then deletes it.
    result = sqlite_stack["cli"]("down", "--wipe")
    assert result.returncode == 0, result.stderr
    assert "could not list the flow runs" not in result.stderr
    assert not (state_dir / "prefect.db").exists() and not (state_dir / "postgres").exists()
    assert not (state_dir / "prefect-auth").exists() and secret


def _check_the_made_secret(sqlite_stack: dict, server_pid: int) -> str:
    """`up` without a given secret made one (0600), the server asks for it, `env` prints it."""
    import stat

    import httpx

    path = sqlite_stack["state_dir"] / "prefect-auth"
    secret = path.read_text().strip()
    assert secret.startswith("interlinked:") and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert psutil.Process(server_pid).environ()["PREFECT_SERVER_API_AUTH_STRING"] == secret
    env_output = sqlite_stack["cli"]("env").stdout
    assert f"export PREFECT_API_AUTH_STRING={secret}" in env_output.splitlines()
    api = sqlite_stack["prefect_api_url"]
    assert httpx.get(f"{api}/health").status_code == 200  # open, for readiness probes
    assert httpx.post(f"{api}/flows/filter", json={}).status_code == 401
    assert httpx.post(f"{api}/flows/filter", json={}, auth=tuple(secret.split(":", 1))).status_code == 200
    return secret
