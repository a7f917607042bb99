"""Use cases of the supply network: who sells to whom (relationships, each
carrying the buyer's purchase permission), what a distributor may sell and
where (sale permissions), and coverage (distributor→store relationships
made in bulk by store list, region or customer type).

Same conventions as ``parties.py`` (a session in, flushes only, errors name
the field). Every change also writes an audit row (``audit.record``) in the
same transaction: one per relationship or permission change (none when a
call changes nothing), and one per coverage call whatever it changed, since
it records what was asked of thousands of rows. Roles decide the
direction: a brand or distributor sells, a distributor or store buys; the
brand never buys and a store never sells.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, aliased

from ledger import as_utc, utcnow

from . import audit
from .errors import (
    CategoryNotFound,
    CustomerTypeNotFound,
    InvalidInput,
    PartyNotFound,
    RegionNotFound,
    RelationshipNotFound,
    SkuNotFound,
)
from .models import (
    SUPPLY_ORIGINS,
    SUPPLY_STATUSES,
    Category,
    CustomerType,
    Party,
    Region,
    SalePermission,
    Sku,
    SupplyRelationship,
)
from .catalog import validate_code
from .parties import _public_id, party_row
from .scopes import ProductScope, RegionScope, ScopeError
from .values import CoverageResult, RelationshipView, SalePermissionView

RELATIONSHIP_PREFIX = "rel_"
MAX_LIST_LIMIT = 500
SELLER_ROLES = ("brand", "distributor")
BUYER_ROLES = ("distributor", "store")
# Far below SQLite's 32,766 bound parameters per statement; PostgreSQL has
# no such limit but gains nothing from bigger IN lists either.
_CHUNK = 5000
_AUDIT_STORES = 100  # store codes kept in a coverage audit row (the count is always kept)
_KEEP: Any = object()  # "leave unchanged" in update_relationship


# -- validation and lookups (shared with assortment.py) -----------------------------

def _actor(actor: Any) -> str:
    # Checked before anything is written, so a bad actor leaves no half change.
    if not isinstance(actor, str) or not actor.strip():
        raise InvalidInput("actor must name who makes the change", field="actor")
    return actor


def _moment(value: Any, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput(f"{field} must be a date-time with a time zone", field=field)
    return as_utc(value)


def _same_moment(stored: datetime | None, given: datetime | None) -> bool:
    if stored is None or given is None:
        return stored is given
    return as_utc(stored) == given


def _party_as(session: Session, value: Any, field: str) -> Party:
    """A party by code or public id; not found names ``field`` (seller,
    buyer...) rather than the generic "party"."""
    try:
        return party_row(session, value)
    except PartyNotFound:
        raise PartyNotFound(f"no {field} {value!r}", field=field, code=value) from None


def _chunks(items: list, size: int = _CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _missing(session: Session, column, codes: Iterable[str]) -> list[str]:
    wanted = sorted(set(codes))
    found: set[str] = set()
    for chunk in _chunks(wanted):
        found.update(session.scalars(select(column).where(column.in_(chunk))))
    return [c for c in wanted if c not in found]


def product_scope_from(doc: Any, missing: Callable[[str, frozenset[str]], list[str]],
                       field: str = "product_scope") -> ProductScope:
    """A product scope document, well formed and naming only categories and
    SKUs that exist, by ``missing(kind, codes)`` ("categories" or "skus"):
    the database, or maps a CSV import loaded once (the first missing kind
    raises, listing its codes)."""
    try:
        scope = ProductScope.from_json(doc, field)
    except ScopeError as exc:
        raise InvalidInput(str(exc), field=exc.field) from None
    for kind, not_found in (("categories", CategoryNotFound), ("skus", SkuNotFound)):
        absent = missing(kind, getattr(scope, kind))
        if absent:
            raise not_found(f"{field} names unknown {kind}: {', '.join(absent)}",
                            field=f"{field}.{kind}", codes=absent)
    return scope


def checked_product_scope(session: Session, doc: Any,
                          field: str = "product_scope") -> ProductScope:
    """``product_scope_from`` against the database."""
    columns = {"categories": Category.code, "skus": Sku.code}
    return product_scope_from(doc, lambda kind, codes: _missing(session, columns[kind], codes),
                              field)


def _limit(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LIST_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIST_LIMIT}", field="limit")
    return value


def _choice(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidInput(f"{field} must be one of {', '.join(allowed)}", field=field)
    return value


def _check_pair(seller: Party, buyer: Party) -> None:
    if seller.id == buyer.id:
        raise InvalidInput("a party cannot supply itself", field="buyer")
    if seller.role not in SELLER_ROLES:
        raise InvalidInput("a store never sells", field="seller")
    if buyer.role not in BUYER_ROLES:
        raise InvalidInput("the brand never buys", field="buyer")


def _check_validity(start: datetime, end: datetime | None) -> None:
    if end is not None and end <= as_utc(start):
        raise InvalidInput("valid_to must be after valid_from", field="valid_to")


# -- relationships -------------------------------------------------------------------

def _relationship_views(session: Session, query) -> list[RelationshipView]:
    seller, buyer = aliased(Party), aliased(Party)
    rows = session.execute(
        query.add_columns(seller.code, buyer.code)
        .join(seller, seller.id == SupplyRelationship.seller_id)
        .join(buyer, buyer.id == SupplyRelationship.buyer_id)).all()
    return [RelationshipView(
        public_id=r.public_id, seller_code=seller_code, buyer_code=buyer_code,
        status=r.status, origin=r.origin, product_scope=dict(r.product_scope),
        valid_from=as_utc(r.valid_from),
        valid_to=as_utc(r.valid_to) if r.valid_to is not None else None,
        created_at=as_utc(r.created_at), updated_at=as_utc(r.updated_at))
        for r, seller_code, buyer_code in rows]


def _relationship_view(session: Session, row: SupplyRelationship) -> RelationshipView:
    return _relationship_views(
        session, select(SupplyRelationship).where(SupplyRelationship.id == row.id))[0]


def _relationship(session: Session, public_id: Any) -> SupplyRelationship:
    row = (session.scalars(select(SupplyRelationship).where(
        SupplyRelationship.public_id == public_id)).one_or_none()
        if isinstance(public_id, str) else None)
    if row is None:
        raise RelationshipNotFound(f"no relationship {public_id!r}", field="relationship")
    return row


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value is not None else None


def create_relationship(session: Session, *, seller: str, buyer: str,
                        product_scope: dict[str, Any] | None = None,
                        valid_from: datetime | None = None, valid_to: datetime | None = None,
                        actor: str) -> RelationshipView:
    """``buyer`` may buy ``product_scope`` (default everything) from
    ``seller`` between ``valid_from`` (default now) and ``valid_to`` (None:
    open-ended). Calling again with the same values returns the existing
    relationship (an omitted ``valid_from`` matches any); other values for
    an existing pair are refused: change it with ``update_relationship``."""
    _actor(actor)
    seller_row, buyer_row = _party_as(session, seller, "seller"), _party_as(session, buyer, "buyer")
    _check_pair(seller_row, buyer_row)
    scope = checked_product_scope(
        session, {"all": True} if product_scope is None else product_scope).to_json()
    start = _moment(valid_from, "valid_from") if valid_from is not None else None
    end = _moment(valid_to, "valid_to") if valid_to is not None else None
    _check_validity(start or utcnow(), end)
    existing = session.scalars(select(SupplyRelationship).where(
        SupplyRelationship.seller_id == seller_row.id,
        SupplyRelationship.buyer_id == buyer_row.id)).one_or_none()
    if existing is not None:
        same = (existing.status == "active" and existing.product_scope == scope
                and (start is None or _same_moment(existing.valid_from, start))
                and _same_moment(existing.valid_to, end))
        if not same:
            raise InvalidInput(
                f"{seller_row.code} already supplies {buyer_row.code} on other terms; "
                "change it with update_relationship", field="buyer",
                relationship=existing.public_id)
        return _relationship_view(session, existing)
    now = utcnow()
    row = SupplyRelationship(
        public_id=_public_id(RELATIONSHIP_PREFIX), seller_id=seller_row.id,
        buyer_id=buyer_row.id, status="active", origin="manual", product_scope=scope,
        valid_from=start or now, valid_to=end, created_at=now, updated_at=now)
    session.add(row)
    audit.record(session, actor=actor, action="relationship.create",
                 subject_type="relationship", subject=row.public_id,
                 details={"seller": seller_row.code, "buyer": buyer_row.code,
                          "product_scope": scope, "valid_from": _iso(row.valid_from),
                          "valid_to": _iso(end)})
    session.flush()
    return _relationship_view(session, row)


def _relationship_changes(session: Session, row: SupplyRelationship, status, product_scope,
                          valid_from, valid_to) -> dict[str, Any]:
    """The validated new values that differ from the row's."""
    changes: dict[str, Any] = {}
    if status is not _KEEP:
        changes["status"] = _choice(status, "status", SUPPLY_STATUSES)
    if product_scope is not _KEEP:
        changes["product_scope"] = checked_product_scope(session, product_scope).to_json()
    if valid_from is not _KEEP:
        changes["valid_from"] = _moment(valid_from, "valid_from")
    if valid_to is not _KEEP:
        changes["valid_to"] = _moment(valid_to, "valid_to") if valid_to is not None else None
    _check_validity(changes.get("valid_from", row.valid_from),
                    changes.get("valid_to", as_utc(row.valid_to) if row.valid_to else None))
    unchanged = {
        "status": lambda v: row.status == v,
        "product_scope": lambda v: row.product_scope == v,
        "valid_from": lambda v: _same_moment(row.valid_from, v),
        "valid_to": lambda v: _same_moment(row.valid_to, v),
    }
    return {k: v for k, v in changes.items() if not unchanged[k](v)}


