"""Use cases of orders: place an order through one supply relationship with
prices resolved on the server and frozen on its lines; move it through the
state machine (``order_states``) with every transition recorded; read and
list; link an upstream order to the downstream orders it serves.

The payment plan and its ledger postings live in ``funding.py``, which
drives ``reserve``, ``fund``, ``cancel`` and ``expire`` through
``apply_action``: cancel an order with ``funding.cancel_order``, which gives
the money back.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, make_transient_to_detached

from ledger import as_utc, new_uuid7, prepared, utcnow
from ledger.writer import ints_array, texts_array, times_array

from . import outbox, prices
from .catalog import validate_limit
from .errors import InvalidInput, OrderExists, OrderNotFound
from .models import Order, OrderEvent, OrderLine, OrderLink, Party, Sku, SupplyRelationship
from .order_states import STATES, allowed_actions, transition
from .parties import party_row
from .pg_bulk import postgresql

ORDER_PREFIX = "ord_"
MAX_LINES = 500
MAX_QUANTITY = 1_000_000


@dataclass(frozen=True)
class OrderLineView:
    line_no: int
    sku: str
    quantity: int
    unit_price_minor: int
    list_price_minor: int
    price_source: str
    strategy_code: str | None
    strategy_version: int | None
    discount_minor: int
    line_total_minor: int


@dataclass(frozen=True)
class OrderEventView:
    action: str
    from_state: str | None
    to_state: str
    actor: str
    at: datetime
    details: dict[str, Any]


@dataclass(frozen=True)
class OrderView:
    public_id: str
    buyer_code: str
    seller_code: str
    relationship: str
    state: str
    currency: str
    subtotal_minor: int
    discount_minor: int
    total_minor: int
    client_reference: str | None
    note: str
    placed_at: datetime
    updated_at: datetime
    version: int
    lines: tuple[OrderLineView, ...]
    allowed_actions: tuple[str, ...]


def _lines(lines: Any) -> list[tuple[str, int]]:
    """Only SKU and quantity come from the client: a price, a total or a
    discount in a line is refused, never used."""
    if not isinstance(lines, (list, tuple)) or not 1 <= len(lines) <= MAX_LINES:
        raise InvalidInput(f"an order has 1 to {MAX_LINES} lines", field="lines")
    out: list[tuple[str, int]] = []
    seen: dict[str, int] = {}
    for index, line in enumerate(lines):
        field = f"lines[{index}]"
        if not isinstance(line, dict):
            raise InvalidInput("a line is {sku, quantity}", field=field)
        extra = sorted(set(line) - {"sku", "quantity"})
        if extra:
            raise InvalidInput(f"a line takes only sku and quantity (the server sets prices); "
                               f"refused: {', '.join(extra)}", field=f"{field}.{extra[0]}")
        sku, quantity = line.get("sku"), line.get("quantity")
        if not isinstance(sku, str) or not sku:
            raise InvalidInput("sku must be a SKU code", field=f"{field}.sku")
        if (not isinstance(quantity, int) or isinstance(quantity, bool)
                or not 1 <= quantity <= MAX_QUANTITY):
            raise InvalidInput(f"quantity must be a whole number from 1 to {MAX_QUANTITY}",
                               field=f"{field}.quantity")
        if sku in seen:
            raise InvalidInput(f"SKU {sku} is also on line {seen[sku]}; put it on one line",
                               field=f"{field}.sku")
        seen[sku] = index
        out.append((sku, quantity))
    return out


def _text(value: Any, field: str, max_length: int) -> str:
    if not isinstance(value, str) or len(value) > max_length:
        raise InvalidInput(f"{field} must be text of at most {max_length} characters", field=field)
    return value.strip()


def _views(session: Session, rows: list[Order]) -> list[OrderView]:
    if not rows:
        return []
    ids = [r.id for r in rows]
    codes = dict(session.execute(select(Party.id, Party.code).where(
        Party.id.in_({r.buyer_id for r in rows} | {r.seller_id for r in rows}))).all())
    relationships = dict(session.execute(
        select(SupplyRelationship.id, SupplyRelationship.public_id).where(
            SupplyRelationship.id.in_({r.relationship_id for r in rows}))).all())
    lines: dict[int, list[OrderLineView]] = {}
    for line, sku in session.execute(
            select(OrderLine, Sku.code).join(Sku, Sku.id == OrderLine.sku_id)
            .where(OrderLine.order_id.in_(ids)).order_by(OrderLine.order_id, OrderLine.line_no)):
        lines.setdefault(line.order_id, []).append(OrderLineView(
            line.line_no, sku, line.quantity, line.unit_price_minor, line.list_price_minor,
            line.price_source, line.strategy_code, line.strategy_version, line.discount_minor,
            line.line_total_minor))
    return [OrderView(
        r.public_id, codes[r.buyer_id], codes[r.seller_id], relationships[r.relationship_id],
        r.state, r.currency, r.subtotal_minor, r.discount_minor, r.total_minor,
        r.client_reference, r.note, as_utc(r.placed_at), as_utc(r.updated_at), r.version,
        tuple(lines.get(r.id, ())), allowed_actions(r.state)) for r in rows]


def _order(session: Session, public_id: str, *, lock: bool = False) -> Order:
    query = select(Order).where(Order.public_id == public_id)
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise OrderNotFound(f"no order {public_id!r}", field="order", order=public_id)
    return row


def order_row(session: Session, public_id: str, *, lock: bool = False) -> Order:
    """The row of an order, for the package's other use cases (locked when
    they change what hangs on it: its money, its returns)."""
    return _order(session, public_id, lock=lock)


def _event_rows(order: Order, moves: list[tuple[str, str | None, str, dict[str, Any] | None]],
                actor: str) -> list[dict[str, Any]]:
    return [{"action": action, "from_state": before, "to_state": after, "actor": actor,
             "at": order.updated_at, "details": dict(details or {})}
            for action, before, after, details in moves]


def _events(session: Session, order: Order,
            moves: list[tuple[str, str | None, str, dict[str, Any] | None]], *, actor: str
            ) -> None:
    """Record (action, from, to, details) moves of ``order`` in one insert.
    A statement built once, on the session's connection: every order
    records several events, and the unit of work costs more than the SQL."""
    session.connection().execute(_INSERT_EVENT, [
        dict(row, order_id=order.id) for row in _event_rows(order, moves, actor)])


_INSERT_EVENT = insert(OrderEvent)
_INSERT_LINES = insert(OrderLine)


@dataclass(frozen=True)
class Placed:
    """A placed order's row (for a use case that goes on with it in the same
    transaction) and its view."""

    row: Order
    view: OrderView
    # The order's total per product category (its lines' leaf categories),
    # known at placing from the catalog: what purchase habits record.
    categories: dict[str, int] | None = None
    # A deferred placing (``place(defer=True)``): the order row is not
    # written yet, and its lines and ``place`` event wait here, so that an
    # order paid in the same call is inserted once, in its final state, with
    # all its events (``advance_through`` with ``placing``, or
    # ``write_placed``).
    unwritten: _Unwritten | None = None


@dataclass
class _Unwritten:
    lines: list[dict[str, Any]]
    event: dict[str, Any]
    written: bool = False


class PlacedBefore(Exception):
    """A deferred placing met an order of the same buyer and client
    reference (on PostgreSQL the insert is what looks for one: a retry, or
    a concurrent call that committed first): nothing was written;
    ``placed_before`` gives that order."""


def write_placed(session: Session, placed: Placed,
                 moves: list[tuple[str, str | None, str, dict[str, Any] | None]] = (),
                 *, actor: str = "") -> None:
    """Write what a deferred placing left: the order row (in whatever state
    it is in now), its lines, and its ``place`` event with ``moves`` after
    it (``PlacedBefore`` if its client reference was taken meanwhile). Only
    ``moves`` for a placing already written."""
    if not _write(session, placed.row, placed.unwritten, moves, actor=actor):
        raise PlacedBefore(placed.row.client_reference)


def _write(session: Session, row: Order, pending: _Unwritten | None,
           moves: list[tuple[str, str | None, str, dict[str, Any] | None]] = (),
           *, actor: str = "") -> bool:
    """False when (PostgreSQL) the buyer's client reference is taken."""
    if pending is None or pending.written:
        if moves:
            _events(session, row, moves, actor=actor)
        return True
    events = [pending.event] + _event_rows(row, moves, actor)
    if postgresql(session):
        order_id = _insert_pg(session, row, pending.lines, events)
        if order_id is None:
            return False
        # The row is in the database now, as it stands: the session takes
        # it as loaded (later changes are UPDATEs), without reading it.
        row.id = order_id
        make_transient_to_detached(row)
        session.add(row)
    else:
        session.flush()  # the order's INSERT, with its id
        session.connection().execute(_INSERT_LINES, [dict(line, order_id=row.id)
                                                     for line in pending.lines])
        session.connection().execute(_INSERT_EVENT, [dict(event, order_id=row.id)
                                                     for event in events])
    pending.written = True
    return True


