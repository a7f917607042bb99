"""CSV import and export of price strategies: one row per tier, checked by
the API's own rules, all or nothing, idempotent, round trip."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

import channel_api as ca
from channel_api import bulk, catalog, prices
from channel_api.models import PriceStrategy

HEADER = ("code,owner,name,rule,priority,currency,status,valid_from,valid_to,product_all,"
          "product_categories,product_skus,parties,regions,customer_types,grades,groups,tags,"
          "tier_sku,min_qty,price,percent\n")


@pytest.fixture
def world(session):
    s = session
    ca.create_region(s, "CN", "China")
    ca.create_customer_type(s, "retail", "Retail")
    ca.create_grade(s, "gold", "Gold")
    ca.create_party(s, code="D", name="D", role="distributor", region="CN", customer_type="retail")
    ca.create_party(s, code="E", name="E", role="distributor", region="CN", customer_type="retail")
    ca.create_party(s, code="S", name="S", role="store", region="CN", customer_type="retail")
    catalog.create_category(s, "tea", "Tea")
    catalog.create_unit(s, "case", "Case")
    catalog.create_product(s, "green", "Green", category="tea")
    catalog.create_sku(s, "g1", "G1", product="green", unit="case", list_price_minor=1000)
    catalog.create_sku(s, "g2", "G2", product="green", unit="case", list_price_minor=2000)
    return s


GOOD = HEADER + (
    "vip,D,VIP,fixed,5,CNY,active,2026-01-01T00:00:00+08:00,,false,tea,,,,,gold,,,g1,1,9.50,\n"
    "vip,D,VIP,fixed,5,CNY,active,2026-01-01T00:00:00+08:00,,false,tea,,,,,gold,,,g1,10,9.00,\n"
    "vip,D,VIP,fixed,5,CNY,active,2026-01-01T00:00:00+08:00,,false,tea,,,,,gold,,,g2,1,18.00,\n"
    "all,D,All,percent,0,CNY,active,2026-01-01T00:00:00Z,,true,,,,,,,,,,1,,92.5\n")


def count(session) -> int:
    return session.scalar(select(func.count()).select_from(PriceStrategy))


def test_a_file_of_strategies_is_applied_then_unchanged_on_reimport(world):
    calls = []
    report = bulk.import_csv(world, "strategies", GOOD, actor="t", progress=lambda *a: calls.append(a))
    assert (report.status, report.created, report.rows) == ("applied", 2, 4)
    vip = prices.get_strategy(world, "vip")
    assert [(t.sku, t.min_qty, t.price_minor) for t in vip.tiers] == [
        ("g1", 1, 950), ("g1", 10, 900), ("g2", 1, 1800)]
    assert vip.customer_scope == {"grades": ["gold"]}
    assert prices.get_strategy(world, "all").tiers[0].percent_bp == 9250
    assert ("tiers", 4, 4) in calls
    again = bulk.import_csv(world, "strategies", GOOD, actor="t")
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)


def test_a_changed_tier_is_an_update_with_a_new_version(world):
    bulk.import_csv(world, "strategies", GOOD, actor="t")
    changed = GOOD.replace("g2,1,18.00", "g2,1,17.00")
    report = bulk.import_csv(world, "strategies", changed, actor="t")
    assert (report.updated, report.unchanged) == (1, 1)
    vip = prices.get_strategy(world, "vip")
    assert vip.version == 2 and vip.tiers[-1].price_minor == 1700


def test_every_bad_row_is_reported_and_nothing_written(world):
    bad = HEADER + (
        "x1,S,Store,percent,0,CNY,active,,,true,,,,,,,,,,1,,90\n"            # owner not a seller
        "x2,D,Bad,fixed,0,CNY,active,,,false,,g1,,,,,,,g1,1,9.999,\n"        # price decimals
        "x3,D,Bad,fixed,0,CNY,active,,,false,,g1,,,,,,,g2,1,9.00,\n"         # tier SKU out of scope
        "x4,D,Bad,percent,0,CNY,active,,,true,,,,,,platinum,,,,1,,90\n"     # unknown grade
        "x5,D,A,percent,0,CNY,active,,,true,,,,,,,,,,1,,90\n"
        "x5,D,B,percent,0,CNY,active,,,true,,,,,,,,,,5,,80\n"               # head differs
        "x6,D,Z,percent,0,CNY,active,,,true,,,,,,,,,,1,,0\n")               # percent must be > 0
    report = bulk.import_csv(world, "strategies", bad, actor="t")
    assert report.status == "rejected"
    found = {(e.line, e.field) for e in report.errors}
    assert {(2, "owner"), (3, "price"), (4, "tiers[0].sku"), (5, "customer_scope.grades"),
            (7, "name"), (8, "tiers[0].percent_bp")} <= found, found
    assert count(world) == 0


def test_a_seller_may_import_only_its_own_strategies(world):
    report = bulk.import_csv(world, "strategies", GOOD, actor="t", restrict_to="E")
    assert report.status == "rejected"
    assert {e.field for e in report.errors} == {"owner"}


def test_export_round_trips(world):
    bulk.import_csv(world, "strategies", GOOD, actor="t")
    text = "".join(bulk.export_csv(world, "strategies", owner="D"))
    assert text.count("\nvip,") == 3 and ",92.5\n" in text
    again = bulk.import_csv(world, "strategies", text, actor="t")
    assert (again.status, again.updated, again.unchanged) == ("applied", 0, 2)


def test_a_new_rule_needs_a_new_code(world):
    bulk.import_csv(world, "strategies", GOOD, actor="t")
    flipped = HEADER + "all,D,All,fixed,0,CNY,active,,,true,,,,,,,,,g1,1,5.00,\n"
    report = bulk.import_csv(world, "strategies", flipped, actor="t")
    assert report.status == "rejected" and report.errors[0].field == "rule"
