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

A credit part reserves Dr ``credit:B@S`` / Cr ``party:S:credit_issued``
after the credit check (``credit.py``); a check the seller's policy *holds*
sends the order to approval instead: nothing is reserved until the seller
approves (the plan is reserved then) or rejects it (the order is cancelled).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

import ledger
from ledger import EntryRequest, PostingLine, as_utc, prepared, utcnow
from ledger.writer import ints_array, texts_array
from payments.models import Payment

from . import audit, clearings, credit, gateway_refunds, habits, orders
from .books import (
    CUSTODY,
    credit_account,
    credit_issued_account,
    ensure,
    ensure_all,
    ensure_prepaid,
    escrow_account,
    positive_amount,
    prepaid_account,
    prepaid_spec,
    rebate_account,
    rebates_granted_account,
)
from .books import bank_reference as _bank_reference
from .errors import InvalidInput
from .models import (
    PART_METHODS,
    Category,
    Order,
    OrderHold,
    OrderLine,
    OrderReturn,
    Party,
    PaymentPart,
    Product,
    RebateRule,
    Sku,
)
from .order_states import transition
from .parties import party_row, trading_pair

PAYMENT_WINDOW = timedelta(hours=24)  # how long a plan's holds wait for the rest of the money
# Parts whose money comes later: a transfer finance confirms, a gateway's callback.
AWAITED = frozenset({"offline", "gateway"})
CASH_METHODS = frozenset({"prepaid", "offline", "gateway"})  # what clearing may split

__all__ = ["CUSTODY", "PAYMENT_WINDOW", "credit_account", "credit_issued_account",
           "escrow_account", "prepaid_account", "rebate_account", "rebates_granted_account"]


# -- balances ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Balance:
    posted_minor: int
    reserved_minor: int
    available_minor: int


@dataclass(frozen=True)
class Balances:
    """What a buyer can spend at a seller: its prepaid deposit, its rebate
    credit and its credit line (zero before the first deposit, grant or line)."""

    buyer: str
    seller: str
    currency: str
    prepaid: Balance
    rebate: Balance
    credit: credit.CreditBalance


def _balance(session: Session, code: str) -> Balance:
    try:
        account = ledger.get_account(session, code)
    except ledger.AccountNotFound:
        return Balance(0, 0, 0)
    return Balance(account.posted_minor, account.pending_debits_minor, account.available_minor)


