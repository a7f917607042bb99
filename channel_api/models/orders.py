"""ORM rows of orders: the order (one supply relationship, its state, its
totals), its lines with the price frozen from the strategy that set it, the
record of every transition, and links between an upstream order and the
downstream orders it serves (F2B2b sell-through)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ledger.models import Base, BigId, Json

from ..order_states import STATES

_STATE_CHECK = "state IN (" + ",".join(f"'{s}'" for s in STATES) + ")"


class Order(Base):
    __tablename__ = "channel_order"
    __table_args__ = (
        CheckConstraint(_STATE_CHECK, name="state"),
        CheckConstraint("total_minor >= 0 AND subtotal_minor >= 0 AND discount_minor >= 0",
                        name="amounts_not_negative"),
        CheckConstraint("total_minor = subtotal_minor - discount_minor", name="total"),
        Index("ix_channel_order_buyer", "buyer_id", "id"),
        Index("ix_channel_order_seller", "seller_id", "id"),
        UniqueConstraint("buyer_id", "client_reference"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    buyer_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"))
    seller_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"))
    relationship_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_supply.id"))
    state: Mapped[str] = mapped_column(String(20))
    currency: Mapped[str] = mapped_column(String(3))
    subtotal_minor: Mapped[int] = mapped_column(BigInteger)
    # Promotions (a later issue) allocate their discount to lines; this is the sum.
    discount_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    # The buyer's own order number, unique per buyer when given.
    client_reference: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(String(500), default="")
    placed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, default=1)


class OrderLine(Base):
    __tablename__ = "channel_order_line"
    __table_args__ = (
        CheckConstraint("quantity >= 1", name="quantity_positive"),
        CheckConstraint("line_total_minor = unit_price_minor * quantity - discount_minor",
                        name="line_total"),
    )

    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_order.id"), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku_id: Mapped[int] = mapped_column(BigId, ForeignKey("catalog_sku.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    # Frozen at placing: a strategy changing afterwards never re-prices the order.
    unit_price_minor: Mapped[int] = mapped_column(BigInteger)
    list_price_minor: Mapped[int] = mapped_column(BigInteger)
    price_source: Mapped[str] = mapped_column(String(12))
    strategy_code: Mapped[str | None] = mapped_column(String(64))
    strategy_version: Mapped[int | None] = mapped_column(Integer)
    discount_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    line_total_minor: Mapped[int] = mapped_column(BigInteger)


class OrderEvent(Base):
    """One transition of an order, with who made it; only ever added."""

    __tablename__ = "channel_order_event"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_order.id"), index=True)
    action: Mapped[str] = mapped_column(String(20))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    details: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)


class OrderLink(Base):
    """An upstream order (a distributor buying) serving a downstream order
    (its buyer's), so the brand can follow sell-through along the chain."""

    __tablename__ = "channel_order_link"
    __table_args__ = (Index("ix_channel_order_link_downstream", "downstream_id"),)

    upstream_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_order.id"), primary_key=True)
    downstream_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_order.id"),
                                               primary_key=True)
    linked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(80))


PART_STATES = ("awaiting", "reserved", "captured", "voided", "refunded")
PART_METHODS = ("prepaid", "rebate", "credit", "offline", "gateway")


class PaymentPart(Base):
    """One method's part of an order's payment plan, with its own state and
    the ledger entries that moved it: ``reserved`` (a pending entry holds
    it), ``awaiting`` (money to come: an offline transfer), ``captured``,
    then ``voided`` or ``refunded`` if the order is cancelled."""

    __tablename__ = "channel_payment_part"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("state IN ('awaiting','reserved','captured','voided','refunded')",
                        name="state"),
        CheckConstraint("method IN ('prepaid','rebate','credit','offline','gateway')",
                        name="method"),
        UniqueConstraint("order_id", "method"),
        CheckConstraint("refunded_minor >= 0 AND refunded_minor <= amount_minor",
                        name="refunded_within_amount"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_order.id"), index=True)
    method: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(12))
    pending_entry_id: Mapped[str | None] = mapped_column(String(40))
    entry_id: Mapped[str | None] = mapped_column(String(40))
    refund_entry_id: Mapped[str | None] = mapped_column(String(40))
    # Returned to the source by returns after payment (partial refunds); the
    # part is ``refunded`` once this reaches its amount.
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RebateRule(Base):
    """How much of an order a seller lets its buyers pay with rebate: at most
    ``max_percent_bp`` of the total and/or ``max_amount_minor`` (None: no
    limit of that kind). A seller without a rule accepts no rebate."""

    __tablename__ = "channel_rebate_rule"

    seller_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"), primary_key=True)
    max_percent_bp: Mapped[int | None] = mapped_column(Integer)
    max_amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
