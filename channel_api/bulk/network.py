"""CSV of the supply network: relationships, coverage and sale permissions.

Three kinds, applying the rules of ``network.py`` row by row (same
messages, same fields), checked in full before anything is written and then
written in bulk (a fixed number of statements per 5,000 rows):

``relationships`` — ``seller, buyer, status, product_all, product_categories,
product_skus, valid_from, valid_to``, keyed by (seller, buyer) codes.
  * the pair follows ``create_relationship``: a brand or distributor sells,
    a distributor or store buys, never itself; a pair twice in a file is an
    error on its second line;
  * ``status`` is active, suspended or ended (default active);
  * the product scope: ``product_all=true`` is everything; otherwise the
    ``|``-separated category codes (each with its subtree) and SKU codes, all
    of which must exist. When the three cells are all empty the scope is
    everything, as ``create_relationship`` defaults an omitted scope; an
    explicit ``product_all=false`` with no codes is the empty scope (buys
    nothing), which is how the export writes one;
  * ``valid_from``/``valid_to`` are ISO 8601 with an offset; an empty
    ``valid_from`` is now for a new pair and the stored one for an existing
    pair; an empty ``valid_to`` is open-ended; ``valid_to`` must be later;
  * a new pair gets origin "manual"; an existing one (of either origin, like
    ``update_relationship``) takes the row's status, scope and validity and
    keeps its origin; ``updated_at`` moves only when something changed;
  * ``restrict_to`` (a seller importing its own rows): every row's seller
    must be that party, else an error on ``seller``;
  * the export (filter ``seller``) lists manual relationships in creation
    order; coverage has its own kind.

``coverage`` — ``distributor, store, status`` (active or ended, default
active), as ``assign_coverage``/``unassign_coverage`` per row:
  * the distributor is a distributor or the brand, the store a store;
  * active: a missing relationship is created, a suspended or ended one is
    reactivated (both origin "coverage", scope everything, valid from now,
    open-ended: ``updated``); an active one, manual or coverage, is left
    as it is (``unchanged``; the file carries no scope, so a coverage
    relationship keeps the one it has and an export re-imports unchanged);
  * ended: a coverage relationship not yet ended is ended (``updated``); a
    manual one, an ended one or a missing one is left alone (``unchanged``);
  * ``restrict_to``: every row's distributor must be that party;
  * the export (filter ``seller``: the distributor) lists coverage
    relationships that are active or ended, in creation order.

``sale_permissions`` — ``party, product_all, product_categories,
product_skus, regions``, keyed by party, as ``set_sale_permission``:
  * distributors only (the brand's permission is implicit, a store never
    sells);
  * the product scope as above, except that all three cells empty is
    refused (``set_sale_permission`` makes the caller say what is sold);
  * ``regions``: ``|``-separated existing region codes (each with its
    subtree); empty means anywhere;
  * a brand-only kind: with ``restrict_to`` set every row is refused
    (field ``party``).

Imports write no audit row per relationship: ``bulk.import_csv`` records
one for the whole file.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, aliased

from ledger import new_uuid7, utcnow

from .. import network as rules
from ..errors import InvalidInput
from ..models import (
    SUPPLY_STATUSES,
    Category,
    Party,
    Region,
    SalePermission,
    Sku,
    SupplyRelationship,
)
from ..scopes import ProductScope
from .framework import (
    CHUNK,
    Progress,
    Rows,
    boolean,
    chunks,
    codes,
    codes_text,
    instant,
    instant_text,
)

COVERAGE_STATUSES = ("active", "ended")
SCOPE_COLUMNS = ("product_all", "product_categories", "product_skus")


class _Party(NamedTuple):
    """What the rules test about a party (``network._check_pair`` reads
    ``id`` and ``role``)."""

    id: int
    code: str
    role: str


# -- shared lookups -------------------------------------------------------------------

def _parties(session: Session, wanted: set[str]) -> dict[str, _Party]:
    found: dict[str, _Party] = {}
    for part in chunks(sorted(wanted)):
        for party_id, code, role in session.execute(
                select(Party.id, Party.code, Party.role).where(Party.code.in_(part))):
            found[code] = _Party(party_id, code, role)
    return found


def _party(rows: Rows, line: int, parties: dict[str, _Party], code: str,
           field: str) -> _Party | None:
    party = parties.get(code)
    if party is None:
        rows.error(line, field, f"no {field} {code!r}")
    return party


def _pairs(session: Session, pairs: set[tuple[int, int]], *terms) -> dict[tuple[int, int], Any]:
    """The stored relationships among ``pairs`` (seller id, buyer id) with
    their id, status, origin and the given ``terms`` columns: IN lists of
    sellers and buyers in chunks, the surplus filtered out here."""
    found: dict[tuple[int, int], Any] = {}
    sellers = sorted({s for s, _ in pairs})
    buyers = sorted({b for _, b in pairs})
    rel = SupplyRelationship
    for seller_part in chunks(sellers):
        for buyer_part in chunks(buyers):
            for row in session.execute(
                    select(rel.id, rel.seller_id, rel.buyer_id, rel.status, rel.origin, *terms)
                    .where(rel.seller_id.in_(seller_part), rel.buyer_id.in_(buyer_part))):
                key = (row.seller_id, row.buyer_id)
                if key in pairs:
                    found[key] = row
    return found


def _references(session: Session, rows: Rows) -> tuple[set[str], set[str]]:
    """Category and SKU codes, loaded only when some row names one."""
    named = any(row.get("product_categories") or row.get("product_skus")
                for _, row in rows.records)
    if not named:
        return set(), set()
    return set(session.scalars(select(Category.code))), set(session.scalars(select(Sku.code)))


def _scope(rows: Rows, line: int, row: dict[str, str], references: tuple[set[str], set[str]],
           *, default_all: bool) -> dict | None:
    """The row's product scope as stored JSON, or None (errors reported)."""
    flag = row.get("product_all", "")
    categories, skus = codes(row.get("product_categories", "")), codes(row.get("product_skus", ""))
    if not flag and not categories and not skus:
        if default_all:
            return ProductScope.everything().to_json()
        rows.error(line, "product_all", "say what is sold: product_all=true, categories or "
                                        "SKUs, or product_all=false for nothing")
        return None
    everything = rows.check(line, boolean, flag, "product_all")
    if everything is None:
        return None
    ok = True
    if everything and (categories or skus):
        rows.error(line, "product_all",
                   "product_all=true excludes product_categories and product_skus")
        ok = False
    known_categories, known_skus = references
    missing = [c for c in categories if c not in known_categories]
    if missing:
        rows.error(line, "product_categories", f"unknown categories: {', '.join(missing)}")
        ok = False
    missing = [s for s in skus if s not in known_skus]
    if missing:
        rows.error(line, "product_skus", f"unknown SKUs: {', '.join(missing)}")
        ok = False
    if not ok:
        return None
    return ProductScope(all=everything, categories=frozenset(categories),
                        skus=frozenset(skus)).to_json()


