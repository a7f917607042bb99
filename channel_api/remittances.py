"""Remittances (issue 4): an offline bank transfer the buyer says it made,
for an order's offline part, a prepaid deposit or a credit repayment, with
the payer's account, the bank reference and optionally a proof file. The
seller's finance confirms it against the bank statement, and the money is
then posted by the one use case that owns it (``funding.confirm_deposit``,
``funding.confirm_order_transfer``, ``credit.repay_credit``), or rejects it
with a reason. Nothing is posted while it is only filed.

A bank reference is live in one remittance per seller at a time (a partial
unique index); after a rejection it may be filed again, corrected.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ledger import as_utc, new_uuid7, utcnow

from . import audit, credit, funding, orders
from .books import bank_reference, positive_amount
from .errors import InvalidInput, NotFound, RemittanceExists
from .models import REMITTANCE_PURPOSES, Order, Party, PaymentPart, Remittance
from .order_states import IllegalTransition
from .parties import party_row, trading_pair

PROOF_TYPES = ("image/png", "image/jpeg", "application/pdf")
PROOF_MAX_BYTES = 5 * 1024 * 1024
_ACCOUNT = re.compile(r"[0-9A-Za-z -]{4,64}")


@dataclass(frozen=True)
class RemittanceView:
    public_id: str
    buyer: str
    seller: str
    purpose: str
    order: str | None
    amount_minor: int
    currency: str
    payer_account: str
    payer_name: str
    bank_reference: str
    has_proof: bool
    proof_content_type: str | None
    proof_sha256: str | None
    state: str
    filed_by: str
    filed_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    note: str


def _view(session: Session, row: Remittance) -> RemittanceView:
    order = session.get(Order, row.order_id).public_id if row.order_id else None
    return RemittanceView(
        row.public_id, session.get(Party, row.buyer_id).code, session.get(Party, row.seller_id).code,
        row.purpose, order, row.amount_minor, row.currency, row.payer_account, row.payer_name,
        row.bank_reference, row.proof_sha256 is not None, row.proof_content_type,
        row.proof_sha256, row.state, row.filed_by, as_utc(row.filed_at), row.decided_by,
        as_utc(row.decided_at) if row.decided_at else None, row.note)


def _row(session: Session, public_id: str, *, lock: bool = False) -> Remittance:
    query = select(Remittance).where(Remittance.public_id == public_id)
    row = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise NotFound(f"no remittance {public_id!r}", field="remittance")
    return row


def _proof(proof: Any, content_type: Any) -> tuple[bytes | None, str | None, str | None]:
    if proof is None:
        if content_type is not None:
            raise InvalidInput("a proof content type without a proof", field="proof_content_type")
        return None, None, None
    if not isinstance(proof, bytes) or not proof:
        raise InvalidInput("the proof must be a non-empty file", field="proof")
    if len(proof) > PROOF_MAX_BYTES:
        raise InvalidInput(f"the proof is larger than {PROOF_MAX_BYTES // (1024 * 1024)} MB",
                           field="proof", max_bytes=PROOF_MAX_BYTES)
    if content_type not in PROOF_TYPES:
        raise InvalidInput(f"proof_content_type must be one of {', '.join(PROOF_TYPES)}",
                           field="proof_content_type")
    return proof, content_type, hashlib.sha256(proof).hexdigest()


def file_remittance(session: Session, *, buyer: str, seller: str, purpose: str,
                    amount_minor: int, payer_account: str, bank_reference_: str,
                    payer_name: str = "", order: str | None = None, proof: bytes | None = None,
                    proof_content_type: str | None = None, currency: str = "CNY",
                    actor: str) -> RemittanceView:
    """The buyer files a transfer it made. For an order, the order must be
    the buyer's at that seller and await an offline transfer of exactly
    that amount. Filing the same reference again while it is live is
    refused (``remittance_exists``)."""
    if purpose not in REMITTANCE_PURPOSES:
        raise InvalidInput(f"purpose must be one of {', '.join(REMITTANCE_PURPOSES)}",
                           field="purpose")
    amount = positive_amount(amount_minor)
    reference = bank_reference(bank_reference_, "bank_reference")
    if not isinstance(payer_account, str) or not _ACCOUNT.fullmatch(payer_account):
        raise InvalidInput("payer_account must be 4-64 letters, digits, spaces or dashes",
                           field="payer_account")
    if not isinstance(payer_name, str) or len(payer_name) > 200:
        raise InvalidInput("payer_name must be at most 200 characters", field="payer_name")
    content, content_type, digest = _proof(proof, proof_content_type)
    b, s = trading_pair(session, buyer, seller)
    order_id = None
    if purpose == "order":
        order_id = _awaited_order(session, order, b, s, amount)
    elif order is not None:
        raise InvalidInput("order is for remittances that pay an order", field="order")
    row = Remittance(public_id=f"rmt_{new_uuid7().hex}", buyer_id=b.id, seller_id=s.id,
                     purpose=purpose, order_id=order_id, amount_minor=amount, currency=currency,
                     payer_account=payer_account.strip(), payer_name=payer_name.strip(),
                     bank_reference=reference, proof=content, proof_content_type=content_type,
                     proof_sha256=digest, state="filed", filed_by=actor, filed_at=utcnow(),
                     note="")
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise RemittanceExists(f"bank reference {reference} is already filed at {s.code}",
                               field="bank_reference") from None
    return _view(session, row)


def _awaited_order(session: Session, order: Any, b: Party, s: Party, amount: int) -> int:
    if not isinstance(order, str):
        raise InvalidInput("say which order the transfer pays", field="order")
    view = orders.get_order(session, order)
    if (view.buyer_code, view.seller_code) != (b.code, s.code):
        raise InvalidInput("that order is not yours at this seller", field="order")
    row = orders.order_row(session, view.public_id)
    part = session.scalars(select(PaymentPart).where(
        PaymentPart.order_id == row.id, PaymentPart.method == "offline")).one_or_none()
    if part is None or part.state != "awaiting" or view.state != "awaiting_payment":
        raise InvalidInput("this order awaits no offline transfer", field="order")
    if amount != part.amount_minor:
        raise InvalidInput(f"the plan expects {part.amount_minor} by transfer, not {amount}",
                           field="amount_minor", expected_minor=part.amount_minor)
    return row.id


def _filed(session: Session, public_id: str) -> Remittance:
    row = _row(session, public_id, lock=True)
    if row.state != "filed":
        raise IllegalTransition(f"this remittance is {row.state}; only a filed one is decided",
                                state=row.state, action="decide", allowed=[])
    return row


def confirm_remittance(session: Session, remittance: str, *, actor: str,
                       note: str = "") -> RemittanceView:
    """Finance saw the money on the statement: post it through the use case
    that owns the purpose, keyed by the bank reference (so the money is
    credited once however the confirmation is retried)."""
    row = _filed(session, remittance)
    b, s = session.get(Party, row.buyer_id).code, session.get(Party, row.seller_id).code
    if row.purpose == "deposit":
        funding.confirm_deposit(session, buyer=b, seller=s, amount_minor=row.amount_minor,
                                bank_reference=row.bank_reference, currency=row.currency,
                                actor=actor)
    elif row.purpose == "order":
        funding.confirm_order_transfer(session, session.get(Order, row.order_id).public_id,
                                       amount_minor=row.amount_minor,
                                       bank_reference=row.bank_reference, actor=actor)
    else:
        credit.repay_credit(session, buyer=b, seller=s, amount_minor=row.amount_minor,
                            bank_reference=row.bank_reference, actor=actor)
    return _decide(session, row, "confirmed", actor, note)


def reject_remittance(session: Session, remittance: str, *, actor: str,
                      note: str) -> RemittanceView:
    """Finance did not find the money (or not as filed): say why."""
    if not isinstance(note, str) or not note.strip():
        raise InvalidInput("say why the remittance is rejected", field="note")
    return _decide(session, _filed(session, remittance), "rejected", actor, note)


def _decide(session: Session, row: Remittance, state: str, actor: str,
            note: str) -> RemittanceView:
    if not isinstance(note, str) or len(note) > 500:
        raise InvalidInput("note must be text of at most 500 characters", field="note")
    row.state, row.decided_by, row.decided_at, row.note = state, actor, utcnow(), note.strip()
    action = {"confirmed": "remittance.confirm", "rejected": "remittance.reject"}[state]
    audit.record(session, actor=actor, action=action,
                 subject_type="party", subject=session.get(Party, row.buyer_id).code,
                 details={"remittance": row.public_id, "purpose": row.purpose,
                          "amount_minor": row.amount_minor,
                          "bank_reference": row.bank_reference, "note": row.note})
    session.flush()
    return _view(session, row)


def get_remittance(session: Session, remittance: str) -> RemittanceView:
    return _view(session, _row(session, remittance))


def remittance_proof(session: Session, remittance: str) -> tuple[bytes, str]:
    row = _row(session, remittance)
    if row.proof is None:
        raise NotFound("this remittance has no proof", field="remittance")
    return row.proof, row.proof_content_type


def list_remittances(session: Session, *, buyer: str | None = None, seller: str | None = None,
                     state: str | None = None, after: str | None = None,
                     limit: int = 50) -> tuple[list[RemittanceView], str | None]:
    """A buyer's or a seller's remittances, oldest first, paged by id."""
    query = select(Remittance)
    if buyer is not None:
        query = query.where(Remittance.buyer_id == party_row(session, buyer).id)
    if seller is not None:
        query = query.where(Remittance.seller_id == party_row(session, seller).id)
    if state is not None:
        query = query.where(Remittance.state == state)
    if after is not None:
        query = query.where(Remittance.id > _row(session, after).id)
    rows = list(session.scalars(query.order_by(Remittance.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return [_view(session, r) for r in rows], rows[-1].public_id if more and rows else None
