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

Money in suspense goes back the same way (``refund_suspense``): finance
resolves a payment exception by refunding its whole amount to the payer
through the gateway that collected it. The refund names the exception
instead of a payment and is sent with the ``out_trade_no`` the gateway's
callback named; the exception is resolved in the same transaction. When the
gateway confirms, Dr ``suspense`` / Cr ``gateway:G:receivable``; when it
refuses, the money stays in suspense and the exception is open again, for
finance to decide anew (another refund, or a deposit).

A refund of money collected for a sub-merchant (a payee-collected payment,
in the seller's own merchant at the gateway; or money in suspense the
gateway said it collected for one) is sent naming that merchant, with its
credential (``sub_merchant``): the gateway finds the trade in that
merchant's books.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import ledger
from ledger import EntryRequest, PostingLine, as_utc, new_uuid7, utcnow
from payments.gateway import RefundAccepted
from payments.models import Payment, PaymentException, PaymentRefund

from . import audit, outbox
from .books import SUSPENSE, escrow_account, receivable_account
from .errors import InvalidInput, NotFound

DEFAULT_SUSPENSE_REASON = "refund of a payment that could not be applied"


@dataclass(frozen=True)
class RefundView:
    """``payment`` is the ``out_trade_no`` the refund is sent with: our
    payment's public id, or, for a refund of money in suspense (``exception``
    set), the ``out_trade_no`` the gateway's callback named. ``total_minor``
    is what the gateway collected in that trade (gateways ask for it)."""

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
    exception: str | None = None
    total_minor: int | None = None
    notify_url: str | None = None
    sub_merchant: str | None = None      # the merchant the refunded money was collected for


def _view(session: Session, row: PaymentRefund) -> RefundView:
    if row.exception_id is not None:
        exception = session.get(PaymentException, row.exception_id)
        return RefundView(row.public_id, exception.out_trade_no, exception.gateway, None,
                          row.amount_minor, exception.currency, row.state, row.refund_id,
                          row.reason, as_utc(row.created_at), exception=exception.public_id,
                          total_minor=exception.amount_minor, notify_url=row.notify_url,
                          sub_merchant=exception.sub_merchant)
    payment = session.get(Payment, row.payment_id)
    return RefundView(row.public_id, payment.public_id, payment.gateway, payment.reference,
                      row.amount_minor, payment.currency, row.state, row.refund_id, row.reason,
                      as_utc(row.created_at), total_minor=payment.amount_minor,
                      notify_url=row.notify_url or payment.notify_url,
                      sub_merchant=payment.sub_merchant)


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


def refund_suspense(session: Session, exception: str, *, note: str, actor: str,
                    notify_urls: Mapping[str, str], reason: str = "") -> RefundView:
    """Finance gives the money of a payment exception back to its payer
    through the gateway that collected it: a refund of the exception's whole
    amount, recorded ``requested`` now and sent after commit; the exception
    is resolved with it, in this transaction; audited. ``notify_urls`` maps
    each gateway enabled here to where it calls back (a gateway missing from
    it is not enabled: nothing can be sent through it). ``reason`` goes to
    the gateway (the payer may see it); ``note`` stays here.

    Refused: an exception already resolved, one whose money is not in
    suspense (a failed refund's money stays in its order's escrow), one
    without an ``out_trade_no`` to refund by, and anything that would take
    more out of suspense than the exception put in."""
    if not isinstance(note, str) or not note.strip() or len(note) > 500:
        raise InvalidInput("say why the money goes back (1-500 characters)", field="note")
    reason = (reason or "").strip() or DEFAULT_SUSPENSE_REASON
    if len(reason) > 80:
        raise InvalidInput("the reason the gateway shows is at most 80 characters", field="reason")
    row = session.scalars(select(PaymentException).where(
        PaymentException.public_id == exception).with_for_update()).one_or_none()
    if row is None:
        raise NotFound(f"no payment exception {exception!r}", field="exception")
    if row.state != "open":
        raise InvalidInput("this exception is resolved already", field="exception")
    if row.entry_id is None:
        raise InvalidInput(f"the money of this {row.kind} exception is not in suspense; "
                           "nothing to refund from there", field="exception", kind=row.kind)
    if not row.out_trade_no:
        raise InvalidInput("the gateway named no out_trade_no to refund this money by",
                           field="exception")
    notify_url = notify_urls.get(row.gateway)
    if notify_url is None:
        raise InvalidInput(f"gateway {row.gateway} is not enabled here: its money cannot be "
                           "refunded through it", field="exception", gateway=row.gateway)
    under_way = int(session.scalar(select(func.coalesce(func.sum(PaymentRefund.amount_minor), 0))
                                   .where(PaymentRefund.exception_id == row.id,
                                          PaymentRefund.state != "failed")) or 0)
    if under_way:  # an open exception has none; if the rows ever disagree, send nothing more
        raise InvalidInput(f"{under_way} of this exception's {row.amount_minor} is being refunded "
                           "already", field="exception", refunding_minor=under_way)
    amount = row.amount_minor  # all of it, never more: the exception is resolved by it
    now = utcnow()
    refund = PaymentRefund(public_id=f"rfd_{new_uuid7().hex}", payment_id=None,
                           exception_id=row.id, notify_url=notify_url[:500],
                           amount_minor=amount, state="requested", reason=reason[:200],
                           attempts=0, created_at=now, updated_at=now)
    session.add(refund)
    row.state, row.resolved_by, row.resolved_at = "resolved", actor, now
    row.note = (f"refunded through {row.gateway} by {refund.public_id}: {note.strip()}")[:500]
    audit.record(session, actor=actor, action="payment_exception.refund",
                 subject_type="payment_exception", subject=row.public_id,
                 details={"refund": refund.public_id, "gateway": row.gateway,
                          "out_trade_no": row.out_trade_no, "amount_minor": amount,
                          "currency": row.currency, "note": note.strip()})
    session.flush()
    return _view(session, refund)