def _scope_cells(doc: dict) -> dict[str, str]:
    scope = ProductScope.from_json(doc)
    return {"product_all": "true" if scope.all else "false",
            "product_categories": codes_text(scope.categories),
            "product_skus": codes_text(scope.skus)}


def _step(progress: Progress | None, phase: str, done: int, total: int) -> None:
    if progress:
        progress(phase, done, total)


def _relationship_pages(session: Session, query, seller_code: str | None) -> Iterator[Any]:
    """Relationships (with seller and buyer codes) in id order, a page at a
    time; ``seller_code`` filters (an unknown code is an error)."""
    rel = SupplyRelationship
    seller, buyer = aliased(Party), aliased(Party)
    query = (query.add_columns(rel.id.label("page_id"), seller.code.label("seller_code"),
                               buyer.code.label("buyer_code"))
             .join(seller, seller.id == rel.seller_id).join(buyer, buyer.id == rel.buyer_id))
    if seller_code is not None:
        query = query.where(rel.seller_id == rules._party_as(session, seller_code, "seller").id)
    last = 0
    while True:
        page = session.execute(query.where(rel.id > last).order_by(rel.id).limit(CHUNK)).all()
        if not page:
            return
        yield from page
        last = page[-1].page_id


# -- relationships ------------------------------------------------------------------------

