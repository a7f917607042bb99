"""``channel_api.pg_bulk.insert_rows``: rows written by COPY on PostgreSQL
(the portable insert elsewhere) come back exactly as given, whatever the
characters COPY's text format treats specially."""
from __future__ import annotations

from datetime import date, datetime, timezone

from sqlalchemy import (JSON, BigInteger, Boolean, Column, Date, DateTime, Integer, MetaData,
                        String, Table, select)

from channel_api import pg_bulk

_METADATA = MetaData()
_TABLE = Table(
    "test_pg_bulk_rows", _METADATA,
    Column("id", Integer, primary_key=True),
    Column("name", String(200)),
    Column("amount", BigInteger),
    Column("flag", Boolean),
    Column("day", Date),
    Column("at", DateTime(timezone=True)),
    Column("detail", JSON),
)
_TYPES = {"id": "integer", "name": "varchar", "amount": "bigint", "flag": "boolean",
          "day": "date", "at": "timestamptz", "detail": "json"}

AT = datetime(2026, 12, 4, 15, 30, 12, 345678, tzinfo=timezone.utc)


def _rows() -> list[dict]:
    tricky = ["plain", "tab\there", "new\nline", "carriage\rreturn", "back\\slash", "\\N",
              'quote " and comma,', "{braces}", "NULL", "", "零售门店 №7", None]
    return [dict(id=n, name=name, amount=None if name is None else 10 ** 15 + n,
                 flag=None if n == 3 else n % 2 == 0, day=date(2026, 12, 1 + n % 3),
                 at=None if n == 4 else AT, detail=None if n == 5 else {"k": name, "n": [n, "\t\\"]})
            for n, name in enumerate(tricky)]


def test_rows_come_back_as_given(session):
    _TABLE.create(session.connection())
    rows = _rows()
    pg_bulk.insert_rows(session, _TABLE, _TYPES, rows)
    back = [dict(row._mapping) for row in session.execute(select(_TABLE).order_by(_TABLE.c.id))]
    for row in back:
        if row["at"] is not None and row["at"].tzinfo is None:  # SQLite keeps no offset
            row["at"] = row["at"].replace(tzinfo=timezone.utc)
    assert back == rows


def test_nothing_to_insert_is_no_statement(session):
    _TABLE.create(session.connection())
    pg_bulk.insert_rows(session, _TABLE, _TYPES, [])
    assert session.scalar(select(_TABLE.c.id)) is None
