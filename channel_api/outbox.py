"""The event outbox: what happened, written in the transaction that made it
happen, then told to whoever listens, only once it has committed.

Use cases call :func:`record` inside their transaction (an order paid, a
payable captured, a refund). The event row, the parties entitled to read it,
and one pending webhook delivery per matching endpoint of those parties all
commit or roll back with the change itself, so no event is ever announced
for a change that did not happen, and none is lost for one that did (the
transactional outbox pattern; ``webhooks.deliver_due`` sends them later).

In-process handlers (:func:`subscribe`) are told after COMMIT, by session
hooks that :func:`install_dispatch` puts on a session factory: events
recorded in a transaction (or a savepoint) that rolls back are dropped. They
run in the committing thread and are best-effort, at most once: a process
that dies right after the commit never calls them, and a failing handler is
logged, never raised into the caller, whose work has already committed.
Anything that must happen belongs in a delivery row, not in a handler.

Event types read ``area.what`` (``order.paid``). Patterns, used by handlers
and webhook filters, are a type, ``area.*`` (every type starting ``area.``)
or ``*``. Payloads are JSON with integer amounts: a float is refused, since
money is never one.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, event, insert, or_, select
from sqlalchemy.orm import Session, SessionTransaction

from ledger import as_utc, new_uuid7, prepared, utcnow
from ledger.writer import ints_array, texts_array, times_array

from .catalog import validate_limit
from .errors import AccessDenied, InvalidInput, NotFound, PartyNotFound
from .models.events import EventParty, OutboxEvent, WebhookDelivery, WebhookEndpoint
from .models.network import Party

log = logging.getLogger(__name__)

EVENT_PREFIX = "evt_"
# A storefront that missed webhooks catches up from the feed within this.
KEEP_FOR = timedelta(days=90)
_SEGMENT = r"[a-z][a-z0-9_]{0,30}"
_TYPE = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})+")
_PATTERN = re.compile(rf"\*|{_SEGMENT}(?:\.{_SEGMENT})*\.(?:\*|{_SEGMENT})")
_PENDING = "channel_api.outbox.pending"  # session.info key: [(transaction, EventView)]

Handler = Callable[["EventView"], None]


class EventNotFound(NotFound):
    code = "event_not_found"


@dataclass(frozen=True)
class EventView:
    id: str
    type: str
    subject_type: str
    subject: str
    data: dict[str, Any]
    created_at: datetime
    parties: tuple[str, ...]  # codes of the parties entitled to it


@dataclass(frozen=True)
class DeliveryView:
    """One event's delivery to one of the reading party's webhooks."""

    webhook_id: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime | None  # while pending
    delivered_at: datetime | None


# -- types and patterns ----------------------------------------------------------

def check_pattern(pattern: Any, field: str = "types") -> str:
    if not isinstance(pattern, str) or len(pattern) > 64 or not _PATTERN.fullmatch(pattern):
        raise InvalidInput("an event type pattern reads 'order.paid', 'order.*' or '*'",
                           field=field)
    return pattern


def matches(pattern: str, type_: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return type_.startswith(pattern[:-1])
    return pattern == type_


def _wanted(patterns: list[str] | None, type_: str) -> bool:
    return patterns is None or any(matches(p, type_) for p in patterns)


def _json_payload(payload: Any) -> dict[str, Any]:
    """The payload as it will be stored and sent: JSON, integers for numbers."""
    if not isinstance(payload, dict):
        raise InvalidInput("payload must be a JSON object", field="payload")

    def no_floats(value: Any) -> None:
        if isinstance(value, float):
            raise InvalidInput("payload numbers must be integers (money in minor units)",
                               field="payload")
        for item in value.values() if isinstance(value, dict) else \
                value if isinstance(value, (list, tuple)) else ():
            no_floats(item)

    no_floats(payload)
    try:
        return json.loads(json.dumps(payload))
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"payload is not JSON: {error}", field="payload") from None


def _text(value: Any, field: str, longest: int) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= longest:
        raise InvalidInput(f"{field} must be text of 1-{longest} characters", field=field)
    return value


# -- recording -------------------------------------------------------------------

_PARTY_IDS = select(Party.code, Party.id).where(Party.code.in_(bindparam("codes", expanding=True)))
# Each id comes back with its public id: one statement for a batch on every
# backend (asking for the rows' order makes SQLite insert one at a time).
_INSERT_EVENT = insert(OutboxEvent).returning(OutboxEvent.public_id, OutboxEvent.id)
_INSERT_EVENT_PARTY = insert(EventParty)
_ENDPOINTS = select(WebhookEndpoint.party_id, WebhookEndpoint.id, WebhookEndpoint.types).where(
    WebhookEndpoint.party_id.in_(bindparam("ids", expanding=True)),
    WebhookEndpoint.status == "active")
_INSERT_DELIVERY = insert(WebhookDelivery)
# On PostgreSQL the events, their parties and the parties' active endpoints
# are one round trip: a prepared statement over arrays (one per column),
# with the endpoints after the events' new ids (kind 1 rows). Fixed text, so
# it is parsed once per connection whatever the batch's size.
_PG_RECORD = (
    "WITH e AS (INSERT INTO channel_event (public_id, type, subject_type, subject, payload, "
    "created_at) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
    "$5::json[], $6::timestamptz[]) RETURNING public_id, id), "
    "p AS (INSERT INTO channel_event_party (event_id, party_id) SELECT e.id, x.party_id "
    "FROM unnest($7::text[], $8::bigint[]) AS x(public_id, party_id) "
    "JOIN e ON e.public_id = x.public_id) "
    "SELECT 0, e.public_id, e.id, NULL::json FROM e "
    "UNION ALL SELECT 1, w.party_id::text, w.id, w.types FROM channel_webhook_endpoint w "
    "WHERE w.party_id = ANY($8) AND w.status = 'active'")
_PG_RECORD_TYPES = ("text[]", "text[]", "text[]", "text[]", "json[]", "timestamptz[]",
                    "text[]", "bigint[]")


def record(session: Session, *, type: str, subject_type: str, subject: str,
           parties: Iterable[str] | Mapping[str, int], payload: dict[str, Any]) -> EventView:
    """Add an event (and its pending webhook deliveries) to the caller's
    transaction; ``parties`` are the codes of the parties entitled to it
    (none: an event for in-process handlers only), or {code: party id}
    when the caller has the ids (saves a read)."""
    return record_all(session, [NewEvent(type, subject_type, subject, parties, payload)])[0]


@dataclass(frozen=True)
class NewEvent:
    """What :func:`record_all` takes for each event (``record``'s arguments)."""

    type: str
    subject_type: str
    subject: str
    parties: Iterable[str] | Mapping[str, int]
    payload: dict[str, Any]


def record_all(session: Session, events: list[NewEvent]) -> list[EventView]:
    """``record`` for many events in the same few statements however many
    there are (a batch of applied callbacks): the parties' ids read once,
    then one insert each of events, their parties and their deliveries."""
    checked = []
    for new in events:
        if not isinstance(new.type, str) or len(new.type) > 64 or not _TYPE.fullmatch(new.type):
            raise InvalidInput("type reads 'area.what', e.g. 'order.paid'", field="type")
        _text(new.subject_type, "subject_type", 32)
        _text(new.subject, "subject", 80)
        if isinstance(new.parties, str):
            raise InvalidInput("parties is a list of party codes", field="parties")
        checked.append((new, sorted(set(new.parties)), _json_payload(new.payload)))
    if not checked:
        return []
    # Statements built once and run on the session's connection, after one
    # flush (what the caller added is visible, as autoflush would make it):
    # every paid order and applied callback records an event, and building
    # statements and the ORM's execution path cost more than the SQL.
    session.flush()
    connection = session.connection()
    ids: dict[str, int] = {}
    for new, _codes, _data in checked:
        if isinstance(new.parties, Mapping):
            ids.update(new.parties)
    wanted = sorted({c for _new, codes, _data in checked for c in codes} - set(ids))
    if wanted:
        ids.update(connection.execute(_PARTY_IDS, {"codes": wanted}).all())
    missing = [c for c in wanted if c not in ids]
    if missing:
        raise PartyNotFound(f"no party {missing[0]!r}", field="parties")
    now = utcnow()
    views = [EventView(EVENT_PREFIX + new_uuid7().hex, new.type, new.subject_type, new.subject,
                       data, now, tuple(codes)) for new, codes, data in checked]
    endpoints: dict[int, dict[int, Any]] = {}  # party id: {endpoint id: its types}
    if connection.dialect.name == "postgresql":
        event_ids = _insert_pg(connection, views, ids, endpoints)
    else:
        event_ids = _insert(connection, views, ids, endpoints)
    if any(view.parties for view in views):
        deliveries = []
        for event_id, view in zip(event_ids, views):
            mine = {endpoint_id: types for c in view.parties
                    for endpoint_id, types in endpoints.get(ids[c], {}).items()}
            deliveries += [{"event_id": event_id, "endpoint_id": endpoint_id,
                            "state": "pending", "attempts": 0, "round_attempts": 0,
                            "next_attempt_at": now, "created_at": now}
                           for endpoint_id, types in sorted(mine.items())
                           if _wanted(types, view.type)]
        if deliveries:
            connection.execute(_INSERT_DELIVERY, deliveries)
    for view in views:
        _remember(session, view)
    return views


def _insert(connection, views: list[EventView], ids: dict[str, int],
            endpoints: dict[int, dict[int, Any]]) -> list[int]:
    """The events and their parties inserted, the parties' active endpoints
    read into ``endpoints``; the events' row ids."""
    inserted = dict(connection.execute(_INSERT_EVENT, [
        {"public_id": view.id, "type": view.type, "subject_type": view.subject_type,
         "subject": view.subject, "payload": view.data, "created_at": view.created_at}
        for view in views]).all())
    event_ids = [inserted[view.id] for view in views]
    event_parties = [{"event_id": event_id, "party_id": ids[c]}
                     for event_id, view in zip(event_ids, views) for c in view.parties]
    if event_parties:
        connection.execute(_INSERT_EVENT_PARTY, event_parties)
        party_ids = sorted({ids[c] for view in views for c in view.parties})
        for party_id, endpoint_id, types in connection.execute(_ENDPOINTS, {"ids": party_ids}):
            endpoints.setdefault(party_id, {})[endpoint_id] = types
    return event_ids


def _insert_pg(connection, views: list[EventView], ids: dict[str, int],
               endpoints: dict[int, dict[int, Any]]) -> list[int]:
    """``_insert`` in one prepared statement (``_PG_RECORD``)."""
    pairs = [(view.id, ids[c]) for view in views for c in view.parties]
    rows = prepared.execute(connection, "cl_outbox_record", _PG_RECORD_TYPES, _PG_RECORD, (
        texts_array([v.id for v in views]), texts_array([v.type for v in views]),
        texts_array([v.subject_type for v in views]), texts_array([v.subject for v in views]),
        texts_array([json.dumps(v.data, separators=(",", ":")) for v in views]),
        times_array([v.created_at for v in views]),
        texts_array([public_id for public_id, _ in pairs]),
        ints_array([party_id for _, party_id in pairs])))
    inserted = {}
    for kind, key, row_id, types in rows:
        if kind == 0:
            inserted[key] = row_id
        else:
            endpoints.setdefault(int(key), {})[row_id] = types
    return [inserted[view.id] for view in views]


# -- reading ---------------------------------------------------------------------

def _views(session: Session, rows: list[OutboxEvent]) -> list[EventView]:
    parties: dict[int, list[str]] = {}
    if rows:
        for event_id, code in session.execute(
                select(EventParty.event_id, Party.code).join(Party, Party.id == EventParty.party_id)
                .where(EventParty.event_id.in_([r.id for r in rows])).order_by(Party.code)):
            parties.setdefault(event_id, []).append(code)
    return [EventView(r.public_id, r.type, r.subject_type, r.subject, dict(r.payload),
                      as_utc(r.created_at), tuple(parties.get(r.id, ()))) for r in rows]


def _event(session: Session, event_id: str) -> OutboxEvent:
    row = session.scalars(select(OutboxEvent).where(OutboxEvent.public_id == event_id)
                          ).one_or_none() if isinstance(event_id, str) else None
    if row is None:
        raise EventNotFound(f"no event {event_id!r}", field="event_id")
    return row


def _entitled(session: Session, row: OutboxEvent, party: str) -> Party:
    """The party's row, if it may see the event (the API answers 403 otherwise)."""
    found = session.scalars(select(Party).join(EventParty, EventParty.party_id == Party.id).where(
        EventParty.event_id == row.id, Party.code == party)).one_or_none()
    if found is None:
        raise AccessDenied("this event is not yours")
    return found


def get_event(session: Session, event_id: str, *, party: str | None = None) -> EventView:
    """One event; with ``party``, only if that party is entitled to it."""
    row = _event(session, event_id)
    if party is not None:
        _entitled(session, row, party)
    return _views(session, [row])[0]


def list_events(session: Session, party: str, *, after: str | None = None, limit: int = 50,
                types: list[str] | None = None) -> tuple[list[EventView], str | None]:
    """The party's events, oldest first, so ``after`` (the last event id seen)
    reads "what happened since": a storefront catching up on missed webhooks
    pages forward until ``next_cursor`` is None. ``types`` are patterns."""
    limit = validate_limit(limit)
    party_id = session.scalar(select(Party.id).where(Party.code == party))
    if party_id is None:
        raise PartyNotFound(f"no party {party!r}", field="party")
    query = (select(OutboxEvent).join(EventParty, EventParty.event_id == OutboxEvent.id)
             .where(EventParty.party_id == party_id))
    if after is not None:
        after_id = session.scalar(select(OutboxEvent.id).where(OutboxEvent.public_id == after))
        if after_id is None:
            raise InvalidInput("after must be the id of an event", field="after")
        query = query.where(EventParty.event_id > after_id)
    if types is not None:
        patterns = [check_pattern(p, "type") for p in types]
        if "*" not in patterns:
            query = query.where(or_(*(
                OutboxEvent.type.startswith(p[:-1], autoescape=True) if p.endswith(".*")
                else OutboxEvent.type == p for p in patterns)))
    rows = list(session.scalars(query.order_by(EventParty.event_id).limit(limit + 1)))
    views = _views(session, rows[:limit])
    return views, (views[-1].id if len(rows) > limit else None)


def _delivery_view(row: WebhookDelivery, webhook_id: str) -> DeliveryView:
    return DeliveryView(webhook_id, row.state, row.attempts, row.last_status, row.last_error,
                        as_utc(row.next_attempt_at) if row.state == "pending" else None,
                        as_utc(row.delivered_at) if row.delivered_at else None)


def deliveries(session: Session, event_id: str, *, party: str) -> list[DeliveryView]:
    """How the event is getting to the party's own webhooks."""
    row = _event(session, event_id)
    owner = _entitled(session, row, party)
    found = session.execute(
        select(WebhookDelivery, WebhookEndpoint.public_id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.event_id == row.id, WebhookEndpoint.party_id == owner.id)
        .order_by(WebhookDelivery.id))
    return [_delivery_view(d, whk) for d, whk in found]


def replay(session: Session, party: str, event_id: str, *,
           now: datetime | None = None) -> list[DeliveryView]:
    """Send an event again to the party's active webhooks that want its type:
    a delivered or given-up delivery goes back to pending (its attempts are
    kept, its retry schedule starts afresh), a waiting one is due now, one
    being sent right now is left alone, a missing one is created."""
    row = _event(session, event_id)
    owner = _entitled(session, row, party)
    now = now or utcnow()
    endpoints = [e for e in session.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.party_id == owner.id, WebhookEndpoint.status == "active")
        .order_by(WebhookEndpoint.id)) if _wanted(e.types, row.type)]
    existing = {d.endpoint_id: d for d in session.scalars(select(WebhookDelivery).where(
        WebhookDelivery.event_id == row.id,
        WebhookDelivery.endpoint_id.in_([e.id for e in endpoints])).with_for_update())}
    views = []
    for endpoint in endpoints:
        delivery = existing.get(endpoint.id)
        if delivery is None:
            delivery = WebhookDelivery(event_id=row.id, endpoint_id=endpoint.id, attempts=0,
                                       created_at=now)
            session.add(delivery)
        elif delivery.claimed_until is not None and as_utc(delivery.claimed_until) > now:
            views.append(_delivery_view(delivery, endpoint.public_id))
            continue
        delivery.state, delivery.round_attempts = "pending", 0
        delivery.next_attempt_at, delivery.claimed_until = now, None
        views.append(_delivery_view(delivery, endpoint.public_id))
    session.flush()
    return views


