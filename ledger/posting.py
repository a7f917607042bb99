"""Writing to the journal: standard and pending entries, reversals, and the
resolution (post or void) of pending entries.

Every write follows the same four steps, so there is one place where the
rules of double entry are applied:

1. validate each request (pure, ``rules.py``);
2. lock the balance rows it touches in a fixed order (``locking.py``);
3. apply the requests one by one to the locked balances in memory, checking
   status, currency and bounds; a refused request leaves them untouched;
4. write the changed balances, the entries and their postings in bulk.

The functions flush through the caller's session and never commit: the caller
owns the transaction (``with session.begin(): ...``).
"""
from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Sequence

from sqlalchemy import ARRAY, String, cast, func, literal, select
from sqlalchemy.orm import Session

from . import prepared, rules
from .errors import (
    AccountClosed,
    AccountFrozen,
    AccountNotFound,
    AlreadyPosted,
    AlreadyReversed,
    AlreadyVoided,
    CurrencyMismatch,
    EntryNotFound,
    IdempotencyConflict,
    InvalidEntry,
    LedgerError,
    NotPending,
    NotReversible,
    PendingExpired,
)
from .ids import entry_public_id, new_uuid7, parse_entry_id
from .locking import LockedAccount, ShardState, lock_balances, lock_shards
from .writer import texts_array as writer_text_array, write_journal
from .models import Account, JournalEntry, Posting
from .timeutil import as_utc, utcnow
from .values import (
    EntryKind,
    EntryRequest,
    EntryResult,
    EntryView,
    PostingLine,
    PostingView,
    Side,
)

MAX_BATCH = 10_000


@dataclass
class _Plan:
    """One request on its way to the journal."""

    index: int
    kind: EntryKind
    request: EntryRequest
    lines: list[PostingLine]
    request_hash: str | None
    reverses_id: uuid.UUID | None = None
    entry_id: uuid.UUID = field(default_factory=new_uuid7)


@dataclass
class _Write:
    """What the apply step produced, written in bulk at the end."""

    entries: list[dict] = field(default_factory=list)
    postings: list[dict] = field(default_factory=list)
    shards: dict[tuple[int, int], ShardState] = field(default_factory=dict)


# --------------------------------------------------------------------------
# public API


def post_entry(session: Session, request: EntryRequest) -> EntryView:
    """Post one entry (standard, or pending when ``request.pending``)."""
    result = post_entries(session, [request], atomic=True)[0]
    return result.entry


def post_entries(
    session: Session, requests: Sequence[EntryRequest], *, atomic: bool = False
) -> list[EntryResult]:
    """Post many entries in the caller's transaction.

    With ``atomic=False`` each request succeeds or fails on its own and the
    result list says which (TigerBeetle style); with ``atomic=True`` the first
    failure is raised and nothing is written.
    """
    if len(requests) > MAX_BATCH:
        raise InvalidEntry(f"a batch takes at most {MAX_BATCH} entries", field="requests")
    results: list[EntryResult | None] = [None] * len(requests)
    plans = []
    for index, request in enumerate(requests):
        try:
            lines = rules.validate_request(request)
        except LedgerError as error:
            if atomic:
                raise
            results[index] = EntryResult(index, error=error)
            continue
        kind = EntryKind.PENDING if request.pending else EntryKind.STANDARD
        digest = (
            rules.request_hash(kind.value, request, lines, None)
            if request.idempotency_key
            else None
        )
        plans.append(_Plan(index, kind, request, lines, digest))
    _execute(session, plans, results, atomic)
    return results  # type: ignore[return-value]


