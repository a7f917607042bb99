"""Immutable values the ledger takes and returns.

The core works on these plain values (like beancount's NamedTuples); the ORM
rows in ``models.py`` never leave the package.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence


class AccountType(str, enum.Enum):
    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    REVENUE = "revenue"
    EXPENSE = "expense"


class Side(str, enum.Enum):
    DEBIT = "debit"
    CREDIT = "credit"

    @property
    def opposite(self) -> "Side":
        return Side.CREDIT if self is Side.DEBIT else Side.DEBIT


class AccountStatus(str, enum.Enum):
    OPEN = "open"
    FROZEN = "frozen"
    CLOSED = "closed"


class EntryKind(str, enum.Enum):
    STANDARD = "standard"
    PENDING = "pending"
    POST_PENDING = "post_pending"
    VOID_PENDING = "void_pending"
    REVERSAL = "reversal"


#: Asset and expense accounts grow with debits; the others with credits.
#: A contra account (rebates granted, credit issued) overrides this when opened.
DEFAULT_NORMAL_SIDE = {
    AccountType.ASSET: Side.DEBIT,
    AccountType.EXPENSE: Side.DEBIT,
    AccountType.LIABILITY: Side.CREDIT,
    AccountType.EQUITY: Side.CREDIT,
    AccountType.REVENUE: Side.CREDIT,
}


@dataclass(frozen=True)
class PostingLine:
    """One line of a requested entry. ``account`` is the account code."""

    account: str
    side: Side | str
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class EntryRequest:
    code: str
    postings: Sequence[PostingLine]
    description: str = ""
    idempotency_key: str | None = None
    effective_at: datetime | None = None
    metadata: dict[str, Any] | None = None
    pending: bool = False
    expires_at: datetime | None = None
    # The key names something created in the caller's transaction (say, an
    # order placed in it), so no committed entry can hold it: the ledger
    # skips the replay lookup and its lock, two round trips (the journal's
    # unique index still refuses a duplicate).
    new_key: bool = False


@dataclass(frozen=True)
class AccountView:
    id: str
    code: str
    name: str
    type: AccountType
    normal_side: Side
    currency: str
    owner_party_id: str | None
    status: AccountStatus
    min_balance_minor: int | None
    max_balance_minor: int | None
    balance_shards: int
    metadata: dict[str, Any]
    posted_minor: int
    pending_debits_minor: int
    pending_credits_minor: int
    pending_minor: int
    available_minor: int
    version: int
    created_at: datetime


@dataclass(frozen=True)
class PostingView:
    line: int
    account: str
    side: Side
    amount_minor: int
    currency: str
    pending: bool
    balance_after_minor: int
    version: int
    posted_at: datetime


@dataclass(frozen=True)
class EntryView:
    id: str
    code: str
    kind: EntryKind
    status: str
    description: str
    effective_at: datetime
    posted_at: datetime
    metadata: dict[str, Any]
    idempotency_key: str | None
    pending_id: str | None
    reverses_id: str | None
    expires_at: datetime | None
    postings: tuple[PostingView, ...]


@dataclass(frozen=True)
class EntryResult:
    """The outcome of one request of a batch: an entry, or the error that refused it."""

    index: int
    entry: EntryView | None = None
    error: Exception | None = None
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class StatementLine:
    posting_id: int
    entry_id: str
    entry_code: str
    description: str
    side: Side
    amount_minor: int
    balance_after_minor: int
    posted_at: datetime


@dataclass(frozen=True)
class Statement:
    account: AccountView
    start: datetime
    end: datetime
    opening_balance_minor: int
    closing_balance_minor: int
    lines: list[StatementLine] = field(default_factory=list)
    next_cursor: str | None = None


@dataclass(frozen=True)
class TrialBalanceRow:
    account: str
    name: str
    type: AccountType
    currency: str
    debit_minor: int
    credit_minor: int


@dataclass(frozen=True)
class TrialBalance:
    at: datetime | None
    rows: list[TrialBalanceRow]
    totals: dict[str, tuple[int, int]]

    @property
    def balanced(self) -> bool:
        return all(debits == credits for debits, credits in self.totals.values())


@dataclass(frozen=True)
class Finding:
    """One thing the invariant check found wrong."""

    check: str
    subject: str
    message: str
