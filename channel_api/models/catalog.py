"""ORM rows of the catalog: categories (a tree), units, products and their
SKUs with the brand's list price (integer minor units plus currency)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ledger.models import Base, BigId

from .network import _Coded

CATALOG_STATUSES = ("active", "inactive")


class Category(_Coded, Base):
    __tablename__ = "catalog_category"

    parent_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("catalog_category.id"), index=True
    )
    sort: Mapped[int] = mapped_column(Integer, default=0)


class Unit(_Coded, Base):
    """A unit of sale (bottle, case, carton)."""

    __tablename__ = "catalog_unit"


class Product(_Coded, Base):
    __tablename__ = "catalog_product"
    __table_args__ = (CheckConstraint("status IN ('active','inactive')", name="status"),)

    category_id: Mapped[int] = mapped_column(BigId, ForeignKey("catalog_category.id"), index=True)
    status: Mapped[str] = mapped_column(String(8), default="active")
    description: Mapped[str] = mapped_column(String(1000), default="")


class Sku(_Coded, Base):
    __tablename__ = "catalog_sku"
    __table_args__ = (
        CheckConstraint("status IN ('active','inactive')", name="status"),
        CheckConstraint("list_price_minor >= 0", name="list_price_not_negative"),
    )

    product_id: Mapped[int] = mapped_column(BigId, ForeignKey("catalog_product.id"), index=True)
    unit_id: Mapped[int] = mapped_column(BigId, ForeignKey("catalog_unit.id"))
    spec: Mapped[str] = mapped_column(String(200), default="")
    barcode: Mapped[str] = mapped_column(String(64), default="")
    list_price_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(8), default="active")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
