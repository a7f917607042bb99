"""Clearing and release in batches (issue 6): the same results as
``clearings.clear_cash`` and ``clearings.release_due``, for thousands of
orders at a time.

``clear_many(session, arrivals)`` clears each ``CashArrival`` exactly as
``clear_cash`` would, one after the other, clear it: the rule chosen per
category path, the split, the recipients named, one entry per arrival under
``clear:{cause}`` (Dr ``order:O:escrow`` / Cr ``party:X:pending`` or
``platform:revenue``, legs in the same order), one ``ClearingShare`` row per
leg with the same ``release_at``, the platform's legs released at once and
every leg already due released at once (what ``clear_cash``'s call of
``release_due`` for the order does). Once per cause; no rule, or a recipient
that cannot be named: nothing is cleared and the cash stays in the escrow.
The legs of an order's gateway part collected with the seller as payee are
marked carried by that gateway and never released to a wallet (their money
is at the gateway; ``split_instructions`` carries them), as ``clear_cash``
marks them.

What differs is how: the facts of all orders are read in a few set-based
queries, the rules once, and every entry of the batch (the clearings, the
releases of their legs already due, and those of due legs of earlier causes
of the same orders) is posted in **one** ``ledger.post_entries`` call: one
lock statement, one write, and, as docs/architecture.md asks of a use case
that posts many entries, no deadlock between two such calls. (A batch with
more than ``MAX_BATCH`` entries is posted in several calls, each clearing
with its releases.) The documents are inserted with one statement. An
arrival ``clear_cash`` would clear with 0 is *skipped* here with a reason,
tallied in ``BatchResult``, instead of being logged one by one; an arrival
the ledger refuses (an escrow short of the cash) is skipped too, where
``clear_cash`` would raise, and so is one whose cause another transaction
cleared after this one looked (the ledger answers it as a replay): the call
runs in a savepoint and is made again without them, so no document and no
release is ever written for cash the call did not clear.

Size: each entry holds one of PostgreSQL's advisory locks until commit (the
ledger's, per idempotency key), and the server's lock table has room for
``max_locks_per_transaction`` x ``max_connections`` (6,400 by default) for
all sessions together: keep batches to a few thousand arrivals.

``release_many(session)`` is the release job's batch form: due legs (not
those a gateway carries) move from pending to the wallet, all their entries
in one ``post_entries`` call, their rows updated in one statement.

The choice of rule and the split are ``clearing.rule_match`` and
``clearing.split``, reached through ``clearing_rules``' pure helpers
(``_spec``, ``_part``, ``_portions``); release dates are ``clearings``'
(``_release_at``, ``_calendar``). What could not be shared is the
per-order database code: how ``explain_for_order`` groups an order's lines
into parts and resolves its recipients, who carries an order's gateway
part (``clearings._carrier``) and when orders were delivered
(``clearings._delivered_at``) are copied below, reading facts loaded for
the whole batch instead of querying per order (or, for deliveries, naming
thousands of orders in one array instead of a placeholder each).
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.orm import Session, aliased

import ledger
from clearing.models import ClearingRule, ClearingShare
from clearing.rule_match import ClearingRuleSpec, RuleFacts, choose, trade_mode
from clearing.split import PARTY_PREFIX, Timing
from ledger import EntryRequest, PostingLine, as_utc, new_uuid7, utcnow
from ledger.models import Account, JournalEntry
from ledger.posting import MAX_BATCH
from payments.models import Payment

from . import pg_bulk
from .books import (BRAND_SHARDS, PLATFORM_REVENUE, ensure_all, ensure_platform_revenue,
                    escrow_account, pending_account, wallet_account)
from .clearing_rules import (
    MAX_CHAIN_LEVELS,
    PAYMENT_METHODS,
    PLATFORM,
    PreviewPart,
    ShareView,
    _Line,
    _part,
    _portions,
    _spec,
)
from .clearings import BUSINESS_TZ, _calendar, _release_at
from .errors import InvalidInput
from .models import (
    Category,
    Order,
    OrderEvent,
    OrderLine,
    OrderLink,
    Party,
    Product,
    Sku,
    SupplyRelationship,
)
from .trees import paths

log = logging.getLogger(__name__)

_SHARES = ClearingShare.__table__
# Waiting legs are dated this many at a time (one query for their orders'
# deliveries, one update), so a pass over a million of them stays in memory.
DATING_CHUNK = 10_000


@dataclass(frozen=True)
class CashArrival:
    """Cash that arrived in ``order_ref``'s escrow, as ``clear_cash`` takes it."""

    order_ref: str
    amount_minor: int
    method: str
    cause: str


@dataclass(frozen=True)
class Skip:
    order_ref: str
    cause: str
    reason: str


@dataclass(frozen=True)
class BatchResult:
    """``cleared`` arrivals of ``orders`` distinct orders, ``cleared_minor``
    per currency, ``legs`` documents written of which ``released`` were
    released at once; ``skipped`` tallies the reasons of the rest."""

    cleared: int
    orders: int
    cleared_minor: Mapping[str, int]
    legs: int
    released: int
    skipped: Mapping[str, int]
    skips: tuple[Skip, ...]

    @property
    def skipped_count(self) -> int:
        return sum(self.skipped.values())


