"""Engine and session factory.

One engine per process, one session per request or job. On SQLite every
transaction starts with ``BEGIN IMMEDIATE``: SQLite has no row locks, so the
ledger's "lock the accounts, check the bounds, write" sequence is only safe
when the whole transaction holds the database's write lock from its start.
"""
from __future__ import annotations

import random
import time

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    # No pre-ping: it would cost a round trip on every checkout. A connection
    # the server dropped (a database restart) fails its first use instead, and
    # SQLAlchemy then discards the pool's stale connections; the caller sees
    # one error and retries (with its idempotency key).
    kwargs.setdefault("pool_recycle", 3600)
    # The ledger prepares its two hot statements once per connection; with
    # array parameters PostgreSQL would otherwise keep re-planning them
    # ("custom plans"), which cost as much server time as running them.
    # Only prepared statements are affected by this setting.
    # An executemany of UPDATEs (the ORM flushing a batch of applied
    # callbacks and their payments) goes as pages of 100 statements per
    # round trip (psycopg2's execute_batch), not one round trip per row.
    # Nothing here reads the row count of an executemany.
    kwargs.setdefault("executemany_mode", "values_plus_batch")
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("options", "-c plan_cache_mode=force_generic_plan")
    return create_engine(url, connect_args=connect_args, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the driver, decide when a transaction begins.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


# PostgreSQL's "deadlock detected" and "could not serialize access".
RETRYABLE_SQLSTATES = {"40P01", "40001"}


def is_retryable(error: BaseException) -> bool:
    """Whether a database error means "run the whole transaction again".
    (Not a dropped connection: it may have dropped during COMMIT, and then
    only the caller's idempotency key can tell whether the work was done.)"""
    original = getattr(error, "orig", error)
    return getattr(original, "pgcode", None) in RETRYABLE_SQLSTATES


def run_in_transaction(session_factory: sessionmaker[Session], use_case, *, attempts: int = 5):
    """Run ``use_case(session)`` in one transaction and commit it; run it again
    from the start if the database chose it as a deadlock victim.

    Each ledger call locks what it touches in one fixed order, so a single
    call cannot deadlock; a use case that makes several calls in one
    transaction can, against another doing the same in another order. The
    database then aborts one of them, and this wrapper retries it, so no
    deadlock error reaches a caller.
    """
    for attempt in range(1, attempts + 1):
        try:
            with session_factory() as session, session.begin():
                return use_case(session)
        except Exception as error:  # noqa: BLE001 - re-raised unless retryable
            if attempt == attempts or not is_retryable(error):
                raise
            time.sleep(random.uniform(0, 0.01 * attempt))  # let the winner finish
