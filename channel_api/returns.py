"""Returns after payment (issue 4): the buyer asks to return some quantity
of an order's lines; the seller approves (the refund is posted at once) or
rejects; the buyer may withdraw while it waits. Returns do not move the
order back: a paid, shipped or delivered order may have several, partial or
full, until it is completed (the return window after delivery, a job).

The refund goes back to each funding source in proportion
(``refunds.allocate``), in one ledger entry (docs/accounting.md):

* prepaid and offline transfer: Dr ``order:O:escrow`` / Cr ``prepaid:B@S``
  (cash back to the buyer's deposit at the seller);
* rebate restored: Dr ``party:S:rebates_granted`` / Cr ``rebate:B@S``;
* credit: what is still owed is forgiven, Dr ``party:S:credit_issued`` /
  Cr ``credit:B@S``; what was already repaid in cash goes back as cash,
  Dr ``order:O:escrow`` / Cr ``prepaid:B@S``.

Once clearing (issue 6) has moved an order's cash out of its escrow, the
escrow's zero bound refuses the refund until the legs are clawed back.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import ledger
from ledger import EntryRequest, PostingLine, as_utc, new_uuid7, utcnow

from . import audit, clearings, credit, gateway_refunds, orders, outbox, refunds
from .books import (
    credit_account,
    credit_issued_account,
    ensure_prepaid,
    escrow_account,
    rebate_account,
    rebates_granted_account,
)
from .errors import InvalidInput, NotFound
from .models import (
    CreditDebt,
    Order,
    OrderEvent,
    OrderLine,
    OrderReturn,
    PaymentPart,
    ReturnLine,
)
from .order_states import IllegalTransition

RETURNABLE_STATES = ("paid", "shipped", "delivered")
RETURN_WINDOW = timedelta(days=7)  # after delivery; then the order is completed


@dataclass(frozen=True)
class ReturnLineView:
    line_no: int
    sku: str | None
    quantity: int
    amount_minor: int


@dataclass(frozen=True)
class ReturnView:
    public_id: str
    order: str
    buyer: str
    seller: str
    state: str
    amount_minor: int
    reason: str
    client_reference: str | None
    requested_by: str
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    note: str
    allocation: dict[str, int]
    entry_id: str | None
    lines: tuple[ReturnLineView, ...]


def _view(session: Session, row: OrderReturn) -> ReturnView:
    return _views(session, [row])[0]


def _views(session: Session, rows: list[OrderReturn]) -> list[ReturnView]:
    """Views of several returns: each order read once, all lines in one query."""
    views = {}
    for order_id in {row.order_id for row in rows}:
        views[order_id] = orders.get_order(session, session.get(Order, order_id).public_id)
    lines: dict[int, list[ReturnLine]] = {}
    for line in session.scalars(select(ReturnLine).where(
            ReturnLine.return_id.in_([row.id for row in rows]))
            .order_by(ReturnLine.return_id, ReturnLine.line_no)):
        lines.setdefault(line.return_id, []).append(line)
    return [_view_of(row, views[row.order_id], lines.get(row.id, [])) for row in rows]


def _view_of(row: OrderReturn, order: orders.OrderView,
             return_lines: list[ReturnLine]) -> ReturnView:
    skus = {line.line_no: line.sku for line in order.lines}
    lines = tuple(ReturnLineView(line.line_no, skus.get(line.line_no), line.quantity,
                                 line.amount_minor) for line in return_lines)
    return ReturnView(row.public_id, order.public_id, order.buyer_code, order.seller_code,
                      row.state, row.amount_minor, row.reason, row.client_reference,
                      row.requested_by, as_utc(row.created_at), row.decided_by,
                      as_utc(row.decided_at) if row.decided_at else None, row.note,
                      dict(row.allocation or {}), row.entry_id, lines)


def _row(session: Session, public_id: str, *, lock: bool = False) -> OrderReturn:
    query = select(OrderReturn).where(OrderReturn.public_id == public_id)
    row = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise NotFound(f"no return {public_id!r}", field="return")
    return row


def _text(value: Any, field: str, *, required: bool = False) -> str:
    if not isinstance(value, str) or len(value) > 500 or (required and not value.strip()):
        raise InvalidInput(f"{field} must be text of {'1' if required else '0'}-500 characters",
                           field=field)
    return value.strip()


def _returned(session: Session, order_id: int) -> dict[int, tuple[int, int]]:
    """line_no -> (quantity, amount) in returns requested or refunded."""
    rows = session.execute(
        select(ReturnLine.line_no, func.sum(ReturnLine.quantity), func.sum(ReturnLine.amount_minor))
        .join(OrderReturn, OrderReturn.id == ReturnLine.return_id)
        .where(OrderReturn.order_id == order_id,
               OrderReturn.state.in_(("requested", "refunded")))
        .group_by(ReturnLine.line_no)).all()
    return {line_no: (int(q), int(a)) for line_no, q, a in rows}


def request_return(session: Session, order: str, *, lines: Any, reason: str, actor: str,
                   client_reference: str | None = None) -> ReturnView:
    """The buyer asks to return ``lines`` ([{line_no, quantity}]) of a paid,
    shipped or delivered order. What each is worth is computed here, never
    taken from the client. Idempotent by ``client_reference``."""
    reason = _text(reason, "reason", required=True)
    row = orders.order_row(session, orders.get_order(session, order).public_id, lock=True)
    if client_reference is not None:
        if not isinstance(client_reference, str) or not 1 <= len(client_reference) <= 64:
            raise InvalidInput("client_reference must be 1-64 characters",
                               field="client_reference")
        same = session.scalars(select(OrderReturn).where(
            OrderReturn.order_id == row.id,
            OrderReturn.client_reference == client_reference)).one_or_none()
        if same is not None:
            return _view(session, same)
    if row.state not in RETURNABLE_STATES:
        raise IllegalTransition(
            f"an order that is {row.state.replace('_', ' ')} cannot be returned",
            state=row.state, action="return", allowed=list(RETURNABLE_STATES))
    if not isinstance(lines, list) or not lines:
        raise InvalidInput("a return has at least one line", field="lines")
    ordered = {line.line_no: line for line in session.scalars(
        select(OrderLine).where(OrderLine.order_id == row.id))}
    before = _returned(session, row.id)
    wanted: dict[int, int] = {}
    for index, item in enumerate(lines):
        field = f"lines[{index}]"
        if not isinstance(item, dict) or set(item) != {"line_no", "quantity"}:
            raise InvalidInput("a line is {line_no, quantity}", field=field)
        line_no, quantity = item["line_no"], item["quantity"]
        if line_no not in ordered or line_no in wanted:
            raise InvalidInput("no such line on this order, or named twice",
                               field=f"{field}.line_no")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            raise InvalidInput("quantity must be a whole number of at least 1",
                               field=f"{field}.quantity")
        left = ordered[line_no].quantity - before.get(line_no, (0, 0))[0]
        if quantity > left:
            raise InvalidInput(f"only {left} of line {line_no} can still be returned",
                               field=f"{field}.quantity", returnable=left)
        wanted[line_no] = quantity
    amounts = {}
    for line_no, quantity in wanted.items():
        line = ordered[line_no]
        q_before, a_before = before.get(line_no, (0, 0))
        amounts[line_no] = refunds.line_refund(line.line_total_minor, line.quantity, q_before,
                                               a_before, quantity)
    everything = all(before.get(n, (0, 0))[0] + wanted.get(n, 0) == line.quantity
                     for n, line in ordered.items())
    refunded_before = sum(r.amount_minor for r in session.scalars(select(OrderReturn).where(
        OrderReturn.order_id == row.id, OrderReturn.state.in_(("requested", "refunded")))))
    amount = refunds.order_share(sum(amounts.values()), row.subtotal_minor, row.total_minor,
                                 refunded_before, everything)
    if amount <= 0:
        raise InvalidInput("these lines are worth nothing to refund", field="lines")
    now = utcnow()
    ret = OrderReturn(public_id=f"ret_{new_uuid7().hex}", order_id=row.id, state="requested",
                      amount_minor=amount, reason=reason, client_reference=client_reference,
                      requested_by=actor, created_at=now, note="", allocation={})
    session.add(ret)
    session.flush()
    for line_no, quantity in wanted.items():
        session.add(ReturnLine(return_id=ret.id, line_no=line_no, quantity=quantity,
                               amount_minor=amounts[line_no]))
    session.flush()
    return _view(session, ret)


def _requested(session: Session, public_id: str) -> OrderReturn:
    row = _row(session, public_id, lock=True)
    if row.state != "requested":
        raise IllegalTransition(f"this return is {row.state}; only a requested one can change",
                                state=row.state, action="decide", allowed=[])
    return row


def approve_return(session: Session, return_id: str, *, actor: str,
                   note: str = "") -> ReturnView:
    """The seller approves: the refund is shared among the plan's parts in
    proportion to what each can still give back, and posted at once."""
    note = _text(note, "note")
    row = _requested(session, return_id)
    order = session.get(Order, row.order_id)
    orders.order_row(session, order.public_id, lock=True)  # one refund of an order at a time
    parts = {p.method: p for p in session.scalars(select(PaymentPart).where(
        PaymentPart.order_id == order.id, PaymentPart.state == "captured"))}
    room = {method: p.amount_minor - p.refunded_minor for method, p in parts.items()}
    if row.amount_minor > sum(room.values()):
        raise InvalidInput("the order has less left to refund than this return",
                           field="return", refundable_minor=sum(room.values()))
    shares = {m: a for m, a in refunds.allocate(row.amount_minor, room).items() if a}
    # The cash this return takes from the escrow; what was cleared comes back first.
    clearings.make_room(session, order, _cash_out(session, order, shares),
                        reason=f"return {row.public_id}")
    postings = _refund_postings(session, order, shares)
    entry = ledger.post_entry(session, EntryRequest(
        code="order.return.refund", description=f"return {row.public_id}",
        idempotency_key=f"{row.public_id}:refund",
        metadata={"order": order.public_id, "return": row.public_id, "allocation": shares},
        postings=postings)) if postings else None
    now = utcnow()
    for method, amount in shares.items():
        part = parts[method]
        part.refunded_minor += amount
        part.updated_at = now
        if part.refunded_minor == part.amount_minor:
            part.state = "refunded"
    row.state, row.decided_by, row.decided_at, row.note = "refunded", actor, now, note
    row.allocation, row.entry_id = shares, entry.id if entry else None
    view = orders.get_order(session, order.public_id)
    outbox.record(session, type="refund.posted", subject_type="return", subject=row.public_id,
                  parties=[view.buyer_code, view.seller_code],
                  payload={"order": order.public_id, "return": row.public_id,
                           "amount_minor": row.amount_minor, "allocation": shares,
                           "currency": order.currency})
    audit.record(session, actor=actor, action="return.approve", subject_type="order",
                 subject=order.public_id, details={"return": row.public_id,
                                                   "amount_minor": row.amount_minor,
                                                   "allocation": shares,
                                                   "entry": entry.id if entry else None})
    session.flush()
    return _view(session, row)


def _cash_out(session: Session, order: Order, shares: dict[str, int]) -> int:
    """How much of a refund leaves the escrow: cash parts, and the credit
    share beyond what is still owed (it was repaid in cash)."""
    cash = sum(shares.get(m, 0) for m in ("prepaid", "offline", "gateway"))
    if shares.get("credit"):
        debt = session.scalars(select(CreditDebt).where(CreditDebt.order_id == order.id)).one()
        owed = debt.amount_minor - debt.repaid_minor - debt.refunded_minor
        cash += max(0, shares["credit"] - owed)
    return cash


def _refund_postings(session: Session, order: Order, shares: dict[str, int]) -> list[PostingLine]:
    view = orders.get_order(session, order.public_id)
    b, s, ccy = view.buyer_code, view.seller_code, view.currency
    escrow = escrow_account(order.public_id)
    out: list[PostingLine] = []
    # Cash by deposit or transfer goes back to the deposit at the seller; a
    # gateway's share goes back through the gateway (posted when it confirms).
    cash = shares.get("prepaid", 0) + shares.get("offline", 0)
    if shares.get("gateway"):
        gateway_refunds.request_refund(session, order=order.public_id,
                                       amount_minor=shares["gateway"],
                                       reason=f"return of order {order.public_id}")
    if shares.get("rebate"):
        out += [PostingLine(rebates_granted_account(s), "debit", shares["rebate"], ccy),
                PostingLine(rebate_account(b, s), "credit", shares["rebate"], ccy)]
    if shares.get("credit"):
        restored, repaid_cash = credit.reduce_debt(session, order.id, shares["credit"])
        cash += repaid_cash
        if restored:
            out += [PostingLine(credit_issued_account(s), "debit", restored, ccy),
                    PostingLine(credit_account(b, s), "credit", restored, ccy)]
    if cash:
        prepaid = ensure_prepaid(session, b, s, ccy)
        out += [PostingLine(escrow, "debit", cash, ccy), PostingLine(prepaid, "credit", cash, ccy)]
    return out


def reject_return(session: Session, return_id: str, *, actor: str, note: str) -> ReturnView:
    """The seller refuses, saying why; nothing moves."""
    note = _text(note, "note", required=True)
    row = _requested(session, return_id)
    row.state, row.decided_by, row.decided_at, row.note = "rejected", actor, utcnow(), note
    audit.record(session, actor=actor, action="return.reject", subject_type="order",
                 subject=session.get(Order, row.order_id).public_id,
                 details={"return": row.public_id, "note": note})
    session.flush()
    return _view(session, row)


def withdraw_return(session: Session, return_id: str, *, actor: str) -> ReturnView:
    """The buyer takes its request back before the seller decides."""
    row = _requested(session, return_id)
    row.state, row.decided_by, row.decided_at = "withdrawn", actor, utcnow()
    session.flush()
    return _view(session, row)


def get_return(session: Session, return_id: str) -> ReturnView:
    return _view(session, _row(session, return_id))


def list_returns(session: Session, *, order: str | None = None, seller: str | None = None,
                 state: str | None = None, limit: int = 100) -> list[ReturnView]:
    """An order's returns, or a seller's (for its approvals), oldest first."""
    query = select(OrderReturn).join(Order, Order.id == OrderReturn.order_id)
    if order is not None:
        query = query.where(Order.public_id == orders.get_order(session, order).public_id)
    if seller is not None:
        from .parties import party_row
        query = query.where(Order.seller_id == party_row(session, seller).id)
    if state is not None:
        query = query.where(OrderReturn.state == state)
    return _views(session, list(session.scalars(query.order_by(OrderReturn.id).limit(limit))))


def complete_orders(session: Session, *, now: datetime | None = None,
                    window: timedelta | None = None, limit: int = 500) -> int:
    """The job: delivered orders whose return window has passed, with no
    return waiting for a decision, are completed. Returns how many."""
    cutoff = (as_utc(now) if now is not None else utcnow()) - (window or RETURN_WINDOW)
    waiting = select(OrderReturn.order_id).where(OrderReturn.state == "requested")
    delivered = select(OrderEvent.order_id).where(OrderEvent.to_state == "delivered",
                                                  OrderEvent.at <= cutoff)
    due = list(session.scalars(select(Order.public_id).where(
        Order.state == "delivered", Order.id.in_(delivered), Order.id.not_in(waiting))
        .order_by(Order.id).limit(limit)))
    for public_id in due:
        orders.apply_action(session, public_id, "complete", actor="scheduler")
    return len(due)
