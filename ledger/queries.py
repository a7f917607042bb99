"""Reading the journal: entries, balances at a time, statements, the trial balance.

Time of record: statements and balances at a time use ``posted_at``, the
moment the ledger wrote the posting (after taking the account's lock, so it
grows with the shard's version). ``effective_at`` is the business date an
entry speaks for; it is shown, and reports by business date can group on it,
but it never reorders the running balance.
"""
from __future__ import annotations

import base64
import uuid
from collections import defaultdict
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from . import rules
from .accounts import get_account
from .errors import AccountNotFound, EntryNotFound, InvalidEntry
from .ids import entry_public_id, parse_entry_id
from .models import Account, Balance, JournalEntry, Posting
from .timeutil import as_utc
from .values import (
    AccountType,
    EntryKind,
    EntryView,
    PostingView,
    Side,
    Statement,
    StatementLine,
    TrialBalance,
    TrialBalanceRow,
)

MAX_PAGE = 1000


def _check_limit(limit: int) -> None:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidEntry(f"limit must be 1 to {MAX_PAGE}", field="limit")


# -- entries ----------------------------------------------------------------


def get_entry(session: Session, entry_id: str) -> EntryView:
    entry_uuid = parse_entry_id(entry_id)
    entry = session.get(JournalEntry, entry_uuid) if entry_uuid else None
    if entry is None:
        raise EntryNotFound(f"no entry {entry_id!r}", entry_id=entry_id)
    return _entry_views(session, [entry])[0]


def find_entry_by_key(session: Session, idempotency_key: str) -> EntryView | None:
    """The entry posted under an idempotency key, if any (a caller that must
    not redo its own bookkeeping on a retry asks this first)."""
    entry = session.scalars(select(JournalEntry).where(
        JournalEntry.idempotency_key == idempotency_key)).one_or_none()
    return _entry_views(session, [entry])[0] if entry is not None else None


def list_entries(
    session: Session, *, account: str | None = None, code: str | None = None,
    after: str | None = None, limit: int = 100,
) -> tuple[list[EntryView], str | None]:
    """Entries newest last (ids are time-ordered); ``after`` is the last id seen."""
    _check_limit(limit)
    query = select(JournalEntry)
    if account is not None:
        account_id = _account_id(session, account)
        query = query.where(
            JournalEntry.id.in_(select(Posting.entry_id).where(Posting.account_id == account_id))
        )
    if code is not None:
        query = query.where(JournalEntry.code == code)
    if after:
        after_uuid = parse_entry_id(after)
        if after_uuid is None:
            raise InvalidEntry("after must be an entry id", field="after")
        query = query.where(JournalEntry.id > after_uuid)
    entries = session.scalars(query.order_by(JournalEntry.id).limit(limit + 1)).all()
    views = _entry_views(session, list(entries[:limit]))
    return views, (views[-1].id if len(entries) > limit else None)


def _entry_views(session: Session, entries: list[JournalEntry]) -> list[EntryView]:
    if not entries:
        return []
    ids = [e.id for e in entries]
    postings: dict[uuid.UUID, list[PostingView]] = defaultdict(list)
    rows = session.execute(
        select(Posting, Account.code)
        .join(Account, Account.id == Posting.account_id)
        .where(Posting.entry_id.in_(ids))
        .order_by(Posting.entry_id, Posting.line)
    )
    for posting, code in rows:
        postings[posting.entry_id].append(
            PostingView(posting.line, code, Side(posting.side), posting.amount_minor,
                        posting.currency, posting.pending, posting.balance_after_minor,
                        posting.version, as_utc(posting.posted_at))
        )
    # What later entries did to these: resolved a pending one, reversed one.
    follow_ups: dict[uuid.UUID, str] = {}
    for link, kind, follow_code in session.execute(
        select(JournalEntry.pending_id, JournalEntry.kind, JournalEntry.code).where(
            JournalEntry.pending_id.in_(ids)
        )
    ):
        follow_ups[link] = "posted" if kind == EntryKind.POST_PENDING.value else (
            "expired" if follow_code == "pending_expired" else "voided")
    for (link,) in session.execute(
        select(JournalEntry.reverses_id).where(JournalEntry.reverses_id.in_(ids))
    ):
        follow_ups[link] = "reversed"
    views = []
    for e in entries:
        default = "pending" if e.kind == EntryKind.PENDING.value else "posted"
        views.append(
            EntryView(
                id=entry_public_id(e.id),
                code=e.code,
                kind=EntryKind(e.kind),
                status=follow_ups.get(e.id, default),
                description=e.description,
                effective_at=as_utc(e.effective_at),
                posted_at=as_utc(e.posted_at),
                metadata=dict(e.meta or {}),
                idempotency_key=e.idempotency_key,
                pending_id=entry_public_id(e.pending_id) if e.pending_id else None,
                reverses_id=entry_public_id(e.reverses_id) if e.reverses_id else None,
                expires_at=as_utc(e.expires_at) if e.expires_at else None,
                postings=tuple(postings[e.id]),
            )
        )
    return views