# On PostgreSQL an order, its lines and its events are one round trip: a
# prepared statement with the lines and events as arrays (one per column).
# A client reference the buyer used before makes it write nothing
# (``ON CONFLICT``, waiting for a concurrent placing to commit), which is
# how a repeat is found without a read first.
_PG_PLACE = (
    "WITH o AS (INSERT INTO channel_order (public_id, buyer_id, seller_id, relationship_id, "
    "state, currency, subtotal_minor, discount_minor, total_minor, client_reference, note, "
    "placed_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
    "$12, $13, $14) ON CONFLICT (buyer_id, client_reference) DO NOTHING RETURNING id), "
    "l AS (INSERT INTO channel_order_line (order_id, line_no, sku_id, quantity, "
    "unit_price_minor, list_price_minor, price_source, strategy_code, strategy_version, "
    "discount_minor, line_total_minor) SELECT o.id, x.* FROM o, unnest($15::int[], "
    "$16::bigint[], $17::int[], $18::bigint[], $19::bigint[], $20::text[], $21::text[], "
    "$22::int[], $23::bigint[], $24::bigint[]) AS x), "
    "e AS (INSERT INTO channel_order_event (order_id, action, from_state, to_state, actor, at, "
    "details) SELECT o.id, x.action, x.from_state, x.to_state, x.actor, x.at, x.details "
    "FROM o, unnest($25::text[], $26::text[], $27::text[], $28::text[], $29::timestamptz[], "
    "$30::json[]) WITH ORDINALITY AS x(action, from_state, to_state, actor, at, details, n) "
    "ORDER BY x.n) "
    "SELECT id FROM o")
