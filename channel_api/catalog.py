"""Use cases of the catalog: categories (a tree), units, products and their
SKUs with the brand's list price.

Same conventions as ``parties.py``: every function takes a session and only
flushes (the caller owns the transaction); creating a code that exists with
identical attributes returns the existing record, with different ones it is
refused (``*_exists``); lists page by code. Money is an integer of minor
units plus a currency code, never a float. Categories are built top-down (a
parent exists before its children and never changes), so no cycle can form;
filtering by a category includes its subtree.

The ``validate_*`` functions are pure and raise ``InvalidInput`` naming the
field, so the CSV importer checks rows exactly as these use cases do.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import as_utc, utcnow

from .errors import (
    CategoryExists,
    CategoryNotFound,
    InvalidInput,
    InvalidParty,
    ProductExists,
    ProductNotFound,
    SkuExists,
    SkuNotFound,
    UnitExists,
    UnitNotFound,
)
from . import snapshots
from .models import CATALOG_STATUSES, Category, Product, Sku, Unit
from .parties import _choice, _code, _name, _public_id, _text
from .trees import paths, subtree_ids
from .values import CategoryView, ProductView, SkuFacts, SkuView, UnitView

CATEGORY_PREFIX = "cat_"
UNIT_PREFIX = "unit_"
PRODUCT_PREFIX = "prd_"
SKU_PREFIX = "sku_"

MAX_LIST_LIMIT = 500
MAX_MINOR = 2**63 - 1  # the column is a signed 64-bit integer
_CURRENCY = re.compile(r"[A-Z]{3}")
_KEEP: Any = object()  # "leave unchanged" in the update_* functions


# -- validation (pure; shared with the CSV importer) -----------------------------

def _as_input(check, *args):
    """Run one of ``parties``' validators, reporting in the catalog's error
    (``InvalidInput``) rather than the master data's (``InvalidParty``)."""
    try:
        return check(*args)
    except InvalidParty as exc:
        raise InvalidInput(exc.message, **exc.details) from None


def validate_code(value: Any, field: str = "code") -> str:
    return _as_input(_code, value, field)


def validate_name(value: Any, field: str = "name", max_length: int = 200) -> str:
    return _as_input(_name, value, field, max_length)


def validate_text(value: Any, field: str, max_length: int) -> str:
    """Optional free text: None becomes ""; surrounding blanks are dropped."""
    return _as_input(_text, value, field, max_length)


def validate_status(value: Any, field: str = "status") -> str:
    return _as_input(_choice, value, field, CATALOG_STATUSES)


