"""The audit trail of the channel network: who changed coverage,
permissions, relationships, strategies, tags and keys, when, and how.

``record`` is called by the use case that makes the change, inside its
transaction, so a change and its audit row commit or roll back together.
Rows are only ever added.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from ledger import as_utc, utcnow

from .errors import InvalidInput
from .models import AuditRecord

MAX_LIST_LIMIT = 500


@dataclass(frozen=True)
class AuditView:
    id: int
    at: datetime
    actor: str
    action: str
    subject_type: str
    subject: str
    details: dict[str, Any]


def record(session: Session, *, actor: str, action: str, subject_type: str, subject: str,
           details: dict[str, Any] | None = None) -> None:
    record_all(session, actor=actor, records=[(action, subject_type, subject, details)])


def record_all(session: Session, *, actor: str,
               records: list[tuple[str, str, str, dict[str, Any] | None]]) -> None:
    """``record`` for several changes by one actor (action, subject type,
    subject, details each), in one statement."""
    if not isinstance(actor, str) or not actor.strip():
        raise InvalidInput("actor must name who makes the change", field="actor")
    if not records:
        return
    # One insert built once, on the session's connection: an audit row is
    # only ever added, and hot use cases (a paid callback) write one each.
    at, who = utcnow(), actor.strip()[:80]
    session.connection().execute(_INSERT, [
        {"at": at, "actor": who, "action": action, "subject_type": subject_type,
         "subject": subject[:80], "details": dict(details or {})}
        for action, subject_type, subject, details in records])


_INSERT = insert(AuditRecord)


def list_audit(session: Session, *, subject_type: str | None = None, subject: str | None = None,
               action: str | None = None, after: int | None = None,
               limit: int = 100) -> tuple[list[AuditView], int | None]:
    """Newest first; ``after`` is the cursor (the last id seen)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIST_LIMIT}", field="limit")
    query = select(AuditRecord)
    if subject_type is not None:
        query = query.where(AuditRecord.subject_type == subject_type)
    if subject is not None:
        query = query.where(AuditRecord.subject == subject)
    if action is not None:
        query = query.where(AuditRecord.action == action)
    if after is not None:
        query = query.where(AuditRecord.id < after)
    rows = list(session.scalars(query.order_by(AuditRecord.id.desc()).limit(limit + 1)))
    views = [AuditView(r.id, as_utc(r.at), r.actor, r.action, r.subject_type, r.subject,
                       dict(r.details or {})) for r in rows[:limit]]
    return views, (views[-1].id if len(rows) > limit else None)