# -- the facts of a batch's orders --------------------------------------------------------

@dataclass
class _OrderFacts:
    id: int
    public_id: str
    seller_id: int
    buyer_id: int
    currency: str
    total_minor: int
    lines: list[_Line] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _PartyFacts:
    code: str
    role: str


class _Network:
    """The parties, supply chains and upstream orders a batch needs, read
    set-based and memoised per seller (module docstring: what was copied)."""

    def __init__(self, session: Session, parties: dict[int, _PartyFacts], sellers: set[int]):
        self.session, self.parties, self.sellers = session, parties, sellers
        self._brands: dict[int, list[str]] | None = None
        self._suppliers: dict[int, list[str]] | None = None
        self._network_brands: list[str] | None = None

    def brands_above(self, seller_id: int) -> list[str]:
        if self._brands is None:
            self._brands = self._walk_up({pid for pid in self.sellers
                                          if self.parties[pid].role != "brand"})
        return self._brands.get(seller_id, [])

    def _walk_up(self, sellers: set[int]) -> dict[int, list[str]]:
        """``clearing_rules._Recipients._brands_above`` for every seller at
        once: the edges up the chain are read level by level for all of them
        (any status: a suspended relationship still says whose goods they
        are), then each seller's walk runs in memory."""
        edges: dict[int, list[tuple[int, str, str]]] = {}
        frontier = set(sellers)
        for _ in range(MAX_CHAIN_LEVELS):
            if not frontier:
                break
            for buyer_id in frontier:
                edges.setdefault(buyer_id, [])
            rows = self.session.execute(
                select(SupplyRelationship.buyer_id, Party.id, Party.code, Party.role)
                .join(Party, Party.id == SupplyRelationship.seller_id)
                .where(SupplyRelationship.buyer_id.in_(frontier))).all()
            for buyer_id, party_id, code, role in rows:
                edges[buyer_id].append((party_id, code, role))
            frontier = {pid for _, pid, _, role in rows if role != "brand"} - edges.keys()
        return {seller: _brands_from(seller, edges) for seller in sellers}

    def network_brands(self) -> list[str]:
        if self._network_brands is None:
            self._network_brands = list(self.session.scalars(
                select(Party.code).where(Party.role == "brand").order_by(Party.code).limit(2)))
        return self._network_brands

    def suppliers(self, seller_id: int) -> list[str]:
        if self._suppliers is None:
            self._suppliers = {}
            rows = self.session.execute(
                select(SupplyRelationship.buyer_id, Party.code)
                .join(Party, Party.id == SupplyRelationship.seller_id)
                .where(SupplyRelationship.buyer_id.in_(sorted(self.sellers)),
                       SupplyRelationship.status == "active"))
            for buyer_id, code in rows:
                self._suppliers.setdefault(buyer_id, []).append(code)
        return sorted(self._suppliers.get(seller_id, []))


def _brands_from(seller: int, edges: dict[int, list[tuple[int, str, str]]]) -> list[str]:
    """One seller's walk up ``edges``, level by level, as ``_brands_above``."""
    seen, level, brands = {seller}, {seller}, set()
    for _ in range(MAX_CHAIN_LEVELS):
        found = [edge for buyer in level for edge in edges.get(buyer, ())]
        brands |= {code for _, code, role in found if role == "brand"}
        level = {pid for pid, _, role in found if role != "brand"} - seen
        if not level:
            break
        seen |= level
    return sorted(brands)


class _Recipients:
    """``clearing_rules._Recipients`` over batch-loaded facts: resolves a
    leg's recipient to a party code for one order (same rules, same
    reasons); what ``clearing_rules._part`` asks of it."""

    def __init__(self, network: _Network, order: _OrderFacts):
        self.network, self.order = network, order
        self.seller = network.parties[order.seller_id]

    @staticmethod
    def _one(codes: list[str], none: str, several: str) -> tuple[str | None, str | None]:
        if len(codes) == 1:
            return codes[0], None
        return None, (none if not codes else f"{several}: {', '.join(codes)}")

    def brand(self) -> tuple[str | None, str | None]:
        if self.seller.role == "brand":
            return self.seller.code, None
        brands = self.network.brands_above(self.order.seller_id) or self.network.network_brands()
        return self._one(brands, "no brand above the seller, nor in the network",
                         "several brands above the seller")

    def buyer_upstream(self) -> tuple[str | None, str | None]:
        if self.order.upstream:
            return self._one(self.order.upstream, "", "upstream orders of several sellers")
        code = self.seller.code
        return self._one(self.network.suppliers(self.order.seller_id),
                         f"no upstream order, and {code} buys from no one",
                         f"no upstream order, and {code} buys from several")

    def resolve(self, recipient: str) -> tuple[str | None, str | None]:
        if recipient == "seller":
            return self.seller.code, None
        if recipient == "brand":
            return self.brand()
        if recipient == "buyer_upstream":
            return self.buyer_upstream()
        if recipient == "platform":
            return PLATFORM, None
        return recipient[len(PARTY_PREFIX):], None


