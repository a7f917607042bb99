"""Interest on the custody account (issue 6): finance records what the bank
credited for a period, once per bank reference, and it is allocated at once
by the rule in ``clearing.interest`` (the platform's share in basis points,
the rest in proportion to each party's wallet at the period's end). The cash
came into the custody account, so every share is cash the ledger owes:
Dr ``custody:bank`` / Cr ``party:P:wallet`` (Cr ``platform:revenue`` for the
platform's share), in entries of at most ``CHUNK`` parties."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import ledger
from clearing.interest import allocate
from clearing.settlement_models import InterestAllocation
from ledger import EntryRequest, PostingLine, as_utc, new_uuid7, utcnow

from . import audit
from .books import (CUSTODY, PLATFORM_REVENUE, bank_reference, ensure, ensure_platform_revenue,
                    positive_amount)
from .errors import InvalidInput
from .settlements import BUSINESS_TZ, day_bounds

CHUNK = 1000


@dataclass(frozen=True)
class InterestView:
    public_id: str
    bank_reference: str
    period_end: date
    currency: str
    amount_minor: int
    platform_share_bp: int
    platform_minor: int
    parties: int
    parties_minor: int
    actor: str
    created_at: datetime


def _view(row: InterestAllocation) -> InterestView:
    return InterestView(row.public_id, row.bank_reference, row.period_end, row.currency,
                        row.amount_minor, row.platform_share_bp, row.platform_minor, row.parties,
                        row.parties_minor, row.actor, as_utc(row.created_at))


def allocate_interest(session: Session, *, amount_minor: Any, period_end: date,
                      bank_reference_: Any, platform_share_bp: Any, actor: str,
                      currency: str = "CNY", now: datetime | None = None) -> InterestView:
    """Record and allocate; the same bank reference again returns the first
    allocation (and is refused for another amount)."""
    amount = positive_amount(amount_minor)
    reference = bank_reference(bank_reference_, "bank_reference")
    if not isinstance(platform_share_bp, int) or isinstance(platform_share_bp, bool) \
            or not 0 <= platform_share_bp <= 10_000:
        raise InvalidInput("platform_share_bp must be between 0 and 10000",
                           field="platform_share_bp")
    earlier = session.scalars(select(InterestAllocation).where(
        InterestAllocation.bank_reference == reference)).one_or_none()
    if earlier is not None:
        if earlier.amount_minor != amount:
            raise InvalidInput("this bank reference was allocated for another amount",
                               field="bank_reference")
        return _view(earlier)
    now = as_utc(now or utcnow())   # stored: SQLite keeps no offset, so UTC it is
    _, end = day_bounds(period_end, BUSINESS_TZ)
    if end > now:
        raise InvalidInput(f"{period_end} is not over yet", field="period_end")
    wallets = {code[len("party:"):-len(":wallet")]: balance
               for code, (ccy, balance) in ledger.balances_before(
                   session, end, code_like="party:%:wallet").items() if ccy == currency}
    platform, shares = allocate(amount, wallets, platform_share_bp)
    ensure(session, CUSTODY, "Custody account at the bank", "asset", currency)
    ensure_platform_revenue(session, currency)
    public_id = f"int_{new_uuid7().hex}"
    parties = sorted(shares)
    chunks = [parties[i:i + CHUNK] for i in range(0, len(parties), CHUNK)] or [[]]
    requests = []
    for index, chunk in enumerate(chunks):
        credits = [PostingLine(f"party:{p}:wallet", "credit", shares[p], currency) for p in chunk]
        if index == 0 and platform:
            credits.append(PostingLine(PLATFORM_REVENUE, "credit", platform, currency))
        total = sum(line.amount_minor for line in credits)
        if total:
            requests.append(EntryRequest(
                code="interest.allocate", idempotency_key=f"{public_id}:{index}",
                description=f"custody interest to {period_end} ({reference})",
                metadata={"allocation": public_id, "bank_reference": reference},
                postings=[PostingLine(CUSTODY, "debit", total, currency), *credits]))
    ledger.post_entries(session, requests, atomic=True)
    row = InterestAllocation(
        public_id=public_id, bank_reference=reference, period_end=period_end,
        currency=currency, amount_minor=amount, platform_share_bp=platform_share_bp,
        platform_minor=platform, parties=len(shares), parties_minor=sum(shares.values()),
        actor=actor, created_at=now)
    session.add(row)
    session.flush()
    audit.record(session, actor=actor, action="interest.allocated", subject_type="interest",
                 subject=public_id, details={"amount_minor": amount, "parties": len(shares),
                                             "platform_minor": platform})
    return _view(row)


def list_allocations(session: Session, *, limit: int = 100) -> list[InterestView]:
    return [_view(r) for r in session.scalars(select(InterestAllocation)
                                              .order_by(InterestAllocation.id.desc())
                                              .limit(limit))]
