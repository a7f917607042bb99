"""Over HTTP (issue 6): the brand's managers create, list, read and update
clearing rules and keep the business calendar; a distributor's key is
refused; a bad rule is a 422 naming the leg's field; an order's clearing
preview says which rule splits it, why, and who gets what.

Rules are global, and this module's tests share a database: every rule here
names its test's own seller, so no test's rule can apply to another's
order."""
from __future__ import annotations

import pytest

from channel_api import catalog, network, orders
from tests.channel_fixtures import build_network, client, engine  # noqa: F401  (fixtures)


@pytest.fixture
def net(session_factory, unique):
    net = build_network(session_factory, unique)
    u = unique
    with session_factory() as s, s.begin():
        catalog.create_category(s, f"{u}-food", "Food")
        catalog.create_category(s, f"{u}-snacks", "Snacks", parent=f"{u}-food")
        catalog.create_unit(s, f"{u}-case", "Case")
        catalog.create_product(s, f"{u}-crisps", "Crisps", category=f"{u}-snacks")
        catalog.create_sku(s, f"{u}-a", "A", product=f"{u}-crisps", unit=f"{u}-case",
                           list_price_minor=10_000)
        network.set_sale_permission(s, net.codes["d1"], product_scope={"all": True}, regions=[],
                                    actor="t")
    return net


def legs(brand_bp: int = 750) -> list[dict]:
    return [{"recipient": "seller", "basis": "remainder", "timing": {"kind": "t_plus", "days": 3}},
            {"recipient": "brand", "basis": "percent", "value": brand_bp,
             "timing": {"kind": "on_delivery"}},
            {"recipient": "platform", "basis": "percent", "value": 50,
             "timing": {"kind": "immediate"}}]


def rule_body(net, code: str, **extra) -> dict:
    return {"code": f"{net.u}-{code}", "name": code, "legs": legs(), "trade_modes": ["F2B2b"],
            "sellers": [net.codes["d1"]], "valid_from": "2026-01-01T00:00:00Z", **extra}


def test_the_brand_creates_lists_reads_and_updates_a_rule(client, net):
    brand = net.auth("brand")
    made = client.post("/v1/clearing-rules", headers=brand, json=rule_body(net, "r1"))
    assert made.status_code == 201, made.json
    assert (made.json["version"], made.json["sellers"], made.json["buyers"]) == (
        1, [net.codes["d1"]], None)
    assert made.json["legs"][0] == {"recipient": "seller", "basis": "remainder", "value": 0,
                                    "timing": {"kind": "t_plus", "days": 3, "anchor": "delivery"}}
    again = client.post("/v1/clearing-rules", headers=brand, json=rule_body(net, "r1"))
    assert again.status_code == 201 and again.json == made.json
    other = client.post("/v1/clearing-rules", headers=brand,
                        json=rule_body(net, "r1", priority=7))
    assert other.status_code == 409 and other.json["code"] == "clearing_rule_exists"

    code = made.json["code"]
    listed = client.get(f"/v1/clearing-rules?after={net.u}-r0&limit=500", headers=brand).json
    assert code in [r["code"] for r in listed["items"]]
    assert client.get(f"/v1/clearing-rules/{code}", headers=brand).json == made.json

    changed = client.put(f"/v1/clearing-rules/{code}", headers=brand,
                         json={"legs": legs(800), "version": 1})
    assert changed.status_code == 200, changed.json
    assert (changed.json["version"], changed.json["legs"][1]["value"]) == (2, 800)
    assert changed.json["sellers"] == [net.codes["d1"]]  # left out: kept
    stale = client.put(f"/v1/clearing-rules/{code}", headers=brand,
                       json={"priority": 1, "version": 1})
    assert stale.status_code == 409 and stale.json["code"] == "clearing_rule_version_conflict"
    missing = client.get(f"/v1/clearing-rules/{net.u}-nope", headers=brand)
    assert missing.status_code == 404 and missing.json["code"] == "clearing_rule_not_found"


