"""ORM rows of clearing configuration: the clearing rules finance edits
without code, and the days of the business calendar that T+N counts on.

``clearing`` may import only ``ledger`` (import-linter layers), so a rule
names parties, categories and payment methods by their **codes** (strings),
never by foreign keys to the channel's tables: the use case that writes a
rule (``channel_api.clearing_rules``) checks that the codes exist, and
``clearing.rule_match`` compares codes with the facts of an order. Codes are
never reused for another party or category, so a stored code keeps meaning
what it meant.

A rule's criteria are JSON lists of codes, or NULL for "any"; its legs are a
JSON list in the one canonical shape ``{recipient, basis, value, timing:
{kind, days, anchor}}`` (``clearing.split``), written only after
``clearing.split.validate_legs`` accepted them. A change bumps ``version``;
each version's full content is in the audit trail (before and after).
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Date, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ledger.models import Base, BigId, Json

RULE_STATUSES = ("active", "inactive")
CALENDAR_KINDS = ("holiday", "workday")
MAX_NOTE_LENGTH = 200
# A criterion given as None is stored as SQL NULL (not the JSON value null),
# so "NULL = any" holds for a query in SQL too.
CodeList = JSON(none_as_null=True)


class ClearingRule(Base):
    """Which legs split an order's cash, for which trade modes, categories,
    sellers, buyers and payment methods (NULL = any), valid over
    ``[valid_from, valid_to)``; ``priority`` ranks rules that all match
    (``clearing.rule_match``: the selection rule)."""

    __tablename__ = "clearing_rule"
    __table_args__ = (
        CheckConstraint("status IN ('active','inactive')", name="status"),
        CheckConstraint("valid_to IS NULL OR valid_to > valid_from", name="validity"),
        CheckConstraint("version >= 1", name="version_positive"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    priority: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(8))
    # Lists of codes, sorted; NULL means "any".
    trade_modes: Mapped[list[str] | None] = mapped_column(CodeList)
    categories: Mapped[list[str] | None] = mapped_column(CodeList)
    sellers: Mapped[list[str] | None] = mapped_column(CodeList)
    buyers: Mapped[list[str] | None] = mapped_column(CodeList)
    payment_methods: Mapped[list[str] | None] = mapped_column(CodeList)
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    legs: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Who made the current version (the audit trail has every one).
    actor: Mapped[str] = mapped_column(String(80))


class CalendarDay(Base):
    """A date that breaks the plain week: a ``holiday`` (not a business day,
    whatever its weekday) or a ``workday`` (a Saturday or Sunday made a
    working day). Every other date is a business day Monday to Friday
    (``clearing.calendar``)."""

    __tablename__ = "clearing_calendar_day"
    __table_args__ = (CheckConstraint("kind IN ('holiday','workday')", name="kind"),)

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    note: Mapped[str] = mapped_column(String(MAX_NOTE_LENGTH), default="", server_default="")