def purge(session: Session, *, now: datetime | None = None, keep_for: timedelta = KEEP_FOR,
          limit: int = 1000) -> int:
    """Forget up to ``limit`` events older than ``keep_for``, with their
    parties and deliveries (a scheduler job runs it in batches)."""
    cutoff = (now or utcnow()) - keep_for
    ids = list(session.scalars(select(OutboxEvent.id).where(OutboxEvent.created_at < cutoff)
                               .order_by(OutboxEvent.id).limit(limit)))
    if ids:
        for model in (WebhookDelivery, EventParty):
            session.execute(delete(model).where(model.event_id.in_(ids)))
        session.execute(delete(OutboxEvent).where(OutboxEvent.id.in_(ids)))
    return len(ids)


# -- in-process handlers, after commit --------------------------------------------

_handlers: list[tuple[str, Handler]] = []


def subscribe(pattern: str, handler: Handler) -> None:
    """Call ``handler(event)`` after the commit of every event matching
    ``pattern``. Handlers must be quick and must not use the committing
    session (it has no transaction then): open one of their own."""
    entry = (check_pattern(pattern, "pattern"), handler)
    if entry not in _handlers:
        _handlers.append(entry)


def unsubscribe(pattern: str, handler: Handler) -> None:
    if (pattern, handler) in _handlers:
        _handlers.remove((pattern, handler))


