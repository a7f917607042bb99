"""Purchase habits: one row per buyer, kept current as each order arrives.

``record_purchase`` is called by the order use case (a later issue), inside
the order's transaction, so an order and its habit update commit or roll back
together; until orders exist, habits are empty. Orders may arrive out of
order: the first and last order times are a min and a max, not "the latest
call".

Concurrency: two orders of one buyer at once must not lose an update. The
row is read ``SELECT … FOR UPDATE`` (PostgreSQL; SQLite transactions hold the
write lock from ``BEGIN IMMEDIATE``, see ``service.db``), so the second order
waits for the first to commit and then adds to its result. A buyer's first
order inserts the row inside a savepoint; if another transaction inserted it
first, that insert fails on the primary key (after waiting for the other to
commit) and the order is applied as an update to the row now there.

Every function takes a session and only flushes; the caller owns the
transaction. Amounts are integer minor units.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ledger import as_utc, prepared, utcnow

from .errors import InvalidInput
from .models import PurchaseHabit
from .parties import party_row
from .pg_bulk import postgresql
from .values import HabitView

CURRENCY = re.compile(r"[A-Z]{3}")
CATEGORY_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# One order's amount; keeps a buyer's running total far inside a signed 64-bit column.
MAX_ORDER_MINOR = 10**15
MAX_CATEGORIES = 1000
TOP_CATEGORIES = 5
_MONTH_MICROSECONDS = 30 * 86_400 * 10**6
_CENT = Decimal("0.01")


# -- validation ---------------------------------------------------------------

def _amount(value: Any, field: str) -> int:
    if (not isinstance(value, int) or isinstance(value, bool)
            or not 0 <= value <= MAX_ORDER_MINOR):
        raise InvalidInput(f"{field} must be a whole number of minor units "
                           f"between 0 and {MAX_ORDER_MINOR}", field=field)
    return value


def _aware(value: Any, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{field} must be a timezone-aware datetime", field=field)
    return as_utc(value)


def _currency(value: Any) -> str:
    if not isinstance(value, str) or not CURRENCY.fullmatch(value):
        raise InvalidInput("currency must be a three-letter ISO code such as CNY",
                           field="currency")
    return value


def _categories(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_CATEGORIES:
        raise InvalidInput(f"category_totals must be an object of at most {MAX_CATEGORIES} "
                           "category codes", field="category_totals")
    out: dict[str, int] = {}
    for code, amount in value.items():
        if not isinstance(code, str) or not CATEGORY_CODE.fullmatch(code):
            raise InvalidInput("category codes are 1-64 characters of A-Z a-z 0-9 _ . : -",
                               field="category_totals")
        out[code] = _amount(amount, f"category_totals.{code}")
    return out


# -- derived facts (pure) -------------------------------------------------------

def average_order_minor(order_count: int, total_minor: int) -> int | None:
    """The floor of total / count; None without orders."""
    return total_minor // order_count if order_count > 0 else None


def orders_per_month(order_count: int, first_order_at: datetime,
                     last_order_at: datetime) -> Decimal | None:
    """Orders per 30 days between the first and the last order: the
    (count - 1) intervals over the span, exact until the final half-up
    rounding to 0.01. None with fewer than two orders or a zero span."""
    span = last_order_at - first_order_at
    micros = (span.days * 86_400 + span.seconds) * 10**6 + span.microseconds
    if order_count < 2 or micros <= 0:
        return None
    rate = Fraction((order_count - 1) * _MONTH_MICROSECONDS, micros)
    return (Decimal(rate.numerator) / Decimal(rate.denominator)).quantize(
        _CENT, rounding=ROUND_HALF_UP)


def top_categories(category_totals: dict[str, int],
                   limit: int = TOP_CATEGORIES) -> tuple[tuple[str, int], ...]:
    """Up to ``limit`` (code, amount) pairs: largest amount first, then by code."""
    ranked = sorted(category_totals.items(), key=lambda item: (-item[1], item[0]))
    return tuple(ranked[:limit])


def _view(party_code: str, row: PurchaseHabit) -> HabitView:
    first, last = as_utc(row.first_order_at), as_utc(row.last_order_at)
    totals = {code: int(amount) for code, amount in (row.category_totals or {}).items()}
    return HabitView(
        party_code=party_code,
        currency=row.currency,
        order_count=row.order_count,
        total_minor=row.total_minor,
        average_order_minor=row.total_minor // row.order_count,
        first_order_at=first,
        last_order_at=last,
        orders_per_month=orders_per_month(row.order_count, first, last),
        top_categories=top_categories(totals),
        category_totals=totals,
        updated_at=as_utc(row.updated_at),
    )


# -- use cases ----------------------------------------------------------------

@dataclass(frozen=True)
class _Known:
    """The buyer as the caller knows it: row id and code."""

    id: int
    code: str


def _locked(session: Session, party_id: int) -> PurchaseHabit | None:
    return session.scalars(
        select(PurchaseHabit).where(PurchaseHabit.party_id == party_id)
        .with_for_update()
        # Re-read even if this session loaded the row before: another
        # transaction may have changed it since.
        .execution_options(populate_existing=True)
    ).one_or_none()


def record_purchase(
    session: Session,
    *,
    buyer: str,
    placed_at: datetime,
    total_minor: int,
    currency: str,
    category_totals: dict[str, int] | None = None,
    party_id: int | None = None,
) -> HabitView:
    """Add one order of ``buyer`` (a party code or public id) to its habits.
    ``party_id``: the buyer's row id when the caller has it (then ``buyer``
    must be its code), saving a read on the order's hot path.

    The buyer's habits are in one currency: an order in another is refused
    (``InvalidInput``, field ``currency``)."""
    placed_at = _aware(placed_at, "placed_at")
    total_minor = _amount(total_minor, "total_minor")
    currency = _currency(currency)
    categories = _categories(category_totals)
    party = party_row(session, buyer) if party_id is None else _Known(party_id, buyer)
    now = utcnow()
    if postgresql(session):
        return _record_pg(session, party, currency, total_minor, placed_at, categories, now)

    row = _locked(session, party.id)
    if row is None:
        try:
            with session.begin_nested():
                session.execute(insert(PurchaseHabit).values(
                    party_id=party.id, currency=currency, order_count=1,
                    total_minor=total_minor, first_order_at=placed_at,
                    last_order_at=placed_at, category_totals=categories, updated_at=now))
        except IntegrityError:
            # Another transaction recorded this buyer's first order meanwhile
            # (and has committed: the insert waited for it). Add to its row.
            row = _locked(session, party.id)
            if row is None:  # not a race: some other constraint failed
                raise
        else:
            return _view(party.code, _locked(session, party.id))

    if row.currency != currency:
        raise InvalidInput(f"{party.code}'s purchases are in {row.currency}, not {currency}",
                           field="currency")
    merged = dict(row.category_totals or {})
    for code, amount in categories.items():
        merged[code] = int(merged.get(code, 0)) + amount
    row.order_count += 1
    row.total_minor += total_minor
    row.first_order_at = min(as_utc(row.first_order_at), placed_at)
    row.last_order_at = max(as_utc(row.last_order_at), placed_at)
    row.category_totals = merged  # a new dict: JSON columns do not track in-place changes
    row.updated_at = now
    session.flush()
    return _view(party.code, row)


# The whole of ``record_purchase`` in one round trip on PostgreSQL: insert
# the first order, or add to the row (category totals summed key by key),
# unless its currency differs (then no row comes back). Concurrent orders of
# one buyer wait on the row's lock as with SELECT ... FOR UPDATE; a first
# order racing another needs no savepoint.
_PG_RECORD = (
    "INSERT INTO channel_purchase_habit AS h (party_id, currency, order_count, total_minor, "
    "first_order_at, last_order_at, category_totals, updated_at) "
    "VALUES ($1, $2, 1, $3, $4, $4, $5, $6) "
    "ON CONFLICT (party_id) DO UPDATE SET order_count = h.order_count + 1, "
    "total_minor = h.total_minor + excluded.total_minor, "
    "first_order_at = least(h.first_order_at, excluded.first_order_at), "
    "last_order_at = greatest(h.last_order_at, excluded.last_order_at), "
    "category_totals = (SELECT coalesce(json_object_agg(k, s), '{}'::json) FROM ("
    "SELECT k, sum(v::bigint) AS s FROM ("
    "SELECT key AS k, value AS v FROM json_each_text(h.category_totals) UNION ALL "
    "SELECT key, value FROM json_each_text(excluded.category_totals)) AS t GROUP BY k) AS g), "
    "updated_at = excluded.updated_at "
    "WHERE h.currency = excluded.currency "
    "RETURNING h.party_id, h.currency, h.order_count, h.total_minor, h.first_order_at, "
    "h.last_order_at, h.category_totals, h.updated_at")
_PG_RECORD_TYPES = ("bigint", "text", "bigint", "timestamptz", "json", "timestamptz")


def _record_pg(session: Session, party, currency: str, total_minor: int, placed_at: datetime,
               categories: dict[str, int], now: datetime) -> HabitView:
    rows = prepared.execute(session.connection(), "cl_habit_record", _PG_RECORD_TYPES,
                            _PG_RECORD, (party.id, currency, total_minor, placed_at,
                                         json.dumps(categories), now))
    if not rows:
        held = session.scalar(select(PurchaseHabit.currency).where(
            PurchaseHabit.party_id == party.id))
        raise InvalidInput(f"{party.code}'s purchases are in {held}, not {currency}",
                           field="currency")
    # A copy this session may hold is stale now.
    loaded = session.identity_map.get(session.identity_key(PurchaseHabit, party.id))
    if loaded is not None:
        session.expire(loaded)
    return _view(party.code, PurchaseHabit(**dict(zip(_COLUMNS, rows[0]))))


_COLUMNS = ("party_id", "currency", "order_count", "total_minor", "first_order_at",
            "last_order_at", "category_totals", "updated_at")


def get_habit(session: Session, buyer: str) -> HabitView | None:
    """The buyer's habits, or None before its first order (``PartyNotFound``
    for an unknown party)."""
    party = party_row(session, buyer)
    row = session.get(PurchaseHabit, party.id)
    return _view(party.code, row) if row is not None else None
