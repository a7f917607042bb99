"""Locking the balance rows an entry touches, in one fixed order.

Every write path goes through :func:`lock_balances` or :func:`lock_shards`:
one statement selects the shard rows ``ORDER BY account_id, shard FOR
UPDATE``; PostgreSQL locks rows in that order, so two transactions never wait
on each other in a cycle. On SQLite the whole transaction already holds the
write lock (``BEGIN IMMEDIATE`` in ``service.db``) and the dialect leaves
``FOR UPDATE`` out.

Which shards: an account with one shard has one row. A sharded (hot) account
gets one shard, picked by the calling process and thread, when every posting
moves it away from its bounds; and all its shards when a posting moves it
toward a bound, because only the total can be checked against that bound.

To choose shards before locking, the ledger keeps per engine the *shape* of
each account it has seen: id, normal side, currency, shard count and which
bounds it has. None of these change once an account is open (a sharded
account cannot gain or lose a bound), so the cache never goes stale in
normal operation; and the lock statement reads the same attributes back, so a
shape that no longer matches (an account opened in a transaction that rolled
back) is dropped and looked up again rather than trusted.
"""
from __future__ import annotations

import itertools
import os
import threading
import weakref
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select, tuple_
from sqlalchemy.orm import Session

from . import prepared, rules
from .models import Account, Balance
from .rules import Totals
from .values import Side


@dataclass(frozen=True)
class AccountShape:
    id: int
    code: str
    normal_side: str
    currency: str
    shard_count: int
    has_min: bool
    has_max: bool


@dataclass
class ShardState:
    """A locked balance row, changed in memory; the changed ones are written back at the end."""

    account_id: int
    shard: int
    posted_debits: int
    posted_credits: int
    pending_debits: int
    pending_credits: int
    version: int

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


_turns = itertools.count()


def worker_slot() -> int:
    """Which shard of a hot account the next write takes: each process starts at
    its pid and moves one shard on per write, so concurrent writers (processes
    or threads) spread over the shards instead of settling on the same one."""
    return os.getpid() + next(_turns)


_shapes: "weakref.WeakKeyDictionary[object, dict[str, AccountShape]]" = weakref.WeakKeyDictionary()
_shapes_lock = threading.Lock()


# Every order opens an escrow account, so a long-running process would cache
# one shape per order it ever saw: past this many, the older half is dropped
# (a dropped shape is simply read again when next needed).
MAX_SHAPES = 200_000


