"""Orders over HTTP: the buyer places with its key and gets server prices;
a price in the body is refused; the seller sees its sales; cancel; events;
Idempotency-Key and client_reference."""
from __future__ import annotations

import pytest

from channel_api import prices
from tests.channel_fixtures import add_tea, build_network, client, engine  # noqa: F401  (fixtures)


@pytest.fixture
def net(session_factory, unique):
    net = build_network(session_factory, unique)
    u = unique
    with session_factory() as s, s.begin():
        add_tea(s, net)
        prices.create_strategy(s, code=f"{u}-p", owner=net.codes["d1"], name="P", rule="percent",
                               product_scope={"all": True}, actor="t",
                               tiers=[{"sku": None, "min_qty": 1, "percent_bp": 9500}])
    return net


def body(net, **extra):
    return {"seller": net.codes["d1"], "lines": [{"sku": f"{net.u}-a", "quantity": 3}], **extra}


def test_a_store_places_an_order_priced_by_the_server(client, net):
    placed = client.post("/v1/orders", headers=net.auth("s1"), json=body(net))
    assert placed.status_code == 201, placed.json
    order = placed.json
    assert (order["buyer_code"], order["state"], order["total_minor"]) == (net.codes["s1"], "placed", 2850)
    assert order["lines"][0]["strategy_code"] == f"{net.u}-p"
    mine = client.get("/v1/orders", headers=net.auth("s1")).json["items"]
    assert [o["public_id"] for o in mine] == [order["public_id"]]
    sales = client.get("/v1/orders?role=seller", headers=net.auth("d1")).json["items"]
    assert [o["public_id"] for o in sales] == [order["public_id"]]
    assert client.get("/v1/orders?role=seller", headers=net.auth("s1")).status_code == 403
    seen = client.get(f"/v1/orders/{order['public_id']}", headers=net.auth("d1"))
    assert seen.status_code == 200 and seen.json == order


def test_a_price_in_the_body_is_refused(client, net):
    bad = body(net)
    bad["lines"][0]["unit_price_minor"] = 1
    refused = client.post("/v1/orders", headers=net.auth("s1"), json=bad)
    assert refused.status_code == 422
    assert refused.json["errors"][0]["field"] == "lines.0.unit_price_minor"
    total = client.post("/v1/orders", headers=net.auth("s1"), json=body(net, total_minor=1))
    assert total.status_code == 422 and total.json["errors"][0]["field"] == "total_minor"
    assert client.get("/v1/orders", headers=net.auth("s1")).json["items"] == []


def test_cancel_and_the_event_trail(client, net):
    order = client.post("/v1/orders", headers=net.auth("s1"), json=body(net)).json
    cancelled = client.post(f"/v1/orders/{order['public_id']}/cancel", headers=net.auth("s1"),
                            json={"reason": "ordered twice"})
    assert cancelled.status_code == 200 and cancelled.json["state"] == "cancelled"
    again = client.post(f"/v1/orders/{order['public_id']}/cancel", headers=net.auth("s1"), json={})
    assert again.status_code == 409 and again.json["code"] == "illegal_transition"
    events = client.get(f"/v1/orders/{order['public_id']}/events", headers=net.auth("s1")).json["items"]
    assert [(e["action"], e["to_state"]) for e in events] == [("place", "placed"), ("cancel", "cancelled")]
    assert events[1]["details"] == {"reason": "ordered twice"} and events[1]["actor"].startswith("api:key_")


def test_retries_do_not_place_twice(client, net):
    headers = {**net.auth("s1"), "Idempotency-Key": f"{net.u}-o1"}
    first = client.post("/v1/orders", headers=headers, json=body(net))
    replay = client.post("/v1/orders", headers=headers, json=body(net))
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.json == first.json
    by_ref = [client.post("/v1/orders", headers=net.auth("s1"), json=body(net, client_reference="PO-7"))
              for _ in range(2)]
    assert by_ref[0].json["public_id"] == by_ref[1].json["public_id"]
    assert len(client.get("/v1/orders", headers=net.auth("s1")).json["items"]) == 2


def test_a_distributor_links_its_purchase_to_the_sales_it_serves(client, net, session_factory):
    upstream = client.post("/v1/orders", headers=net.auth("d1"),
                           json={"seller": net.codes["brand"],
                                 "lines": [{"sku": f"{net.u}-a", "quantity": 30}]})
    assert upstream.status_code == 201, upstream.json
    downstream = client.post("/v1/orders", headers=net.auth("s1"), json=body(net)).json
    linked = client.post(f"/v1/orders/{upstream.json['public_id']}/downstream", headers=net.auth("d1"),
                         json={"downstream": downstream["public_id"]})
    assert linked.status_code == 200, linked.json
    assert [o["public_id"] for o in linked.json["items"]] == [downstream["public_id"]]
    # The brand sees the chain.
    chain = client.get(f"/v1/orders/{upstream.json['public_id']}/downstream", headers=net.auth("brand"))
    assert [o["buyer_code"] for o in chain.json["items"]] == [net.codes["s1"]]


