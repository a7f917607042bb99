"""Server-side prepared statements for the statements every write runs on
PostgreSQL (the balance lock and the journal write).

psycopg2 sends each statement as text, and PostgreSQL parses and plans it
every time; for the ledger's two fixed statements that was a third of the
server's work per transfer. ``PREPARE`` once per database connection, then
``EXECUTE``, keeps the parsed (and, after a few runs, planned) statement in
the server session. Which statements a connection has prepared is kept in the
pooled connection's ``info``, which lives exactly as long as the connection.
(Behind a transaction-mode pooler such as PgBouncer < 1.21, server sessions
are shared and this must be turned off: ``ledger.prepared.ENABLED = False``.)
"""
from __future__ import annotations

from sqlalchemy import Connection

ENABLED = True
_INFO_KEY = "channel_ledger.prepared"


def execute(
    connection: Connection, name: str, arg_types: tuple[str, ...], sql: str, args: tuple
) -> list[tuple]:
    """Run ``sql`` (with ``$1``, ``$2``, … placeholders) as prepared statement
    ``name`` in the connection's current transaction; return its rows.

    It talks to the driver's cursor directly: SQLAlchemy's result machinery
    cost more client time than the statement's round trip. A database error
    propagates as the driver's exception and aborts the transaction as usual.
    """
    cursor = connection.connection.cursor()
    if connection.dispatch.before_cursor_execute:
        # Listeners (statement counters in tests, tracing) see these round
        # trips like any other: the statement's text and its arguments.
        connection.dispatch.before_cursor_execute(connection, cursor, sql, args, None, False)
    try:
        if not ENABLED:
            plain = sql
            for index in range(len(args), 0, -1):
                plain = plain.replace(f"${index}", f"%s::{arg_types[index - 1]}")
            cursor.execute(plain, args)
        else:
            prepared = connection.info.setdefault(_INFO_KEY, set())
            if name not in prepared:
                cursor.execute(f"PREPARE {name}({', '.join(arg_types)}) AS {sql}")
                prepared.add(name)
            cursor.execute(f"EXECUTE {name}({', '.join(['%s'] * len(args))})", args)
        return cursor.fetchall() if cursor.description else []
    finally:
        cursor.close()