_PG_PLACE_TYPES = ("text", "bigint", "bigint", "bigint", "text", "text", "bigint", "bigint",
                   "bigint", "text", "text", "timestamptz", "timestamptz", "int") + (
    "int[]", "bigint[]", "int[]", "bigint[]", "bigint[]", "text[]", "text[]", "int[]",
    "bigint[]", "bigint[]", "text[]", "text[]", "text[]", "text[]", "timestamptz[]", "json[]")
_LINE_COLUMNS = (("line_no", ints_array), ("sku_id", ints_array), ("quantity", ints_array),
                 ("unit_price_minor", ints_array), ("list_price_minor", ints_array),
                 ("price_source", texts_array), ("strategy_code", texts_array),
                 ("strategy_version", ints_array), ("discount_minor", ints_array),
                 ("line_total_minor", ints_array))


def _insert_pg(session: Session, row: Order, lines: list[dict[str, Any]],
               events: list[dict[str, Any]]) -> int | None:
    """The order's id, or None when its client reference is taken."""
    found = prepared.execute(session.connection(), "cl_place_order", _PG_PLACE_TYPES, _PG_PLACE, (
        row.public_id, row.buyer_id, row.seller_id, row.relationship_id, row.state,
        row.currency, row.subtotal_minor, row.discount_minor, row.total_minor,
        row.client_reference, row.note, row.placed_at, row.updated_at, row.version,
        *[encode([line[name] for line in lines]) for name, encode in _LINE_COLUMNS],
        texts_array([e["action"] for e in events]), texts_array([e["from_state"] for e in events]),
        texts_array([e["to_state"] for e in events]), texts_array([e["actor"] for e in events]),
        times_array([e["at"] for e in events]),
        texts_array([json.dumps(e["details"], separators=(",", ":")) for e in events])))
    return found[0][0] if found else None


