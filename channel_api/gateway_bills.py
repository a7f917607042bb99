"""A gateway's daily bill (issue 5): what it collected and refunded for us
that day, and what it kept as fees, settled into the custody account.

Posting (docs/accounting.md), one entry per gateway and day:
Dr ``custody:bank`` (net) + Dr ``gateway:G:fees`` (fees) / Cr
``gateway:G:receivable`` (payments less refunds). Each line is matched
against what this service applied: a payment or refund on the bill we do
not know, or of another amount, and a payment we applied that the bill
does not show, are reported for finance, never silently adjusted.

Payee-collected payments (``Payment.payee_account``: collected in the
seller's name, held at the gateway for splitting) are matched like any
line but never posted to custody, since their money never comes to the custody
account. Their fee is the payee's own cost under its contract with the
gateway, charged against its remainder there: it is recorded on the payment
(``fee_minor``, which the split cap is checked with) and reported, not
posted as ours. A refund of such a payment, posted by the refund use case
against ``gateway:G:receivable``, in fact came out of the payee's held
money: the bill moves it, Dr ``gateway:G:receivable`` / Cr
``gateway:G:payee_held``, in the bill's entry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Sequence
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

import ledger
from ledger import EntryRequest, PostingLine
from payments.gateway import BillLine
from payments.models import Payment, PaymentRefund

from . import audit
from .books import (
    CUSTODY,
    ensure,
    ensure_receivable,
    fees_account,
    payee_held_account,
    receivable_account,
)
from .errors import InvalidInput

BUSINESS_TZ = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class Discrepancy:
    kind: str            # unknown_transaction, amount_differs, missing_from_bill
    transaction_id: str
    bill_minor: int | None
    ours_minor: int | None


@dataclass(frozen=True)
class BillReport:
    gateway: str
    day: date
    payments_minor: int
    refunds_minor: int
    fees_minor: int
    net_minor: int
    lines: int
    matched: int
    entry_id: str | None
    discrepancies: tuple[Discrepancy, ...] = field(default_factory=tuple)
    # Payee-collected lines (matched, not posted to custody): payments less
    # refunds, and the fees the gateway charged the payees.
    payee_collected_minor: int = 0
    payee_fees_minor: int = 0


def post_bill(session: Session, *, gateway: str, day: date, lines: Sequence[BillLine],
              currency: str = "CNY", actor: str, tz: ZoneInfo = BUSINESS_TZ) -> BillReport:
    """Post a parsed daily bill once (the same gateway and day again is
    refused if it differs, replayed if the same) and report what does not
    match."""
    if not isinstance(day, date) or isinstance(day, datetime):
        raise InvalidInput("day must be a date", field="day")
    problems = _match(session, gateway, day, lines, tz)
    held = _payee_collected(session, gateway, lines)
    ours = [line for line in lines if line.transaction_id not in held]
    theirs = [line for line in lines if line.transaction_id in held]
    payments = sum(line.amount_minor for line in ours if line.kind == "payment")
    refunds = sum(line.amount_minor for line in ours if line.kind == "refund")
    fees = sum(line.fee_minor for line in ours)
    gross, net = payments - refunds, payments - refunds - fees
    held_refunds = sum(line.amount_minor for line in theirs if line.kind == "refund")
    entry_id = None
    if lines:
        receivable, fee_account = receivable_account(gateway), fees_account(gateway)
        ensure(session, CUSTODY, "Custody bank account", "asset", currency)
        ensure_receivable(session, gateway, currency)
        ensure(session, fee_account, f"Fees kept by {gateway}", "expense", currency)
        postings = []
        if net:
            postings.append(PostingLine(CUSTODY, "debit" if net > 0 else "credit", abs(net),
                                        currency))
        if fees:
            postings.append(PostingLine(fee_account, "debit" if fees > 0 else "credit",
                                        abs(fees), currency))
        to_receivable = gross - held_refunds   # what the receivable is credited, net
        if to_receivable:
            postings.append(PostingLine(receivable, "credit" if to_receivable > 0 else "debit",
                                        abs(to_receivable), currency))
        if held_refunds:
            ensure(session, payee_held_account(gateway), f"Held by {gateway} for payees",
                   "asset", currency)
            postings.append(PostingLine(payee_held_account(gateway), "credit", held_refunds,
                                        currency))
        if postings:
            entry_id = ledger.post_entry(session, EntryRequest(
                code="gateway.bill", description=f"{gateway} bill of {day.isoformat()}",
                idempotency_key=f"bill:{gateway}:{day.isoformat()}",
                metadata={"gateway": gateway, "day": day.isoformat(), "lines": len(lines)},
                postings=postings)).id
    held_payments = sum(line.amount_minor for line in theirs if line.kind == "payment")
    held_fees = sum(line.fee_minor for line in theirs)
    report = BillReport(gateway, day, payments, refunds, fees, net, len(lines),
                        len(lines) - sum(1 for p in problems if p.kind != "missing_from_bill"),
                        entry_id, tuple(problems), held_payments - held_refunds, held_fees)
    audit.record(session, actor=actor, action="gateway_bill.post", subject_type="gateway",
                 subject=gateway, details={
                     "day": day.isoformat(), "payments_minor": payments,
                     "refunds_minor": refunds, "fees_minor": fees, "net_minor": net,
                     "payee_collected_minor": held_payments - held_refunds,
                     "payee_fees_minor": held_fees,
                     "entry": entry_id, "discrepancies": [p.__dict__ for p in problems]})
    return report


def _payee_collected(session: Session, gateway: str, lines: Sequence[BillLine]) -> set[str]:
    """The lines (by transaction id) of payee-collected payments and their
    refunds; each such payment's fee is recorded on it on the way."""
    paid = {line.transaction_id: line for line in lines if line.kind == "payment"}
    refund_keys = {key: line.transaction_id for line in lines if line.kind == "refund"
                   for key in (line.transaction_id, line.out_refund_no) if key}
    held: set[str] = set()
    if paid:
        for p in session.scalars(select(Payment).where(
                Payment.gateway == gateway, Payment.transaction_id.in_(list(paid)),
                Payment.payee_account.is_not(None))):
            held.add(p.transaction_id)
            fee = paid[p.transaction_id].fee_minor
            if p.fee_minor is None and 0 <= fee <= p.amount_minor:
                p.fee_minor = fee
    if refund_keys:
        for refund_id, public_id in session.execute(
                select(PaymentRefund.refund_id, PaymentRefund.public_id)
                .join(Payment, Payment.id == PaymentRefund.payment_id)
                .where(Payment.gateway == gateway, Payment.payee_account.is_not(None),
                       or_(PaymentRefund.refund_id.in_(list(refund_keys)),
                           PaymentRefund.public_id.in_(list(refund_keys))))):
            for key in (refund_id, public_id):
                if key in refund_keys:
                    held.add(refund_keys[key])
    session.flush()
    return held


