"""The one place that says what a buyer may buy from a seller.

A SKU is purchasable when the relationship between them is active and
valid, both parties are active, the buyer lies in the seller's sale regions,
and the SKU is in both the buyer's purchase permission (on the relationship)
and the seller's sale permission (the brand sells its whole catalog; a
distributor without a sale permission sells nothing). ``assortment``
answers the per-pair questions once (raising ``NotPurchasable`` with the
reason when nothing may be bought); the returned ``Assortment`` answers the
per-SKU question in memory, so a price list of thousands of SKUs costs the
same few queries as one SKU.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ledger import as_utc, prepared, utcnow

from .errors import NotPurchasable
from .models import Party, Region, SalePermission, SupplyRelationship
from .network import _moment, _party_as
from .scopes import ProductScope, RegionScope
from .trees import path_of
from .values import Assortment


def _refuse(reason: str, seller: Party, buyer: Party) -> NotPurchasable:
    return NotPurchasable(f"{buyer.code} may buy nothing from {seller.code}: {reason}",
                          reason=reason, seller=seller.code, buyer=buyer.code)


def _check_relationship(rel: SupplyRelationship | None, seller: Party, buyer: Party,
                        at: datetime) -> SupplyRelationship:
    # The order is the order of precedence of the reasons: the most
    # fundamental one is reported when several hold.
    if rel is None:
        raise _refuse("no_relationship", seller, buyer)
    if seller.status != "active":
        raise _refuse("seller_inactive", seller, buyer)
    if buyer.status != "active":
        raise _refuse("buyer_inactive", seller, buyer)
    if rel.status != "active":
        raise _refuse("relationship_inactive", seller, buyer)
    if at < as_utc(rel.valid_from) or (rel.valid_to is not None and at >= as_utc(rel.valid_to)):
        raise _refuse("relationship_not_valid_at", seller, buyer)
    return rel


def _sale_scope(session: Session, seller, buyer, found,
                region_path: tuple[str, ...] | None) -> ProductScope | None:
    """The seller's sale permission (None: the brand, unrestricted), after
    checking the buyer lies in its regions."""
    if seller.role == "brand":
        return None
    if found.sale_party_id is None:
        return ProductScope()  # no permission row: sells nothing
    regions = RegionScope.from_json(found.sale_regions)
    # The region path may cost a query, so only when there is a restriction.
    if regions.regions and not regions.covers(
            region_path or path_of(session, Region, buyer.region_id)):
        raise _refuse("outside_sale_region", seller, buyer)
    return ProductScope.from_json(found.sale_product_scope)


# Built once (the price path runs it on every request): the relationship
# and the seller's sale permission, as plain rows.
_REL = SupplyRelationship.__table__.c
_PERM = SalePermission.__table__.c
_RELATIONSHIP_AND_PERMISSION = (
    select(_REL.id, _REL.public_id, _REL.status, _REL.valid_from, _REL.valid_to, _REL.product_scope,
           _PERM.party_id.label("sale_party_id"), _PERM.regions.label("sale_regions"),
           _PERM.product_scope.label("sale_product_scope"))
    .select_from(SupplyRelationship.__table__)
    .outerjoin(SalePermission.__table__, _PERM.party_id == _REL.seller_id)
    .where(_REL.seller_id == bindparam("seller_id"), _REL.buyer_id == bindparam("buyer_id")))


def assortment(session: Session, *, seller: str, buyer: str,
               at: datetime | None = None) -> Assortment:
    """What ``buyer`` may buy from ``seller`` (codes or public ids) at
    ``at`` (default now); ``NotPurchasable`` (``details["reason"]``) when
    nothing. A fixed handful of queries: the two parties, the relationship,
    the sale permission and, when it restricts regions, the buyer's region
    path."""
    at = utcnow() if at is None else _moment(at, "at")
    seller_row, buyer_row = _party_as(session, seller, "seller"), _party_as(session, buyer, "buyer")
    return assortment_of(session, seller_row, buyer_row, at)


def assortment_of(session: Session, seller_row, buyer_row, at: datetime, *,
                  region_path: tuple[str, ...] | None = None) -> Assortment:
    """``assortment`` for parties already loaded (``Party`` objects or rows
    with their columns; the price use cases load them once and use them for
    the buyer's facts too). The relationship and the seller's sale
    permission come in one statement."""
    session.flush()  # what the caller added is visible, as autoflush would make it
    found = next(iter(prepared.rows(
        session.connection(), "cl_supply_pair", _RELATIONSHIP_AND_PERMISSION,
        {"seller_id": seller_row.id, "buyer_id": buyer_row.id})), None)
    return assortment_from(session, found, seller_row, buyer_row, at, region_path=region_path)


def assortment_from(session: Session, found, seller_row, buyer_row, at: datetime, *,
                    region_path: tuple[str, ...] | None = None) -> Assortment:
    """``assortment_of`` with the relationship and the sale permission read
    already: ``found`` has the columns of ``_RELATIONSHIP_AND_PERMISSION``
    (None: no relationship)."""
    rel = _check_relationship(found, seller_row, buyer_row, at)
    sale = _sale_scope(session, seller_row, buyer_row, rel, region_path)
    return Assortment(relationship=rel.public_id, seller_code=seller_row.code,
                      buyer_code=buyer_row.code,
                      purchase_scope=ProductScope.from_json(rel.product_scope), sale_scope=sale,
                      relationship_id=rel.id)
