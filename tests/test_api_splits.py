"""Gateway accounts and split instructions over HTTP (issue 6): a party
registers its account at the sandbox gateway with its manage key; an order
paid through the sandbox to it as payee is split at the sandbox by the
scheduler's jobs; a closed receiver is raised for the brand's finance, who
reads it with its events and retries it; a party sees only its own."""
from __future__ import annotations

from datetime import timedelta

import pytest

import ledger
from channel_api import cash, clearing_rules
from ledger import utcnow
from service import scheduler
from service.api_payments import GATEWAYS_KEY
from tests.channel_fixtures import add_tea, build_network, client, engine  # noqa: F401  (fixtures)

LEGS = [
    {"recipient": "seller", "basis": "remainder", "timing": {"kind": "immediate"}},
    {"recipient": "brand", "basis": "percent", "value": 750, "timing": {"kind": "immediate"}},
    {"recipient": "platform", "basis": "percent", "value": 50, "timing": {"kind": "immediate"}},
]


@pytest.fixture
def net(client, session_factory, unique):
    net = build_network(session_factory, unique)
    with session_factory() as s, s.begin():
        add_tea(s, net, list_price_minor=1_000)
        clearing_rules.create_rule(s, code=f"{unique}-rule", name="store orders", legs=LEGS,
                                   sellers=[net.codes["d1"]], actor="brand",
                                   valid_from=utcnow() - timedelta(days=1))
    return net


def register(client, net, who, party, account):
    return client.post(f"/v1/parties/{party}/gateway-accounts", headers=net.auth(who),
                       json={"gateway": "sandbox", "account": account, "kind": "account"})


def test_a_party_registers_its_gateway_account_and_reads_it(client, net):
    d1 = net.codes["d1"]
    first = register(client, net, "d1", d1, f"{net.u}-d1-old")
    assert first.status_code == 201, first.json
    assert (first.json["party"], first.json["gateway"], first.json["status"]) == (
        d1, "sandbox", "active")
    again = register(client, net, "d1", d1, f"{net.u}-d1-old")
    assert again.json["public_id"] == first.json["public_id"]        # the same: nothing new
    second = register(client, net, "brand", d1, f"{net.u}-d1")     # the brand on its behalf
    assert second.status_code == 201 and second.json["public_id"] != first.json["public_id"]
    listed = client.get(f"/v1/parties/{d1}/gateway-accounts", headers=net.auth("d1")).json
    assert [(a["account"], a["status"]) for a in listed["items"]] == [
        (f"{net.u}-d1", "active"), (f"{net.u}-d1-old", "retired")]
    wrong = client.post(f"/v1/parties/{d1}/gateway-accounts", headers=net.auth("d1"),
                        json={"gateway": "wechatpay", "account": "1900000110", "kind": "userId"})
    assert wrong.status_code == 422 and wrong.json["details"]["field"] == "kind"
    bank = client.post(f"/v1/parties/{d1}/gateway-accounts", headers=net.auth("d1"),
                       json={"gateway": "bank", "account": "x", "kind": "account"})
    assert bank.status_code == 422 and bank.json["details"]["field"] == "gateway"
    assert register(client, net, "d1", "platform", "evil").status_code == 403
    assert register(client, net, "brand", "platform", f"{net.u}-platform").status_code == 201