def _load_orders(session: Session, refs: set[str]) -> dict[str, _OrderFacts]:
    """The orders, their lines (with category paths) and upstream sellers:
    three queries and the category tree, whatever the batch's size."""
    orders = {row.public_id: _OrderFacts(*row) for row in session.execute(
        select(Order.id, Order.public_id, Order.seller_id, Order.buyer_id, Order.currency,
               Order.total_minor).where(pg_bulk.among(session, Order.public_id, refs, "varchar")))}
    by_id = {o.id: o for o in orders.values()}
    if not by_id:
        return orders
    tree = paths(session, Category)
    for order_id, line_no, quantity, total, category_id in session.execute(
            select(OrderLine.order_id, OrderLine.line_no, OrderLine.quantity,
                   OrderLine.line_total_minor, Product.category_id)
            .join(Sku, Sku.id == OrderLine.sku_id).join(Product, Product.id == Sku.product_id)
            .where(pg_bulk.among(session, OrderLine.order_id, by_id, "bigint"))
            .order_by(OrderLine.order_id, OrderLine.line_no)):
        by_id[order_id].lines.append(_Line(line_no, quantity, total, tree[category_id]))
    upstream = aliased(Order)
    for downstream_id, code in session.execute(
            select(OrderLink.downstream_id, Party.code)
            .join(upstream, upstream.id == OrderLink.upstream_id)
            .join(Party, Party.id == upstream.seller_id)
            .where(pg_bulk.among(session, OrderLink.downstream_id, by_id, "bigint"))):
        by_id[downstream_id].upstream.append(code)
    for order in by_id.values():
        order.upstream = sorted(set(order.upstream))
    return orders


def _load_parties(session: Session, orders: Iterable[_OrderFacts]) -> dict[int, _PartyFacts]:
    ids = {o.seller_id for o in orders} | {o.buyer_id for o in orders}
    return {pid: _PartyFacts(code, role) for pid, code, role in session.execute(
        select(Party.id, Party.code, Party.role).where(pg_bulk.among(session, Party.id, ids, "bigint")))}


class _Rules:
    """The rules, read once per batch; the choice for one set of facts is
    memoised (every order of a seller, path, buyer and method shares it)."""

    def __init__(self, session: Session):
        rows = list(session.scalars(select(ClearingRule).order_by(ClearingRule.code)))
        self.specs = [_spec(row) for row in rows]
        self.versions = {row.code: row.version for row in rows}
        self._chosen: dict[RuleFacts, ClearingRuleSpec | None] = {}

    def choose(self, facts: RuleFacts) -> ClearingRuleSpec | None:
        if facts not in self._chosen:
            self._chosen[facts] = choose(self.specs, facts)
        return self._chosen[facts]


# -- one arrival: the parts of explain_for_order -------------------------------------------

