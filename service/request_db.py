"""One SQLAlchemy session per HTTP request, opened on first use, closed at teardown.

Plain SQLAlchemy (no Flask extension): the session factory sits in
``app.extensions`` and the request's session in ``flask.g``. Views that write
wrap their use case in ``with db_session().begin():``; read-only views just
read, and the teardown's close() ends (rolls back) the read transaction.
"""
from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session, sessionmaker

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