def test_a_distributor_or_store_key_is_refused(client, net):
    client.post("/v1/clearing-rules", headers=net.auth("brand"), json=rule_body(net, "r1"))
    code = f"{net.u}-r1"
    for who in ("d1", "s1"):
        tries = [
            client.post("/v1/clearing-rules", headers=net.auth(who), json=rule_body(net, "r2")),
            client.get("/v1/clearing-rules", headers=net.auth(who)),
            client.get(f"/v1/clearing-rules/{code}", headers=net.auth(who)),
            client.put(f"/v1/clearing-rules/{code}", headers=net.auth(who), json={"priority": 99}),
            client.put("/v1/business-calendar", headers=net.auth(who), data="2026-10-01,holiday\n",
                       content_type="text/csv"),
            client.get("/v1/business-calendar", headers=net.auth(who)),
        ]
        assert [(t.status_code, t.json["code"]) for t in tries] == [(403, "access_denied")] * 6
    stored = client.get(f"/v1/clearing-rules/{code}", headers=net.auth("brand")).json
    assert (stored["priority"], stored["version"]) == (0, 1)
    absent = client.get(f"/v1/clearing-rules/{net.u}-r2", headers=net.auth("brand"))
    assert absent.status_code == 404


def test_a_bad_rule_is_a_422_naming_the_leg_s_field(client, net):
    body = rule_body(net, "bad")
    body["legs"] = [{"recipient": "seller", "basis": "percent", "value": 15_000,
                     "timing": {"kind": "immediate"}}] + legs()[:1]
    refused = client.post("/v1/clearing-rules", headers=net.auth("brand"), json=body)
    assert refused.status_code == 422 and refused.json["code"] == "invalid_input"
    assert [e["field"] for e in refused.json["errors"]] == ["legs[0].value"]
    unknown = client.post("/v1/clearing-rules", headers=net.auth("brand"),
                          json=rule_body(net, "bad", sellers=[f"{net.u}-ghost"]))
    assert unknown.status_code == 422 and unknown.json["errors"][0]["field"] == "sellers"
    shape = client.post("/v1/clearing-rules", headers=net.auth("brand"),
                        json=rule_body(net, "bad", colour="red"))
    assert shape.status_code == 422 and shape.json["errors"][0]["field"] == "colour"
    assert client.get(f"/v1/clearing-rules/{net.u}-bad",
                      headers=net.auth("brand")).status_code == 404


def test_the_preview_says_which_rule_splits_an_order_and_who_gets_what(client, net,
                                                                         session_factory):
    c, u = net.codes, net.u
    created = client.post("/v1/clearing-rules", headers=net.auth("brand"),
                          json=rule_body(net, "sell-through", categories=[f"{u}-snacks"]))
    assert created.status_code == 201, created.json
    client.post("/v1/clearing-rules", headers=net.auth("brand"),
                json=rule_body(net, "own-stock", trade_modes=["B2b"], priority=50))
    with session_factory() as s, s.begin():
        up = orders.place_order(s, buyer=c["d1"], seller=c["brand"], actor="t",
                                lines=[{"sku": f"{u}-a", "quantity": 10}]).public_id
        order = orders.place_order(s, buyer=c["s1"], seller=c["d1"], actor="t",
                                   lines=[{"sku": f"{u}-a", "quantity": 10}]).public_id
        orders.link_orders(s, upstream=up, downstream=order, actor="t")

    path = f"/v1/orders/{order}/clearing-preview?payment_method=prepaid"
    preview = client.get(path, headers=net.auth("d1"))
    assert preview.status_code == 200, preview.json
    body = preview.json
    assert (body["trade_mode"], body["total_minor"], body["units"]) == ("F2B2b", 100_000, 10)
    (part,) = body["parts"]
    assert (part["rule"], part["rule_version"], part["problem"]) == (f"{u}-sell-through", 1, None)
    assert [(s["party"], s["amount_minor"]) for s in part["shares"]] == [
        (c["d1"], 92_000), (c["brand"], 7_500), ("platform", 500)]
    reasons = {cand["code"]: cand["reason"] for cand in part["explanations"][0]["candidates"]}
    assert reasons[f"{u}-sell-through"] is None and reasons[f"{u}-own-stock"] == "trade_mode"
    assert part["explanations"][0]["category_path"] == [f"{u}-food", f"{u}-snacks"]

    by_brand = client.get(path, headers=net.auth("brand"))
    assert by_brand.status_code == 200 and by_brand.json["parts"] == body["parts"]
    for who in ("d2", "s1"):
        refused = client.get(path, headers=net.auth(who))
        assert refused.status_code == 403 and refused.json["code"] == "access_denied"
    not_cash = client.get(f"/v1/orders/{order}/clearing-preview?payment_method=rebate",
                          headers=net.auth("d1"))
    assert not_cash.status_code == 422 and not_cash.json["errors"][0]["field"] == "payment_method"


