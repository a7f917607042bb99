"""Stored answers of mutating calls made with an ``Idempotency-Key``.

The edge computes a fingerprint of the request (method, path, body) and,
inside the call's own transaction, either replays the stored answer (same
key, same fingerprint), refuses (same key, another request), or runs the
call and saves its answer before commit, so the effects and the answer
commit together. Keys are scoped to the API key that sent them.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.orm import Session

from datetime import datetime, timedelta

from ledger import utcnow

from .errors import IdempotencyKeyReused, InvalidInput
from .models import IdempotencyRecord

MAX_KEY_LENGTH = 255
# Clients retry within minutes or hours; a week covers a long outage.
KEEP_FOR = timedelta(days=7)


@dataclass(frozen=True)
class StoredAnswer:
    status: int
    body: str


def fingerprint(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidInput(f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters",
                           field="Idempotency-Key")
    return key


def stored_answer(session: Session, api_key_pk: int, key: str,
                  request_hash: str) -> StoredAnswer | None:
    row = session.get(IdempotencyRecord, (api_key_pk, key))
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request", field="Idempotency-Key")
    return StoredAnswer(row.status, row.body)


def save_answer(session: Session, api_key_pk: int, key: str, request_hash: str,
                status: int, body: str) -> None:
    session.add(IdempotencyRecord(api_key_id=api_key_pk, key=key, request_hash=request_hash,
                                  status=status, body=body, created_at=utcnow()))
    session.flush()


def purge(session: Session, *, now: datetime | None = None, keep_for: timedelta = KEEP_FOR) -> int:
    """Forget answers older than ``keep_for`` (a retry after that runs anew)."""
    cutoff = (now or utcnow()) - keep_for
    return session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff)).rowcount
