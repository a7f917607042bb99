"""Writing changed balances, entries and postings to the database.

PostgreSQL gets one statement for the whole batch: an UPDATE of the balance
shards and the INSERTs of entries and postings, chained as data-modifying
CTEs, with every column passed as an array and spread by ``unnest``. That is
one round trip whether the batch holds one entry or ten thousand, and the
statement text never changes, so the server parses rows, not SQL. A large
batch (``COPY_FROM`` postings or more: batch clearing, release) updates the
shards with the same UPDATE and sends entries and postings by ``COPY``,
which costs the server about a quarter less than unnesting them (2,500
clearing entries with 10,000 postings: about 100 against 137 ms); the
journal's statement trigger checks a COPY as it checks an INSERT.
Other databases (SQLite) get the portable Core statements; they run in the
same process, where a round trip costs nothing.
"""
from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from typing import Sequence

from sqlalchemy import Connection, bindparam, insert, update
from sqlalchemy.orm import Session

from . import prepared
from .locking import ShardState
from .models import Balance, JournalEntry, Posting

ENTRY_COLUMNS = (
    "id", "kind", "code", "description", "effective_at", "posted_at", "expires_at",
    "metadata", "idempotency_key", "request_hash", "pending_id", "reverses_id",
)
POSTING_COLUMNS = (
    "entry_id", "line", "account_id", "shard", "side", "amount_minor", "currency",
    "pending", "balance_after_minor", "version", "posted_at",
)

# The balances' UPDATE: a CTE of the one-statement write, and on its own
# before a write by COPY.
_PG_BALANCES = """
UPDATE ledger_balance AS b
   SET posted_debits_minor = v.pd, posted_credits_minor = v.pc,
       pending_debits_minor = v.qd, pending_credits_minor = v.qc, version = v.ver
  FROM unnest($1, $2, $3, $4, $5, $6, $7) AS v(account_id, shard, pd, pc, qd, qc, ver)
 WHERE b.account_id = v.account_id AND b.shard = v.shard
"""
_PG_WRITE = f"""
WITH balances AS ({_PG_BALANCES}), entries AS (
    INSERT INTO ledger_entry (id, kind, code, description, effective_at, posted_at, expires_at,
                              metadata, idempotency_key, request_hash, pending_id, reverses_id)
    SELECT * FROM unnest($8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
)
INSERT INTO ledger_posting (entry_id, line, account_id, shard, side, amount_minor, currency,
                            pending, balance_after_minor, version, posted_at)
SELECT * FROM unnest($20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30)
"""
# Postings from which a write goes by COPY: below, the one statement's single
# round trip wins; above, COPY's cheaper parsing does.
COPY_FROM = 1_000
_PG_WRITE_TYPES = (
    # balances: account_id, shard, posted Dr, Cr, pending Dr, Cr, version
    "bigint[]", "smallint[]", "bigint[]", "bigint[]", "bigint[]", "bigint[]", "bigint[]",
    # entries, in ENTRY_COLUMNS order
    "uuid[]", "varchar[]", "varchar[]", "text[]", "timestamptz[]", "timestamptz[]",
    "timestamptz[]", "json[]", "varchar[]", "varchar[]", "uuid[]", "uuid[]",
    # postings, in POSTING_COLUMNS order
    "uuid[]", "smallint[]", "bigint[]", "smallint[]", "varchar[]", "bigint[]", "varchar[]",
    "boolean[]", "bigint[]", "bigint[]", "timestamptz[]",
)


WriteListener = Callable[[Session, list[str], int], None]
_write_listeners: list[WriteListener] = []


def add_write_listener(listener: WriteListener) -> None:
    """Call ``listener(session, entry_kinds, posting_count)`` after each write.
    The ledger imports no metrics library; the service counts through this."""
    if listener not in _write_listeners:
        _write_listeners.append(listener)


def write_journal(
    session: Session, shards: Sequence[ShardState], entries: list[dict], postings: list[dict]
) -> None:
    """Persist the shards' new balances and the new entries and postings."""
    shards = sorted(shards, key=lambda s: (s.account_id, s.shard))
    if session.connection().dialect.name == "postgresql":
        _write_pg(session, shards, entries, postings)
    else:
        _write_portable(session, shards, entries, postings)
    for listener in _write_listeners:
        listener(session, [entry["kind"] for entry in entries], len(postings))


# PostgreSQL array literals (``{1,2,NULL}``): each column travels as one text
# constant, so the server parses one value, not thousands of placeholders.
# ``channel_api.pg_bulk`` encodes its bulk statements' columns with these too.


def ints_array(values) -> str:
    return "{" + ",".join(["NULL" if v is None else str(int(v)) for v in values]) + "}"


def texts_array(values) -> str:
    texts = [None if v is None else str(v) for v in values]
    if None not in texts:
        blob = "".join(texts)
        if '"' not in blob and "\\" not in blob:
            # Nothing to escape (ids, codes, keys): quoted with one join.
            return '{"' + '","'.join(texts) + '"}' if texts else "{}"
    return "{" + ",".join(
        ["NULL" if t is None else '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'
         for t in texts]) + "}"


def times_array(values) -> str:
    # A batch's entries and postings mostly share one moment: format each
    # distinct time once.
    values = list(values)
    quoted = {v: "NULL" if v is None else '"' + v.isoformat() + '"' for v in set(values)}
    return "{" + ",".join([quoted[v] for v in values]) + "}"


def _bools(values) -> str:
    return "{" + ",".join(["t" if v else "f" for v in values]) + "}"


