"""Test fixtures: a throwaway database per backend, built by running the
migrations (never ``create_all``), and a session per test rolled back at the
end (warehouse's pattern), so tests stay fast and independent.

Every test that takes ``engine`` (directly or through ``session``) runs once
per backend: SQLite and PostgreSQL. ``CL_TEST_BACKENDS=sqlite`` narrows the
run on a machine without PostgreSQL; CI runs both.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from service.db import make_engine, make_session_factory
from service.migrate import upgrade
from tests.isolated_db import create_database, drop_database

BACKENDS = [b.strip() for b in os.environ.get("CL_TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]


@pytest.fixture(scope="session")
def database_urls():
    """Created lazily, once per backend per test run."""
    made: dict[str, str] = {}
    tmpdir = tempfile.TemporaryDirectory(prefix="cl-test-")

    def get(backend: str) -> str:
        if backend not in made:
            made[backend] = create_database(backend, Path(tmpdir.name))
            upgrade(made[backend])
        return made[backend]

    yield get
    for url in made.values():
        drop_database(url)
    tmpdir.cleanup()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def database_url(backend, database_urls) -> str:
    return database_urls(backend)


@pytest.fixture(scope="session")
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine):
    """Sessions that really commit (for API, CLI and concurrency tests).
    What they write stays in the throwaway database: use unique codes."""
    return make_session_factory(engine)


@pytest.fixture
def session(engine):
    """A session inside an outer transaction that is rolled back after the
    test; the code under test may ``begin``/``commit`` (it gets savepoints)."""
    connection = engine.connect()
    outer = connection.begin()
    db = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    yield db
    db.close()
    if outer.is_active:
        outer.rollback()
    connection.close()


@pytest.fixture
def unique() -> str:
    """A short prefix that keeps committed test data from colliding."""
    return uuid.uuid4().hex[:10]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "postgres_only" in item.keywords and "[sqlite" in item.nodeid:
            item.add_marker(pytest.mark.skip(reason="PostgreSQL-only behaviour"))