def place_order(session: Session, *, buyer: str, seller: str, lines: list[dict[str, Any]],
                client_reference: str | None = None, note: str = "",
                at: datetime | None = None, actor: str) -> OrderView:
    """See ``place``; the order as the caller sees it."""
    return place(session, buyer=buyer, seller=seller, lines=lines,
                 client_reference=client_reference, note=note, at=at, actor=actor).view


def place(session: Session, *, buyer: str, seller: str, lines: list[dict[str, Any]],
          client_reference: str | None = None, note: str = "",
          at: datetime | None = None, actor: str, announce: bool = True,
          defer: bool = False) -> Placed:
    """An order of ``buyer`` from ``seller``: each line priced now by the
    seller's strategies (unit price, strategy code and version frozen), the
    totals computed here. Refused, with nothing written, when the
    relationship, a permission or a party's status does not allow a line.
    With a ``client_reference``, placing the same order again returns it.
    ``defer``: leave the writing to the caller (see ``Placed.unwritten``)."""
    parsed = _lines(lines)
    note = _text(note, "note", 500)
    if client_reference is not None:
        client_reference = _text(client_reference, "client_reference", 64)
        if not client_reference:
            raise InvalidInput("client_reference must not be empty", field="client_reference")
    at = utcnow() if at is None else as_utc(at)
    ctx, quoted = prices.quote_lines(session, seller=seller, buyer=buyer, lines=parsed, at=at)
    currencies = {facts.currency for facts, _ in quoted}
    if len(currencies) > 1:
        raise InvalidInput("all lines of an order are in one currency", field="lines",
                           currencies=sorted(currencies))
    # A repeat: on PostgreSQL the insert finds it (``_PG_PLACE``), elsewhere a read.
    if client_reference is not None and not postgresql(session):
        repeated = _repeat(session, ctx, quoted, client_reference)
        if repeated is not None:
            return repeated
    subtotal = sum(r.line_total_minor for _, r in quoted)
    rel_id = ctx.allowed.relationship_id
    order = Order(public_id=ORDER_PREFIX + new_uuid7().hex, buyer_id=ctx.buyer.id,
                  seller_id=ctx.seller.id, relationship_id=rel_id, state="placed",
                  currency=currencies.pop(), subtotal_minor=subtotal, discount_minor=0,
                  total_minor=subtotal, client_reference=client_reference, note=note,
                  placed_at=at, updated_at=at, version=1)
    if not postgresql(session):
        session.add(order)  # on PostgreSQL ``_write`` adds it, written
    unwritten = _Unwritten(
        lines=[dict(line_no=line_no, sku_id=facts.sku_id, quantity=r.quantity,
                    unit_price_minor=r.unit_price_minor, list_price_minor=r.list_price_minor,
                    price_source=r.source, strategy_code=r.strategy_code,
                    strategy_version=r.strategy_version, discount_minor=0,
                    line_total_minor=r.line_total_minor)
               for line_no, (facts, r) in enumerate(quoted, start=1)],
        event={"action": "place", "from_state": None, "to_state": "placed", "actor": actor,
               "at": at, "details": {"lines": len(quoted), "total_minor": subtotal}})
    if not defer:
        if not _write(session, order, unwritten):
            repeated = _repeat(session, ctx, quoted, client_reference)
            assert repeated is not None, "the insert met this client reference"
            return repeated
        unwritten = None
    if announce:
        _announce(session, order, "place", None, (ctx.buyer.code, ctx.seller.code))
    # Built from what is in hand: the order's first answer costs no re-read.
    line_views = tuple(OrderLineView(
        line_no, facts.code, r.quantity, r.unit_price_minor, r.list_price_minor, r.source,
        r.strategy_code, r.strategy_version, 0, r.line_total_minor)
        for line_no, (facts, r) in enumerate(quoted, start=1))
    categories: dict[str, int] = {}
    for facts, r in quoted:
        leaf = facts.category_path[-1]
        categories[leaf] = categories.get(leaf, 0) + r.line_total_minor
    return Placed(order, _view_of(order, ctx.buyer.code, ctx.seller.code,
                                  ctx.allowed.relationship, line_views), categories, unwritten)


