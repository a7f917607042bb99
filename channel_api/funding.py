"""Funding orders (issue 4, second slice): prepaid deposits confirmed from
offline bank transfers, an order paid from the buyer's prepaid deposit at
its seller, and cancelling that returns the money to where it came from.

Every money effect is a ledger entry, per ``docs/accounting.md``:

* deposit confirmed: Dr ``custody:bank`` / Cr ``prepaid:B@S``;
* paying: a pending entry Dr ``prepaid:B@S`` / Cr ``order:O:escrow``
  reserves the amount at once, and is posted when the plan is fully funded
  (a prepaid-only plan is, at once);
* cancelling: a reserved part is voided, a captured one reversed.

Each ledger call has an idempotency key derived from the order (or the bank
reference), so a retried use case never moves money twice. Rebate, credit,
offline payment of an order and gateways are the next parts of the plan.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import ledger
from ledger import EntryRequest, PostingLine, utcnow

from . import audit, orders
from .errors import InvalidInput
from .models import Order, PaymentPart
from .order_states import transition
from .parties import is_buyer_of, party_row

CUSTODY = "custody:bank"
_REFERENCE = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")


def prepaid_account(buyer: str, seller: str) -> str:
    return f"prepaid:{buyer}@{seller}"


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


@dataclass(frozen=True)
class PrepaidBalance:
    buyer: str
    seller: str
    currency: str
    posted_minor: int
    reserved_minor: int
    available_minor: int


@dataclass(frozen=True)
class Deposit:
    buyer: str
    seller: str
    amount_minor: int
    currency: str
    bank_reference: str
    entry_id: str
    balance: PrepaidBalance


def _amount(value: Any, field: str = "amount_minor") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 10**15:
        raise InvalidInput(f"{field} must be a positive whole number of minor units", field=field)
    return value


def prepaid_balance(session: Session, *, buyer: str, seller: str,
                    currency: str = "CNY") -> PrepaidBalance:
    """The buyer's deposit at the seller: posted, reserved by unpaid orders,
    and available to spend (zero before the first deposit)."""
    b, s = party_row(session, buyer), party_row(session, seller)
    try:
        account = ledger.get_account(session, prepaid_account(b.code, s.code))
    except ledger.AccountNotFound:
        return PrepaidBalance(b.code, s.code, currency, 0, 0, 0)
    return PrepaidBalance(b.code, s.code, account.currency, account.posted_minor,
                          account.pending_debits_minor, account.available_minor)


def confirm_deposit(session: Session, *, buyer: str, seller: str, amount_minor: int,
                    bank_reference: str, currency: str = "CNY", actor: str) -> Deposit:
    """Finance confirms an offline bank transfer into ``buyer``'s prepaid
    deposit at ``seller``. A bank reference is credited once: confirming it
    again returns the same deposit; with another amount it is refused
    (``idempotency_conflict``)."""
    amount = _amount(amount_minor)
    if not isinstance(bank_reference, str) or not _REFERENCE.fullmatch(bank_reference):
        raise InvalidInput("bank_reference must be 1-64 letters, digits or _ . : / -",
                           field="bank_reference")
    b, s = party_row(session, buyer), party_row(session, seller)
    if not is_buyer_of(session, s.code, b.code):
        raise InvalidInput(f"{b.code} does not buy from {s.code}: a deposit is spendable only "
                           "at a seller it buys from", field="seller")
    prepaid = prepaid_account(b.code, s.code)
    _ensure(session, CUSTODY, "Custody bank account", "asset", currency)
    _ensure(session, prepaid, f"Prepaid deposit of {b.code} at {s.code}", "liability", currency,
            owner=b.code, min_balance=0)
    entry = ledger.post_entry(session, EntryRequest(
        code="deposit.offline", description=f"offline transfer {bank_reference}",
        idempotency_key=f"deposit:{s.code}:{bank_reference}",
        metadata={"buyer": b.code, "seller": s.code, "bank_reference": bank_reference},
        postings=[PostingLine(CUSTODY, "debit", amount, currency),
                  PostingLine(prepaid, "credit", amount, currency)]))
    audit.record(session, actor=actor, action="deposit.confirm", subject_type="party",
                 subject=b.code, details={"seller": s.code, "amount_minor": amount,
                                          "bank_reference": bank_reference, "entry": entry.id})
    return Deposit(b.code, s.code, amount, currency, bank_reference, entry.id,
                   prepaid_balance(session, buyer=b.code, seller=s.code, currency=currency))


def pay_with_prepaid(session: Session, order: str, *, actor: str) -> orders.OrderView:
    """Pay a placed order in full from the buyer's prepaid deposit at the
    seller: reserve (pending entry), then, the plan being fully funded,
    capture; the order goes placed → awaiting payment → paid. Not enough
    deposit: ``insufficient_funds``, nothing written."""
    view = orders.get_order(session, order)
    transition(view.state, "reserve")  # an order already paying or paid is refused here
    prepaid = prepaid_account(view.buyer_code, view.seller_code)
    escrow = escrow_account(view.public_id)
    _ensure(session, prepaid, f"Prepaid deposit of {view.buyer_code} at {view.seller_code}",
            "liability", view.currency, owner=view.buyer_code, min_balance=0)
    _ensure(session, escrow, f"Escrow of {view.public_id}", "liability", view.currency,
            min_balance=0)
    lines = [PostingLine(prepaid, "debit", view.total_minor, view.currency),
             PostingLine(escrow, "credit", view.total_minor, view.currency)]
    reserved = ledger.post_entry(session, EntryRequest(
        code="order.prepaid.reserve", pending=True, postings=lines,
        idempotency_key=f"{view.public_id}:prepaid:reserve", metadata={"order": view.public_id}))
    orders.apply_action(session, order, "reserve", actor=actor,
                        details={"prepaid_minor": view.total_minor})
    captured = ledger.post_pending(session, reserved.id,
                                   idempotency_key=f"{view.public_id}:prepaid:capture")
    order_id = session.scalar(select(Order.id).where(Order.public_id == view.public_id))
    session.add(PaymentPart(order_id=order_id, method="prepaid", amount_minor=view.total_minor,
                            state="captured", pending_entry_id=reserved.id, entry_id=captured.id,
                            updated_at=utcnow()))
    return orders.apply_action(session, order, "fund", actor=actor,
                               details={"captured": {"prepaid": view.total_minor}})


def cancel_order(session: Session, order: str, *, actor: str, reason: str = "") -> orders.OrderView:
    """Cancel before shipment, returning every funding part to its source:
    a reserved part is voided, a captured one reversed (prepaid back to the
    deposit). The transition is checked first: an illegal cancel moves no money."""
    cancelled = orders.cancel_order(session, order, actor=actor, reason=reason)
    order_id = session.scalar(select(Order.id).where(Order.public_id == cancelled.public_id))
    for part in session.scalars(select(PaymentPart).where(PaymentPart.order_id == order_id)):
        key = f"{cancelled.public_id}:{part.method}"
        if part.state == "reserved":
            ledger.void_pending(session, part.pending_entry_id, idempotency_key=f"{key}:void",
                                reason="order cancelled")
            part.state = "voided"
        elif part.state == "captured":
            refund = ledger.reverse_entry(session, part.entry_id, idempotency_key=f"{key}:refund",
                                          description="order cancelled: back to its source")
            part.state, part.refund_entry_id = "refunded", refund.id
        part.updated_at = utcnow()
    session.flush()
    return cancelled
