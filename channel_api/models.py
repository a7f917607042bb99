"""ORM rows of the channel network's master data (SQLAlchemy 2).

* ``channel_region`` and ``channel_customer_type`` are trees (``parent_id``);
  filtering by a node includes its descendants (see ``parties.list_parties``).
* ``channel_grade`` is a flat list of levels with a rank.
* ``channel_party`` is every node of the network (the brand, distributors of
  any level, stores): one kind of record with a ``role``.
* ``channel_party_group_member`` links parties to groups (many-to-many);
  ``channel_party_tag`` holds manual tags.

The rows share ``ledger.models.Base`` (one metadata, one naming convention)
and never leave the package: callers get the values of ``values.py``.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
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
    """A manual tag (dynamic, rule-computed tags are a later slice)."""

    __tablename__ = "channel_party_tag"
    __table_args__ = (Index("ix_channel_party_tag_tag", "tag", "party_id"),)

    party_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