def balances(session: Session, *, buyer: str, seller: str, currency: str = "CNY") -> Balances:
    b, s = party_row(session, buyer), party_row(session, seller)
    return Balances(b.code, s.code, currency, _balance(session, prepaid_account(b.code, s.code)),
                    _balance(session, rebate_account(b.code, s.code)),
                    credit.credit_balance(session, b, s))


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
    amount = positive_amount(amount_minor)
    reference = _bank_reference(bank_reference, "bank_reference")
    b, s = trading_pair(session, buyer, seller)
    ensure(session, CUSTODY, "Custody bank account", "asset", currency)
    prepaid = ensure_prepaid(session, b.code, s.code, currency)
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
    amount = positive_amount(amount_minor)
    reference = _bank_reference(reference, "reference")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
        raise InvalidInput("say why the rebate is granted (1-500 characters)", field="reason")
    b, s = trading_pair(session, buyer, seller)
    rebate, granted = rebate_account(b.code, s.code), rebates_granted_account(s.code)
    ensure(session, granted, f"Rebates granted by {s.code}", "asset", currency, owner=s.code)
    ensure(session, rebate, f"Rebate of {b.code} at {s.code}", "liability", currency,
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
        out.append((method, positive_amount(part.get("amount_minor"), f"{field}.amount_minor")))
    planned = sum(amount for _, amount in out)
    if planned != total:
        raise InvalidInput(f"the parts add up to {planned}; the order total is {total}",
                           field="parts", planned_minor=planned, total_minor=total)
    return out


def set_payment_plan(session: Session, order: str, parts: list[dict[str, Any]], *,
                     actor: str, at: datetime | None = None,
                     tz: ZoneInfo = credit.BUSINESS_TZ) -> orders.OrderView:
    """Fund a placed order. When every part can be taken now (no offline
    transfer to wait for), prepaid, rebate and credit are captured in one
    ledger entry and the order is paid. With an offline part, prepaid,
    rebate and credit are reserved at once (pending entries expiring with
    the payment window) until the transfer is confirmed. When the seller's
    credit policy holds the credit part, the order is held for approval
    with its plan and nothing is taken yet. A shortfall
    (``insufficient_funds``) or a rule broken writes nothing."""
    view = orders.get_order(session, order)
    row = orders.order_row(session, view.public_id, lock=True)
    now = as_utc(at) if at is not None else utcnow()
    return _fund(session, row, view, parts, actor=actor, now=now, tz=tz)


def place_and_fund(session: Session, *, buyer: str, seller: str, lines: list[dict[str, Any]],
                   parts: list[dict[str, Any]], actor: str, client_reference: str | None = None,
                   note: str = "", tz: ZoneInfo = credit.BUSINESS_TZ) -> orders.OrderView:
    """The storefront's one call: place an order and set its payment plan in
    one transaction (a plan that does not add up to the total the server
    computed refuses both). Placing again with the same client reference
    returns the order as it stands; its plan was set the first time."""
    # One announcement for the whole call: the order's state at its end.
    # Deferred: an order paid in this call is inserted once, already paid.
    placed = orders.place(session, buyer=buyer, seller=seller, lines=lines, actor=actor,
                          client_reference=client_reference, note=note, announce=False,
                          defer=True)
    if placed.row.state != "placed":
        return placed.view
    try:
        return _fund(session, placed.row, placed.view, parts, actor=actor, now=utcnow(), tz=tz,
                     placing=placed)
    except orders.PlacedBefore:
        # The client reference was used before (a retry), or by a concurrent
        # call that has committed since: nothing was written here. Answer
        # as a repeat does.
        placed = orders.placed_before(session, placed)
        if placed.row.state != "placed":
            return placed.view
        return _fund(session, placed.row, placed.view, parts, actor=actor, now=utcnow(), tz=tz)


def _fund(session: Session, row: Order, view: orders.OrderView, parts: Any, *, actor: str,
          now: datetime, tz: ZoneInfo, placing: orders.Placed | None = None
          ) -> orders.OrderView:
    """``placing``: the order's deferred placing in this call, written here."""
    transition(row.state, "reserve")  # only a placed order takes a plan
    plan = _parts(parts, row.total_minor)
    amounts = dict(plan)
    if "rebate" in amounts:
        cap = rebate_cap(session.get(RebateRule, row.seller_id), row.total_minor)
        if amounts["rebate"] > cap:
            raise InvalidInput(f"{view.seller_code} accepts at most {cap} of rebate on this order",
                               field="parts", rebate_cap_minor=cap)
    if not AWAITED & set(amounts) and "credit" not in amounts:
        return _capture_at_once(session, row, view, plan, actor=actor, now=now, placing=placing)
    if placing is not None:
        orders.write_placed(session, placing)
    if "credit" in amounts:
        decision = credit.check_credit(session, row, amounts["credit"], now, tz)
        if decision.hold_reasons:
            return _hold(session, row, plan, decision, actor=actor, now=now)
    if not AWAITED & set(amounts):
        return _capture_at_once(session, row, view, plan, actor=actor, now=now,
                                categories=placing.categories if placing else None)
    _reserve(session, row, view, plan, now)
    orders.advance(session, row, "reserve", actor=actor, details={"plan": dict(plan)})
    session.flush()
    return orders.refreshed(view, row)


def _routes(view: orders.OrderView) -> dict[str, tuple[str, str]]:
    """Where each method's money goes when captured: (debit, credit)."""
    b, s = view.buyer_code, view.seller_code
    return {"prepaid": (prepaid_account(b, s), escrow_account(view.public_id)),
            "rebate": (rebate_account(b, s), rebates_granted_account(s)),
            "credit": (credit_account(b, s), credit_issued_account(s))}


def _open_accounts(session: Session, view: orders.OrderView, methods) -> None:
    """The order's escrow and its sources, opened on first use, in one read
    (credit's accounts were opened with the line, by the credit check)."""
    b, s, ccy, O = view.buyer_code, view.seller_code, view.currency, view.public_id
    specs = [(escrow_account(O), f"Escrow of {O}", "liability", ccy, None, 0)]
    if "prepaid" in methods:
        specs.append(prepaid_spec(b, s, ccy))
    if "rebate" in methods:
        specs += [(rebate_account(b, s), f"Rebate of {b} at {s}", "liability", ccy, b, 0),
                  (rebates_granted_account(s), f"Rebates granted by {s}", "asset", ccy, s, None)]
    ensure_all(session, specs)


_INSERT_PARTS = insert(PaymentPart.__table__)


def _capture_at_once(session: Session, row: Order, view: orders.OrderView,
                     plan: list[tuple[str, int]], *, actor: str, now: datetime,
                     placing: orders.Placed | None = None,
                     categories: dict[str, int] | None = None) -> orders.OrderView:
    """Every part taken now, in one balanced entry (the sources' bounds
    checked as they are posted): no hold is needed when nothing is awaited.

    An order placed in this call (a deferred ``placing``) is inserted first,
    already paid, with all its events in one insert; a shortfall at the
    entry rolls it back with the rest. An order that existed moves only once
    its entry stands, so a caller that rolls back just a savepoint after a
    shortfall keeps it as it was."""
    steps = [("reserve", {"plan": dict(plan)}), ("fund", {"captured": dict(plan)})]
    codes = (view.buyer_code, view.seller_code)
    if placing is not None:
        orders.advance_through(session, row, steps, actor=actor, codes=codes, placing=placing)
    _open_accounts(session, view, dict(plan))
    routes, ccy = _routes(view), row.currency
    postings = []
    for method, amount in plan:
        source, destination = routes[method]
        postings += [PostingLine(source, "debit", amount, ccy),
                     PostingLine(destination, "credit", amount, ccy)]
    entry = ledger.post_entry(session, EntryRequest(
        code="order.capture", idempotency_key=f"{row.public_id}:capture",
        new_key=placing is not None,  # the order was placed in this transaction
        metadata={"order": row.public_id, "plan": dict(plan)}, postings=postings))
    if placing is None:
        orders.advance_through(session, row, steps, actor=actor, codes=codes)
    any_rule = _insert_captured_parts(session, row, plan, entry.id, now)
    if "credit" in dict(plan):
        credit.open_debt(session, row, dict(plan)["credit"], now)
    session.flush()
    paid = orders.refreshed(view, row)
    # After the entry, as when reserved parts are captured: the buyer's
    # habits row and its balances are locked in one order everywhere.
    _record_habit(session, row, paid, placing.categories if placing else categories)
    _clear(session, row, {m: a for m, a in plan}, any_rule=any_rule)
    return paid


# On PostgreSQL the parts go in one prepared statement, which also says
# whether any clearing rule exists: what clearing the order asks first (most
# networks clear nothing yet), without a round trip of its own.
_PG_CAPTURED_PARTS = (
    "INSERT INTO channel_payment_part (order_id, method, amount_minor, state, entry_id, "
    "refunded_minor, updated_at) SELECT $1, x.method, x.amount, 'captured', $4, 0, $5 "
    "FROM unnest($2::text[], $3::bigint[]) AS x(method, amount) "
    "RETURNING (SELECT EXISTS (SELECT 1 FROM clearing_rule))")


def _insert_captured_parts(session: Session, row: Order, plan: list[tuple[str, int]],
                           entry_id: str, now: datetime) -> bool | None:
    """Insert the captured parts (Core, not the unit of work: that cost a
    tenth of an order's CPU); on PostgreSQL, whether any clearing rule
    exists (None: not asked)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        found = prepared.execute(
            connection, "cl_captured_parts", ("bigint", "text[]", "bigint[]", "text", "timestamptz"),
            _PG_CAPTURED_PARTS, (row.id, texts_array([m for m, _ in plan]),
                                 ints_array([a for _, a in plan]), entry_id, now))
        return bool(found[0][0])
    connection.execute(_INSERT_PARTS, [
        {"order_id": row.id, "method": method, "amount_minor": amount, "state": "captured",
         "pending_entry_id": None, "entry_id": entry_id, "refund_entry_id": None,
         "refunded_minor": 0, "updated_at": now} for method, amount in plan])
    return None


def _clear(session: Session, row: Order, captured: dict[str, int], *,
           any_rule: bool | None = None) -> None:
    """The cash the paid order's escrow now holds is cleared by its rule,
    method by method (rebate and credit value never are). ``any_rule``:
    whether any clearing rule exists, when the caller knows."""
    for method, amount in captured.items():
        if method not in CASH_METHODS:
            continue
        name = method if method != "gateway" else _gateway_of(session, row.public_id)
        clearings.clear_cash(session, row, amount_minor=amount, method=name,
                             cause=f"{row.public_id}:{method}", any_rule=any_rule)


def _gateway_of(session: Session, order: str) -> str:
    return session.scalar(select(Payment.gateway).where(
        Payment.reference == order, Payment.state == "succeeded").limit(1)) or "gateway"


def _reserve(session: Session, row: Order, view: orders.OrderView,
             plan: list[tuple[str, int]], now: datetime) -> None:
    """One part per method: prepaid, rebate and credit held by pending
    entries that expire with the payment window; offline awaited."""
    _open_accounts(session, view, dict(plan))
    routes, O, ccy = _routes(view), row.public_id, row.currency
    existing = {p.method: p for p in session.scalars(
        select(PaymentPart).where(PaymentPart.order_id == row.id))}
    for method, amount in plan:
        part = existing.get(method) or PaymentPart(order_id=row.id, method=method,
                                                   amount_minor=amount)
        part.state, part.updated_at = "awaiting", now
        if method in routes:
            source, destination = routes[method]
            held = ledger.post_entry(session, EntryRequest(
                code=f"order.{method}.reserve", pending=True, expires_at=now + PAYMENT_WINDOW,
                idempotency_key=f"{O}:{method}:reserve", metadata={"order": O},
                postings=[PostingLine(source, "debit", amount, ccy),
                          PostingLine(destination, "credit", amount, ccy)]))
            part.state, part.pending_entry_id = "reserved", held.id
        session.add(part)
    session.flush()


def _hold(session: Session, row: Order, plan: list[tuple[str, int]],
          decision: credit.CreditDecision, *, actor: str, now: datetime) -> orders.OrderView:
    """The policy holds the order: keep the plan (every part awaiting,
    nothing reserved) and the reasons for the seller's approval."""
    for method, amount in plan:
        session.add(PaymentPart(order_id=row.id, method=method, amount_minor=amount,
                                state="awaiting", updated_at=now))
    session.add(OrderHold(order_id=row.id, seller_id=row.seller_id,
                          reasons=list(decision.hold_reasons), plan=dict(plan), state="pending",
                          created_at=now, note=""))
    session.flush()
    return orders.apply_action(session, row.public_id, "hold", actor=actor,
                               details={"plan": dict(plan), "reasons": list(decision.hold_reasons),
                                        "credit_available_minor": decision.available_minor})


@dataclass(frozen=True)
class HoldView:
    order: str
    buyer: str
    seller: str
    total_minor: int
    reasons: tuple[str, ...]
    plan: dict[str, int]
    state: str
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    note: str


def _hold_view(hold: OrderHold, view: orders.OrderView) -> HoldView:
    return HoldView(view.public_id, view.buyer_code, view.seller_code, view.total_minor,
                    tuple(hold.reasons), dict(hold.plan), hold.state, as_utc(hold.created_at),
                    hold.decided_by, as_utc(hold.decided_at) if hold.decided_at else None,
                    hold.note)


def held_orders(session: Session, *, seller: str, state: str = "pending",
                limit: int = 100) -> list[HoldView]:
    """The orders a seller's credit policy held, oldest first."""
    s = party_row(session, seller)
    rows = session.execute(select(OrderHold, Order.public_id)
                           .join(Order, Order.id == OrderHold.order_id)
                           .where(OrderHold.seller_id == s.id, OrderHold.state == state)
                           .order_by(OrderHold.created_at, OrderHold.order_id).limit(limit)).all()
    return [_hold_view(hold, orders.get_order(session, public_id)) for hold, public_id in rows]


def _pending_hold(session: Session, order: str) -> tuple[Order, OrderHold]:
    row = orders.order_row(session, orders.get_order(session, order).public_id)
    hold = session.get(OrderHold, row.id)
    if hold is None or hold.state != "pending":
        transition(row.state, "approve")  # names the illegal move
        raise InvalidInput("this order awaits no approval", field="order")
    return row, hold


def approve_held_order(session: Session, order: str, *, actor: str, note: str = "",
                       at: datetime | None = None) -> orders.OrderView:
    """The seller approves a held order: its plan is reserved now. Over the
    limit, the approval grants the buyer a temporary increase of exactly the
    shortfall for this order (audited, lapsing with the payment window), so
    the ledger's bound still holds every other order to the limit."""
    row, hold = _pending_hold(session, order)
    note = _note(note)
    now = as_utc(at) if at is not None else utcnow()
    transition(row.state, "approve")
    plan = [(method, amount) for method, amount in hold.plan.items()]
    amounts = dict(plan)
    if "credit" in amounts:
        buyer, seller = session.get(Party, row.buyer_id), session.get(Party, row.seller_id)
        available = credit.credit_balance(session, buyer, seller, now, sync=True).available_minor
        if amounts["credit"] > available:
            credit.grant_increase(session, seller=seller.code, buyer=buyer.code,
                                  amount_minor=amounts["credit"] - available,
                                  valid_to=now + PAYMENT_WINDOW, order_id=row.id, actor=actor,
                                  reason=f"approval of held order {row.public_id}", now=now)
    _reserve(session, row, orders.get_order(session, row.public_id), plan, now)
    hold.state, hold.decided_by, hold.decided_at, hold.note = "approved", actor, now, note
    orders.apply_action(session, row.public_id, "approve", actor=actor,
                        details={"reasons": list(hold.reasons), "note": note})
    return _capture_when_funded(session, row.public_id, actor=actor)


def reject_held_order(session: Session, order: str, *, actor: str,
                      note: str = "") -> orders.OrderView:
    """The seller rejects a held order: it is cancelled; nothing was held."""
    row, hold = _pending_hold(session, order)
    note = _note(note)
    rejected = orders.apply_action(session, row.public_id, "reject", actor=actor,
                                   details={"reasons": list(hold.reasons), "note": note})
    hold.state, hold.decided_by, hold.decided_at, hold.note = "rejected", actor, utcnow(), note
    _release(session, rejected)
    return rejected


def _note(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 500:
        raise InvalidInput("note must be text of at most 500 characters", field="note")
    return value.strip()


def _capture_when_funded(session: Session, order: str, *, actor: str) -> orders.OrderView:
    """Post every reserved part once nothing is awaited any more."""
    row = orders.order_row(session, order)
    parts = list(session.scalars(select(PaymentPart).where(PaymentPart.order_id == row.id)))
    if any(p.state == "awaiting" for p in parts):
        return orders.get_order(session, order)
    captured = {}
    now = utcnow()
    for part in parts:
        if part.state == "reserved":
            entry = ledger.post_pending(session, part.pending_entry_id,
                                        idempotency_key=f"{order}:{part.method}:capture")
            part.state, part.entry_id, part.updated_at = "captured", entry.id, now
            if part.method == "credit":
                credit.open_debt(session, row, part.amount_minor, now)
        captured[part.method] = part.amount_minor
    session.flush()
    paid = orders.apply_action(session, order, "fund", actor=actor, details={"captured": captured})
    _record_habit(session, row, paid)
    _clear(session, row, captured)
    return paid


def _record_habit(session: Session, row: Order, order: orders.OrderView,
                  categories: dict[str, int] | None = None) -> None:
    """A paid order feeds its buyer's purchase habits (count, average, last
    order, top categories), in the same transaction. ``categories``: the
    order's totals per category when the caller has them (from placing)."""
    if categories is not None:
        habits.record_purchase(session, buyer=order.buyer_code, party_id=row.buyer_id,
                               placed_at=order.placed_at, total_minor=order.total_minor,
                               currency=order.currency, category_totals=categories)
        return
    by_category: dict[str, int] = {}
    for category, amount in session.execute(
            select(Category.code, OrderLine.line_total_minor)
            .join(Sku, Sku.id == OrderLine.sku_id)
            .join(Product, Product.id == Sku.product_id)
            .join(Category, Category.id == Product.category_id)
            .where(OrderLine.order_id == row.id)):
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
    amount = positive_amount(amount_minor)
    reference = _bank_reference(bank_reference, "bank_reference")
    view = orders.get_order(session, order)
    ensure(session, CUSTODY, "Custody bank account", "asset", view.currency)
    paid = collect_part(session, view.public_id, method="offline", amount_minor=amount,
                        source=CUSTODY, description=f"offline transfer {reference}",
                        metadata={"bank_reference": reference}, actor=actor)
    audit.record(session, actor=actor, action="order_transfer.confirm", subject_type="order",
                 subject=view.public_id, details={"amount_minor": amount,
                                                  "bank_reference": reference})
    return paid


def awaited_part(session: Session, order: str, method: str) -> PaymentPart | None:
    """The order's part of ``method`` still waiting for its money, if any."""
    part = session.scalars(select(PaymentPart).where(
        PaymentPart.order_id == orders.order_row(session, order).id,
        PaymentPart.method == method)).one_or_none()
    return part if part is not None and part.state == "awaiting" else None


def part_entry(session: Session, order: str, method: str) -> str | None:
    """The ledger entry that captured an order's part of ``method``."""
    return session.scalar(select(PaymentPart.entry_id).where(
        PaymentPart.order_id == orders.order_row(session, order).id, PaymentPart.method == method))


def collect_part(session: Session, order: str, *, method: str, amount_minor: int, source: str,
                 description: str, metadata: dict[str, Any], actor: str) -> orders.OrderView:
    """The money of an order's awaited part arrived in ``source`` (custody
    for a transfer, the gateway's receivable for a gateway payment): Dr
    source / Cr order:O:escrow, to the fen of the part. Once nothing else
    is awaited, the reserved parts are captured and the order is paid."""
    view = orders.get_order(session, order)
    if view.state != "awaiting_payment":
        transition(view.state, "fund")  # names the illegal move
    part = awaited_part(session, view.public_id, method)
    if part is None:
        raise InvalidInput(f"this order awaits no {method} payment", field="order")
    if amount_minor != part.amount_minor:
        raise InvalidInput(f"the plan expects {part.amount_minor} by {method}, not {amount_minor}",
                           field="amount_minor", expected_minor=part.amount_minor)
    entry = ledger.post_entry(session, EntryRequest(
        code=f"order.{method}.capture", description=description,
        idempotency_key=f"{view.public_id}:{method}:capture",
        metadata={"order": view.public_id, **metadata},
        postings=[PostingLine(source, "debit", amount_minor, view.currency),
                  PostingLine(escrow_account(view.public_id), "credit", amount_minor,
                              view.currency)]))
    part.state, part.entry_id, part.updated_at = "captured", entry.id, utcnow()
    session.flush()
    return _capture_when_funded(session, view.public_id, actor=actor)


def _release(session: Session, order: orders.OrderView) -> None:
    """Give every part back to its source (after the transition is allowed)."""
    row = orders.order_row(session, order.public_id)
    order_id = row.id
    parts = list(session.scalars(select(PaymentPart).where(PaymentPart.order_id == order_id)))
    # Cash already cleared to its recipients comes back to the escrow first.
    clearings.make_room(session, row, sum(p.amount_minor - p.refunded_minor for p in parts
                                          if p.state == "captured" and p.method in CASH_METHODS),
                        reason=f"order {order.public_id} cancelled")
    reversed_: dict[str, str] = {}  # parts captured at once share one entry: reverse it once
    for part in parts:
        key = f"{order.public_id}:{part.method}"
        if part.state == "reserved":
            try:
                ledger.void_pending(session, part.pending_entry_id, idempotency_key=f"{key}:void",
                                    reason="order cancelled")
            except (ledger.AlreadyVoided, ledger.PendingExpired):
                pass  # the ledger's expiry job released it already
            part.state = "voided"
        elif part.state == "captured" and part.method == "gateway":
            # Back through the gateway: posted when the gateway confirms.
            gateway_refunds.request_refund(session, order=order.public_id,
                                           amount_minor=part.amount_minor - part.refunded_minor,
                                           reason=f"order {order.public_id} cancelled")
            part.state = "refunded"
        elif part.state == "captured" and part.method == "offline":
            # Cash by transfer goes back to the buyer's deposit at the seller.
            prepaid = ensure_prepaid(session, order.buyer_code, order.seller_code, order.currency)
            refund = ledger.post_entry(session, EntryRequest(
                code="order.offline.refund", idempotency_key=f"{key}:refund",
                metadata={"order": order.public_id},
                postings=[PostingLine(escrow_account(order.public_id), "debit", part.amount_minor,
                                      order.currency),
                          PostingLine(prepaid, "credit", part.amount_minor, order.currency)]))
            part.state, part.refund_entry_id = "refunded", refund.id
        elif part.state == "captured":
            if part.method == "credit":
                credit.cancel_debt(session, order_id)
            if part.entry_id not in reversed_:
                reversed_[part.entry_id] = ledger.reverse_entry(
                    session, part.entry_id, idempotency_key=f"{part.entry_id}:cancel",
                    description="order cancelled: back to its source").id
            part.state, part.refund_entry_id = "refunded", reversed_[part.entry_id]
        elif part.state == "awaiting":
            part.state = "voided"
        part.updated_at = utcnow()
    hold = session.get(OrderHold, order_id)
    if hold is not None and hold.state == "pending":
        hold.state, hold.decided_at = "cancelled", utcnow()
    session.flush()


def cancel_order(session: Session, order: str, *, actor: str, reason: str = "") -> orders.OrderView:
    """Cancel before shipment, returning every part to its source. The
    transition is checked first: an illegal cancel moves no money."""
    if not isinstance(reason, str) or len(reason) > 500:
        raise InvalidInput("reason must be text of at most 500 characters", field="reason")
    row = orders.order_row(session, orders.get_order(session, order).public_id)
    if session.scalar(select(OrderReturn.id).where(
            OrderReturn.order_id == row.id,
            OrderReturn.state.in_(("requested", "refunded"))).limit(1)) is not None:
        raise InvalidInput("this order has returns: refund the rest as a return, not a cancel",
                           field="order")
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
