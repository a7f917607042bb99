"""ORM rows of payments through gateways (issue 5): the payment (one
attempt to collect an amount for a payable through one gateway), its
refunds, the callback inbox (every callback stored raw before anything
else), the exceptions finance resolves (money that arrived but could
not be applied: it sits in ``suspense``), and the authorisations merchants
gave the platform at gateways (Alipay's ``app_auth_token``), used when a
payment is collected in a seller's own name.

Payables are named by strings (the order's public id, or buyer and seller
codes): ``payments`` sits below ``channel_api`` and knows nothing of its
tables; the use cases that apply money live above it."""
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
)
from sqlalchemy.orm import Mapped, mapped_column

from ledger.models import Base, BigId, Json

PURPOSES = ("order", "deposit", "repayment")


class Payment(Base):
    """One attempt to collect ``amount_minor`` through ``gateway``. Its
    ``public_id`` is the ``out_trade_no`` the gateway knows it by."""

    __tablename__ = "payment"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("purpose IN ('order','deposit','repayment')", name="purpose"),
        CheckConstraint("state IN ('created','pending','succeeded','failed','expired')",
                        name="state"),
        CheckConstraint("refunded_minor >= 0 AND refunded_minor <= amount_minor",
                        name="refunded_within_amount"),
        UniqueConstraint("gateway", "transaction_id"),
        Index("ix_payment_reference", "reference"),
        Index("ix_payment_open", "state", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    gateway: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(10))
    # The order's public id (purpose order); None for a deposit or repayment.
    reference: Mapped[str | None] = mapped_column(String(40))
    payer: Mapped[str] = mapped_column(String(64))
    payee: Mapped[str] = mapped_column(String(64))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    state: Mapped[str] = mapped_column(String(10))
    transaction_id: Mapped[str | None] = mapped_column(String(80))
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    pay_url: Mapped[str | None] = mapped_column(String(500))
    # Where the gateway calls back (refunds are sent with it too).
    notify_url: Mapped[str | None] = mapped_column(String(500))
    entry_id: Mapped[str | None] = mapped_column(String(40))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Payee-collected (issue 6): the payee's own account at the gateway when
    # the money is collected in its name and held there for splitting (NULL:
    # collected for the custody account, the usual case).
    payee_account: Mapped[str | None] = mapped_column(String(64))
    payee_account_kind: Mapped[str | None] = mapped_column(String(20))
    # The merchant the gateway collects this payment for, as every request
    # about it names it (WeChat Pay ``sub_mchid``, the Alipay seller acting
    # under its ``app_auth_token``, the sandbox's ``sub_merchant``): the
    # payee's account when it is a merchant (migration 0021). NULL: the
    # adapter's own merchant (every payment before 0021, and those that are
    # not payee-collected).
    sub_merchant: Mapped[str | None] = mapped_column(String(64))
    # The gateway's fee on this payment, once its daily bill said it.
    fee_minor: Mapped[int | None] = mapped_column(BigInteger)


class PaymentRefund(Base):
    """A refund of (part of) a payment through its gateway: ``requested``
    (decided here, not yet accepted by the gateway), ``processing`` (the
    gateway accepted it), then ``succeeded`` or ``failed`` by the gateway's
    answer or callback. ``public_id`` is the ``out_refund_no``.

    A refund of money in suspense (finance giving back a payment exception's
    money through the gateway that collected it) has no payment here: it
    names its exception instead (``exception_id``; exactly one of the two),
    and keeps the ``notify_url`` it is sent with (a payment refund uses its
    payment's)."""

    __tablename__ = "payment_refund"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("state IN ('requested','processing','succeeded','failed')", name="state"),
        CheckConstraint("(payment_id IS NULL AND exception_id IS NOT NULL) OR "
                        "(payment_id IS NOT NULL AND exception_id IS NULL)", name="one_subject"),
        Index("ix_payment_refund_payment", "payment_id"),
        Index("ix_payment_refund_exception", "exception_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    payment_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("payment.id"))
    exception_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("payment_exception.id"))
    notify_url: Mapped[str | None] = mapped_column(String(500))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(12))
    refund_id: Mapped[str | None] = mapped_column(String(80))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(String(200), default="")
    entry_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


CALLBACK_STATES = ("received", "rejected", "applied", "duplicate", "waiting", "ignored", "failed")


class GatewayCallback(Base):
    """A callback exactly as it arrived, stored before anything else.
    ``dedupe_key`` (gateway, payment-or-refund, the gateway's transaction
    id) is set on the one callback that applied it (its ``CallbackClaim``
    decides which; the column is unique as well), so whatever the retries
    and duplicates, a transaction is applied once."""

    __tablename__ = "payment_callback"
    __table_args__ = (
        CheckConstraint("state IN ('received','rejected','applied','duplicate','waiting',"
                        "'ignored','failed')", name="state"),
        Index("ix_payment_callback_todo", "state", "id"),
        Index("ix_payment_callback_trade", "gateway", "out_trade_no"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    gateway: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    headers: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(String(300))
    kind: Mapped[str | None] = mapped_column(String(20))
    transaction_id: Mapped[str | None] = mapped_column(String(80))
    out_trade_no: Mapped[str | None] = mapped_column(String(64))
    out_refund_no: Mapped[str | None] = mapped_column(String(64))
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CallbackClaim(Base):
    """A gateway transaction's outcome (``inbox.dedupe_key``) claimed by the
    one callback that applies it. Claims are inserted with ``ON CONFLICT DO
    NOTHING``: of any number of duplicates, in one batch or racing in other
    processes, one wins, and the others (on PostgreSQL after waiting for
    the winner's transaction) are left out, with no savepoint and no error
    to recover from. A claim commits or rolls back with what it applied."""

    __tablename__ = "payment_callback_claim"

    dedupe_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    callback_id: Mapped[int] = mapped_column(BigId, ForeignKey("payment_callback.id"))


class PaymentException(Base):
    """Money that arrived and could not be applied (unknown payment, amount
    mismatch, a payable already closed): posted to ``suspense``, never
    lost, never silently applied; finance resolves it."""

    __tablename__ = "payment_exception"
    __table_args__ = (
        CheckConstraint("state IN ('open','resolved')", name="state"),
        Index("ix_payment_exception_open", "state", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(24))
    gateway: Mapped[str] = mapped_column(String(16))
    transaction_id: Mapped[str] = mapped_column(String(80))
    out_trade_no: Mapped[str | None] = mapped_column(String(64))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    callback_id: Mapped[int] = mapped_column(BigId, ForeignKey("payment_callback.id"))
    entry_id: Mapped[str | None] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(10))
    detail: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_by: Mapped[str | None] = mapped_column(String(80))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    note: Mapped[str] = mapped_column(String(500), default="")
    # The sub-merchant the gateway said it collected this money for (a
    # refund of it goes back through that merchant's books); NULL: none.
    sub_merchant: Mapped[str | None] = mapped_column(String(64))


class MerchantAuthorization(Base):
    """What a merchant gave the platform at a gateway so that the platform
    may act in its name: Alipay's ``app_auth_token`` (third-party
    application authorisation), for the merchant's ``userId`` (2088...).
    One per (gateway, merchant); authorising again replaces the token.

    The token is a credential: it is sent to the gateway and nowhere else
    (never in an API answer, a log line or an audit row, which show it
    masked)."""

    __tablename__ = "gateway_merchant_authorization"
    __table_args__ = (UniqueConstraint("gateway", "merchant"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    gateway: Mapped[str] = mapped_column(String(16))
    merchant: Mapped[str] = mapped_column(String(64))
    token: Mapped[str] = mapped_column(String(128))
    actor: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
