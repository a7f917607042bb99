"""Tables of gateway split instructions (issue 6, "Who moves the money").

* ``party_gateway_account``: the account a party (or the platform, party
  ``platform``) holds at a payment gateway (a WeChat Pay merchant id or
  openid, an Alipay userId or login name, a sandbox account). A seller with
  an active account at gateway G is paid *as payee* for orders paid through
  G: the money stays at G in its name, and the split of it is carried out by
  an instruction to G's split product, not by the custody account. One
  active account per party and gateway (a partial unique index); registering
  another retires it.
* ``split_instruction``: one instruction to a gateway's split product for one
  payment: ``kind`` ``split`` (money from the payee's frozen funds to the
  receivers) or ``finish`` (what is left to the payee, no more splits). Its
  ``public_id`` is the idempotent ``out_order_no`` (Alipay's
  ``out_request_no``) the gateway knows it by; a retry is a *new*
  instruction with a new id (``retry_of``/``retried_by`` link them). States
  and their transitions: ``clearing.split_states``.
* ``split_receiver``: one receiver of an instruction: the party, its account
  at the gateway, the amount (the sum of the party's clearing legs it
  carries, listed in ``shares``), and the gateway's result for it
  (``pending``, ``success``, ``closed`` with ``fail_reason``). The ledger
  entry of a success is ``entry_id``.
* ``split_instruction_event``: every state change, with who made it, why
  and the ledger entry it posted.
* ``split_return``: one return of (part of) a receiver's split to the
  payee (WeChat Pay's return orders), recorded when a refund needs cash
  back from legs the receiver was paid; its ``public_id`` is the idempotent
  ``out_return_no``. ``legs`` says which clearing legs it gives back and how
  much of each (``channel_api.split_returns``).

The payment is named by its public id (``payment``, the ``out_trade_no``)
and the gateway's transaction id, as strings: ``clearing`` sits beside
``payments`` and imports nothing of it.
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
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ledger.models import Base, BigId, Json

from .split_states import KINDS, RESULTS, RETURN_STATES, STATES


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({','.join(repr(v) for v in values)})"


class PartyGatewayAccount(Base):
    """A party's account at a gateway, for receiving splits and, for a
    seller, for being paid as payee there."""

    __tablename__ = "party_gateway_account"
    __table_args__ = (
        CheckConstraint("status IN ('active','retired')", name="status"),
        Index("uq_party_gateway_account_active", "party", "gateway", unique=True,
              postgresql_where=text("status = 'active'"), sqlite_where=text("status = 'active'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    party: Mapped[str] = mapped_column(String(64))          # a party code, or "platform"
    gateway: Mapped[str] = mapped_column(String(16))
    account: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20))           # MERCHANT_ID, userId, ...
    status: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(80))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SplitInstruction(Base):
    """One instruction to a gateway's split product (see the module
    docstring). ``fee_minor`` is the fee the cap was checked with
    (``fee_source``: ``bill`` when the gateway's bill gave it, else
    ``estimate``); ``cap_minor`` the cap of the whole payment then."""

    __tablename__ = "split_instruction"
    __table_args__ = (
        CheckConstraint(_in("kind", KINDS), name="kind"),
        CheckConstraint(_in("state", STATES), name="state"),
        CheckConstraint("amount_minor >= 0", name="amount"),
        Index("ix_split_instruction_state", "state", "id"),
        Index("ix_split_instruction_payment", "payment", "id"),
        Index("ix_split_instruction_payee", "payee", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)   # the out_order_no
    kind: Mapped[str] = mapped_column(String(8))
    gateway: Mapped[str] = mapped_column(String(16))
    payment: Mapped[str] = mapped_column(String(40))                  # the payment's public id
    transaction_id: Mapped[str] = mapped_column(String(80))
    order_ref: Mapped[str] = mapped_column(String(40))
    payee: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(12))
    # Why it is blocked, refused or failed (for finance); NULL otherwise.
    reason: Mapped[str | None] = mapped_column(String(500))
    # The last time the gateway could not be reached (it is sent again).
    last_error: Mapped[str | None] = mapped_column(String(300))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    gateway_order_id: Mapped[str | None] = mapped_column(String(80))
    fee_minor: Mapped[int | None] = mapped_column(BigInteger)
    fee_source: Mapped[str | None] = mapped_column(String(8))
    cap_minor: Mapped[int | None] = mapped_column(BigInteger)
    retry_of: Mapped[str | None] = mapped_column(String(40))
    retried_by: Mapped[str | None] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SplitReceiver(Base):
    """One receiver of an instruction (for a ``finish``: the payee itself)."""

    __tablename__ = "split_receiver"
    __table_args__ = (
        CheckConstraint(_in("result", RESULTS), name="result"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        Index("ix_split_receiver_instruction", "instruction_id", "id"),
        Index("ix_split_receiver_party", "party", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    instruction_id: Mapped[int] = mapped_column(BigId, ForeignKey("split_instruction.id"))
    party: Mapped[str] = mapped_column(String(64))                    # a party code, or "platform"
    # NULL: the party has no account registered at the gateway (blocked).
    account: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str | None] = mapped_column(String(20))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    result: Mapped[str] = mapped_column(String(8))
    fail_reason: Mapped[str | None] = mapped_column(String(200))
    # The clearing legs (clearing_share public ids) this receiver carries.
    shares: Mapped[list[str]] = mapped_column(Json)
    entry_id: Mapped[str | None] = mapped_column(String(40))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SplitInstructionEvent(Base):
    """A state change of an instruction: who, why, and the entry posted."""

    __tablename__ = "split_instruction_event"
    __table_args__ = (Index("ix_split_instruction_event_instruction", "instruction_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    instruction_id: Mapped[int] = mapped_column(BigId, ForeignKey("split_instruction.id"))
    from_state: Mapped[str | None] = mapped_column(String(12))
    to_state: Mapped[str] = mapped_column(String(12))
    actor: Mapped[str] = mapped_column(String(80))
    note: Mapped[str] = mapped_column(String(500), default="")
    entry_id: Mapped[str | None] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    details: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)


class SplitReturn(Base):
    """A receiver gives (part of) what a split paid it back to the payee at
    the gateway, so a refund can take it (see the module docstring).
    ``legs``: ``[{"document": leg public id, "amount_minor": n,
    "clawed_before": the leg's clawed_minor when asked}]``, the amounts
    adding up to ``amount_minor``; ``cause`` is what asked for it (the
    refund's reason). A retry is a new return (``retry_of``/``retried_by``)."""

    __tablename__ = "split_return"
    __table_args__ = (
        CheckConstraint(_in("state", RETURN_STATES), name="state"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        Index("ix_split_return_state", "state", "id"),
        Index("ix_split_return_order", "order_ref", "id"),
        Index("ix_split_return_receiver", "receiver_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)   # the out_return_no
    instruction_id: Mapped[int] = mapped_column(BigId, ForeignKey("split_instruction.id"))
    receiver_id: Mapped[int] = mapped_column(BigId, ForeignKey("split_receiver.id"))
    gateway: Mapped[str] = mapped_column(String(16))
    payment: Mapped[str] = mapped_column(String(40))
    order_ref: Mapped[str] = mapped_column(String(40))
    party: Mapped[str] = mapped_column(String(64))                    # a party code, or "platform"
    account: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    legs: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    state: Mapped[str] = mapped_column(String(12))
    cause: Mapped[str] = mapped_column(String(200))
    # Why it failed (for finance); NULL otherwise.
    reason: Mapped[str | None] = mapped_column(String(500))
    # The last time the gateway could not be reached (it is sent again).
    last_error: Mapped[str | None] = mapped_column(String(300))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    entry_id: Mapped[str | None] = mapped_column(String(40))
    retry_of: Mapped[str | None] = mapped_column(String(40))
    retried_by: Mapped[str | None] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