def _repeat(session: Session, ctx, quoted, client_reference: str) -> Placed | None:
    """The buyer's order with this client reference, if there is one; it must
    be the same order (seller, SKUs and quantities), or ``OrderExists``."""
    return _same_order(session, ctx.buyer.id, client_reference, ctx.seller.code,
                       [(facts.code, r.quantity) for facts, r in quoted])


def placed_before(session: Session, placed: Placed) -> Placed:
    """For a deferred placing that met ``PlacedBefore``: the order that took
    its client reference (the same order, or ``OrderExists``)."""
    found = _same_order(session, placed.row.buyer_id, placed.row.client_reference,
                        placed.view.seller_code, [(l.sku, l.quantity) for l in placed.view.lines])
    assert found is not None, "PlacedBefore: an order holds this client reference"
    return found


def _same_order(session: Session, buyer_id: int, client_reference: str, seller_code: str,
                lines: list[tuple[str, int]]) -> Placed | None:
    existing = session.scalars(select(Order).where(
        Order.buyer_id == buyer_id, Order.client_reference == client_reference)
    ).one_or_none()
    if existing is None:
        return None
    view = _views(session, [existing])[0]
    if (view.seller_code, [(l.sku, l.quantity) for l in view.lines]) != (seller_code, lines):
        raise OrderExists(f"client_reference {client_reference!r} names another order",
                          field="client_reference", order=view.public_id)
    return Placed(existing, view)


def _view_of(row: Order, buyer: str, seller: str, relationship: str,
             lines: tuple[OrderLineView, ...]) -> OrderView:
    return OrderView(row.public_id, buyer, seller, relationship, row.state, row.currency,
                     row.subtotal_minor, row.discount_minor, row.total_minor,
                     row.client_reference, row.note, as_utc(row.placed_at),
                     as_utc(row.updated_at), row.version, lines, allowed_actions(row.state))


def refreshed(view: OrderView, row: Order) -> OrderView:
    """``view`` after ``row`` moved on (state, version, time): for a use case
    that holds both and would otherwise read the order again."""
    return replace(view, state=row.state, updated_at=as_utc(row.updated_at), version=row.version,
                   allowed_actions=allowed_actions(row.state))


def advance(session: Session, row: Order, action: str, *, actor: str,
            details: dict[str, Any] | None = None, announce: bool = True,
            codes: tuple[str, str] | None = None) -> None:
    """Move a row the caller has locked (or created in this transaction)
    by ``action``: the state machine decides; the event is recorded and,
    unless a later step of the same use case will (``announce=False``),
    announced to the buyer and seller through the outbox. ``codes``: the
    buyer's and seller's codes, when the caller has them (saves a read)."""
    advance_through(session, row, [(action, details)], actor=actor, announce=announce,
                    codes=codes)


def advance_through(session: Session, row: Order, steps: list[tuple[str, dict[str, Any] | None]],
                    *, actor: str, announce: bool = True,
                    codes: tuple[str, str] | None = None, placing: Placed | None = None) -> None:
    """``advance`` by several actions in turn (an order funded as it is
    placed is reserved, then funded): each checked by the state machine
    before anything is written, their events recorded in one insert, the
    last move announced. ``placing``: the deferred placing of ``row``, now
    written with the order already in its last state."""
    moves, state = [], row.state
    for action, details in steps:
        after = transition(state, action)
        moves.append((action, state, after, details))
        state = after
    row.state = state
    row.updated_at = utcnow()
    row.version += len(moves)
    if placing is not None:
        write_placed(session, placing, moves, actor=actor)
    else:
        _events(session, row, moves, actor=actor)
    if announce:
        action, before, _, _ = moves[-1]
        _announce(session, row, action, before, codes)


def _announce(session: Session, row: Order, action: str, before: str | None,
              codes: tuple[str, str] | None = None) -> None:
    if codes is None:
        by_id = dict(session.execute(select(Party.id, Party.code).where(
            Party.id.in_((row.buyer_id, row.seller_id)))).all())
        codes = (by_id[row.buyer_id], by_id[row.seller_id])
    outbox.record(session, type=f"order.{row.state}", subject_type="order",
                  subject=row.public_id, parties={codes[0]: row.buyer_id, codes[1]: row.seller_id},
                  payload={"order": row.public_id, "state": row.state, "from": before,
                           "action": action, "version": row.version,
                           "total_minor": row.total_minor, "currency": row.currency})