def reverse_entry(
    session: Session, entry_id: str, *, idempotency_key: str | None = None, description: str = "",
    code: str = "reversal",
) -> EntryView:
    """Post the mirror image of a posted entry, linked to it. An entry is
    reversed at most once; a pending entry is voided, not reversed. ``code``
    says what the reversal means (a failed payout), for reports by code."""
    original = _load_entry(session, entry_id)
    if original.kind not in (EntryKind.STANDARD.value, EntryKind.POST_PENDING.value):
        raise NotReversible(
            f"a {original.kind} entry cannot be reversed"
            + ("; void it instead" if original.kind == EntryKind.PENDING.value else ""),
            entry_id=entry_id,
        )
    postings = _load_postings(session, [original.id])[original.id]
    lines = [
        PostingLine(p.account_code, Side(p.side).opposite, p.amount_minor, p.currency)
        for p in postings
    ]
    request = EntryRequest(
        code=code,
        postings=lines,
        description=description or f"reversal of {entry_public_id(original.id)}",
        idempotency_key=idempotency_key,
        metadata={"reverses_code": original.code},
    )
    link = str(original.id)
    digest = rules.request_hash("reversal", request, lines, link) if idempotency_key else None
    plan = _Plan(0, EntryKind.REVERSAL, request, lines, digest, reverses_id=original.id)
    results: list[EntryResult | None] = [None]
    _execute(session, [plan], results, atomic=True)
    return results[0].entry  # type: ignore[union-attr]


def post_pending(
    session: Session,
    pending_entry_id: str,
    *,
    postings: Sequence[PostingLine] | None = None,
    idempotency_key: str | None = None,
    description: str = "",
    code: str | None = None,
) -> EntryView:
    """Post a pending entry, in full or (with ``postings``) in part.

    A partial post names, for some of the pending lines, an amount no larger
    than reserved, and must balance; whatever is not posted is released.
    ``code`` names the posting entry (default ``post_pending``), so reports
    that classify movements by entry code can tell what it was.
    """
    return _resolve(
        session, pending_entry_id, EntryKind.POST_PENDING, postings, idempotency_key, description,
        code=code,
    )


def void_pending(
    session: Session, pending_entry_id: str, *, idempotency_key: str | None = None, reason: str = "",
    code: str | None = None,
) -> EntryView:
    """Release everything a pending entry reserved."""
    return _resolve(session, pending_entry_id, EntryKind.VOID_PENDING, None, idempotency_key, reason,
                    code=code)


def void_expired_pending(session: Session, *, now: datetime | None = None, limit: int = 1000) -> int:
    """Void pending entries whose expiry has passed (the expiry job). Returns how many."""
    now = as_utc(now) if now else utcnow()
    resolved = select(JournalEntry.pending_id).where(JournalEntry.pending_id.is_not(None))
    expired = session.scalars(
        select(JournalEntry.id)
        .where(
            JournalEntry.kind == EntryKind.PENDING.value,
            JournalEntry.expires_at <= now,
            JournalEntry.id.not_in(resolved),
        )
        .order_by(JournalEntry.expires_at)
        .limit(limit)
    ).all()
    count = 0
    for entry_id in expired:
        try:
            _resolve(session, entry_public_id(entry_id), EntryKind.VOID_PENDING, None, None,
                     "expired", now=now, code="pending_expired")
            count += 1
        except (AlreadyPosted, AlreadyVoided):
            continue  # resolved concurrently: nothing to do
    return count


# --------------------------------------------------------------------------
# the common path


