"""Alembic environment.

The database URL comes from, in order: ``config.attributes["url"]`` (set by
``service.migrate``), ``-x url=...`` on the alembic command line, then the
``CL_DATABASE_URL`` environment variable. On PostgreSQL a transaction-level
advisory lock makes concurrent ``migrate`` runs (several containers starting
at once) queue instead of racing, and a lock timeout keeps a migration from
waiting forever behind a long transaction (as warehouse does).
"""
from __future__ import annotations

import os

from alembic import context
from sqlalchemy import text

import ledger.models  # noqa: F401  (registers the ledger tables)
import service.models  # noqa: F401  (registers the service tables)
import channel_api.models  # noqa: F401  (registers the channel tables)
import payments.models  # noqa: F401  (registers the payment tables)
import clearing.models  # noqa: F401  (registers the clearing tables)
import clearing.settlement_models  # noqa: F401  (and the settlement and payout tables)
from ledger.models import Base
from service.db import make_engine

MIGRATION_LOCK_ID = 0x6C656467  # "ledg"

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or os.environ.get("CL_DATABASE_URL")
    if not url:
        raise SystemExit("no database URL: set CL_DATABASE_URL or pass -x url=...")
    return url


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(database_url())
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


def _run(connection) -> None:
    is_pg = connection.dialect.name == "postgresql"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=not is_pg,  # SQLite alters tables by copying them
        compare_type=True,
        # The journal's foreign keys checked by a trigger on PostgreSQL (0020).
        **({"include_object": ledger.models.include_object} if is_pg else {}),
    )
    with context.begin_transaction():
        if is_pg:
            connection.execute(text("SET LOCAL lock_timeout = '10s'"))
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
