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

from collections import namedtuple
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.sql.sqltypes import NullType

ENABLED = True
_INFO_KEY = "channel_ledger.prepared"
_EXECUTE: dict[tuple[str, int], str] = {}  # (name, argument count): its EXECUTE text


def execute(
    connection: Connection, name: str, arg_types: tuple[str, ...], sql: str, args: tuple
) -> list[tuple]:
    """Run ``sql`` (with ``$1``, ``$2``, … placeholders) as prepared statement
    ``name`` in the connection's current transaction; return its rows.

    It talks to the driver's cursor directly: SQLAlchemy's result machinery
    cost more client time than the statement's round trip. A database error
    propagates as the driver's exception and aborts the transaction as usual.
    """
    pooled = connection.connection
    # The driver's own cursor, not the pool's proxy of it: this runs a dozen
    # times per order.
    cursor = pooled.dbapi_connection.cursor()
    if connection.dispatch.before_cursor_execute:
        # Listeners (statement counters in tests, tracing) see these round
        # trips like any other: the statement's text and its arguments.
        connection.dispatch.before_cursor_execute(connection, cursor, sql, args, None, False)
    try:
        if not ENABLED:
            # Named, because a statement may use a placeholder twice.
            plain = sql.replace("%", "%%")
            for index in range(len(args), 0, -1):
                plain = plain.replace(f"${index}", f"%(p{index})s::{arg_types[index - 1]}")
            cursor.execute(plain, {f"p{index}": arg for index, arg in enumerate(args, start=1)})
        else:
            prepared = pooled.info.get(_INFO_KEY)
            if prepared is None:
                prepared = pooled.info[_INFO_KEY] = set()
            if name not in prepared:
                cursor.execute(f"PREPARE {name}({', '.join(arg_types)}) AS {sql}")
                prepared.add(name)
            text = _EXECUTE.get((name, len(args)))
            if text is None:
                text = _EXECUTE[(name, len(args))] = (
                    f"EXECUTE {name}({', '.join(['%s'] * len(args))})")
            cursor.execute(text, args)
        return cursor.fetchall() if cursor.description else []
    finally:
        cursor.close()


# -- Core selects, prepared -------------------------------------------------------

# name -> (prepared name, SQL with $n, argument types, where each argument
# comes from, the row class), per count of each list parameter.
_COMPILED: dict[tuple, tuple] = {}


def rows(connection: Connection, name: str, statement, params: dict[str, Any]) -> list:
    """A Core select built once at import, run on PostgreSQL as prepared
    statement ``name`` (parsed once per connection, planned once: with
    ``plan_cache_mode=force_generic_plan`` a prepared statement is never
    re-planned); elsewhere run as usual. Rows have the select's column names
    as attributes either way. For the reads every request makes, where
    planning cost the server more than running them (docs/performance.md).

    A list parameter (``bindparam(..., expanding=True)``) is prepared once
    per length. The columns' values come as the driver gives them (JSON
    parsed, times aware), which is what these selects' types would give:
    no column here may need a SQLAlchemy result processor."""
    if connection.dialect.name != "postgresql" or not ENABLED:
        return connection.execute(statement, params).all()
    lengths = tuple(sorted((key, len(value)) for key, value in params.items()
                           if isinstance(value, (list, tuple))))
    compiled = _COMPILED.get((name, lengths))
    if compiled is None:
        compiled = _COMPILED[(name, lengths)] = _compile(connection, name, statement, params,
                                                         lengths)
    full_name, sql, types, sources, row = compiled
    args = tuple(default if key not in params else params[key] if index is None
                 else params[key][index] for key, index, default in sources)
    return [row(*values) for values in execute(connection, full_name, types, sql, args)]


def _compile(connection: Connection, name: str, statement, params: dict[str, Any],
             lengths: tuple) -> tuple:
    dialect = type(connection.dialect)(paramstyle="numeric_dollar")
    lists = {key for key, _ in lengths}
    # List parameters rendered one placeholder per element (names key_1,
    # key_2, …) by SQLAlchemy's "expanded state" for this call's values.
    compiled = statement.compile(dialect=dialect)
    state = compiled.construct_expanded_state(params)
    types, sources = [], []
    for position_name in state.positiontup:
        base, _, number = position_name.rpartition("_")
        if base in lists and number.isdigit():
            key, index = base, int(number) - 1
        else:
            key, index = position_name, None
        bind = compiled.binds[key]
        if not bind.unique and key not in params:
            raise KeyError(f"{name}: no value for parameter {key!r}")
        # An anonymous one (a literal, a LIMIT) keeps the value it was built with.
        sources.append((key, index, state.parameters.get(position_name)))
        types.append("text" if isinstance(bind.type, NullType)
                     else bind.type.compile(dialect=dialect))
    columns = [column.key for column in statement.selected_columns]
    suffix = "_".join(str(length) for _, length in lengths)
    return (f"{name}_{suffix}" if suffix else name, state.statement, tuple(types), tuple(sources),
            namedtuple("Row", columns, rename=True))
