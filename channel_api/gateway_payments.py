"""Paying through gateways (issue 5): payments that fund an order's gateway
part, a prepaid deposit or a credit repayment, and the application of
verified gateway callbacks, exactly once, to the ledger.

Postings (docs/accounting.md), each keyed by the payment so a retry never
moves money twice:

* order's gateway part: Dr ``gateway:G:receivable`` / Cr ``order:O:escrow``
  (then the order is paid when nothing else is awaited); when the seller has
  an account registered at G that is a merchant able to collect there
  (``sub_merchants``: a WeChat Pay ``MERCHANT_ID``, an Alipay ``userId``
  with the seller's ``app_auth_token``, a sandbox account), the payment is
  collected with the seller as payee, in the seller's own merchant at G
  (``Payment.sub_merchant``, named in every request about it), and its
  money stays at G in the seller's name: Dr ``gateway:G:payee_held`` / Cr
  ``order:O:escrow`` instead, and split instructions to G carry its
  clearing legs;
* deposit: Dr ``gateway:G:receivable`` / Cr ``prepaid:B@S``;
* credit repayment: the repayment entry of ``credit.repay_credit`` with the
  receivable as the source of the cash;
* money that cannot be applied (no such payment, another amount, a payable
  already closed, a second success for one payment, money collected for
  another merchant than the payment's payee): Dr ``gateway:G:receivable`` /
  Cr ``suspense``, and an exception is opened for finance (it keeps the
  merchant the gateway named, so a refund of it goes back through that
  merchant). Never lost, never silently applied.

The gateway itself is called by the service (outside any transaction);
these use cases only record what it answered or what its callback said.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

import ledger
from ledger import EntryRequest, PostingLine, as_utc, new_uuid7, utcnow
from payments import inbox, states
from payments.gateway import GatewayEvent, PaymentCreated
from payments.models import GatewayCallback, Payment, PaymentException

from . import audit, credit, funding, gateway_refunds, orders, outbox, split_instructions
from .books import (
    SUSPENSE,
    ensure,
    ensure_all,
    ensure_prepaid,
    ensure_receivable,
    payee_held_account,
    positive_amount,
    prepaid_account,
    prepaid_spec,
    receivable_account,
)
from .errors import InvalidInput, NotFound
from .parties import trading_pair

GATEWAYS = ("sandbox", "wechatpay", "alipay", "bank")


@dataclass(frozen=True)
class PaymentView:
    public_id: str
    gateway: str
    purpose: str
    order: str | None
    payer: str
    payee: str
    amount_minor: int
    currency: str
    state: str
    transaction_id: str | None
    refunded_minor: int
    pay_url: str | None
    expires_at: datetime
    created_at: datetime
    # The merchant the gateway collects it for (the payee's own), or None:
    # the platform's configured merchant.
    sub_merchant: str | None = None


def _view(row: Payment) -> PaymentView:
    return PaymentView(row.public_id, row.gateway, row.purpose, row.reference, row.payer,
                       row.payee, row.amount_minor, row.currency, row.state, row.transaction_id,
                       row.refunded_minor, row.pay_url, as_utc(row.expires_at),
                       as_utc(row.created_at), row.sub_merchant)


def _row(session: Session, public_id: str, *, lock: bool = False) -> Payment:
    query = select(Payment).where(Payment.public_id == public_id)
    row = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise NotFound(f"no payment {public_id!r}", field="payment")
    return row


def _gateway(value: Any) -> str:
    if value not in GATEWAYS:
        raise InvalidInput(f"gateway must be one of {', '.join(GATEWAYS)}", field="gateway")
    return value


def _new(session: Session, *, gateway: str, purpose: str, reference: str | None, payer: str,
         payee: str, amount: int, currency: str, expires_at: datetime,
         payee_account: tuple[str, str] | None = None) -> PaymentView:
    now = utcnow()
    row = Payment(public_id=f"pay_{new_uuid7().hex}", gateway=gateway, purpose=purpose,
                  reference=reference, payer=payer, payee=payee, amount_minor=amount,
                  currency=currency, state="created", refunded_minor=0,
                  expires_at=expires_at, created_at=now, updated_at=now, version=1,
                  payee_account=payee_account[0] if payee_account else None,
                  payee_account_kind=payee_account[1] if payee_account else None,
                  # Collected in the payee's own merchant: every request names it.
                  sub_merchant=payee_account[0] if payee_account else None)
    session.add(row)
    session.flush()
    return _view(row)


def start_order_payment(session: Session, order: str, *, gateway: str) -> PaymentView:
    """A payment for an order's awaited gateway part (its amount, to the
    fen; it expires with the order's payment window). Asking again while
    one is open returns it. When the seller's active account at the
    gateway is a merchant that can collect there
    (``split_instructions.collecting_account``), the payment is
    payee-collected: the account is recorded on it as its payee and its
    sub-merchant, and the service creates it at the gateway in that
    merchant's name (``sub_merchants.of_payment``; the money is held for
    splitting by the adapter's own setting, WeChat Pay's
    ``profit_sharing``, Alipay's ``royalty_freeze``). A seller without one
    (or whose account only receives splits: a ``PERSONAL_OPENID``, an
    Alipay account without the seller's authorisation) is paid through the
    platform's configured merchant, into custody."""
    gateway = _gateway(gateway)
    view = orders.get_order(session, order)
    row = orders.order_row(session, view.public_id, lock=True)
    part = funding.awaited_part(session, view.public_id, "gateway")
    if row.state != "awaiting_payment" or part is None:
        raise InvalidInput("this order awaits no gateway payment", field="order")
    for open_ in session.scalars(select(Payment).where(
            Payment.reference == view.public_id, Payment.state.in_(("created", "pending")))):
        if open_.gateway == gateway:
            return _view(open_)
    account = split_instructions.collecting_account(session, view.seller_code, gateway)
    return _new(session, gateway=gateway, purpose="order", reference=view.public_id,
                payer=view.buyer_code, payee=view.seller_code, amount=part.amount_minor,
                currency=view.currency,
                expires_at=as_utc(row.updated_at) + funding.PAYMENT_WINDOW,
                payee_account=(account.account, account.kind) if account else None)


def start_deposit_payment(session: Session, *, buyer: str, seller: str, amount_minor: int,
                          gateway: str, currency: str = "CNY",
                          purpose: str = "deposit") -> PaymentView:
    """A payment topping up ``buyer``'s deposit at ``seller`` (or, with
    ``purpose`` repayment, repaying its credit there)."""
    gateway = _gateway(gateway)
    amount = positive_amount(amount_minor)
    if purpose not in ("deposit", "repayment"):
        raise InvalidInput("purpose must be deposit or repayment", field="purpose")
    b, s = trading_pair(session, buyer, seller)
    if purpose == "repayment":
        owed = credit.credit_aging(session, buyer=b.code, seller=s.code).outstanding_minor
        if amount > owed:
            raise InvalidInput(f"{b.code} owes {s.code} {owed} on credit; {amount} is more",
                               field="amount_minor", owed_minor=owed)
    return _new(session, gateway=gateway, purpose=purpose, reference=None, payer=b.code,
                payee=s.code, amount=amount, currency=currency,
                expires_at=utcnow() + funding.PAYMENT_WINDOW)


def payment_sent(session: Session, payment: str, created: PaymentCreated,
                 notify_url: str | None = None) -> PaymentView:
    """The gateway accepted the payment: keep how to pay it and where the
    gateway calls back."""
    row = _row(session, payment, lock=True)
    if row.state == "created":
        row.state = states.transition(row.state, "send")
        row.pay_url, row.updated_at, row.version = created.pay_url, utcnow(), row.version + 1
        row.notify_url = notify_url
    session.flush()
    return _view(row)


def close_payment(session: Session, payment: str, action: str) -> PaymentView:
    """Close a payment that will not be paid (``fail`` or ``expire``); a
    payment already finished is left as it is."""
    row = _row(session, payment, lock=True)
    if row.state in ("created", "pending"):
        row.state = states.transition(row.state, action)
        row.updated_at, row.version = utcnow(), row.version + 1
        session.flush()
    return _view(row)


def get_payment(session: Session, payment: str) -> PaymentView:
    return _view(_row(session, payment))


# -- applying verified callbacks ------------------------------------------------------------------

def apply_event(session: Session, callback_id: int, event: GatewayEvent, *,
                actor: str = "gateway") -> str:
    """Apply one verified callback; returns the callback's new state
    (applied, duplicate, waiting, ignored). Call inside a transaction;
    a failure rolls everything back, the claim too, for the job to retry."""
    return apply_events(session, [(callback_id, event)], actor=actor)[0]


def apply_events(session: Session, items: Sequence[tuple[int, GatewayEvent]], *,
                 actor: str = "gateway") -> list[str]:
    """Apply verified callbacks (callback id, its event) in the caller's
    transaction, each exactly once; returns each one's new state, in order.
    A batch costs a few statements however many callbacks it holds (a
    background applier takes whatever has queued up): the callbacks' rows
    locked, their transactions claimed and their payments locked each in
    one statement, the deposits posted as one ledger write, their events
    and audit rows inserted together. What is per payable by nature (an
    order moving on, a credit repayment, money for suspense, a refund) is
    done callback by callback, in their order. A failure rolls back the
    whole batch (the caller may retry each callback alone)."""
    callbacks = inbox.lock_all(session, [callback_id for callback_id, _ in items])
    states: dict[int, str] = {}
    todo: list[tuple[GatewayCallback, GatewayEvent]] = []
    for callback_id, event in items:
        callback = callbacks[callback_id]
        if callback.state in ("applied", "duplicate", "rejected", "ignored"):
            states[callback_id] = callback.state
        elif callback_id not in states:  # the same callback twice in a batch: once
            states[callback_id] = ""
            todo.append((callback, event))
    paid = [(c, e) for c, e in todo if not e.kind.startswith("refund")]
    claimed = inbox.claim(session, paid)
    for gateway, currency in sorted({(e.gateway, e.currency) for c, e in paid
                                     if c.id in claimed and e.kind == "payment_succeeded"}):
        ensure_receivable(session, gateway, currency)
    payments = _payments_of(session, [e for c, e in paid if c.id in claimed])
    deposits = _Deposits()
    for callback, event in todo:
        if event.kind.startswith("refund"):
            inbox.record(callback, event)
            callback.attempts += 1
            states[callback.id] = _refund_event(session, callback, event, actor=actor)
            continue
        # What the callback says is recorded with its outcome: its row is
        # updated once, at the flush that ends the batch.
        if callback.id in claimed:
            row = payments.get((event.gateway, event.out_trade_no))
            if event.kind == "payment_succeeded":
                _collect(session, callback, event, row, deposits, actor=actor)
            else:
                _closed(row, event)
            callback.state, callback.applied_at = "applied", utcnow()
        else:
            callback.state = "duplicate"
        inbox.record(callback, event)
        callback.attempts += 1
        states[callback.id] = callback.state
    deposits.post(session, actor=actor)
    session.flush()
    return [states[callback_id] for callback_id, _ in items]


class _Deposits:
    """The deposits of a batch, posted together at its end: one ledger
    write, one insert of their events, one of their audit rows."""

    def __init__(self) -> None:
        self.rows: list[tuple[Payment, GatewayEvent, dict[str, Any]]] = []

    def add(self, row: Payment, event: GatewayEvent, meta: dict[str, Any]) -> None:
        self.rows.append((row, event, meta))

    def post(self, session: Session, *, actor: str) -> None:
        """The ledger write comes last, just before the caller commits: it
        locks the balances (the gateway's receivable, the buyers' deposits)
        that other batches and requests wait for."""
        if not self.rows:
            return
        ensure_all(session, sorted({prepaid_spec(row.payer, row.payee, row.currency)
                                    for row, _, _ in self.rows}))
        outbox.record_all(session, [_succeeded_event(row, meta) for row, _, meta in self.rows])
        audit.record_all(session, actor=actor, records=[_succeeded_audit(row, meta)
                                                        for row, _, meta in self.rows])
        entries = ledger.post_entries(session, [EntryRequest(
            code="deposit.gateway", description=f"{event.gateway} payment {event.transaction_id}",
            idempotency_key=f"{row.public_id}:collect", metadata=meta,
            postings=[PostingLine(receivable_account(event.gateway), "debit", row.amount_minor,
                                  row.currency),
                      PostingLine(prepaid_account(row.payer, row.payee), "credit",
                                  row.amount_minor, row.currency)])
            for row, event, meta in self.rows], atomic=True)
        for (row, _, _), result in zip(self.rows, entries):
            row.entry_id = result.entry.id


def _refund_event(session: Session, callback: GatewayCallback, event: GatewayEvent, *,
                  actor: str) -> str:
    """A refund's outcome. A notice for a refund we do not know yet, or whose
    payment is not applied yet (its notice is late), waits in the inbox and
    is applied by the retry job once they are."""
    refund = gateway_refunds.find(session, event.out_refund_no)
    if refund is None or not gateway_refunds.can_settle(session, refund):
        callback.state = "waiting"
        callback.reason = "its refund or its payment is not known here yet"
        return callback.state
    if callback.id not in inbox.claim(session, [(callback, event)]):
        callback.state = "duplicate"
        return callback.state
    refund.refund_id = refund.refund_id or event.transaction_id
    if event.kind == "refund_failed":
        gateway_refunds.fail(session, refund, "the gateway reports the refund failed",
                             callback.id)
    elif event.amount_minor != refund.amount_minor:
        gateway_refunds.fail(session, refund, f"the gateway refunded {event.amount_minor}, "
                             f"not {refund.amount_minor}", callback.id)
    else:
        gateway_refunds.confirm(session, refund, actor=actor)
    callback.state, callback.applied_at = "applied", utcnow()
    session.flush()
    return callback.state


def _payments_of(session: Session, events: list[GatewayEvent]) -> dict[tuple[str, str], Payment]:
    """The payments these callbacks speak of, locked in id order, by
    (gateway, out_trade_no); one missing is not ours."""
    numbers = sorted({event.out_trade_no for event in events if event.out_trade_no})
    if not numbers:
        return {}
    with session.no_autoflush:  # the claims' keys are flushed with the outcomes
        return {(row.gateway, row.public_id): row
                for row in session.scalars(_PAYMENTS, {"numbers": numbers})}


_PAYMENTS = (select(Payment).where(Payment.public_id.in_(bindparam("numbers", expanding=True)))
             .order_by(Payment.id).with_for_update())


def _closed(row: Payment | None, event: GatewayEvent) -> None:
    if row is not None and row.state in ("created", "pending"):
        row.state = states.transition(row.state,
                                      "fail" if event.kind == "payment_failed" else "expire")
        row.updated_at, row.version = utcnow(), row.version + 1


def _succeeded_event(row: Payment, meta: dict[str, Any]) -> outbox.NewEvent:
    return outbox.NewEvent("payment.succeeded", "payment", row.public_id, [row.payer, row.payee],
                           {**meta, "purpose": row.purpose, "order": row.reference,
                            "amount_minor": row.amount_minor, "currency": row.currency})


def _succeeded_audit(row: Payment, meta: dict[str, Any]) -> tuple[str, str, str, dict]:
    return ("payment.succeeded", "party", row.payer,
            {**meta, "purpose": row.purpose, "amount_minor": row.amount_minor})


def _collect(session: Session, callback: GatewayCallback, event: GatewayEvent,
             row: Payment | None, deposits: _Deposits, *, actor: str) -> None:
    receivable = receivable_account(event.gateway)  # opened by apply_events
    problem = _problem(session, row, event)
    if problem is not None:
        _suspense(session, callback, event, *problem)
        return
    succeeded = states.transition(row.state, "succeed")  # named error before anything moves
    meta = {"payment": row.public_id, "gateway": event.gateway,
            "transaction_id": event.transaction_id}
    # Succeeded at once (a second success for it later in the batch is
    # money paid twice); a deposit's money moves at the end of the batch.
    _succeeded(row, succeeded, event)
    if row.purpose == "deposit":
        deposits.add(row, event, meta)
        return
    # Announced before what it pays for moves on (the order's paid comes after).
    outbox.record_all(session, [_succeeded_event(row, meta)])
    if row.purpose == "order":
        source = receivable
        if row.payee_account is not None:  # held at the gateway in the seller's name
            source = payee_held_account(event.gateway)
            ensure(session, source, f"Held by {event.gateway} for payees", "asset",
                   event.currency)
            meta["payee_account"] = row.payee_account
        # Clearing, once the order is paid, looks for the succeeded payment
        # that carries its part: the payment is succeeded before this.
        funding.collect_part(session, row.reference, method="gateway",
                             amount_minor=row.amount_minor, source=source,
                             description=f"{event.gateway} payment {event.transaction_id}",
                             metadata=meta, actor=actor)
        row.entry_id = funding.part_entry(session, row.reference, "gateway")
    else:
        credit.repay_credit(session, buyer=row.payer, seller=row.payee,
                            amount_minor=row.amount_minor, bank_reference=row.public_id,
                            actor=actor, source=receivable)
    audit.record_all(session, actor=actor, records=[_succeeded_audit(row, meta)])


def _succeeded(row: Payment, state: str, event: GatewayEvent) -> None:
    row.state, row.transaction_id = state, event.transaction_id
    row.updated_at, row.version = utcnow(), row.version + 1


def _problem(session: Session, row: Payment | None,
             event: GatewayEvent) -> tuple[str, str] | None:
    """Why this money cannot be applied to its payment, or None."""
    if row is None:
        return "unknown_payment", f"no {event.gateway} payment {event.out_trade_no!r}"
    if row.sub_merchant is not None and event.sub_merchant != row.sub_merchant:
        # Collected in another merchant's name than the payee's: not the
        # payee's money to capture (a payment of the platform's own merchant
        # names no sub-merchant to check: the adapter accepted it as ours).
        return "payee_mismatch", (f"collected for {event.sub_merchant or 'no sub-merchant'} at "
                                  f"{event.gateway}; {row.public_id} is for the payee's merchant "
                                  f"{row.sub_merchant}")
    if event.amount_minor != row.amount_minor or event.currency != row.currency:
        return "amount_mismatch", (f"paid {event.amount_minor} {event.currency}; the payment "
                                   f"is {row.amount_minor} {row.currency}")
    if row.state == "succeeded":
        return "paid_twice", f"{row.public_id} was already paid by {row.transaction_id}"
    if row.state in ("failed", "expired"):
        return "payable_closed", f"{row.public_id} is {row.state}"
    if row.purpose == "order":
        order = orders.get_order(session, row.reference)
        if order.state != "awaiting_payment" or \
                funding.awaited_part(session, order.public_id, "gateway") is None:
            return "payable_closed", f"order {order.public_id} is {order.state}"
    if row.purpose == "repayment":
        owed = credit.credit_aging(session, buyer=row.payer, seller=row.payee).outstanding_minor
        if row.amount_minor > owed:
            return "payable_closed", f"{row.payer} owes {owed} on credit now"
    return None


def _suspense(session: Session, callback: GatewayCallback, event: GatewayEvent, kind: str,
              detail: str) -> None:
    receivable = receivable_account(event.gateway)
    ensure(session, SUSPENSE, "Suspense: money not yet explained", "liability", event.currency)
    entry = ledger.post_entry(session, EntryRequest(
        code="gateway.suspense", description=detail[:200],
        idempotency_key=f"suspense:{inbox.dedupe_key(event)}",
        metadata={"gateway": event.gateway, "transaction_id": event.transaction_id,
                  "out_trade_no": event.out_trade_no, "kind": kind},
        postings=[PostingLine(receivable, "debit", event.amount_minor, event.currency),
                  PostingLine(SUSPENSE, "credit", event.amount_minor, event.currency)]))
    session.add(PaymentException(
        public_id=f"exc_{new_uuid7().hex}", kind=kind, gateway=event.gateway,
        transaction_id=event.transaction_id, out_trade_no=event.out_trade_no,
        amount_minor=event.amount_minor, currency=event.currency, callback_id=callback.id,
        entry_id=entry.id, state="open", detail=detail[:500], created_at=utcnow(), note="",
        sub_merchant=event.sub_merchant))
    session.flush()


@dataclass(frozen=True)
class ExceptionView:
    public_id: str
    kind: str
    gateway: str
    transaction_id: str
    out_trade_no: str | None
    amount_minor: int
    currency: str
    state: str
    detail: str
    entry_id: str | None
    created_at: datetime


def _exception_view(e: PaymentException) -> ExceptionView:
    return ExceptionView(e.public_id, e.kind, e.gateway, e.transaction_id, e.out_trade_no,
                         e.amount_minor, e.currency, e.state, e.detail, e.entry_id,
                         as_utc(e.created_at))


def payment_exceptions(session: Session, *, state: str = "open",
                       limit: int = 100) -> list[ExceptionView]:
    """Money in suspense waiting for finance, oldest first."""
    return [_exception_view(e) for e in session.scalars(select(PaymentException).where(
        PaymentException.state == state).order_by(PaymentException.id).limit(limit))]


def resolve_to_deposit(session: Session, exception: str, *, buyer: str, seller: str,
                       note: str, actor: str) -> ExceptionView:
    """Finance found whose money it is: it becomes ``buyer``'s deposit at
    ``seller`` (Dr ``suspense`` / Cr ``prepaid:B@S``), once. A refund of it
    through the gateway is the other way out (``gateway_refunds.refund_suspense``)."""
    if not isinstance(note, str) or not note.strip() or len(note) > 500:
        raise InvalidInput("say how the money was identified (1-500 characters)", field="note")
    row = session.scalars(select(PaymentException).where(
        PaymentException.public_id == exception).with_for_update()).one_or_none()
    if row is None:
        raise NotFound(f"no payment exception {exception!r}", field="exception")
    if row.state != "open":
        raise InvalidInput("this exception is resolved already", field="exception")
    b, s = trading_pair(session, buyer, seller)
    prepaid = ensure_prepaid(session, b.code, s.code, row.currency)
    entry = ledger.post_entry(session, EntryRequest(
        code="suspense.resolve", description=note.strip()[:200],
        idempotency_key=f"{row.public_id}:resolve",
        metadata={"exception": row.public_id, "buyer": b.code, "seller": s.code},
        postings=[PostingLine(SUSPENSE, "debit", row.amount_minor, row.currency),
                  PostingLine(prepaid, "credit", row.amount_minor, row.currency)]))
    row.state, row.resolved_by, row.resolved_at = "resolved", actor, utcnow()
    row.note = f"to the deposit of {b.code} at {s.code} ({entry.id}): {note.strip()}"[:500]
    audit.record(session, actor=actor, action="payment_exception.resolve", subject_type="party",
                 subject=b.code, details={"exception": row.public_id, "seller": s.code,
                                          "amount_minor": row.amount_minor, "entry": entry.id})
    session.flush()
    return _exception_view(row)
