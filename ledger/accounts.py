"""Opening accounts, changing their status and bounds, and reading them."""
from __future__ import annotations

import re
import weakref
from typing import Any

from dataclasses import dataclass

from sqlalchemy import Connection, event, func, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from . import prepared, rules
from .errors import AccountExists, AccountNotFound, InvalidAccount
from .ids import ACCOUNT_PREFIX, new_account_public_id
from .locking import AccountShape, per_engine, remember_shapes
from .models import Account, Balance
from .timeutil import as_utc, utcnow
from .values import DEFAULT_NORMAL_SIDE, AccountStatus, AccountType, AccountView, Side
from .writer import ints_array, texts_array, times_array

CODE_RE = re.compile(r"^[A-Za-z0-9_.:@/\-]{1,200}$")
MAX_SHARDS = 64


def open_account(
    session: Session,
    code: str,
    name: str,
    type: AccountType | str,
    currency: str,
    *,
    owner_party_id: str | None = None,
    normal_side: Side | str | None = None,
    min_balance_minor: int | None = None,
    max_balance_minor: int | None = None,
    metadata: dict[str, Any] | None = None,
    balance_shards: int = 1,
) -> AccountView:
    """Open an account; opening it again with the same attributes returns it."""
    wanted = _wanted(code, name, type, currency, owner_party_id, normal_side, min_balance_minor,
                     max_balance_minor, balance_shards)
    existing = session.scalar(select(Account).where(Account.code == code))
    if existing is not None:
        differs = [k for k, v in wanted.items() if getattr(existing, k) != v]
        if differs:
            raise AccountExists(
                f"account {code} exists with other {', '.join(differs)}", account=code, fields=differs
            )
        return get_account(session, code)
    account = Account(
        public_id=new_account_public_id(), code=code, status=AccountStatus.OPEN.value,
        meta=metadata or {}, created_at=utcnow(), **wanted,
    )
    session.add(account)
    session.flush()
    session.add_all(Balance(account_id=account.id, shard=n, posted_debits_minor=0,
                            posted_credits_minor=0, pending_debits_minor=0,
                            pending_credits_minor=0, version=0) for n in range(balance_shards))
    session.flush()
    return get_account(session, code)


def _wanted(code: str, name: str, type: AccountType | str, currency: str,
            owner_party_id: str | None, normal_side: Side | str | None,
            min_balance_minor: int | None, max_balance_minor: int | None,
            balance_shards: int) -> dict[str, Any]:
    """An account's attributes, checked (``InvalidAccount`` otherwise)."""
    try:
        account_type = AccountType(type)
        side = Side(normal_side) if normal_side is not None else DEFAULT_NORMAL_SIDE[account_type]
    except ValueError as error:
        raise InvalidAccount(str(error), field="type" if "AccountType" in str(error) else "normal_side") from None
    if not isinstance(code, str) or not CODE_RE.match(code):
        raise InvalidAccount(
            "code must be 1-200 characters of letters, digits and _ . : @ / -", field="code"
        )
    if not rules.CURRENCY_RE.match(currency or ""):
        raise InvalidAccount("currency must be an ISO 4217 code like 'CNY'", field="currency")
    _check_bounds_values(min_balance_minor, max_balance_minor)
    if not isinstance(balance_shards, int) or not 1 <= balance_shards <= MAX_SHARDS:
        raise InvalidAccount(f"balance_shards must be 1 to {MAX_SHARDS}", field="balance_shards")

    return {
        "name": name, "type": account_type.value, "normal_side": side.value, "currency": currency,
        "owner_party_id": owner_party_id, "min_balance_minor": min_balance_minor,
        "max_balance_minor": max_balance_minor, "balance_shards": balance_shards,
    }


@dataclass(frozen=True)
class AccountSpec:
    """An account to open if it is not open yet (``ensure_accounts``)."""

    code: str
    name: str
    type: str
    currency: str
    owner_party_id: str | None = None
    min_balance_minor: int | None = None
    max_balance_minor: int | None = None
    balance_shards: int = 1