def apply_action(session: Session, order: str, action: str, *, actor: str,
                 details: dict[str, Any] | None = None) -> OrderView:
    """The one way an order changes state: lock it, check the move against the
    state machine (``illegal_transition`` otherwise), record the event."""
    row = _order(session, order, lock=True)
    advance(session, row, action, actor=actor, details=details)
    session.flush()
    return _views(session, [row])[0]


def get_order(session: Session, order: str) -> OrderView:
    return _views(session, [_order(session, order)])[0]


def order_events(session: Session, order: str) -> list[OrderEventView]:
    row = _order(session, order)
    return [OrderEventView(e.action, e.from_state, e.to_state, e.actor, as_utc(e.at),
                           dict(e.details or {}))
            for e in session.scalars(select(OrderEvent).where(OrderEvent.order_id == row.id)
                                     .order_by(OrderEvent.id))]


def list_orders(session: Session, *, buyer: str | None = None, seller: str | None = None,
                state: str | None = None, after: str | None = None, limit: int = 100
                ) -> tuple[list[OrderView], str | None]:
    """Newest first; ``after`` is the cursor (the last order id seen)."""
    limit = validate_limit(limit)
    query = select(Order)
    if buyer is not None:
        query = query.where(Order.buyer_id == party_row(session, buyer).id)
    if seller is not None:
        query = query.where(Order.seller_id == party_row(session, seller).id)
    if state is not None:
        if state not in STATES:
            raise InvalidInput(f"state must be one of {', '.join(STATES)}", field="state")
        query = query.where(Order.state == state)
    if after is not None:
        query = query.where(Order.public_id < after)
    rows = list(session.scalars(query.order_by(Order.public_id.desc()).limit(limit + 1)))
    views = _views(session, rows[:limit])
    return views, (views[-1].public_id if len(rows) > limit else None)


def link_orders(session: Session, *, upstream: str, downstream: str, actor: str) -> None:
    """Record that ``upstream`` (a distributor buying) serves ``downstream``
    (that distributor selling): the upstream buyer must be the downstream
    seller. Idempotent."""
    up, down = _order(session, upstream), _order(session, downstream)
    if up.buyer_id != down.seller_id:
        raise InvalidInput("the upstream order's buyer must be the downstream order's seller",
                           field="downstream")
    if session.get(OrderLink, (up.id, down.id)) is None:
        session.add(OrderLink(upstream_id=up.id, downstream_id=down.id, linked_at=utcnow(),
                              actor=actor))
        session.flush()


def downstream_orders(session: Session, upstream: str) -> list[OrderView]:
    up = _order(session, upstream)
    rows = list(session.scalars(select(Order).join(OrderLink, OrderLink.downstream_id == Order.id)
                                .where(OrderLink.upstream_id == up.id).order_by(Order.id)))
    return _views(session, rows)


AUTO_CONFIRM_AFTER = timedelta(days=7)  # a shipped order counts as received after this


def ship_order(session: Session, order: str, *, actor: str, tracking: str = "") -> OrderView:
    """The seller ships a paid order (no cancel after this)."""
    details = {"tracking": _text(tracking, "tracking", 100)} if tracking else None
    return apply_action(session, order, "ship", actor=actor, details=details)


def confirm_receipt(session: Session, order: str, *, actor: str) -> OrderView:
    """The buyer confirms it received a shipped order."""
    return apply_action(session, order, "confirm_receipt", actor=actor)


def auto_confirm_receipts(session: Session, *, now: datetime | None = None,
                          after: timedelta | None = None, limit: int = 500) -> int:
    """The job: shipped orders not confirmed within ``after`` (default
    AUTO_CONFIRM_AFTER) of their shipment count as delivered."""
    cutoff = (as_utc(now) if now is not None else utcnow()) - (after or AUTO_CONFIRM_AFTER)
    due = list(session.scalars(select(Order.public_id).where(
        Order.state == "shipped", Order.updated_at <= cutoff).order_by(Order.id).limit(limit)))
    for public_id in due:
        apply_action(session, public_id, "auto_confirm", actor="scheduler")
    return len(due)
