"""CSV of the catalog: one row per SKU, keyed by ``sku``, carrying its product.

Columns: ``product``, ``product_name``, ``category``, ``product_status``
describe the product; ``sku``, ``sku_name``, ``unit``, ``spec``,
``barcode``, ``list_price`` (decimal text such as ``48.00``, exact in the
row's ``currency``, default CNY) and ``status`` describe the SKU. Statuses
default to ``active``.

Rules, as ``catalog.py`` applies them:

* categories and units must already exist (import them first);
* a product is created or updated from the first row that names it; a later
  row giving it another name, category or status is an error on that line
  (the field that disagrees), so a file never says two things at once;
  an existing product keeps its description (the file has no column for it);
* a SKU is created, or updated in what ``catalog.update_sku`` may change
  (name, list price, status, spec, barcode; ``updated_at`` moves only when
  something really changed); its product, unit and currency never change,
  so a row saying otherwise is refused (field ``product``, ``unit`` or
  ``currency``).

Counts are per row: ``created`` when the SKU is new, ``updated`` when the SKU
changed or, on the product's first row, its product did, ``unchanged``
otherwise. The export lists SKUs in code order and re-imports as it is.
The catalog is the brand's: given ``restrict_to`` (a seller importing for
itself, which the API never allows for this kind) every row is refused.
"""
from __future__ import annotations

from typing import Any

import moneyed
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from ledger import new_uuid7, utcnow

from .. import catalog as rules
from ..errors import InvalidInput
from ..models import Category, Product, Sku, Unit
from .framework import CHUNK, Progress, Rows, chunks, money_minor, money_text

COLUMNS = ("product", "product_name", "category", "sku", "sku_name", "unit", "spec", "barcode",
           "list_price", "currency", "status", "product_status")
REQUIRED = ("product", "product_name", "category", "sku", "sku_name", "unit", "list_price")
EXPORT_FILTERS: tuple[str, ...] = ()
PRODUCT_FIELDS = ("name", "category_id", "status")
SKU_FIELDS = ("name", "spec", "barcode", "list_price_minor", "status")  # what update_sku changes
FIXED_SKU_FIELDS = (("product_id", "product"), ("unit_id", "unit"), ("currency", "currency"))
# The file's name for each product attribute, for "disagrees with line N" errors.
PRODUCT_COLUMN = {"name": "product_name", "category_id": "category", "status": "product_status"}


def _lookup(session: Session, model) -> dict[str, int]:
    return dict(session.execute(select(model.code, model.id)).all())


def _rows_by_code(session: Session, model, columns, wanted: list[str]) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for part in chunks(wanted):
        for row in session.execute(select(model.id, model.code, *columns)
                                   .where(model.code.in_(part))):
            found[row.code] = dict(row._mapping)
    return found


def _currency(text: str) -> str:
    code = rules.validate_currency(text)
    try:
        moneyed.get_currency(code)
    except moneyed.CurrencyDoesNotExist:
        raise InvalidInput(f"currency {code!r} is not an ISO 4217 currency",
                            field="currency") from None
    return code


def _price(text: str, currency: str) -> int:
    return rules.validate_minor(money_minor(text, currency, "list_price"), "list_price")


def check(session: Session, rows: Rows, restrict_to: str | None = None) -> dict:
    categories, units = _lookup(session, Category), _lookup(session, Unit)
    products: dict[str, tuple[int, dict]] = {}  # code -> (first line, values)
    planned: list[dict] = []
    seen: dict[str, int] = {}
    for line, row in rows.records:
        product = rows.check(line, rules.validate_code, row.get("product", ""), "product")
        if restrict_to is not None:  # the API never asks; refuse rather than ignore
            rows.error(line, "product", "only the brand's managers may import the catalog")
        values = {
            "name": rows.check(line, rules.validate_name, row.get("product_name", ""),
                               "product_name"),
            "category_id": categories.get(row.get("category", "")),
            "status": rows.check(line, rules.validate_status,
                                 row.get("product_status") or "active", "product_status"),
        }
        if values["category_id"] is None:
            rows.error(line, "category", f"no category with code {row.get('category', '')!r}")
        if product is not None:
            if product in products:
                first_line, first = products[product]
                for key, column in PRODUCT_COLUMN.items():
                    if None not in (values[key], first[key]) and values[key] != first[key]:
                        rows.error(line, column, f"product {product!r} has another {column} "
                                                 f"on line {first_line}")
            else:
                products[product] = (line, values)

        sku = rows.check(line, rules.validate_code, row.get("sku", ""), "sku")
        if sku is not None:
            if sku in seen:
                rows.error(line, "sku", f"SKU {sku!r} is also on line {seen[sku]}")
            seen.setdefault(sku, line)
        currency = rows.check(line, _currency, row.get("currency") or "CNY")
        sku_values = {
            "name": rows.check(line, rules.validate_name, row.get("sku_name", ""), "sku_name"),
            "spec": rows.check(line, rules.validate_text, row.get("spec", ""), "spec", 200),
            "barcode": rows.check(line, rules.validate_text, row.get("barcode", ""), "barcode", 64),
            "list_price_minor": (rows.check(line, _price, row.get("list_price", ""), currency)
                                 if currency is not None else None),
            "currency": currency,
            "status": rows.check(line, rules.validate_status, row.get("status") or "active",
                                 "status"),
            "unit_id": units.get(row.get("unit", "")),
        }
        if sku_values["unit_id"] is None:
            rows.error(line, "unit", f"no unit with code {row.get('unit', '')!r}")
        planned.append({"line": line, "product": product, "sku": sku, "values": sku_values})

    stored_products = _rows_by_code(session, Product, [getattr(Product, f) for f in PRODUCT_FIELDS],
                                    sorted(products))
    stored_skus = _rows_by_code(
        session, Sku, [getattr(Sku, f) for f in (*SKU_FIELDS, "product_id", "unit_id", "currency")],
        sorted(seen))
    product_codes: dict[int, str] = {p["id"]: code for code, p in stored_products.items()}
    other_ids = sorted({s["product_id"] for s in stored_skus.values()} - set(product_codes))
    for part in chunks(other_ids):
        product_codes.update(session.execute(
            select(Product.id, Product.code).where(Product.id.in_(part))).all())
    unit_codes = {v: k for k, v in units.items()}
    for item in planned:
        current = stored_skus.get(item["sku"]) if item["sku"] is not None else None
        if current is None:
            continue
        line, values = item["line"], item["values"]
        owner = product_codes.get(current["product_id"])
        if item["product"] is not None and owner != item["product"]:
            rows.error(line, "product", f"SKU {item['sku']!r} belongs to product {owner!r}; "
                                        "a SKU never moves to another product")
        if values["unit_id"] is not None and values["unit_id"] != current["unit_id"]:
            rows.error(line, "unit", f"SKU {item['sku']!r} is sold by "
                                     f"{unit_codes.get(current['unit_id'])!r}; its unit never "
                                     "changes")
        if values["currency"] is not None and values["currency"] != current["currency"]:
            rows.error(line, "currency", f"SKU {item['sku']!r} is priced in "
                                         f"{current['currency']}; its currency never changes")
    return {"planned": planned, "products": {code: (line, values)
                                             for code, (line, values) in products.items()},
            "stored_products": stored_products, "stored_skus": stored_skus}