def _match(session: Session, gateway: str, day: date, lines: Sequence[BillLine],
           tz: ZoneInfo) -> list[Discrepancy]:
    problems: list[Discrepancy] = []
    paid_ids = [line.transaction_id for line in lines if line.kind == "payment"]
    ours = {p.transaction_id: p for p in session.scalars(select(Payment).where(
        Payment.gateway == gateway, Payment.transaction_id.in_(paid_ids)))} if paid_ids else {}
    refund_keys = [key for line in lines if line.kind == "refund"
                   for key in (line.transaction_id, line.out_refund_no) if key]
    refunds = {}
    if refund_keys:
        for r in session.scalars(select(PaymentRefund).where(or_(
                PaymentRefund.refund_id.in_(refund_keys),
                PaymentRefund.public_id.in_(refund_keys)))):
            refunds[r.refund_id] = refunds[r.public_id] = r
    for line in lines:
        if line.kind == "payment":
            mine = ours.get(line.transaction_id)
            amount = mine.amount_minor if mine is not None and mine.state == "succeeded" else None
        else:
            mine = refunds.get(line.transaction_id) or refunds.get(line.out_refund_no)
            amount = mine.amount_minor if mine is not None and mine.state == "succeeded" else None
        if amount is None:
            problems.append(Discrepancy("unknown_transaction", line.transaction_id,
                                        line.amount_minor, None))
        elif amount != line.amount_minor:
            problems.append(Discrepancy("amount_differs", line.transaction_id,
                                        line.amount_minor, amount))
    # In UTC: SQLite keeps a datetime's clock time and drops its offset.
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(timezone.utc)
    on_bill = set(paid_ids)
    for p in session.scalars(select(Payment).where(
            Payment.gateway == gateway, Payment.state == "succeeded",
            Payment.updated_at >= start, Payment.updated_at < start + timedelta(days=1))):
        if p.transaction_id not in on_bill:
            problems.append(Discrepancy("missing_from_bill", p.transaction_id or p.public_id,
                                        None, p.amount_minor))
    return problems
