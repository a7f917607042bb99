"""Daily settlement batches (issue 6): for each party, each business day
and currency, what was cleared to it, released, clawed back, paid out and
returned, between opening and closing balances of its pending and wallet
accounts that tie to the ledger (``clearing.settlement`` says how).

One run settles every party with pending or wallet accounts in a handful of
set-based queries (balances at the day's two edges, the day's movements
grouped by account and entry code) and one bulk insert per chunk, so it
scales with the number of parties, not with the number of postings. A rerun
settles only the parties a previous run did not (a batch, once written, is
never rewritten); a batch that does not tie is written with status
``mismatch`` and logged as an error: an alert, not a silent fix.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

import ledger
from clearing.settlement import Movement, settle_day
from clearing.settlement_models import SettlementBatch
from ledger import as_utc, new_uuid7, utcnow

from . import pages, pg_bulk
from .clearings import BUSINESS_TZ
from .errors import InvalidInput, NotFound

log = logging.getLogger(__name__)
CHUNK = 5000
_KINDS = ("pending", "wallet")
_LIKE = "party:%"   # every party account; ``_split`` keeps the two kinds
_SLOT = {"pending": 0, "wallet": 2}   # where a kind's opening is in a balances list
_ZEROS = (0, 0, 0, 0)


@dataclass(frozen=True)
class SettlementRun:
    day: date
    settled: int          # batches written by this run
    already: int          # parties settled by an earlier run
    mismatched: list[str]  # parties whose batch does not tie


@dataclass(frozen=True)
class BatchView:
    public_id: str
    party: str
    business_day: date
    currency: str
    pending_opening_minor: int
    wallet_opening_minor: int
    cleared_minor: int
    released_minor: int
    clawed_back_minor: int
    paid_out_minor: int
    payout_returned_minor: int
    interest_minor: int
    other_minor: int
    other_detail: dict
    pending_closing_minor: int
    wallet_closing_minor: int
    difference_minor: int
    status: str
    created_at: datetime


def day_bounds(day: date, tz: ZoneInfo = BUSINESS_TZ) -> tuple[datetime, datetime]:
    """A business day as the UTC instants of its start and of the next day's."""
    # In UTC: SQLite keeps a datetime's clock time and drops its offset, so
    # a bound in another zone would compare 8 hours off there.
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(timezone.utc)
    return start, datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(
        timezone.utc)


def _split(code: str) -> tuple[str, str] | None:
    """``party:P:pending`` -> (P, "pending")."""
    if not code.startswith("party:"):
        return None
    party, _, kind = code[len("party:"):].rpartition(":")
    return (party, kind) if kind in _KINDS and party else None


def settle(session: Session, day: date, *, now: datetime | None = None,
           tz: ZoneInfo = BUSINESS_TZ,
           progress: Callable[[int, int], None] | None = None) -> SettlementRun:
    """Settle ``day`` for every party not settled for it yet. The day must
    be over (in the business timezone)."""
    start, end = day_bounds(day, tz)
    now = now or utcnow()
    if end > now:
        raise InvalidInput(f"{day} is not over yet in {tz.key}", field="day")
    # balances[(party, currency)] = [pending opening, pending closing,
    # wallet opening, wallet closing]. Both kinds in one read per edge
    # ("party:%"; ``_split`` keeps the pending and wallet accounts): each
    # read scans the accounts once, whatever it matches.
    balances: dict[tuple[str, str], list[int]] = {}
    currency_of: dict[tuple[str, str], str] = {}
    splits: dict[str, tuple[str, str] | None] = {}   # each code split once
    for edge, at in ((0, start), (1, end)):
        for code, (currency, amount) in ledger.balances_before(session, at,
                                                               code_like=_LIKE).items():
            split = splits[code] = splits[code] if code in splits else _split(code)
            if split is None:
                continue
            currency_of[split] = currency
            key = (split[0], currency)
            b = balances.get(key)
            if b is None:
                b = balances[key] = [0, 0, 0, 0]
            b[_SLOT[split[1]] + edge] = amount
    moves: dict[tuple[str, str], list[Movement]] = defaultdict(list)
    for code, entry_code, net in ledger.movements(session, start, end, code_like=_LIKE):
        split = splits[code] if code in splits else _split(code)
        if split is None or not net:
            continue
        moves[(split[0], currency_of[split])].append(Movement(split[1], entry_code, net))
    del splits, currency_of
    done = set(session.execute(select(SettlementBatch.party, SettlementBatch.currency)
                               .where(SettlementBatch.business_day == day)).all())
    keys = sorted(k for k in set(balances) | set(moves)
                  if k not in done and (moves.get(k) or any(balances.get(k, _ZEROS))))
    created, rows, mismatched = utcnow(), [], []
    for index, (party, currency) in enumerate(keys, 1):
        b = balances.get((party, currency), _ZEROS)
        figures = settle_day(pending_opening=b[0], wallet_opening=b[2],
                             pending_closing=b[1], wallet_closing=b[3],
                             movements=moves.get((party, currency), []))
        if not figures.balanced:
            mismatched.append(party)
            log.error("settlement of %s for %s does not tie: %s", party, day,
                      figures.difference_minor, extra={"party": party, "day": str(day)})
        rows.append(dict(
            public_id=f"stl_{new_uuid7().hex}", party=party, business_day=day, currency=currency,
            pending_opening_minor=figures.pending_opening_minor,
            wallet_opening_minor=figures.wallet_opening_minor,
            cleared_minor=figures.cleared_minor, released_minor=figures.released_minor,
            clawed_back_minor=figures.clawed_back_minor, paid_out_minor=figures.paid_out_minor,
            payout_returned_minor=figures.payout_returned_minor,
            interest_minor=figures.interest_minor, other_minor=figures.other_minor,
            other_detail=figures.other_detail,
            pending_closing_minor=figures.pending_closing_minor,
            wallet_closing_minor=figures.wallet_closing_minor,
            difference_minor=figures.difference_minor,
            status="balanced" if figures.balanced else "mismatch", created_at=created))
        if len(rows) == CHUNK or index == len(keys):
            pg_bulk.insert_rows(session, SettlementBatch.__table__, _COLUMNS, rows)
            rows = []
            if progress is not None:
                progress(index, len(keys))
    return SettlementRun(day, len(keys), len(done), mismatched)