def ensure_accounts(session: Session, specs: list[AccountSpec]) -> list[str]:
    """Open every account of ``specs`` that is not open yet, in two statements
    however many there are, and return the codes it opened. An account
    already open is used as it is, whatever attributes it was opened with
    (unlike ``open_account``, which refuses different ones): this is the
    "opened on first use" of hot paths (an order's escrow), where a read
    first, then an insert in a savepoint, cost five round trips.

    A concurrent transaction opening the same code first makes this one
    wait on the unique code and then skip it (``ON CONFLICT DO NOTHING``):
    no savepoint, no error.

    Codes this process has seen committed (``_known_for``) are skipped
    without a statement: an account, once committed, exists for good
    (closed, never removed)."""
    known = _known_for(session)
    specs = [spec for spec in specs if spec.code not in known]
    if not specs:
        return []
    _learn_on_commit(session, [spec.code for spec in specs])
    rows = []
    for spec in specs:
        wanted = _wanted(spec.code, spec.name, spec.type, spec.currency, spec.owner_party_id,
                         None, spec.min_balance_minor, spec.max_balance_minor,
                         spec.balance_shards)
        rows.append({"public_id": new_account_public_id(), "code": spec.code,
                     "status": AccountStatus.OPEN.value, "metadata": {}, "created_at": utcnow(),
                     **wanted})
    if not rows:
        return []
    rows.sort(key=lambda row: row["code"])  # one order for every caller: no deadlock
    if session.get_bind().dialect.name == "postgresql":
        opened = _open_pg(session, rows)
    else:
        opened = _open(session, rows)
    if not opened:
        return []
    by_code = {row["code"]: row for row in rows}
    remember_shapes(session, [AccountShape(
        account_id, code, by_code[code]["normal_side"], by_code[code]["currency"],
        by_code[code]["balance_shards"], by_code[code]["min_balance_minor"] is not None,
        by_code[code]["max_balance_minor"] is not None) for account_id, code in opened])
    return sorted(code for _, code in opened)