class _NotCleared(Exception):
    """An arrival that clears nothing, with its reason (``BatchResult.skipped``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _parts(order: _OrderFacts, method: str, cash: int, at: datetime, mode: str,
           seller: str, buyer: str, rules: _Rules,
           recipients: _Recipients) -> list[PreviewPart]:
    """``explain_for_order``'s parts for ``cash`` of the order (copied: its
    grouping of lines by the rule each category path chooses, and the
    proportional cash of each part), without the per-rule explanations
    clearing does not need."""
    groups: dict[str | None, tuple[ClearingRuleSpec | None, list[_Line]]] = {}
    by_path: dict[tuple[str, ...], list[_Line]] = {}
    for line in order.lines:
        by_path.setdefault(line.path, []).append(line)
    for path, path_lines in by_path.items():
        chosen = rules.choose(RuleFacts(mode, path, seller, buyer, method, at))
        groups.setdefault(chosen.code if chosen else None, (chosen, []))[1].extend(path_lines)
    one_part = len(groups) == 1
    wholes = {code: order.total_minor if one_part else sum(l.total_minor for l in group[1])
              for code, group in groups.items()}
    try:
        portions = _portions(cash, wholes)
    except InvalidInput:
        raise _NotCleared("cash_exceeds_order") from None
    parts = []
    for code, (rule, part_lines) in groups.items():
        part_lines.sort(key=lambda l: l.line_no)
        parts.append(_part(rule, rules.versions.get(code) if code else None, part_lines,
                           portions[code], [], recipients, whole=wholes[code]))
    parts.sort(key=lambda p: p.lines[0] if p.lines else 0)
    return parts


def _legs(parts: list[PreviewPart]) -> list[tuple[PreviewPart, ShareView]]:
    """The legs ``clear_cash`` posts, or why it posts none."""
    if any(part.rule is None for part in parts):
        raise _NotCleared("no_rule")
    if any(part.problem for part in parts):
        raise _NotCleared("split_failed")
    legs = [(part, share) for part in parts for share in part.shares if share.amount_minor]
    if not legs:
        raise _NotCleared("nothing_to_clear")
    if any(share.party is None for _, share in legs):
        raise _NotCleared("unresolved_recipient")
    return legs


@dataclass
class _Clearing:
    """One arrival on its way to the ledger: its entry, its documents, and
    the release entries of the documents already due."""

    arrival: CashArrival
    currency: str
    request: EntryRequest
    rows: list[dict]
    releases: list[tuple[dict, EntryRequest]] = field(default_factory=list)


@dataclass
class _Batch:
    """What ``clear_many`` knows of its batch once the facts are loaded."""

    session: Session
    rules: _Rules
    orders: dict[str, _OrderFacts]
    network: _Network
    delivered: dict[str, datetime]
    carriers: dict[str, tuple[str, str]]
    now: datetime
    tz: ZoneInfo

    def __post_init__(self):
        self.calendar = _calendar(self.session)

    def plan(self, arrival: CashArrival) -> _Clearing:
        """The clearing of one arrival, or ``_NotCleared``."""
        if arrival.method not in PAYMENT_METHODS:
            raise _NotCleared("unknown_method")
        order = self.orders.get(arrival.order_ref)
        if order is None:
            raise _NotCleared("unknown_order")
        seller = self.network.parties[order.seller_id]
        buyer = self.network.parties[order.buyer_id]
        try:
            mode = trade_mode(seller.role, buyer.role, bool(order.upstream))
        except ValueError:
            raise _NotCleared("no_trade_mode") from None
        parts = _parts(order, arrival.method, arrival.amount_minor, self.now, mode, seller.code,
                       buyer.code, self.rules, _Recipients(self.network, order))
        return self._clearing(arrival, order, seller.code, buyer.code, _legs(parts))

    def _clearing(self, arrival: CashArrival, order: _OrderFacts, seller: str, buyer: str,
                  legs: list[tuple[PreviewPart, ShareView]]) -> _Clearing:
        ccy, escrow = order.currency, escrow_account(order.public_id)
        # One debit of the escrow for the cash cleared, a credit per leg (as clear_cash).
        cleared = sum(share.amount_minor for _, share in legs)
        postings, rows = [PostingLine(escrow, "debit", cleared, ccy)], []
        for part, share in legs:
            account = PLATFORM_REVENUE if share.party == PLATFORM else pending_account(share.party)
            postings.append(PostingLine(account, "credit", share.amount_minor, ccy))
            rows.append(self._row(arrival, order, seller, buyer, part, share))
        request = EntryRequest(
            code="order.clear", description=f"clearing of {order.public_id} ({arrival.method})",
            idempotency_key=f"clear:{arrival.cause}",
            metadata={"order": order.public_id, "cause": arrival.cause}, postings=postings)
        clearing = _Clearing(arrival, ccy, request, rows)
        clearing.releases = [(row, _release_request(row, row["amount_minor"]))
                             for row in rows if row["state"] == "pending" and self._due(row)]
        return clearing

    def _row(self, arrival: CashArrival, order: _OrderFacts, seller: str, buyer: str,
             part: PreviewPart, share: ShareView) -> dict:
        """The document's columns; ``release_at`` is what ``clear_cash``
        writes and its ``release_due`` then dates from the delivery."""
        platform = share.party == PLATFORM
        carried_by, carrier_payment = (self.carriers.get(order.public_id, (None, None))
                                       if _gateway_cause(arrival) else (None, None))
        return dict(
            public_id=f"doc_{new_uuid7().hex}", order_ref=order.public_id, seller=seller,
            buyer=buyer, cause=arrival.cause, payment_method=arrival.method,
            rule_code=part.rule, rule_version=part.rule_version, leg_index=share.leg_index,
            basis=share.basis, recipient=share.party, amount_minor=share.amount_minor,
            clawed_minor=0, currency=order.currency, timing_kind=share.timing.kind,
            timing_days=share.timing.days, timing_anchor=share.timing.anchor,
            # Revenue: nothing to release.
            state="released" if platform else "pending",
            release_at=_release_at(self.calendar, share.timing, self.now,
                                   self.delivered.get(order.public_id), self.tz),
            cleared_at=self.now, released_at=self.now if platform else None,
            entry_id=None, release_entry_id=None, carried_by=carried_by,
            carrier_payment=carrier_payment)

    def _due(self, row: dict) -> bool:
        """Whether the release job would release the new leg now; a leg a
        gateway carries is never released to a wallet (split instructions
        carry it)."""
        return (row["carried_by"] is None and row["release_at"] is not None
                and row["release_at"] <= self.now)


def _release_request(row: Mapping, amount: int) -> EntryRequest:
    """The entry that releases one leg, as ``release_due`` posts it."""
    return EntryRequest(
        code="clearing.release", idempotency_key=f"{row['public_id']}:release",
        metadata={"order": row["order_ref"], "document": row["public_id"]},
        postings=[PostingLine(pending_account(row["recipient"]), "debit", amount,
                              row["currency"]),
                  PostingLine(wallet_account(row["recipient"]), "credit", amount,
                              row["currency"])])


# -- clear_many -----------------------------------------------------------------------------

class _Tally:
    def __init__(self):
        self.reasons: Counter[str] = Counter()
        self.skips: list[Skip] = []

    def skip(self, arrival: CashArrival, reason: str) -> None:
        self.reasons[reason] += 1
        self.skips.append(Skip(arrival.order_ref, arrival.cause, reason))

    def result(self, done: Sequence[_Clearing] = (), released: int = 0) -> BatchResult:
        amounts: Counter[str] = Counter()
        for clearing in done:
            amounts[clearing.currency] += sum(row["amount_minor"] for row in clearing.rows)
        if self.reasons:
            log.warning("clearing batch: %d arrival(s) not cleared: %s", len(self.skips),
                        dict(self.reasons), extra={"skipped": dict(self.reasons)})
        return BatchResult(len(done), len({c.arrival.order_ref for c in done}), dict(amounts),
                           sum(len(c.rows) for c in done), released, dict(self.reasons),
                           tuple(self.skips))


def clear_many(session: Session, arrivals: Sequence[CashArrival], *,
               now: datetime | None = None, tz: ZoneInfo = BUSINESS_TZ) -> BatchResult:
    """Clear every arrival as ``clearings.clear_cash`` would, in one ledger
    call (module docstring). Flushes; the caller owns the transaction."""
    now = as_utc(now) if now is not None else utcnow()
    tally = _Tally()
    todo = _admissible(session, arrivals, tally)
    rules = _Rules(session) if todo else None
    if rules is not None and not rules.specs:
        # No rules at all: the common case of a network not clearing yet.
        for arrival in todo:
            tally.skip(arrival, "no_rules")
        todo = []
    if not todo:
        return tally.result()
    batch = _facts(session, todo, rules, now, tz)
    planned = []
    for arrival in todo:
        try:
            planned.append(batch.plan(arrival))
        except _NotCleared as why:
            tally.skip(arrival, why.reason)
    earlier = _earlier(session, batch, {c.arrival.order_ref for c in planned})
    _open_accounts(session, planned)
    done, earlier_released = [], []
    for group in _groups(planned, earlier):
        posted, released = _post(session, group, earlier, now, tally)
        done += posted
        earlier_released += released
    _insert_rows(session, [row for clearing in done for row in clearing.rows])
    _mark_released(session, earlier_released, now)
    released_now = sum(row["state"] == "released" for c in done for row in c.rows)
    return tally.result(done, released_now + len(earlier_released))


def _admissible(session: Session, arrivals: Sequence[CashArrival],
                tally: _Tally) -> list[CashArrival]:
    """Arrivals with cash whose cause was not cleared before, nor earlier
    in this batch (once per cause)."""
    seen: set[str] = set()
    todo = []
    for arrival in arrivals:
        if arrival.amount_minor <= 0:
            tally.skip(arrival, "no_cash")
        elif arrival.cause in seen:
            tally.skip(arrival, "already_cleared")
        else:
            seen.add(arrival.cause)
            todo.append(arrival)
    done = _cleared_causes(session, [a.cause for a in todo])
    for arrival in [a for a in todo if a.cause in done]:
        tally.skip(arrival, "already_cleared")
    return [a for a in todo if a.cause not in done]


def _cleared_causes(session: Session, causes: list[str]) -> set[str]:
    """Causes cleared before. A clearing's entry (key ``clear:{cause}``) and
    its documents are written in one transaction, so an entry under the key
    means the cause was cleared; the key is uniquely indexed, while
    ``clearing_share.cause`` has no index at all."""
    if not causes:
        return set()
    keys = session.scalars(select(JournalEntry.idempotency_key).where(
        pg_bulk.among(session, JournalEntry.idempotency_key, [f"clear:{c}" for c in causes], "varchar")))
    return {key[len("clear:"):] for key in keys}


def _facts(session: Session, todo: list[CashArrival], rules: _Rules, now: datetime,
           tz: ZoneInfo) -> _Batch:
    refs = {a.order_ref for a in todo}
    orders = _load_orders(session, refs)
    network = _Network(session, _load_parties(session, orders.values()),
                       {o.seller_id for o in orders.values()})
    return _Batch(session, rules, orders, network, _delivered_at(session, orders),
                  _carriers(session, todo), now, tz)


def _delivered_at(session: Session, refs: Iterable[str]) -> dict[str, datetime]:
    """``clearings._delivered_at``: when each of these orders was delivered
    (those that were), the orders named in one array (``_among``)."""
    refs = set(refs)
    if not refs:
        return {}
    rows = session.execute(select(Order.public_id, func.min(OrderEvent.at))
                           .join(Order, Order.id == OrderEvent.order_id)
                           .where(pg_bulk.among(session, Order.public_id, refs, "varchar"),
                                  OrderEvent.to_state == "delivered")
                           .group_by(Order.public_id)).all()
    return {public_id: as_utc(at) for public_id, at in rows}


def _gateway_cause(arrival: CashArrival) -> bool:
    """An order's gateway part: the one cause whose cash a gateway may hold."""
    return arrival.cause == f"{arrival.order_ref}:gateway"