def test_a_closed_receiver_is_raised_read_with_its_events_and_retried_by_finance(
        client, net, session_factory):
    c = net.codes
    vendor = client.application.extensions[GATEWAYS_KEY].sandbox_vendor
    adapters = client.application.extensions[GATEWAYS_KEY].adapters
    for who, party, account in (("d1", c["d1"], f"{net.u}-d1"),
                                ("brand", c["brand"], f"{net.u}-brand"),
                                ("brand", "platform", f"{net.u}-platform")):
        assert register(client, net, who, party, account).status_code == 201
    placed = client.post("/v1/orders", headers=net.auth("s1"), json={
        "seller": c["d1"], "lines": [{"sku": f"{net.u}-a", "quantity": 100}],
        "plan": [{"method": "gateway", "amount_minor": 100_000}]})
    assert placed.status_code == 201, placed.json
    payment = client.post("/v1/payments", headers=net.auth("s1"),
                          json={"gateway": "sandbox", "order": placed.json["public_id"]}).json
    headers, body = vendor.pay(payment["public_id"])
    assert client.post("/callbacks/sandbox", data=body, headers=headers).status_code == 200

    vendor.receiver_faults = {f"{net.u}-brand": "NO_SUCH_ACCOUNT"}
    try:
        assert scheduler.send_splits(session_factory, adapters) >= 1
        scheduler.poll_splits(session_factory, adapters)
    finally:
        vendor.receiver_faults = {}
    raised = client.get(f"/v1/split-instructions?attention=true&payment={payment['public_id']}",
                        headers=net.auth("brand")).json["items"]
    assert len(raised) == 1
    failed = raised[0]
    assert (failed["state"], failed["kind"], failed["payee"]) == ("failed", "split", c["d1"])
    assert "NO_SUCH_ACCOUNT" in failed["reason"]
    assert {r["party"]: r["result"] for r in failed["receivers"]} == {
        c["brand"]: "closed", "platform": "success"}

    # The payee reads it, with every state change; the brand's finance retries it.
    detail = client.get(f"/v1/split-instructions/{failed['public_id']}", headers=net.auth("d1"))
    assert detail.status_code == 200
    assert [e["to_state"] for e in detail.json["events"]][:2] == ["created", "processing"]
    assert detail.json["events"][-1]["to_state"] == "failed"
    assert [e["entry_id"] is not None for e in detail.json["events"]].count(True) == 1
    assert client.post(f"/v1/split-instructions/{failed['public_id']}/retry",
                       headers=net.auth("d1"), json={}).status_code == 403
    retried = client.post(f"/v1/split-instructions/{failed['public_id']}/retry",
                          headers=net.auth("brand"), json={"note": "account fixed"})
    assert retried.status_code == 201, retried.json
    assert retried.json["retry_of"] == failed["public_id"]
    assert retried.json["public_id"] != failed["public_id"]
    assert [(r["party"], r["amount_minor"]) for r in retried.json["receivers"]] == [
        (c["brand"], 7_500)]
    again = client.post(f"/v1/split-instructions/{failed['public_id']}/retry",
                        headers=net.auth("brand"), json={})
    assert again.status_code == 409 and again.json["code"] == "illegal_transition"

    # The jobs send the retry, then the finish; D1 sees its own, page by page.
    for _ in range(2):
        scheduler.send_splits(session_factory, adapters)
        scheduler.poll_splits(session_factory, adapters)
    mine = client.get(f"/v1/split-instructions?payment={payment['public_id']}",
                      headers=net.auth("d1")).json["items"]
    assert sorted((i["kind"], i["state"]) for i in mine) == [
        ("finish", "succeeded"), ("split", "retried"), ("split", "succeeded")]
    page = client.get(f"/v1/split-instructions?payment={payment['public_id']}&limit=2",
                      headers=net.auth("d1")).json
    rest = client.get(f"/v1/split-instructions?payment={payment['public_id']}&limit=2"
                      f"&after={page['next_cursor']}", headers=net.auth("d1")).json
    assert [i["public_id"] for i in page["items"] + rest["items"]] == [
        i["public_id"] for i in mine] and rest["next_cursor"] is None
    # The store (neither payee nor receiver) sees none of them.
    assert client.get(f"/v1/split-instructions?payment={payment['public_id']}",
                      headers=net.auth("s1")).json["items"] == []
    with session_factory() as s:
        assert cash.check_cash(s).holds
        assert ledger.check_ledger(s) == []