def apply(session: Session, plan: dict, progress: Progress | None) -> tuple[int, int, int]:
    now = utcnow()
    stored_products: dict[str, dict] = plan["stored_products"]
    stored_skus: dict[str, dict] = plan["stored_skus"]

    new_products, changed_products = [], []
    changed_product_lines: set[int] = set()
    for code, (line, values) in plan["products"].items():
        current = stored_products.get(code)
        if current is None:
            new_products.append({"public_id": rules.PRODUCT_PREFIX + new_uuid7().hex,
                                 "code": code, "description": "", **values})
        elif any(current[f] != values[f] for f in PRODUCT_FIELDS):
            changed_products.append({"id": current["id"], **values})
            changed_product_lines.add(line)
    _write(session, Product, new_products, changed_products, len(plan["products"]),
           "products", progress)
    product_ids = {code: p["id"] for code, p in stored_products.items()}
    product_ids.update(_ids(session, Product, [p["code"] for p in new_products]))

    planned = plan["planned"]
    inserts, updates, unchanged = [], [], 0
    for item in planned:
        values, current = item["values"], stored_skus.get(item["sku"])
        if current is None:
            inserts.append({"public_id": rules.SKU_PREFIX + new_uuid7().hex, "code": item["sku"],
                            "product_id": product_ids[item["product"]], "updated_at": now,
                            **values})
        elif any(current[f] != values[f] for f in SKU_FIELDS):
            updates.append({"id": current["id"], "updated_at": now,
                            **{f: values[f] for f in SKU_FIELDS}})
        elif item["line"] in changed_product_lines:
            pass  # counted as updated below: its product changed
        else:
            unchanged += 1
    _write(session, Sku, inserts, updates, len(planned), "skus", progress)
    return len(inserts), len(planned) - len(inserts) - unchanged, unchanged


def _write(session: Session, model, inserts: list[dict], updates: list[dict], total: int,
           phase: str, progress: Progress | None) -> None:
    """Bulk inserts then updates, in chunks; progress counts the untouched
    rows as done too, so its last call always reads total/total."""
    done = total - len(inserts) - len(updates)
    for part in chunks(inserts, CHUNK):
        session.execute(insert(model), list(part))
        done += len(part)
        if progress:
            progress(phase, done, total)
    for part in chunks(updates, CHUNK):
        session.execute(update(model), list(part))
        done += len(part)
        if progress:
            progress(phase, done, total)
    if progress and not inserts and not updates:
        progress(phase, total, total)


def _ids(session: Session, model, wanted: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in chunks(wanted):
        out.update(session.execute(select(model.code, model.id).where(model.code.in_(part))).all())
    return out


def _price_text(amount_minor: int, currency: str) -> str:
    try:
        return money_text(amount_minor, currency)
    except moneyed.CurrencyDoesNotExist:  # stored through the API; the import refuses it anyway
        return str(amount_minor)


def export(session: Session) -> Any:
    """Every SKU with its product, in SKU code order, as CSV records."""
    query = (select(Sku.code, Sku.name, Sku.spec, Sku.barcode, Sku.list_price_minor,
                    Sku.currency, Sku.status, Product.code.label("product"),
                    Product.name.label("product_name"), Product.status.label("product_status"),
                    Category.code.label("category"), Unit.code.label("unit"))
             .join(Product, Product.id == Sku.product_id)
             .join(Category, Category.id == Product.category_id)
             .join(Unit, Unit.id == Sku.unit_id)
             .order_by(Sku.code))
    last = ""
    while True:
        page = session.execute(query.where(Sku.code > last).limit(CHUNK)).all()
        if not page:
            return
        for r in page:
            yield {
                "product": r.product, "product_name": r.product_name, "category": r.category,
                "sku": r.code, "sku_name": r.name, "unit": r.unit, "spec": r.spec,
                "barcode": r.barcode, "list_price": _price_text(r.list_price_minor, r.currency),
                "currency": r.currency, "status": r.status, "product_status": r.product_status,
            }
        last = page[-1].code
