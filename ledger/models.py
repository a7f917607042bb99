"""ORM rows of the ledger (SQLAlchemy 2).

Design overview
---------------
* ``ledger_account`` holds what an account *is*: code, type, normal side,
  currency, owner, status and bounds. Its type, normal side, currency and
  shard count never change after it is opened.
* ``ledger_balance`` holds what an account *has*: posted and pending debits
  and credits and a version, in one row per shard. Most accounts have one
  shard. A hot account (the brand's, which receives a leg of almost every
  order) is opened with several: a posting that moves it away from its bounds
  locks and updates only one shard, so concurrent orders do not queue on one
  row; a posting that moves it toward a bound locks every shard and checks the
  total. The balance is the sum of the shards.
* ``ledger_entry`` is a journal entry; ``ledger_posting`` its lines. Both are
  append-only: PostgreSQL and SQLite triggers refuse UPDATE and DELETE, and on
  PostgreSQL a deferred constraint trigger refuses, at COMMIT, any entry whose
  postings do not balance per currency.
* Two-phase transfers: a ``pending`` entry's postings only reserve (they move
  the pending columns). A later ``post_pending`` or ``void_pending`` entry
  points at it through ``pending_id``, which is unique, so a pending entry is
  resolved at most once. A ``reversal`` points at what it reverses through the
  unique ``reverses_id``.
* Each posting stores the balance of its (account, shard) after it and the
  shard's version, so statements and balances at a past time are indexed reads.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer, "sqlite")
Json = JSON()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Account(Base):
    __tablename__ = "ledger_account"
    __table_args__ = (
        CheckConstraint(
            "type IN ('asset','liability','equity','revenue','expense')", name="type"
        ),
        CheckConstraint("normal_side IN ('debit','credit')", name="normal_side"),
        CheckConstraint("status IN ('open','frozen','closed')", name="status"),
        CheckConstraint(
            "min_balance_minor IS NULL OR max_balance_minor IS NULL "
            "OR min_balance_minor <= max_balance_minor",
            name="bounds",
        ),
        CheckConstraint("balance_shards BETWEEN 1 AND 64", name="balance_shards"),
        CheckConstraint("length(currency) = 3", name="currency"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    code: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16))
    normal_side: Mapped[str] = mapped_column(String(6))
    currency: Mapped[str] = mapped_column(String(3))
    owner_party_id: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(8), default="open")
    min_balance_minor: Mapped[int | None] = mapped_column(BigInteger)
    max_balance_minor: Mapped[int | None] = mapped_column(BigInteger)
    balance_shards: Mapped[int] = mapped_column(SmallInteger, default=1)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", Json, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Balance(Base):
    __tablename__ = "ledger_balance"
    __table_args__ = (
        CheckConstraint(
            "posted_debits_minor >= 0 AND posted_credits_minor >= 0 "
            "AND pending_debits_minor >= 0 AND pending_credits_minor >= 0",
            name="non_negative",
        ),
    )

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("ledger_account.id"), primary_key=True
    )
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    posted_debits_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    posted_credits_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    pending_debits_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    pending_credits_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class JournalEntry(Base):
    __tablename__ = "ledger_entry"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('standard','pending','post_pending','void_pending','reversal')",
            name="kind",
        ),
        CheckConstraint(
            "(kind IN ('post_pending','void_pending')) = (pending_id IS NOT NULL)",
            name="pending_link",
        ),
        CheckConstraint(
            "(kind = 'reversal') = (reverses_id IS NOT NULL)", name="reversal_link"
        ),
        CheckConstraint("expires_at IS NULL OR kind = 'pending'", name="expiry"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    code: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    effective_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    posted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", Json, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    pending_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("ledger_entry.id"))
    reverses_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("ledger_entry.id"))


# Most entries have no idempotency key and resolve or reverse nothing: partial
# unique indexes keep those entries out of three indexes (each costs every insert).
for _column in ("idempotency_key", "pending_id", "reverses_id"):
    Index(
        f"uq_ledger_entry_{_column}",
        JournalEntry.__table__.c[_column],
        unique=True,
        postgresql_where=JournalEntry.__table__.c[_column].is_not(None),
        sqlite_where=JournalEntry.__table__.c[_column].is_not(None),
    )

# Open pending entries are found by expiry (the expiry job).
Index(
    "ix_ledger_entry_open_pending",
    JournalEntry.expires_at,
    postgresql_where=JournalEntry.kind == "pending",
    sqlite_where=JournalEntry.kind == "pending",
)


# On PostgreSQL these two foreign keys are not constraints but a check in the
# journal's statement-level trigger (migration 0020): once per INSERT instead
# of two look-ups and row locks per posting. SQLite keeps them as declared.
# The schema comparison (tests/test_schema.py, migrations/env.py) skips them
# there: ``include_object``.
POSTGRESQL_TRIGGER_CHECKED_FKS = frozenset({
    "fk_ledger_posting_entry_id_ledger_entry", "fk_ledger_posting_account_id_ledger_account"})


def include_object(object_, name, type_, reflected, compare_to) -> bool:
    """Alembic's filter for comparing the models with a PostgreSQL database."""
    return not (type_ == "foreign_key_constraint" and name in POSTGRESQL_TRIGGER_CHECKED_FKS)


class Posting(Base):
    __tablename__ = "ledger_posting"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("side IN ('debit','credit')", name="side"),
        Index("ix_ledger_posting_account_time", "account_id", "shard", "posted_at", "version"),
        Index("ix_ledger_posting_entry", "entry_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    entry_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("ledger_entry.id"))
    line: Mapped[int] = mapped_column(SmallInteger)
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("ledger_account.id"))
    shard: Mapped[int] = mapped_column(SmallInteger)
    side: Mapped[str] = mapped_column(String(6))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    pending: Mapped[bool] = mapped_column(Boolean, default=False)
    balance_after_minor: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(BigInteger)
    posted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
