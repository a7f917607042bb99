"""Bulk reads and writes for the batch use cases (daily settlement, batch
clearing), the way the ledger's writer does them on PostgreSQL: a whole
column travels as **one** array literal (``{1,2,NULL}``) spread by
``unnest``, so the server parses one constant per column instead of a
placeholder per value (for 300,000 settlement batches the executemany took
22-25 s, this 4 s: docs/performance.md). Elsewhere (SQLite) the portable
SQLAlchemy statements.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import ARRAY, BigInteger, String, Table, cast, func, insert, literal, select, text
from sqlalchemy.orm import Session


def postgresql(session: Session) -> bool:
    return session.connection().dialect.name == "postgresql"


def array_literal(values: Iterable, kind: str) -> str:
    """A PostgreSQL array literal of ``kind`` values (a type name as in
    ``CAST(... AS kind[])``): numbers bare, dates and times in ISO form,
    ``json`` as ``json.dumps`` writes it, anything else as quoted text."""
    if kind in ("integer", "bigint"):
        items = ["NULL" if v is None else str(int(v)) for v in values]
    elif kind == "boolean":
        items = ["NULL" if v is None else ("t" if v else "f") for v in values]
    else:
        if kind == "json":
            values = [None if v is None else json.dumps(v) for v in values]
        elif kind in ("date", "timestamptz"):
            values = list(values)  # a batch's times are mostly a few: each formatted once
            iso = {v: None if v is None else v.isoformat() for v in set(values)}
            values = [iso[v] for v in values]
        texts = [None if v is None else str(v) for v in values]
        blob = "" if None in texts else "".join(texts)
        if None not in texts and '"' not in blob and "\\" not in blob:
            # The common case (codes, ids, ISO times): nothing to escape,
            # quoted with one join (a batch of clearings has 100,000 values).
            return '{"' + '","'.join(texts) + '"}' if texts else "{}"
        items = ["NULL" if t is None else
                 '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in texts]
    return "{" + ",".join(items) + "}"


def insert_rows(session: Session, table: Table, types: Mapping[str, str],
                rows: Sequence[Mapping]) -> None:
    """Insert ``rows`` (dicts keyed by the column names of ``types``, which
    maps each column to its PostgreSQL type) into ``table``, in one
    statement on PostgreSQL."""
    if not rows:
        return
    if not postgresql(session):
        session.execute(insert(table), list(rows))
        return
    statement = text(
        f"INSERT INTO {table.name} ({', '.join(types)}) SELECT * FROM unnest("
        + ", ".join(f"CAST(:{c} AS {t}[])" for c, t in types.items()) + ")")
    session.execute(statement, {column: array_literal([row[column] for row in rows], kind)
                                for column, kind in types.items()})


_ARRAY_OF = {"bigint": ARRAY(BigInteger), "varchar": ARRAY(String)}


def among(session: Session, column, values: Iterable, kind: str):
    """``column IN values`` for thousands of values. On PostgreSQL they
    travel as one array literal unnested in a subquery (a placeholder per
    value cost the client four times what the query does; ``= ANY(array)``
    let the planner scan the whole table after estimating each value)."""
    values = sorted(values)
    if postgresql(session):
        return column.in_(select(func.unnest(cast(literal(array_literal(values, kind), String),
                                                  _ARRAY_OF[kind]))))
    return column.in_(values)
