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

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import as_utc, utcnow

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


def _sale_scope(session: Session, seller: Party, buyer: Party,
                permission: SalePermission | None,
                region_path: tuple[str, ...] | None) -> ProductScope | None:
    """The seller's sale permission (None: the brand, unrestricted), after
    checking the buyer lies in its regions."""
    if seller.role == "brand":
        return None
    if permission is None:
        return ProductScope()  # no permission row: sells nothing
    regions = RegionScope.from_json(permission.regions)
    # The region path may cost a query, so only when there is a restriction.
    if regions.regions and not regions.covers(
            region_path or path_of(session, Region, buyer.region_id)):
        raise _refuse("outside_sale_region", seller, buyer)
    return ProductScope.from_json(permission.product_scope)


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


def assortment_of(session: Session, seller_row: Party, buyer_row: Party, at: datetime, *,
                  region_path: tuple[str, ...] | None = None) -> Assortment:
    """``assortment`` for parties already loaded (the price use cases load
    them once and use them for the buyer's facts too). The relationship and
    the seller's sale permission come in one statement."""
    found = session.execute(
        select(SupplyRelationship, SalePermission)
        .outerjoin(SalePermission, SalePermission.party_id == SupplyRelationship.seller_id)
        .where(SupplyRelationship.seller_id == seller_row.id,
               SupplyRelationship.buyer_id == buyer_row.id)).one_or_none()
    rel, permission = found if found is not None else (None, None)
    rel = _check_relationship(rel, seller_row, buyer_row, at)
    sale = _sale_scope(session, seller_row, buyer_row, permission, region_path)
    return Assortment(relationship=rel.public_id, seller_code=seller_row.code,
                      buyer_code=buyer_row.code,
                      purchase_scope=ProductScope.from_json(rel.product_scope), sale_scope=sale)
