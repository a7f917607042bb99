"""Use cases of price strategies and of resolving prices: create, change,
read strategies; one SKU's price with its explanation; a buyer's price list.

The rule itself lives in ``pricing.py`` (pure); this module loads what it
needs (the assortment the buyer may buy, the buyer's facts, the seller's
strategies and the SKUs) in a fixed handful of queries and hands it over.
A strategy changing afterwards never re-prices an order: orders (a later
issue) freeze the unit price, strategy code and version onto their lines.
"""
from __future__ import annotations

from bisect import bisect_right
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, delete, insert, or_, select
from sqlalchemy.orm import Session

from ledger import as_utc, new_uuid7, prepared, utcnow

from . import audit, pricing
from . import snapshots
from .assortment import assortment_from, assortment_of
from .catalog import load_catalog, validate_code, validate_currency, validate_limit, validate_name
from .errors import (
    CustomerTypeNotFound,
    GradeNotFound,
    GroupNotFound,
    InvalidInput,
    NotPurchasable,
    PartyNotFound,
    RegionNotFound,
    SkuNotFound,
    StrategyExists,
    StrategyNotFound,
)
from .facts import buyer_facts, labels_and_tokens
from .models import (
    Category,
    CustomerType,
    Grade,
    Party,
    PartyGroup,
    PriceStrategy,
    PriceTier,
    Product,
    Region,
    Sku,
)
from .network import product_scope_from
from .parties import party_row
from .pg_bulk import postgresql
from .scopes import CustomerScope, ProductScope, ScopeError
from .trees import path_of, paths

STRATEGY_PREFIX = "ps_"
_KEEP: Any = object()
MAX_TIERS = 10_000
# Customer-scope dimensions whose codes must exist (tags are free text).
_DIMENSION_TABLES = {
    "parties": (Party, PartyNotFound), "regions": (Region, RegionNotFound),
    "customer_types": (CustomerType, CustomerTypeNotFound), "grades": (Grade, GradeNotFound),
    "groups": (PartyGroup, GroupNotFound),
}


@dataclass(frozen=True)
class TierView:
    sku: str | None
    min_qty: int
    price_minor: int | None
    percent_bp: int | None


@dataclass(frozen=True)
class StrategyView:
    public_id: str
    code: str
    name: str
    owner_code: str
    status: str
    priority: int
    rule: str
    currency: str
    product_scope: dict[str, Any]
    customer_scope: dict[str, Any]
    valid_from: datetime
    valid_to: datetime | None
    tiers: tuple[TierView, ...]
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class PriceQuote:
    """One SKU's price for a buyer from a seller, with the explanation."""

    seller: str
    buyer: str
    at: datetime
    relationship: str
    resolution: pricing.Resolution


@dataclass(frozen=True)
class PriceList:
    seller: str
    buyer: str
    at: datetime
    relationship: str
    lines: tuple[pricing.PriceLine, ...]
    next_cursor: str | None


# -- input ------------------------------------------------------------------------------

def _seller(session: Session, owner: Any) -> Party:
    try:
        row = party_row(session, owner)
    except PartyNotFound:
        raise PartyNotFound(f"no owner {owner!r}", field="owner") from None
    if row.role not in ("brand", "distributor"):
        raise InvalidInput("a price strategy belongs to a seller: the brand or a distributor",
                           field="owner")
    return row


class Lookup(Protocol):
    """What checking a strategy asks of the stored data. ``DbLookup`` asks the
    database; the CSV import answers from maps it loaded once, so a file of
    20,000 strategies is checked by exactly the same rules without 20,000
    rounds of queries."""

    def missing(self, dimension: str, codes: frozenset[str]) -> list[str]:
        """Codes of ``dimension`` (categories, skus, parties, regions,
        customer_types, grades, groups) that do not exist, sorted."""

    def sku_paths(self, codes: set[str]) -> dict[str, tuple[int, tuple[str, ...]]]:
        """SKU code → (row id, category path root first), for existing SKUs."""


