"""The catalog (issue 3): categories, units, products and SKUs with integer
list prices, on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from sqlalchemy import event, func, select

from channel_api import catalog as cat
from channel_api.errors import (
    CategoryExists,
    CategoryNotFound,
    InvalidInput,
    ProductExists,
    ProductNotFound,
    SkuExists,
    SkuNotFound,
    UnitExists,
    UnitNotFound,
)
from channel_api.models import Category, Sku


# The shared test database holds only rolled-back data, but reads of whole
# tables still look at this test's own codes only.
MINE = {"drinks", "tea", "green", "water", "snacks", "btl", "case"}


@pytest.fixture
def shelf(session):
    """drinks > tea > green tea, drinks > water, snacks; two units; a
    product per leaf category."""
    cat.create_category(session, "drinks", "Drinks", sort=1)
    cat.create_category(session, "tea", "Tea", parent="drinks")
    cat.create_category(session, "green", "Green tea", parent="tea")
    cat.create_category(session, "water", "Water", parent="drinks")
    cat.create_category(session, "snacks", "Snacks", sort=2)
    cat.create_unit(session, "btl", "Bottle")
    cat.create_unit(session, "case", "Case")
    cat.create_product(session, "p-green", "Longjing", category="green")
    cat.create_product(session, "p-water", "Spring water", category="water")
    cat.create_product(session, "p-chips", "Chips", category="snacks")
    return session


def _sku(session, code, product="p-green", **overrides):
    args = dict(product=product, unit="btl", list_price_minor=350)
    args.update(overrides)
    return cat.create_sku(session, code, f"SKU {code}", **args)


def _count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def statements(session):
    """Counts the SQL statements the session sends (for "no per-row query")."""
    seen: list[str] = []
    bind = session.connection()

    def count(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(bind, "before_cursor_execute", count)
    yield seen
    event.remove(bind, "before_cursor_execute", count)


# -- categories and units ---------------------------------------------------------

def test_categories_form_a_tree_listed_parents_first_with_prefixed_ids(shelf):
    listed = [c for c in cat.list_categories(shelf) if c.code in MINE]
    assert [(c.code, c.parent_code) for c in listed] == [
        ("drinks", None), ("tea", "drinks"), ("green", "tea"), ("water", "drinks"),
        ("snacks", None)]
    assert all(c.public_id.startswith("cat_") and len(c.public_id) == 4 + 32 for c in listed)
    assert listed[0].sort == 1 and listed[4].sort == 2
    units = [u for u in cat.list_units(shelf) if u.code in MINE]
    assert [u.code for u in units] == ["btl", "case"]
    assert units[0].public_id.startswith("unit_")


def test_creating_a_category_again_returns_it_and_other_attributes_conflict(shelf):
    first = next(c for c in cat.list_categories(shelf) if c.code == "tea")
    assert cat.create_category(shelf, "tea", "Tea", parent="drinks") == first
    with pytest.raises(CategoryExists) as caught:
        cat.create_category(shelf, "tea", "Tea", parent="snacks")
    assert caught.value.details == {"field": "code", "differing": ["parent"]}
    assert caught.value.http_status == 409


def test_a_category_under_an_unknown_parent_is_refused_and_nothing_written(shelf):
    before = _count(shelf, Category)
    with pytest.raises(CategoryNotFound) as caught:
        cat.create_category(shelf, "oolong", "Oolong", parent="nope")
    assert caught.value.details["field"] == "parent"
    assert _count(shelf, Category) == before


def test_a_unit_with_a_taken_code_and_another_name_conflicts(shelf):
    assert cat.create_unit(shelf, "btl", "Bottle").code == "btl"
    with pytest.raises(UnitExists):
        cat.create_unit(shelf, "btl", "Flask")


# -- products ---------------------------------------------------------------------

def test_a_product_is_created_once_and_read_by_code_or_public_id(shelf):
    made = cat.create_product(shelf, "p-black", "Keemun", category="tea",
                              description="  black tea ")
    assert made.public_id.startswith("prd_")
    assert (made.category_code, made.status, made.description) == ("tea", "active", "black tea")
    assert cat.create_product(shelf, "p-black", "Keemun", category="tea",
                              description="black tea") == made
    assert cat.get_product(shelf, made.public_id) == cat.get_product(shelf, "p-black") == made
    with pytest.raises(ProductExists) as caught:
        cat.create_product(shelf, "p-black", "Keemun", category="green", status="inactive")
    assert caught.value.details["differing"] == ["category", "description", "status"]


def test_updating_a_product_changes_only_what_is_given(shelf):
    updated = cat.update_product(shelf, "p-water", status="inactive", category="drinks")
    assert (updated.name, updated.status, updated.category_code) == (
        "Spring water", "inactive", "drinks")
    with pytest.raises(InvalidInput) as caught:
        cat.update_product(shelf, "p-water", name="New name", status="gone")
    assert caught.value.details["field"] == "status"
    assert cat.get_product(shelf, "p-water").name == "Spring water"
    with pytest.raises(ProductNotFound) as caught:
        cat.update_product(shelf, "p-none", name="x")
    assert caught.value.details["field"] == "product"


def test_products_filter_by_category_subtree_and_page_by_code(shelf):
    page, cursor = cat.list_products(shelf, category="drinks", limit=1)
    assert [p.code for p in page] == ["p-green"] and cursor == "p-green"
    page, cursor = cat.list_products(shelf, category="drinks", after=cursor, limit=1)
    assert [p.code for p in page] == ["p-water"] and cursor is None
    assert [p.code for p in cat.list_products(shelf, category="snacks")[0]] == ["p-chips"]
    cat.update_product(shelf, "p-chips", status="inactive")
    assert [p.code for p in cat.list_products(shelf, category="snacks", status="inactive")[0]
            ] == ["p-chips"]
    with pytest.raises(InvalidInput) as caught:
        cat.list_products(shelf, limit=501)
    assert caught.value.details["field"] == "limit"


# -- SKUs -------------------------------------------------------------------------

def test_a_sku_carries_its_list_price_as_integer_minor_units(shelf):
    made = _sku(shelf, "s-1", spec="500ml", barcode="6900000000011", currency="USD")
    assert made.public_id.startswith("sku_")
    assert (made.product_code, made.unit_code, made.list_price_minor, made.currency) == (
        "p-green", "btl", 350, "USD")
    assert (made.spec, made.barcode, made.status) == ("500ml", "6900000000011", "active")
    assert made.updated_at.tzinfo is not None
    assert cat.get_sku(shelf, made.public_id) == cat.get_sku(shelf, "s-1") == made


def test_creating_a_sku_again_returns_it_and_another_price_conflicts(shelf):
    made = _sku(shelf, "s-1")
    assert _sku(shelf, "s-1") == made
    with pytest.raises(SkuExists) as caught:
        _sku(shelf, "s-1", list_price_minor=360, unit="case")
    assert caught.value.details["differing"] == ["list_price_minor", "unit"]
    assert cat.get_sku(shelf, "s-1").list_price_minor == 350


@pytest.mark.parametrize("overrides, field", [
    ({"list_price_minor": 3.5}, "list_price_minor"),
    ({"list_price_minor": "350"}, "list_price_minor"),
    ({"list_price_minor": True}, "list_price_minor"),
    ({"list_price_minor": -1}, "list_price_minor"),
    ({"list_price_minor": 2**63}, "list_price_minor"),
    ({"currency": "cny"}, "currency"),
    ({"currency": "CN"}, "currency"),
    ({"currency": None}, "currency"),
    ({"status": "deleted"}, "status"),
    ({"spec": "x" * 201}, "spec"),
    ({"barcode": 6900000000011}, "barcode"),
    ({"product": ""}, "product"),
    ({"unit": "bad code!"}, "unit"),
])
def test_bad_sku_input_names_the_field_and_writes_nothing(shelf, overrides, field):
    before = _count(shelf, Sku)
    with pytest.raises(InvalidInput) as caught:
        _sku(shelf, "s-bad", **overrides)
    assert caught.value.code == "invalid_input"
    assert caught.value.details["field"] == field
    assert _count(shelf, Sku) == before


@pytest.mark.parametrize("code, name", [("", "Name"), ("has space", "Name"), ("s-ok", "  ")])
def test_bad_codes_and_names_name_their_field(shelf, code, name):
    with pytest.raises(InvalidInput) as caught:
        cat.create_sku(shelf, code, name, product="p-green", unit="btl", list_price_minor=1)
    assert caught.value.details["field"] == ("name" if code == "s-ok" else "code")


def test_a_sku_of_an_unknown_product_or_unit_is_not_found(shelf):
    with pytest.raises(ProductNotFound) as caught:
        _sku(shelf, "s-1", product="p-none")
    assert caught.value.details["field"] == "product" and caught.value.http_status == 404
    with pytest.raises(UnitNotFound) as caught:
        _sku(shelf, "s-1", unit="crate")
    assert caught.value.details["field"] == "unit"
    with pytest.raises(SkuNotFound):
        cat.get_sku(shelf, "s-1")


def test_updating_a_sku_keeps_omitted_attributes_and_moves_updated_at_only_on_change(shelf):
    made = _sku(shelf, "s-1", spec="500ml")
    same = cat.update_sku(shelf, "s-1", list_price_minor=350, name="SKU s-1")
    assert same == made
    changed = cat.update_sku(shelf, made.public_id, list_price_minor=0, status="inactive")
    assert (changed.list_price_minor, changed.status, changed.spec, changed.name) == (
        0, "inactive", "500ml", "SKU s-1")
    assert changed.updated_at >= made.updated_at
    with pytest.raises(InvalidInput) as caught:
        cat.update_sku(shelf, "s-1", name="Renamed", list_price_minor=1.0)
    assert caught.value.details["field"] == "list_price_minor"
    assert cat.get_sku(shelf, "s-1") == changed


def test_skus_filter_by_category_subtree_product_and_status_and_page_by_code(shelf):
    for code, product in [("s-1", "p-green"), ("s-2", "p-water"), ("s-3", "p-chips"),
                          ("s-4", "p-green")]:
        _sku(shelf, code, product=product)
    cat.update_sku(shelf, "s-4", status="inactive")
    codes = lambda page: [s.code for s in page[0]]  # noqa: E731
    assert codes(cat.list_skus(shelf, category="drinks")) == ["s-1", "s-2", "s-4"]
    assert codes(cat.list_skus(shelf, category="tea")) == ["s-1", "s-4"]
    assert codes(cat.list_skus(shelf, product="p-chips")) == ["s-3"]
    assert codes(cat.list_skus(shelf, category="drinks", status="active")) == ["s-1", "s-2"]
    page, cursor = cat.list_skus(shelf, category="drinks", limit=2)
    assert [s.code for s in page] == ["s-1", "s-2"] and cursor == "s-2"
    page, cursor = cat.list_skus(shelf, category="drinks", after=cursor, limit=2)
    assert [s.code for s in page] == ["s-4"] and cursor is None
    with pytest.raises(CategoryNotFound) as caught:
        cat.list_skus(shelf, category="nope")
    assert caught.value.details["field"] == "category"


def test_sku_facts_give_category_paths_and_keep_only_sellable_skus_by_default(shelf):
    _sku(shelf, "s-green", list_price_minor=1200)
    _sku(shelf, "s-water", product="p-water", unit="case", currency="USD")
    _sku(shelf, "s-off", status="inactive")
    _sku(shelf, "s-chips", product="p-chips")
    cat.update_product(shelf, "p-chips", status="inactive")
    mine = lambda facts: [f for f in facts if f.code.startswith("s-")]  # noqa: E731
    facts = mine(cat.sku_facts(shelf))
    assert [f.code for f in facts] == ["s-green", "s-water"]
    green, water = facts
    assert green.category_path == ("drinks", "tea", "green")
    assert (green.list_price_minor, green.currency, green.product_code, green.unit_code) == (
        1200, "CNY", "p-green", "btl")
    assert green.public_id == cat.get_sku(shelf, "s-green").public_id
    assert isinstance(green.sku_id, int)
    assert (water.category_path, water.currency, water.unit_code) == (
        ("drinks", "water"), "USD", "case")
    assert [f.code for f in mine(cat.sku_facts(shelf, status=None))] == [
        "s-chips", "s-green", "s-off", "s-water"]
    assert [f.code for f in mine(cat.sku_facts(shelf, status="inactive"))] == ["s-off"]


def test_sku_facts_cost_the_same_queries_for_any_number_of_skus(shelf, statements):
    _sku(shelf, "s-0")
    statements.clear()
    cat.sku_facts(shelf)
    few = len(statements)
    for n in range(1, 40):
        _sku(shelf, f"s-{n}", product=("p-green", "p-water")[n % 2])
    statements.clear()
    assert len([f for f in cat.sku_facts(shelf) if f.code.startswith("s-")]) == 40
    assert len(statements) == few <= 2
