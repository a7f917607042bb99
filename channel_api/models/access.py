"""ORM rows of storefront access: API keys and the idempotency records of
mutating calls, plus the record of each CSV import."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ledger.models import Base, BigId, Json


class ApiKey(Base):
    """A key bound to one party. Only a SHA-256 of the secret is stored: the
    secret is 256 random bits, so a slow password hash would add nothing but
    latency to every request (GitHub and Stripe tokens are checked the same way)."""

    __tablename__ = "channel_api_key"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    party_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_party.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    secret_sha256: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class IdempotencyRecord(Base):
    """The stored answer of a mutating call made with an ``Idempotency-Key``:
    the same key and request replay it; the same key with another request is
    refused. Written in the same transaction as the call's effects."""

    __tablename__ = "channel_idempotency"

    api_key_id: Mapped[int] = mapped_column(BigId, ForeignKey("channel_api_key.id"),
                                            primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ImportRun(Base):
    """One CSV import, applied or rejected, with its counts and bad rows."""

    __tablename__ = "channel_import"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    file_sha256: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(8))
    actor: Mapped[str] = mapped_column(String(80))
    rows: Mapped[int] = mapped_column(Integer)
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CacheVersion(Base):
    """A token that changes whenever what a cache holds changes (the catalog,
    the region and customer-type trees, one seller's strategies). Readers
    compare tokens in one query and reload only what moved. Tokens are random,
    never counters: a token written by a rolled-back transaction never comes
    back, so nothing cached inside it can be mistaken for committed data."""

    __tablename__ = "channel_cache_version"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[str] = mapped_column(String(32))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
