"""ORM rows of returns after payment and of remittances (offline bank
transfers a buyer files, with proof, for finance to confirm)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ledger.models import Base, BigId, Json

RETURN_STATES = ("requested", "refunded", "rejected", "withdrawn")


class OrderReturn(Base):
    """A buyer's request to return some quantity of an order's lines after
    payment. The seller approves it (the refund is posted at once, back to
    each funding source) or rejects it; the buyer may withdraw it."""

    __tablename__ = "channel_return"
    __table_args__ = (
        CheckConstraint("state IN ('requested','refunded','rejected','withdrawn')",
                        name="state"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        UniqueConstraint("order_id", "client_reference"),
        Index("ix_channel_return_order", "order_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_order.id"))
    state: Mapped[str] = mapped_column(String(10))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(500))
    client_reference: Mapped[str | None] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(80))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    note: Mapped[str] = mapped_column(String(500), default="")
    # method -> amount given back to it; the ledger entry that did it.
    allocation: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    entry_id: Mapped[str | None] = mapped_column(String(40))


class ReturnLine(Base):
    __tablename__ = "channel_return_line"
    __table_args__ = (
        CheckConstraint("quantity >= 1", name="quantity_positive"),
        CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
    )

    return_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_return.id"),
                                           primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer)
    amount_minor: Mapped[int] = mapped_column(BigInteger)


REMITTANCE_PURPOSES = ("order", "deposit", "repayment")
REMITTANCE_STATES = ("filed", "confirmed", "rejected")


class Remittance(Base):
    """An offline bank transfer the buyer says it made, with the payer's
    account, the bank reference and optionally a proof file (a receipt
    scan). Finance confirms it (the money is then posted by the deposit,
    order-transfer or repayment use case) or rejects it with a reason. A
    bank reference is live in one remittance per seller at a time."""

    __tablename__ = "channel_remittance"
    __table_args__ = (
        CheckConstraint("purpose IN ('order','deposit','repayment')", name="purpose"),
        CheckConstraint("state IN ('filed','confirmed','rejected')", name="state"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("(purpose = 'order') = (order_id IS NOT NULL)", name="order_when_order"),
        Index("uq_channel_remittance_reference", "seller_id", "bank_reference", unique=True,
              postgresql_where=text("state <> 'rejected'"),
              sqlite_where=text("state <> 'rejected'")),
        Index("ix_channel_remittance_seller", "seller_id", "state", "id"),
        Index("ix_channel_remittance_buyer", "buyer_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    buyer_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"))
    seller_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"))
    purpose: Mapped[str] = mapped_column(String(10))
    order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("channel_order.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    payer_account: Mapped[str] = mapped_column(String(64))
    payer_name: Mapped[str] = mapped_column(String(200), default="")
    bank_reference: Mapped[str] = mapped_column(String(64))
    proof: Mapped[bytes | None] = mapped_column(LargeBinary)
    proof_content_type: Mapped[str | None] = mapped_column(String(100))
    proof_sha256: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(10))
    filed_by: Mapped[str] = mapped_column(String(80))
    filed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(80))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    note: Mapped[str] = mapped_column(String(500), default="")
