"""Over HTTP (issue 6): a distributor's finance registers its bank account
and asks for payouts; the brand's finance approves the large one, exports a
pain.001 file and uploads the bank's pain.002; the custody bank's signed
callback settles a payout sent through its API; each party reads its own
settlement batches (JSON or CSV), the brand's finance runs a day."""
from __future__ import annotations

from datetime import timedelta

import pytest

import ledger
from channel_api import books, keys, payouts, settlements
from ledger import utcnow
from payments.payout_bank import PayoutOutcome
from payments.sandbox_bank import SimulatedBank
from service.api_payments import GATEWAYS_KEY
from tests.channel_fixtures import build_network, client, engine  # noqa: F401  (fixtures)

DEMO_SECRET = b"sandbox-demo-secret-change-me"   # the default CL_SANDBOX_SECRET the client runs


@pytest.fixture
def net(session_factory, unique):
    net = build_network(session_factory, unique)
    c = net.codes
    with session_factory() as s, s.begin():
        for name in ("d1", "brand"):
            net.tokens[f"{name}-finance"] = keys.create_api_key(
                s, party=c[name], scopes=["finance"], actor="test").token
        # D1's wallet funded by hand: the flows that fill it have their own tests.
        books.ensure(s, books.wallet_account(c["d1"]), "wallet", "liability", "CNY",
                     owner=c["d1"], min_balance=0)
        books.ensure(s, books.CUSTODY, "custody", "asset", "CNY")
        ledger.post_entry(s, ledger.EntryRequest(code="test.fund", postings=[
            ledger.PostingLine(books.CUSTODY, "debit", 8_000_000, "CNY"),
            ledger.PostingLine(books.wallet_account(c["d1"]), "credit", 8_000_000, "CNY")]))
    return net


def ask(client, net, amount, key, who="d1-finance"):
    return client.post("/v1/payouts", headers={**net.auth(who), "Idempotency-Key": key},
                       json={"amount_minor": amount, "remark": "weekly"})


def register(client, net, number="6222021234567890", who="d1-finance"):
    return client.post(f"/v1/parties/{net.codes['d1']}/bank-accounts", headers=net.auth(who),
                       json={"holder_name": "D1 Trading", "account_number": number,
                             "bank_code": "102100099996", "bank_name": "ICBC"})


def test_register_request_approve_export_and_settle_by_status_file(client, net):
    d1 = net.codes["d1"]
    made = register(client, net)
    assert made.status_code == 201, made.json
    assert (made.json["account_number_masked"], made.json["status"]) == (
        "************7890", "active")
    assert register(client, net, who="s1").status_code == 403
    bad = register(client, net, number="12ab")
    assert bad.status_code == 422 and bad.json["details"]["field"] == "account_number"
    listed = client.get(f"/v1/parties/{d1}/bank-accounts", headers=net.auth("d1")).json
    assert [a["public_id"] for a in listed["items"]] == [made.json["public_id"]]

    no_key = client.post("/v1/payouts", headers=net.auth("d1-finance"), json={"amount_minor": 1})
    assert no_key.status_code == 422 and no_key.json["details"]["field"] == "Idempotency-Key"
    small = ask(client, net, 100_000, "p-1")
    assert small.status_code == 201, small.json
    assert (small.json["state"], small.json["party"]) == ("approved", d1)
    assert ask(client, net, 100_000, "p-1").json == small.json          # replayed
    assert ask(client, net, 100, "p-x", who="d1").status_code == 403      # not a finance key
    short = ask(client, net, 9_000_000, "p-2")
    assert short.status_code == 422 and short.json["code"] == "payout_refused"

    large = ask(client, net, 5_000_000, "p-3")                           # the default threshold
    assert large.json["state"] == "awaiting_approval"
    pid = large.json["public_id"]
    assert client.post(f"/v1/payouts/{pid}/approve", headers=net.auth("d1-finance"),
                       json={}).status_code == 403
    approved = client.post(f"/v1/payouts/{pid}/approve", headers=net.auth("brand-finance"),
                           json={"note": "ok"})
    assert approved.status_code == 200 and approved.json["state"] == "approved"
    mine = client.get("/v1/payouts", headers=net.auth("d1-finance")).json["items"]
    assert [p["public_id"] for p in mine] == [pid, small.json["public_id"]]
    assert client.get(f"/v1/payouts/{pid}", headers=net.auth("d2")).status_code == 403

    exported = client.post("/v1/payout-files", headers=net.auth("brand-finance"))
    assert exported.status_code == 201, exported.json
    assert (exported.json["count"], exported.json["total_minor"]) == (2, 5_100_000)
    xml = client.get(exported.json["download"], headers=net.auth("brand-finance"))
    assert xml.status_code == 200 and xml.mimetype == "application/xml"
    assert pid.encode() in xml.data and b"<CtrlSum>51000.00</CtrlSum>" in xml.data
    assert client.post("/v1/payout-files", headers=net.auth("brand-finance")).status_code == 204

    bank = SimulatedBank(DEMO_SECRET)
    report = bank.status_file([
        PayoutOutcome(pid, "confirmed", "B-9", None, utcnow(), 5_000_000),
        PayoutOutcome(small.json["public_id"], "failed", None, "AC04", utcnow(), 100_000)],
        exported.json["public_id"])
    upload = client.post("/v1/payout-status-files", data=report, content_type="application/xml",
                         headers=net.auth("brand-finance"))
    assert upload.status_code == 200, upload.json
    assert (upload.json["applied"], upload.json["conflicts"]) == (2, [])
    garbage = client.post("/v1/payout-status-files", data=b"<x/>",
                          content_type="application/xml", headers=net.auth("brand-finance"))
    assert garbage.status_code == 422 and garbage.json["details"]["field"] == "body"
    events = client.get(f"/v1/payouts/{pid}/events", headers=net.auth("d1-finance")).json
    assert [e["to_state"] for e in events["items"]] == [
        "awaiting_approval", "approved", "sent", "confirmed"]
    factory = client.application.extensions["channel_ledger.engine"]
    from service.db import make_session_factory
    with make_session_factory(factory)() as s:
        assert ledger.get_account(s, books.wallet_account(d1)).posted_minor == 3_000_000