def _carriers(session: Session, todo: list[CashArrival]) -> dict[str, tuple[str, str]]:
    """``clearings._carrier`` for the batch, in one query: for an order's
    gateway part collected with the seller as payee at gateway G, its legs
    are carried by ``gateway:G`` (the money is at G, never in custody):
    order -> (``gateway:G``, payment)."""
    refs = {a.order_ref for a in todo if _gateway_cause(a)}
    if not refs:
        return {}
    carriers: dict[str, tuple[str, str]] = {}
    for ref, gateway, payment in session.execute(
            select(Payment.reference, Payment.gateway, Payment.public_id)
            .where(pg_bulk.among(session, Payment.reference, refs, "varchar"),
                   Payment.purpose == "order", Payment.state == "succeeded",
                   Payment.payee_account.is_not(None)).order_by(Payment.id)):
        carriers.setdefault(ref, (f"gateway:{gateway}", payment))
    return carriers


def _account_codes(recipient: str) -> tuple[str, ...]:
    if recipient == PLATFORM:
        return (PLATFORM_REVENUE,)
    return pending_account(recipient), wallet_account(recipient)


def _open_accounts(session: Session, planned: list[_Clearing]) -> None:
    """The recipients' accounts, opened as ``clear_cash`` opens them (the
    brand's with 8 balance shards: it takes a leg of almost every order);
    one read finds the few that are missing."""
    wanted: dict[str, str] = {}   # recipient -> currency
    for clearing in planned:
        for row in clearing.rows:
            wanted.setdefault(row["recipient"], row["currency"])
    if not wanted:
        return
    codes = [code for recipient in wanted for code in _account_codes(recipient)]
    present = set(session.scalars(select(Account.code).where(
        pg_bulk.among(session, Account.code, codes, "varchar"))))
    # In code order, so two batches opening the same accounts wait for each
    # other in one order instead of deadlocking on the unique code index.
    missing = sorted(r for r in wanted if not set(_account_codes(r)) <= present)
    if not missing:
        return
    roles = dict(session.execute(select(Party.code, Party.role).where(
        Party.code.in_([r for r in missing if r != PLATFORM]))).all())
    # One statement pair per shard count, not per account (the first batches
    # of a run open thousands).
    by_shards: dict[int, list[tuple]] = {}
    for recipient in missing:
        ccy = wanted[recipient]
        if recipient == PLATFORM:
            ensure_platform_revenue(session, ccy)
            continue
        shards = BRAND_SHARDS if roles.get(recipient) == "brand" else 1
        by_shards.setdefault(shards, []).extend([
            (pending_account(recipient), f"Pending for {recipient}", "liability", ccy, recipient, 0),
            (wallet_account(recipient), f"Wallet of {recipient}", "liability", ccy, recipient, 0)])
    for shards, specs in sorted(by_shards.items()):
        ensure_all(session, specs, shards=shards)