class DbLookup:
    _MODELS = {"categories": Category, "skus": Sku, **{k: m for k, (m, _) in _DIMENSION_TABLES.items()}}

    def __init__(self, session: Session):
        self.session = session

    def missing(self, dimension: str, codes: frozenset[str]) -> list[str]:
        if not codes:
            return []
        model = self._MODELS[dimension]
        found = set(self.session.scalars(select(model.code).where(model.code.in_(codes))))
        return sorted(codes - found)

    def sku_paths(self, codes: set[str]) -> dict[str, tuple[int, tuple[str, ...]]]:
        if not codes:
            return {}
        rows = self.session.execute(select(Sku.code, Sku.id, Product.category_id)
                                    .join(Product, Product.id == Sku.product_id)
                                    .where(Sku.code.in_(codes))).all()
        return {code: (sku_id, path_of(self.session, Category, category_id))
                for code, sku_id, category_id in rows}


def _customer_scope(lookup: Lookup, doc: Any) -> CustomerScope:
    try:
        scope = CustomerScope.from_json(doc or {})
    except ScopeError as exc:
        raise InvalidInput(str(exc), field=exc.field) from None
    for dimension, (_, not_found) in _DIMENSION_TABLES.items():
        missing = lookup.missing(dimension, getattr(scope, dimension))
        if missing:
            raise not_found(f"customer_scope names unknown {dimension}: {', '.join(missing)}",
                            field=f"customer_scope.{dimension}", codes=missing)
    return scope


def _tiers(tiers: Any) -> tuple[pricing.Tier, ...]:
    if not isinstance(tiers, (list, tuple)) or not tiers or len(tiers) > MAX_TIERS:
        raise InvalidInput(f"tiers must be a list of 1 to {MAX_TIERS} tiers", field="tiers")
    out = []
    for index, tier in enumerate(tiers):
        if not isinstance(tier, dict) or set(tier) - {"sku", "min_qty", "price_minor", "percent_bp"}:
            raise InvalidInput("a tier has sku, min_qty and price_minor or percent_bp",
                               field=f"tiers[{index}]")
        out.append(pricing.Tier(tier.get("sku"), tier.get("min_qty", 1), tier.get("price_minor"),
                                tier.get("percent_bp")))
    return tuple(out)


def check_strategy(lookup: Lookup, *, code, owner_code: str, name, rule, tiers, priority,
                   currency, product_scope, customer_scope, valid_from, valid_to, status,
                   version: int) -> tuple[str, pricing.Strategy, dict[str, int]]:
    """The strategy as ``pricing.Strategy`` with every rule checked (the API's
    and the CSV import's one check), its clean name, and the row ids of the
    SKUs its tiers name. Raises a ``ChannelError`` naming the field."""
    name = validate_name(name)
    product = product_scope_from(product_scope, lookup.missing)
    customers = _customer_scope(lookup, customer_scope)
    parsed_tiers = _tiers(tiers)
    named = {t.sku for t in parsed_tiers if isinstance(t.sku, str)}
    sku_rows = lookup.sku_paths(named)
    missing = sorted(named - set(sku_rows))
    if missing:
        raise SkuNotFound(f"tiers name unknown SKUs: {', '.join(missing)}", field="tiers.sku",
                          codes=missing)
    strategy = pricing.Strategy(
        code=code, owner=owner_code, priority=priority, rule=rule, currency=currency,
        product_scope=product, customer_scope=customers, valid_from=valid_from,
        valid_to=valid_to, status=status, tiers=parsed_tiers, version=version)
    try:
        pricing.validate_strategy(strategy, category_path_of=lambda sku: (
            sku_rows[sku][1] if sku in sku_rows else None))
    except pricing.StrategyRuleError as exc:
        raise InvalidInput(str(exc), field=exc.field) from None
    return name, strategy, {sku: sku_id for sku, (sku_id, _) in sku_rows.items()}


