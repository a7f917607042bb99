"""ORM rows of settlement and payouts (issue 6): parties' registered bank
accounts, payouts from a wallet to one of them with every state change
recorded, and the daily settlement batch of each party.

As in ``clearing.models``, parties are named by their codes (``clearing``
imports only ``ledger``); the use cases in ``channel_api`` check the codes.
A payout copies the payee's details from the bank account it was requested
to, so a later change to the account never rewrites what was sent.
"""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, Date, DateTime, Index, Integer, LargeBinary, String,
    UniqueConstraint, text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ledger.models import Base, BigId, Json

from .payout_states import STATES

_STATE_LIST = ",".join(f"'{s}'" for s in STATES)


class PartyBankAccount(Base):
    """Where a party's payouts go. One active account per party and
    currency (a partial unique index); registering a new one retires the
    old. ``sweep_above_minor`` set: a daily job pays out whatever the wallet
    holds above it (a payout schedule)."""

    __tablename__ = "party_bank_account"
    __table_args__ = (
        CheckConstraint("status IN ('active','retired')", name="status"),
        CheckConstraint("sweep_above_minor IS NULL OR sweep_above_minor >= 0", name="sweep"),
        Index("uq_party_bank_account_active", "party", "currency", unique=True,
              postgresql_where=text("status = 'active'"), sqlite_where=text("status = 'active'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    party: Mapped[str] = mapped_column(String(64))
    holder_name: Mapped[str] = mapped_column(String(70))
    account_number: Mapped[str] = mapped_column(String(34))
    bank_code: Mapped[str] = mapped_column(String(20))
    bank_name: Mapped[str] = mapped_column(String(100))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(8))
    sweep_above_minor: Mapped[int | None] = mapped_column(BigInteger)
    registered_by: Mapped[str] = mapped_column(String(80))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Payout(Base):
    """Money leaving a party's wallet for its bank account
    (``clearing.payout_states`` has the state machine). The amount is
    reserved in the wallet (a pending ledger entry) from the request; it is
    posted to ``payouts:in_flight`` when the bank accepts the instruction,
    and settles against the custody account when the bank confirms, or
    returns to the wallet when it fails (that posting, reversed)."""

    __tablename__ = "payout"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint(f"state IN ({_STATE_LIST})", name="state"),
        CheckConstraint("source IN ('party','schedule')", name="source"),
        UniqueConstraint("party", "request_key", name="uq_payout_request_key"),
        Index("ix_payout_party", "party", "id"),
        Index("ix_payout_state", "state", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    party: Mapped[str] = mapped_column(String(64))
    # The caller's idempotency key (or the schedule's day): one payout per key.
    request_key: Mapped[str] = mapped_column(String(120))
    source: Mapped[str] = mapped_column(String(8))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    bank_account_id: Mapped[str] = mapped_column(String(40))
    payee_name: Mapped[str] = mapped_column(String(70))
    payee_account: Mapped[str] = mapped_column(String(34))
    payee_bank_code: Mapped[str] = mapped_column(String(20))
    payee_bank_name: Mapped[str] = mapped_column(String(100))
    remark: Mapped[str] = mapped_column(String(140), default="")
    state: Mapped[str] = mapped_column(String(18))
    needs_approval: Mapped[bool] = mapped_column(Boolean)
    bank: Mapped[str | None] = mapped_column(String(40))          # which adapter sent it
    bank_reference: Mapped[str | None] = mapped_column(String(64))
    file_id: Mapped[str | None] = mapped_column(String(40))       # sent in a payout file
    failure_reason: Mapped[str | None] = mapped_column(String(200))
    reserve_entry_id: Mapped[str] = mapped_column(String(40))
    # The posting of the reservation when it was sent; a failure reverses it.
    send_entry_id: Mapped[str | None] = mapped_column(String(40))
    requested_by: Mapped[str] = mapped_column(String(80))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(80))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(BigInteger, default=0)


class PayoutEvent(Base):
    """Every state change of a payout, with who made it and why; only added."""

    __tablename__ = "payout_event"
    __table_args__ = (Index("ix_payout_event_payout", "payout_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    payout_id: Mapped[int] = mapped_column(BigId)
    from_state: Mapped[str | None] = mapped_column(String(18))
    to_state: Mapped[str] = mapped_column(String(18))
    actor: Mapped[str] = mapped_column(String(80))
    note: Mapped[str] = mapped_column(String(200), default="")
    entry_id: Mapped[str | None] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PayoutFile(Base):
    """A file of payout instructions (ISO 20022 pain.001) exported for a bank
    that takes files rather than API calls; kept so it can be downloaded
    again, byte for byte. Its payouts are ``sent`` from the export on, and
    their outcomes come back in the bank's status report (pain.002)."""

    __tablename__ = "payout_file"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    count: Mapped[int] = mapped_column(Integer)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SettlementBatch(Base):
    """One party's settlement of one business day in one currency: its
    pending and wallet balances at the start and the end of the day (read
    from the ledger's running balances) and what moved them, by kind (summed
    from the day's postings). ``difference_minor`` is what the two sources
    disagree by; anything but zero is an alert (``status`` mismatch)."""

    __tablename__ = "settlement_batch"
    __table_args__ = (
        UniqueConstraint("party", "business_day", "currency", name="uq_settlement_batch_day"),
        CheckConstraint("status IN ('balanced','mismatch')", name="status"),
        Index("ix_settlement_batch_day", "business_day", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    party: Mapped[str] = mapped_column(String(64))
    business_day: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(3))
    pending_opening_minor: Mapped[int] = mapped_column(BigInteger)
    wallet_opening_minor: Mapped[int] = mapped_column(BigInteger)
    cleared_minor: Mapped[int] = mapped_column(BigInteger)
    released_minor: Mapped[int] = mapped_column(BigInteger)
    clawed_back_minor: Mapped[int] = mapped_column(BigInteger)
    paid_out_minor: Mapped[int] = mapped_column(BigInteger)
    payout_returned_minor: Mapped[int] = mapped_column(BigInteger)
    interest_minor: Mapped[int] = mapped_column(BigInteger)
    other_minor: Mapped[int] = mapped_column(BigInteger)
    pending_closing_minor: Mapped[int] = mapped_column(BigInteger)
    wallet_closing_minor: Mapped[int] = mapped_column(BigInteger)
    difference_minor: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(8))
    # Other movements by entry code, so "other" is never a black box.
    other_detail: Mapped[dict] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class InterestAllocation(Base):
    """Interest the custody account earned over a period, recorded once per
    bank reference and allocated by the rule of ``clearing.interest``: the
    platform's share, the rest to parties in proportion to their wallets at
    the period's end (``interest.allocate`` entries: Dr ``custody:bank`` /
    Cr each ``party:P:wallet`` and ``platform:revenue``)."""

    __tablename__ = "interest_allocation"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    bank_reference: Mapped[str] = mapped_column(String(64), unique=True)
    period_end: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    platform_share_bp: Mapped[int] = mapped_column(Integer)
    platform_minor: Mapped[int] = mapped_column(BigInteger)
    parties: Mapped[int] = mapped_column(Integer)
    parties_minor: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ClawbackAdvance(Base):
    """A clawback a party's wallet could not give back (it paid the money
    out), advanced by the platform on a finance decision so the buyer's
    refund can go ahead: ``clawback.advance`` Dr ``party:P:clawback_due`` /
    Cr ``party:P:wallet``. What the party owes is recovered from its wallet
    as money arrives there (``clawback.recover``, oldest advance first)."""

    __tablename__ = "clawback_advance"
    __table_args__ = (
        CheckConstraint("amount_minor > 0 AND recovered_minor >= 0 "
                        "AND recovered_minor <= amount_minor", name="amounts"),
        Index("ix_clawback_advance_open", "party", "recovered_minor", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    request_key: Mapped[str] = mapped_column(String(120), unique=True)
    party: Mapped[str] = mapped_column(String(64))
    order_ref: Mapped[str] = mapped_column(String(40))
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    recovered_minor: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(200))
    approved_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recovered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
