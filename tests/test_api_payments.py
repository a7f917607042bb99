"""Payments through gateways over HTTP (issue 5): the sandbox end to end
(checkout page, signed callback, order paid), WeChat Pay callbacks with
real signatures (valid, tampered, stale, probe, duplicate, unknown order,
amount mismatch, after cancellation), Alipay's notices, and the inbox's
retry of a callback whose application failed."""
from __future__ import annotations

import json
import secrets

import pytest

import ledger
from channel_api import catalog, funding, gateway_payments, gateway_refunds, orders
from channel_api import errors as ca_errors
from payments.models import GatewayCallback, Payment, PaymentException, PaymentRefund
from service import callbacks
from service.api_payments import GATEWAYS_KEY
from tests.channel_fixtures import (  # noqa: F401  (fixtures)
    client,
    engine,
    order_with_gateway_part,
    tea_network_with_deposit,
)
from tests.vendors.wechatpay import FakeWeChatPay


@pytest.fixture
def net(session_factory, unique):
    return tea_network_with_deposit(session_factory, unique)


@pytest.fixture(scope="module")
def wechat_vendor():
    return FakeWeChatPay()  # its RSA keys are slow to make: one per module


@pytest.fixture
def wechat(client, wechat_vendor):
    client.application.extensions[GATEWAYS_KEY].adapters["wechatpay"] = wechat_vendor.gateway()
    return wechat_vendor


def escrow(session_factory, order):
    with session_factory() as s:
        return ledger.get_account(s, funding.escrow_account(order)).posted_minor


def callback_states(session_factory, gateway):
    with session_factory() as s:
        return [c.state for c in s.query(GatewayCallback).filter_by(gateway=gateway)
                .order_by(GatewayCallback.id)]


def test_an_order_is_paid_through_the_sandbox_checkout_end_to_end(client, net, session_factory):
    order, payment = order_with_gateway_part(client, net)
    assert (payment["amount_minor"], payment["state"]) == (600, "pending")
    assert payment["pay_url"] == f"/sandbox/checkout/{payment['public_id']}"
    again = client.post("/v1/payments", headers=net.auth("s1"),
                        json={"gateway": "sandbox", "order": order})
    assert again.json["public_id"] == payment["public_id"]  # the open payment, not a new one
    page = client.get(payment["pay_url"])
    assert page.status_code == 200 and b"CNY 6.00" in page.data
    paid = client.post(payment["pay_url"], data={"action": "pay"})
    assert b"answered 200" in paid.data
    assert client.get(f"/v1/orders/{order}", headers=net.auth("s1")).json["state"] == "paid"
    seen = client.get(f"/v1/payments/{payment['public_id']}", headers=net.auth("s1")).json
    assert seen["state"] == "succeeded" and seen["transaction_id"]
    assert escrow(session_factory, order) == 1_000
    # The provider retries its callback: applied once, answered success again.
    vendor = client.application.extensions[GATEWAYS_KEY].sandbox_vendor
    with session_factory() as s:
        first = s.query(GatewayCallback).filter_by(out_trade_no=payment["public_id"]).one()
        body = json.loads(first.body)
    headers, raw = vendor.redeliver(body["id"])
    retry = client.post("/callbacks/sandbox", data=raw, headers=headers)
    assert retry.status_code == 200
    assert escrow(session_factory, order) == 1_000
    assert callback_states(session_factory, "sandbox")[-2:] == ["applied", "duplicate"]
    with session_factory() as s:
        assert ledger.check_ledger(s) == []
    # The buyer and the seller were told, once each thing happened (the outbox).
    for who in ("s1", "d1"):
        events = client.get("/v1/events?limit=100", headers=net.auth(who)).json["items"]
        mine = [(e["type"], e["subject"]) for e in events
                if e["subject"] in (order, payment["public_id"])]
        assert mine == [("order.awaiting_payment", order),
                        ("payment.succeeded", payment["public_id"]), ("order.paid", order)]


