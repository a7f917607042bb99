"""Time in the ledger is timezone-aware UTC. SQLite hands back naive values,
which are UTC by construction, so they are re-labelled on the way out."""
from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)