def test_the_custody_banks_signed_callback_settles_a_payout_sent_through_its_api(client, net):
    register(client, net)
    pid = ask(client, net, 2_000, "cb-1").json["public_id"]
    app_bank = client.application.extensions[GATEWAYS_KEY].payout_bank
    from service.db import make_session_factory
    factory = make_session_factory(client.application.extensions["channel_ledger.engine"])
    with factory() as s, s.begin():
        assert payouts.send_payouts(s, app_bank)["sent"] >= 1
    notice = SimulatedBank(DEMO_SECRET).callback_for(
        [PayoutOutcome(pid, "confirmed", "B-1", None, utcnow(), 2_000)])
    path = f"/callbacks/payouts/{app_bank.name}"
    answer = client.post(path, data=notice.body, headers=dict(notice.headers))
    assert answer.status_code == 200, answer.data
    assert client.get(f"/v1/payouts/{pid}", headers=net.auth("d1")).json["state"] == "confirmed"
    forged = client.post(path, data=notice.body.replace(b"confirmed", b"failed"),
                         headers=dict(notice.headers))
    assert forged.status_code == 400
    assert client.get(f"/v1/payouts/{pid}", headers=net.auth("d1")).json["state"] == "confirmed"
    assert client.post("/callbacks/payouts/other-bank", data=notice.body,
                       headers=dict(notice.headers)).status_code == 404


def test_settlement_batches_each_party_its_own_and_the_brand_runs_a_day(client, net):
    d1 = net.codes["d1"]
    brand = net.auth("brand-finance")
    today = utcnow().astimezone(settlements.BUSINESS_TZ).date()
    early = client.post(f"/v1/settlement-runs?day={today}", headers=brand)
    assert early.status_code == 422 and early.json["details"]["field"] == "day"
    from service.db import make_session_factory
    factory = make_session_factory(client.application.extensions["channel_ledger.engine"])
    with factory() as s, s.begin():      # today, as the nightly job will run it tomorrow
        settlements.settle(s, today, now=settlements.day_bounds(today)[1] + timedelta(minutes=1))
    yesterday = client.post(f"/v1/settlement-runs?day={today - timedelta(days=1)}", headers=brand)
    assert yesterday.status_code == 200 and yesterday.json["mismatched"] == []

    own = client.get("/v1/settlement-batches", headers=net.auth("d1")).json["items"]
    assert [(b["party"], b["business_day"]) for b in own] == [(d1, str(today))]
    assert (own[0]["other_detail"], own[0]["wallet_closing_minor"], own[0]["status"]) == (
        {"test.fund": 8_000_000}, 8_000_000, "balanced")
    assert client.get(f"/v1/settlement-batches/{own[0]['public_id']}",
                      headers=net.auth("d2")).status_code == 403
    assert client.get(f"/v1/settlement-batches?party={d1}", headers=net.auth("d2")).status_code \
        == 403
    csv = client.get(f"/v1/settlement-batches?party={d1}&format=csv", headers=brand)
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    header, row = csv.get_data(as_text=True).splitlines()
    assert header.startswith("public_id,party,business_day") and row.endswith(",0,balanced")
