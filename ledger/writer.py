"""Writing changed balances, entries and postings to the database.

PostgreSQL gets one statement for the whole batch: an UPDATE of the balance
shards and the INSERTs of entries and postings, chained as data-modifying
CTEs, with every column passed as an array and spread by ``unnest``. That is
one round trip whether the batch holds one entry or ten thousand, and the
statement text never changes, so the server parses rows, not SQL.
Other databases (SQLite) get the portable Core statements; they run in the
same process, where a round trip costs nothing.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Sequence

from sqlalchemy import bindparam, insert, update
from sqlalchemy.orm import Session

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

_PG_WRITE = """
WITH balances AS (
    UPDATE ledger_balance AS b
       SET posted_debits_minor = v.pd, posted_credits_minor = v.pc,
           pending_debits_minor = v.qd, pending_credits_minor = v.qc, version = v.ver
      FROM unnest(%(b_account)s::bigint[], %(b_shard)s::smallint[], %(b_pd)s::bigint[],
                  %(b_pc)s::bigint[], %(b_qd)s::bigint[], %(b_qc)s::bigint[],
                  %(b_ver)s::bigint[]) AS v(account_id, shard, pd, pc, qd, qc, ver)
     WHERE b.account_id = v.account_id AND b.shard = v.shard
), entries AS (
    INSERT INTO ledger_entry (id, kind, code, description, effective_at, posted_at, expires_at,
                              metadata, idempotency_key, request_hash, pending_id, reverses_id)
    SELECT * FROM unnest(%(e_id)s::uuid[], %(e_kind)s::varchar[], %(e_code)s::varchar[],
                         %(e_description)s::text[], %(e_effective_at)s::timestamptz[],
                         %(e_posted_at)s::timestamptz[], %(e_expires_at)s::timestamptz[],
                         %(e_metadata)s::json[], %(e_idempotency_key)s::varchar[],
                         %(e_request_hash)s::varchar[], %(e_pending_id)s::uuid[],
                         %(e_reverses_id)s::uuid[])
)
INSERT INTO ledger_posting (entry_id, line, account_id, shard, side, amount_minor, currency,
                            pending, balance_after_minor, version, posted_at)
SELECT * FROM unnest(%(p_entry_id)s::uuid[], %(p_line)s::smallint[], %(p_account_id)s::bigint[],
                     %(p_shard)s::smallint[], %(p_side)s::varchar[], %(p_amount_minor)s::bigint[],
                     %(p_currency)s::varchar[], %(p_pending)s::boolean[],
                     %(p_balance_after_minor)s::bigint[], %(p_version)s::bigint[],
                     %(p_posted_at)s::timestamptz[])
"""


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


def _array(values) -> str:
    """A PostgreSQL array literal (``{1,2,NULL}``), so each column travels as
    one text constant: the planner then sees one value, not thousands (an
    ``ARRAY[...]`` of 10,000 constants costs more to plan than to insert)."""
    items = []
    for value in values:
        if value is None:
            items.append("NULL")
        elif isinstance(value, bool):
            items.append("t" if value else "f")
        elif isinstance(value, int):
            items.append(str(value))
        else:
            text = value.isoformat() if hasattr(value, "isoformat") else str(value)
            items.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(items) + "}"


def _write_pg(session: Session, shards, entries, postings) -> None:
    params = {
        "b_account": _array([s.account_id for s in shards]),
        "b_shard": _array([s.shard for s in shards]),
        "b_pd": _array([s.posted_debits for s in shards]),
        "b_pc": _array([s.posted_credits for s in shards]),
        "b_qd": _array([s.pending_debits for s in shards]),
        "b_qc": _array([s.pending_credits for s in shards]),
        "b_ver": _array([s.version for s in shards]),
    }
    for column in ENTRY_COLUMNS:
        values = [e[column] for e in entries]
        if column == "metadata":
            values = [json.dumps(v, separators=(",", ":")) for v in values]
        params[f"e_{column}"] = _array(values)
    for column in POSTING_COLUMNS:
        params[f"p_{column}"] = _array([p[column] for p in postings])
    session.connection().exec_driver_sql(_PG_WRITE, params)


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
