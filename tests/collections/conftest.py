"""Fixtures for the task-store tests: a private moto *server* (real HTTP, as the stack uses) and a
fresh store per test on it.

The moto server is started here, on a free loopback port, once per session; each test gets its
own table, so tests never see each other's tasks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import boto3
import pytest
from botocore.config import Config

from flows.collections.dynamodb import DynamoTaskStore


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """The URL of a moto server started for this session (killed at the end).

    Served through ``interlinked.local.dynamodb_atomic``: moto with its DynamoDB requests one at a
    time, so conditional writes are atomic as on AWS (plain moto lets two concurrent conditional
    updates both win).
    """
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115 - lives with the server
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "interlinked.local.dynamodb_atomic", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"moto_server did not start on {endpoint}")
            time.sleep(0.2)
    yield endpoint
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    log.close()


@pytest.fixture(scope="session")
def dynamodb_client(moto_endpoint):
    return boto3.session.Session().client(
        "dynamodb",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 4, "mode": "standard"}, max_pool_connections=64),
    )


@pytest.fixture
def dynamodb_store(dynamodb_client):
    store = DynamoTaskStore(
        f"tasks-{uuid.uuid4().hex[:10]}", client=dynamodb_client, wait_backoff=0.05, blocked_backoff=0.05
    )
    store.ensure()
    return store


@pytest.fixture(scope="session")
def postgres_dsn(tmp_path_factory):
    """A PostgreSQL database for this session: a cluster of our own, made and started the way the
    stack does it (``interlinked.local.postgres``) on a free port, stopped at the end.
    ``INTERLINKED_TEST_DATABASE_URL`` names an existing database to use instead."""
    existing = os.environ.get("INTERLINKED_TEST_DATABASE_URL")
    if existing:
        yield existing
        return
    from interlinked.local import postgres
    from interlinked.settings import Settings

    root = tmp_path_factory.mktemp("postgres")
    settings = Settings(state_dir=root / "state", host="127.0.0.1", postgres_port=_free_port())
    postgres.ensure_cluster(settings)
    log = open(root / "postgres.log", "wb")  # noqa: SIM115 - lives with the server
    process = subprocess.Popen(
        postgres.server_command(settings),
        cwd="/",
        stdout=log,
        stderr=subprocess.STDOUT,
        **postgres._as_user(postgres.system_user()),
    )
    deadline = time.monotonic() + 60
    while not postgres.ready(settings):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"postgres did not start; see {root / 'postgres.log'}")
        time.sleep(0.2)
    postgres.ensure_database(settings, postgres.INTERLINKED_DATABASE)
    yield postgres.dsn(settings)
    process.send_signal(signal.SIGINT)  # fast shutdown
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    log.close()


@pytest.fixture
def postgres_store(postgres_dsn):
    """A store in a schema of its own (dropped afterwards)."""
    import psycopg

    from flows.collections.postgres import PostgresTaskStore

    schema = f"t_{uuid.uuid4().hex[:10]}"
    store = PostgresTaskStore(postgres_dsn, schema=schema)
    store.ensure()
    yield store
    store.close()
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


BACKENDS = ["dynamodb", "postgres"]


@pytest.fixture(params=BACKENDS)
def store(request):
    """A fresh, empty store of each backend."""
    return request.getfixturevalue(f"{request.param}_store")
