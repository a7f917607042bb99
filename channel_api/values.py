"""Immutable values the channel use cases return (ORM rows stay inside)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from .scopes import ProductScope


@dataclass(frozen=True)
class RegionView:
    public_id: str
    code: str
    name: str
    level: str
    parent_code: str | None


@dataclass(frozen=True)
class CustomerTypeView:
    public_id: str
    code: str
    name: str
    parent_code: str | None


@dataclass(frozen=True)
class GradeView:
    public_id: str
    code: str
    name: str
    rank: int


@dataclass(frozen=True)
class GroupView:
    public_id: str
    code: str
    name: str


@dataclass(frozen=True)
class PartyView:
    public_id: str
    code: str
    name: str
    role: str
    status: str
    region_code: str
    customer_type_code: str
    grade_code: str | None
    owner_name: str
    contact_phone: str
    address: str
    quality_customer: bool
    created_at: datetime
    groups: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


# -- catalog (catalog.py) -------------------------------------------------------

@dataclass(frozen=True)
class CategoryView:
    public_id: str
    code: str
    name: str
    parent_code: str | None
    sort: int


@dataclass(frozen=True)
class UnitView:
    public_id: str
    code: str
    name: str


@dataclass(frozen=True)
class ProductView:
    public_id: str
    code: str
    name: str
    category_code: str
    status: str
    description: str


@dataclass(frozen=True)
class SkuView:
    public_id: str
    code: str
    name: str
    product_code: str
    unit_code: str
    spec: str
    barcode: str
    list_price_minor: int
    currency: str
    status: str
    updated_at: datetime


@dataclass(frozen=True)
class SkuFacts:
    """What pricing and permissions need of a SKU; ``category_path`` is the
    product's category and its ancestors, root first. ``sku_id`` is the row
    key, for joins inside the package only."""

    sku_id: int
    public_id: str
    code: str
    name: str
    product_code: str
    unit_code: str
    list_price_minor: int
    currency: str
    category_path: tuple[str, ...]


# -- network: relationships, coverage, sale permissions, audit (network.py) ------

@dataclass(frozen=True)
class RelationshipView:
    """A seller→buyer supply relationship; ``product_scope`` is the buyer's
    purchase permission (``scopes.ProductScope`` JSON)."""

    public_id: str
    seller_code: str
    buyer_code: str
    status: str
    origin: str
    product_scope: dict[str, Any]
    valid_from: datetime
    valid_to: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class SalePermissionView:
    """What a seller may sell and where (region codes, each with its
    subtree; empty = anywhere). The brand's is implicit (everything,
    anywhere) and has no ``updated_at``."""

    party_code: str
    product_scope: dict[str, Any]
    regions: tuple[str, ...]
    updated_at: datetime | None
    implicit: bool = False


@dataclass(frozen=True)
class CoverageResult:
    """Counts of one coverage call: ``matched`` stores were selected; their
    relationships were ``created``, ``reactivated`` or ``updated`` (a new
    scope) by an assign, ``ended`` by an unassign, or left ``unchanged``."""

    matched: int
    created: int = 0
    reactivated: int = 0
    unchanged: int = 0
    updated: int = 0
    ended: int = 0


@dataclass(frozen=True)
class Assortment:
    """What one buyer may buy from one seller right now: a SKU must be in
    the relationship's purchase permission and in the seller's sale
    permission (``sale_scope`` None: the brand, which sells everything)."""

    relationship: str
    seller_code: str
    buyer_code: str
    purchase_scope: ProductScope
    sale_scope: ProductScope | None
    relationship_id: int | None = None  # the row key, for the package's own writes (orders)

    @property
    def scopes(self) -> tuple[ProductScope, ...]:
        return (self.purchase_scope,) + ((self.sale_scope,) if self.sale_scope is not None else ())

    def why_not(self, sku_code: str, category_path: tuple[str, ...]) -> str | None:
        """None when the SKU may be bought; otherwise the first reason."""
        if not self.purchase_scope.covers(sku_code, category_path):
            return "outside_purchase_permission"
        if self.sale_scope is not None and not self.sale_scope.covers(sku_code, category_path):
            return "outside_sale_permission"
        return None

    def covers(self, sku_code: str, category_path: tuple[str, ...]) -> bool:
        return self.why_not(sku_code, category_path) is None


# -- pricing (pricing.py, prices.py) ----------------------------------------------


# -- dynamic tags and purchase habits (tags.py, habits.py) ------------------------


@dataclass(frozen=True)
class HabitView:
    """A buyer's purchase habits (habits.py): kept current from its orders.

    ``average_order_minor`` is the floor of total / count; ``orders_per_month``
    is the ordering rate between the first and the last order, as orders per
    30 days over the (count - 1) intervals, rounded half-up to 0.01 (None
    until two orders lie apart in time); ``top_categories`` holds up to five
    (category code, amount) pairs, largest amount first, then by code.
    """

    party_code: str
    currency: str
    order_count: int
    total_minor: int
    average_order_minor: int
    first_order_at: datetime
    last_order_at: datetime
    orders_per_month: Decimal | None
    top_categories: tuple[tuple[str, int], ...]
    category_totals: dict[str, int]
    updated_at: datetime

    def days_since_last_order(self, at: datetime) -> int:
        """Whole days from the last order to ``at`` (floored; 0 if ``at``
        is not after the last order)."""
        return max(0, (at - self.last_order_at).days)


@dataclass(frozen=True)
class DynamicTagView:
    """A tag computed from a rule (tags.py); ``code`` is the tag text it
    puts on the parties that match. ``computed_at`` is None until the first
    recompute; ``member_count`` is the number of parties matched then."""

    public_id: str
    code: str
    name: str
    rule: dict[str, Any]
    created_at: datetime
    computed_at: datetime | None
    member_count: int


@dataclass(frozen=True)
class RecomputeResult:
    """What one recompute of a dynamic tag did: ``matched`` parties match the
    rule now; ``added`` got the tag, ``removed`` lost it."""

    tag: DynamicTagView
    matched: int
    added: int
    removed: int