class Relationships:
    COLUMNS = ("seller", "buyer", "status", *SCOPE_COLUMNS, "valid_from", "valid_to")
    REQUIRED = ("seller", "buyer")
    EXPORT_FILTERS = ("seller",)

    def check(self, session: Session, rows: Rows, restrict_to: str | None = None) -> dict:
        parties = _parties(session, {row.get(k, "") for _, row in rows.records
                                     for k in ("seller", "buyer")})
        references = _references(session, rows)
        now = utcnow()
        checked: list[tuple[int, dict]] = []
        seen: dict[tuple[int, int], int] = {}
        for line, row in rows.records:
            errors_before = rows.error_count
            seller = _party(rows, line, parties, row.get("seller", ""), "seller")
            buyer = _party(rows, line, parties, row.get("buyer", ""), "buyer")
            if restrict_to is not None and row.get("seller", "") != restrict_to:
                rows.error(line, "seller", f"only relationships where {restrict_to} sells "
                                           "may be imported here")
            if seller is not None and buyer is not None:
                rows.check(line, rules._check_pair, seller, buyer)
                pair = (seller.id, buyer.id)
                if pair in seen:
                    rows.error(line, "buyer", f"{seller.code} -> {buyer.code} is also on line "
                                              f"{seen[pair]}")
                seen.setdefault(pair, line)
            item = {
                "status": rows.check(line, rules._choice, row.get("status") or "active",
                                     "status", SUPPLY_STATUSES),
                "product_scope": _scope(rows, line, row, references, default_all=True),
                "valid_from": rows.check(line, instant, row.get("valid_from", ""), "valid_from"),
                "valid_to": rows.check(line, instant, row.get("valid_to", ""), "valid_to"),
            }
            if rows.error_count == errors_before:
                item["pair"] = (seller.id, buyer.id)
                checked.append((line, item))
        rel = SupplyRelationship
        stored = _pairs(session, {item["pair"] for _, item in checked},
                        rel.product_scope, rel.valid_from, rel.valid_to)
        for line, item in checked:
            current = stored.get(item["pair"])
            start = item["valid_from"] or (current.valid_from if current is not None else now)
            rows.check(line, rules._check_validity, start, item["valid_to"])
        return {"planned": [item for _, item in checked], "stored": stored}

    def apply(self, session: Session, plan: dict, progress: Progress | None
              ) -> tuple[int, int, int]:
        now = utcnow()
        planned, stored = plan["planned"], plan["stored"]
        inserts, updates = [], []
        for item in planned:
            current = stored.get(item["pair"])
            seller_id, buyer_id = item["pair"]
            if current is None:
                inserts.append(dict(
                    public_id=rules.RELATIONSHIP_PREFIX + new_uuid7().hex, seller_id=seller_id,
                    buyer_id=buyer_id, status=item["status"], origin="manual",
                    product_scope=item["product_scope"], valid_from=item["valid_from"] or now,
                    valid_to=item["valid_to"], created_at=now, updated_at=now))
                continue
            given_from = item["valid_from"]  # None: keep the stored one
            if (current.status != item["status"] or current.product_scope != item["product_scope"]
                    or not (given_from is None
                            or rules._same_moment(current.valid_from, given_from))
                    or not rules._same_moment(current.valid_to, item["valid_to"])):
                updates.append(dict(id=current.id, status=item["status"],
                                    product_scope=item["product_scope"],
                                    valid_from=given_from or current.valid_from,
                                    valid_to=item["valid_to"], updated_at=now))
        total = len(planned)
        done = total - len(inserts) - len(updates)
        for part in chunks(inserts):
            session.execute(insert(SupplyRelationship), list(part))
            done += len(part)
            _step(progress, "relationships", done, total)
        for part in chunks(updates):
            session.execute(update(SupplyRelationship), list(part))
            done += len(part)
            _step(progress, "relationships", done, total)
        if not inserts and not updates:
            _step(progress, "relationships", total, total)
        return len(inserts), len(updates), total - len(inserts) - len(updates)

    def export(self, session: Session, *, seller: str | None = None) -> Iterator[dict]:
        query = select(SupplyRelationship).where(SupplyRelationship.origin == "manual")
        for r in _relationship_pages(session, query, seller):
            rel = r[0]
            yield {"seller": r.seller_code, "buyer": r.buyer_code, "status": rel.status,
                   **_scope_cells(rel.product_scope), "valid_from": instant_text(rel.valid_from),
                   "valid_to": instant_text(rel.valid_to)}


