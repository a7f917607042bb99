"""Price strategies and resolution against the database: strategies are
validated and versioned, a buyer's price list and one SKU's price agree,
the explanation names the winner and the losers, and what a buyer may not
buy is refused with a reason."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

import channel_api as ca
from channel_api import catalog, network, prices
from channel_api.errors import NotPurchasable, StrategyExists
from channel_api.models import AuditRecord
from ledger import utcnow

A = "test"


@pytest.fixture
def world(session):
    s = session
    ca.create_region(s, "CN", "China")
    ca.create_region(s, "ZJ", "Zhejiang", parent="CN")
    ca.create_region(s, "SH", "Shanghai", parent="CN")
    ca.create_customer_type(s, "retail", "Retail")
    ca.create_customer_type(s, "grocery", "Grocery", parent="retail")
    ca.create_grade(s, "gold", "Gold")
    ca.create_party(s, code="B", name="Brand", role="brand", region="CN", customer_type="retail")
    ca.create_party(s, code="D", name="Dist", role="distributor", region="ZJ", customer_type="retail")
    ca.create_party(s, code="S1", name="Store 1", role="store", region="ZJ",
                    customer_type="grocery", grade="gold")
    ca.create_party(s, code="S2", name="Store 2", role="store", region="ZJ", customer_type="grocery")
    catalog.create_category(s, "drinks", "Drinks")
    catalog.create_category(s, "tea", "Tea", parent="drinks")
    catalog.create_category(s, "snacks", "Snacks")
    catalog.create_unit(s, "case", "Case")
    catalog.create_product(s, "green", "Green tea", category="tea")
    catalog.create_product(s, "chips", "Chips", category="snacks")
    catalog.create_sku(s, "green-500", "Green 500", product="green", unit="case", list_price_minor=4800)
    catalog.create_sku(s, "green-1l", "Green 1l", product="green", unit="case", list_price_minor=5999)
    catalog.create_sku(s, "chips-1", "Chips", product="chips", unit="case", list_price_minor=3000)
    network.set_sale_permission(s, "D", product_scope={"all": True}, regions=["ZJ"], actor=A)
    for store in ("S1", "S2"):
        network.create_relationship(s, seller="D", buyer=store, actor=A,
                                    valid_from=utcnow() - timedelta(days=1))
    return s


def strategy(session, code, **kw):
    base = dict(code=code, owner="D", name=code, rule="percent", product_scope={"all": True},
                tiers=[{"sku": None, "min_qty": 1, "percent_bp": 9000}],
                valid_from=utcnow() - timedelta(hours=1), actor=A)
    return prices.create_strategy(session, **{**base, **kw})


def test_without_strategies_every_sku_is_at_list_price(world):
    listed = prices.price_list(world, seller="D", buyer="S1")
    assert [(l.sku, l.unit_price_minor, l.source) for l in listed.lines] == [
        ("chips-1", 3000, "list_price"), ("green-1l", 5999, "list_price"), ("green-500", 4800, "list_price")]


def test_percent_rounds_down_and_a_higher_priority_fixed_price_wins(world):
    strategy(world, "all-90")
    strategy(world, "tea-fixed", rule="fixed", priority=5, product_scope={"categories": ["tea"]},
             tiers=[{"sku": "green-500", "min_qty": 1, "price_minor": 4000},
                    {"sku": "green-500", "min_qty": 10, "price_minor": 3800}])
    lines = {l.sku: l for l in prices.price_list(world, seller="D", buyer="S1").lines}
    assert lines["green-1l"].unit_price_minor == 5399  # floor(5999 * 0.9)
    assert (lines["green-500"].unit_price_minor, lines["green-500"].strategy_code) == (4000, "tea-fixed")

    quote = prices.price_for(world, seller="D", buyer="S1", sku="green-500", quantity=12)
    r = quote.resolution
    assert (r.unit_price_minor, r.line_total_minor, r.strategy_code, r.decided_by) == (
        3800, 3800 * 12, "tea-fixed", "priority")
    assert [(c.code, c.rank) for c in r.candidates] == [("tea-fixed", 1), ("all-90", 2)]
    assert r.tier.min_qty == 10


def test_the_explanation_names_why_losers_lost(world):
    strategy(world, "gold-only", priority=9, customer_scope={"grades": ["gold"]})
    strategy(world, "expired", priority=9, valid_from=utcnow() - timedelta(days=10),
             valid_to=utcnow() - timedelta(days=1))
    strategy(world, "snacks-only", priority=9, product_scope={"categories": ["snacks"]})
    off = strategy(world, "switched-off", priority=9)
    prices.update_strategy(world, off.code, status="inactive", actor=A)

    quote = prices.price_for(world, seller="D", buyer="S2", sku="green-500")
    reasons = {c.code: c.reason for c in quote.resolution.candidates}
    assert reasons == {"gold-only": "customer_scope", "expired": "expired",
                       "snacks-only": "product_scope", "switched-off": "inactive"}
    assert quote.resolution.source == "list_price"
    gold = prices.price_for(world, seller="D", buyer="S1", sku="green-500")
    assert gold.resolution.strategy_code == "gold-only"


def test_price_list_and_single_price_agree(world):
    strategy(world, "all-95", tiers=[{"sku": None, "min_qty": 1, "percent_bp": 9500}])
    strategy(world, "chips", rule="fixed", priority=1, product_scope={"skus": ["chips-1"]},
             tiers=[{"sku": "chips-1", "min_qty": 1, "price_minor": 2500}])
    for line in prices.price_list(world, seller="D", buyer="S1").lines:
        single = prices.price_for(world, seller="D", buyer="S1", sku=line.sku).resolution
        assert (single.unit_price_minor, single.strategy_code) == (line.unit_price_minor, line.strategy_code)


def test_price_list_pages_by_sku_code(world):
    first = prices.price_list(world, seller="D", buyer="S1", limit=2)
    assert [l.sku for l in first.lines] == ["chips-1", "green-1l"] and first.next_cursor == "green-1l"
    rest = prices.price_list(world, seller="D", buyer="S1", after=first.next_cursor, limit=2)
    assert [l.sku for l in rest.lines] == ["green-500"] and rest.next_cursor is None


def test_what_the_buyer_may_not_buy_is_refused_with_a_reason(world):
    rel = network.list_relationships(world, seller="D", buyer="S2")[0][0]
    network.update_relationship(world, rel.public_id, product_scope={"categories": ["tea"]}, actor=A)
    listed = prices.price_list(world, seller="D", buyer="S2")
    assert [l.sku for l in listed.lines] == ["green-1l", "green-500"]
    with pytest.raises(NotPurchasable) as refused:
        prices.price_for(world, seller="D", buyer="S2", sku="chips-1")
    assert refused.value.details["reason"] == "outside_purchase_permission"

    catalog.update_sku(world, "green-1l", status="inactive")
    with pytest.raises(NotPurchasable) as inactive:
        prices.price_for(world, seller="D", buyer="S1", sku="green-1l")
    assert inactive.value.details["reason"] == "sku_inactive"
    assert "green-1l" not in {l.sku for l in prices.price_list(world, seller="D", buyer="S1").lines}
    with pytest.raises(NotPurchasable) as none:
        prices.price_list(world, seller="S1", buyer="S2")
    assert none.value.details["reason"] == "no_relationship"


def test_strategy_input_is_checked_and_names_the_field(world):
    cases = [
        (dict(owner="S1"), "owner"),
        (dict(rule="fixed", tiers=[{"sku": "green-500", "min_qty": 1}]), "tiers[0].price_minor"),
        (dict(rule="fixed", tiers=[{"sku": "nope", "min_qty": 1, "price_minor": 1}]), "tiers.sku"),
        (dict(rule="fixed", product_scope={"skus": ["chips-1"]},
              tiers=[{"sku": "green-500", "min_qty": 1, "price_minor": 1}]), "tiers[0].sku"),
        (dict(tiers=[{"sku": None, "min_qty": 0, "percent_bp": 9000}]), "tiers[0].min_qty"),
        (dict(customer_scope={"grades": ["platinum"]}), "customer_scope.grades"),
        (dict(customer_scope={"colour": ["red"]}), "customer_scope"),
        (dict(valid_to=utcnow() - timedelta(days=2)), "valid_to"),
        (dict(tiers=[{"sku": None, "min_qty": 1, "percent_bp": 90.5}]), "tiers[0].percent_bp"),
    ]
    for overrides, field in cases:
        with pytest.raises(ca.DomainError) as error:
            strategy(world, "bad", **overrides)
        assert error.value.details.get("field") == field, (overrides, error.value)
    assert prices.list_strategies(world, owner="D")[0] == []


def test_create_is_idempotent_and_update_versions_and_audits(world):
    first = strategy(world, "s", valid_from=None)
    assert strategy(world, "s", valid_from=None) == first
    with pytest.raises(StrategyExists):
        strategy(world, "s", priority=3)
    changed = prices.update_strategy(world, "s", priority=3,
                                     tiers=[{"sku": None, "min_qty": 1, "percent_bp": 8000}], actor=A)
    assert (changed.version, changed.priority, changed.tiers[0].percent_bp) == (2, 3, 8000)
    assert prices.update_strategy(world, "s", priority=3, actor=A).version == 2  # no change
    assert prices.price_for(world, seller="D", buyer="S1", sku="chips-1").resolution.unit_price_minor == 2400
    actions = [r.action for r in world.scalars(select(AuditRecord).where(AuditRecord.subject == "s"))]
    assert actions == ["strategy.create", "strategy.update"]
    listed, _ = prices.list_strategies(world, owner="D", status="active")
    assert [v.code for v in listed] == ["s"]