def update_relationship(session: Session, relationship: str, *, status: str = _KEEP,
                        product_scope: dict[str, Any] = _KEEP, valid_from: datetime = _KEEP,
                        valid_to: datetime | None = _KEEP, actor: str) -> RelationshipView:
    """Change the given attributes of a relationship (by public id); an
    omitted one is kept, ``valid_to=None`` makes it open-ended. Everything
    is validated before anything is written; a call that changes nothing
    writes nothing (no audit row either)."""
    _actor(actor)
    row = _relationship(session, relationship)
    changes = _relationship_changes(session, row, status, product_scope, valid_from, valid_to)
    if changes:
        for key, value in changes.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        audit.record(session, actor=actor, action="relationship.update",
                     subject_type="relationship", subject=row.public_id,
                     details={k: _iso(v) if k.startswith("valid") else v
                              for k, v in changes.items()})
        session.flush()
    return _relationship_view(session, row)


def get_relationship(session: Session, relationship: str) -> RelationshipView:
    return _relationship_view(session, _relationship(session, relationship))


def list_relationships(session: Session, *, seller: str | None = None,
                       buyer: str | None = None, status: str | None = None,
                       origin: str | None = None, after: str | None = None,
                       limit: int = 100) -> tuple[list[RelationshipView], str | None]:
    """Relationships in public-id order (creation order), filtered by party
    (code or public id), status and origin. ``after`` is the cursor (the
    last public id seen); the second value is the next cursor, None on the
    last page."""
    limit = _limit(limit)
    query = select(SupplyRelationship)
    if seller is not None:
        query = query.where(SupplyRelationship.seller_id == _party_as(session, seller, "seller").id)
    if buyer is not None:
        query = query.where(SupplyRelationship.buyer_id == _party_as(session, buyer, "buyer").id)
    if status is not None:
        query = query.where(SupplyRelationship.status == _choice(status, "status", SUPPLY_STATUSES))
    if origin is not None:
        query = query.where(SupplyRelationship.origin == _choice(origin, "origin", SUPPLY_ORIGINS))
    if after:
        query = query.where(SupplyRelationship.public_id > after)
    views = _relationship_views(
        session, query.order_by(SupplyRelationship.public_id).limit(limit + 1))
    return views[:limit], (views[limit - 1].public_id if len(views) > limit else None)


