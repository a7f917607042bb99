"""Demo data of the channel network: a small but complete channel for the
serve command, matching the parties of the demo books (``demo.py``).

* the brand; two level-1 distributors (dist-east in Zhejiang, dist-north in
  Beijing) buying from it; a level-2 distributor (dist-hz) buying from
  dist-east; ten stores: 1-5 covered by dist-east, 6-10 by dist-north, and
  dist-hz also covering the Hangzhou stores;
* a catalog of two categories levels, six SKUs with list prices;
* sale permissions, price strategies (percent of list, fixed prices with
  quantity tiers, one for a grade, one for a named store) and a dynamic tag.

Idempotent: every use case returns an existing identical record, and
coverage leaves existing relationships unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import channel_api as ca
from channel_api import catalog, clearing_rules, network, prices, tags

from service.demo import BRAND, DISTRIBUTORS, STORES, distributor_of

ACTOR = "demo"
SINCE = datetime(2026, 1, 1, tzinfo=timezone.utc)  # fixed, so re-runs compare equal
L2 = "dist-hz"


@dataclass(frozen=True)
class ChannelSummary:
    parties: int
    skus: int
    relationships: int
    strategies: int


def _master_data(s) -> None:
    for code, name, parent, level in (
            ("CN", "China", None, "country"), ("ZJ", "Zhejiang", "CN", "province"),
            ("HZ", "Hangzhou", "ZJ", "city"), ("NB", "Ningbo", "ZJ", "city"),
            ("BJ", "Beijing", "CN", "province"), ("CY", "Chaoyang", "BJ", "district")):
        ca.create_region(s, code, name, parent=parent, level=level)
    for code, name, parent in (("wholesale", "Wholesale", None), ("retail", "Retail", None),
                               ("convenience", "Convenience store", "retail"),
                               ("supermarket", "Supermarket", "retail")):
        ca.create_customer_type(s, code, name, parent=parent)
    ca.create_grade(s, "A", "Grade A", rank=1)
    ca.create_grade(s, "B", "Grade B", rank=2)
    ca.create_group(s, "key-accounts", "Key accounts")


def _parties(s) -> None:
    ca.create_party(s, code=BRAND, name="Demo Brand Co.", role="brand", region="CN",
                    customer_type="wholesale", owner_name="Li Na", contact_phone="+86-571-0000")
    ca.create_party(s, code=DISTRIBUTORS[0], name="East Distribution", role="distributor",
                    region="ZJ", customer_type="wholesale", grade="A")
    ca.create_party(s, code=DISTRIBUTORS[1], name="North Distribution", role="distributor",
                    region="BJ", customer_type="wholesale", grade="B")
    ca.create_party(s, code=L2, name="Hangzhou Sub-distributor", role="distributor",
                    region="HZ", customer_type="wholesale")
    for n, store in enumerate(STORES, start=1):
        region = ("HZ" if n <= 3 else "NB") if n <= 5 else "CY"
        ca.create_party(s, code=store, name=f"Store {n:03d}", role="store", region=region,
                        customer_type="convenience" if n % 2 else "supermarket",
                        grade="A" if n in (1, 6) else "B", quality_customer=n in (1, 2, 6))
    ca.add_to_group(s, "store-001", "key-accounts")


def _catalog(s) -> None:
    for code, name, parent in (("drinks", "Drinks", None), ("tea", "Tea", "drinks"),
                               ("water", "Water", "drinks"), ("snacks", "Snacks", None)):
        catalog.create_category(s, code, name, parent=parent)
    catalog.create_unit(s, "case", "Case")
    for code, name, category in (("green-tea", "Green tea", "tea"),
                                 ("jasmine-tea", "Jasmine tea", "tea"),
                                 ("mineral-water", "Mineral water", "water"),
                                 ("rice-crackers", "Rice crackers", "snacks")):
        catalog.create_product(s, code, name, category=category)
    for code, name, product, price in (
            ("green-tea-500x24", "Green tea 500 ml x 24", "green-tea", 4800),
            ("green-tea-1lx12", "Green tea 1 l x 12", "green-tea", 5400),
            ("jasmine-tea-500x24", "Jasmine tea 500 ml x 24", "jasmine-tea", 5200),
            ("water-550x24", "Mineral water 550 ml x 24", "mineral-water", 2400),
            ("water-5lx4", "Mineral water 5 l x 4", "mineral-water", 3600),
            ("crackers-100x20", "Rice crackers 100 g x 20", "rice-crackers", 6000)):
        catalog.create_sku(s, code, name, product=product, unit="case", list_price_minor=price)


def _network(s) -> None:
    for distributor in DISTRIBUTORS:
        network.create_relationship(s, seller=BRAND, buyer=distributor, valid_from=SINCE,
                                    actor=ACTOR)
    network.create_relationship(s, seller=DISTRIBUTORS[0], buyer=L2, valid_from=SINCE,
                                product_scope={"categories": ["tea"]}, actor=ACTOR)
    network.set_sale_permission(s, DISTRIBUTORS[0], product_scope={"all": True},
                                regions=["ZJ"], actor=ACTOR)
    network.set_sale_permission(s, DISTRIBUTORS[1], product_scope={"categories": ["drinks"]},
                                regions=["BJ"], actor=ACTOR)
    network.set_sale_permission(s, L2, product_scope={"categories": ["tea"]}, regions=["HZ"],
                                actor=ACTOR)
    for distributor in DISTRIBUTORS:
        network.assign_coverage(s, distributor, actor=ACTOR,
                                stores=[st for st in STORES if distributor_of(st) == distributor])
    network.assign_coverage(s, L2, region="HZ", actor=ACTOR)


def _strategies(s) -> None:
    def make(code, owner, name, rule, tiers, **extra):
        prices.create_strategy(s, code=code, owner=owner, name=name, rule=rule, tiers=tiers,
                               valid_from=SINCE, actor=ACTOR,
                               **{"product_scope": {"all": True}, **extra})

    make("brand-distributors-80", BRAND, "Distributor price: 80% of list", "percent",
         [{"sku": None, "min_qty": 1, "percent_bp": 8000},
          {"sku": None, "min_qty": 100, "percent_bp": 7800}],
         customer_scope={"customer_types": ["wholesale"]})
    make("east-retail-95", DISTRIBUTORS[0], "East: 95% of list for every store", "percent",
         [{"sku": None, "min_qty": 1, "percent_bp": 9500}])
    make("east-grade-a-green", DISTRIBUTORS[0], "East: grade A green tea", "fixed",
         [{"sku": "green-tea-500x24", "min_qty": 1, "price_minor": 4300},
          {"sku": "green-tea-500x24", "min_qty": 10, "price_minor": 4100}],
         priority=10, product_scope={"categories": ["tea"]}, customer_scope={"grades": ["A"]})
    make("east-store-001-water", DISTRIBUTORS[0], "East: store-001's water deal", "fixed",
         [{"sku": "water-550x24", "min_qty": 1, "price_minor": 2000}],
         priority=20, product_scope={"skus": ["water-550x24"]},
         customer_scope={"parties": ["store-001"]})
    make("north-drinks-92", DISTRIBUTORS[1], "North: drinks at 92%", "percent",
         [{"sku": None, "min_qty": 1, "percent_bp": 9200}],
         product_scope={"categories": ["drinks"]})
    make("hz-tea-90", L2, "Hangzhou: tea at 90%", "percent",
         [{"sku": None, "min_qty": 1, "percent_bp": 9000}],
         product_scope={"categories": ["tea"]})


def _clearing_rule(s) -> None:
    """How a store's payment to a distributor is split (the issue's worked
    example): the distributor's remainder on delivery, 7.5 % to the brand
    T+1 business day after delivery, 0.5 % to the platform at once."""
    clearing_rules.create_rule(
        s, code="demo-store-orders", name="Store orders: distributor, brand, platform",
        trade_modes=["B2b", "F2B2b"], valid_from=SINCE, actor=ACTOR, legs=[
            {"recipient": "seller", "basis": "remainder", "value": 0,
             "timing": {"kind": "on_delivery"}},
            {"recipient": "brand", "basis": "percent", "value": 750,
             "timing": {"kind": "t_plus", "days": 1, "anchor": "delivery"}},
            {"recipient": "platform", "basis": "percent", "value": 50,
             "timing": {"kind": "immediate"}}])


def seed_channel(session) -> ChannelSummary:
    """Create the demo channel (flushes, never commits)."""
    _master_data(session)
    _parties(session)
    _catalog(session)
    _network(session)
    _strategies(session)
    _clearing_rule(session)
    tag = tags.create_dynamic_tag(session, "quality", "Quality customers", {"all": [
        {"field": "quality_customer", "op": "eq", "value": True}]}, actor=ACTOR)
    if tag.computed_at is None:  # the daily job keeps it current afterwards
        tags.recompute_dynamic_tag(session, "quality", actor=ACTOR)
    parties, _ = ca.list_parties(session, limit=500)
    relationships, _ = network.list_relationships(session, limit=500)
    strategies, _ = prices.list_strategies(session, limit=500)
    return ChannelSummary(len(parties), len(catalog.sku_facts(session)), len(relationships),
                          len(strategies))