def validate_minor(value: Any, field: str = "list_price_minor") -> int:
    """A non-negative amount in minor units. Floats and numeric strings are
    refused rather than converted: rounding money silently is how cents go
    missing (a CSV importer parses its text first)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_MINOR:
        raise InvalidInput(f"{field} must be a non-negative integer of minor units", field=field)
    return value


def validate_currency(value: Any, field: str = "currency") -> str:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise InvalidInput(f"{field} must be 3 upper-case letters (ISO 4217)", field=field)
    return value


def validate_sort(value: Any, field: str = "sort") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not -10**6 <= value <= 10**6:
        raise InvalidInput(f"{field} must be an integer", field=field)
    return value


def validate_limit(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LIST_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIST_LIMIT}", field="limit")
    return value


# -- lookups ----------------------------------------------------------------------

def _find(session: Session, model, prefix: str, value: Any, not_found, field: str):
    """The row with this public id (when it carries the prefix) or code."""
    if isinstance(value, str) and value:
        if value.startswith(prefix):
            row = session.scalars(select(model).where(model.public_id == value)).one_or_none()
            if row is not None:
                return row
        row = session.scalars(select(model).where(model.code == value)).one_or_none()
        if row is not None:
            return row
    raise not_found(f"no {field.replace('_', ' ')} {value!r}", field=field, code=value)


def _category(session: Session, value: Any, field: str = "category") -> Category:
    return _find(session, Category, CATEGORY_PREFIX, value, CategoryNotFound, field)


def _unit(session: Session, value: Any, field: str = "unit") -> Unit:
    return _find(session, Unit, UNIT_PREFIX, value, UnitNotFound, field)


def _product(session: Session, value: Any, field: str = "product") -> Product:
    return _find(session, Product, PRODUCT_PREFIX, value, ProductNotFound, field)


def _sku(session: Session, value: Any, field: str = "sku") -> Sku:
    return _find(session, Sku, SKU_PREFIX, value, SkuNotFound, field)


def _differing(row, values: dict[str, Any]) -> list[str]:
    # Report input names ("product"), not column names ("product_id").
    return sorted(k.removesuffix("_id") for k, v in values.items() if getattr(row, k) != v)


# -- categories and units ---------------------------------------------------------

def create_category(session: Session, code: str, name: str, *, parent: str | None = None,
                    sort: int = 0) -> CategoryView:
    """A category under ``parent`` (a category code), or a root when None."""
    values = {"name": validate_name(name), "sort": validate_sort(sort)}
    code = validate_code(code)
    values["parent_id"] = (_category(session, validate_code(parent, "parent"), "parent").id
                           if parent is not None else None)
    existing = session.scalars(select(Category).where(Category.code == code)).one_or_none()
    if existing is not None:
        differing = _differing(existing, values)
        if differing:
            raise CategoryExists(f"category {code!r} exists with other attributes",
                                 field="code", differing=differing)
        return _category_view(session, existing)
    row = Category(public_id=_public_id(CATEGORY_PREFIX), code=code, **values)
    session.add(row)
    session.flush()
    snapshots.bump(session, snapshots.CATALOG)  # price caches reload
    return _category_view(session, row)


def _category_view(session: Session, row: Category) -> CategoryView:
    parent = (session.scalar(select(Category.code).where(Category.id == row.parent_id))
              if row.parent_id is not None else None)
    return CategoryView(row.public_id, row.code, row.name, parent, row.sort)


def list_categories(session: Session) -> list[CategoryView]:
    """Every category, parents before children (a parent is always created
    first, so id order is a valid tree order; the tree is small)."""
    rows = list(session.scalars(select(Category).order_by(Category.id)))
    codes = {r.id: r.code for r in rows}
    return [CategoryView(r.public_id, r.code, r.name, codes.get(r.parent_id), r.sort)
            for r in rows]


def create_unit(session: Session, code: str, name: str) -> UnitView:
    code, name = validate_code(code), validate_name(name)
    row = session.scalars(select(Unit).where(Unit.code == code)).one_or_none()
    if row is not None:
        if row.name != name:
            raise UnitExists(f"unit {code!r} exists with another name", field="code",
                             differing=["name"])
    else:
        row = Unit(public_id=_public_id(UNIT_PREFIX), code=code, name=name)
        session.add(row)
        session.flush()
    return UnitView(row.public_id, row.code, row.name)


def list_units(session: Session) -> list[UnitView]:
    return [UnitView(r.public_id, r.code, r.name)
            for r in session.scalars(select(Unit).order_by(Unit.code))]


# -- products -----------------------------------------------------------------------

def _product_views(session: Session, query) -> list[ProductView]:
    rows = session.execute(
        query.add_columns(Category.code).join(Category, Category.id == Product.category_id)).all()
    return [ProductView(p.public_id, p.code, p.name, category_code, p.status, p.description)
            for p, category_code in rows]


def _product_view(session: Session, row: Product) -> ProductView:
    return _product_views(session, select(Product).where(Product.id == row.id))[0]


def create_product(session: Session, code: str, name: str, *, category: str,
                   description: str = "", status: str = "active") -> ProductView:
    code = validate_code(code)
    values = {
        "name": validate_name(name),
        "description": validate_text(description, "description", 1000),
        "status": validate_status(status),
    }
    values["category_id"] = _category(session, validate_code(category, "category")).id
    existing = session.scalars(select(Product).where(Product.code == code)).one_or_none()
    if existing is not None:
        differing = _differing(existing, values)
        if differing:
            raise ProductExists(f"product {code!r} exists with other attributes",
                                field="code", differing=differing)
        return _product_view(session, existing)
    row = Product(public_id=_public_id(PRODUCT_PREFIX), code=code, **values)
    session.add(row)
    session.flush()
    snapshots.bump(session, snapshots.CATALOG)  # price caches reload
    return _product_view(session, row)


def update_product(session: Session, product: str, *, name: str = _KEEP,
                   description: str = _KEEP, status: str = _KEEP,
                   category: str = _KEEP) -> ProductView:
    """Change the given attributes (an omitted one is kept); everything is
    validated before anything is written."""
    row = _product(session, product)
    changes: dict[str, Any] = {}
    if name is not _KEEP:
        changes["name"] = validate_name(name)
    if description is not _KEEP:
        changes["description"] = validate_text(description, "description", 1000)
    if status is not _KEEP:
        changes["status"] = validate_status(status)
    if category is not _KEEP:
        changes["category_id"] = _category(session, validate_code(category, "category")).id
    for key, value in changes.items():
        setattr(row, key, value)
    session.flush()
    snapshots.bump(session, snapshots.CATALOG)  # price caches reload
    return _product_view(session, row)


def get_product(session: Session, code_or_public_id: str) -> ProductView:
    return _product_view(session, _product(session, code_or_public_id))


def list_products(session: Session, *, category: str | None = None, status: str | None = None,
                  after: str | None = None, limit: int = 100
                  ) -> tuple[list[ProductView], str | None]:
    """Products in code order; ``category`` includes its subtree. ``after``
    is the cursor (the last code seen); the second value is the next
    cursor, None on the last page."""
    limit = validate_limit(limit)
    query = select(Product)
    if category is not None:
        root = _category(session, category).id
        query = query.where(Product.category_id.in_(subtree_ids(Category, root)))
    if status is not None:
        query = query.where(Product.status == validate_status(status))
    if after:
        query = query.where(Product.code > after)
    views = _product_views(session, query.order_by(Product.code).limit(limit + 1))
    return views[:limit], (views[limit - 1].code if len(views) > limit else None)


# -- SKUs -----------------------------------------------------------------------------

def _sku_views(session: Session, query) -> list[SkuView]:
    rows = session.execute(
        query.add_columns(Product.code, Unit.code)
        .join(Product, Product.id == Sku.product_id)
        .join(Unit, Unit.id == Sku.unit_id)).all()
    return [SkuView(s.public_id, s.code, s.name, product_code, unit_code, s.spec, s.barcode,
                    s.list_price_minor, s.currency, s.status, as_utc(s.updated_at))
            for s, product_code, unit_code in rows]


def _sku_view(session: Session, row: Sku) -> SkuView:
    return _sku_views(session, select(Sku).where(Sku.id == row.id))[0]


def create_sku(session: Session, code: str, name: str, *, product: str, unit: str,
               list_price_minor: int, currency: str = "CNY", spec: str = "",
               barcode: str = "", status: str = "active") -> SkuView:
    """A SKU of ``product`` sold by ``unit`` (codes), with the brand's list
    price in minor units of ``currency``."""
    code = validate_code(code)
    values = {
        "name": validate_name(name),
        "list_price_minor": validate_minor(list_price_minor),
        "currency": validate_currency(currency),
        "spec": validate_text(spec, "spec", 200),
        "barcode": validate_text(barcode, "barcode", 64),
        "status": validate_status(status),
    }
    values["product_id"] = _product(session, validate_code(product, "product")).id
    values["unit_id"] = _unit(session, validate_code(unit, "unit")).id
    existing = session.scalars(select(Sku).where(Sku.code == code)).one_or_none()
    if existing is not None:
        differing = _differing(existing, values)
        if differing:
            raise SkuExists(f"SKU {code!r} exists with other attributes", field="code",
                            differing=differing)
        return _sku_view(session, existing)
    row = Sku(public_id=_public_id(SKU_PREFIX), code=code, updated_at=utcnow(), **values)
    session.add(row)
    session.flush()
    snapshots.bump(session, snapshots.CATALOG)  # price caches reload
    return _sku_view(session, row)


def update_sku(session: Session, sku: str, *, name: str = _KEEP,
               list_price_minor: int = _KEEP, status: str = _KEEP, spec: str = _KEEP,
               barcode: str = _KEEP) -> SkuView:
    """Change the given attributes (an omitted one is kept). ``updated_at``
    moves only when something really changed, so price caches keyed on it
    survive a no-op save."""
    row = _sku(session, sku)
    changes: dict[str, Any] = {}
    if name is not _KEEP:
        changes["name"] = validate_name(name)
    if list_price_minor is not _KEEP:
        changes["list_price_minor"] = validate_minor(list_price_minor)
    if status is not _KEEP:
        changes["status"] = validate_status(status)
    if spec is not _KEEP:
        changes["spec"] = validate_text(spec, "spec", 200)
    if barcode is not _KEEP:
        changes["barcode"] = validate_text(barcode, "barcode", 64)
    changes = {k: v for k, v in changes.items() if getattr(row, k) != v}
    if changes:
        for key, value in changes.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        session.flush()
        snapshots.bump(session, snapshots.CATALOG)  # price caches reload
    return _sku_view(session, row)


def get_sku(session: Session, code_or_public_id: str) -> SkuView:
    return _sku_view(session, _sku(session, code_or_public_id))


def list_skus(session: Session, *, category: str | None = None, product: str | None = None,
              status: str | None = None, after: str | None = None, limit: int = 100
              ) -> tuple[list[SkuView], str | None]:
    """SKUs in code order; ``category`` includes its subtree, ``status`` is
    the SKU's own. ``after`` is the cursor (the last code seen)."""
    limit = validate_limit(limit)
    query = select(Sku)
    if category is not None:
        root = _category(session, category).id
        query = query.where(Sku.product_id.in_(select(Product.id).where(
            Product.category_id.in_(subtree_ids(Category, root)))))
    if product is not None:
        query = query.where(Sku.product_id == _product(session, product).id)
    if status is not None:
        query = query.where(Sku.status == validate_status(status))
    if after:
        query = query.where(Sku.code > after)
    views = _sku_views(session, query.order_by(Sku.code).limit(limit + 1))
    return views[:limit], (views[limit - 1].code if len(views) > limit else None)