def _moment(value: Any, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput(f"{field} must be a date-time with a time zone", field=field)
    return as_utc(value)


# -- views ------------------------------------------------------------------------------

def _views(session: Session, rows: list[PriceStrategy]) -> list[StrategyView]:
    if not rows:
        return []
    owners = dict(session.execute(select(Party.id, Party.code).where(
        Party.id.in_({r.owner_id for r in rows}))).all())
    tiers: dict[int, list[TierView]] = {}
    for strategy_id, sku, min_qty, price, percent in session.execute(
            select(PriceTier.strategy_id, Sku.code, PriceTier.min_qty, PriceTier.price_minor,
                   PriceTier.percent_bp)
            .outerjoin(Sku, Sku.id == PriceTier.sku_id)
            .where(PriceTier.strategy_id.in_([r.id for r in rows]))
            .order_by(PriceTier.strategy_id, Sku.code, PriceTier.min_qty)):
        tiers.setdefault(strategy_id, []).append(TierView(sku, min_qty, price, percent))
    return [StrategyView(
        r.public_id, r.code, r.name, owners[r.owner_id], r.status, r.priority, r.rule,
        r.currency, dict(r.product_scope), dict(r.customer_scope), as_utc(r.valid_from),
        as_utc(r.valid_to) if r.valid_to else None, tuple(tiers.get(r.id, ())), r.version,
        as_utc(r.created_at), as_utc(r.updated_at)) for r in rows]


def _strategy_row(session: Session, code: str) -> PriceStrategy:
    row = session.scalars(select(PriceStrategy).where(or_(
        PriceStrategy.code == code, PriceStrategy.public_id == code))).one_or_none()
    if row is None:
        raise StrategyNotFound(f"no price strategy {code!r}", field="strategy", code=code)
    return row


def _same(view: StrategyView, strategy: pricing.Strategy, name: str) -> bool:
    tiers = sorted((t.sku or "", t.min_qty, t.price_minor, t.percent_bp) for t in strategy.tiers)
    stored = sorted((t.sku or "", t.min_qty, t.price_minor, t.percent_bp) for t in view.tiers)
    return (view.name, view.owner_code, view.status, view.priority, view.rule, view.currency,
            view.product_scope, view.customer_scope, view.valid_from, view.valid_to, stored) == (
        name, strategy.owner, strategy.status, strategy.priority, strategy.rule,
        strategy.currency, strategy.product_scope.to_json(), strategy.customer_scope.to_json(),
        strategy.valid_from, strategy.valid_to, tiers)


def _write_tiers(session: Session, strategy_id: int, strategy: pricing.Strategy,
                 sku_ids: dict[str, int]) -> None:
    session.execute(insert(PriceTier), [
        {"strategy_id": strategy_id, "sku_id": sku_ids[t.sku] if t.sku else None,
         "min_qty": t.min_qty, "price_minor": t.price_minor, "percent_bp": t.percent_bp}
        for t in strategy.tiers])


# -- strategies -----------------------------------------------------------------------

def create_strategy(session: Session, *, code: str, owner: str, name: str, rule: str,
                    tiers: list[dict[str, Any]], product_scope: dict[str, Any],
                    customer_scope: dict[str, Any] | None = None, priority: int = 0,
                    currency: str = "CNY", valid_from: datetime | None = None,
                    valid_to: datetime | None = None, status: str = "active",
                    actor: str) -> StrategyView:
    """A seller's price strategy. The same code with the same content returns
    the existing one (safe to retry); other content is ``strategy_exists``."""
    code = validate_code(code)
    currency = validate_currency(currency)
    seller = _seller(session, owner)
    start = _moment(valid_from, "valid_from") if valid_from is not None else utcnow()
    end = _moment(valid_to, "valid_to") if valid_to is not None else None
    name, strategy, sku_ids = check_strategy(
        DbLookup(session), code=code, owner_code=seller.code, name=name, rule=rule, tiers=tiers, priority=priority,
        currency=currency, product_scope=product_scope, customer_scope=customer_scope,
        valid_from=start, valid_to=end, status=status, version=1)
    existing = session.scalars(select(PriceStrategy).where(PriceStrategy.code == code)).one_or_none()
    if existing is not None:
        view = _views(session, [existing])[0]
        if valid_from is None:  # a retry without valid_from means "from when it was made"
            strategy = replace(strategy, valid_from=view.valid_from)
        if not _same(view, strategy, name):
            raise StrategyExists(f"price strategy {code!r} exists with other content; "
                                 "change it with update_strategy", field="code")
        return view
    now = utcnow()
    row = PriceStrategy(
        public_id=STRATEGY_PREFIX + new_uuid7().hex, code=code, name=name, owner_id=seller.id,
        status=strategy.status, priority=strategy.priority, rule=strategy.rule,
        currency=currency, product_scope=strategy.product_scope.to_json(),
        customer_scope=strategy.customer_scope.to_json(), valid_from=start, valid_to=end,
        created_at=now, updated_at=now, version=1)
    session.add(row)
    session.flush()
    _write_tiers(session, row.id, strategy, sku_ids)
    snapshots.bump(session, snapshots.strategies_key(seller.id))
    audit.record(session, actor=actor, action="strategy.create", subject_type="strategy",
                 subject=code, details={"owner": seller.code, "priority": strategy.priority,
                                        "rule": strategy.rule, "tiers": len(strategy.tiers)})
    session.flush()
    return _views(session, [row])[0]


def update_strategy(session: Session, code: str, *, name: str = _KEEP, status: str = _KEEP,
                    priority: int = _KEEP, valid_from: datetime = _KEEP,
                    valid_to: datetime | None = _KEEP, product_scope: dict = _KEEP,
                    customer_scope: dict = _KEEP, tiers: list[dict] = _KEEP,
                    actor: str) -> StrategyView:
    """Change what is given (``tiers`` replaces them all); the version goes up
    by one when anything changed. Prices already frozen on orders stay."""
    row = _strategy_row(session, code)
    view = _views(session, [row])[0]
    seller = session.get(Party, row.owner_id)
    keep = lambda given, current: current if given is _KEEP else given  # noqa: E731
    new_name, strategy, sku_ids = check_strategy(
        DbLookup(session), code=row.code, owner_code=seller.code, name=keep(name, view.name), rule=row.rule,
        tiers=keep(tiers, [t.__dict__ for t in view.tiers]),
        priority=keep(priority, view.priority), currency=row.currency,
        product_scope=keep(product_scope, view.product_scope),
        customer_scope=keep(customer_scope, view.customer_scope),
        valid_from=_moment(keep(valid_from, view.valid_from), "valid_from"),
        valid_to=(None if keep(valid_to, view.valid_to) is None
                  else _moment(keep(valid_to, view.valid_to), "valid_to")),
        status=keep(status, view.status), version=row.version + 1)
    if _same(view, strategy, new_name):
        return view
    changed = sorted(k for k, v in {"name": name, "status": status, "priority": priority,
                                    "valid_from": valid_from, "valid_to": valid_to,
                                    "product_scope": product_scope,
                                    "customer_scope": customer_scope, "tiers": tiers}.items()
                     if v is not _KEEP)
    row.name, row.status, row.priority = new_name, strategy.status, strategy.priority
    row.product_scope = strategy.product_scope.to_json()
    row.customer_scope = strategy.customer_scope.to_json()
    row.valid_from, row.valid_to = strategy.valid_from, strategy.valid_to
    row.version, row.updated_at = row.version + 1, utcnow()
    if tiers is not _KEEP:
        session.execute(delete(PriceTier).where(PriceTier.strategy_id == row.id))
        _write_tiers(session, row.id, strategy, sku_ids)
    snapshots.bump(session, snapshots.strategies_key(row.owner_id))
    audit.record(session, actor=actor, action="strategy.update", subject_type="strategy",
                 subject=row.code, details={"changed": changed, "version": row.version})
    session.flush()
    return _views(session, [row])[0]


def get_strategy(session: Session, code: str) -> StrategyView:
    return _views(session, [_strategy_row(session, code)])[0]


def list_strategies(session: Session, *, owner: str | None = None, status: str | None = None,
                    after: str | None = None, limit: int = 100
                    ) -> tuple[list[StrategyView], str | None]:
    """In code order; ``after`` is the cursor (the last code seen)."""
    limit = validate_limit(limit)
    query = select(PriceStrategy)
    if owner is not None:
        query = query.where(PriceStrategy.owner_id == _seller(session, owner).id)
    if status is not None:
        if status not in pricing.STRATEGY_STATUSES:
            raise InvalidInput("status must be active or inactive", field="status")
        query = query.where(PriceStrategy.status == status)
    if after:
        query = query.where(PriceStrategy.code > after)
    rows = list(session.scalars(query.order_by(PriceStrategy.code).limit(limit + 1)))
    views = _views(session, rows[:limit])
    return views, (views[-1].code if len(rows) > limit else None)


# -- resolving prices ----------------------------------------------------------------------

_S = PriceStrategy.__table__.c
_T = PriceTier.__table__.c
# One statement for a seller's strategies and their tiers (built once).
_SELLER_STRATEGIES = (
    select(_S.id, _S.code, _S.priority, _S.rule, _S.currency, _S.product_scope,
           _S.customer_scope, _S.valid_from, _S.valid_to, _S.status, _S.version,
           Sku.__table__.c.code.label("tier_sku"), _T.min_qty, _T.price_minor, _T.percent_bp)
    .select_from(PriceStrategy.__table__)
    .outerjoin(PriceTier.__table__, _T.strategy_id == _S.id)
    .outerjoin(Sku.__table__, Sku.__table__.c.id == _T.sku_id)
    .where(_S.owner_id == bindparam("owner_id"))
    .order_by(_S.code))


def _load_strategies(session: Session, seller) -> tuple[pricing.Strategy, ...]:
    """Every strategy of the seller with all its tiers, as pricing values
    (one statement; cached per process under the seller's token)."""
    heads: dict[int, Any] = {}
    tiers: dict[int, list[pricing.Tier]] = {}
    for row in session.execute(_SELLER_STRATEGIES, {"owner_id": seller.id}):
        heads.setdefault(row.id, row)
        if row.min_qty is not None:
            tiers.setdefault(row.id, []).append(
                pricing.Tier(row.tier_sku, row.min_qty, row.price_minor, row.percent_bp))
    return tuple(pricing.Strategy(
        code=row.code, owner=seller.code, priority=row.priority, rule=row.rule,
        currency=row.currency, product_scope=ProductScope.from_json(row.product_scope),
        customer_scope=CustomerScope.from_json(row.customer_scope),
        valid_from=as_utc(row.valid_from), valid_to=as_utc(row.valid_to) if row.valid_to else None,
        status=row.status, tiers=tuple(tiers.get(strategy_id, ())), version=row.version)
        for strategy_id, row in heads.items())


def _load_trees(session: Session) -> snapshots.Trees:
    return snapshots.Trees(paths(session, Region), paths(session, CustomerType))


def warm_caches(session: Session) -> int:
    """Load the trees, the catalog and every seller's strategies into this
    process's caches (a server calls it at start, so that no buyer waits for
    a seller's first load). Returns the number of sellers warmed."""
    names = [snapshots.TREES, snapshots.CATALOG]
    sellers = list(session.execute(select(Party.__table__.c.id, Party.__table__.c.code).where(
        Party.__table__.c.id.in_(select(PriceStrategy.owner_id).distinct()))))
    names += [snapshots.strategies_key(seller.id) for seller in sellers]
    tokens = snapshots.tokens(session, names)
    snapshots.cached(session, snapshots.TREES, tokens[snapshots.TREES],
                     lambda: _load_trees(session))
    snapshots.cached(session, snapshots.CATALOG, tokens[snapshots.CATALOG],
                     lambda: load_catalog(session))
    for seller in sellers:
        name = snapshots.strategies_key(seller.id)
        snapshots.cached(session, name, tokens[name], lambda: _load_strategies(session, seller))
    return len(sellers)


_PARTIES = Party.__table__
_PAIR = select(_PARTIES).where(or_(
    _PARTIES.c.code.in_([bindparam("seller"), bindparam("buyer")]),
    _PARTIES.c.public_id.in_([bindparam("seller"), bindparam("buyer")])))


def _pair(session: Session, seller: str, buyer: str):
    """Both parties in one prebuilt query, by code or public id, as rows with
    the party columns (lighter than ORM objects; only read here)."""
    session.flush()  # what the caller added is visible, as autoflush would make it
    rows = prepared.rows(session.connection(), "cl_party_pair", _PAIR,
                         {"seller": seller, "buyer": buyer})
    found = {}
    for field, key in (("seller", seller), ("buyer", buyer)):
        match = next((r for r in rows if r.public_id == key), None) or next(
            (r for r in rows if r.code == key), None)
        if match is None:
            raise PartyNotFound(f"no {field} {key!r}", field=field, code=key)
        found[field] = match
    return found["seller"], found["buyer"]


# On PostgreSQL what ``_pair``, ``labels_and_tokens`` and ``assortment_of``
# read, in one prepared statement: both parties, the relationship and the
# seller's sale permission, the buyer's grade, groups and tags, and the
# cache tokens (the seller's strategies' named from its id, as
# ``snapshots.strategies_key`` names them). Every order and price request
# starts here; three round trips were a sixth of an order's cost.
_PARTY_COLUMNS = tuple(column.key for column in _PARTIES.columns)
_PartyRow = namedtuple("_PartyRow", _PARTY_COLUMNS)
_REL_COLUMNS = ("id", "public_id", "status", "valid_from", "valid_to", "product_scope",
                "sale_party_id", "sale_regions", "sale_product_scope")
_RelationshipRow = namedtuple("_RelationshipRow", _REL_COLUMNS)
_PG_CONTEXT = (
    "SELECT " + ", ".join(f"s.{c}" for c in _PARTY_COLUMNS) + ", "
    + ", ".join(f"b.{c}" for c in _PARTY_COLUMNS) + ", "
    "rel.id, rel.public_id, rel.status, rel.valid_from, rel.valid_to, rel.product_scope, "
    "perm.party_id, perm.regions, perm.product_scope, "
    "(SELECT g.code FROM channel_grade g WHERE g.id = b.grade_id), "
    "ARRAY(SELECT pg.code FROM channel_party_group pg JOIN channel_party_group_member m "
    "ON m.group_id = pg.id WHERE m.party_id = b.id), "
    "ARRAY(SELECT t.tag FROM channel_party_tag t WHERE t.party_id = b.id), "
    "ARRAY(SELECT ARRAY[v.name, v.token] FROM channel_cache_version v "
    "WHERE v.name = ANY($3) OR v.name = $4 || s.id::text) "
    "FROM channel_party s JOIN channel_party b ON b.code = $2 OR b.public_id = $2 "
    "LEFT JOIN channel_supply rel ON rel.seller_id = s.id AND rel.buyer_id = b.id "
    "LEFT JOIN channel_sale_permission perm ON perm.party_id = rel.seller_id "
    "WHERE s.code = $1 OR s.public_id = $1")


def _read_context_pg(session: Session, seller: str, buyer: str):
    """(seller row, buyer row, relationship row or None, (grade, groups,
    tags, tokens)), or None when the parties are not exactly one pair (an
    unknown party, or a code that is another's public id): then the
    portable reads run, and raise what they raise."""
    session.flush()  # what the caller added is visible, as autoflush would make it
    rows = prepared.execute(session.connection(), "cl_price_context",
                            ("text", "text", "text[]", "text"), _PG_CONTEXT,
                            (seller, buyer, [snapshots.TREES, snapshots.CATALOG],
                             snapshots.strategies_key("")))
    if len(rows) != 1:
        return None
    row, width = rows[0], len(_PARTY_COLUMNS)
    seller_row, buyer_row = _PartyRow(*row[:width]), _PartyRow(*row[width:2 * width])
    rel = _RelationshipRow(*row[2 * width:2 * width + len(_REL_COLUMNS)])
    grade, groups, tags, token_pairs = row[2 * width + len(_REL_COLUMNS):]
    names = (snapshots.TREES, snapshots.CATALOG, snapshots.strategies_key(seller_row.id))
    found = dict(token_pairs or [])
    tokens = {name: found.get(name) for name in names}
    return (seller_row, buyer_row, rel if rel.id is not None else None,
            (grade, frozenset(groups or ()), frozenset(tags or ()), tokens))


@dataclass(frozen=True)
class _Context:
    """What one price request works from: the assortment, the buyer's facts,
    the catalog and the seller's strategies (the last two from the caches)."""

    allowed: Any
    facts: Any
    catalog: Any
    strategies: tuple[pricing.Strategy, ...]
    seller: Party
    buyer: Party


def _context(session: Session, seller: str, buyer: str, at: datetime) -> _Context:
    """Three statements: the parties; the relationship with the seller's sale
    permission; the buyer's labels with the cache tokens (on PostgreSQL one:
    ``_read_context_pg``). The trees, the catalog and the strategies come
    from ``snapshots`` unless their token moved."""
    read = _read_context_pg(session, seller, buyer) if postgresql(session) else None
    if read is None:
        seller_row, buyer_row = _pair(session, seller, buyer)
        strategies_name = snapshots.strategies_key(seller_row.id)
        grade, groups, tags, tokens = labels_and_tokens(
            session, buyer_row, (snapshots.TREES, snapshots.CATALOG, strategies_name))
    else:
        seller_row, buyer_row, found, (grade, groups, tags, tokens) = read
        strategies_name = snapshots.strategies_key(seller_row.id)
    tree = snapshots.cached(session, snapshots.TREES, tokens[snapshots.TREES],
                            lambda: _load_trees(session))
    facts = buyer_facts(session, buyer_row, region_paths=tree.region_paths,
                        customer_type_paths=tree.customer_type_paths,
                        labels=(grade, groups, tags))
    if read is None:
        allowed = assortment_of(session, seller_row, buyer_row, at,
                                region_path=facts.region_path)
    else:
        allowed = assortment_from(session, found, seller_row, buyer_row, at,
                                  region_path=facts.region_path)
    catalog = snapshots.cached(session, snapshots.CATALOG, tokens[snapshots.CATALOG],
                               lambda: load_catalog(session))
    strategies = snapshots.cached(session, strategies_name, tokens[strategies_name],
                                  lambda: _load_strategies(session, seller_row))
    return _Context(allowed, facts, catalog, strategies, seller_row, buyer_row)


def _quantity(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= pricing.MAX_INT32:
        raise InvalidInput("quantity must be a whole number of at least 1", field="quantity")
    return value


def price_for(session: Session, *, seller: str, buyer: str, sku: str, quantity: int = 1,
              at: datetime | None = None) -> PriceQuote:
    """The price of ``quantity`` of ``sku`` for ``buyer`` from ``seller`` at
    ``at`` (default now), with every strategy of the seller as a candidate
    (why this price). ``NotPurchasable`` when the buyer may not buy it."""
    quantity = _quantity(quantity)
    at = utcnow() if at is None else _moment(at, "at")
    ctx = _context(session, seller, buyer, at)
    found = ctx.catalog.by_key.get(sku)
    if found is None:
        raise SkuNotFound(f"no SKU {sku!r}", field="sku", code=sku)
    facts, sellable = found
    if not sellable:
        raise NotPurchasable(f"{facts.code} is not for sale", reason="sku_inactive",
                             field="sku", sku=facts.code)
    why_not = ctx.allowed.why_not(facts.code, facts.category_path)
    if why_not is not None:
        raise NotPurchasable(f"{ctx.allowed.buyer_code} may not buy {facts.code} from "
                             f"{ctx.allowed.seller_code}", reason=why_not, field="sku",
                             sku=facts.code)
    resolution = pricing.resolve(ctx.strategies, ctx.facts, facts, quantity, at,
                                 seller=ctx.seller.code)
    return PriceQuote(ctx.seller.code, ctx.buyer.code, at, ctx.allowed.relationship, resolution)


def quote_lines(session: Session, *, seller: str, buyer: str,
                lines: Sequence[tuple[str, int]], at: datetime
                ) -> tuple[Any, list[tuple[Any, pricing.Resolution]]]:
    """Resolve several (SKU, quantity) lines for one buyer and seller with one
    context (the order use case): the parties, the relationship (public
    id) and, per line, the SKU's facts and its resolution. A line the buyer
    may not buy raises ``NotPurchasable`` naming ``lines[i].sku``."""
    ctx = _context(session, seller, buyer, at)
    out = []
    for index, (sku, quantity) in enumerate(lines):
        field = f"lines[{index}].sku"
        found = ctx.catalog.by_key.get(sku)
        if found is None:
            raise SkuNotFound(f"no SKU {sku!r}", field=field, code=sku)
        facts, sellable = found
        if not sellable:
            raise NotPurchasable(f"{facts.code} is not for sale", reason="sku_inactive",
                                 field=field, sku=facts.code)
        why_not = ctx.allowed.why_not(facts.code, facts.category_path)
        if why_not is not None:
            raise NotPurchasable(f"{ctx.buyer.code} may not buy {facts.code} from "
                                 f"{ctx.seller.code}", reason=why_not, field=field, sku=facts.code)
        out.append((facts, pricing.resolve(ctx.strategies, ctx.facts, facts, quantity, at,
                                           seller=ctx.seller.code)))
    return ctx, out


def price_list(session: Session, *, seller: str, buyer: str, at: datetime | None = None,
               after: str | None = None, limit: int | None = None) -> PriceList:
    """Every SKU ``buyer`` may buy from ``seller``, with its unit price for
    quantity 1, in SKU code order (the hot read path of a signed-in store).
    ``after``/``limit`` page through it; without a limit, the whole list."""
    at = utcnow() if at is None else _moment(at, "at")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise InvalidInput("limit must be a whole number of at least 1", field="limit")
    ctx = _context(session, seller, buyer, at)
    skus: Sequence[Any] = ctx.catalog.sellable
    if after is not None:
        skus = skus[bisect_right([s.code for s in skus], after):]
    scopes = [scope for scope in ctx.allowed.scopes if not scope.all]
    if scopes:  # "everything" scopes (the usual case) need no per-SKU test
        skus = [s for s in skus if all(scope.covers(s.code, s.category_path) for scope in scopes)]
    next_cursor = None
    if limit is not None and len(skus) > limit:
        skus, next_cursor = skus[:limit], skus[limit - 1].code
    lines = pricing.price_list(ctx.strategies, ctx.facts, skus, at, seller=ctx.seller.code)
    return PriceList(ctx.seller.code, ctx.buyer.code, at, ctx.allowed.relationship, tuple(lines),
                     next_cursor)
