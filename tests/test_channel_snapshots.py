"""The price path's per-process caches (``channel_api.snapshots``): every
writer moves its token, so a committed change shows in the next price
request; a rolled-back one never does; a warm request costs three statements.
Data is committed (the caches live across transactions) under unique codes."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event

import channel_api as ca
from channel_api import bulk, catalog, network, prices
from ledger import utcnow
from tests.channel_fixtures import engine  # noqa: F401  (this module commits: a database of its own)


A = "test"


@pytest.fixture
def shop(session_factory, unique):
    """Distributor D sells to store S; one SKU at 10.00 in category C."""
    u = unique
    with session_factory() as s, s.begin():
        ca.create_region(s, f"{u}-cn", "CN")
        ca.create_customer_type(s, f"{u}-t", "T")
        for code, role in (("D", "distributor"), ("S", "store")):
            ca.create_party(s, code=f"{u}-{code}", name=code, role=role, region=f"{u}-cn",
                            customer_type=f"{u}-t")
        catalog.create_category(s, f"{u}-C", "C")
        catalog.create_unit(s, f"{u}-u", "U")
        catalog.create_product(s, f"{u}-p", "P", category=f"{u}-C")
        catalog.create_sku(s, f"{u}-a", "A", product=f"{u}-p", unit=f"{u}-u", list_price_minor=1000)
        network.set_sale_permission(s, f"{u}-D", product_scope={"all": True}, regions=[], actor=A)
        network.create_relationship(s, seller=f"{u}-D", buyer=f"{u}-S", actor=A,
                                    valid_from=utcnow() - timedelta(days=1))
    return u


def listed(session_factory, u) -> dict[str, tuple[int, str | None]]:
    with session_factory() as s, s.begin():
        lines = prices.price_list(s, seller=f"{u}-D", buyer=f"{u}-S").lines
    # The database is shared with other tests: only this test's SKUs count.
    return {l.sku.removeprefix(f"{u}-"): (l.unit_price_minor, l.strategy_code) for l in lines
            if l.sku.startswith(f"{u}-")}


def change(session_factory, fn):
    with session_factory() as s, s.begin():
        fn(s)


def test_catalog_writes_show_in_the_next_price_list(session_factory, shop):
    u = shop
    assert listed(session_factory, u) == {"a": (1000, None)}
    change(session_factory, lambda s: catalog.update_sku(s, f"{u}-a", list_price_minor=1200))
    assert listed(session_factory, u) == {"a": (1200, None)}
    change(session_factory, lambda s: catalog.create_sku(
        s, f"{u}-b", "B", product=f"{u}-p", unit=f"{u}-u", list_price_minor=500))
    assert set(listed(session_factory, u)) == {"a", "b"}
    change(session_factory, lambda s: catalog.update_sku(s, f"{u}-b", status="inactive"))
    assert set(listed(session_factory, u)) == {"a"}
    change(session_factory, lambda s: catalog.update_product(s, f"{u}-p", status="inactive"))
    assert listed(session_factory, u) == {}


def test_csv_catalog_import_shows_in_the_next_price_list(session_factory, shop):
    u = shop
    assert listed(session_factory, u) == {"a": (1000, None)}
    data = ("product,product_name,category,sku,sku_name,unit,list_price\n"
            f"{u}-p,P,{u}-C,{u}-a,A,{u}-u,15.00\n")
    change(session_factory, lambda s: bulk.import_csv(s, "catalog", data, actor=A))
    assert listed(session_factory, u) == {"a": (1500, None)}


def test_strategy_writes_show_in_the_next_price(session_factory, shop):
    u = shop
    tiers = [{"sku": None, "min_qty": 1, "percent_bp": 9000}]
    change(session_factory, lambda s: prices.create_strategy(
        s, code=f"{u}-s", owner=f"{u}-D", name="S", rule="percent", tiers=tiers,
        product_scope={"all": True}, valid_from=utcnow() - timedelta(hours=1), actor=A))
    assert listed(session_factory, u) == {"a": (900, f"{u}-s")}
    change(session_factory, lambda s: prices.update_strategy(
        s, f"{u}-s", tiers=[{"sku": None, "min_qty": 1, "percent_bp": 8000}], actor=A))
    assert listed(session_factory, u) == {"a": (800, f"{u}-s")}
    header = ("code,owner,name,rule,valid_from,product_all,tier_sku,min_qty,percent\n")
    data = header + f"{u}-s,{u}-D,S,percent,2020-01-01T00:00:00Z,true,,1,70\n"
    change(session_factory, lambda s: bulk.import_csv(s, "strategies", data, actor=A))
    assert listed(session_factory, u) == {"a": (700, f"{u}-s")}
    with session_factory() as s, s.begin():
        quote = prices.price_for(s, seller=f"{u}-D", buyer=f"{u}-S", sku=f"{u}-a")
    assert quote.resolution.strategy_version == 3


def test_a_new_region_is_seen_by_customer_scopes(session_factory, shop):
    u = shop
    change(session_factory, lambda s: prices.create_strategy(
        s, code=f"{u}-r", owner=f"{u}-D", name="R", rule="percent", product_scope={"all": True},
        tiers=[{"sku": None, "min_qty": 1, "percent_bp": 5000}],
        customer_scope={"regions": [f"{u}-cn"]}, valid_from=utcnow() - timedelta(hours=1), actor=A))
    assert listed(session_factory, u) == {"a": (500, f"{u}-r")}

    def move(s):
        ca.create_region(s, f"{u}-zj", "ZJ", parent=f"{u}-cn")
        ca.create_region(s, f"{u}-elsewhere", "Elsewhere")
        ca.update_party(s, f"{u}-S", region=f"{u}-zj")

    change(session_factory, move)
    assert listed(session_factory, u) == {"a": (500, f"{u}-r")}  # zj lies under cn
    change(session_factory, lambda s: ca.update_party(s, f"{u}-S", region=f"{u}-elsewhere"))
    assert listed(session_factory, u) == {"a": (1000, None)}


def test_a_rolled_back_change_never_reaches_the_cache(session_factory, shop):
    u = shop
    assert listed(session_factory, u) == {"a": (1000, None)}
    with session_factory() as s:
        with s.begin():
            catalog.update_sku(s, f"{u}-a", list_price_minor=1)
            inside = prices.price_list(s, seller=f"{u}-D", buyer=f"{u}-S").lines
            # cached under the uncommitted token
            assert [l.unit_price_minor for l in inside if l.sku == f"{u}-a"] == [1]
            s.rollback()
    assert listed(session_factory, u) == {"a": (1000, None)}


def _reads(engine) -> int:
    """A warm price request's reads: the parties, the buyer's labels with
    the cache tokens, the relationship; on PostgreSQL one statement."""
    return 1 if engine.dialect.name == "postgresql" else 3


def test_a_warm_price_request_costs_three_statements_or_one(session_factory, shop, engine):
    u = shop
    listed(session_factory, u)  # warm the caches
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        with session_factory() as s, s.begin():
            prices.price_for(s, seller=f"{u}-D", buyer=f"{u}-S", sku=f"{u}-a")
            prices.price_list(s, seller=f"{u}-D", buyer=f"{u}-S")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    selects = [st for st in statements if st.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(selects) == 2 * _reads(engine), statements


def test_warming_loads_every_seller_so_the_first_price_costs_no_load(session_factory, shop, engine):
    u = shop
    change(session_factory, lambda s: prices.create_strategy(
        s, code=f"{u}-w", owner=f"{u}-D", name="W", rule="percent", product_scope={"all": True},
        tiers=[{"sku": None, "min_qty": 1, "percent_bp": 9000}],
        valid_from=utcnow() - timedelta(hours=1), actor=A))
    with session_factory() as s, s.begin():
        assert prices.warm_caches(s) >= 1
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        with session_factory() as s, s.begin():
            quote = prices.price_for(s, seller=f"{u}-D", buyer=f"{u}-S", sku=f"{u}-a")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert quote.resolution.unit_price_minor == 900
    assert len([st for st in statements
                if st.lstrip().upper().startswith(("SELECT", "WITH"))]) == _reads(engine)