@dataclass
class _EarlierLeg:
    """A pending document of an earlier cause of an order in the batch,
    locked, with its release date once dated from a delivery."""

    row: Any
    release_at: datetime | None
    dated: bool

    def due(self, now: datetime) -> bool:
        """Whether to release it now (never a leg a gateway carries)."""
        return (self.row.carried_by is None and self.release_at is not None
                and self.release_at <= now)


def _earlier(session: Session, batch: _Batch, refs: set[str]) -> dict[str, list[_EarlierLeg]]:
    """What ``clear_cash``'s ``release_due`` for each order does to the
    order's documents of earlier causes, found before posting so that their
    releases go into the same ledger call: those waiting for a delivery that
    happened get their date, those due are released. Usually there are none.
    The rows are locked (share rows first, then balances, as ``release_many``
    and ``clearings.claw_back`` lock them); a row another transaction holds
    (a release job, a clawback) is left to the release job."""
    if not refs:
        return {}
    rows = session.execute(select(
        ClearingShare.id, ClearingShare.public_id, ClearingShare.order_ref,
        ClearingShare.recipient, ClearingShare.currency, ClearingShare.amount_minor,
        ClearingShare.clawed_minor, ClearingShare.timing_kind, ClearingShare.timing_days,
        ClearingShare.timing_anchor, ClearingShare.release_at, ClearingShare.cleared_at,
        ClearingShare.carried_by)
        .where(pg_bulk.among(session, ClearingShare.order_ref, refs, "varchar"),
               ClearingShare.state == "pending")
        .order_by(ClearingShare.id).with_for_update(skip_locked=True)).all()
    dated = _dates(batch.calendar, [row for row in rows if row.release_at is None],
                   batch.delivered, batch.tz)
    earlier: dict[str, list[_EarlierLeg]] = {}
    for row in rows:
        at = dated.get(row.id) or (as_utc(row.release_at) if row.release_at else None)
        earlier.setdefault(row.order_ref, []).append(_EarlierLeg(row, at, row.id in dated))
    return earlier


def _groups(planned: list[_Clearing],
            earlier: Mapping[str, list[_EarlierLeg]]) -> list[list[_Clearing]]:
    """The clearings in groups whose entries fit one ledger call (MAX_BATCH):
    one group unless the batch releases many legs at once. Each group is
    posted by its own call."""
    groups: list[list[_Clearing]] = [[]]
    size, seen = 0, set()
    for clearing in planned:
        ref = clearing.arrival.order_ref
        need = 1 + len(clearing.releases) + (len(earlier.get(ref, ())) if ref not in seen else 0)
        seen.add(ref)
        if size + need > MAX_BATCH and groups[-1]:
            groups.append([])
            size = 0
        groups[-1].append(clearing)
        size += need
    return groups