def test_wechat_pay_callbacks_are_verified_and_applied_once(client, net, wechat,
                                                             session_factory):
    order, payment = order_with_gateway_part(client, net, gateway="wechatpay")
    out_trade_no = payment["public_id"]
    notice = wechat.payment_notification(out_trade_no, 600, transaction_id="4200-T1")

    def post(request):
        return client.post("/callbacks/wechatpay", data=request.body,
                           headers=dict(request.headers))

    tampered = post(type(notice)(headers=notice.headers, body=notice.body.replace(b'"', b"'", 1),
                                 received_at=notice.received_at))
    assert tampered.status_code == 400 and tampered.json["code"] == "FAIL"
    stale = wechat.payment_notification(out_trade_no, 600, transaction_id="4200-T1",
                                        timestamp=int(notice.received_at.timestamp()) - 600)
    assert post(stale).status_code == 400
    assert post(wechat.probe_notification()).status_code == 400
    assert orders_state(client, net, order) == "awaiting_payment"  # nothing posted so far

    assert post(notice).status_code == 204
    assert post(notice).status_code == 204  # a duplicate is acknowledged, not applied
    assert orders_state(client, net, order) == "paid"
    assert escrow(session_factory, order) == 1_000
    states = callback_states(session_factory, "wechatpay")
    assert states.count("rejected") == 3 and states.count("applied") == 1
    assert states.count("duplicate") == 1
    with session_factory() as s:
        reasons = [c.reason for c in s.query(GatewayCallback).filter_by(
            gateway="wechatpay", state="rejected")]
    assert any(r.startswith("bad_signature") for r in reasons)
    assert any(r.startswith("stale_timestamp") for r in reasons)
    assert any(r.startswith("signature_probe") for r in reasons)


def orders_state(client, net, order):
    return client.get(f"/v1/orders/{order}", headers=net.auth("s1")).json["state"]


def test_money_that_cannot_be_applied_goes_to_suspense_for_finance(client, net, wechat,
                                                                  session_factory):
    def post(request):
        return client.post("/callbacks/wechatpay", data=request.body,
                           headers=dict(request.headers))

    def suspense():
        with session_factory() as s:
            try:
                return ledger.get_account(s, gateway_payments.SUSPENSE).posted_minor
            except ledger.AccountNotFound:
                return 0

    before = suspense()
    ids = {kind: f"T-{kind}-{secrets.token_hex(4)}" for kind in ("unknown", "wrong", "late")}
    assert post(wechat.payment_notification("pay_nobody", 250,
                                            transaction_id=ids["unknown"])).status_code == 204
    order, payment = order_with_gateway_part(client, net, gateway="wechatpay")
    wrong = wechat.payment_notification(payment["public_id"], 599, transaction_id=ids["wrong"])
    assert post(wrong).status_code == 204
    assert orders_state(client, net, order) == "awaiting_payment"
    # The buyer cancels; then the money arrives anyway.
    assert client.post(f"/v1/orders/{order}/cancel", headers=net.auth("s1"),
                       json={}).status_code == 200
    late = wechat.payment_notification(payment["public_id"], 600, transaction_id=ids["late"])
    assert post(late).status_code == 204
    assert suspense() - before == 250 + 599 + 600
    exceptions = client.get("/v1/payment-exceptions", headers=net.auth("brand")).json["items"]
    kinds = {e["transaction_id"]: e["kind"] for e in exceptions}
    assert (kinds[ids["unknown"]], kinds[ids["wrong"]], kinds[ids["late"]]) == (
        "unknown_payment", "amount_mismatch", "payable_closed")
    assert client.get("/v1/payment-exceptions", headers=net.auth("d1")).status_code == 403
    # Finance identifies the unknown payment: it becomes s1's deposit at d1.
    unknown = next(e for e in exceptions if e["transaction_id"] == ids["unknown"])
    path = f"/v1/payment-exceptions/{unknown['public_id']}/to-deposit"
    body = {"buyer": net.codes["s1"], "seller": net.codes["d1"], "note": "phoned the store"}
    assert client.post(path, headers=net.auth("d1"), json=body).status_code == 403
    resolved = client.post(path, headers=net.auth("brand"), json=body)
    assert resolved.status_code == 200 and resolved.json["state"] == "resolved"
    assert suspense() - before == 599 + 600
    assert client.post(path, headers=net.auth("brand"), json=body).status_code == 422
    balances = client.get(f"/v1/sellers/{net.codes['d1']}/balances", headers=net.auth("s1")).json
    assert balances["prepaid"]["posted_minor"] == 400 + 250  # its own 400, and the 250
    with session_factory() as s:
        assert ledger.check_ledger(s) == []


