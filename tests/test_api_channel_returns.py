"""Over HTTP (issue 4): an order held by the credit policy and approved by
the seller; a return requested by the buyer and refunded on approval; a
remittance filed with a receipt and confirmed by the seller's finance key,
not by another seller's."""
from __future__ import annotations

import base64

import pytest

from channel_api import keys
from tests.channel_fixtures import add_tea, build_network, client, engine  # noqa: F401  (fixtures)

PDF = b"%PDF-1.4 receipt of transfer"


@pytest.fixture
def net(session_factory, unique):
    net = build_network(session_factory, unique)
    with session_factory() as s, s.begin():
        add_tea(s, net)
        for name in ("d1", "d2"):
            net.tokens[f"{name}-finance"] = keys.create_api_key(
                s, party=net.codes[name], scopes=["finance"], actor="t").token
    return net


def post(client, net, who, path, json=None):
    return client.post(path, headers=net.auth(who), json=json)


def place(client, net, quantity=3):
    placed = post(client, net, "s1", "/v1/orders", {
        "seller": net.codes["d1"], "lines": [{"sku": f"{net.u}-a", "quantity": quantity}]})
    assert placed.status_code == 201, placed.json
    return placed.json["public_id"]


def test_a_held_order_is_approved_then_partly_returned(client, net):
    c = net.codes
    line = client.put(f"/v1/parties/{c['d1']}/credit-lines/{c['s1']}", headers=net.auth("d1"),
                      json={"limit_minor": 2_000, "terms_kind": "day_of_month", "due_day": 10,
                            "terms_days": 0})
    assert line.status_code == 200 and line.json["credit"]["due_day"] == 10
    policy = client.put(f"/v1/parties/{c['d1']}/credit-policies", headers=net.auth("d1"),
                        json={"on_limit": "hold"})
    assert policy.status_code == 200 and policy.json["grade"] is None
    order = place(client, net)
    held = post(client, net, "s1", f"/v1/orders/{order}/plan",
                {"parts": [{"method": "credit", "amount_minor": 3_000}]})
    assert held.status_code == 200 and held.json["state"] == "held"
    waiting = client.get(f"/v1/sellers/{c['d1']}/held-orders", headers=net.auth("d1")).json
    assert [(h["order"], h["reasons"]) for h in waiting["items"]] == [(order, ["limit_exceeded"])]
    assert post(client, net, "s1", f"/v1/orders/{order}/approve", {}).status_code == 403
    approved = post(client, net, "d1", f"/v1/orders/{order}/approve", {"note": "known buyer"})
    assert approved.status_code == 200 and approved.json["state"] == "paid"
    increases = client.get(f"/v1/parties/{c['d1']}/credit-lines/{c['s1']}/increases",
                           headers=net.auth("d1")).json["items"]
    assert [(i["amount_minor"], i["order"]) for i in increases] == [(1_000, order)]

    asked = post(client, net, "s1", f"/v1/orders/{order}/returns",
                 {"lines": [{"line_no": 1, "quantity": 1}], "reason": "crushed case",
                  "client_reference": "RMA-1"})
    assert asked.status_code == 201 and asked.json["amount_minor"] == 1_000
    ret = asked.json["public_id"]
    priced = post(client, net, "s1", f"/v1/orders/{order}/returns",
                  {"lines": [{"line_no": 1, "quantity": 1, "amount_minor": 1}], "reason": "x"})
    assert priced.status_code == 422  # the client never says what a return is worth
    assert post(client, net, "s1", f"/v1/returns/{ret}/approve", {}).status_code == 403
    queue = client.get(f"/v1/sellers/{c['d1']}/returns?state=requested",
                       headers=net.auth("d1")).json["items"]
    assert [r["public_id"] for r in queue] == [ret]
    refunded = post(client, net, "d1", f"/v1/returns/{ret}/approve", {})
    assert refunded.status_code == 200 and refunded.json["allocation"] == {"credit": 1_000}
    balances = client.get(f"/v1/sellers/{c['d1']}/balances", headers=net.auth("s1")).json
    assert balances["credit"]["used_minor"] == 2_000


def test_a_remittance_is_filed_with_a_receipt_and_confirmed_by_the_seller_s_finance(client, net):
    c = net.codes
    filed = post(client, net, "s1", "/v1/remittances", {
        "seller": c["d1"], "purpose": "deposit", "amount_minor": 5_000,
        "payer_account": "6222 0000 1111", "bank_reference": f"{net.u}-BK1",
        "proof_base64": base64.b64encode(PDF).decode(), "proof_content_type": "application/pdf"})
    assert filed.status_code == 201, filed.json
    rid = filed.json["public_id"]
    proof = client.get(f"/v1/remittances/{rid}/proof", headers=net.auth("d1-finance"))
    assert (proof.status_code, proof.data, proof.mimetype) == (200, PDF, "application/pdf")
    assert client.get(f"/v1/remittances/{rid}/proof", headers=net.auth("s3")).status_code == 403
    # Another seller's finance key, and a manage key without finance, may not confirm.
    assert post(client, net, "d2-finance", f"/v1/remittances/{rid}/confirm", {}).status_code == 403
    assert post(client, net, "d1", f"/v1/remittances/{rid}/confirm", {}).status_code == 403
    confirmed = post(client, net, "d1-finance", f"/v1/remittances/{rid}/confirm", {})
    assert confirmed.status_code == 200 and confirmed.json["state"] == "confirmed"
    balances = client.get(f"/v1/sellers/{c['d1']}/balances", headers=net.auth("s1")).json
    assert balances["prepaid"]["posted_minor"] == 5_000
    mine = client.get("/v1/remittances", headers=net.auth("s1")).json["items"]
    assert [(r["public_id"], r["has_proof"]) for r in mine] == [(rid, True)]
    paid_to_d1 = client.get("/v1/remittances?role=seller&state=confirmed",
                            headers=net.auth("d1-finance")).json["items"]
    assert [r["public_id"] for r in paid_to_d1] == [rid]
    bad = post(client, net, "s1", "/v1/remittances", {
        "seller": c["d1"], "purpose": "deposit", "amount_minor": 5_000,
        "payer_account": "6222 0000 1111", "bank_reference": f"{net.u}-BK2",
        "proof_base64": "not base64!", "proof_content_type": "application/pdf"})
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "proof_base64"
    twice = post(client, net, "s1", "/v1/remittances", {
        "seller": c["d1"], "purpose": "deposit", "amount_minor": 5_000,
        "payer_account": "6222 0000 1111", "bank_reference": f"{net.u}-BK1"})
    assert twice.status_code == 409 and twice.json["code"] == "remittance_exists"
    # A store key cannot be given the finance scope.
    refused = post(client, net, "brand", "/v1/api-keys", {"party": c["s1"], "scopes": ["finance"]})
    assert refused.status_code == 422
