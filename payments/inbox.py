"""The callback inbox: every gateway callback is stored raw, in its own
transaction, before anything else is done with it; then verified; then
applied exactly once per gateway transaction.

Exactly once: applying a verified event first *claims* its dedupe key
(gateway, payment or refund, the gateway's transaction id), inside the
applying transaction: a ``payment_callback_claim`` row inserted with ``ON
CONFLICT DO NOTHING``. The key is unique, so of any number of duplicates
racing, one commits its claim with its postings; the others do not get it
(on PostgreSQL they wait for the first to commit, then see the key taken)
and are marked ``duplicate``. A failed application rolls back its claim
with everything else, and the job tries again from the raw row.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import bindparam, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, defer

from ledger import as_utc, utcnow

from .gateway import CallbackRejected, CallbackRequest, GatewayEvent
from .models import CallbackClaim, GatewayCallback

MAX_BODY = 64 * 1024  # gateways send a few kilobytes; more is not a callback


def store(session: Session, gateway: str, request: CallbackRequest) -> int:
    """Keep the callback as it came (headers and raw body); its row id. One
    insert built once (every callback is stored before anything else)."""
    return session.connection().execute(_STORE, {
        "gateway": gateway, "received_at": as_utc(request.received_at),
        "headers": {k: v for k, v in request.headers.items()},
        "body": bytes(request.body[:MAX_BODY]), "state": "received",
        "attempts": 0}).scalar_one()


_STORE = insert(GatewayCallback).returning(GatewayCallback.id)


def as_request(row: GatewayCallback) -> CallbackRequest:
    """The stored callback as the adapter saw it (its time of arrival too, so
    a retry later is judged by when it came, not when it is retried)."""
    return CallbackRequest(headers=dict(row.headers), body=bytes(row.body),
                           received_at=as_utc(row.received_at))


def reject(row: GatewayCallback, rejection: CallbackRejected) -> None:
    row.state, row.reason = "rejected", f"{rejection.code}: {rejection}"[:300]


def ignore(row: GatewayCallback, reason: str) -> None:
    """Verified, but nothing to do (a payment still waiting for the payer)."""
    row.state, row.reason = "ignored", reason[:300]


def record(row: GatewayCallback, event: GatewayEvent) -> None:
    """What the verified callback says, kept on the row for finance's view."""
    row.kind, row.transaction_id = event.kind, event.transaction_id
    row.out_trade_no, row.out_refund_no = event.out_trade_no, event.out_refund_no
    row.amount_minor = event.amount_minor


def dedupe_key(event: GatewayEvent) -> str:
    family = "refund" if event.kind.startswith("refund") else "payment"
    outcome = "ok" if event.kind.endswith("succeeded") else "not"
    return f"{event.gateway}:{family}:{outcome}:{event.transaction_id}"[:200]


def claim(session: Session, pairs: Sequence[tuple[GatewayCallback, GatewayEvent]]) -> set[int]:
    """Claim each event's transaction for its callback, all in one statement;
    returns the ids of the callbacks that won. The others are duplicates: of
    two in ``pairs`` with one key, the earlier callback wins; a key another
    transaction claimed is left out (on PostgreSQL after waiting for that
    transaction: if it rolls back, the key is ours). Keys go in one order
    for every caller, so two batches claiming the same keys cannot
    deadlock. The winners' rows get their key (flushed with their outcome)."""
    first: dict[str, GatewayCallback] = {}
    for row, event in sorted(pairs, key=lambda pair: pair[0].id):
        first.setdefault(dedupe_key(event), row)
    if not first:
        return set()
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    won = session.execute(dialect.insert(_CLAIMS).on_conflict_do_nothing()
                          .returning(_CLAIMS.c.dedupe_key),
                          [{"dedupe_key": key, "callback_id": first[key].id}
                           for key in sorted(first)]).scalars().all()
    for key in won:
        first[key].dedupe_key = key
    return {first[key].id for key in won}


_CLAIMS = CallbackClaim.__table__


def lock(session: Session, callback_id: int) -> GatewayCallback:
    """The callback's row, locked, for its outcome."""
    return lock_all(session, [callback_id])[callback_id]


def lock_all(session: Session, callback_ids: Iterable[int]) -> dict[int, GatewayCallback]:
    """The callbacks' rows by id, locked in id order (one order for every
    caller); their raw headers and body (kilobytes, JSON to decode) are
    loaded only if asked for."""
    rows = {row.id: row for row in session.scalars(_LOCK, {"ids": sorted(set(callback_ids))})}
    missing = set(callback_ids) - set(rows)
    if missing:
        raise LookupError(f"no stored callback {min(missing)}")
    return rows


_LOCK = (select(GatewayCallback).where(GatewayCallback.id.in_(bindparam("ids", expanding=True)))
         .options(defer(GatewayCallback.headers), defer(GatewayCallback.body))
         .order_by(GatewayCallback.id).with_for_update())


def to_retry(session: Session, *, now: datetime | None = None, limit: int = 100,
             min_age: timedelta = timedelta(seconds=30)) -> list[int]:
    """Callbacks stored but not applied (their request failed after storing
    them, or they wait for an earlier event), older than ``min_age`` so a
    request still working on one is left alone; oldest first."""
    cutoff = (as_utc(now) if now is not None else utcnow()) - min_age
    return list(session.scalars(select(GatewayCallback.id).where(
        GatewayCallback.state.in_(("received", "waiting", "failed")),
        GatewayCallback.received_at <= cutoff, GatewayCallback.attempts < 50)
        .order_by(GatewayCallback.id).limit(limit)))