def can_settle(session: Session, row: PaymentRefund) -> bool:
    """Whether the gateway's word on this refund can be applied now: the
    money it gives back must be where it is taken from. A payment's refund
    waits for its payment to be applied (a late payment notice); money in
    suspense is there already."""
    if row.exception_id is not None:
        return True
    payment = session.get(Payment, row.payment_id)
    return payment is not None and payment.state == "succeeded"


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
    """The gateway paid the refund: the cash leaves the order's escrow (or,
    for money in suspense, suspense)."""
    if row.state == "succeeded":
        return
    if row.exception_id is not None:
        _confirm_suspense(session, row, actor=actor)
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


def _confirm_suspense(session: Session, row: PaymentRefund, *, actor: str) -> None:
    exception = session.get(PaymentException, row.exception_id)
    entry = ledger.post_entry(session, EntryRequest(
        code="suspense.gateway.refund", description=f"{exception.gateway} refund {row.public_id}",
        idempotency_key=f"{row.public_id}:refunded",
        metadata={"exception": exception.public_id, "out_trade_no": exception.out_trade_no,
                  "gateway": exception.gateway, "refund": row.public_id,
                  "refund_id": row.refund_id},
        postings=[PostingLine(SUSPENSE, "debit", row.amount_minor, exception.currency),
                  PostingLine(receivable_account(exception.gateway), "credit", row.amount_minor,
                              exception.currency)]))
    row.state, row.entry_id, row.updated_at = "succeeded", entry.id, utcnow()
    audit.record(session, actor=actor, action="payment_exception.refunded",
                 subject_type="payment_exception", subject=exception.public_id,
                 details={"refund": row.public_id, "refund_id": row.refund_id,
                          "amount_minor": row.amount_minor, "entry": entry.id})
    session.flush()


def fail(session: Session, row: PaymentRefund, why: str, callback_id: int | None = None) -> None:
    """The gateway will not pay it: the money stays in the order's escrow and
    finance decides (an exception is opened when a callback says so). A
    refund of money in suspense leaves it in suspense and opens its
    exception again."""
    if row.state in ("succeeded", "failed"):
        return
    row.state, row.updated_at = "failed", utcnow()
    if row.exception_id is not None:
        _reopen(session, row, why)
        return
    if callback_id is not None:
        payment = session.get(Payment, row.payment_id)
        session.add(PaymentException(
            public_id=f"exc_{new_uuid7().hex}", kind="refund_failed", gateway=payment.gateway,
            transaction_id=row.refund_id or row.public_id, out_trade_no=payment.public_id,
            amount_minor=row.amount_minor, currency=payment.currency, callback_id=callback_id,
            entry_id=None, state="open", detail=f"refund {row.public_id}: {why}"[:500],
            created_at=utcnow(), note=""))
    session.flush()


def _reopen(session: Session, row: PaymentRefund, why: str) -> None:
    exception = session.scalars(select(PaymentException).where(
        PaymentException.id == row.exception_id).with_for_update()).one()
    exception.state, exception.resolved_by, exception.resolved_at = "open", None, None
    exception.note = f"refund {row.public_id} failed ({why}); before: {exception.note}"[:500]
    audit.record(session, actor="gateway", action="payment_exception.reopen",
                 subject_type="payment_exception", subject=exception.public_id,
                 details={"refund": row.public_id, "why": why[:200]})
    session.flush()
