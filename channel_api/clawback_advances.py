"""Clawbacks a wallet cannot give back (issue 6: "what cannot be clawed back
stops for approval with a clear reason").

A refund after release claws the order's legs back from the recipients'
wallets (``clearings.claw_back``). When a recipient has paid the money out,
the refund is refused with ``clawback_blocked``, naming each party short
and by how much. Finance then decides: approving an **advance** puts the
difference into the party's wallet from the platform's own result, as a
debt the party owes back:

    clawback.advance   Dr party:P:clawback_due / Cr party:P:wallet

after which the refund is retried and claws back as usual. The debt is
recovered from the wallet as money arrives there, oldest advance first, by
a job and before every payout the party asks for (so a payout never takes
money the party owes back):

    clawback.recover   Dr party:P:wallet / Cr party:P:clawback_due

``party:P:clawback_due`` counts against the platform's result in the cash
invariant (``cash.ADVANCES``): the platform stands behind the advance until
it is recovered.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import ledger
from clearing.models import ClearingShare
from clearing.settlement_models import ClawbackAdvance
from ledger import EntryRequest, PostingLine, as_utc, new_uuid7, utcnow

from . import audit, outbox, pages
from .books import ensure, positive_amount, wallet_account
from .errors import InvalidInput, NotFound
from .orders import order_row



class AdvanceNotFound(NotFound):
    code = "clawback_advance_not_found"


def due_account(party: str) -> str:
    return f"party:{party}:clawback_due"


@dataclass(frozen=True)
class AdvanceView:
    public_id: str
    party: str
    order: str
    currency: str
    amount_minor: int
    recovered_minor: int
    outstanding_minor: int
    reason: str
    approved_by: str
    created_at: datetime
    recovered_at: datetime | None


def _view(row: ClawbackAdvance) -> AdvanceView:
    return AdvanceView(row.public_id, row.party, row.order_ref, row.currency, row.amount_minor,
                       row.recovered_minor, row.amount_minor - row.recovered_minor, row.reason,
                       row.approved_by, as_utc(row.created_at),
                       as_utc(row.recovered_at) if row.recovered_at else None)


def _text(value: Any, field: str, longest: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > longest:
        raise InvalidInput(f"{field} must be 1-{longest} characters", field=field)
    return value.strip()


def advance(session: Session, *, order: str, party: str, amount_minor: Any, reason: Any,
            request_key: Any, actor: str) -> AdvanceView:
    """Advance ``amount_minor`` into ``party``'s wallet for a refund of
    ``order`` its wallet cannot give back. At most what was released to the
    party for that order, over all its advances; the same ``request_key``
    again returns the first advance (and is refused for other content)."""
    amount = positive_amount(amount_minor)
    why = _text(reason, "reason", 200)
    key = _text(request_key, "request_key", 120)
    earlier = session.scalars(select(ClawbackAdvance).where(
        ClawbackAdvance.request_key == key)).one_or_none()
    if earlier is not None:
        if (earlier.order_ref, earlier.party, earlier.amount_minor) != (order, party, amount):
            raise InvalidInput("this request key was used for another advance",
                               field="request_key", advance=earlier.public_id)
        return _view(earlier)
    row = order_row(session, order, lock=True)     # one decision at a time per order
    released = session.scalar(select(func.coalesce(func.sum(ClearingShare.amount_minor), 0))
                              .where(ClearingShare.order_ref == row.public_id,
                                     ClearingShare.recipient == party,
                                     ClearingShare.state == "released"))
    if not released:
        raise InvalidInput(f"nothing of order {row.public_id} was released to {party!r}",
                           field="party")
    advanced = session.scalar(select(func.coalesce(func.sum(ClawbackAdvance.amount_minor), 0))
                              .where(ClawbackAdvance.order_ref == row.public_id,
                                     ClawbackAdvance.party == party))
    if advanced + amount > released:
        raise InvalidInput(f"{party} was released {released} of this order and advanced "
                           f"{advanced} already: at most {released - advanced} more",
                           field="amount_minor")
    ccy, public_id, now = row.currency, f"cba_{new_uuid7().hex}", utcnow()
    ensure(session, due_account(party), f"{party} owes back (clawback advances)", "asset", ccy,
           owner=party, min_balance=0)
    ledger.post_entry(session, EntryRequest(
        code="clawback.advance", idempotency_key=f"{public_id}:advance",
        description=f"advance for a clawback of {row.public_id}: {why}"[:200],
        metadata={"advance": public_id, "order": row.public_id, "party": party},
        postings=[PostingLine(due_account(party), "debit", amount, ccy),
                  PostingLine(wallet_account(party), "credit", amount, ccy)]))
    advance_row = ClawbackAdvance(public_id=public_id, request_key=key, party=party,
                                  order_ref=row.public_id, currency=ccy, amount_minor=amount,
                                  recovered_minor=0, reason=why, approved_by=actor,
                                  created_at=now)
    session.add(advance_row)
    session.flush()
    audit.record(session, actor=actor, action="clawback.advanced", subject_type="clawback_advance",
                 subject=public_id, details={"order": row.public_id, "party": party,
                                             "amount_minor": amount, "reason": why})
    outbox.record(session, type="clawback.advanced", subject_type="clawback_advance",
                  subject=public_id, parties=[party],
                  payload={"order": row.public_id, "amount_minor": amount, "currency": ccy,
                           "reason": why})
    return _view(advance_row)


def recover(session: Session, *, party: str | None = None, limit: int = 500,
            actor: str = "system:recover-advances") -> int:
    """Take what parties owe back out of their wallets, as far as each
    wallet's available balance goes, oldest advance first. Returns the
    amount recovered; all of it in one ledger call."""
    query = (select(ClawbackAdvance)
             .where(ClawbackAdvance.recovered_minor < ClawbackAdvance.amount_minor)
             .order_by(ClawbackAdvance.id).limit(limit).with_for_update())
    if party is not None:
        query = query.where(ClawbackAdvance.party == party)
    open_ = list(session.scalars(query))
    by_party: dict[str, list[ClawbackAdvance]] = defaultdict(list)
    for row in open_:
        by_party[row.party].append(row)
    requests, taken, now = [], [], utcnow()
    for who, rows in by_party.items():
        try:
            left = ledger.get_account(session, wallet_account(who)).available_minor
        except ledger.AccountNotFound:
            continue
        for row in rows:
            take = min(left, row.amount_minor - row.recovered_minor)
            if take <= 0:
                break
            left -= take
            requests.append(EntryRequest(
                code="clawback.recover",
                idempotency_key=f"{row.public_id}:recover:{row.recovered_minor}",
                description=f"recovered towards advance {row.public_id} ({row.order_ref})",
                metadata={"advance": row.public_id, "order": row.order_ref, "party": who},
                postings=[PostingLine(wallet_account(who), "debit", take, row.currency),
                          PostingLine(due_account(who), "credit", take, row.currency)]))
            taken.append((row, take))
    if not requests:
        return 0
    ledger.post_entries(session, requests, atomic=True)
    for row, take in taken:
        row.recovered_minor += take
        if row.recovered_minor == row.amount_minor:
            row.recovered_at = now
        audit.record(session, actor=actor, action="clawback.recovered",
                     subject_type="clawback_advance", subject=row.public_id,
                     details={"amount_minor": take, "outstanding_minor":
                              row.amount_minor - row.recovered_minor})
    session.flush()
    return sum(take for _, take in taken)


def get_advance(session: Session, public_id: str) -> AdvanceView:
    row = session.scalars(select(ClawbackAdvance).where(
        ClawbackAdvance.public_id == public_id)).one_or_none()
    if row is None:
        raise AdvanceNotFound(f"no clawback advance {public_id!r}", advance=public_id)
    return _view(row)


def list_advances(session: Session, *, party: str | None = None, outstanding: bool = False,
                  after: str | None = None, limit: int = 100
                  ) -> tuple[list[AdvanceView], str | None]:
    """Newest first; ``after`` is the cursor (the last advance id seen)."""
    query = select(ClawbackAdvance)
    if party is not None:
        query = query.where(ClawbackAdvance.party == party)
    if outstanding:
        query = query.where(ClawbackAdvance.recovered_minor < ClawbackAdvance.amount_minor)
    rows, cursor = pages.page(session, query, ClawbackAdvance, after=after, limit=limit,
                              noun="an advance")
    return [_view(r) for r in rows], cursor