def test_a_callback_whose_application_failed_is_applied_by_the_retry_job(
        client, net, session_factory, monkeypatch):
    adapters = client.application.extensions[GATEWAYS_KEY].adapters
    vendor = client.application.extensions[GATEWAYS_KEY].sandbox_vendor
    order, payment = order_with_gateway_part(client, net)
    real = gateway_payments.apply_event

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(gateway_payments, "apply_event", broken)
    headers, body = vendor.pay(payment["public_id"])
    assert client.post("/callbacks/sandbox", data=body, headers=headers).status_code == 200
    assert orders_state(client, net, order) == "awaiting_payment"
    assert callback_states(session_factory, "sandbox")[-1] == "failed"
    monkeypatch.setattr(gateway_payments, "apply_event", real)
    from datetime import timedelta

    from ledger import utcnow
    assert callbacks.retry_stored(session_factory, adapters,
                                  now=utcnow() + timedelta(minutes=1)) >= 1
    assert orders_state(client, net, order) == "paid"
    assert callback_states(session_factory, "sandbox")[-1] == "applied"
    with session_factory() as s:
        assert s.query(PaymentException).filter_by(out_trade_no=payment["public_id"]).count() == 0


def test_a_deposit_is_topped_up_through_the_sandbox_from_the_cli(client, net, engine):
    from click.testing import CliRunner

    from service.cli import cli
    from tests.test_cli import run, runtime_for

    started = client.post("/v1/payments", headers=net.auth("s1"), json={
        "gateway": "sandbox", "purpose": "deposit", "seller": net.codes["d1"],
        "amount_minor": 5_000})
    assert started.status_code == 201, started.json
    missing = client.post("/v1/payments", headers=net.auth("s1"), json={
        "gateway": "sandbox", "purpose": "deposit", "seller": net.codes["d1"]})
    assert missing.status_code == 422 and missing.json["errors"][0]["field"] == "amount_minor"
    result = run(runtime_for(engine), "sandbox-pay", started.json["public_id"])
    assert result.exit_code == 0, result.output
    assert "answered 200; payment succeeded" in result.output
    balances = client.get(f"/v1/sellers/{net.codes['d1']}/balances", headers=net.auth("s1")).json
    assert balances["prepaid"]["posted_minor"] == 400 + 5_000
    again = CliRunner().invoke(cli, ["sandbox-pay", started.json["public_id"]],
                               obj=runtime_for(engine))
    assert again.exit_code == 1 and "is succeeded: nothing to pay" in again.output
    balances = client.get(f"/v1/sellers/{net.codes['d1']}/balances", headers=net.auth("s1")).json
    assert balances["prepaid"]["posted_minor"] == 400 + 5_000


def test_payments_stuck_past_their_window_are_asked_about(net, session_factory):
    from datetime import timedelta

    from ledger import utcnow
    from payments.gateway import CallbackRequest, PaymentRequest
    from service.gateways import sandbox

    adapter, vendor = sandbox("stuck-secret-0123456789")
    with session_factory() as s, s.begin():
        lost, unpaid = (gateway_payments.start_deposit_payment(
            s, buyer=net.codes["s1"], seller=net.codes["d1"], amount_minor=amount,
            gateway="sandbox") for amount in (700, 800))
    for payment in (lost, unpaid):
        adapter.create_payment(PaymentRequest(
            out_trade_no=payment.public_id, amount_minor=payment.amount_minor, currency="CNY",
            description="deposit", notify_url="http://localhost/callbacks/sandbox"))
    headers, body = vendor.pay(lost.public_id)  # paid, but its callback never arrives
    later = utcnow() + timedelta(hours=25)
    counts = callbacks.reconcile_stuck(session_factory, {"sandbox": adapter}, now=later)
    assert counts == {"paid": 1, "closed": 1, "unreachable": 0}
    with session_factory() as s:
        assert gateway_payments.get_payment(s, lost.public_id).state == "succeeded"
        assert gateway_payments.get_payment(s, unpaid.public_id).state == "expired"
        assert funding.balances(s, buyer=net.codes["s1"],
                                seller=net.codes["d1"]).prepaid.posted_minor == 400 + 700
    # The callback turns up after all: a duplicate of what the query applied.
    callbacks.receive(session_factory, "sandbox", adapter,
                      CallbackRequest(headers=headers, body=body, received_at=utcnow()))
    assert callback_states(session_factory, "sandbox")[-1] == "duplicate"
    assert callbacks.reconcile_stuck(session_factory, {"sandbox": adapter}, now=later) == {
        "paid": 0, "closed": 0, "unreachable": 0}