# -- balances at a time and statements -----------------------------------------


def _account_id(session: Session, code: str) -> int:
    account_id = session.scalar(select(Account.id).where(Account.code == code))
    if account_id is None:
        raise AccountNotFound(f"no account {code!r}", account=code)
    return account_id


def _balance_up_to(session: Session, account_id: int, shards: int, at: datetime, inclusive: bool) -> int:
    """Sum over shards of the balance after the shard's last posting at (or before) ``at``."""
    total = 0
    for shard in range(shards):
        when = Posting.posted_at <= at if inclusive else Posting.posted_at < at
        value = session.scalar(
            select(Posting.balance_after_minor)
            .where(Posting.account_id == account_id, Posting.shard == shard, when)
            .order_by(Posting.posted_at.desc(), Posting.version.desc())
            .limit(1)
        )
        total += value or 0
    return total


def balance_at(session: Session, account: str, at: datetime) -> int:
    """The posted normal-side balance including everything posted up to ``at``."""
    view = get_account(session, account)
    account_id = _account_id(session, view.code)
    return _balance_up_to(session, account_id, view.balance_shards, as_utc(at), inclusive=True)


def _encode_cursor(posted_at: datetime, posting_id: int) -> str:
    raw = f"{as_utc(posted_at).isoformat()}|{posting_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, posting_id = raw.split("|")
        return datetime.fromisoformat(when), int(posting_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidEntry("cursor is not one this API gave out", field="cursor") from None


def statement(
    session: Session, account: str, start: datetime, end: datetime, *,
    cursor: str | None = None, limit: int = 100,
) -> Statement:
    """Posted lines with ``start <= posted_at <= end``, oldest first, with the
    balance before ``start`` (opening), at ``end`` (closing) and after each line."""
    _check_limit(limit)
    start, end = as_utc(start), as_utc(end)
    if end < start:
        raise InvalidEntry("end is before start", field="end")
    view = get_account(session, account)
    account_id = _account_id(session, view.code)
    opening = _balance_up_to(session, account_id, view.balance_shards, start, inclusive=False)
    closing = _balance_up_to(session, account_id, view.balance_shards, end, inclusive=True)

    in_period = [
        Posting.account_id == account_id,
        # Naming the shards lets the (account, shard, posted_at) index serve the range.
        Posting.shard.in_(list(range(view.balance_shards))),
        Posting.pending.is_(False),
        Posting.posted_at >= start,
        Posting.posted_at <= end,
    ]
    signed_amount = case(
        (Posting.side == view.normal_side.value, Posting.amount_minor), else_=-Posting.amount_minor
    )
    running = opening
    page_filter = []
    if cursor:
        after_time, after_id = _decode_cursor(cursor)
        before_page = (Posting.posted_at < after_time) | (
            (Posting.posted_at == after_time) & (Posting.id <= after_id)
        )
        running += int(session.scalar(select(func.coalesce(func.sum(signed_amount), 0)).where(*in_period, before_page)))
        page_filter.append(~before_page)
    rows = session.execute(
        select(Posting, JournalEntry.code, JournalEntry.description)
        .join(JournalEntry, JournalEntry.id == Posting.entry_id)
        .where(*in_period, *page_filter)
        .order_by(Posting.posted_at, Posting.id)
        .limit(limit + 1)
    ).all()
    lines = []
    for posting, entry_code, description in rows[:limit]:
        running += rules.signed(view.normal_side, posting.side, posting.amount_minor)
        lines.append(
            StatementLine(posting.id, entry_public_id(posting.entry_id), entry_code, description,
                          Side(posting.side), posting.amount_minor, running, as_utc(posting.posted_at))
        )
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1][0]
        next_cursor = _encode_cursor(last.posted_at, last.id)
    return Statement(view, start, end, opening, closing, lines, next_cursor)


# -- trial balance -------------------------------------------------------------


