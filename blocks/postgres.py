"""Our own PostgreSQL database (the task store's), as a Prefect block.

``interlinked up`` saves it as :data:`blocks.names.DATABASE` pointing at the local stack's database
``interlinked``; on AWS it points at the RDS instance. ``INTERLINKED_DATABASE_URL`` in the
environment wins over the saved URL, so one process can be pointed elsewhere without re-saving.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.names import DATABASE

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

URL_ENV = "INTERLINKED_DATABASE_URL"


class PostgresDatabase(Block):
    """A PostgreSQL database reached with psycopg: single connections or a connection pool."""

    _block_type_name = "Postgres Database"
    _block_type_slug = "postgres-database"
    _description = "A PostgreSQL database (libpq URI) with psycopg connection and pool helpers."

    url: SecretStr = Field(
        description="libpq connection URI, e.g. postgresql://user:password@host:5432/dbname?sslmode=require."
    )

    def dsn(self) -> str:
        """The URI to connect with: ``INTERLINKED_DATABASE_URL`` when set, else the saved one."""
        return os.environ.get(URL_ENV) or self.url.get_secret_value()

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        """A new psycopg connection (the caller closes it; use it as a context manager)."""
        import psycopg

        return psycopg.connect(self.dsn(), **kwargs)

    def pool(self, *, min_size: int = 1, max_size: int = 10, **kwargs: Any) -> psycopg_pool.ConnectionPool:
        """An opened psycopg connection pool (the caller closes it; use it as a context manager)."""
        from psycopg_pool import ConnectionPool

        kwargs.setdefault("open", True)
        return ConnectionPool(self.dsn(), min_size=min_size, max_size=max_size, **kwargs)


def database(name: str = DATABASE) -> PostgresDatabase:
    """Our database: the saved block ``name``, or only ``INTERLINKED_DATABASE_URL`` when that is set
    and no block is saved (e.g. a process that runs without a Prefect server)."""
    from prefect.exceptions import ObjectNotFound

    try:
        return PostgresDatabase.load(name)
    except (ObjectNotFound, ValueError):
        url = os.environ.get(URL_ENV)
        if not url:
            raise
        return PostgresDatabase(url=SecretStr(url))
