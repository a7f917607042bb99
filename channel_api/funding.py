"""Funding orders (issue 4): an order's payment plan mixes prepaid deposit,
rebate and an offline bank transfer; each part has its own state; the plan
must add up to the order total to the fen.

Every money effect is a ledger entry, per ``docs/accounting.md``:

* deposit confirmed (offline transfer): Dr ``custody:bank`` / Cr ``prepaid:B@S``;
* rebate granted by finance: Dr ``party:S:rebates_granted`` / Cr ``rebate:B@S``;
* setting the plan **reserves** the prepaid and rebate parts at once with
  pending entries (Dr ``prepaid:B@S`` / Cr ``order:O:escrow``; Dr
  ``rebate:B@S`` / Cr ``party:S:rebates_granted``) that expire with the
  payment window; an offline part awaits its money;
* the offline transfer confirmed by finance: Dr ``custody:bank`` / Cr
  ``order:O:escrow``;
* when every part is funded, the pending entries are posted (captured) and
  the order is paid;
* cancelling voids what is reserved and reverses what was captured (prepaid
  and rebate back; an offline payment back to the buyer's deposit at the
  seller); an unpaid order past its window is expired by a job.

Every ledger call carries an idempotency key derived from the order (or the
bank reference), so a retried use case never moves money twice.

A credit part reserves Dr ``credit:B@S`` / Cr ``party:S:credit_issued``; the
line's limit is that account's upper bound in the ledger. Repayments, due
dates and aging, credit-check rules (hold for approval) and gateways are
the next parts of the plan.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import ledger
from ledger import EntryRequest, PostingLine, as_utc, utcnow

from . import audit, habits, orders
from .errors import CreditUnavailable, InvalidInput
from .models import (
    PART_METHODS,
    Category,
    CreditDebt,
    CreditLine,
    Order,
    OrderEvent,
    OrderLine,
    PaymentPart,
    Product,
    RebateRule,
    Sku,
)
from .order_states import transition
from .parties import is_buyer_of, party_row

CUSTODY = "custody:bank"
PAYMENT_WINDOW = timedelta(hours=24)  # how long a plan's holds wait for the rest of the money
_REFERENCE = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")


def prepaid_account(buyer: str, seller: str) -> str:
    return f"prepaid:{buyer}@{seller}"


def rebate_account(buyer: str, seller: str) -> str:
    return f"rebate:{buyer}@{seller}"


def rebates_granted_account(seller: str) -> str:
    return f"party:{seller}:rebates_granted"


def credit_account(buyer: str, seller: str) -> str:
    return f"credit:{buyer}@{seller}"


def credit_issued_account(seller: str) -> str:
    return f"party:{seller}:credit_issued"


def escrow_account(order: str) -> str:
    return f"order:{order}:escrow"


def _ensure(session: Session, code: str, name: str, type_: str, currency: str, *,
            owner: str | None = None, min_balance: int | None = None) -> None:
    """Accounts are opened on first use (docs/accounting.md); an existing one
    is used as it is, whatever name it was opened with."""
    try:
        ledger.get_account(session, code)
    except ledger.AccountNotFound:
        ledger.open_account(session, code, name, type_, currency, owner_party_id=owner,
                            min_balance_minor=min_balance)


def _amount(value: Any, field: str = "amount_minor") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 10**15:
        raise InvalidInput(f"{field} must be a positive whole number of minor units", field=field)
    return value


def _reference(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _REFERENCE.fullmatch(value):
        raise InvalidInput(f"{field} must be 1-64 letters, digits or _ . : / -", field=field)
    return value


def _pair(session: Session, buyer: str, seller: str):
    b, s = party_row(session, buyer), party_row(session, seller)
    if not is_buyer_of(session, s.code, b.code):
        raise InvalidInput(f"{b.code} does not buy from {s.code}", field="seller")
    return b, s


# -- balances ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Balance:
    posted_minor: int
    reserved_minor: int
    available_minor: int


@dataclass(frozen=True)
class CreditBalance:
    limit_minor: int
    used_minor: int
    reserved_minor: int
    available_minor: int
    valid_to: datetime | None
    status: str | None  # None: no credit line


@dataclass(frozen=True)
class Balances:
    """What a buyer can spend at a seller: its prepaid deposit, its rebate
    credit and its credit line (zero before the first deposit, grant or line)."""

    buyer: str
    seller: str
    currency: str
    prepaid: Balance
    rebate: Balance
    credit: CreditBalance


def _balance(session: Session, code: str) -> Balance:
    try:
        account = ledger.get_account(session, code)
    except ledger.AccountNotFound:
        return Balance(0, 0, 0)
    return Balance(account.posted_minor, account.pending_debits_minor, account.available_minor)


def _credit_balance(session: Session, buyer, seller) -> CreditBalance:
    line = session.get(CreditLine, (seller.id, buyer.id))
    if line is None:
        return CreditBalance(0, 0, 0, 0, None, None)
    used = _balance(session, credit_account(buyer.code, seller.code))
    # credit:B@S is debit-normal: what the buyer owes; pending debits are holds.
    available = max(0, line.limit_minor - used.posted_minor - used.reserved_minor)
    return CreditBalance(line.limit_minor, used.posted_minor, used.reserved_minor, available,
                         as_utc(line.valid_to) if line.valid_to else None, line.status)


def balances(session: Session, *, buyer: str, seller: str, currency: str = "CNY") -> Balances:
    b, s = party_row(session, buyer), party_row(session, seller)
    return Balances(b.code, s.code, currency, _balance(session, prepaid_account(b.code, s.code)),
                    _balance(session, rebate_account(b.code, s.code)),
                    _credit_balance(session, b, s))


# -- deposits and rebates -------------------------------------------------------------------

@dataclass(frozen=True)
class Credited:
    """A deposit confirmed or a rebate granted, with the balances after it."""

    buyer: str
    seller: str
    amount_minor: int
    currency: str
    reference: str
    entry_id: str
    balances: Balances


def confirm_deposit(session: Session, *, buyer: str, seller: str, amount_minor: int,
                    bank_reference: str, currency: str = "CNY", actor: str) -> Credited:
    """Finance confirms an offline bank transfer into ``buyer``'s prepaid
    deposit at ``seller``. A bank reference is credited once: confirming it
    again returns the same deposit; with another amount it is refused
    (``idempotency_conflict``)."""
    amount = _amount(amount_minor)
    reference = _reference(bank_reference, "bank_reference")
    b, s = _pair(session, buyer, seller)
    prepaid = prepaid_account(b.code, s.code)
    _ensure(session, CUSTODY, "Custody bank account", "asset", currency)
    _ensure(session, prepaid, f"Prepaid deposit of {b.code} at {s.code}", "liability", currency,
            owner=b.code, min_balance=0)
    entry = ledger.post_entry(session, EntryRequest(
        code="deposit.offline", description=f"offline transfer {reference}",
        idempotency_key=f"deposit:{s.code}:{reference}",
        metadata={"buyer": b.code, "seller": s.code, "bank_reference": reference},
        postings=[PostingLine(CUSTODY, "debit", amount, currency),
                  PostingLine(prepaid, "credit", amount, currency)]))
    audit.record(session, actor=actor, action="deposit.confirm", subject_type="party",
                 subject=b.code, details={"seller": s.code, "amount_minor": amount,
                                          "bank_reference": reference, "entry": entry.id})
    return Credited(b.code, s.code, amount, currency, reference, entry.id,
                    balances(session, buyer=b.code, seller=s.code, currency=currency))


def grant_rebate(session: Session, *, buyer: str, seller: str, amount_minor: int,
                 reference: str, reason: str, currency: str = "CNY", actor: str) -> Credited:
    """Finance grants ``buyer`` rebate credit at ``seller`` by hand (until
    rebate programs compute it): audited, once per reference."""
    amount = _amount(amount_minor)
    reference = _reference(reference, "reference")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
        raise InvalidInput("say why the rebate is granted (1-500 characters)", field="reason")
    b, s = _pair(session, buyer, seller)
    rebate, granted = rebate_account(b.code, s.code), rebates_granted_account(s.code)
    _ensure(session, granted, f"Rebates granted by {s.code}", "asset", currency, owner=s.code)
    _ensure(session, rebate, f"Rebate of {b.code} at {s.code}", "liability", currency,
            owner=b.code, min_balance=0)
    entry = ledger.post_entry(session, EntryRequest(
        code="rebate.grant", description=reason.strip(),
        idempotency_key=f"rebate:{s.code}:{reference}",
        metadata={"buyer": b.code, "seller": s.code, "reference": reference},
        postings=[PostingLine(granted, "debit", amount, currency),
                  PostingLine(rebate, "credit", amount, currency)]))
    audit.record(session, actor=actor, action="rebate.grant", subject_type="party",
                 subject=b.code, details={"seller": s.code, "amount_minor": amount,
                                          "reference": reference, "reason": reason.strip(),
                                          "entry": entry.id})
    return Credited(b.code, s.code, amount, currency, reference, entry.id,
                    balances(session, buyer=b.code, seller=s.code, currency=currency))


def set_credit_line(session: Session, *, seller: str, buyer: str, limit_minor: int,
                    terms_days: int = 30, valid_to: datetime | None = None,
                    block_overdue_days: int | None = None, status: str = "active",
                    currency: str = "CNY", actor: str) -> Balances:
    """Grant or change ``buyer``'s credit line at ``seller``. The limit is the
    upper bound of ``credit:B@S`` in the ledger, so no posting can take the
    debt beyond it, however many orders race. Lowering it below what is
    owed refuses new credit until repaid. Audited."""
    if not isinstance(limit_minor, int) or isinstance(limit_minor, bool) or not 0 <= limit_minor <= 10**15:
        raise InvalidInput("limit_minor must be a whole number of minor units", field="limit_minor")
    if not isinstance(terms_days, int) or isinstance(terms_days, bool) or not 0 <= terms_days <= 365:
        raise InvalidInput("terms_days must be 0 to 365", field="terms_days")
    if status not in ("active", "frozen"):
        raise InvalidInput("status must be active or frozen", field="status")
    if block_overdue_days is not None and (not isinstance(block_overdue_days, int) or isinstance(
            block_overdue_days, bool) or not 0 <= block_overdue_days <= 365):
        raise InvalidInput("block_overdue_days must be 0 to 365", field="block_overdue_days")
    if valid_to is not None and (not isinstance(valid_to, datetime) or valid_to.tzinfo is None):
        raise InvalidInput("valid_to must be a date-time with a time zone", field="valid_to")
    b, s = _pair(session, buyer, seller)
    debt, issued = credit_account(b.code, s.code), credit_issued_account(s.code)
    _ensure(session, issued, f"Credit issued by {s.code}", "liability", currency, owner=s.code)
    try:
        ledger.get_account(session, debt)
        ledger.set_account_bounds(session, debt, min_balance_minor=None,
                                  max_balance_minor=limit_minor)
    except ledger.AccountNotFound:
        ledger.open_account(session, debt, f"Credit of {b.code} at {s.code}", "asset", currency,
                            owner_party_id=s.code, max_balance_minor=limit_minor)
    now = utcnow()
    line = session.get(CreditLine, (s.id, b.id)) or CreditLine(
        seller_id=s.id, buyer_id=b.id, currency=currency, valid_from=now)
    line.limit_minor, line.terms_days, line.status = limit_minor, terms_days, status
    line.block_overdue_days = block_overdue_days
    line.valid_to = as_utc(valid_to) if valid_to is not None else None
    line.updated_at = now
    session.add(line)
    audit.record(session, actor=actor, action="credit_line.set", subject_type="party",
                 subject=b.code, details={"seller": s.code, "limit_minor": limit_minor,
                                          "terms_days": terms_days, "status": status,
                                          "block_overdue_days": block_overdue_days,
                                          "valid_to": line.valid_to.isoformat()
                                          if line.valid_to else None})
    session.flush()
    return balances(session, buyer=b.code, seller=s.code, currency=currency)


def _check_credit(session: Session, order_row: Order, now: datetime) -> None:
    line = session.get(CreditLine, (order_row.seller_id, order_row.buyer_id))
    reason = ("no_credit_line" if line is None else "credit_frozen" if line.status != "active"
              else "credit_expired" if line.valid_to is not None and as_utc(line.valid_to) <= now
              else "overdue" if _overdue_beyond(session, line, now) else None)
    if reason is not None:
        raise CreditUnavailable(f"the credit part cannot be used: {reason.replace('_', ' ')}",
                                reason=reason, field="parts")


def _overdue_beyond(session: Session, line: CreditLine, now: datetime) -> bool:
    if line.block_overdue_days is None:
        return False
    limit = timedelta(days=line.block_overdue_days)
    return any(due is not None and now - due > limit
               for _, _, _, due in _open_debts(session, line.seller_id, line.buyer_id, now))


@dataclass(frozen=True)
class RebateRuleView:
    seller: str
    max_percent_bp: int | None
    max_amount_minor: int | None


def set_rebate_rule(session: Session, seller: str, *, max_percent_bp: int | None,
                    max_amount_minor: int | None, actor: str) -> RebateRuleView:
    """How much of an order the seller's buyers may pay with rebate."""
    s = party_row(session, seller)
    if s.role == "store":
        raise InvalidInput("a store sells nothing", field="seller")
    if max_percent_bp is not None and (not isinstance(max_percent_bp, int) or isinstance(
            max_percent_bp, bool) or not 0 <= max_percent_bp <= 10_000):
        raise InvalidInput("max_percent_bp must be 0 to 10000 basis points", field="max_percent_bp")
    if max_amount_minor is not None and (not isinstance(max_amount_minor, int) or isinstance(
            max_amount_minor, bool) or max_amount_minor < 0):
        raise InvalidInput("max_amount_minor must be a whole number of minor units",
                           field="max_amount_minor")
    row = session.get(RebateRule, s.id) or RebateRule(seller_id=s.id)
    row.max_percent_bp, row.max_amount_minor, row.updated_at = (
        max_percent_bp, max_amount_minor, utcnow())
    session.add(row)
    audit.record(session, actor=actor, action="rebate_rule.set", subject_type="party",
                 subject=s.code, details={"max_percent_bp": max_percent_bp,
                                          "max_amount_minor": max_amount_minor})
    session.flush()
    return RebateRuleView(s.code, max_percent_bp, max_amount_minor)