def test_the_business_calendar_is_put_as_csv_and_read_back(client, net):
    brand = net.auth("brand")
    csv = "date,kind,note\n2026-10-01,holiday,National Day\n2026-10-10,workday\n"
    put = client.put("/v1/business-calendar", headers=brand, data=csv, content_type="text/csv")
    assert put.status_code == 200, put.json
    assert (put.json["holidays"], put.json["workdays"], put.json["added"]) == (1, 1, 2)
    got = client.get("/v1/business-calendar?year=2026", headers=brand).json["items"]
    assert got == [{"day": "2026-10-01", "kind": "holiday", "note": "National Day"},
                   {"day": "2026-10-10", "kind": "workday", "note": ""}]
    bad = client.put("/v1/business-calendar", headers=brand,
                     data="2026-10-01,holiday\n2026-10-08,workday\n", content_type="text/csv")
    assert bad.status_code == 422 and bad.json["details"] == {"field": "csv", "line": 2}
    as_json = client.put("/v1/business-calendar", headers=brand, json={"2026-10-01": "holiday"})
    assert as_json.status_code == 415
    assert client.get("/v1/business-calendar", headers=brand).json["items"] == got


def test_a_party_lists_and_exports_its_documents_and_no_one_else_s(client, net, session_factory):
    from datetime import timedelta

    from channel_api import clearing_rules, funding, orders
    from ledger import utcnow

    c, u = net.codes, net.u
    with session_factory() as s, s.begin():
        clearing_rules.create_rule(s, code=f"{u}-docs", name="Docs", sellers=[c["d1"]],
                                   actor="t", valid_from=utcnow() - timedelta(days=1), legs=[
                                       {"recipient": "seller", "basis": "remainder", "value": 0,
                                        "timing": {"kind": "immediate"}},
                                       {"recipient": "platform", "basis": "percent",
                                        "value": 100, "timing": {"kind": "immediate"}}])
        funding.confirm_deposit(s, buyer=c["s1"], seller=c["d1"], amount_minor=100_000,
                                bank_reference=f"{u}-dep", actor="t")
        placed = orders.place_order(s, buyer=c["s1"], seller=c["d1"], actor="t",
                                    lines=[{"sku": f"{u}-a", "quantity": 1}])
        order, platform = placed.public_id, placed.total_minor * 100 // 10_000
        funding.pay_with_prepaid(s, order, actor="t")
    mine = client.get(f"/v1/parties/{c['d1']}/documents", headers=net.auth("d1"))
    assert mine.status_code == 200
    assert sorted((d["recipient"], d["amount_minor"], d["order"]) for d in mine.json["items"]) \
        == sorted([(c["d1"], placed.total_minor - platform, order), ("platform", platform, order)])
    exported = client.get(f"/v1/parties/{c['d1']}/documents?format=csv", headers=net.auth("d1"))
    assert exported.mimetype == "text/csv"
    lines = exported.data.decode().splitlines()
    assert lines[0].startswith("public_id,order,seller,buyer,recipient,amount_minor")
    assert len(lines) == 3
    assert client.get(f"/v1/parties/{c['d1']}/documents", headers=net.auth("d2")).status_code == 403
    assert client.get(f"/v1/parties/{c['s1']}/documents",
                      headers=net.auth("s1")).json["items"][0]["buyer"] == c["s1"]