def per_engine(caches: weakref.WeakKeyDictionary, session: Session, limit: int) -> dict:
    """The dict ``caches`` keeps for the session's database (its engine),
    made on first use; past ``limit`` entries its older half is dropped
    (what is dropped is simply looked up again when next needed)."""
    bind = session.get_bind()
    engine = getattr(bind, "engine", bind)
    with _shapes_lock:
        cache = caches.get(engine)
        if cache is None:
            cache = caches[engine] = {}
        elif len(cache) > limit:
            for code in list(itertools.islice(cache, len(cache) // 2)):
                cache.pop(code, None)
        return cache


def _cache_for(session: Session) -> dict[str, AccountShape]:
    return per_engine(_shapes, session, MAX_SHAPES)


def remember_shapes(session: Session, shapes: list[AccountShape]) -> None:
    """Shapes of accounts just opened: their first entry needs no look-up.
    Should the opening roll back, the lock statement notices (the module
    docstring) and looks the code up again."""
    cache = _cache_for(session)
    for shape in shapes:
        cache[shape.code] = shape


_SHAPES = select(
    Account.id, Account.code, Account.normal_side, Account.currency, Account.balance_shards,
    Account.min_balance_minor, Account.max_balance_minor,
).where(Account.code.in_(bindparam("codes", expanding=True)))


def _shapes_of(session: Session, codes: set[str], refresh: bool = False) -> dict[str, AccountShape]:
    cache = _cache_for(session)
    missing = codes if refresh else {c for c in codes if c not in cache}
    if missing:
        for row in session.execute(_SHAPES, {"codes": sorted(missing)}):
            cache[row.code] = AccountShape(
                row.id, row.code, row.normal_side, row.currency, row.balance_shards,
                row.min_balance_minor is not None, row.max_balance_minor is not None,
            )
        for code in missing:
            if code in cache and refresh and cache[code].code != code:
                del cache[code]
    return {c: cache[c] for c in codes if c in cache}


_B = Balance.__table__
_A = Account.__table__
_LOCK_COLUMNS = (
    _B.c.account_id, _B.c.shard,
    _B.c.posted_debits_minor, _B.c.posted_credits_minor,
    _B.c.pending_debits_minor, _B.c.pending_credits_minor, _B.c.version,
    _A.c.code, _A.c.normal_side, _A.c.currency, _A.c.status,
    _A.c.min_balance_minor, _A.c.max_balance_minor, _A.c.balance_shards,
)
# Core, not ORM, columns: the rows are read once, here, and the ORM's result
# machinery would cost more than the query itself.
_LOCK = (
    select(*_LOCK_COLUMNS)
    .join_from(_B, _A, _A.c.id == _B.c.account_id)
    .where(tuple_(_B.c.account_id, _B.c.shard).in_(bindparam("keys", expanding=True)))
    .order_by(_B.c.account_id, _B.c.shard)
    .with_for_update(of=_B)
)
# PostgreSQL: the same statement with the keys as two arrays, so its text
# never changes and it can be prepared once per connection (the hot path of
# every write). The keys drive the join (LATERAL; OFFSET 0 keeps the planner
# from flattening it into a hash join over the whole account table), so each
# row is one primary-key lookup whatever the planner guesses about the tables,
# and rows are locked in the order of the (sorted) arrays.
_LOCK_PG = """
SELECT b.account_id, b.shard, b.posted_debits_minor, b.posted_credits_minor,
       b.pending_debits_minor, b.pending_credits_minor, b.version,
       a.code, a.normal_side, a.currency, a.status,
       a.min_balance_minor, a.max_balance_minor, a.balance_shards
  FROM unnest($1, $2) WITH ORDINALITY AS k(account_id, shard, n)
 CROSS JOIN LATERAL (
        SELECT * FROM ledger_balance
         WHERE account_id = k.account_id AND shard = k.shard
           FOR UPDATE) AS b
 CROSS JOIN LATERAL (
        SELECT * FROM ledger_account WHERE id = k.account_id OFFSET 0) AS a
 ORDER BY k.n
"""


_SIDES = {side.value: side for side in Side}


def _run_lock(session: Session, keys: set[tuple[int, int]]) -> dict[str, LockedAccount]:
    connection = session.connection()
    ordered = sorted(keys)
    if connection.dialect.name == "postgresql":
        rows = prepared.execute(connection, "cl_lock_balances", ("bigint[]", "smallint[]"), _LOCK_PG, (
            "{" + ",".join(str(k[0]) for k in ordered) + "}",
            "{" + ",".join(str(k[1]) for k in ordered) + "}",
        ))
    else:
        rows = connection.execute(_LOCK, {"keys": ordered})
    accounts: dict[str, LockedAccount] = {}
    for (account_id, shard, pd, pc, qd, qc, version, code, normal_side, currency, status,
         min_balance, max_balance, shard_count) in rows:
        account = accounts.get(code)
        if account is None:
            account = accounts[code] = LockedAccount(
                id=account_id, code=code, normal_side=_SIDES[normal_side], currency=currency,
                status=status, min_balance=min_balance, max_balance=max_balance,
                shard_count=shard_count,
            )
        account.shards[shard] = ShardState(account_id, shard, pd, pc, qd, qc, version)
    return accounts


def _keys_for(shapes: dict[str, AccountShape], debit_codes: set[str], credit_codes: set[str]):
    slot = worker_slot()
    keys: set[tuple[int, int]] = set()
    for code, shape in shapes.items():
        if shape.shard_count == 1:
            keys.add((shape.id, 0))
            continue
        toward = any(
            rules.moves_toward_bound(
                shape.normal_side, 0 if shape.has_min else None, 0 if shape.has_max else None, side
            )
            for side, codes in ((Side.DEBIT, debit_codes), (Side.CREDIT, credit_codes))
            if code in codes
        )
        if toward:
            keys.update((shape.id, n) for n in range(shape.shard_count))
        else:
            keys.add((shape.id, slot % shape.shard_count))
    return keys


def _matches(shapes: dict[str, AccountShape], locked: dict[str, LockedAccount]) -> bool:
    for code, shape in shapes.items():
        account = locked.get(code)
        if account is None or (account.id, account.normal_side.value, account.currency,
                               account.shard_count) != (shape.id, shape.normal_side,
                                                        shape.currency, shape.shard_count):
            return False
    return True


def lock_balances(
    session: Session, debit_codes: set[str], credit_codes: set[str]
) -> dict[str, LockedAccount]:
    """Lock the shard rows that postings on these accounts need, by account code.
    Codes that name no account are absent from the result."""
    codes = debit_codes | credit_codes
    if not codes:
        return {}
    shapes = _shapes_of(session, codes)
    locked = _run_lock(session, _keys_for(shapes, debit_codes, credit_codes))
    if not _matches(shapes, locked):
        # A cached shape was wrong (see the module docstring): look again.
        shapes = _shapes_of(session, codes, refresh=True)
        for code in codes - shapes.keys():
            _cache_for(session).pop(code, None)
        locked = _run_lock(session, _keys_for(shapes, debit_codes, credit_codes))
    return locked


def preload_accounts(session: Session, codes: set[str]) -> int:
    """Read the shapes of these accounts ahead of the first write (a worker
    warming up); returns how many were found."""
    return len(_shapes_of(session, set(codes)))


def lock_shards(session: Session, keys: set[tuple[int, int]]) -> dict[str, LockedAccount]:
    """Lock exact (account id, shard) rows: used to resolve a pending entry,
    whose reservations sit on known shards, and to change an account."""
    if not keys:
        return {}
    return _run_lock(session, keys)