# The columns of a batch with their PostgreSQL types: a chunk of batches is
# one statement there (``pg_bulk``).
_COLUMNS = {
    "public_id": "varchar", "party": "varchar", "business_day": "date", "currency": "varchar",
    "pending_opening_minor": "bigint", "wallet_opening_minor": "bigint",
    "cleared_minor": "bigint", "released_minor": "bigint", "clawed_back_minor": "bigint",
    "paid_out_minor": "bigint", "payout_returned_minor": "bigint", "interest_minor": "bigint",
    "other_minor": "bigint", "other_detail": "json", "pending_closing_minor": "bigint",
    "wallet_closing_minor": "bigint", "difference_minor": "bigint", "status": "varchar",
    "created_at": "timestamptz"}


def _view(row: SettlementBatch) -> BatchView:
    return BatchView(row.public_id, row.party, row.business_day, row.currency,
                     row.pending_opening_minor, row.wallet_opening_minor, row.cleared_minor,
                     row.released_minor, row.clawed_back_minor, row.paid_out_minor,
                     row.payout_returned_minor, row.interest_minor, row.other_minor,
                     dict(row.other_detail or {}), row.pending_closing_minor,
                     row.wallet_closing_minor, row.difference_minor, row.status,
                     as_utc(row.created_at))


def get_batch(session: Session, batch_id: str) -> BatchView:
    row = session.scalars(select(SettlementBatch).where(
        SettlementBatch.public_id == batch_id)).one_or_none()
    if row is None:
        raise NotFound(f"no settlement batch {batch_id!r}", field="batch")
    return _view(row)


def list_batches(session: Session, *, party: str | None = None, since: date | None = None,
                 until: date | None = None, status: str | None = None, after: str | None = None,
                 limit: int = 100) -> tuple[list[BatchView], str | None]:
    """Oldest day first within ``[since, until]``; ``after`` is the cursor
    (the last batch id seen)."""
    query = select(SettlementBatch)
    if party is not None:
        query = query.where(SettlementBatch.party == party)
    if since is not None:
        query = query.where(SettlementBatch.business_day >= since)
    if until is not None:
        query = query.where(SettlementBatch.business_day <= until)
    if status is not None:
        if status not in ("balanced", "mismatch"):
            raise InvalidInput("status is balanced or mismatch", field="status")
        query = query.where(SettlementBatch.status == status)
    rows, cursor = pages.page(session, query, SettlementBatch, after=after, limit=limit,
                              noun="a batch", newest_first=False)
    return [_view(r) for r in rows], cursor


def settled_through(session: Session) -> date | None:
    """The last business day any batch was written for."""
    return session.scalar(select(SettlementBatch.business_day)
                          .order_by(SettlementBatch.business_day.desc()).limit(1))


def default_day(now: datetime | None = None, tz: ZoneInfo = BUSINESS_TZ) -> date:
    """Yesterday in the business timezone: what the nightly job settles."""
    return (as_utc(now or utcnow()).astimezone(tz) - timedelta(days=1)).date()