# -- sale permissions ----------------------------------------------------------------

def _seller_with_permission(session: Session, party: Any) -> Party:
    row = _party_as(session, party, "party")
    if row.role == "brand":
        raise InvalidInput("the brand sells its whole catalog everywhere; it has no sale "
                           "permission to set", field="party")
    if row.role == "store":
        raise InvalidInput("a store never sells", field="party")
    return row


def _regions(session: Session, regions: Any) -> list[str]:
    if not isinstance(regions, (list, tuple)):
        raise InvalidInput("regions must be a list of region codes (empty: anywhere)",
                           field="regions")
    try:
        codes = RegionScope.from_json(regions, "regions").to_json()
    except ScopeError as exc:
        raise InvalidInput(str(exc), field=exc.field) from None
    missing = _missing(session, Region.code, codes)
    if missing:
        raise RegionNotFound(f"regions names unknown regions: {', '.join(missing)}",
                             field="regions", codes=missing)
    return codes


def _permission_view(party: Party, row: SalePermission) -> SalePermissionView:
    return SalePermissionView(party.code, dict(row.product_scope), tuple(row.regions),
                              as_utc(row.updated_at))


def set_sale_permission(session: Session, party: str, *, product_scope: dict[str, Any],
                        regions: list[str], actor: str) -> SalePermissionView:
    """What a distributor may sell (a product scope) and where (region
    codes, each with its subtree; [] = anywhere). Replaces the previous
    permission; setting the same one again changes and audits nothing."""
    _actor(actor)
    seller = _seller_with_permission(session, party)
    if product_scope is None:  # would parse as "nothing": make the caller say so
        raise InvalidInput("product_scope must be an object ({} sells nothing)",
                           field="product_scope")
    scope = checked_product_scope(session, product_scope).to_json()
    codes = _regions(session, regions)
    row = session.get(SalePermission, seller.id)
    if row is not None and (row.product_scope, list(row.regions)) == (scope, codes):
        return _permission_view(seller, row)
    if row is None:
        row = SalePermission(party_id=seller.id)
        session.add(row)
    row.product_scope, row.regions, row.updated_at = scope, codes, utcnow()
    audit.record(session, actor=actor, action="sale_permission.set", subject_type="party",
                 subject=seller.code, details={"product_scope": scope, "regions": codes})
    session.flush()
    return _permission_view(seller, row)