def trial_balance(session: Session, *, at: datetime | None = None) -> TrialBalance:
    """Every account's posted balance, in the debit or the credit column, with
    totals per currency. Without ``at`` it reads the cached balances; with
    ``at`` it sums the postings up to that time."""
    if at is None:
        sums = (
            select(
                Balance.account_id,
                func.sum(Balance.posted_debits_minor).label("debits"),
                func.sum(Balance.posted_credits_minor).label("credits"),
            )
            .group_by(Balance.account_id)
            .subquery()
        )
    else:
        at = as_utc(at)
        sums = (
            select(
                Posting.account_id,
                func.sum(case((Posting.side == "debit", Posting.amount_minor), else_=0)).label("debits"),
                func.sum(case((Posting.side == "credit", Posting.amount_minor), else_=0)).label("credits"),
            )
            .where(Posting.pending.is_(False), Posting.posted_at <= at)
            .group_by(Posting.account_id)
            .subquery()
        )
    rows = session.execute(
        select(Account.code, Account.name, Account.type, Account.currency, sums.c.debits, sums.c.credits)
        .join(sums, sums.c.account_id == Account.id)
        .order_by(Account.currency, Account.code)
    )
    out = []
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for code, name, type_, currency, debits, credits in rows:
        net = int(debits or 0) - int(credits or 0)
        row = TrialBalanceRow(code, name, AccountType(type_), currency, max(net, 0), max(-net, 0))
        out.append(row)
        totals[currency][0] += row.debit_minor
        totals[currency][1] += row.credit_minor
    return TrialBalance(at, out, {c: (d, k) for c, (d, k) in totals.items()})


# -- set-based reads for reports over many accounts ---------------------------


def balances_before(session: Session, at: datetime, *, code_like: str) -> dict[str, tuple[str, int]]:
    """The posted normal-side balance of every account whose code matches
    ``code_like`` (SQL LIKE), from everything posted before ``at``:
    ``{code: (currency, balance)}``. Each shard's value is the running
    balance of its last posting before ``at``, found through the posting
    index (one seek per shard), so the cost follows the number of accounts,
    not the length of their history."""
    last = (
        select(Posting.balance_after_minor)
        .where(Posting.account_id == Balance.account_id, Posting.shard == Balance.shard,
               Posting.posted_at < as_utc(at))
        .order_by(Posting.posted_at.desc(), Posting.version.desc())
        .limit(1)
        .correlate(Balance)
        .scalar_subquery()
    )
    per_shard = (
        select(Account.code, Account.currency, func.coalesce(last, 0).label("value"))
        .join(Balance, Balance.account_id == Account.id)
        .where(Account.code.like(code_like))
        .subquery()
    )
    rows = session.execute(
        select(per_shard.c.code, per_shard.c.currency, func.sum(per_shard.c.value))
        .group_by(per_shard.c.code, per_shard.c.currency)
    ).all()
    return {code: (currency, int(total or 0)) for code, currency, total in rows}


def movements(
    session: Session, since: datetime, until: datetime, *, code_like: str
) -> list[tuple[str, str, int]]:
    """What was posted in ``[since, until)`` to the accounts whose code
    matches ``code_like``, netted on each account's normal side and grouped
    by the code of the entry that posted it: ``(account code, entry code,
    net)``. Reservations (pending postings) move no posted balance and are
    left out.

    The postings are summed per account id and entry code first (a narrow
    key: summing over the accounts' long codes made PostgreSQL spill a
    day of 2 million postings to disk, twice as slow), the accounts chosen
    by a semi-join (with a narrow pattern, an index read per account), and
    the codes joined to the sums afterwards."""
    debits = func.sum(case((Posting.side == "debit", Posting.amount_minor), else_=0))
    credits = func.sum(case((Posting.side == "credit", Posting.amount_minor), else_=0))
    chosen = select(Account.id).where(Account.code.like(code_like))
    sums = (
        select(Posting.account_id, JournalEntry.code.label("entry_code"),
               debits.label("debits"), credits.label("credits"))
        .join(JournalEntry, JournalEntry.id == Posting.entry_id)
        .where(Posting.account_id.in_(chosen), Posting.pending.is_(False),
               Posting.posted_at >= as_utc(since), Posting.posted_at < as_utc(until))
        .group_by(Posting.account_id, JournalEntry.code)
        .subquery()
    )
    rows = session.execute(
        select(Account.code, sums.c.entry_code, Account.normal_side, sums.c.debits,
               sums.c.credits)
        .join(sums, sums.c.account_id == Account.id)
    ).all()
    return [(code, entry_code, int((d or 0) - (c or 0)) if side == "debit" else int((c or 0) - (d or 0)))
            for code, entry_code, side, d, c in rows]
