"""One SQLAlchemy session per HTTP request, opened on first use, closed at teardown.

Plain SQLAlchemy (no Flask extension): the session factory sits in
``app.extensions`` and the request's session in ``flask.g``. Views that write
wrap their use case in ``with request_transaction(db_session()):``; read-only
views just read, and the teardown's close() ends (rolls back) the read
transaction.
"""
from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

EXTENSION_KEY = "channel_ledger.session_factory"


def init_request_sessions(app: Flask, session_factory: sessionmaker[Session]) -> None:
    app.extensions[EXTENSION_KEY] = session_factory

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


def db_session() -> Session:
    """The current request's session (created on first call)."""
    session = g.get("db_session")
    if session is None:
        session = current_app.extensions[EXTENSION_KEY]()
        g.db_session = session
    return session


def request_transaction(session: Session) -> SessionTransaction:
    """The transaction a writing view runs in (use as ``with ...:``: commits
    at the end of the block, rolls back on an exception).

    A channel API request has already begun the session's transaction by
    reading the caller's API key (``service.channel_edge``). Continuing that
    transaction, rather than rolling it back and beginning another, saves a
    ROLLBACK round trip, a pool check-in and check-out and a second BEGIN on
    every call. It changes nothing the view can see: the key read wrote
    nothing, PostgreSQL's READ COMMITTED takes a fresh snapshot per
    statement, and on SQLite the transaction already began with
    ``BEGIN IMMEDIATE`` (``service.db``). With no transaction yet, a new one
    begins.
    """
    current = session.get_transaction()
    return current if current is not None else session.begin()
