"""ORM rows of the event outbox and of webhooks.

An event (a payable captured, an order paid, a refund) is written to
``channel_event`` by the use case that caused it, in the same transaction,
so it exists exactly when its cause committed. The parties entitled to see
it are rows of ``channel_event_party``, indexed (party, event), so a
party's feed is one index range however many parties the network has.

A storefront that registers a ``channel_webhook_endpoint`` gets one
``channel_webhook_delivery`` per (event, endpoint): a small state machine
(pending → delivered, or failed once the retry schedule is spent) that
the delivery job walks, and that a replay puts back to pending.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
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

ENDPOINT_STATUSES = ("active", "disabled")
DELIVERY_STATES = ("pending", "delivered", "failed")


class OutboxEvent(Base):
    """Something that happened, as the parties entitled to it will read it;
    only ever added (a purge removes old ones whole)."""

    __tablename__ = "channel_event"
    __table_args__ = (Index("ix_channel_event_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(80))
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EventParty(Base):
    """One party entitled to see one event (the buyer, the seller, the brand)."""

    __tablename__ = "channel_event_party"
    __table_args__ = (Index("ix_channel_event_party_party", "party_id", "event_id"),)

    event_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_event.id"), primary_key=True)
    party_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"), primary_key=True)


class WebhookEndpoint(Base):
    """A URL a party wants its events POSTed to.

    The secret is stored as given, not hashed (unlike an API key's): we do not
    check it, we sign every delivery with it, so it must be recoverable. It is
    shown to the party once, at registration."""

    __tablename__ = "channel_webhook_endpoint"
    __table_args__ = (
        CheckConstraint("status IN ('active','disabled')", name="status"),
        CheckConstraint("failure_count >= 0", name="failure_count_not_negative"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    party_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"), index=True)
    url: Mapped[str] = mapped_column(String(500))
    secret: Mapped[str] = mapped_column(String(100))
    # Event type patterns ("order.paid", "order.*"); None: every type.
    types: Mapped[list[str] | None] = mapped_column(Json)
    status: Mapped[str] = mapped_column(String(10), default="active")
    # Failed attempts since the last success: how sick the receiver is.
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Base):
    """Getting one event to one endpoint. ``attempts`` counts every try ever
    made; ``round_attempts`` those since the delivery was (re)scheduled, which
    the retry schedule is measured by, so a replay earns a full schedule.
    ``claimed_until`` marks a delivery a job is sending right now."""

    __tablename__ = "channel_webhook_delivery"
    __table_args__ = (
        CheckConstraint("state IN ('pending','delivered','failed')", name="state"),
        CheckConstraint("attempts >= round_attempts AND round_attempts >= 0", name="attempts"),
        UniqueConstraint("event_id", "endpoint_id"),
        Index("ix_channel_webhook_delivery_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_event.id"))
    endpoint_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_webhook_endpoint.id"),
                                             index=True)
    state: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    round_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