def test_a_store_pays_from_its_deposit_and_a_cancel_gives_it_back(client, net):
    c = net.codes
    deposit = client.post("/v1/deposits", headers=net.auth("brand"),
                          json={"buyer": c["s1"], "seller": c["d1"], "amount_minor": 5000,
                                "bank_reference": f"{net.u}-R1"})
    assert deposit.status_code == 201, deposit.json
    assert client.post("/v1/deposits", headers=net.auth("d1"), json={
        "buyer": c["s1"], "seller": c["d1"], "amount_minor": 1, "bank_reference": "x"}).status_code == 403
    order = client.post("/v1/orders", headers=net.auth("s1"), json=body(net)).json
    assert client.post(f"/v1/orders/{order['public_id']}/pay/prepaid", headers=net.auth("d1")).status_code == 403
    paid = client.post(f"/v1/orders/{order['public_id']}/pay/prepaid", headers=net.auth("s1"))
    assert paid.status_code == 200 and paid.json["state"] == "paid"
    balance = client.get(f"/v1/sellers/{c['d1']}/balances", headers=net.auth("s1")).json
    assert balance["prepaid"]["available_minor"] == 5000 - 2850
    again = client.post(f"/v1/orders/{order['public_id']}/pay/prepaid", headers=net.auth("s1"))
    assert again.status_code == 409 and again.json["code"] == "illegal_transition"
    client.post(f"/v1/orders/{order['public_id']}/cancel", headers=net.auth("d1"), json={})
    seen_by_seller = client.get(f"/v1/sellers/{c['d1']}/balances?buyer={c['s1']}", headers=net.auth("d1")).json
    assert seen_by_seller["prepaid"]["available_minor"] == 5000


def test_paying_more_than_the_deposit_is_a_clear_refusal(client, net):
    order = client.post("/v1/orders", headers=net.auth("s1"), json=body(net)).json
    refused = client.post(f"/v1/orders/{order['public_id']}/pay/prepaid", headers=net.auth("s1"))
    assert refused.status_code == 422 and refused.json["code"] == "insufficient_funds"
    assert client.get(f"/v1/orders/{order['public_id']}", headers=net.auth("s1")).json["state"] == "placed"


def test_a_mixed_plan_through_the_api(client, net):
    c = net.codes
    client.put(f"/v1/parties/{c['d1']}/rebate-rule", headers=net.auth("d1"), json={"max_percent_bp": 2000})
    granted = client.post("/v1/rebates", headers=net.auth("brand"), json={
        "buyer": c["s1"], "seller": c["d1"], "amount_minor": 1000, "reference": f"{net.u}-q3",
        "reason": "Q3 volume"})
    assert granted.status_code == 201 and granted.json["balances"]["rebate"]["posted_minor"] == 1000
    order = client.post("/v1/orders", headers=net.auth("s1"), json=body(net)).json  # 2,850
    too_much = client.post(f"/v1/orders/{order['public_id']}/plan", headers=net.auth("s1"), json={"parts": [
        {"method": "rebate", "amount_minor": 600}, {"method": "offline", "amount_minor": 2250}]})
    assert too_much.status_code == 422 and too_much.json["details"]["rebate_cap_minor"] == 570
    planned = client.post(f"/v1/orders/{order['public_id']}/plan", headers=net.auth("s1"), json={"parts": [
        {"method": "rebate", "amount_minor": 570}, {"method": "offline", "amount_minor": 2280}]})
    assert planned.status_code == 200 and planned.json["state"] == "awaiting_payment"
    paid = client.post(f"/v1/orders/{order['public_id']}/transfers", headers=net.auth("brand"),
                       json={"amount_minor": 2280, "bank_reference": f"{net.u}-t"})
    assert paid.status_code == 200 and paid.json["state"] == "paid"
    left = client.get(f"/v1/sellers/{c['d1']}/balances", headers=net.auth("s1")).json
    assert left["rebate"]["posted_minor"] == 430