def test_400_prepaid_and_600_wechat_then_partly_refunded_through_wechat(
        client, net, wechat, session_factory):
    """The issue's example, every balance checked after each step."""
    u, c = net.u, net.codes
    with session_factory() as s, s.begin():
        catalog.create_sku(s, f"{u}-b", "B", product=f"{u}-green", unit=f"{u}-case",
                           list_price_minor=500)

    def money():
        with session_factory() as s:
            def posted(code):
                try:
                    return ledger.get_account(s, code).posted_minor
                except ledger.AccountNotFound:
                    return 0
            return {"prepaid": posted(funding.prepaid_account(c["s1"], c["d1"])),
                    "escrow": posted(funding.escrow_account(order)),
                    "wechat": posted(gateway_payments.receivable_account("wechatpay"))}

    placed = client.post("/v1/orders", headers=net.auth("s1"), json={
        "seller": c["d1"], "lines": [{"sku": f"{u}-b", "quantity": 2}],
        "plan": [{"method": "prepaid", "amount_minor": 400},
                 {"method": "gateway", "amount_minor": 600}]}).json
    order = placed["public_id"]
    start = money()
    assert (start["prepaid"], start["escrow"]) == (400, 0)  # reserved (pending), not yet taken
    payment = client.post("/v1/payments", headers=net.auth("s1"),
                          json={"gateway": "wechatpay", "order": order}).json
    assert payment["pay_url"].startswith("weixin://")
    notice = wechat.pay(payment["public_id"])
    assert client.post("/callbacks/wechatpay", data=notice.body,
                       headers=dict(notice.headers)).status_code == 204
    paid = money()
    assert (paid["prepaid"], paid["escrow"], paid["wechat"] - start["wechat"]) == (0, 1_000, 600)

    client.post(f"/v1/orders/{order}/ship", headers=net.auth("d1"), json={})
    client.post(f"/v1/orders/{order}/confirm-receipt", headers=net.auth("s1"))
    asked = client.post(f"/v1/orders/{order}/returns", headers=net.auth("s1"), json={
        "lines": [{"line_no": 1, "quantity": 1}], "reason": "one case broken"}).json
    approved = client.post(f"/v1/returns/{asked['public_id']}/approve", headers=net.auth("d1"),
                           json={})
    assert approved.status_code == 200 and approved.json["allocation"] == {
        "prepaid": 200, "gateway": 300}
    # The deposit's share is back at once; the gateway's waits for WeChat Pay.
    sent = money()
    assert (sent["prepaid"], sent["escrow"], sent["wechat"]) == (200, 800, paid["wechat"])
    with session_factory() as s:
        [refund] = s.query(PaymentRefund).filter_by(payment_id=s.query(Payment).filter_by(
            public_id=payment["public_id"]).one().id).all()
        assert (refund.state, refund.amount_minor) == ("processing", 300)
        out_refund_no = refund.public_id
    done = wechat.finish_refund(out_refund_no)
    assert client.post("/callbacks/wechatpay", data=done.body,
                       headers=dict(done.headers)).status_code == 204
    after = money()
    assert (after["prepaid"], after["escrow"], paid["wechat"] - after["wechat"]) == (200, 500, 300)
    seen = client.get(f"/v1/payments/{payment['public_id']}", headers=net.auth("s1")).json
    assert seen["refunded_minor"] == 300
    with session_factory() as s, s.begin():
        with pytest.raises(ca_errors.InvalidInput) as too_much:
            gateway_refunds.request_refund(s, order=order, amount_minor=301, reason="x")
        assert too_much.value.details["refundable_minor"] == 300
    with session_factory() as s:
        assert ledger.check_ledger(s) == []


def test_a_cancelled_order_s_gateway_part_goes_back_through_the_gateway(
        client, net, wechat, session_factory):
    order, payment = order_with_gateway_part(client, net, gateway="wechatpay")
    notice = wechat.pay(payment["public_id"])
    client.post("/callbacks/wechatpay", data=notice.body, headers=dict(notice.headers))
    assert orders_state(client, net, order) == "paid"
    assert client.post(f"/v1/orders/{order}/cancel", headers=net.auth("s1"),
                       json={}).status_code == 200
    assert escrow(session_factory, order) == 600  # the deposit's 400 is back; 600 waits
    with session_factory() as s:
        refund = s.query(PaymentRefund).join(Payment).filter(
            Payment.public_id == payment["public_id"]).one()
        assert (refund.state, refund.amount_minor) == ("processing", 600)
    # A notice for a refund nobody asked for waits in the inbox; it is not money.
    stray = wechat.refund_notification(payment["public_id"], "rfd_unknown", 600, 600)
    assert client.post("/callbacks/wechatpay", data=stray.body,
                       headers=dict(stray.headers)).status_code == 204
    assert callback_states(session_factory, "wechatpay")[-1] == "waiting"
    done = wechat.finish_refund(refund.public_id)
    client.post("/callbacks/wechatpay", data=done.body, headers=dict(done.headers))
    assert escrow(session_factory, order) == 0
    with session_factory() as s:
        assert ledger.check_ledger(s) == []


