"""Credit (issue 4): the lines sellers grant buyers, the seller's defaults
per customer grade, temporary increases, the credit-check policy per grade,
the debt each credit-funded order leaves, its due date, aging, repayments
and the freeze job.

* A line's **effective limit** is its limit plus its unexpired temporary
  increases; it is the upper bound of ``credit:B@S`` in the ledger, so no
  posting takes the debt beyond it however many orders race. Every use of
  credit brings the bound up to date first, so an expired increase stops
  counting at once even before the job runs.
* A buyer with no line of its own gets the seller's **default for its
  grade**, created on first use (``source`` = ``grade_default``) and
  following that default until someone sets the line by hand.
* The **policy** (per seller and grade, else for all the seller's grades,
  else block everything) says for each check whether a failing order is
  blocked or held for the seller's approval: the limit, an expired line, a
  debt overdue beyond N days. A missing or frozen line always blocks.
* **Due dates**: ``days_after_delivery`` (N days after the order is
  delivered), or ``day_of_month`` (the first day D of a month on or after
  delivery + N days, in the brand's timezone; overdue from the next day).

Postings follow docs/accounting.md: a repayment puts the cash into each
repaid order's escrow and restores the line in one entry.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import ledger
from ledger import EntryRequest, PostingLine, as_utc, utcnow

from . import audit, clearings
from .books import (
    CUSTODY,
    bank_reference,
    credit_account,
    credit_issued_account,
    ensure,
    escrow_account,
    positive_amount,
)
from .errors import CreditUnavailable, GradeNotFound, InvalidInput
from .models import (
    POLICY_ACTIONS,
    TERMS_KINDS,
    CreditDebt,
    CreditDefault,
    CreditIncrease,
    CreditLine,
    CreditPolicy,
    Grade,
    Order,
    OrderEvent,
    Party,
)
from .parties import party_row, trading_pair

# Business dates (a day of the month) are the brand's; the service passes
# its configured zone (CL_TIMEZONE), this is the default.
BUSINESS_TZ = ZoneInfo("Asia/Shanghai")


# -- pure rules --------------------------------------------------------------------------------

def due_at(delivered_at: datetime, terms_kind: str, terms_days: int, due_day: int | None,
           tz: ZoneInfo = BUSINESS_TZ) -> datetime:
    """When a debt delivered at ``delivered_at`` becomes overdue (pure).

    ``days_after_delivery``: exactly ``terms_days`` after delivery.
    ``day_of_month``: the debt is payable through the first day ``due_day``
    (1-28, so every month has it) falling on or after the local date of
    delivery + ``terms_days``; it is overdue from the next local midnight."""
    if terms_kind == "days_after_delivery":
        return delivered_at + timedelta(days=terms_days)
    earliest = (delivered_at.astimezone(tz) + timedelta(days=terms_days)).date()
    year, month = earliest.year, earliest.month
    if earliest.day > due_day:
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    pay_by = date(year, month, due_day)
    return datetime.combine(pay_by + timedelta(days=1), time(0), tzinfo=tz).astimezone(
        delivered_at.tzinfo)


AGING_BUCKETS = ("not_due", "0-30", "31-60", "61-90", "90+")


def aging_bucket(due: datetime | None, now: datetime) -> str:
    """Pure: which bucket an outstanding debt falls in. A debt is not due
    before delivery (no due date) or before its due date; then by whole days
    overdue: 0-30, 31-60, 61-90, 90+."""
    if due is None or now < due:
        return "not_due"
    days = (now - due).days
    return "0-30" if days <= 30 else "31-60" if days <= 60 else "61-90" if days <= 90 else "90+"


@dataclass(frozen=True)
class Policy:
    on_limit: str = "block"
    on_expired: str = "block"
    overdue_days: int | None = None
    on_overdue: str = "block"
    freeze_overdue_days: int | None = None


DEFAULT_POLICY = Policy()


def credit_findings(*, amount: int, available: int, expired: bool, worst_overdue_days: int | None,
                    line_block_overdue_days: int | None, policy: Policy) -> list[tuple[str, str]]:
    """Pure: what the credit check finds, as (reason, block|hold). The
    limit is only pre-checked when the policy holds: a blocking limit is
    left to the ledger's bound, which holds under races too."""
    found: list[tuple[str, str]] = []
    if expired:
        found.append(("credit_expired", policy.on_expired))
    overdue = worst_overdue_days is not None
    if overdue and line_block_overdue_days is not None and \
            worst_overdue_days > line_block_overdue_days:
        found.append(("overdue", "block"))
    elif overdue and policy.overdue_days is not None and worst_overdue_days > policy.overdue_days:
        found.append(("overdue", policy.on_overdue))
    if policy.on_limit == "hold" and amount > available:
        found.append(("limit_exceeded", "hold"))
    return found