def get_sale_permission(session: Session, party: str) -> SalePermissionView | None:
    """The party's sale permission; the brand's is implicit (everything,
    anywhere); None for a store, or a distributor without one (which
    therefore sells nothing)."""
    row = _party_as(session, party, "party")
    if row.role == "brand":
        return SalePermissionView(row.code, ProductScope.everything().to_json(), (), None,
                                  implicit=True)
    permission = session.get(SalePermission, row.id) if row.role == "distributor" else None
    return _permission_view(row, permission) if permission is not None else None


# -- coverage --------------------------------------------------------------------------

def _in_subtree(column, model, root_id: int, name: str):
    """``column`` is ``root_id`` or one of its descendants. Like
    ``trees.subtree_ids`` but with a CTE name of the caller's, since one
    statement filtering on two trees would otherwise hold two CTEs called
    "subtree", which SQLAlchemy refuses to compile."""
    tree = select(model.id).where(model.id == root_id).cte(name, recursive=True)
    tree = tree.union_all(select(model.id).join(tree, model.parent_id == tree.c.id))
    return column.in_(select(tree.c.id))


def _store_codes(stores: Any) -> list[str] | None:
    if stores is None:
        return None
    if not isinstance(stores, (list, tuple)) or not stores:
        raise InvalidInput("stores must be a non-empty list of party codes", field="stores")
    return sorted({validate_code(code, "stores") for code in stores})


def _selection(session: Session, stores: Any, region: Any, customer_type: Any):
    """The validated selectors: (store codes or None, a store query, the
    selectors as JSON for the audit row)."""
    codes = _store_codes(stores)
    if codes is None and region is None and customer_type is None:
        raise InvalidInput("select stores by list, region or customer type (at least one)",
                           field="stores")
    query = select(Party.id).where(Party.role == "store")
    if region is not None:
        root = _by_code(session, Region, region, RegionNotFound, "region")
        query = query.where(_in_subtree(Party.region_id, Region, root, "region_subtree"))
    if customer_type is not None:
        root = _by_code(session, CustomerType, customer_type, CustomerTypeNotFound,
                        "customer_type")
        query = query.where(
            _in_subtree(Party.customer_type_id, CustomerType, root, "customer_type_subtree"))
    selectors: dict[str, Any] = {"region": region, "customer_type": customer_type}
    if codes is not None:
        missing = _missing(session, Party.code, codes)
        if missing:
            raise PartyNotFound(f"stores names unknown parties: {', '.join(missing[:20])}",
                                field="stores", codes=missing[:100])
        selectors.update(stores=codes[:_AUDIT_STORES], stores_count=len(codes))
    return codes, query, selectors


def _by_code(session: Session, model, code: Any, not_found, field: str) -> int:
    row_id = (session.scalar(select(model.id).where(model.code == code))
              if isinstance(code, str) else None)
    if row_id is None:
        raise not_found(f"no {field.replace('_', ' ')} {code!r}", field=field, code=code)
    return row_id


def _matched_store_ids(session: Session, codes: list[str] | None, query) -> list[int]:
    if codes is None:
        return list(session.scalars(query))
    found: list[int] = []
    for chunk in _chunks(codes):
        found.extend(session.scalars(query.where(Party.code.in_(chunk))))
    return found


def _coverage_seller(session: Session, distributor: Any) -> Party:
    row = _party_as(session, distributor, "distributor")
    if row.role not in SELLER_ROLES:
        raise InvalidInput("a store never sells, so it covers no stores", field="distributor")
    return row


def _existing(session: Session, seller_id: int) -> dict[int, tuple[int, str, str, dict]]:
    """The seller's relationships by buyer id: (id, status, origin, scope).
    One query for all of them, cheaper than an IN list of 50,000 buyers."""
    rows = session.execute(select(
        SupplyRelationship.buyer_id, SupplyRelationship.id, SupplyRelationship.status,
        SupplyRelationship.origin, SupplyRelationship.product_scope)
        .where(SupplyRelationship.seller_id == seller_id))
    return {buyer_id: (rel_id, status, origin, scope)
            for buyer_id, rel_id, status, origin, scope in rows}


