"""Channel API over HTTP: price strategies, price lists, "why this price",
dynamic tags and purchase habits, each with who may and who may not."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from channel_api import catalog, habits, network
from tests.channel_fixtures import build_network, client, engine  # noqa: F401  (fixtures)


@pytest.fixture
def net(session_factory, unique):
    net = build_network(session_factory, unique)
    u = unique
    with session_factory() as s, s.begin():
        catalog.create_category(s, f"{u}-tea", "Tea")
        catalog.create_unit(s, f"{u}-case", "Case")
        catalog.create_product(s, f"{u}-green", "Green tea", category=f"{u}-tea")
        for code, price in (("a", 1000), ("b", 2000)):
            catalog.create_sku(s, f"{u}-{code}", code, product=f"{u}-green", unit=f"{u}-case",
                               list_price_minor=price)
        network.set_sale_permission(s, net.codes["d1"], product_scope={"all": True}, regions=[],
                                    actor="test")
    return net


def percent(net, code, bp, owner="d1", **extra):
    return {"code": f"{net.u}-{code}", "owner": net.codes[owner], "name": code, "rule": "percent",
            "product_scope": {"all": True}, "valid_from": "2020-01-01T00:00:00Z",
            "tiers": [{"sku": None, "min_qty": 1, "percent_bp": bp}], **extra}


def test_a_seller_sets_strategies_and_its_buyer_sees_its_prices(client, net):
    made = client.post("/v1/price-strategies", headers=net.auth("d1"), json=percent(net, "p90", 9000))
    assert made.status_code == 201, made.json
    assert (made.json["version"], made.json["owner_code"]) == (1, net.codes["d1"])
    fixed = client.post("/v1/price-strategies", headers=net.auth("d1"), json={
        **percent(net, "vip", 0, priority=5, customer_scope={"parties": [net.codes["s1"]]}),
        "rule": "fixed", "tiers": [{"sku": f"{net.u}-b", "min_qty": 1, "price_minor": 1500},
                                   {"sku": f"{net.u}-b", "min_qty": 10, "price_minor": 1400}]})
    assert fixed.status_code == 201, fixed.json

    listed = client.get(f"/v1/sellers/{net.codes['d1']}/price-list", headers=net.auth("s1"))
    assert listed.status_code == 200, listed.json
    lines = {l["sku"]: l for l in listed.json["lines"]}
    assert lines[f"{net.u}-a"]["unit_price_minor"] == 900
    assert (lines[f"{net.u}-b"]["unit_price_minor"], lines[f"{net.u}-b"]["strategy_code"]) == (1500, f"{net.u}-vip")
    other = client.get(f"/v1/sellers/{net.codes['d1']}/price-list", headers=net.auth("s2")).json
    assert {l["sku"]: l["unit_price_minor"] for l in other["lines"]}[f"{net.u}-b"] == 1800

    why = client.get(f"/v1/sellers/{net.codes['d1']}/prices/{net.u}-b?quantity=12", headers=net.auth("s1"))
    assert why.status_code == 200, why.json
    r = why.json["resolution"]
    assert (r["unit_price_minor"], r["line_total_minor"], r["decided_by"]) == (1400, 16800, "priority")
    assert [(c["code"], c["eligible"]) for c in r["candidates"]] == [
        (f"{net.u}-vip", True), (f"{net.u}-p90", True)]
    loser = client.get(f"/v1/sellers/{net.codes['d1']}/prices/{net.u}-b", headers=net.auth("s2")).json
    assert {c["code"]: c["reason"] for c in loser["resolution"]["candidates"]}[f"{net.u}-vip"] == "customer_scope"


def test_price_reads_are_limited_to_the_buyer_and_its_seller_s_managers(client, net):
    d1 = net.codes["d1"]
    assert client.get(f"/v1/sellers/{d1}/price-list?buyer={net.codes['s2']}",
                      headers=net.auth("s1")).status_code == 403
    assert client.get(f"/v1/sellers/{d1}/price-list?buyer={net.codes['s1']}",
                      headers=net.auth("d1")).status_code == 200
    assert client.get(f"/v1/sellers/{d1}/price-list?buyer={net.codes['s3']}",
                      headers=net.auth("d1")).status_code == 403
    assert client.get(f"/v1/sellers/{d1}/price-list?buyer={net.codes['s1']}",
                      headers=net.auth("d2")).status_code == 403
    refused = client.get(f"/v1/sellers/{d1}/price-list", headers=net.auth("s3"))
    assert refused.status_code == 422
    assert (refused.json["code"], refused.json["details"]["reason"]) == ("not_purchasable", "no_relationship")
    frozen_list = client.get(f"/v1/sellers/{d1}/price-list?limit=1", headers=net.auth("s1")).json
    # The catalog is shared by this module's tests: the page holds whichever SKU sorts first.
    assert len(frozen_list["lines"]) == 1
    assert frozen_list["next_cursor"] == frozen_list["lines"][0]["sku"]


def test_only_the_owner_s_managers_manage_its_strategies(client, net):
    assert client.post("/v1/price-strategies", headers=net.auth("d2"),
                       json=percent(net, "x", 9000)).status_code == 403
    assert client.post("/v1/price-strategies", headers=net.auth("s1"),
                       json=percent(net, "x", 9000)).status_code == 403
    made = client.post("/v1/price-strategies", headers=net.auth("brand"), json=percent(net, "x", 9000))
    assert made.status_code == 201
    code = made.json["code"]
    assert client.get(f"/v1/price-strategies/{code}", headers=net.auth("d2")).status_code == 403
    assert client.patch(f"/v1/price-strategies/{code}", headers=net.auth("d2"),
                        json={"priority": 1}).status_code == 403
    patched = client.patch(f"/v1/price-strategies/{code}", headers=net.auth("d1"), json={"priority": 1})
    assert (patched.status_code, patched.json["version"]) == (200, 2)
    mine = client.get("/v1/price-strategies", headers=net.auth("d1")).json["items"]
    assert [s["code"] for s in mine] == [code]
    assert client.get(f"/v1/price-strategies?owner={net.codes['d2']}",
                      headers=net.auth("d1")).status_code == 403


def test_a_bad_strategy_names_the_field(client, net):
    bad = percent(net, "bad", 9000)
    bad["tiers"] = [{"sku": None, "min_qty": 1, "percent_bp": 0}]
    response = client.post("/v1/price-strategies", headers=net.auth("d1"), json=bad)
    assert response.status_code == 422
    assert response.json["errors"][0]["field"] == "tiers[0].percent_bp"
    float_price = percent(net, "bad2", 9000)
    float_price["tiers"] = [{"sku": None, "min_qty": 1, "percent_bp": 90.5}]
    assert client.post("/v1/price-strategies", headers=net.auth("d1"), json=float_price).status_code == 422


def test_dynamic_tags_through_the_api(client, net, session_factory):
    body = {"code": f"{net.u}-quality", "name": "Quality",
            "rule": {"all": [{"field": "quality_customer", "op": "eq", "value": True},
                             {"field": "region", "op": "eq", "value": net.codes["zj"]}]}}
    assert client.post("/v1/dynamic-tags", headers=net.auth("d1"), json=body).status_code == 403
    assert client.post("/v1/dynamic-tags", headers=net.auth("brand"), json=body).status_code == 201
    client.patch(f"/v1/parties/{net.codes['s1']}", headers=net.auth("brand"), json={"quality_customer": True})
    done = client.post(f"/v1/dynamic-tags/{net.u}-quality/recompute", headers=net.auth("brand"))
    assert done.status_code == 200, done.json
    assert (done.json["matched"], done.json["added"]) == (1, 1)
    assert f"{net.u}-quality" in client.get(f"/v1/parties/{net.codes['s1']}", headers=net.auth("brand")).json["tags"]
    bad_rule = client.post("/v1/dynamic-tags", headers=net.auth("brand"),
                           json={**body, "code": f"{net.u}-bad", "rule": {"all": [{"field": "mood", "op": "eq", "value": 1}]}})
    assert bad_rule.status_code == 422 and bad_rule.json["errors"][0]["field"].startswith("rule.all.0")


def test_purchase_habits_are_empty_until_orders_then_visible_to_the_right_keys(client, net, session_factory):
    s1 = net.codes["s1"]
    assert client.get(f"/v1/parties/{s1}/purchase-habits", headers=net.auth("s1")).status_code == 404
    with session_factory() as s, s.begin():
        habits.record_purchase(s, buyer=s1, placed_at=datetime(2026, 11, 1, tzinfo=timezone.utc),
                               total_minor=12000, currency="CNY", category_totals={"tea": 12000})
    mine = client.get(f"/v1/parties/{s1}/purchase-habits", headers=net.auth("s1"))
    assert mine.status_code == 200 and mine.json["order_count"] == 1
    assert mine.json["top_categories"] == [["tea", 12000]]
    assert client.get(f"/v1/parties/{s1}/purchase-habits", headers=net.auth("d1")).status_code == 200
    assert client.get(f"/v1/parties/{s1}/purchase-habits", headers=net.auth("s2")).status_code == 403
    assert client.get(f"/v1/parties/{s1}/purchase-habits", headers=net.auth("d2")).status_code == 403
