"""Locking the balance rows an entry touches, in one fixed order.

Every write path goes through :func:`lock_balances`: one statement selects
the shard rows of the named accounts ``ORDER BY account_id, shard FOR UPDATE``
(PostgreSQL locks rows in that order, so two transactions can never wait on
each other in a cycle). On SQLite the whole transaction already holds the
write lock (``BEGIN IMMEDIATE`` in ``service.db``), and ``FOR UPDATE`` is left
out by the dialect.

Which shards: an account with one shard has one row. A sharded (hot)
account gets one shard picked by the calling process and thread when every
posting moves it away from its bounds, and all its shards when a posting
moves it toward a bound, because only the total can be checked against it.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from sqlalchemy import and_, bindparam, or_, select, tuple_
from sqlalchemy.orm import Session

from .models import Account, Balance
from .rules import Totals
from .values import Side


@dataclass
class ShardState:
    """A locked balance row, changed in memory and written back at the end."""

    account_id: int
    shard: int
    posted_debits: int
    posted_credits: int
    pending_debits: int
    pending_credits: int
    version: int
    dirty: bool = False

    def totals(self) -> Totals:
        return Totals(self.posted_debits, self.posted_credits, self.pending_debits, self.pending_credits)


@dataclass
class LockedAccount:
    id: int
    code: str
    normal_side: Side
    currency: str
    status: str
    min_balance: int | None
    max_balance: int | None
    shard_count: int
    shards: dict[int, ShardState] = field(default_factory=dict)

    @property
    def all_shards_locked(self) -> bool:
        return len(self.shards) == self.shard_count

    def totals(self) -> Totals:
        total = Totals()
        for state in self.shards.values():
            total = total + state.totals()
        return total

    def write_shard(self) -> ShardState:
        """The shard a new posting lands on: the lowest one locked."""
        return self.shards[min(self.shards)]


def worker_slot() -> int:
    """Spreads concurrent writers over a hot account's shards; stable per thread."""
    return hash((os.getpid(), threading.get_ident())) & 0x7FFFFFFF


def _bounded_toward(side: Side):
    """SQL: a posting on ``side`` moves the account toward one of its bounds."""
    grows = Account.normal_side == side.value
    return or_(
        and_(grows, Account.max_balance_minor.is_not(None)),
        and_(~grows, Account.min_balance_minor.is_not(None)),
    )


_LOCK_BY_CODE = (
    select(
        Balance.account_id,
        Balance.shard,
        Balance.posted_debits_minor,
        Balance.posted_credits_minor,
        Balance.pending_debits_minor,
        Balance.pending_credits_minor,
        Balance.version,
        Account.code,
        Account.normal_side,
        Account.currency,
        Account.status,
        Account.min_balance_minor,
        Account.max_balance_minor,
        Account.balance_shards,
    )
    .join(Account, Account.id == Balance.account_id)
    .where(
        Account.code.in_(bindparam("codes", expanding=True)),
        or_(
            Account.balance_shards == 1,
            Balance.shard == bindparam("slot") % Account.balance_shards,
            and_(
                Account.code.in_(bindparam("debit_codes", expanding=True)),
                _bounded_toward(Side.DEBIT),
            ),
            and_(
                Account.code.in_(bindparam("credit_codes", expanding=True)),
                _bounded_toward(Side.CREDIT),
            ),
        ),
    )
    .order_by(Balance.account_id, Balance.shard)
    .with_for_update(of=Balance)
)

def _collect(rows) -> dict[str, LockedAccount]:
    accounts: dict[str, LockedAccount] = {}
    for row in rows:
        account = accounts.get(row.code)
        if account is None:
            account = accounts[row.code] = LockedAccount(
                id=row.account_id,
                code=row.code,
                normal_side=Side(row.normal_side),
                currency=row.currency,
                status=row.status,
                min_balance=row.min_balance_minor,
                max_balance=row.max_balance_minor,
                shard_count=row.balance_shards,
            )
        account.shards[row.shard] = ShardState(
            row.account_id,
            row.shard,
            row.posted_debits_minor,
            row.posted_credits_minor,
            row.pending_debits_minor,
            row.pending_credits_minor,
            row.version,
        )
    return accounts


def lock_balances(
    session: Session, debit_codes: set[str], credit_codes: set[str]
) -> dict[str, LockedAccount]:
    """Lock the shard rows that postings on these accounts need, by account code.
    Codes that name no account are simply absent from the result."""
    codes = sorted(debit_codes | credit_codes)
    if not codes:
        return {}
    rows = session.execute(
        _LOCK_BY_CODE,
        {
            "codes": codes,
            "slot": worker_slot(),
            "debit_codes": sorted(debit_codes) or [""],
            "credit_codes": sorted(credit_codes) or [""],
        },
    )
    return _collect(rows)


_LOCK_SHARDS = (
    select(*_LOCK_BY_CODE.selected_columns)
    .join(Account, Account.id == Balance.account_id)
    .where(tuple_(Balance.account_id, Balance.shard).in_(bindparam("keys", expanding=True)))
    .order_by(Balance.account_id, Balance.shard)
    .with_for_update(of=Balance)
)


def lock_shards(session: Session, keys: set[tuple[int, int]]) -> dict[str, LockedAccount]:
    """Lock exact (account id, shard) rows: used to resolve a pending entry,
    whose reservations sit on known shards."""
    if not keys:
        return {}
    return _collect(session.execute(_LOCK_SHARDS, {"keys": sorted(keys)}))