def _post(session: Session, planned: list[_Clearing], earlier: dict[str, list[_EarlierLeg]],
          now: datetime, tally: _Tally) -> tuple[list[_Clearing], list[tuple[int, str | None]]]:
    """Every entry of the group in **one** ``post_entries`` call: the
    clearings, the releases of their legs already due, the releases of the
    due legs of earlier causes of their orders. The call runs in a
    savepoint. When the ledger refuses a clearing (an escrow short of the
    cash) or answers it as a replay (its cause cleared by a transaction
    that committed after ``_admissible`` looked), the savepoint is rolled
    back and the call made again without that clearing: no document and
    no release is ever written for cash this call did not clear. A release
    the ledger refuses (a frozen wallet) leaves its leg pending for the
    release job. Returns the clearings posted (their documents filled in)
    and the earlier legs released (id, release entry); the orders' earlier
    legs are dated and taken out of ``earlier``."""
    while planned:
        refs = list(dict.fromkeys(c.arrival.order_ref for c in planned))
        early = [leg for ref in refs for leg in earlier.get(ref, ()) if leg.due(now)]
        moving = [leg for leg in early if _left(leg.row)]
        requests = ([c.request for c in planned]
                    + [request for c in planned for _, request in c.releases]
                    + [_release_request(leg.row._mapping, _left(leg.row)) for leg in moving])
        point = session.begin_nested()
        results = ledger.post_entries(session, requests)
        refused = [(c, r) for c, r in zip(planned, results) if not r.ok or r.replayed]
        if not refused:
            point.commit()
            break
        point.rollback()
        for clearing, result in refused:
            tally.skip(clearing.arrival, _refusal(result))
        planned = [c for c, r in zip(planned, results) if r.ok and not r.replayed]
    else:
        return [], []
    releases = iter(results[len(planned):])
    for clearing, result in zip(planned, results):
        for row in clearing.rows:
            row["entry_id"] = result.entry.id
        for row, _ in clearing.releases:
            released = next(releases)
            if released.ok:
                row.update(state="released", released_at=row["cleared_at"],
                           release_entry_id=released.entry.id)
    _set_release_at(session, {leg.row.id: leg.release_at for ref in refs
                              for leg in earlier.get(ref, ()) if leg.dated})
    for ref in refs:
        earlier.pop(ref, None)
    return planned, _marks(early, dict(zip((leg.row.id for leg in moving), releases)))


def _refusal(result) -> str:
    """Why the ledger did not post a clearing: its cause cleared meanwhile
    (a replay, or the key taken by another split), or its error's code."""
    if result.ok or isinstance(result.error, ledger.IdempotencyConflict):
        return "already_cleared"
    return f"refused:{getattr(result.error, 'code', 'error')}"


def _left(row) -> int:
    """What a leg still has to release: what was not clawed back."""
    return row.amount_minor - row.clawed_minor


def _marks(due: Sequence, results: Mapping[int, Any]) -> list[tuple[int, str | None]]:
    """The due legs to mark released, with their release entry: those whose
    release the ledger posted, and those clawed back in full (nothing to
    release). ``due`` are rows or ``_EarlierLeg``s; ``results`` by row id."""
    marked, refused = [], 0
    for item in due:
        row = getattr(item, "row", item)
        result = results.get(row.id)
        if result is None:
            marked.append((row.id, None))
        elif result.ok:
            marked.append((row.id, result.entry.id))
        else:
            refused += 1
    if refused:
        log.warning("release: %d leg(s) refused by the ledger, left pending", refused)
    return marked


# -- release ---------------------------------------------------------------------------------

def release_many(session: Session, *, now: datetime | None = None, limit: int = 5000,
                 tz: ZoneInfo = BUSINESS_TZ) -> int:
    """The release job in batches: up to ``limit`` due legs (at most the
    ledger's batch) move from pending to the wallet, all their entries in
    one ``post_entries`` call. Legs waiting for a delivery that happened
    are dated first, but only when fewer than ``limit`` are due: dating
    looks at every waiting leg, and while a backlog of due legs remains
    that pass would find nothing the next calls need. Returns legs released."""
    now = as_utc(now) if now is not None else utcnow()
    limit = max(1, min(limit, MAX_BATCH))
    due = _due(session, now, limit)
    if len(due) < limit and date_waiting(session, tz=tz):
        due = _due(session, now, limit)
    return _release(session, due, now)


def _due(session: Session, now: datetime, limit: int) -> list:
    """Due legs the custody account holds (not those a gateway carries),
    oldest due first (the due index gives that order, where ordering by id
    would sort every due leg). On PostgreSQL locked legs are skipped:
    another releaser, or a clawback changing one, has them."""
    return session.execute(
        select(ClearingShare.id, ClearingShare.public_id, ClearingShare.order_ref,
               ClearingShare.recipient, ClearingShare.currency, ClearingShare.amount_minor,
               ClearingShare.clawed_minor)
        .where(ClearingShare.state == "pending", ClearingShare.release_at <= now,
               ClearingShare.carried_by.is_(None))
        .order_by(ClearingShare.release_at, ClearingShare.id).limit(limit)
        .with_for_update(skip_locked=True)).all()