# -- validation ---------------------------------------------------------------------------------

def _whole(value: Any, field: str, low: int, high: int, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidInput(f"{field} must be a whole number from {low} to {high}", field=field)
    return value


def _terms(terms_kind: Any, terms_days: Any, due_day: Any) -> tuple[str, int, int | None]:
    if terms_kind not in TERMS_KINDS:
        raise InvalidInput(f"terms_kind must be one of {', '.join(TERMS_KINDS)}",
                           field="terms_kind")
    days = _whole(terms_days, "terms_days", 0, 365)
    if terms_kind == "day_of_month":
        return terms_kind, days, _whole(due_day, "due_day", 1, 28)
    if due_day is not None:
        raise InvalidInput("due_day is for day_of_month terms only", field="due_day")
    return terms_kind, days, None


def _limit(value: Any) -> int:
    return _whole(value, "limit_minor", 0, 10**15)


def _seller(session: Session, seller: str) -> Party:
    row = party_row(session, seller)
    if row.role == "store":
        raise InvalidInput("a store sells nothing", field="seller")
    return row


def _grade(session: Session, code: str | None) -> Grade | None:
    if code is None:
        return None
    grade = session.scalars(select(Grade).where(Grade.code == code)).one_or_none()
    if grade is None:
        raise GradeNotFound(f"no grade {code!r}", field="grade")
    return grade


# -- lines, defaults, increases ----------------------------------------------------------------

@dataclass(frozen=True)
class CreditBalance:
    limit_minor: int            # the effective limit: the line's plus active increases
    base_limit_minor: int
    increases_minor: int
    used_minor: int
    reserved_minor: int
    available_minor: int
    valid_to: datetime | None
    status: str | None          # None: no credit line
    terms_kind: str | None = None
    terms_days: int | None = None
    due_day: int | None = None
    source: str | None = None
    due_minor: int = 0          # owed on delivered orders, not yet overdue
    overdue_minor: int = 0      # owed past its due date
    next_due_at: datetime | None = None


def _increases(session: Session, seller_id: int, buyer_id: int, now: datetime) -> int:
    total = session.scalar(select(func.coalesce(func.sum(CreditIncrease.amount_minor), 0)).where(
        CreditIncrease.seller_id == seller_id, CreditIncrease.buyer_id == buyer_id,
        CreditIncrease.valid_from <= now, CreditIncrease.valid_to > now))
    return int(total or 0)  # PostgreSQL's SUM of a bigint is a numeric


def _open_line_account(session: Session, b: Party, s: Party, currency: str, limit: int) -> None:
    debt = credit_account(b.code, s.code)
    ensure(session, credit_issued_account(s.code), f"Credit issued by {s.code}", "liability",
           currency, owner=s.code)
    try:
        account = ledger.get_account(session, debt)
    except ledger.AccountNotFound:
        ledger.open_account(session, debt, f"Credit of {b.code} at {s.code}", "asset", currency,
                            owner_party_id=s.code, max_balance_minor=limit)
        return
    if account.max_balance_minor != limit:
        ledger.set_account_bounds(session, debt, min_balance_minor=None, max_balance_minor=limit)


def sync_line(session: Session, b: Party, s: Party, now: datetime) -> CreditLine | None:
    """The buyer's line at the seller as it stands now: created from or
    brought in line with the seller's grade default when it follows one, and
    its ledger bound set to the effective limit. None: no line."""
    line = session.get(CreditLine, (s.id, b.id))
    default = session.get(CreditDefault, (s.id, b.grade_id)) if b.grade_id else None
    if default is not None and (line is None or line.source == "grade_default"):
        if line is None:
            line = CreditLine(seller_id=s.id, buyer_id=b.id, currency=default.currency,
                              valid_from=now, status="active", source="grade_default")
            session.add(line)
        fields = (default.limit_minor, default.terms_kind, default.terms_days, default.due_day)
        if (line.limit_minor, line.terms_kind, line.terms_days, line.due_day) != fields:
            line.limit_minor, line.terms_kind, line.terms_days, line.due_day = fields
            line.updated_at = now
    if line is None:
        return None
    session.flush()
    _open_line_account(session, b, s, line.currency,
                       line.limit_minor + _increases(session, s.id, b.id, now))
    return line


def credit_balance(session: Session, b: Party, s: Party, now: datetime | None = None,
                   *, sync: bool = False, tz: ZoneInfo = BUSINESS_TZ) -> CreditBalance:
    now = now or utcnow()
    line = sync_line(session, b, s, now) if sync else session.get(CreditLine, (s.id, b.id))
    if line is None:
        default = session.get(CreditDefault, (s.id, b.grade_id)) if b.grade_id else None
        if default is None:
            return CreditBalance(0, 0, 0, 0, 0, 0, None, None)
        # Not used yet: the default it would get, nothing owed.
        return CreditBalance(default.limit_minor, default.limit_minor, 0, 0, 0,
                             default.limit_minor, None, "active", default.terms_kind,
                             default.terms_days, default.due_day, "grade_default")
    increases = _increases(session, s.id, b.id, now)
    limit = line.limit_minor + increases
    try:
        used = ledger.get_account(session, credit_account(b.code, s.code))
        posted, reserved = used.posted_minor, used.pending_debits_minor
    except ledger.AccountNotFound:
        posted = reserved = 0
    due = overdue = 0
    next_due = None
    for debt, _, _, due_date in _open_debts(session, s.id, b.id, tz):
        if due_date is None:
            continue
        if now >= due_date:
            overdue += _outstanding(debt)
        else:
            due += _outstanding(debt)
            next_due = min(next_due or due_date, due_date)
    # credit:B@S is debit-normal: what the buyer owes; pending debits are holds.
    return CreditBalance(limit, line.limit_minor, increases, posted, reserved,
                         max(0, limit - posted - reserved),
                         as_utc(line.valid_to) if line.valid_to else None, line.status,
                         line.terms_kind, line.terms_days, line.due_day, line.source,
                         due, overdue, next_due)


def set_credit_line(session: Session, *, seller: str, buyer: str, limit_minor: int,
                    terms_days: int = 30, terms_kind: str = "days_after_delivery",
                    due_day: int | None = None, valid_to: datetime | None = None,
                    block_overdue_days: int | None = None, status: str = "active",
                    currency: str = "CNY", actor: str) -> CreditBalance:
    """Grant or change ``buyer``'s credit line at ``seller`` by hand (it no
    longer follows the grade default). Lowering the limit below what is owed
    refuses new credit until repaid. Audited."""
    limit = _limit(limit_minor)
    kind, days, day = _terms(terms_kind, terms_days, due_day)
    if status not in ("active", "frozen"):
        raise InvalidInput("status must be active or frozen", field="status")
    block = _whole(block_overdue_days, "block_overdue_days", 0, 365, optional=True)
    if valid_to is not None and (not isinstance(valid_to, datetime) or valid_to.tzinfo is None):
        raise InvalidInput("valid_to must be a date-time with a time zone", field="valid_to")
    b, s = trading_pair(session, buyer, seller)
    now = utcnow()
    line = session.get(CreditLine, (s.id, b.id)) or CreditLine(
        seller_id=s.id, buyer_id=b.id, currency=currency, valid_from=now)
    line.limit_minor, line.terms_kind, line.terms_days, line.due_day = limit, kind, days, day
    line.status, line.block_overdue_days, line.source = status, block, "manual"
    line.frozen_reason = None
    line.valid_to = as_utc(valid_to) if valid_to is not None else None
    line.updated_at = now
    session.add(line)
    session.flush()
    _open_line_account(session, b, s, line.currency, limit + _increases(session, s.id, b.id, now))
    audit.record(session, actor=actor, action="credit_line.set", subject_type="party",
                 subject=b.code, details={"seller": s.code, "limit_minor": limit,
                                          "terms_kind": kind, "terms_days": days,
                                          "due_day": day, "status": status,
                                          "block_overdue_days": block,
                                          "valid_to": line.valid_to.isoformat()
                                          if line.valid_to else None})
    return credit_balance(session, b, s, now)


@dataclass(frozen=True)
class CreditDefaultView:
    seller: str
    grade: str
    limit_minor: int
    terms_kind: str
    terms_days: int
    due_day: int | None
    currency: str


def set_credit_default(session: Session, *, seller: str, grade: str, limit_minor: int,
                       terms_kind: str = "days_after_delivery", terms_days: int = 30,
                       due_day: int | None = None, currency: str = "CNY",
                       actor: str) -> CreditDefaultView:
    """The line every buyer of ``grade`` gets at ``seller`` unless set by
    hand. Lines following it take the change at their next use."""
    s, g = _seller(session, seller), _grade(session, grade)
    limit = _limit(limit_minor)
    kind, days, day = _terms(terms_kind, terms_days, due_day)
    row = session.get(CreditDefault, (s.id, g.id)) or CreditDefault(seller_id=s.id,
                                                                     grade_id=g.id)
    row.currency, row.limit_minor, row.terms_kind, row.terms_days, row.due_day = (
        currency, limit, kind, days, day)
    row.updated_at = utcnow()
    session.add(row)
    audit.record(session, actor=actor, action="credit_default.set", subject_type="party",
                 subject=s.code, details={"grade": g.code, "limit_minor": limit,
                                          "terms_kind": kind, "terms_days": days,
                                          "due_day": day})
    session.flush()
    return CreditDefaultView(s.code, g.code, limit, kind, days, day, currency)


def credit_defaults(session: Session, seller: str) -> list[CreditDefaultView]:
    s = _seller(session, seller)
    return [CreditDefaultView(s.code, code, d.limit_minor, d.terms_kind, d.terms_days,
                              d.due_day, d.currency)
            for d, code in session.execute(
                select(CreditDefault, Grade.code).join(Grade, Grade.id == CreditDefault.grade_id)
                .where(CreditDefault.seller_id == s.id).order_by(Grade.code))]


@dataclass(frozen=True)
class IncreaseView:
    id: int
    seller: str
    buyer: str
    amount_minor: int
    valid_from: datetime
    valid_to: datetime
    reason: str
    order: str | None
    actor: str


def grant_increase(session: Session, *, seller: str, buyer: str, amount_minor: int,
                   valid_to: datetime, reason: str, actor: str, order_id: int | None = None,
                   now: datetime | None = None) -> IncreaseView:
    """A temporary increase of the buyer's line until ``valid_to``; the
    ledger bound rises at once and falls back when it expires (at the next
    use of the line or the job, whichever is first). Audited."""
    amount = positive_amount(amount_minor)
    now = as_utc(now) if now is not None else utcnow()
    if not isinstance(valid_to, datetime) or valid_to.tzinfo is None or as_utc(valid_to) <= now:
        raise InvalidInput("valid_to must be a future date-time with a time zone",
                           field="valid_to")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
        raise InvalidInput("say why (1-500 characters)", field="reason")
    b, s = trading_pair(session, buyer, seller)
    if sync_line(session, b, s, now) is None:
        raise CreditUnavailable("there is no credit line to increase", reason="no_credit_line",
                                field="buyer")
    row = CreditIncrease(seller_id=s.id, buyer_id=b.id, amount_minor=amount, valid_from=now,
                         valid_to=as_utc(valid_to), reason=reason.strip(), order_id=order_id,
                         actor=actor, created_at=now)
    session.add(row)
    session.flush()
    sync_line(session, b, s, now)
    audit.record(session, actor=actor, action="credit_increase.grant", subject_type="party",
                 subject=b.code, details={"seller": s.code, "amount_minor": amount,
                                          "valid_to": row.valid_to.isoformat(),
                                          "reason": row.reason})
    return _increase_view(session, row, s.code, b.code)


def _increase_view(session: Session, row: CreditIncrease, seller: str, buyer: str) -> IncreaseView:
    order = session.get(Order, row.order_id).public_id if row.order_id else None
    return IncreaseView(row.id, seller, buyer, row.amount_minor, as_utc(row.valid_from),
                        as_utc(row.valid_to), row.reason, order, row.actor)


def increases(session: Session, *, seller: str, buyer: str) -> list[IncreaseView]:
    b, s = party_row(session, buyer), party_row(session, seller)
    return [_increase_view(session, row, s.code, b.code) for row in session.scalars(
        select(CreditIncrease).where(CreditIncrease.seller_id == s.id,
                                     CreditIncrease.buyer_id == b.id)
        .order_by(CreditIncrease.id.desc()))]


def lapse_increases(session: Session, *, now: datetime | None = None,
                    lookback: timedelta = timedelta(days=7)) -> int:
    """The job: bring the ledger bound of every line whose increase expired
    recently back to its limit. Safe to rerun; returns lines touched."""
    now = as_utc(now) if now is not None else utcnow()
    pairs = session.execute(select(CreditIncrease.seller_id, CreditIncrease.buyer_id).where(
        CreditIncrease.valid_to <= now, CreditIncrease.valid_to > now - lookback).distinct()).all()
    for seller_id, buyer_id in pairs:
        sync_line(session, session.get(Party, buyer_id), session.get(Party, seller_id), now)
    return len(pairs)


# -- policy ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PolicyView:
    seller: str
    grade: str | None
    on_limit: str
    on_expired: str
    overdue_days: int | None
    on_overdue: str
    freeze_overdue_days: int | None


def set_credit_policy(session: Session, *, seller: str, grade: str | None = None,
                      on_limit: str = "block", on_expired: str = "block",
                      overdue_days: int | None = None, on_overdue: str = "block",
                      freeze_overdue_days: int | None = None, actor: str) -> PolicyView:
    """The seller's credit checks for one grade (or all grades without
    their own): block or hold for approval on each. Audited."""
    for field, value in (("on_limit", on_limit), ("on_expired", on_expired),
                         ("on_overdue", on_overdue)):
        if value not in POLICY_ACTIONS:
            raise InvalidInput(f"{field} must be block or hold", field=field)
    overdue = _whole(overdue_days, "overdue_days", 0, 365, optional=True)
    freeze = _whole(freeze_overdue_days, "freeze_overdue_days", 0, 365, optional=True)
    s, g = _seller(session, seller), _grade(session, grade)
    row = session.scalars(select(CreditPolicy).where(
        CreditPolicy.seller_id == s.id,
        CreditPolicy.grade_id == g.id if g else CreditPolicy.grade_id.is_(None))).one_or_none()
    row = row or CreditPolicy(seller_id=s.id, grade_id=g.id if g else None)
    row.on_limit, row.on_expired, row.overdue_days, row.on_overdue = (
        on_limit, on_expired, overdue, on_overdue)
    row.freeze_overdue_days, row.updated_at = freeze, utcnow()
    session.add(row)
    view = PolicyView(s.code, g.code if g else None, on_limit, on_expired, overdue, on_overdue,
                      freeze)
    audit.record(session, actor=actor, action="credit_policy.set", subject_type="party",
                 subject=s.code, details={k: v for k, v in view.__dict__.items() if k != "seller"})
    session.flush()
    return view


def credit_policies(session: Session, seller: str) -> list[PolicyView]:
    s = _seller(session, seller)
    rows = session.execute(select(CreditPolicy, Grade.code)
                           .outerjoin(Grade, Grade.id == CreditPolicy.grade_id)
                           .where(CreditPolicy.seller_id == s.id)).all()
    views = [PolicyView(s.code, code, p.on_limit, p.on_expired, p.overdue_days, p.on_overdue,
                        p.freeze_overdue_days) for p, code in rows]
    return sorted(views, key=lambda v: (v.grade is not None, v.grade or ""))


def policy_for(session: Session, seller_id: int, grade_id: int | None) -> Policy:
    rows = {p.grade_id: p for p in session.scalars(select(CreditPolicy).where(
        CreditPolicy.seller_id == seller_id,
        (CreditPolicy.grade_id == grade_id) | CreditPolicy.grade_id.is_(None)))}
    row = rows.get(grade_id) if grade_id is not None else None
    row = row or rows.get(None)
    if row is None:
        return DEFAULT_POLICY
    return Policy(row.on_limit, row.on_expired, row.overdue_days, row.on_overdue,
                  row.freeze_overdue_days)


@dataclass(frozen=True)
class CreditDecision:
    hold_reasons: tuple[str, ...]
    available_minor: int


def check_credit(session: Session, order: Order, amount: int, now: datetime,
                 tz: ZoneInfo = BUSINESS_TZ) -> CreditDecision:
    """The credit check of a plan's credit part: raises ``CreditUnavailable``
    when something blocks it, else says what (if anything) holds it."""
    b, s = session.get(Party, order.buyer_id), session.get(Party, order.seller_id)
    line = sync_line(session, b, s, now)
    reason = ("no_credit_line" if line is None else "credit_frozen" if line.status != "active"
              else None)
    if reason is not None:
        raise CreditUnavailable(f"the credit part cannot be used: {reason.replace('_', ' ')}",
                                reason=reason, field="parts")
    balance = credit_balance(session, b, s, now)
    worst = _worst_overdue_days(session, s.id, b.id, now, tz)
    found = credit_findings(
        amount=amount, available=balance.available_minor,
        expired=line.valid_to is not None and as_utc(line.valid_to) <= now,
        worst_overdue_days=worst, line_block_overdue_days=line.block_overdue_days,
        policy=policy_for(session, s.id, b.grade_id))
    blocking = [reason for reason, action in found if action == "block"]
    if blocking:
        raise CreditUnavailable(
            f"the credit part cannot be used: {blocking[0].replace('_', ' ')}",
            reason=blocking[0], reasons=blocking, field="parts")
    return CreditDecision(tuple(reason for reason, _ in found), balance.available_minor)


# -- debts --------------------------------------------------------------------------------------

def open_debt(session: Session, order: Order, amount: int, now: datetime) -> CreditDebt:
    """The debt of an order's captured credit part, on the line's terms now."""
    line = session.get(CreditLine, (order.seller_id, order.buyer_id))
    debt = CreditDebt(order_id=order.id, seller_id=order.seller_id, buyer_id=order.buyer_id,
                      amount_minor=amount, repaid_minor=0, refunded_minor=0,
                      terms_kind=line.terms_kind, terms_days=line.terms_days,
                      due_day=line.due_day, created_at=now)
    session.add(debt)
    return debt


def cancel_debt(session: Session, order_id: int) -> None:
    """An order cancelled before any repayment owes nothing any more."""
    debt = session.scalars(select(CreditDebt).where(CreditDebt.order_id == order_id)).one()
    if debt.repaid_minor:
        raise InvalidInput("part of this order's credit is already repaid: refund it as a "
                           "return, not a cancel", field="order")
    debt.cancelled = True


def reduce_debt(session: Session, order_id: int, amount: int) -> tuple[int, int]:
    """A return gives back ``amount`` of an order's credit part: what is
    still owed is forgiven first (the line restored), the rest was repaid
    in cash and goes back as cash. Returns (restored, cash)."""
    debt = session.scalars(select(CreditDebt).where(CreditDebt.order_id == order_id)).one()
    owed = debt.amount_minor - debt.repaid_minor - debt.refunded_minor
    restored = min(owed, amount)
    debt.refunded_minor += restored
    return restored, amount - restored


def _outstanding(debt: CreditDebt) -> int:
    return debt.amount_minor - debt.repaid_minor - debt.refunded_minor


def _open_debts(session: Session, seller_id: int, buyer_id: int,
                tz: ZoneInfo = BUSINESS_TZ) -> list[tuple]:
    """(debt row, order public id, delivered_at, due_at), oldest due first:
    delivered debts by due date, then undelivered ones by creation."""
    rows = session.execute(
        select(CreditDebt, Order.public_id)
        .join(Order, Order.id == CreditDebt.order_id)
        .where(CreditDebt.seller_id == seller_id, CreditDebt.buyer_id == buyer_id,
               CreditDebt.cancelled.is_(False),
               CreditDebt.repaid_minor + CreditDebt.refunded_minor < CreditDebt.amount_minor)
        .order_by(CreditDebt.id)).all()
    return _with_due_dates(session, rows, tz)


def _with_due_dates(session: Session, rows: Iterable, tz: ZoneInfo) -> list[tuple]:
    rows = list(rows)
    delivered = dict(session.execute(
        select(OrderEvent.order_id, func.min(OrderEvent.at)).where(
            OrderEvent.order_id.in_([debt.order_id for debt, _ in rows]),
            OrderEvent.to_state == "delivered").group_by(OrderEvent.order_id)).all()) if rows else {}
    out = []
    for debt, public_id in rows:
        at = as_utc(delivered[debt.order_id]) if debt.order_id in delivered else None
        due = due_at(at, debt.terms_kind, debt.terms_days, debt.due_day, tz) if at else None
        out.append((debt, public_id, at, due))
    far = datetime.max.replace(tzinfo=timezone.utc)
    out.sort(key=lambda item: (item[3] or far, item[0].id))
    return out


def _worst_overdue_days(session: Session, seller_id: int, buyer_id: int, now: datetime,
                        tz: ZoneInfo) -> int | None:
    overdue = [(now - due).days for _, _, _, due in _open_debts(session, seller_id, buyer_id, tz)
               if due is not None and now >= due]
    return max(overdue) if overdue else None


@dataclass(frozen=True)
class DebtView:
    order: str
    amount_minor: int
    repaid_minor: int
    refunded_minor: int
    outstanding_minor: int
    delivered_at: datetime | None
    due_at: datetime | None
    bucket: str


@dataclass(frozen=True)
class CreditAging:
    buyer: str
    seller: str
    at: datetime
    outstanding_minor: int
    buckets: dict[str, int]
    debts: tuple[DebtView, ...]


def credit_aging(session: Session, *, buyer: str, seller: str, at: datetime | None = None,
                 tz: ZoneInfo = BUSINESS_TZ) -> CreditAging:
    """What the buyer owes the seller on credit, by how overdue it is."""
    b, s = party_row(session, buyer), party_row(session, seller)
    now = as_utc(at) if at is not None else utcnow()
    buckets = {name: 0 for name in AGING_BUCKETS}
    debts = []
    for debt, public_id, delivered_at, due in _open_debts(session, s.id, b.id, tz):
        outstanding = _outstanding(debt)
        bucket = aging_bucket(due, now)
        buckets[bucket] += outstanding
        debts.append(DebtView(public_id, debt.amount_minor, debt.repaid_minor,
                              debt.refunded_minor, outstanding, delivered_at, due, bucket))
    return CreditAging(b.code, s.code, now, sum(buckets.values()), buckets, tuple(debts))


def repay_credit(session: Session, *, buyer: str, seller: str, amount_minor: int,
                 bank_reference: str, actor: str, tz: ZoneInfo = BUSINESS_TZ,
                 source: str = CUSTODY) -> CreditAging:
    """A credit repayment arrived: by bank transfer (finance confirms it) or
    through a gateway (``source`` is then the gateway's receivable). It is
    allocated to the oldest due debts first; for each order repaid, in one
    entry: the cash into the order's escrow (Dr ``source`` / Cr
    order:O:escrow, to be cleared like any cash) and the line restored (Dr party:S:credit_issued /
    Cr credit:B@S). More than is owed is refused. Once per bank reference."""
    amount = positive_amount(amount_minor)
    reference = _checked_reference(bank_reference)
    b, s = party_row(session, buyer), party_row(session, seller)
    done = ledger.find_entry_by_key(session, f"repay:{s.code}:{reference}")
    if done is not None:  # a retry: the repayment was allocated and posted already
        if done.metadata.get("amount_minor") != amount:
            raise ledger.IdempotencyConflict(
                f"bank reference {reference} was a repayment of another amount",
                field="bank_reference")
        return credit_aging(session, buyer=b.code, seller=s.code, tz=tz)
    debts = _open_debts(session, s.id, b.id, tz)
    owed = sum(_outstanding(debt) for debt, *_ in debts)
    if amount > owed:
        raise InvalidInput(f"{b.code} owes {s.code} {owed} on credit; {amount} is more",
                           field="amount_minor", owed_minor=owed)
    currency = session.get(CreditLine, (s.id, b.id)).currency
    postings, allocated, left = [], {}, amount
    for debt, public_id, _, _ in debts:
        if not left:
            break
        part = min(left, _outstanding(debt))
        debt.repaid_minor += part
        allocated[public_id] = part
        left -= part
        postings += [PostingLine(source, "debit", part, currency),
                     PostingLine(escrow_account(public_id), "credit", part, currency),
                     PostingLine(credit_issued_account(s.code), "debit", part, currency),
                     PostingLine(credit_account(b.code, s.code), "credit", part, currency)]
    if source == CUSTODY:
        ensure(session, CUSTODY, "Custody bank account", "asset", currency)
    entry = ledger.post_entry(session, EntryRequest(
        code="credit.repayment", description=f"credit repayment {reference}",
        idempotency_key=f"repay:{s.code}:{reference}",
        metadata={"buyer": b.code, "seller": s.code, "amount_minor": amount,
                  "allocated": allocated},
        postings=postings))
    for debt, public_id, _, _ in debts:  # the repaid cash is cleared like any cash
        if public_id in allocated:
            clearings.clear_cash(session, session.get(Order, debt.order_id),
                                 amount_minor=allocated[public_id], method="credit",
                                 cause=f"repay:{s.code}:{reference}:{public_id}")
    audit.record(session, actor=actor, action="credit.repay", subject_type="party",
                 subject=b.code, details={"seller": s.code, "amount_minor": amount,
                                          "bank_reference": reference, "allocated": allocated,
                                          "entry": entry.id})
    session.flush()
    return credit_aging(session, buyer=b.code, seller=s.code, tz=tz)


def _checked_reference(value: Any) -> str:
    return bank_reference(value, "bank_reference")


def freeze_overdue_lines(session: Session, *, now: datetime | None = None,
                         tz: ZoneInfo = BUSINESS_TZ) -> int:
    """The freeze job: every active line with a debt overdue by more than its
    seller's policy allows (``freeze_overdue_days``, per grade) is frozen,
    with the reason recorded and audited. Safe to rerun; returns how many."""
    now = as_utc(now) if now is not None else utcnow()
    sellers = set(session.scalars(select(CreditPolicy.seller_id).where(
        CreditPolicy.freeze_overdue_days.is_not(None))))
    if not sellers:
        return 0
    rows = session.execute(
        select(CreditDebt, Order.public_id)
        .join(Order, Order.id == CreditDebt.order_id)
        .join(CreditLine, (CreditLine.seller_id == CreditDebt.seller_id)
              & (CreditLine.buyer_id == CreditDebt.buyer_id))
        .where(CreditDebt.seller_id.in_(sellers), CreditLine.status == "active",
               CreditDebt.cancelled.is_(False),
               CreditDebt.repaid_minor + CreditDebt.refunded_minor < CreditDebt.amount_minor)
        .order_by(CreditDebt.id)).all()
    worst: dict[tuple[int, int], int] = {}
    for debt, _, _, due in _with_due_dates(session, rows, tz):
        if due is not None and now >= due:
            key = (debt.seller_id, debt.buyer_id)
            worst[key] = max(worst.get(key, 0), (now - due).days)
    frozen = 0
    policies: dict[tuple[int, int | None], Policy] = {}
    for (seller_id, buyer_id), days in sorted(worst.items()):
        buyer = session.get(Party, buyer_id)
        key = (seller_id, buyer.grade_id)
        policy = policies.setdefault(key, policy_for(session, seller_id, buyer.grade_id))
        if policy.freeze_overdue_days is None or days <= policy.freeze_overdue_days:
            continue
        line = session.get(CreditLine, (seller_id, buyer_id))
        line.status, line.updated_at = "frozen", now
        line.frozen_reason = f"overdue {days} days (policy: more than " \
                             f"{policy.freeze_overdue_days})"
        audit.record(session, actor="scheduler", action="credit_line.freeze",
                     subject_type="party", subject=buyer.code,
                     details={"seller": session.get(Party, seller_id).code,
                              "overdue_days": days, "reason": line.frozen_reason})
        frozen += 1
    session.flush()
    return frozen