def rebate_cap(rule: RebateRule | None, total_minor: int) -> int:
    """The most rebate an order of ``total_minor`` may use (pure; rounded
    down to the fen like every split)."""
    if rule is None:
        return 0
    caps = [total_minor]
    if rule.max_percent_bp is not None:
        caps.append(total_minor * rule.max_percent_bp // 10_000)
    if rule.max_amount_minor is not None:
        caps.append(rule.max_amount_minor)
    return min(caps)


# -- the payment plan --------------------------------------------------------------------------

def _parts(parts: Any, total: int) -> list[tuple[str, int]]:
    if not isinstance(parts, (list, tuple)) or not parts:
        raise InvalidInput("a plan has at least one part", field="parts")
    out: list[tuple[str, int]] = []
    for index, part in enumerate(parts):
        field = f"parts[{index}]"
        if not isinstance(part, dict) or set(part) - {"method", "amount_minor"}:
            raise InvalidInput("a part is {method, amount_minor}", field=field)
        method = part.get("method")
        if method not in PART_METHODS:
            raise InvalidInput(f"method must be one of {', '.join(PART_METHODS)}",
                               field=f"{field}.method")
        if method in {m for m, _ in out}:
            raise InvalidInput(f"{method} is in the plan twice", field=f"{field}.method")
        out.append((method, _amount(part.get("amount_minor"), f"{field}.amount_minor")))
    planned = sum(amount for _, amount in out)
    if planned != total:
        raise InvalidInput(f"the parts add up to {planned}; the order total is {total}",
                           field="parts", planned_minor=planned, total_minor=total)
    return out


def _order_row(session: Session, public_id: str) -> Order:
    return session.scalars(select(Order).where(Order.public_id == public_id)).one()


def set_payment_plan(session: Session, order: str, parts: list[dict[str, Any]], *,
                     actor: str, at: datetime | None = None) -> orders.OrderView:
    """Fund a placed order: reserve its prepaid and rebate parts at once
    (pending entries expiring with the payment window), await its offline
    part; when nothing is awaited, capture everything and the order is paid.
    A shortfall (``insufficient_funds``) or a rule broken writes nothing."""
    view = orders.get_order(session, order)
    transition(view.state, "reserve")  # only a placed order takes a plan
    plan = _parts(parts, view.total_minor)
    amounts = dict(plan)
    now = as_utc(at) if at is not None else utcnow()
    row = _order_row(session, view.public_id)
    if "credit" in amounts:
        _check_credit(session, row, now)
    if "rebate" in amounts:
        cap = rebate_cap(session.get(RebateRule, row.seller_id), view.total_minor)
        if amounts["rebate"] > cap:
            raise InvalidInput(f"{view.seller_code} accepts at most {cap} of rebate on this order",
                               field="parts", rebate_cap_minor=cap)
    b, s, O, ccy = view.buyer_code, view.seller_code, view.public_id, view.currency
    escrow = escrow_account(O)
    _ensure(session, escrow, f"Escrow of {O}", "liability", ccy, min_balance=0)
    order_id = row.id
    routes = {"prepaid": (prepaid_account(b, s), escrow),
              "rebate": (rebate_account(b, s), rebates_granted_account(s)),
              "credit": (credit_account(b, s), credit_issued_account(s))}
    for method, amount in plan:
        part = PaymentPart(order_id=order_id, method=method, amount_minor=amount,
                           state="awaiting", updated_at=now)
        if method in routes:
            source, destination = routes[method]
            if method != "credit":  # the credit line opened its accounts
                _ensure(session, source, f"{method} of {b} at {s}", "liability", ccy, owner=b,
                        min_balance=0)
            if method == "rebate":
                _ensure(session, destination, f"Rebates granted by {s}", "asset", ccy, owner=s)
            held = ledger.post_entry(session, EntryRequest(
                code=f"order.{method}.reserve", pending=True, expires_at=now + PAYMENT_WINDOW,
                idempotency_key=f"{O}:{method}:reserve", metadata={"order": O},
                postings=[PostingLine(source, "debit", amount, ccy),
                          PostingLine(destination, "credit", amount, ccy)]))
            part.state, part.pending_entry_id = "reserved", held.id
        session.add(part)
    session.flush()
    orders.apply_action(session, O, "reserve", actor=actor,
                        details={"plan": {method: amount for method, amount in plan}})
    return _capture_when_funded(session, O, actor=actor)


def _capture_when_funded(session: Session, order: str, *, actor: str) -> orders.OrderView:
    """Post every reserved part once nothing is awaited any more."""
    order_id = _order_row(session, order).id
    parts = list(session.scalars(select(PaymentPart).where(PaymentPart.order_id == order_id)))
    if any(p.state == "awaiting" for p in parts):
        return orders.get_order(session, order)
    captured = {}
    row = _order_row(session, order)
    for part in parts:
        if part.state == "reserved":
            entry = ledger.post_pending(session, part.pending_entry_id,
                                        idempotency_key=f"{order}:{part.method}:capture")
            part.state, part.entry_id, part.updated_at = "captured", entry.id, utcnow()
            if part.method == "credit":
                line = session.get(CreditLine, (row.seller_id, row.buyer_id))
                session.add(CreditDebt(order_id=row.id, seller_id=row.seller_id,
                                       buyer_id=row.buyer_id, amount_minor=part.amount_minor,
                                       repaid_minor=0, terms_days=line.terms_days,
                                       created_at=utcnow()))
        captured[part.method] = part.amount_minor
    session.flush()
    paid = orders.apply_action(session, order, "fund", actor=actor, details={"captured": captured})
    _record_habit(session, paid)
    return paid


def _record_habit(session: Session, order: orders.OrderView) -> None:
    """A paid order feeds its buyer's purchase habits (count, average, last
    order, top categories), in the same transaction."""
    by_category: dict[str, int] = {}
    for category, amount in session.execute(
            select(Category.code, OrderLine.line_total_minor)
            .join(Sku, Sku.id == OrderLine.sku_id)
            .join(Product, Product.id == Sku.product_id)
            .join(Category, Category.id == Product.category_id)
            .where(OrderLine.order_id == _order_row(session, order.public_id).id)):
        by_category[category] = by_category.get(category, 0) + amount
    habits.record_purchase(session, buyer=order.buyer_code, placed_at=order.placed_at,
                           total_minor=order.total_minor, currency=order.currency,
                           category_totals=by_category)


def pay_with_prepaid(session: Session, order: str, *, actor: str) -> orders.OrderView:
    """Pay the whole order from the buyer's prepaid deposit at the seller."""
    total = orders.get_order(session, order).total_minor
    return set_payment_plan(session, order, [{"method": "prepaid", "amount_minor": total}],
                            actor=actor)


def confirm_order_transfer(session: Session, order: str, *, amount_minor: int,
                           bank_reference: str, actor: str) -> orders.OrderView:
    """Finance confirms the offline transfer that pays an order's offline
    part (Dr custody:bank / Cr order:O:escrow); the amount must be the
    part's, to the fen. Once nothing else is awaited the order is paid."""
    amount = _amount(amount_minor)
    reference = _reference(bank_reference, "bank_reference")
    view = orders.get_order(session, order)
    if view.state != "awaiting_payment":
        transition(view.state, "fund")  # names the illegal move
    part = session.scalars(select(PaymentPart).where(
        PaymentPart.order_id == _order_row(session, view.public_id).id,
        PaymentPart.method == "offline")).one_or_none()
    if part is None or part.state != "awaiting":
        raise InvalidInput("this order awaits no offline transfer", field="order")
    if amount != part.amount_minor:
        raise InvalidInput(f"the plan expects {part.amount_minor} by transfer, not {amount}",
                           field="amount_minor", expected_minor=part.amount_minor)
    _ensure(session, CUSTODY, "Custody bank account", "asset", view.currency)
    entry = ledger.post_entry(session, EntryRequest(
        code="order.offline.capture", description=f"offline transfer {reference}",
        idempotency_key=f"{view.public_id}:offline:capture",
        metadata={"order": view.public_id, "bank_reference": reference},
        postings=[PostingLine(CUSTODY, "debit", amount, view.currency),
                  PostingLine(escrow_account(view.public_id), "credit", amount, view.currency)]))
    part.state, part.entry_id, part.updated_at = "captured", entry.id, utcnow()
    audit.record(session, actor=actor, action="order_transfer.confirm", subject_type="order",
                 subject=view.public_id, details={"amount_minor": amount,
                                                  "bank_reference": reference})
    session.flush()
    return _capture_when_funded(session, view.public_id, actor=actor)


def _release(session: Session, order: orders.OrderView) -> None:
    """Give every part back to its source (after the transition is allowed)."""
    order_id = _order_row(session, order.public_id).id
    for part in session.scalars(select(PaymentPart).where(PaymentPart.order_id == order_id)):
        key = f"{order.public_id}:{part.method}"
        if part.state == "reserved":
            try:
                ledger.void_pending(session, part.pending_entry_id, idempotency_key=f"{key}:void",
                                    reason="order cancelled")
            except (ledger.AlreadyVoided, ledger.PendingExpired):
                pass  # the ledger's expiry job released it already
            part.state = "voided"
        elif part.state == "captured" and part.method == "offline":
            # Cash by transfer goes back to the buyer's deposit at the seller.
            prepaid = prepaid_account(order.buyer_code, order.seller_code)
            _ensure(session, prepaid, f"Prepaid deposit of {order.buyer_code} at "
                    f"{order.seller_code}", "liability", order.currency, owner=order.buyer_code,
                    min_balance=0)
            refund = ledger.post_entry(session, EntryRequest(
                code="order.offline.refund", idempotency_key=f"{key}:refund",
                metadata={"order": order.public_id},
                postings=[PostingLine(escrow_account(order.public_id), "debit", part.amount_minor,
                                      order.currency),
                          PostingLine(prepaid, "credit", part.amount_minor, order.currency)]))
            part.state, part.refund_entry_id = "refunded", refund.id
        elif part.state == "captured":
            if part.method == "credit":
                debt = session.scalars(select(CreditDebt).where(
                    CreditDebt.order_id == order_id)).one()
                if debt.repaid_minor:
                    raise InvalidInput("part of this order's credit is already repaid: refund "
                                       "it as a return, not a cancel", field="order")
                debt.cancelled = True
            refund = ledger.reverse_entry(session, part.entry_id, idempotency_key=f"{key}:refund",
                                          description="order cancelled: back to its source")
            part.state, part.refund_entry_id = "refunded", refund.id
        elif part.state == "awaiting":
            part.state = "voided"
        part.updated_at = utcnow()
    session.flush()


def cancel_order(session: Session, order: str, *, actor: str, reason: str = "") -> orders.OrderView:
    """Cancel before shipment, returning every part to its source. The
    transition is checked first: an illegal cancel moves no money."""
    if not isinstance(reason, str) or len(reason) > 500:
        raise InvalidInput("reason must be text of at most 500 characters", field="reason")
    cancelled = orders.apply_action(session, order, "cancel", actor=actor,
                                    details={"reason": reason.strip()} if reason.strip() else None)
    _release(session, cancelled)
    return cancelled


def expire_unpaid_orders(session: Session, *, now: datetime | None = None,
                         limit: int = 500) -> int:
    """The payment-window job: orders awaiting payment longer than the window
    are expired and their holds released. Returns how many."""
    cutoff = (as_utc(now) if now is not None else utcnow()) - PAYMENT_WINDOW
    due = list(session.scalars(select(Order.public_id).where(
        Order.state == "awaiting_payment", Order.updated_at <= cutoff)
        .order_by(Order.id).limit(limit)))
    for public_id in due:
        expired = orders.apply_action(session, public_id, "expire", actor="scheduler")
        _release(session, expired)
    return len(due)


# -- credit debts: due dates, aging, repayments ----------------------------------------------

AGING_BUCKETS = ("not_due", "0-30", "31-60", "61-90", "90+")


def aging_bucket(due_at: datetime | None, now: datetime) -> str:
    """Pure: which bucket an outstanding debt falls in. A debt is not due
    before delivery (no due date) or before its due date; then by whole days
    overdue: 0-30, 31-60, 61-90, 90+."""
    if due_at is None or now < due_at:
        return "not_due"
    days = (now - due_at).days
    return "0-30" if days <= 30 else "31-60" if days <= 60 else "61-90" if days <= 90 else "90+"


@dataclass(frozen=True)
class DebtView:
    order: str
    amount_minor: int
    repaid_minor: int
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


def _open_debts(session: Session, seller_id: int, buyer_id: int, now: datetime) -> list[tuple]:
    """(debt row, order public id, delivered_at, due_at), oldest due first:
    delivered debts by due date, then undelivered ones by creation."""
    rows = session.execute(
        select(CreditDebt, Order.public_id)
        .join(Order, Order.id == CreditDebt.order_id)
        .where(CreditDebt.seller_id == seller_id, CreditDebt.buyer_id == buyer_id,
               CreditDebt.cancelled.is_(False),
               CreditDebt.repaid_minor < CreditDebt.amount_minor)
        .order_by(CreditDebt.id)).all()
    delivered = dict(session.execute(
        select(OrderEvent.order_id, OrderEvent.at).where(
            OrderEvent.order_id.in_([debt.order_id for debt, _ in rows]),
            OrderEvent.to_state == "delivered")).all()) if rows else {}
    out = []
    for debt, public_id in rows:
        at = as_utc(delivered[debt.order_id]) if debt.order_id in delivered else None
        due = at + timedelta(days=debt.terms_days) if at is not None else None
        out.append((debt, public_id, at, due))
    far = datetime.max.replace(tzinfo=now.tzinfo)
    out.sort(key=lambda item: (item[3] or far, item[0].id))
    return out


def credit_aging(session: Session, *, buyer: str, seller: str,
                 at: datetime | None = None) -> CreditAging:
    """What the buyer owes the seller on credit, by how overdue it is."""
    b, s = party_row(session, buyer), party_row(session, seller)
    now = as_utc(at) if at is not None else utcnow()
    buckets = {name: 0 for name in AGING_BUCKETS}
    debts = []
    for debt, public_id, delivered_at, due_at in _open_debts(session, s.id, b.id, now):
        outstanding = debt.amount_minor - debt.repaid_minor
        bucket = aging_bucket(due_at, now)
        buckets[bucket] += outstanding
        debts.append(DebtView(public_id, debt.amount_minor, debt.repaid_minor, outstanding,
                              delivered_at, due_at, bucket))
    return CreditAging(b.code, s.code, now, sum(buckets.values()), buckets, tuple(debts))


def repay_credit(session: Session, *, buyer: str, seller: str, amount_minor: int,
                 bank_reference: str, actor: str) -> CreditAging:
    """Finance confirms a credit repayment by bank transfer. It is allocated
    to the oldest due debts first; for each order repaid, in one entry: the
    cash into the order's escrow (Dr custody:bank / Cr order:O:escrow, to be
    cleared like any cash) and the line restored (Dr party:S:credit_issued /
    Cr credit:B@S). More than is owed is refused. Once per bank reference."""
    amount = _amount(amount_minor)
    reference = _reference(bank_reference, "bank_reference")
    b, s = party_row(session, buyer), party_row(session, seller)
    done = ledger.find_entry_by_key(session, f"repay:{s.code}:{reference}")
    if done is not None:  # a retry: the repayment was allocated and posted already
        if done.metadata.get("amount_minor") != amount:
            raise ledger.IdempotencyConflict(
                f"bank reference {reference} was a repayment of another amount",
                field="bank_reference")
        return credit_aging(session, buyer=b.code, seller=s.code)
    now = utcnow()
    debts = _open_debts(session, s.id, b.id, now)
    owed = sum(debt.amount_minor - debt.repaid_minor for debt, *_ in debts)
    if amount > owed:
        raise InvalidInput(f"{b.code} owes {s.code} {owed} on credit; {amount} is more",
                           field="amount_minor", owed_minor=owed)
    line = session.get(CreditLine, (s.id, b.id))
    currency = line.currency
    postings, allocated, left = [], {}, amount
    for debt, public_id, _, _ in debts:
        if not left:
            break
        part = min(left, debt.amount_minor - debt.repaid_minor)
        debt.repaid_minor += part
        allocated[public_id] = part
        left -= part
        postings += [PostingLine(CUSTODY, "debit", part, currency),
                     PostingLine(escrow_account(public_id), "credit", part, currency),
                     PostingLine(credit_issued_account(s.code), "debit", part, currency),
                     PostingLine(credit_account(b.code, s.code), "credit", part, currency)]
    _ensure(session, CUSTODY, "Custody bank account", "asset", currency)
    entry = ledger.post_entry(session, EntryRequest(
        code="credit.repayment", description=f"credit repayment {reference}",
        idempotency_key=f"repay:{s.code}:{reference}",
        metadata={"buyer": b.code, "seller": s.code, "amount_minor": amount,
                  "allocated": allocated},
        postings=postings))
    audit.record(session, actor=actor, action="credit.repay", subject_type="party",
                 subject=b.code, details={"seller": s.code, "amount_minor": amount,
                                          "bank_reference": reference, "allocated": allocated,
                                          "entry": entry.id})
    session.flush()
    return credit_aging(session, buyer=b.code, seller=s.code)