def _open(session: Session, rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """Insert the accounts not there yet, then their balance rows: (id, code)
    of those opened."""
    # Core, not ORM, statements: one multi-row insert for all the rows (the
    # ORM's bulk insert splits rows by which values are None).
    table = Account.__table__
    statement = sqlite.insert(table).on_conflict_do_nothing(index_elements=[table.c.code])
    opened = session.execute(statement.returning(table.c.id, table.c.code), rows).all()
    if opened:
        shards = {row["code"]: row["balance_shards"] for row in rows}
        session.execute(insert(Balance.__table__), [
            {"account_id": account_id, "shard": n, "posted_debits_minor": 0,
             "posted_credits_minor": 0, "pending_debits_minor": 0, "pending_credits_minor": 0,
             "version": 0}
            for account_id, code in opened for n in range(shards[code])])
    return [tuple(row) for row in opened]


# ``_open`` in one round trip on PostgreSQL: the accounts from arrays (in
# the rows' order, sorted by code), their balance rows, one per shard, by a
# second insert in the same statement. Fixed text, prepared once per
# connection: every order opens its escrow here.
_PG_OPEN = (
    "WITH a AS (INSERT INTO ledger_account (public_id, code, name, type, normal_side, currency, "
    "owner_party_id, status, min_balance_minor, max_balance_minor, balance_shards, metadata, "
    "created_at) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
    "$5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], "
    "$11::smallint[], $12::json[], $13::timestamptz[]) "
    "ON CONFLICT (code) DO NOTHING RETURNING id, code, balance_shards), "
    "b AS (INSERT INTO ledger_balance (account_id, shard, posted_debits_minor, "
    "posted_credits_minor, pending_debits_minor, pending_credits_minor, version) "
    "SELECT a.id, n, 0, 0, 0, 0, 0 FROM a, generate_series(0, a.balance_shards - 1) AS n) "
    "SELECT id, code FROM a")
_PG_OPEN_TYPES = ("text[]",) * 8 + ("bigint[]", "bigint[]", "smallint[]", "json[]",
                                     "timestamptz[]")


def _open_pg(session: Session, rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
    def texts(key):
        return texts_array([row[key] for row in rows])

    def ints(key):
        return ints_array([row[key] for row in rows])

    return [tuple(row) for row in prepared.execute(
        session.connection(), "cl_open_accounts", _PG_OPEN_TYPES, _PG_OPEN, (
            texts("public_id"), texts("code"), texts("name"), texts("type"),
            texts("normal_side"), texts("currency"), texts("owner_party_id"), texts("status"),
            ints("min_balance_minor"), ints("max_balance_minor"), ints("balance_shards"),
            texts_array(["{}" for _ in rows]), times_array([row["created_at"] for row in rows])))]


# Account codes known to exist in each database (by engine), learned when a
# transaction that ensured them commits: ``ensure_accounts`` needs no
# statement for them. Bounded like the shape cache (every order ensures its
# own escrow): past the limit the older half is forgotten and simply ensured
# again when next used.
MAX_KNOWN = 200_000
_known: "weakref.WeakKeyDictionary[object, dict[str, None]]" = weakref.WeakKeyDictionary()
_LEARN_KEY = "channel_ledger.accounts_to_learn"


def _known_for(session: Session) -> dict[str, None]:
    return per_engine(_known, session, MAX_KNOWN)


def _learn_on_commit(session: Session, codes: list[str]) -> None:
    """Remember ``codes`` as existing once this session's transaction commits.
    Only a session that owns its transaction learns: not inside a savepoint
    (it may roll back what it opened while the transaction commits), not a
    session bound to a connection whose transaction someone else ends (the
    tests' sessions inside an outer transaction that is rolled back)."""
    if isinstance(session.get_bind(), Connection) or session.connection().in_nested_transaction():
        return
    session.info.setdefault(_LEARN_KEY, set()).update(codes)


@event.listens_for(Session, "after_commit")
def _learn(session: Session) -> None:
    codes = session.info.pop(_LEARN_KEY, None)
    if not codes:
        return
    _known_for(session).update(dict.fromkeys(codes))


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction) -> None:
    if transaction.parent is None:  # the outermost ended; a commit took its codes already
        session.info.pop(_LEARN_KEY, None)


def _check_bounds_values(min_balance: int | None, max_balance: int | None) -> None:
    for field, value in (("min_balance_minor", min_balance), ("max_balance_minor", max_balance)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidAccount(f"{field} must be an integer or null", field=field)
    if min_balance is not None and max_balance is not None and min_balance > max_balance:
        raise InvalidAccount("min_balance_minor exceeds max_balance_minor", field="min_balance_minor")


def set_account_status(session: Session, code: str, status: AccountStatus | str) -> AccountView:
    """Freeze, unfreeze or close an account. Closing needs a zero balance and
    nothing pending. The shards are locked so no entry is half-way through."""
    new_status = AccountStatus(status)
    locked = _lock_all(session, code)
    account = session.scalar(select(Account).where(Account.id == locked.id))
    if new_status is AccountStatus.CLOSED:
        totals = locked.totals()
        if (totals.posted_debits != totals.posted_credits or totals.pending_debits
                or totals.pending_credits):
            raise InvalidAccount(
                f"account {code} cannot close with a balance or pending entries", field="status"
            )
    if account.status == AccountStatus.CLOSED.value and new_status is not AccountStatus.CLOSED:
        raise InvalidAccount(f"account {code} is closed for good", field="status")
    account.status = new_status.value
    session.flush()
    return get_account(session, code)


def set_account_bounds(
    session: Session, code: str, *, min_balance_minor: int | None, max_balance_minor: int | None
) -> AccountView:
    """Change an account's bounds (a credit limit, say). A hot account keeps
    which bounds it has, since its locking depends on it; only their values
    change. A balance already outside a new bound stays; only postings that
    move further out are refused."""
    _check_bounds_values(min_balance_minor, max_balance_minor)
    locked = _lock_all(session, code)
    account = session.scalar(select(Account).where(Account.id == locked.id))
    if account.balance_shards > 1 and (
        (account.min_balance_minor is None) != (min_balance_minor is None)
        or (account.max_balance_minor is None) != (max_balance_minor is None)
    ):
        raise InvalidAccount(
            "a sharded account cannot gain or lose a bound, only change its value",
            field="min_balance_minor",
        )
    account.min_balance_minor = min_balance_minor
    account.max_balance_minor = max_balance_minor
    session.flush()
    return get_account(session, code)


def _lock_all(session: Session, code: str):
    # Asking for both sides on a bounded account locks every shard; for an
    # unbounded sharded account lock the shards by id instead.
    account = session.scalar(select(Account).where(Account.code == code))
    if account is None:
        raise AccountNotFound(f"no account {code!r}", account=code)
    from .locking import lock_shards

    return lock_shards(session, {(account.id, n) for n in range(account.balance_shards)})[code]


_ACCOUNT_WITH_TOTALS = (
    select(
        Account,
        func.coalesce(func.sum(Balance.posted_debits_minor), 0).label("pd"),
        func.coalesce(func.sum(Balance.posted_credits_minor), 0).label("pc"),
        func.coalesce(func.sum(Balance.pending_debits_minor), 0).label("qd"),
        func.coalesce(func.sum(Balance.pending_credits_minor), 0).label("qc"),
        func.coalesce(func.sum(Balance.version), 0).label("ver"),
    )
    .join(Balance, Balance.account_id == Account.id)
    .group_by(Account.id)
)


def _view(row) -> AccountView:
    account: Account = row[0]
    # SUM() of a bigint is a numeric on PostgreSQL: bring it back to int.
    totals = rules.Totals(int(row.pd), int(row.pc), int(row.qd), int(row.qc))
    side = Side(account.normal_side)
    return AccountView(
        id=account.public_id,
        code=account.code,
        name=account.name,
        type=AccountType(account.type),
        normal_side=side,
        currency=account.currency,
        owner_party_id=account.owner_party_id,
        status=AccountStatus(account.status),
        min_balance_minor=account.min_balance_minor,
        max_balance_minor=account.max_balance_minor,
        balance_shards=account.balance_shards,
        metadata=dict(account.meta or {}),
        posted_minor=rules.posted_balance(side, totals.posted_debits, totals.posted_credits),
        pending_debits_minor=totals.pending_debits,
        pending_credits_minor=totals.pending_credits,
        pending_minor=rules.pending_balance(side, totals),
        available_minor=rules.available_balance(side, totals),
        version=int(row.ver),
        created_at=as_utc(account.created_at),
    )


def get_account(session: Session, code_or_public_id: str) -> AccountView:
    column = Account.public_id if code_or_public_id.startswith(ACCOUNT_PREFIX) else Account.code
    row = session.execute(_ACCOUNT_WITH_TOTALS.where(column == code_or_public_id)).first()
    if row is None:
        raise AccountNotFound(f"no account {code_or_public_id!r}", account=code_or_public_id)
    return _view(row)


def get_accounts(session: Session, codes: list[str]) -> dict[str, AccountView]:
    """Many accounts in one query, by code; missing codes are left out."""
    rows = session.execute(_ACCOUNT_WITH_TOTALS.where(Account.code.in_(codes)))
    return {view.code: view for view in map(_view, rows)}


def list_accounts(
    session: Session,
    *,
    owner_party_id: str | None = None,
    currency: str | None = None,
    code_prefix: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> tuple[list[AccountView], str | None]:
    """Accounts in code order; ``after`` is the cursor (the last code seen)."""
    query = _ACCOUNT_WITH_TOTALS
    if owner_party_id is not None:
        query = query.where(Account.owner_party_id == owner_party_id)
    if currency is not None:
        query = query.where(Account.currency == currency)
    if code_prefix:
        escaped = code_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Account.code.like(escaped + "%", escape="\\"))
    if after:
        query = query.where(Account.code > after)
    rows = session.execute(query.order_by(Account.code).limit(limit + 1)).all()
    views = [_view(r) for r in rows[:limit]]
    next_cursor = views[-1].code if len(rows) > limit else None
    return views, next_cursor