def install_dispatch(target: Any) -> None:
    """Tell handlers about committed events of the sessions ``target`` makes
    (a ``sessionmaker``, or the ``Session`` class for every session).
    Installing twice is harmless."""
    for name, hook in (("after_commit", _after_commit),
                       ("after_soft_rollback", _after_soft_rollback),
                       ("after_transaction_end", _after_transaction_end)):
        if not event.contains(target, name, hook):
            event.listen(target, name, hook)


def _remember(session: Session, view: EventView) -> None:
    if _after_commit not in session.dispatch.after_commit:
        return  # no dispatch on this session: keep nothing that nobody will clear
    transaction = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_PENDING, []).append((transaction, view))


def _within(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


def _after_commit(session: Session) -> None:
    for _transaction, view in session.info.pop(_PENDING, ()):
        dispatch(view)


def _after_soft_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    """A rolled-back transaction or savepoint takes its events with it."""
    pending = session.info.get(_PENDING)
    if pending:
        session.info[_PENDING] = [(t, v) for t, v in pending
                                  if not _within(t, previous_transaction)]


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost ended without a commit (close())
        session.info.pop(_PENDING, None)


def dispatch(view: EventView) -> None:
    """Call the matching handlers; a failing one is logged and the rest still run."""
    for pattern, handler in list(_handlers):
        if matches(pattern, view.type):
            try:
                handler(view)
            except Exception:  # noqa: BLE001 - the caller's work has committed
                log.exception("event handler %s failed for %s (%s)",
                              getattr(handler, "__qualname__", handler), view.id, view.type,
                              extra={"event_id": view.id, "event_type": view.type})
