"""ORM rows of price strategies.

A strategy belongs to a seller (its owner: the brand, or a distributor for
its own buyers) and carries its scopes as JSON (``scopes.py``): which
products, which buyers. Its prices are tiers: for a ``fixed`` strategy, a
price per SKU from a minimum quantity; for a ``percent`` strategy, a
percentage of list price in basis points from a minimum quantity (``sku_id``
NULL applies to every SKU in scope; a SKU's own tier wins over it).
"""
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
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from ledger.models import Base, BigId, Json

from ..pricing import STRATEGY_RULES, STRATEGY_STATUSES
from .network import _Coded

__all__ = ["STRATEGY_RULES", "STRATEGY_STATUSES", "PriceStrategy", "PriceTier"]


class PriceStrategy(_Coded, Base):
    __tablename__ = "price_strategy"
    __table_args__ = (
        Index("ix_price_strategy_owner", "owner_id", "status"),
        CheckConstraint("status IN ('active','inactive')", name="status"),
        CheckConstraint("rule IN ('fixed','percent')", name="rule"),
    )

    owner_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"))
    status: Mapped[str] = mapped_column(String(8), default="active")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    rule: Mapped[str] = mapped_column(String(8))
    currency: Mapped[str] = mapped_column(String(3))
    product_scope: Mapped[dict[str, Any]] = mapped_column(Json)
    customer_scope: Mapped[dict[str, Any]] = mapped_column(Json)
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Bumped on every change, so caches of resolved strategies can tell.
    version: Mapped[int] = mapped_column(Integer, default=1)


class PriceTier(Base):
    __tablename__ = "price_strategy_tier"
    __table_args__ = (
        Index("ix_price_strategy_tier_strategy", "strategy_id", "sku_id", "min_qty"),
        CheckConstraint("min_qty >= 1", name="min_qty_positive"),
        CheckConstraint(
            "(price_minor IS NOT NULL AND price_minor >= 0 AND percent_bp IS NULL) OR "
            "(price_minor IS NULL AND percent_bp IS NOT NULL AND percent_bp >= 0)",
            name="one_price_rule",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    strategy_id: Mapped[int] = mapped_column(BigId, ForeignKey("price_strategy.id"))
    sku_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("catalog_sku.id"))
    min_qty: Mapped[int] = mapped_column(Integer, default=1)
    price_minor: Mapped[int | None] = mapped_column(BigInteger)
    percent_bp: Mapped[int | None] = mapped_column(Integer)
