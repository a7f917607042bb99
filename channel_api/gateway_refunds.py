"""Refunds through gateways (issue 5): the part of a return or a cancel that
was paid through a gateway goes back by the gateway's refund.

1. ``request_refund`` (inside the return's or the cancel's transaction)
   records a refund ``requested`` against the order's succeeded gateway
   payment; more than the payment has left to refund is refused. No money
   moves yet: the cash stays in the order's escrow.
2. The service sends it through the adapter after commit (and a job sends
   whatever is still ``requested``); ``refund_sent`` records the answer.
3. The gateway confirms (its answer, or its callback): ``confirm`` posts
   Dr ``order:O:escrow`` / Cr ``gateway:G:receivable`` (the receivable
   shrinks: the gateway pays the payer back from what it holds for us),
   once, keyed by the refund. A failed refund leaves the money in escrow
   and opens a payment exception for finance.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import ledger
from ledger import EntryRequest, PostingLine, as_utc, new_uuid7, utcnow
from payments.gateway import RefundAccepted
from payments.models import Payment, PaymentException, PaymentRefund

from . import outbox
from .books import escrow_account, receivable_account
from .errors import InvalidInput, NotFound


@dataclass(frozen=True)
class RefundView:
    public_id: str
    payment: str
    gateway: str
    order: str | None
    amount_minor: int
    currency: str
    state: str
    refund_id: str | None
    reason: str
    created_at: datetime


def _view(session: Session, row: PaymentRefund) -> RefundView:
    payment = session.get(Payment, row.payment_id)
    return RefundView(row.public_id, payment.public_id, payment.gateway, payment.reference,
                      row.amount_minor, payment.currency, row.state, row.refund_id, row.reason,
                      as_utc(row.created_at))


def refundable(session: Session, payment: Payment) -> int:
    """What a payment has left to refund: paid, less refunds not failed."""
    taken = session.scalar(select(func.coalesce(func.sum(PaymentRefund.amount_minor), 0)).where(
        PaymentRefund.payment_id == payment.id, PaymentRefund.state != "failed"))
    return payment.amount_minor - int(taken or 0)


def request_refund(session: Session, *, order: str, amount_minor: int,
                   reason: str) -> RefundView:
    """Refund ``amount_minor`` of an order's gateway payment (recorded now,
    sent after commit). More than is left to refund is refused."""
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool) or amount_minor <= 0:
        raise InvalidInput("amount_minor must be a positive whole number of minor units",
                           field="amount_minor")
    payment = session.scalars(select(Payment).where(
        Payment.reference == order, Payment.purpose == "order", Payment.state == "succeeded")
        .with_for_update()).first()
    if payment is None:
        raise NotFound(f"order {order} has no gateway payment to refund", field="order")
    left = refundable(session, payment)
    if amount_minor > left:
        raise InvalidInput(f"{payment.public_id} has {left} left to refund, not {amount_minor}",
                           field="amount_minor", refundable_minor=left)
    now = utcnow()
    row = PaymentRefund(public_id=f"rfd_{new_uuid7().hex}", payment_id=payment.id,
                        amount_minor=amount_minor, state="requested", reason=reason[:200],
                        attempts=0, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return _view(session, row)


def to_send(session: Session, limit: int = 100) -> list[RefundView]:
    """Refunds decided but not yet accepted by their gateway, oldest first."""
    return [_view(session, row) for row in session.scalars(
        select(PaymentRefund).where(PaymentRefund.state == "requested",
                                    PaymentRefund.attempts < 50)
        .order_by(PaymentRefund.id).limit(limit))]


def _row(session: Session, public_id: str) -> PaymentRefund:
    row = session.scalars(select(PaymentRefund).where(PaymentRefund.public_id == public_id)
                          .with_for_update()).one_or_none()
    if row is None:
        raise NotFound(f"no refund {public_id!r}", field="refund")
    return row


def refund_sent(session: Session, refund: str, accepted: RefundAccepted | None, *,
                actor: str = "gateway") -> RefundView:
    """Record the gateway's answer to the refund (None: it did not answer;
    the job sends it again, the gateway dedupes by ``out_refund_no``)."""
    row = _row(session, refund)
    row.attempts += 1
    row.updated_at = utcnow()
    if accepted is not None and row.state == "requested":
        row.refund_id = accepted.refund_id
        if accepted.state == "succeeded":
            confirm(session, row, actor=actor)
        elif accepted.state == "failed":
            fail(session, row, "the gateway refused the refund")
        else:
            row.state = "processing"
    session.flush()
    return _view(session, row)


def find(session: Session, out_refund_no: str | None) -> PaymentRefund | None:
    if not out_refund_no:
        return None
    return session.scalars(select(PaymentRefund).where(
        PaymentRefund.public_id == out_refund_no).with_for_update()).one_or_none()


def confirm(session: Session, row: PaymentRefund, *, actor: str = "gateway") -> None:
    """The gateway paid the refund: the cash leaves the order's escrow."""
    if row.state == "succeeded":
        return
    payment = session.get(Payment, row.payment_id)
    entry = ledger.post_entry(session, EntryRequest(
        code="order.gateway.refund", description=f"{payment.gateway} refund {row.public_id}",
        idempotency_key=f"{row.public_id}:refunded",
        metadata={"order": payment.reference, "payment": payment.public_id,
                  "refund": row.public_id, "refund_id": row.refund_id},
        postings=[PostingLine(escrow_account(payment.reference), "debit", row.amount_minor,
                              payment.currency),
                  PostingLine(receivable_account(payment.gateway), "credit", row.amount_minor,
                              payment.currency)]))
    row.state, row.entry_id, row.updated_at = "succeeded", entry.id, utcnow()
    payment.refunded_minor += row.amount_minor
    outbox.record(session, type="refund.succeeded", subject_type="refund", subject=row.public_id,
                  parties=[payment.payer, payment.payee],
                  payload={"order": payment.reference, "payment": payment.public_id,
                           "refund": row.public_id, "amount_minor": row.amount_minor,
                           "currency": payment.currency, "gateway": payment.gateway})
    session.flush()


def fail(session: Session, row: PaymentRefund, why: str, callback_id: int | None = None) -> None:
    """The gateway will not pay it: the money stays in the order's escrow and
    finance decides (an exception is opened when a callback says so)."""
    if row.state in ("succeeded", "failed"):
        return
    row.state, row.updated_at = "failed", utcnow()
    if callback_id is not None:
        payment = session.get(Payment, row.payment_id)
        session.add(PaymentException(
            public_id=f"exc_{new_uuid7().hex}", kind="refund_failed", gateway=payment.gateway,
            transaction_id=row.refund_id or row.public_id, out_trade_no=payment.public_id,
            amount_minor=row.amount_minor, currency=payment.currency, callback_id=callback_id,
            entry_id=None, state="open", detail=f"refund {row.public_id}: {why}"[:500],
            created_at=utcnow(), note=""))
    session.flush()