def test_a_seller_grants_credit_and_its_buyer_pays_with_it(client, net):
    c = net.codes
    line = client.put(f"/v1/parties/{c['d1']}/credit-lines/{c['s1']}", headers=net.auth("d1"),
                      json={"limit_minor": 3000, "terms_days": 45})
    assert line.status_code == 200, line.json
    assert line.json["credit"] == {"limit_minor": 3000, "used_minor": 0, "reserved_minor": 0,
                                   "available_minor": 3000, "valid_to": None, "status": "active",
                                   "base_limit_minor": 3000, "increases_minor": 0,
                                   "terms_kind": "days_after_delivery", "terms_days": 45,
                                   "due_day": None, "source": "manual", "due_minor": 0,
                                   "overdue_minor": 0, "next_due_at": None}
    order = client.post("/v1/orders", headers=net.auth("s1"), json=body(net)).json  # 2,850
    paid = client.post(f"/v1/orders/{order['public_id']}/plan", headers=net.auth("s1"),
                       json={"parts": [{"method": "credit", "amount_minor": 2850}]})
    assert paid.status_code == 200 and paid.json["state"] == "paid"
    second = client.post("/v1/orders", headers=net.auth("s1"), json=body(net)).json
    over = client.post(f"/v1/orders/{second['public_id']}/plan", headers=net.auth("s1"),
                       json={"parts": [{"method": "credit", "amount_minor": 2850}]})
    assert over.status_code == 422 and over.json["code"] == "limit_exceeded"
    seen = client.get(f"/v1/sellers/{c['d1']}/balances", headers=net.auth("s1")).json["credit"]
    assert (seen["used_minor"], seen["available_minor"]) == (2850, 150)


def test_the_seller_ships_and_the_buyer_confirms_receipt(client, net):
    c = net.codes
    client.post("/v1/deposits", headers=net.auth("brand"), json={
        "buyer": c["s1"], "seller": c["d1"], "amount_minor": 5000, "bank_reference": f"{net.u}-S"})
    order = client.post("/v1/orders", headers=net.auth("s1"), json=body(net)).json
    early = client.post(f"/v1/orders/{order['public_id']}/ship", headers=net.auth("d1"), json={})
    assert early.status_code == 409 and early.json["details"]["state"] == "placed"
    client.post(f"/v1/orders/{order['public_id']}/pay/prepaid", headers=net.auth("s1"))
    assert client.post(f"/v1/orders/{order['public_id']}/ship", headers=net.auth("s1"), json={}).status_code == 403
    shipped = client.post(f"/v1/orders/{order['public_id']}/ship", headers=net.auth("d1"),
                          json={"tracking": "SF1"})
    assert shipped.status_code == 200 and shipped.json["state"] == "shipped"
    assert client.post(f"/v1/orders/{order['public_id']}/confirm-receipt", headers=net.auth("d1")).status_code == 403
    received = client.post(f"/v1/orders/{order['public_id']}/confirm-receipt", headers=net.auth("s1"))
    assert received.status_code == 200 and received.json["state"] == "delivered"


def test_credit_aging_and_repayment_through_the_api(client, net):
    c = net.codes
    client.put(f"/v1/parties/{c['d1']}/credit-lines/{c['s1']}", headers=net.auth("d1"),
               json={"limit_minor": 10000, "terms_days": 10})
    order = client.post("/v1/orders", headers=net.auth("s1"), json=body(net)).json
    client.post(f"/v1/orders/{order['public_id']}/plan", headers=net.auth("s1"),
                json={"parts": [{"method": "credit", "amount_minor": 2850}]})
    aging = client.get(f"/v1/sellers/{c['d1']}/credit/aging", headers=net.auth("s1")).json
    assert aging["buckets"]["not_due"] == 2850 and aging["debts"][0]["due_at"] is None
    repaid = client.post("/v1/credit-repayments", headers=net.auth("brand"), json={
        "buyer": c["s1"], "seller": c["d1"], "amount_minor": 2850, "bank_reference": f"{net.u}-r"})
    assert repaid.status_code == 200 and repaid.json["outstanding_minor"] == 0
    seen = client.get(f"/v1/sellers/{c['d1']}/credit/aging?buyer={c['s1']}", headers=net.auth("d1")).json
    assert seen["debts"] == []


def test_an_order_is_placed_and_funded_in_one_call_or_not_at_all(client, net, session_factory):
    from channel_api import funding

    with session_factory() as s, s.begin():
        funding.confirm_deposit(s, buyer=net.codes["s1"], seller=net.codes["d1"],
                                amount_minor=10_000, bank_reference=f"{net.u}-dep", actor="t")
    short = client.post("/v1/orders", headers=net.auth("s1"), json=body(
        net, plan=[{"method": "prepaid", "amount_minor": 2_849}]))
    assert short.status_code == 422 and short.json["details"]["total_minor"] == 2850
    assert client.get("/v1/orders", headers=net.auth("s1")).json["items"] == []  # nothing placed
    paid = client.post("/v1/orders", headers=net.auth("s1"), json=body(
        net, client_reference="PO-9", plan=[{"method": "prepaid", "amount_minor": 2_850}]))
    assert paid.status_code == 201 and paid.json["state"] == "paid", paid.json
    again = client.post("/v1/orders", headers=net.auth("s1"), json=body(
        net, client_reference="PO-9", plan=[{"method": "prepaid", "amount_minor": 2_850}]))
    assert again.json["public_id"] == paid.json["public_id"] and again.json["state"] == "paid"
    balances = client.get(f"/v1/sellers/{net.codes['d1']}/balances", headers=net.auth("s1")).json
    assert balances["prepaid"]["posted_minor"] == 10_000 - 2_850
