"""A database of its own for a test module whose tests commit.

The shared test database (conftest's ``engine``) is seen by every module;
the API, scheduler and CLI tests commit real rows, which would change what
module-wide reads (a trial balance, a list of every entry) see elsewhere. A
module that commits overrides ``engine`` with :func:`isolated_engine`.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, make_url

from service.db import make_engine
from service.migrate import upgrade

PG_ADMIN_URL = os.environ.get("CL_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def create_database(backend: str, directory: Path) -> str:
    """A new, empty database of ``backend``; returns its URL."""
    name = f"cl_test_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        return f"sqlite:///{directory}/{name}.sqlite3"
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop a database made by :func:`create_database` (SQLite files go with their directory)."""
    if not url.startswith("postgresql"):
        return
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    admin.dispose()


@contextmanager
def isolated_engine(backend: str, directory: Path, *, migrated: bool = True) -> Iterator[Engine]:
    """An engine on a new, empty database of ``backend``; dropped afterwards."""
    url = create_database(backend, directory)
    if migrated:
        upgrade(url)
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        drop_database(url)