def _execute(session: Session, plans: list[_Plan], results: list, atomic: bool) -> None:
    if not plans:
        return
    debit_codes: set[str] = set()
    credit_codes: set[str] = set()
    for plan in plans:
        for line in plan.lines:
            (debit_codes if line.side is Side.DEBIT else credit_codes).add(line.account)
    _lock_links(session, plans)
    accounts = lock_balances(session, debit_codes, credit_codes)
    # Read after locking: a concurrent request with the same key, or reversing
    # the same entry, waited on the same lock, so it has committed (and is
    # visible) by now.
    replays = _find_idempotent(session, plans)
    reversed_already = _find_reversed(session, plans)
    posted_at = utcnow()
    write = _Write()
    batch_keys: dict[str, tuple[str | None, EntryView]] = {}

    for plan in plans:
        try:
            key = plan.request.idempotency_key
            if key is not None and key in batch_keys:
                # The same key twice in one batch: the first one stands.
                first_hash, first_view = batch_keys[key]
                _check_same_request(plan, first_hash)
                results[plan.index] = EntryResult(plan.index, entry=first_view, replayed=True)
                continue
            if key is not None and key in replays:
                results[plan.index] = _replay(session, plan, replays[key])
                continue
            if plan.reverses_id is not None and plan.reverses_id in reversed_already:
                raise AlreadyReversed(
                    f"entry {entry_public_id(plan.reverses_id)} is already reversed",
                    entry_id=entry_public_id(plan.reverses_id),
                )
            view = _apply(plan, accounts, write, posted_at)
            if key is not None:
                batch_keys[key] = (plan.request_hash, view)
            if plan.reverses_id is not None:
                reversed_already.add(plan.reverses_id)
            results[plan.index] = EntryResult(plan.index, entry=view)
        except LedgerError as error:
            if atomic:
                raise
            results[plan.index] = EntryResult(plan.index, error=error)
    _flush(session, write)


def _apply(
    plan: _Plan, accounts: dict[str, LockedAccount], write: _Write, posted_at: datetime
) -> EntryView:
    """Apply one plan to the locked balances, or raise and leave them as they were."""
    if plan.request.expires_at is not None and plan.request.expires_at <= posted_at:
        raise InvalidEntry("expires_at must be in the future", field="expires_at")
    pending = plan.kind is EntryKind.PENDING
    touched: dict[str, LockedAccount] = {}
    for line in plan.lines:
        account = accounts.get(line.account)
        if account is None:
            raise AccountNotFound(f"no account {line.account!r}", account=line.account)
        _check_usable(account)
        if line.currency != account.currency:
            raise CurrencyMismatch(
                f"account {account.code} is in {account.currency}, the posting in {line.currency}",
                account=account.code,
            )
        touched[account.code] = account

    # The entry's net change per account (posted Dr, Cr, pending Dr, Cr); the
    # bounds are checked on account totals, which only exist when every shard
    # is locked -- and every shard is locked whenever a posting could break one.
    deltas: dict[str, list[int]] = {}
    offset = 2 if pending else 0
    for line in plan.lines:
        delta = deltas.setdefault(line.account, [0, 0, 0, 0])
        delta[offset + (line.side is Side.CREDIT)] += line.amount_minor
    for code, delta in deltas.items():
        account = touched[code]
        if account.min_balance is None and account.max_balance is None:
            continue
        # Only a side that moves the balance toward a bound can break it
        # (the rule the locking follows too): a credit into a wallet with a
        # floor needs no totals summed.
        sides = ((Side.DEBIT,) if delta[0] or delta[2] else ()) + \
            ((Side.CREDIT,) if delta[1] or delta[3] else ())
        if not any(rules.moves_toward_bound(account.normal_side, account.min_balance,
                                            account.max_balance, side) for side in sides):
            continue
        if account.all_shards_locked:
            before = account.totals()
            rules.check_bounds(code, account.normal_side, account.min_balance,
                               account.max_balance, before, before + rules.Totals(*delta))
    # Checks passed: apply and record the postings.
    postings = []
    for line_no, line in enumerate(plan.lines):
        account = accounts[line.account]
        shard = account.write_shard()
        if pending:
            if line.side is Side.DEBIT:
                shard.pending_debits += line.amount_minor
            else:
                shard.pending_credits += line.amount_minor
        elif line.side is Side.DEBIT:
            shard.posted_debits += line.amount_minor
        else:
            shard.posted_credits += line.amount_minor
        postings.append(_record_posting(plan.entry_id, line_no, account, shard, line, pending, posted_at, write))
    return _record_entry(plan, postings, posted_at, write, pending_id=None)