def test_alipay_notices_over_http_answer_exactly_success_and_apply_once(
        client, net, session_factory):
    from payments.alipay import Alipay
    from tests.vendors.alipay import FakeAlipay, new_key, private_pem, public_pem

    merchant = new_key()
    fake = FakeAlipay(public_pem(merchant))
    client.application.extensions[GATEWAYS_KEY].adapters["alipay"] = Alipay(
        fake.app_id, private_pem(merchant), fake.alipay_public_key_pem, fake,
        seller_id=fake.seller_id)
    order, payment = order_with_gateway_part(client, net, gateway="alipay")

    def post(notice):
        return client.post("/callbacks/alipay", data=notice.body, headers=dict(notice.headers))

    waiting = post(fake.payment_notice(payment["public_id"], 600, trade_status="WAIT_BUYER_PAY"))
    assert (waiting.status_code, waiting.data) == (200, b"success")
    assert orders_state(client, net, order) == "awaiting_payment"
    forged = FakeAlipay(public_pem(merchant), app_id=fake.app_id)  # signs with another key
    refused = post(forged.payment_notice(payment["public_id"], 600))
    assert refused.data == b"fail"
    paid = fake.payment_notice(payment["public_id"], 600)
    assert post(paid).data == b"success" and post(paid).data == b"success"
    assert orders_state(client, net, order) == "paid"
    assert escrow(session_factory, order) == 1_000
    assert callback_states(session_factory, "alipay") == [
        "ignored", "rejected", "applied", "duplicate"]


def test_in_background_mode_the_gateway_is_answered_first_and_the_callback_applied_after(
        net, session_factory):
    from ledger import utcnow
    from payments.gateway import CallbackRequest, PaymentRequest
    from service.gateways import sandbox

    adapter, vendor = sandbox("background-secret-0123")
    with session_factory() as s, s.begin():
        payment = gateway_payments.start_deposit_payment(
            s, buyer=net.codes["s1"], seller=net.codes["d1"], amount_minor=900,
            gateway="sandbox")
    adapter.create_payment(PaymentRequest(out_trade_no=payment.public_id, amount_minor=900,
                                          currency="CNY", description="d", notify_url="http://x"))
    headers, body = vendor.pay(payment.public_id)
    applier = callbacks.BackgroundApplier(session_factory)
    ack = callbacks.receive(session_factory, "sandbox", adapter,
                            CallbackRequest(headers=headers, body=body, received_at=utcnow()),
                            applier)
    assert ack.status == 200
    applier.drain()
    with session_factory() as s:
        assert gateway_payments.get_payment(s, payment.public_id).state == "succeeded"
        assert funding.balances(s, buyer=net.codes["s1"],
                                seller=net.codes["d1"]).prepaid.posted_minor == 400 + 900


def test_finance_posts_the_sandbox_s_daily_bill_over_http(client, net, session_factory):
    from ledger import utcnow

    started = client.post("/v1/payments", headers=net.auth("s1"), json={
        "gateway": "sandbox", "purpose": "deposit", "seller": net.codes["d1"],
        "amount_minor": 10_000}).json
    client.post(started["pay_url"], data={"action": "pay"})
    vendor = client.application.extensions[GATEWAYS_KEY].sandbox_vendor
    day = utcnow().date()
    bill = vendor.bill(day)

    def custody():
        with session_factory() as s:
            try:
                return ledger.get_account(s, "custody:bank").posted_minor
            except ledger.AccountNotFound:
                return 0

    before = custody()
    path = f"/v1/gateway-bills/sandbox?day={day.isoformat()}"
    assert client.post(path, headers=net.auth("d1"), data=bill,
                       content_type="text/csv").status_code == 403
    posted = client.post(path, headers=net.auth("brand"), data=bill, content_type="text/csv")
    assert posted.status_code == 200, posted.json
    report = posted.json
    assert report["payments_minor"] >= 10_000 and report["fees_minor"] > 0
    assert custody() - before == report["net_minor"]
    again = client.post(path, headers=net.auth("brand"), data=bill, content_type="text/csv")
    assert again.json["entry_id"] == report["entry_id"] and custody() - before == report["net_minor"]
    garbled = client.post(path, headers=net.auth("brand"), data=b"not,a\nbill",
                          content_type="text/csv")
    assert garbled.status_code == 422 and garbled.json["errors"][0]["field"] == "body"