# -- coverage ---------------------------------------------------------------------------

class Coverage:
    COLUMNS = ("distributor", "store", "status")
    REQUIRED = ("distributor", "store")
    EXPORT_FILTERS = ("seller",)

    def check(self, session: Session, rows: Rows, restrict_to: str | None = None) -> dict:
        parties = _parties(session, {row.get(k, "") for _, row in rows.records
                                     for k in ("distributor", "store")})
        planned: list[dict] = []
        seen: dict[tuple[int, int], int] = {}
        for line, row in rows.records:
            errors_before = rows.error_count
            seller = _party(rows, line, parties, row.get("distributor", ""), "distributor")
            store = _party(rows, line, parties, row.get("store", ""), "store")
            if seller is not None and seller.role not in rules.SELLER_ROLES:
                rows.error(line, "distributor", "a store never sells, so it covers no stores")
            if restrict_to is not None and row.get("distributor", "") != restrict_to:
                rows.error(line, "distributor", f"only {restrict_to}'s coverage may be "
                                                "imported here")
            if store is not None and store.role != "store":
                rows.error(line, "store", f"{store.code} is a {store.role}, not a store")
            status = rows.check(line, rules._choice, row.get("status") or "active", "status",
                                COVERAGE_STATUSES)
            if seller is not None and store is not None:
                pair = (seller.id, store.id)
                if pair in seen:
                    rows.error(line, "store", f"{seller.code} -> {store.code} is also on line "
                                              f"{seen[pair]}")
                seen.setdefault(pair, line)
            if rows.error_count == errors_before:
                planned.append({"pair": (seller.id, store.id), "status": status})
        return {"planned": planned}

    def apply(self, session: Session, plan: dict, progress: Progress | None
              ) -> tuple[int, int, int]:
        planned = plan["planned"]
        stored = _pairs(session, {item["pair"] for item in planned})
        create, revive, end = [], [], []
        for item in planned:
            current = stored.get(item["pair"])
            if item["status"] == "active":
                if current is None:
                    create.append(item["pair"])
                elif current.status != "active":
                    revive.append(current.id)
            elif current is not None and current.origin == "coverage" and current.status != "ended":
                end.append(current.id)
        now = utcnow()
        total, done = len(planned), len(planned) - len(create) - len(revive) - len(end)
        everything = ProductScope.everything().to_json()
        for part in chunks(create):
            session.execute(insert(SupplyRelationship), [dict(
                public_id=rules.RELATIONSHIP_PREFIX + new_uuid7().hex, seller_id=seller_id,
                buyer_id=buyer_id, status="active", origin="coverage", product_scope=everything,
                valid_from=now, valid_to=None, created_at=now, updated_at=now)
                for seller_id, buyer_id in part])
            done += len(part)
            _step(progress, "coverage", done, total)
        for ids, values in ((revive, dict(status="active", origin="coverage",
                                          product_scope=everything, valid_from=now,
                                          valid_to=None, updated_at=now)),
                            (end, dict(status="ended", updated_at=now))):
            for part in chunks(ids):
                session.execute(update(SupplyRelationship)
                                .where(SupplyRelationship.id.in_(part)).values(**values))
                done += len(part)
                _step(progress, "coverage", done, total)
        if not create and not revive and not end:
            _step(progress, "coverage", total, total)
        changed = len(revive) + len(end)
        return len(create), changed, total - len(create) - changed

    def export(self, session: Session, *, seller: str | None = None) -> Iterator[dict]:
        rel = SupplyRelationship
        query = select(rel.status).where(rel.origin == "coverage",
                                         rel.status.in_(COVERAGE_STATUSES))
        for r in _relationship_pages(session, query, seller):
            yield {"distributor": r.seller_code, "store": r.buyer_code, "status": r.status}