def _record_posting(
    entry_id: uuid.UUID, line_no: int, account: LockedAccount, shard: ShardState,
    line: PostingLine, pending: bool, posted_at: datetime, write: _Write,
) -> PostingView:
    shard.version += 1
    write.shards[(shard.account_id, shard.shard)] = shard
    balance_after = rules.posted_balance(account.normal_side, shard.posted_debits, shard.posted_credits)
    write.postings.append(
        {
            "entry_id": entry_id,
            "line": line_no,
            "account_id": account.id,
            "shard": shard.shard,
            "side": line.side.value,
            "amount_minor": line.amount_minor,
            "currency": line.currency,
            "pending": pending,
            "balance_after_minor": balance_after,
            "version": shard.version,
            "posted_at": posted_at,
        }
    )
    return PostingView(
        line_no, account.code, line.side, line.amount_minor, line.currency, pending,
        balance_after, shard.version, posted_at,
    )


def _record_entry(
    plan: _Plan, postings: list[PostingView], posted_at: datetime, write: _Write,
    pending_id: uuid.UUID | None,
) -> EntryView:
    request = plan.request
    effective_at = as_utc(request.effective_at) if request.effective_at else posted_at
    write.entries.append(
        {
            "id": plan.entry_id,
            "kind": plan.kind.value,
            "code": request.code,
            "description": request.description or "",
            "effective_at": effective_at,
            "posted_at": posted_at,
            "expires_at": as_utc(request.expires_at) if request.expires_at else None,
            "metadata": request.metadata or {},
            "idempotency_key": request.idempotency_key,
            "request_hash": plan.request_hash,
            "pending_id": pending_id,
            "reverses_id": plan.reverses_id,
        }
    )
    # An entry's status is what later entries did to it (queries._entry_views);
    # a new one is "pending" if it only reserves, otherwise "posted".
    status = "pending" if plan.kind is EntryKind.PENDING else "posted"
    return EntryView(
        id=entry_public_id(plan.entry_id),
        code=request.code,
        kind=plan.kind,
        status=status,
        description=request.description or "",
        effective_at=effective_at,
        posted_at=posted_at,
        metadata=dict(request.metadata or {}),
        idempotency_key=request.idempotency_key,
        pending_id=entry_public_id(pending_id) if pending_id else None,
        reverses_id=entry_public_id(plan.reverses_id) if plan.reverses_id else None,
        expires_at=as_utc(request.expires_at) if request.expires_at else None,
        postings=tuple(postings),
    )


def _check_usable(account: LockedAccount) -> None:
    if account.status == "frozen":
        raise AccountFrozen(f"account {account.code} is frozen", account=account.code)
    if account.status == "closed":
        raise AccountClosed(f"account {account.code} is closed", account=account.code)


# --------------------------------------------------------------------------
# writing


def _flush(session: Session, write: _Write) -> None:
    write_journal(session, list(write.shards.values()), write.entries, write.postings)


# --------------------------------------------------------------------------
# idempotency and links


def _lock_links(session: Session, plans: list[_Plan]) -> None:
    """Serialize requests that share an idempotency key or reverse the same entry.

    Two such requests usually lock the same balance rows and so wait for each
    other anyway; but on hot accounts each may lock a different shard. On
    PostgreSQL a transaction-level advisory lock per key (taken in one order)
    makes the second wait until the first has committed. SQLite runs one
    writer at a time already.
    """
    names = sorted(
        {f"idem:{p.request.idempotency_key}" for p in plans
         if p.request.idempotency_key and not p.request.new_key}
        | {f"rev:{p.reverses_id}" for p in plans if p.reverses_id is not None}
    )
    if not names or session.connection().dialect.name != "postgresql":
        return
    prepared.execute(
        session.connection(), "cl_lock_links", ("text[]",),
        "SELECT count(pg_advisory_xact_lock(h)) FROM "
        "(SELECT DISTINCT hashtextextended(name, 0) AS h FROM unnest($1) AS name ORDER BY h) AS keys",
        (writer_text_array(names),),
    )


