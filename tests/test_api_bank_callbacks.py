"""The online bank's (B2B) callbacks through the real Flask app (issue 5):
an order and a deposit paid through ``payments.bank`` end to end, each
callback POSTed to ``/callbacks/bank`` with a real HMAC signature. A valid
one is applied once (a duplicate is acknowledged, not applied again); a
tampered, stale, foreign or wrongly signed one is refused with the bank's
failure, stored as rejected, and posts nothing."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import pytest

import ledger
from channel_api import funding, gateway_payments
from payments import signing
from payments.bank import SIGNATURE_HEADER, OnlineBankGateway, format_bank_time
from payments.models import GatewayCallback, Payment, PaymentException, PaymentRefund
from service.api_payments import GATEWAYS_KEY
from tests.channel_fixtures import (  # noqa: F401  (fixtures)
    client,
    engine,
    order_with_gateway_part,
    tea_network_with_deposit,
)
from tests.test_gateway_config import BANK_MER_ID, BANK_SECRET, RealTimeBank


@pytest.fixture
def net(session_factory, unique):
    return tea_network_with_deposit(session_factory, unique)


@pytest.fixture
def bank(client):
    """The bank behind the adapter the app uses for ``bank``."""
    fake = RealTimeBank()
    client.application.extensions[GATEWAYS_KEY].adapters["bank"] = OnlineBankGateway(
        mer_id=BANK_MER_ID, secret=BANK_SECRET.encode(), transport=fake,
        base_url="https://bank.example/gateway")
    return fake


def signed(fields: dict[str, str], *, as_json: bool = False, secret: str = BANK_SECRET,
           at: datetime | None = None) -> tuple[bytes, dict[str, str]]:
    """A notice as the bank posts it: the body and its headers."""
    if as_json:
        body, content_type = json.dumps(fields).encode(), "application/json"
    else:
        body, content_type = urlencode(fields).encode(), "application/x-www-form-urlencoded"
    stamp = int((at or datetime.now(timezone.utc)).timestamp())
    return body, {"Content-Type": content_type,
                  SIGNATURE_HEADER: signing.sign(secret.encode(), stamp, body)}


def paid(out_trade_no: str, yuan: str, serial: str, **overrides: str) -> dict[str, str]:
    return {"merId": BANK_MER_ID, "orderNo": out_trade_no, "bankSerialNo": serial,
            "tranAmt": yuan, "tranStat": "SUCCESS",
            "tranTime": format_bank_time(datetime.now(timezone.utc)), **overrides}


def post(client, body: bytes, headers: dict[str, str]):
    return client.post("/callbacks/bank", data=body, headers=headers)


def balance(session_factory, code: str) -> int:
    with session_factory() as s:
        try:
            return ledger.get_account(s, code).posted_minor
        except ledger.AccountNotFound:
            return 0


def callbacks_of(session_factory, out_trade_no: str) -> list[tuple[str, str | None]]:
    with session_factory() as s:
        return [(c.state, c.reason) for c in s.query(GatewayCallback).filter_by(
            gateway="bank", out_trade_no=out_trade_no).order_by(GatewayCallback.id)]


def rejected_since(session_factory, first_id: int) -> list[str]:
    with session_factory() as s:
        return [c.reason for c in s.query(GatewayCallback).filter(
            GatewayCallback.gateway == "bank", GatewayCallback.id > first_id,
            GatewayCallback.state == "rejected").order_by(GatewayCallback.id)]


def last_callback_id(session_factory) -> int:
    with session_factory() as s:
        return max([c.id for c in s.query(GatewayCallback)] or [0])


def order_state(client, net, order):
    return client.get(f"/v1/orders/{order}", headers=net.auth("s1")).json["state"]


def test_an_order_paid_at_the_bank_is_applied_once_and_forgeries_post_nothing(
        client, net, bank, session_factory):
    order, payment = order_with_gateway_part(client, net, gateway="bank")
    assert (payment["state"], payment["amount_minor"]) == ("pending", 600)
    assert payment["pay_url"] == f"https://bank.example/b2b/{payment['public_id']}"
    # What the adapter sent the bank, signed (the fake checked it): yuan, our notify URL.
    sent = bank.requests[-1]
    assert (sent["orderNo"], sent["tranAmt"]) == (payment["public_id"], "6.00")
    assert sent["notifyUrl"].endswith("/callbacks/bank")

    out_trade_no, serial = payment["public_id"], f"B{net.u}01"
    receivable = gateway_payments.receivable_account("bank")
    escrow = funding.escrow_account(order)
    before = (balance(session_factory, escrow), balance(session_factory, receivable))
    first = last_callback_id(session_factory)

    body, headers = signed(paid(out_trade_no, "6.00", serial))
    # Tampered: the amount changed after signing.
    tampered = post(client, body.replace(b"tranAmt=6.00", b"tranAmt=0.01"), headers)
    assert tampered.status_code == 400
    assert tampered.json == {"respCode": "9999", "respMsg": "bad_signature"}
    # Signed with a secret that is not ours; signed right but long ago; for another merchant.
    foreign = post(client, *signed(paid(out_trade_no, "6.00", serial),
                                   secret="not-the-bank-secret-000000"))
    stale = post(client, *signed(paid(out_trade_no, "6.00", serial),
                                 at=datetime.now(timezone.utc) - timedelta(minutes=10)))
    other = post(client, *signed(paid(out_trade_no, "6.00", serial, merId="104110040000000")))
    unsigned = post(client, body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert [r.status_code for r in (foreign, stale, other, unsigned)] == [400] * 4
    assert [r.json["respCode"] for r in (foreign, stale, other, unsigned)] == ["9999"] * 4
    reasons = rejected_since(session_factory, first)
    assert [r.split(":")[0] for r in reasons] == [
        "bad_signature", "bad_signature", "stale_timestamp", "wrong_app", "malformed"]
    # Nothing was posted, no exception opened, the order still waits.
    assert (balance(session_factory, escrow), balance(session_factory, receivable)) == before
    assert order_state(client, net, order) == "awaiting_payment"
    with session_factory() as s:
        assert s.query(PaymentException).filter_by(gateway="bank",
                                                   out_trade_no=out_trade_no).count() == 0

    good = post(client, body, headers)
    assert good.status_code == 200 and good.json == {"respCode": "0000"}
    again = post(client, body, headers)  # the bank notifies again: acknowledged, not applied
    assert again.status_code == 200 and again.json == {"respCode": "0000"}
    assert order_state(client, net, order) == "paid"
    assert balance(session_factory, escrow) - before[0] == 1_000   # 400 deposit + 600 bank
    assert balance(session_factory, receivable) - before[1] == 600
    assert [state for state, _ in callbacks_of(session_factory, out_trade_no)] == [
        "applied", "duplicate"]
    seen = client.get(f"/v1/payments/{out_trade_no}", headers=net.auth("s1")).json
    assert (seen["state"], seen["transaction_id"]) == ("succeeded", serial)
    with session_factory() as s:
        assert ledger.check_ledger(s) == []


def test_a_deposit_paid_at_the_bank_with_a_json_notice(client, net, bank, session_factory):
    started = client.post("/v1/payments", headers=net.auth("s1"), json={
        "gateway": "bank", "purpose": "deposit", "seller": net.codes["d1"],
        "amount_minor": 123_456})
    assert started.status_code == 201, started.json
    out_trade_no = started.json["public_id"]
    assert bank.requests[-1]["tranAmt"] == "1234.56"
    prepaid = funding.prepaid_account(net.codes["s1"], net.codes["d1"])
    before = balance(session_factory, prepaid)
    body, headers = signed(paid(out_trade_no, "1234.56", f"B{net.u}02"), as_json=True)
    assert post(client, body, headers).json == {"respCode": "0000"}
    assert post(client, body, headers).status_code == 200
    assert balance(session_factory, prepaid) - before == 123_456  # once
    assert [state for state, _ in callbacks_of(session_factory, out_trade_no)] == [
        "applied", "duplicate"]
    # A JSON number for an amount is refused: it could be a float.
    body, headers = signed({**paid(out_trade_no, "1234.56", f"B{net.u}03"), "tranAmt": 1234.56},
                           as_json=True)
    assert post(client, body, headers).status_code == 400
    assert balance(session_factory, prepaid) - before == 123_456


def test_a_cancelled_order_s_bank_part_is_refunded_by_the_bank_s_refund_notice(
        client, net, bank, session_factory):
    placed = client.post("/v1/orders", headers=net.auth("s1"), json={
        "seller": net.codes["d1"], "lines": [{"sku": f"{net.u}-a", "quantity": 1}],
        "plan": [{"method": "gateway", "amount_minor": 1_000}]}).json
    order = placed["public_id"]
    payment = client.post("/v1/payments", headers=net.auth("s1"),
                          json={"gateway": "bank", "order": order}).json
    assert post(client, *signed(paid(payment["public_id"], "10.00", f"B{net.u}04"))).status_code == 200
    assert order_state(client, net, order) == "paid"
    assert client.post(f"/v1/orders/{order}/cancel", headers=net.auth("s1"),
                       json={}).status_code == 200
    with session_factory() as s:
        refund = s.query(PaymentRefund).join(Payment).filter(
            Payment.public_id == payment["public_id"]).one()
        assert (refund.state, refund.amount_minor) == ("processing", 1_000)  # the bank took it
    assert bank.requests[-1]["refundAmt"] == "10.00"
    escrow = funding.escrow_account(order)
    assert balance(session_factory, escrow) == 1_000
    notice = paid(payment["public_id"], "10.00", "RF" + refund.public_id, refundNo=refund.public_id,
                  refundAmt="10.00", refundStat="SUCCESS")
    assert post(client, *signed(notice)).json == {"respCode": "0000"}
    assert post(client, *signed(notice)).status_code == 200
    assert balance(session_factory, escrow) == 0
    with session_factory() as s:
        assert s.get(PaymentRefund, refund.id).state == "succeeded"
        assert ledger.check_ledger(s) == []