_ENTRY_ENCODERS = {
    "id": texts_array, "kind": texts_array, "code": texts_array, "description": texts_array,
    "effective_at": times_array, "posted_at": times_array, "expires_at": times_array,
    "metadata": lambda values: texts_array([json.dumps(v, separators=(",", ":")) for v in values]),
    "idempotency_key": texts_array, "request_hash": texts_array, "pending_id": texts_array, "reverses_id": texts_array,
}
_POSTING_ENCODERS = {
    "entry_id": texts_array, "line": ints_array, "account_id": ints_array, "shard": ints_array, "side": texts_array,
    "amount_minor": ints_array, "currency": texts_array, "pending": _bools, "balance_after_minor": ints_array,
    "version": ints_array, "posted_at": times_array,
}


def _write_pg(session: Session, shards, entries, postings) -> None:
    balances = (
        ints_array([s.account_id for s in shards]),
        ints_array([s.shard for s in shards]),
        ints_array([s.posted_debits for s in shards]),
        ints_array([s.posted_credits for s in shards]),
        ints_array([s.pending_debits for s in shards]),
        ints_array([s.pending_credits for s in shards]),
        ints_array([s.version for s in shards]),
    )
    connection = session.connection()
    if len(postings) >= COPY_FROM:
        if shards:
            prepared.execute(connection, "cl_write_balances", _PG_WRITE_TYPES[:7], _PG_BALANCES,
                             balances)
        copy_rows(connection, "ledger_entry", _ENTRY_KINDS, entries)
        copy_rows(connection, "ledger_posting", _POSTING_KINDS, postings)
        return
    args = list(balances)
    for column in ENTRY_COLUMNS:
        args.append(_ENTRY_ENCODERS[column]([e[column] for e in entries]))
    for column in POSTING_COLUMNS:
        args.append(_POSTING_ENCODERS[column]([p[column] for p in postings]))
    prepared.execute(connection, "cl_write_journal", _PG_WRITE_TYPES, _PG_WRITE, tuple(args))


# -- COPY --------------------------------------------------------------------
# Text format: a tab between columns, a line per row, ``\N`` for NULL, and a
# backslash, tab, newline or carriage return inside a value escaped.

_ENTRY_KINDS = {
    "id": "text", "kind": "text", "code": "text", "description": "text",
    "effective_at": "timestamptz", "posted_at": "timestamptz", "expires_at": "timestamptz",
    "metadata": "json", "idempotency_key": "text", "request_hash": "text",
    "pending_id": "text", "reverses_id": "text",
}
_POSTING_KINDS = {
    "entry_id": "text", "line": "integer", "account_id": "bigint", "shard": "integer",
    "side": "text", "amount_minor": "bigint", "currency": "text", "pending": "boolean",
    "balance_after_minor": "bigint", "version": "bigint", "posted_at": "timestamptz",
}
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_rows(connection: Connection, table: str, kinds: Mapping[str, str],
              rows: Sequence[Mapping]) -> None:
    """``COPY table FROM STDIN`` of ``rows`` (dicts keyed by the columns of
    ``kinds``, which maps each to ``integer``, ``bigint``, ``boolean``,
    ``date``, ``timestamptz``, ``json`` or anything else for text), in the
    connection's transaction (PostgreSQL only)."""
    if not rows:
        return
    columns = [_copy_column([row[column] for row in rows], kind) for column, kind in kinds.items()]
    data = "".join(["\t".join(values) + "\n" for values in zip(*columns)])
    cursor = connection.connection.cursor()
    try:
        cursor.copy_expert(f"COPY {table} ({', '.join(kinds)}) FROM STDIN", io.StringIO(data),
                           size=1 << 20)
    finally:
        cursor.close()


def _copy_column(values: list, kind: str) -> list[str]:
    """One column's values in COPY's text format."""
    if kind in ("integer", "bigint", "smallint"):
        return ["\\N" if v is None else str(int(v)) for v in values]
    if kind == "boolean":
        return ["\\N" if v is None else ("t" if v else "f") for v in values]
    if kind in ("date", "timestamptz"):
        # A batch's rows mostly share a few moments: format each once.
        iso = {v: "\\N" if v is None else v.isoformat() for v in set(values)}
        return [iso[v] for v in values]
    if kind == "json":
        values = [None if v is None else json.dumps(v, separators=(",", ":")) for v in values]
    texts = [None if v is None else str(v) for v in values]
    blob = "".join([t for t in texts if t is not None])
    if "\\" in blob or "\t" in blob or "\n" in blob or "\r" in blob:
        return ["\\N" if t is None else t.translate(_COPY_ESCAPES) for t in texts]
    return ["\\N" if t is None else t for t in texts]  # ids, codes, keys: nothing to escape


_BALANCE = Balance.__table__
_UPDATE_BALANCE = (
    update(_BALANCE)
    .where(_BALANCE.c.account_id == bindparam("b_account_id"), _BALANCE.c.shard == bindparam("b_shard"))
    .values(
        posted_debits_minor=bindparam("b_pd"),
        posted_credits_minor=bindparam("b_pc"),
        pending_debits_minor=bindparam("b_qd"),
        pending_credits_minor=bindparam("b_qc"),
        version=bindparam("b_version"),
    )
)


def _write_portable(session: Session, shards, entries, postings) -> None:
    connection = session.connection()
    if shards:
        connection.execute(
            _UPDATE_BALANCE,
            [
                {
                    "b_account_id": s.account_id, "b_shard": s.shard,
                    "b_pd": s.posted_debits, "b_pc": s.posted_credits,
                    "b_qd": s.pending_debits, "b_qc": s.pending_credits,
                    "b_version": s.version,
                }
                for s in shards
            ],
        )
    if entries:
        connection.execute(insert(JournalEntry.__table__), entries)
    if postings:
        connection.execute(insert(Posting.__table__), postings)