def _find_idempotent(session: Session, plans: list[_Plan]) -> dict[str, tuple[uuid.UUID, str | None]]:
    """Entries already written under the plans' keys: key -> (entry id, request hash)."""
    keys = [p.request.idempotency_key for p in plans
            if p.request.idempotency_key and not p.request.new_key]
    if not keys:
        return {}
    among = keys
    if len(keys) > 20 and session.get_bind().dialect.name == "postgresql":
        # A batch's thousands of keys as one array literal, not a placeholder
        # each (their rendering cost the client more than the query).
        among = select(func.unnest(cast(literal(writer_text_array(keys), String), ARRAY(String))))
    rows = session.execute(
        select(JournalEntry.id, JournalEntry.idempotency_key, JournalEntry.request_hash).where(
            JournalEntry.idempotency_key.in_(among)
        )
    )
    return {row.idempotency_key: (row.id, row.request_hash) for row in rows}


def _check_same_request(plan: _Plan, earlier_hash: str | None) -> None:
    if earlier_hash != plan.request_hash:
        raise IdempotencyConflict(
            f"idempotency key {plan.request.idempotency_key!r} was used for a different request",
            idempotency_key=plan.request.idempotency_key,
        )


def _replay(session: Session, plan: _Plan, earlier: tuple[uuid.UUID, str | None]) -> EntryResult:
    from .queries import get_entry  # local import: queries needs nothing from here

    entry_id, earlier_hash = earlier
    _check_same_request(plan, earlier_hash)
    return EntryResult(plan.index, entry=get_entry(session, entry_public_id(entry_id)), replayed=True)


def _find_reversed(session: Session, plans: list[_Plan]) -> set[uuid.UUID]:
    ids = [p.reverses_id for p in plans if p.reverses_id is not None]
    if not ids:
        return set()
    return set(
        session.scalars(select(JournalEntry.reverses_id).where(JournalEntry.reverses_id.in_(ids)))
    )


# --------------------------------------------------------------------------
# two-phase resolution


@dataclass(frozen=True)
class _StoredPosting:
    line: int
    account_id: int
    account_code: str
    shard: int
    side: str
    amount_minor: int
    currency: str


def _load_entry(session: Session, public_id: str) -> JournalEntry:
    entry_uuid = parse_entry_id(public_id)
    entry = session.get(JournalEntry, entry_uuid) if entry_uuid else None
    if entry is None:
        raise EntryNotFound(f"no entry {public_id!r}", entry_id=public_id)
    return entry


def _load_postings(session: Session, entry_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[_StoredPosting]]:
    out: dict[uuid.UUID, list[_StoredPosting]] = defaultdict(list)
    rows = session.execute(
        select(Posting.entry_id, Posting.line, Posting.account_id, Account.code, Posting.shard,
               Posting.side, Posting.amount_minor, Posting.currency)
        .join(Account, Account.id == Posting.account_id)
        .where(Posting.entry_id.in_(list(entry_ids)))
        .order_by(Posting.entry_id, Posting.line)
    )
    for r in rows:
        out[r.entry_id].append(_StoredPosting(r.line, r.account_id, r.code, r.shard, r.side, r.amount_minor, r.currency))
    return out


def _partial_lines(reserved: list[_StoredPosting], requested: Sequence[PostingLine]) -> list[PostingLine]:
    """Check a partial post against what was reserved, line by line."""
    lines = rules.normalize_lines(requested)
    if len(lines) < 2:
        raise InvalidEntry("a partial post needs at least two postings; void to post nothing",
                           field="postings")
    rules.check_balanced(lines)
    available: dict[tuple[str, str, str], int] = defaultdict(int)
    for p in reserved:
        available[(p.account_code, p.side, p.currency)] += p.amount_minor
    asked: dict[tuple[str, str, str], int] = defaultdict(int)
    for line in lines:
        key = (line.account, line.side.value, line.currency)
        asked[key] += line.amount_minor
        if key not in available:
            raise InvalidEntry(
                f"the pending entry reserved no {line.side.value} on {line.account} in {line.currency}",
                field="postings",
            )
        if asked[key] > available[key]:
            raise InvalidEntry(
                f"{line.side.value} of {asked[key]} on {line.account} exceeds the "
                f"{available[key]} reserved",
                field="postings",
            )
    return lines


