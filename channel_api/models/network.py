"""ORM rows of the channel network's master data (SQLAlchemy 2).

* ``channel_region`` and ``channel_customer_type`` are trees (``parent_id``);
  filtering by a node includes its descendants (see ``parties.list_parties``).
* ``channel_grade`` is a flat list of levels with a rank.
* ``channel_party`` is every node of the network (the brand, distributors of
  any level, stores): one kind of record with a ``role``.
* ``channel_party_group_member`` links parties to groups (many-to-many);
  ``channel_party_tag`` holds tags, manual or computed by a dynamic tag
  (``source``); ``channel_dynamic_tag`` holds the rules.
* ``channel_supply`` is a directed seller→buyer relationship carrying the
  buyer's purchase permission (a product scope) and validity; coverage is
  the set of distributor→store relationships made in bulk.
* ``channel_sale_permission`` says what a seller may sell and where.
* ``channel_purchase_habit`` is kept current from orders, one row per buyer.
* ``channel_audit`` records who changed coverage, permissions, strategies
  and keys; rows are only ever added.

The rows share ``ledger.models.Base`` (one metadata, one naming convention)
and never leave the package: callers get the values of ``values.py``.
"""
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

PARTY_ROLES = ("brand", "distributor", "store")
PARTY_STATUSES = ("active", "frozen")


class _Coded:
    """The columns every master-data record has: a key, an opaque public id,
    the business code people type, and a name."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))


class Region(_Coded, Base):
    __tablename__ = "channel_region"

    parent_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("channel_region.id"), index=True
    )
    level: Mapped[str] = mapped_column(String(32), default="")


class CustomerType(_Coded, Base):
    __tablename__ = "channel_customer_type"

    parent_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("channel_customer_type.id"), index=True
    )


class Grade(_Coded, Base):
    __tablename__ = "channel_grade"

    rank: Mapped[int] = mapped_column(Integer, default=0)


class Party(Base):
    __tablename__ = "channel_party"
    __table_args__ = (
        CheckConstraint("role IN ('brand','distributor','store')", name="role"),
        CheckConstraint("status IN ('active','frozen')", name="status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(8), default="active")
    region_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_region.id"), index=True)
    customer_type_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("channel_customer_type.id"), index=True
    )
    grade_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("channel_grade.id"), index=True)
    owner_name: Mapped[str] = mapped_column(String(200), default="")
    contact_phone: Mapped[str] = mapped_column(String(32), default="")
    address: Mapped[str] = mapped_column(String(500), default="")
    quality_customer: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", Json, default=dict)


class PartyGroup(_Coded, Base):
    __tablename__ = "channel_party_group"


class PartyGroupMember(Base):
    __tablename__ = "channel_party_group_member"
    __table_args__ = (Index("ix_channel_party_group_member_party", "party_id"),)

    group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("channel_party_group.id"), primary_key=True
    )
    party_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"), primary_key=True)


class PartyTag(Base):
    """A tag on a party: ``source`` is ``manual``, or ``dynamic`` when a
    dynamic tag's rule put it there (its job adds and removes those)."""

    __tablename__ = "channel_party_tag"
    __table_args__ = (
        Index("ix_channel_party_tag_tag", "tag", "party_id"),
        CheckConstraint("source IN ('manual','dynamic')", name="source"),
    )

    party_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(8), default="manual", server_default="manual")


class DynamicTag(_Coded, Base):
    """A tag computed from a rule over master data and purchase habits
    (``tags.py``); the code is the tag it puts on matching parties."""

    __tablename__ = "channel_dynamic_tag"

    rule: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    computed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    member_count: Mapped[int] = mapped_column(Integer, default=0)


class PurchaseHabit(Base):
    """A buyer's purchase facts, updated as each order arrives (issue 4)."""

    __tablename__ = "channel_purchase_habit"

    party_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    order_count: Mapped[int] = mapped_column(Integer, default=0)
    total_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    first_order_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_order_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # {category code: amount in minor units}, for "top categories".
    category_totals: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


SUPPLY_STATUSES = ("active", "suspended", "ended")
SUPPLY_ORIGINS = ("manual", "coverage")


class SupplyRelationship(Base):
    __tablename__ = "channel_supply"
    __table_args__ = (
        UniqueConstraint("seller_id", "buyer_id"),
        Index("ix_channel_supply_buyer", "buyer_id", "seller_id"),
        CheckConstraint("status IN ('active','suspended','ended')", name="status"),
        CheckConstraint("origin IN ('manual','coverage')", name="origin"),
        CheckConstraint("seller_id <> buyer_id", name="not_self"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    seller_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"))
    buyer_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"))
    status: Mapped[str] = mapped_column(String(12), default="active")
    origin: Mapped[str] = mapped_column(String(12), default="manual")
    # scopes.ProductScope as JSON: what the buyer may buy from this seller.
    product_scope: Mapped[dict[str, Any]] = mapped_column(Json)
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SalePermission(Base):
    """What a seller may sell (product scope) and in which regions (codes,
    each covering its subtree; an empty list means anywhere). A seller with
    no row may sell nothing, except the brand, which sells its whole catalog."""

    __tablename__ = "channel_sale_permission"

    party_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"), primary_key=True)
    product_scope: Mapped[dict[str, Any]] = mapped_column(Json)
    regions: Mapped[list[str]] = mapped_column(Json, default=list)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditRecord(Base):
    """One change made by someone: append-only (never updated or deleted)."""

    __tablename__ = "channel_audit"
    __table_args__ = (Index("ix_channel_audit_subject", "subject_type", "subject", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(80))
    details: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