# The one SKU query of pricing and permissions: the facts, plus the SKU's and
# its product's status.
_SKU_FACT_ROWS = (
    select(Sku.id, Sku.public_id, Sku.code, Sku.name, Product.code, Unit.code,
           Sku.list_price_minor, Sku.currency, Product.category_id, Sku.status, Product.status)
    .join(Product, Product.id == Sku.product_id)
    .join(Unit, Unit.id == Sku.unit_id)
    .order_by(Sku.code))


def _sku_fact_rows(session: Session, query=_SKU_FACT_ROWS):
    """(SkuFacts, SKU status, product status) in code order, in two queries
    (the category tree, then the SKUs) whatever the catalog's size."""
    category_paths = paths(session, Category)
    for (sku_id, public_id, code, name, product_code, unit_code, price, currency, category_id,
         sku_status, product_status) in session.execute(query):
        yield (SkuFacts(sku_id, public_id, code, name, product_code, unit_code, price, currency,
                        category_paths[category_id]), sku_status, product_status)


def sku_facts(session: Session, *, status: str | None = "active") -> list[SkuFacts]:
    """Every SKU with what pricing and permissions test, in code order.
    ``status="active"`` keeps what can be sold: active SKUs of active
    products; ``"inactive"`` keeps inactive SKUs; None keeps every SKU."""
    if status is not None:
        status = validate_status(status)
    query = _SKU_FACT_ROWS
    if status == "active":
        query = query.where(Sku.status == "active", Product.status == "active")
    elif status is not None:
        query = query.where(Sku.status == status)
    return [facts for facts, _, _ in _sku_fact_rows(session, query)]


@dataclass(frozen=True)
class CatalogSnapshot:
    """The whole catalog as pricing reads it: the sellable SKUs in code
    order, and every SKU by code and by public id with whether it is
    sellable (an active SKU of an active product)."""

    sellable: tuple[SkuFacts, ...]
    by_key: dict[str, tuple[SkuFacts, bool]]


def load_catalog(session: Session) -> CatalogSnapshot:
    """Two queries whatever the catalog's size; cached per process by
    ``snapshots`` under the ``catalog`` token."""
    sellable: list[SkuFacts] = []
    by_key: dict[str, tuple[SkuFacts, bool]] = {}
    for facts, sku_status, product_status in _sku_fact_rows(session):
        ok = sku_status == "active" and product_status == "active"
        by_key[facts.code] = by_key[facts.public_id] = (facts, ok)
        if ok:
            sellable.append(facts)
    return CatalogSnapshot(tuple(sellable), by_key)