# -- sale permissions ---------------------------------------------------------------------

def _may_have_permission(party: _Party) -> None:
    """``network._seller_with_permission``'s rule, on a preloaded party."""
    if party.role == "brand":
        raise InvalidInput("the brand sells its whole catalog everywhere; it has no sale "
                           "permission to set", field="party")
    if party.role == "store":
        raise InvalidInput("a store never sells", field="party")


class SalePermissions:
    COLUMNS = ("party", *SCOPE_COLUMNS, "regions")
    REQUIRED = ("party",)
    EXPORT_FILTERS: tuple[str, ...] = ()

    def check(self, session: Session, rows: Rows, restrict_to: str | None = None) -> dict:
        parties = _parties(session, {row.get("party", "") for _, row in rows.records})
        references = _references(session, rows)
        regions = set(session.scalars(select(Region.code)))
        planned: list[dict] = []
        seen: dict[int, int] = {}
        for line, row in rows.records:
            errors_before = rows.error_count
            party = _party(rows, line, parties, row.get("party", ""), "party")
            if restrict_to is not None:
                rows.error(line, "party", "only the brand's managers may import sale permissions")
            if party is not None:
                rows.check(line, _may_have_permission, party)
                if party.id in seen:
                    rows.error(line, "party", f"{party.code} is also on line {seen[party.id]}")
                seen.setdefault(party.id, line)
            scope = _scope(rows, line, row, references, default_all=False)
            listed = codes(row.get("regions", ""))
            missing = [r for r in listed if r not in regions]
            if missing:
                rows.error(line, "regions", f"regions names unknown regions: {', '.join(missing)}")
            if rows.error_count == errors_before:
                planned.append({"party_id": party.id, "product_scope": scope, "regions": listed})
        return {"planned": planned}

    def apply(self, session: Session, plan: dict, progress: Progress | None
              ) -> tuple[int, int, int]:
        planned = plan["planned"]
        stored: dict[int, tuple[dict, list]] = {}
        for part in chunks([item["party_id"] for item in planned]):
            for party_id, scope, regions in session.execute(
                    select(SalePermission.party_id, SalePermission.product_scope,
                           SalePermission.regions).where(SalePermission.party_id.in_(part))):
                stored[party_id] = (scope, list(regions or []))
        now = utcnow()
        inserts, updates = [], []
        for item in planned:
            current = stored.get(item["party_id"])
            if current is None:
                inserts.append({**item, "updated_at": now})
            elif current != (item["product_scope"], item["regions"]):
                updates.append({**item, "updated_at": now})
        total = len(planned)
        done = total - len(inserts) - len(updates)
        for part in chunks(inserts):
            session.execute(insert(SalePermission), list(part))
            done += len(part)
            _step(progress, "sale_permissions", done, total)
        for part in chunks(updates):
            session.execute(update(SalePermission), list(part))
            done += len(part)
            _step(progress, "sale_permissions", done, total)
        if not inserts and not updates:
            _step(progress, "sale_permissions", total, total)
        return len(inserts), len(updates), total - len(inserts) - len(updates)

    def export(self, session: Session) -> Iterator[dict]:
        query = (select(Party.code, SalePermission.product_scope, SalePermission.regions)
                 .join(Party, Party.id == SalePermission.party_id).order_by(Party.code))
        last = ""
        while True:
            page = session.execute(query.where(Party.code > last).limit(CHUNK)).all()
            if not page:
                return
            for code, scope, regions in page:
                yield {"party": code, **_scope_cells(scope), "regions": codes_text(regions or [])}
            last = page[-1].code


KINDS = {"relationships": Relationships(), "coverage": Coverage(),
         "sale_permissions": SalePermissions()}