def _resolve(
    session: Session, public_id: str, kind: EntryKind, requested: Sequence[PostingLine] | None,
    idempotency_key: str | None, description: str, *, now: datetime | None = None,
    code: str | None = None,
) -> EntryView:
    now = now or utcnow()
    pending = _load_entry(session, public_id)
    if pending.kind != EntryKind.PENDING.value:
        raise NotPending(f"entry {public_id} is not a pending entry", entry_id=public_id)
    reserved = _load_postings(session, [pending.id])[pending.id]
    if kind is EntryKind.POST_PENDING:
        lines = (
            _partial_lines(reserved, requested)
            if requested is not None
            else [PostingLine(p.account_code, Side(p.side), p.amount_minor, p.currency) for p in reserved]
        )
    else:
        lines = []
    request = EntryRequest(
        code=code or ("post_pending" if kind is EntryKind.POST_PENDING else "void_pending"),
        postings=lines,
        description=description,
        idempotency_key=idempotency_key,
        metadata={"pending_code": pending.code},
    )
    digest = (
        rules.request_hash(kind.value, request, lines, str(pending.id)) if idempotency_key else None
    )
    plan = _Plan(0, kind, request, lines, digest)

    accounts = lock_shards(session, {(p.account_id, p.shard) for p in reserved})
    if idempotency_key:
        earlier = _find_idempotent(session, [plan]).get(idempotency_key)
        if earlier is not None:
            return _replay(session, plan, earlier).entry  # type: ignore[return-value]
    resolution = session.execute(
        select(JournalEntry.id, JournalEntry.kind).where(JournalEntry.pending_id == pending.id)
    ).first()
    if resolution is not None:
        error = AlreadyPosted if resolution.kind == EntryKind.POST_PENDING.value else AlreadyVoided
        raise error(
            f"pending entry {public_id} was already {'posted' if error is AlreadyPosted else 'voided'}"
            f" by {entry_public_id(resolution.id)}",
            entry_id=public_id,
            resolved_by=entry_public_id(resolution.id),
        )
    if kind is EntryKind.POST_PENDING:
        if pending.expires_at is not None and as_utc(pending.expires_at) <= now:
            raise PendingExpired(f"pending entry {public_id} expired at {as_utc(pending.expires_at).isoformat()}",
                                 entry_id=public_id)
        for account in accounts.values():
            _check_usable(account)

    posted_at = utcnow()
    write = _Write()
    by_code = {a.code: a for a in accounts.values()}
    # Release every reservation ...
    for p in reserved:
        shard = by_code[p.account_code].shards[p.shard]
        if p.side == Side.DEBIT.value:
            shard.pending_debits -= p.amount_minor
        else:
            shard.pending_credits -= p.amount_minor
        write.shards[(shard.account_id, shard.shard)] = shard
    for shard in write.shards.values():
        shard.version += 1  # the release is a change of the shard
    # ... and post what is posted, on the shard that held the reservation.
    shard_of = {(p.account_code, p.side, p.currency): p.shard for p in reserved}
    postings = []
    for line_no, line in enumerate(lines):
        account = by_code[line.account]
        shard = account.shards[shard_of[(line.account, line.side.value, line.currency)]]
        if line.side is Side.DEBIT:
            shard.posted_debits += line.amount_minor
        else:
            shard.posted_credits += line.amount_minor
        postings.append(_record_posting(plan.entry_id, line_no, account, shard, line, False, posted_at, write))
    view = _record_entry(plan, postings, posted_at, write, pending_id=pending.id)
    _flush(session, write)
    return view