def _set_rows(session: Session, ids: list[int], values: dict[str, Any]) -> None:
    for chunk in _chunks(ids):
        session.execute(update(SupplyRelationship).where(SupplyRelationship.id.in_(chunk))
                        .values(**values))


def assign_coverage(session: Session, distributor: str, *, stores: list[str] | None = None,
                    region: str | None = None, customer_type: str | None = None,
                    product_scope: dict[str, Any] | None = None,
                    actor: str) -> CoverageResult:
    """``distributor`` supplies every store matching all given selectors
    (a list of codes, a region and a customer type, each with its subtree),
    buying ``product_scope`` (default everything).

    Coverage owns what it makes: a missing relationship is created, a
    suspended or ended one is reactivated (both with origin "coverage", the
    new scope, valid from now); an active coverage relationship with another
    scope gets the new one (``updated``); an active manual relationship is
    left as it is. Bulk: a fixed number of statements for any number of
    stores, and one audit row for the call."""
    _actor(actor)
    seller = _coverage_seller(session, distributor)
    scope = checked_product_scope(
        session, {"all": True} if product_scope is None else product_scope).to_json()
    codes, query, selectors = _selection(session, stores, region, customer_type)
    matched = _matched_store_ids(session, codes, query)
    existing = _existing(session, seller.id)
    create, revive, rescope = [], [], []
    for buyer_id in matched:
        rel = existing.get(buyer_id)
        if rel is None:
            create.append(buyer_id)
        elif rel[1] != "active":
            revive.append(rel[0])
        elif rel[2] == "coverage" and rel[3] != scope:
            rescope.append(rel[0])
    now = utcnow()
    if create:
        session.execute(insert(SupplyRelationship), [dict(
            public_id=_public_id(RELATIONSHIP_PREFIX), seller_id=seller.id, buyer_id=buyer_id,
            status="active", origin="coverage", product_scope=scope, valid_from=now,
            valid_to=None, created_at=now, updated_at=now) for buyer_id in create])
    _set_rows(session, revive, dict(status="active", origin="coverage", product_scope=scope,
                                    valid_from=now, valid_to=None, updated_at=now))
    _set_rows(session, rescope, dict(product_scope=scope, updated_at=now))
    result = CoverageResult(matched=len(matched), created=len(create), reactivated=len(revive),
                            updated=len(rescope),
                            unchanged=len(matched) - len(create) - len(revive) - len(rescope))
    _audit_coverage(session, actor, "coverage.assign", seller, selectors, result,
                    product_scope=scope)
    return result


def unassign_coverage(session: Session, distributor: str, *, stores: list[str] | None = None,
                      region: str | None = None, customer_type: str | None = None,
                      actor: str) -> CoverageResult:
    """Ends the coverage relationships (origin "coverage", not yet ended)
    of ``distributor`` with the stores matching the selectors, as
    ``assign_coverage`` selects them; manual relationships are left alone.
    One audit row for the call."""
    _actor(actor)
    seller = _coverage_seller(session, distributor)
    codes, query, selectors = _selection(session, stores, region, customer_type)
    matched = _matched_store_ids(session, codes, query)
    existing = _existing(session, seller.id)
    end = [rel[0] for rel in (existing.get(b) for b in matched)
           if rel is not None and rel[2] == "coverage" and rel[1] != "ended"]
    _set_rows(session, end, dict(status="ended", updated_at=utcnow()))
    result = CoverageResult(matched=len(matched), ended=len(end),
                            unchanged=len(matched) - len(end))
    _audit_coverage(session, actor, "coverage.unassign", seller, selectors, result)
    return result


def _audit_coverage(session: Session, actor: str, action: str, seller: Party,
                    selectors: dict[str, Any], result: CoverageResult, **extra) -> None:
    counts = {k: getattr(result, k) for k in result.__dataclass_fields__}
    audit.record(session, actor=actor, action=action, subject_type="party", subject=seller.code,
                 details={"selectors": {k: v for k, v in selectors.items() if v is not None},
                          **extra, **counts})
    session.flush()


def list_coverage(session: Session, distributor: str, *, status: str | None = None,
                  after: str | None = None, limit: int = 100
                  ) -> tuple[list[RelationshipView], str | None]:
    """The distributor's coverage relationships (``list_relationships`` with
    origin "coverage")."""
    return list_relationships(session, seller=distributor, origin="coverage", status=status,
                              after=after, limit=limit)
