"""ORM rows of credit: the lines sellers grant buyers, the defaults a
seller sets per customer grade, temporary increases, the seller's
credit-check policy per grade, the orders held for approval by it, and the
debt each credit-funded order leaves."""
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
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ledger.models import Base, BigId, Json

TERMS_KINDS = ("days_after_delivery", "day_of_month")
_TERMS = ("(terms_kind = 'days_after_delivery' AND due_day IS NULL) OR "
          "(terms_kind = 'day_of_month' AND due_day BETWEEN 1 AND 28)")


class CreditLine(Base):
    """A credit line a seller grants a buyer on their relationship. Its
    effective limit (``limit_minor`` plus the unexpired temporary increases)
    is the upper bound of the ledger account ``credit:B@S``. A line created
    from the seller's default for the buyer's grade (``source`` =
    ``grade_default``) follows that default until someone sets it by hand."""

    __tablename__ = "channel_credit_line"
    __table_args__ = (
        CheckConstraint("limit_minor >= 0", name="limit_not_negative"),
        CheckConstraint("status IN ('active','frozen')", name="status"),
        CheckConstraint("source IN ('manual','grade_default')", name="source"),
        CheckConstraint(_TERMS, name="terms"),
    )

    seller_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"), primary_key=True)
    buyer_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    limit_minor: Mapped[int] = mapped_column(BigInteger)
    terms_kind: Mapped[str] = mapped_column(String(20), default="days_after_delivery",
                                            server_default="days_after_delivery")
    terms_days: Mapped[int] = mapped_column(Integer)
    due_day: Mapped[int | None] = mapped_column(Integer)
    # Refuse new credit while any debt is overdue by more than this many days
    # (None: the seller's policy decides).
    block_overdue_days: Mapped[int | None] = mapped_column(Integer)
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(8))
    # Why it is frozen, when the freeze job froze it (None: by hand or active).
    frozen_reason: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16), default="manual", server_default="manual")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CreditDefault(Base):
    """The credit line a seller gives every buyer of a grade unless it sets
    one for that buyer by hand."""

    __tablename__ = "channel_credit_default"
    __table_args__ = (
        CheckConstraint("limit_minor >= 0", name="limit_not_negative"),
        CheckConstraint(_TERMS, name="terms"),
    )

    seller_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"), primary_key=True)
    grade_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_grade.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    limit_minor: Mapped[int] = mapped_column(BigInteger)
    terms_kind: Mapped[str] = mapped_column(String(20))
    terms_days: Mapped[int] = mapped_column(Integer)
    due_day: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CreditIncrease(Base):
    """A temporary increase of a line's limit, valid until ``valid_to``; an
    approval of an order held over its limit grants one for that order."""

    __tablename__ = "channel_credit_increase"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("valid_to > valid_from", name="validity"),
        Index("ix_channel_credit_increase_line", "seller_id", "buyer_id", "valid_to"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    seller_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"))
    buyer_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(String(500))
    order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("channel_order.id"))
    actor: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


POLICY_ACTIONS = ("block", "hold")


class CreditPolicy(Base):
    """A seller's credit-check rules, for one grade (``grade_id``) or for
    every grade without its own (``grade_id`` NULL). Each check either
    blocks the order or holds it for the seller's approval:
    ``on_limit`` (the credit part exceeds what is available),
    ``on_expired`` (the line's validity has passed), ``on_overdue`` (a debt
    is overdue by more than ``overdue_days``; NULL: not checked).
    ``freeze_overdue_days``: the freeze job freezes a line with a debt
    overdue by more than that many days (NULL: never)."""

    __tablename__ = "channel_credit_policy"
    __table_args__ = (
        CheckConstraint("on_limit IN ('block','hold') AND on_expired IN ('block','hold') "
                        "AND on_overdue IN ('block','hold')", name="actions"),
        Index("uq_channel_credit_policy_grade", "seller_id", "grade_id", unique=True,
              postgresql_where=text("grade_id IS NOT NULL"),
              sqlite_where=text("grade_id IS NOT NULL")),
        Index("uq_channel_credit_policy_any_grade", "seller_id", unique=True,
              postgresql_where=text("grade_id IS NULL"), sqlite_where=text("grade_id IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    seller_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"))
    grade_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("channel_grade.id"))
    on_limit: Mapped[str] = mapped_column(String(8))
    on_expired: Mapped[str] = mapped_column(String(8))
    overdue_days: Mapped[int | None] = mapped_column(Integer)
    on_overdue: Mapped[str] = mapped_column(String(8))
    freeze_overdue_days: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OrderHold(Base):
    """An order the credit policy held for approval: why, and the payment
    plan to reserve once approved."""

    __tablename__ = "channel_order_hold"
    __table_args__ = (
        CheckConstraint("state IN ('pending','approved','rejected','cancelled')", name="state"),
        Index("ix_channel_order_hold_seller", "seller_id", "state"),
    )

    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_order.id"), primary_key=True)
    seller_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"))
    reasons: Mapped[list[Any]] = mapped_column(Json, default=list)
    plan: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    state: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(80))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    note: Mapped[str] = mapped_column(String(500), default="")


class CreditDebt(Base):
    """What one order owes on its buyer's credit line: created when the
    order's credit part is captured with the line's terms at that moment;
    due by those terms once the order is delivered; reduced by repayments
    (oldest due first) and by returns (``refunded_minor``)."""

    __tablename__ = "channel_credit_debt"
    __table_args__ = (
        CheckConstraint("amount_minor > 0 AND repaid_minor >= 0 AND refunded_minor >= 0 "
                        "AND repaid_minor + refunded_minor <= amount_minor", name="amounts"),
        CheckConstraint(_TERMS, name="terms"),
        Index("ix_channel_credit_debt_line", "seller_id", "buyer_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_order.id"), unique=True)
    seller_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"))
    buyer_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    repaid_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    terms_kind: Mapped[str] = mapped_column(String(20), default="days_after_delivery",
                                            server_default="days_after_delivery")
    terms_days: Mapped[int] = mapped_column(Integer)
    due_day: Mapped[int | None] = mapped_column(Integer)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
