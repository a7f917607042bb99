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

from sqlalchemy import JSON, BigInteger, CheckConstraint, Date, DateTime, Index, Integer, String, text
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


class ClearingShare(Base):
    """One leg of one clearing: cash of an order moved from its escrow to a
    recipient (an inter-party document: who is owed how much, for which
    order, by which rule and leg, and why). It waits in the recipient's
    pending account until its timing fires (``release_at``; NULL: on a
    delivery not yet happened), then moves to the wallet. A refund claws
    it back (``clawed_minor``), from pending first, then from the wallet.

    A leg of cash a gateway collected with the seller as payee is *carried*
    by that gateway (``carried_by`` = ``gateway:G``; NULL: the custody
    account holds its cash, the release job moves it): its money never comes
    to the custody account, so it is never released to a wallet; a split
    instruction (``split_instruction``, the last one that took it up) pays
    it at the gateway, and ``carried_at``/``carry_entry_id`` say when and by
    which entry (``channel_api.split_instructions``). ``carrier_payment`` is
    the payment (public id) whose money it is."""

    __tablename__ = "clearing_share"
    __table_args__ = (
        CheckConstraint("amount_minor >= 0 AND clawed_minor >= 0 "
                        "AND clawed_minor <= amount_minor", name="amounts"),
        CheckConstraint("state IN ('pending','released')", name="state"),
        Index("ix_clearing_share_order", "order_ref", "id"),
        Index("ix_clearing_share_recipient", "recipient", "cleared_at"),
        # Partial (migration 0019): released legs are never looked up by due
        # date, and only gateway-carried legs by their carrier; a document
        # outside an index costs no index entry when it is written.
        Index("ix_clearing_share_due", "state", "release_at",
              postgresql_where=text("state = 'pending'"), sqlite_where=text("state = 'pending'")),
        Index("ix_clearing_share_carry", "carried_by", "carried_at",
              postgresql_where=text("carried_by IS NOT NULL"),
              sqlite_where=text("carried_by IS NOT NULL")),
        Index("ix_clearing_share_carrier", "carrier_payment",
              postgresql_where=text("carrier_payment IS NOT NULL"),
              sqlite_where=text("carrier_payment IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    order_ref: Mapped[str] = mapped_column(String(40))
    seller: Mapped[str] = mapped_column(String(64))
    buyer: Mapped[str] = mapped_column(String(64))
    # What cash was cleared: the order's plan part or repayment it came from.
    cause: Mapped[str] = mapped_column(String(120))
    payment_method: Mapped[str] = mapped_column(String(16))
    rule_code: Mapped[str] = mapped_column(String(64))
    rule_version: Mapped[int] = mapped_column(Integer)
    leg_index: Mapped[int] = mapped_column(Integer)
    basis: Mapped[str] = mapped_column(String(12))
    recipient: Mapped[str] = mapped_column(String(64))   # a party code, or "platform"
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    clawed_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    timing_kind: Mapped[str] = mapped_column(String(12))
    timing_days: Mapped[int] = mapped_column(Integer, default=0)
    timing_anchor: Mapped[str] = mapped_column(String(10))
    state: Mapped[str] = mapped_column(String(10))
    release_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cleared_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    entry_id: Mapped[str] = mapped_column(String(40))
    release_entry_id: Mapped[str | None] = mapped_column(String(40))
    carried_by: Mapped[str | None] = mapped_column(String(24))
    carrier_payment: Mapped[str | None] = mapped_column(String(40))
    split_instruction: Mapped[str | None] = mapped_column(String(40))
    carried_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    carry_entry_id: Mapped[str | None] = mapped_column(String(40))


# The split instruction tables live beside this module; importing it here
# registers them wherever the clearing tables are (migrations, tests).
from clearing import split_models as _split_models  # noqa: E402,F401