def date_waiting(session: Session, *, tz: ZoneInfo = BUSINESS_TZ) -> int:
    """Give every leg waiting for a delivery that has happened its release
    date (``clearings.date_waiting`` over all waiting legs, custody and
    gateway-carried alike, in chunks by id). Returns how many were dated."""
    calendar, last, dated = _calendar(session), 0, 0
    while True:
        rows = session.execute(
            select(ClearingShare.id, ClearingShare.order_ref, ClearingShare.timing_kind,
                   ClearingShare.timing_days, ClearingShare.timing_anchor,
                   ClearingShare.cleared_at)
            .where(ClearingShare.state == "pending", ClearingShare.release_at.is_(None),
                   ClearingShare.id > last)
            .order_by(ClearingShare.id).limit(DATING_CHUNK)).all()
        if not rows:
            return dated
        last = rows[-1].id
        dates = _dates(calendar, rows, _delivered_at(session, {r.order_ref for r in rows}), tz)
        _set_release_at(session, dates)
        dated += len(dates)


def _dates(calendar, rows: Sequence, delivered: Mapping[str, datetime],
           tz: ZoneInfo) -> dict[int, datetime]:
    """Release dates of the waiting legs ``rows`` whose order was delivered."""
    return {row.id: _release_at(calendar, Timing(row.timing_kind, row.timing_days,
                                                 row.timing_anchor),
                                as_utc(row.cleared_at), delivered[row.order_ref], tz)
            for row in rows if row.order_ref in delivered}


def _release(session: Session, due: Sequence, now: datetime) -> int:
    """Post the releases of ``due`` legs in one call and mark them released
    (``_marks``: a leg clawed back in full is done without an entry; one the
    ledger refuses stays pending for the next run)."""
    moving = [row for row in due if _left(row)]
    requests = [_release_request(row._mapping, _left(row)) for row in moving]
    results = ledger.post_entries(session, requests) if requests else []
    marked = _marks(due, dict(zip((row.id for row in moving), results)))
    _mark_released(session, marked, now)
    return len(marked)


# -- bulk writes -------------------------------------------------------------------------------
# On PostgreSQL each column travels as one array literal ('{...}') spread by
# unnest, as the ledger's writer does: the server parses one constant per
# column, not a placeholder per value. A Core executemany would send 25,000
# placeholders per 1,000 documents (measured: the documents' insert took
# longer than the ledger's write), and an executemany UPDATE runs row by row
# under psycopg2. Elsewhere (SQLite, in process) the portable Core
# statements cost nothing more.

_SHARE_TYPES = {
    "public_id": "varchar", "order_ref": "varchar", "seller": "varchar", "buyer": "varchar",
    "cause": "varchar", "payment_method": "varchar", "rule_code": "varchar",
    "rule_version": "integer", "leg_index": "integer", "basis": "varchar",
    "recipient": "varchar", "amount_minor": "bigint", "clawed_minor": "bigint",
    "currency": "varchar", "timing_kind": "varchar", "timing_days": "integer",
    "timing_anchor": "varchar", "state": "varchar", "release_at": "timestamptz",
    "cleared_at": "timestamptz", "released_at": "timestamptz", "entry_id": "varchar",
    "release_entry_id": "varchar", "carried_by": "varchar", "carrier_payment": "varchar"}
_PG_RELEASED = text(
    "UPDATE clearing_share AS c SET state = 'released', released_at = :now, "
    "release_entry_id = v.entry_id "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:entries AS varchar[])) AS v(id, entry_id) "
    "WHERE c.id = v.id")
_PG_DATED = text(
    "UPDATE clearing_share AS c SET release_at = v.release_at "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:ats AS timestamptz[])) AS v(id, release_at) "
    "WHERE c.id = v.id")
_RELEASED = (update(_SHARES).where(_SHARES.c.id == bindparam("b_id"))
             .values(state="released", released_at=bindparam("b_now"),
                     release_entry_id=bindparam("b_entry")))
_DATED = (update(_SHARES).where(_SHARES.c.id == bindparam("b_id"))
          .values(release_at=bindparam("b_at")))


def _insert_rows(session: Session, rows: list[dict]) -> None:
    pg_bulk.insert_rows(session, _SHARES, _SHARE_TYPES, rows)


def _mark_released(session: Session, marked: list[tuple[int, str | None]],
                   now: datetime) -> None:
    if not marked:
        return
    if pg_bulk.postgresql(session):
        session.execute(_PG_RELEASED, {"now": now,
                                       "ids": pg_bulk.array_literal([i for i, _ in marked], "bigint"),
                                       "entries": pg_bulk.array_literal([e for _, e in marked], "varchar")})
    else:
        session.execute(_RELEASED, [{"b_id": i, "b_now": now, "b_entry": e} for i, e in marked])


def _set_release_at(session: Session, dated: Mapping[int, datetime]) -> None:
    if not dated:
        return
    if pg_bulk.postgresql(session):
        session.execute(_PG_DATED, {"ids": pg_bulk.array_literal(dated, "bigint"),
                                    "ats": pg_bulk.array_literal(dated.values(), "timestamptz")})
    else:
        session.execute(_DATED, [{"b_id": i, "b_at": at} for i, at in dated.items()])
