"""Payments collected with the seller as payee go to the seller's own
merchant at the gateway, per payment (issue 6: "the platform never holds
parties' money"): WeChat Pay service-provider mode with the seller's
``sub_mchid``, Alipay under the seller's ``app_auth_token``, the sandbox's
sub-merchant. First the adapters' requests against the fake vendors (real
keys, real signatures, nothing leaves the process), then the service: who
is a payee, a notice for another merchant than the payment's going to
suspense, the sandbox end to end."""
from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

import ledger
from channel_api import audit, gateway_refunds
from payments.alipay import Alipay
from payments.gateway import (
    GatewayError, GatewayUnavailable, PaymentRequest, RefundRequest, SubMerchantUnsupported,
)
from payments.models import MerchantAuthorization, Payment, PaymentException
from payments.split import FinishRequest, ReturnRequest, SplitReceiver, SplitRefused, SplitRequest
from service import callbacks
from service.api_payments import GATEWAYS_KEY
from tests.channel_fixtures import add_tea, build_network, client, engine  # noqa: F401  (fixtures)
from tests.test_split_instructions import ali_keys, wx, wx_keys  # noqa: F401  (fixtures)
from tests.vendors.alipay import FakeAlipay, private_pem, public_pem
from tests.vendors.wechatpay import FakeWeChatPay

DEFAULT_SUB = "1900000100"     # the sub-merchant the service provider collects the rest for
SELLER = "1900000110"          # a seller's own sub-merchant
OTHER = "1900000999"           # another seller's
SUB_APPID = "wx8888888888888888"
SELLER_PID = "2088000000000110"
BRAND = "1900000109"


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture
def ali(ali_keys) -> FakeAlipay:
    merchant_key, alipay_key = ali_keys
    return FakeAlipay(public_pem(merchant_key), key=alipay_key)


@pytest.fixture
def alipay(ali, ali_keys) -> Alipay:
    return Alipay(ali.app_id, private_pem(ali_keys[0]), ali.alipay_public_key_pem, ali,
                  seller_id=ali.seller_id, royalty_freeze=True)


def sent(wx: FakeWeChatPay) -> tuple[str, str, dict]:
    """The last call the adapter made: method, path with its query, body."""
    method, url, _, body = wx.requests[-1]
    parts = urlsplit(url)
    return method, parts.path + (f"?{parts.query}" if parts.query else ""), \
        json.loads(body) if body else {}


def payment(no: str = "pay-1", amount: int = 10_000, **sub) -> PaymentRequest:
    return PaymentRequest(no, amount, "CNY", "两箱", "https://ledger.example/callbacks/wechatpay", **sub)


# -- WeChat Pay, the adapter ----------------------------------------------------------------------

def test_wechat_service_provider_names_the_payment_s_sub_merchant_in_every_call(wx):
    adapter = wx.gateway(sub_mchid=DEFAULT_SUB, sub_appid=SUB_APPID, profit_sharing=True)
    adapter.create_payment(payment(sub_merchant=SELLER))
    method, path, body = sent(wx)
    assert (method, path) == ("POST", "/v3/pay/partner/transactions/native")
    assert (body["sp_mchid"], body["sp_appid"], body["sub_mchid"]) == (wx.mchid, wx.appid, SELLER)
    assert "sub_appid" not in body              # the configured sub-merchant's app is not the seller's
    assert body["settle_info"] == {"profit_sharing": True}
    assert wx.orders["pay-1"]["sub_mchid"] == SELLER

    pending = adapter.query_payment("pay-1", sub_merchant=SELLER)
    assert sent(wx)[:2] == ("GET", f"/v3/pay/partner/transactions/out-trade-no/pay-1"
                                   f"?sp_mchid={wx.mchid}&sub_mchid={SELLER}")
    assert (pending.state, pending.sub_merchant) == ("pending", SELLER)
    with pytest.raises(GatewayUnavailable):     # not in the default sub-merchant's books
        adapter.query_payment("pay-1")

    event = adapter.verify_callback(wx.pay("pay-1"))
    assert (event.kind, event.sub_merchant) == ("payment_succeeded", SELLER)
    txn = wx.orders["pay-1"]["transaction_id"]

    accepted = adapter.refund(RefundRequest("pay-1", "rf-1", 100, 10_000, "CNY", "退货",
                                            "https://ledger.example/r", sub_merchant=SELLER))
    method, path, body = sent(wx)
    assert (method, path, body["sub_mchid"]) == ("POST", "/v3/refund/domestic/refunds", SELLER)
    assert accepted.refund_id == wx.refunds["rf-1"]["refund_id"]

    adapter.split(SplitRequest("PS-1", txn, (SplitReceiver(BRAND, "MERCHANT_ID", 500, "分账"),),
                               sub_merchant=SELLER))
    method, path, body = sent(wx)
    assert (method, path, body["sub_mchid"]) == ("POST", "/v3/profitsharing/orders", SELLER)
    assert adapter.query_split("PS-1", txn, sub_merchant=SELLER).state == "finished"
    assert sent(wx)[1] == f"/v3/profitsharing/orders/PS-1?sub_mchid={SELLER}&transaction_id={txn}"

    adapter.return_split(ReturnRequest("RT-1", "PS-1", BRAND, 200, "退货", sub_merchant=SELLER))
    method, path, body = sent(wx)
    assert (method, path, body["sub_mchid"]) == ("POST", "/v3/profitsharing/return-orders", SELLER)
    assert adapter.query_return("RT-1", "PS-1", sub_merchant=SELLER).state == "success"
    assert sent(wx)[1] == f"/v3/profitsharing/return-orders/RT-1?sub_mchid={SELLER}&out_order_no=PS-1"

    released = adapter.finish(FinishRequest("PS-F", txn, "解冻", sub_merchant=SELLER))
    method, path, body = sent(wx)
    assert (method, path, body["sub_mchid"]) == ("POST", "/v3/profitsharing/orders/unfreeze", SELLER)
    assert [r.account for r in released.receivers] == [SELLER]     # the rest to the seller


def test_wechat_service_provider_collects_for_its_configured_sub_merchant_when_none_is_named(wx):
    adapter = wx.gateway(sub_mchid=DEFAULT_SUB, sub_appid=SUB_APPID)
    adapter.create_payment(payment())
    body = sent(wx)[2]
    assert (body["sub_mchid"], body["sub_appid"]) == (DEFAULT_SUB, SUB_APPID)
    # The seller's sub-merchant is not the configured one: a call naming it finds nothing.
    with pytest.raises(GatewayUnavailable):
        adapter.query_payment("pay-1", sub_merchant=SELLER)


def test_a_direct_merchant_refuses_to_collect_for_a_sub_merchant_and_sends_nothing(wx):
    adapter = wx.gateway(profit_sharing=True)     # direct mode: the platform's own mchid
    for call in (lambda: adapter.create_payment(payment(sub_merchant=SELLER)),
                 lambda: adapter.query_payment("pay-1", sub_merchant=SELLER),
                 lambda: adapter.refund(RefundRequest("pay-1", "rf-1", 1, 2, "CNY", "", "https://x",
                                                      sub_merchant=SELLER))):
        with pytest.raises(SubMerchantUnsupported) as refused:
            call()
        assert isinstance(refused.value, ValueError) and refused.value.code == "sub_merchant_unsupported"
        assert "CL_WECHATPAY_SUB_MCHID" in str(refused.value)
    receivers = (SplitReceiver(BRAND, "MERCHANT_ID", 1, "分账"),)
    for call in (lambda: adapter.split(SplitRequest("PS-1", "4200x", receivers, sub_merchant=SELLER)),
                 lambda: adapter.finish(FinishRequest("PS-F", "4200x", "解冻", sub_merchant=SELLER)),
                 lambda: adapter.return_split(ReturnRequest("RT-1", "PS-1", BRAND, 1, "r", sub_merchant=SELLER)),
                 lambda: adapter.query_split("PS-1", "4200x", sub_merchant=SELLER),
                 lambda: adapter.query_return("RT-1", "PS-1", sub_merchant=SELLER)):
        with pytest.raises(SplitRefused) as refused:
            call()
        assert refused.value.code == "sub_merchant_unsupported"
    assert wx.requests == []


# -- Alipay, the adapter --------------------------------------------------------------------------

def test_alipay_acts_for_an_authorised_seller_under_its_app_auth_token(ali, alipay):
    token = ali.authorize(SELLER_PID)
    request = payment(sub_merchant=SELLER_PID, sub_merchant_auth=token)
    assert token not in repr(request)                               # a credential, never in a repr
    alipay.create_payment(request)
    params = ali.requests[-1]
    assert (params["method"], params["app_auth_token"]) == ("alipay.trade.precreate", token)
    assert json.loads(params["biz_content"])["seller_id"] == SELLER_PID
    assert ali.trades["pay-1"].seller_id == SELLER_PID              # the seller's own trade

    event = alipay.verify_callback(ali.pay("pay-1"))
    assert (event.kind, event.sub_merchant) == ("payment_succeeded", SELLER_PID)
    assert alipay.query_payment("pay-1", sub_merchant=SELLER_PID, sub_merchant_auth=token).state == \
        "succeeded"
    assert ali.requests[-1]["app_auth_token"] == token
    assert alipay.query_payment("pay-1").state == "unknown"          # not in our own app's books
    alipay.refund(RefundRequest("pay-1", "rf-1", 100, 10_000, "CNY", "退货", "https://x",
                                sub_merchant=SELLER_PID, sub_merchant_auth=token))
    assert (ali.requests[-1]["method"], ali.requests[-1]["app_auth_token"]) == ("alipay.trade.refund", token)
    trade_no = ali.trades["pay-1"].trade_no
    alipay.split(SplitRequest("ST-1", trade_no, (SplitReceiver("2088000000000109", "userId", 500, "分账"),),
                              sub_merchant=SELLER_PID, sub_merchant_auth=token))
    assert (ali.requests[-1]["method"], ali.requests[-1]["app_auth_token"]) == ("alipay.trade.order.settle",
                                                                                token)
    assert alipay.query_split("ST-1", trade_no, sub_merchant=SELLER_PID, sub_merchant_auth=token).state == \
        "finished"
    assert ali.requests[-1]["app_auth_token"] == token


def test_alipay_refuses_a_sub_merchant_without_its_token_and_sends_nothing(ali, alipay):
    with pytest.raises(SubMerchantUnsupported):
        alipay.create_payment(payment(sub_merchant=SELLER_PID))
    with pytest.raises(SplitRefused) as refused:
        alipay.finish(FinishRequest("ST-F", "2024x", "r", sub_merchant=SELLER_PID))
    assert refused.value.code == "sub_merchant_unsupported"
    assert ali.requests == []


# -- the service: who collects, and a notice for the wrong payee -----------------------------------

def _world(client, session_factory, unique, adapter, gateway="wechatpay"):
    client.application.extensions[GATEWAYS_KEY].adapters[gateway] = adapter
    net = build_network(session_factory, unique)
    with session_factory() as s, s.begin():
        add_tea(s, net, list_price_minor=1_000)
    net.extra = {"client": client}
    return net


def _register(net, party, gateway, account, kind, **extra):
    return net.extra["client"].post(f"/v1/parties/{party}/gateway-accounts", headers=net.auth("brand"),
                                    json={"gateway": gateway, "account": account, "kind": kind, **extra})


def _order(net, amount=10_000):
    placed = net.extra["client"].post("/v1/orders", headers=net.auth("s1"), json={
        "seller": net.codes["d1"], "lines": [{"sku": f"{net.u}-a", "quantity": amount // 1_000}],
        "plan": [{"method": "gateway", "amount_minor": amount}]})
    assert placed.status_code == 201, placed.json
    return placed.json["public_id"]


def _start(net, order, gateway):
    return net.extra["client"].post("/v1/payments", headers=net.auth("s1"),
                                    json={"gateway": gateway, "order": order})


def _payment(session_factory, public_id) -> Payment:
    with session_factory() as s:
        row = s.scalars(select(Payment).where(Payment.public_id == public_id)).one()
        s.expunge(row)
        return row


def _posted(session_factory, code):
    with session_factory() as s:
        try:
            return ledger.get_account(s, code).posted_minor
        except ledger.AccountNotFound:
            return 0


def test_a_notice_for_another_sub_merchant_than_the_payee_s_goes_to_suspense(
        client, session_factory, unique, wx):
    net = _world(client, session_factory, unique, wx.gateway(sub_mchid=DEFAULT_SUB, profit_sharing=True))
    assert _register(net, net.codes["d1"], "wechatpay", SELLER, "MERCHANT_ID").json["payee"] is True
    order = _order(net)
    started = _start(net, order, "wechatpay")
    assert started.status_code == 201, started.json
    pid = started.json["public_id"]
    assert started.json["sub_merchant"] == SELLER
    assert wx.orders[pid]["sub_mchid"] == SELLER                    # created in D1's own books
    assert _payment(session_factory, pid).sub_merchant == SELLER

    suspense, held = _posted(session_factory, "suspense"), _posted(session_factory, "gateway:wechatpay:payee_held")
    stray = wx.payment_notification(pid, 10_000, sub_mchid=OTHER)   # collected for someone else
    answer = client.post("/callbacks/wechatpay", data=stray.body, headers=dict(stray.headers))
    assert answer.status_code == 204
    with session_factory() as s:
        [exception] = s.scalars(select(PaymentException).where(PaymentException.out_trade_no == pid)).all()
        assert (exception.kind, exception.state, exception.sub_merchant, exception.amount_minor) == (
            "payee_mismatch", "open", OTHER, 10_000)
        assert SELLER in exception.detail and OTHER in exception.detail
        assert s.scalars(select(Payment.state).where(Payment.public_id == pid)).one() == "pending"
    assert _posted(session_factory, "suspense") - suspense == 10_000
    assert _posted(session_factory, "gateway:wechatpay:payee_held") == held    # nothing captured

    # Its refund goes back through the books of the merchant it was collected for.
    with session_factory() as s, s.begin():
        gateway_refunds.refund_suspense(s, exception.public_id, note="not D1's money", actor="finance",
                                        notify_urls={"wechatpay": "https://ledger.example/callbacks/wechatpay"})
    callbacks.send_refunds(session_factory, client.application.extensions[GATEWAYS_KEY].adapters)
    method, path, body = sent(wx)
    assert (method, path, body["out_trade_no"], body["sub_mchid"]) == (
        "POST", "/v3/refund/domestic/refunds", pid, OTHER)

    # The payee's own notice is applied as usual: held at WeChat Pay in D1's name.
    real = wx.pay(pid)
    assert client.post("/callbacks/wechatpay", data=real.body, headers=dict(real.headers)).status_code == 204
    assert _payment(session_factory, pid).state == "succeeded"
    assert _posted(session_factory, "gateway:wechatpay:payee_held") - held == 10_000


def test_a_personal_openid_seller_is_paid_by_the_platform_s_merchant_into_custody(
        client, session_factory, unique, wx):
    net = _world(client, session_factory, unique, wx.gateway(sub_mchid=DEFAULT_SUB))
    registered = _register(net, net.codes["d1"], "wechatpay", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
                           "PERSONAL_OPENID")
    assert registered.status_code == 201 and registered.json["payee"] is False   # splits only
    pid = _start(net, _order(net), "wechatpay").json["public_id"]
    row = _payment(session_factory, pid)
    assert (row.payee_account, row.sub_merchant) == (None, None)
    assert wx.orders[pid]["sub_mchid"] == DEFAULT_SUB
    receivable = _posted(session_factory, "gateway:wechatpay:receivable")
    paid = wx.pay(pid)
    assert client.post("/callbacks/wechatpay", data=paid.body, headers=dict(paid.headers)).status_code == 204
    assert _posted(session_factory, "gateway:wechatpay:receivable") - receivable == 10_000


def test_a_direct_merchant_cannot_take_a_payment_for_a_seller_s_merchant(client, session_factory, unique, wx):
    net = _world(client, session_factory, unique, wx.gateway())      # direct mode
    _register(net, net.codes["d1"], "wechatpay", SELLER, "MERCHANT_ID")
    order = _order(net)
    refused = _start(net, order, "wechatpay")
    assert refused.status_code == 409 and refused.json["code"] == "sub_merchant_unsupported"
    assert refused.json["details"]["sub_merchant"] == SELLER
    assert wx.requests == [] and wx.orders == {}
    with session_factory() as s:                                      # nothing kept
        assert s.scalars(select(Payment).where(Payment.reference == order)).all() == []


def test_an_alipay_seller_collects_only_with_its_authorisation_and_the_token_is_never_shown(
        client, session_factory, unique, ali, alipay):
    net = _world(client, session_factory, unique, alipay, gateway="alipay")
    d1 = net.codes["d1"]
    plain = _register(net, d1, "alipay", SELLER_PID, "userId")
    assert (plain.json["authorized"], plain.json["payee"]) == (False, False)
    pid = _start(net, _order(net), "alipay").json["public_id"]
    assert _payment(session_factory, pid).sub_merchant is None        # the platform's own app
    assert "app_auth_token" not in ali.requests[-1]

    token = ali.authorize(SELLER_PID)
    wrong = _register(net, d1, "alipay", "seller@example.com", "loginName", app_auth_token=token)
    assert wrong.status_code == 422 and wrong.json["details"]["field"] == "app_auth_token"
    authorised = _register(net, d1, "alipay", SELLER_PID, "userId", app_auth_token=token)
    assert authorised.status_code == 201
    assert (authorised.json["authorized"], authorised.json["payee"]) == (True, True)
    assert authorised.json["public_id"] == plain.json["public_id"]   # the same account, now authorised
    assert token not in authorised.get_data(as_text=True)
    listed = client.get(f"/v1/parties/{d1}/gateway-accounts", headers=net.auth("d1"))
    assert token not in listed.get_data(as_text=True)
    with session_factory() as s:
        assert s.scalars(select(MerchantAuthorization.token).where(
            MerchantAuthorization.merchant == SELLER_PID)).one() == token
        rows, _ = audit.list_audit(s, subject=d1, action="gateway_account.authorized")
        assert rows and rows[0].details["app_auth_token"] == "…" + token[-4:]
        assert token not in json.dumps([r.details for r in audit.list_audit(s, subject=d1)[0]])

    # A second order's payment is the seller's own trade, under its token.
    second = _start(net, _order(net), "alipay").json["public_id"]
    assert _payment(session_factory, second).sub_merchant == SELLER_PID
    assert ali.requests[-1]["app_auth_token"] == token
    assert ali.trades[second].seller_id == SELLER_PID
    paid = ali.pay(second)
    assert client.post("/callbacks/alipay", data=paid.body, headers=dict(paid.headers)).status_code == 200
    assert _payment(session_factory, second).state == "succeeded"


# -- the sandbox, end to end ----------------------------------------------------------------------

def test_the_sandbox_sees_the_seller_s_sub_merchant_end_to_end(client, session_factory, unique):
    gateways = client.application.extensions[GATEWAYS_KEY]
    vendor, adapter = gateways.sandbox_vendor, gateways.adapters["sandbox"]
    net = _world(client, session_factory, unique, adapter, gateway="sandbox")
    account = f"{net.u}-d1-sbx"
    assert _register(net, net.codes["d1"], "sandbox", account, "account").json["payee"] is True
    started = _start(net, _order(net), "sandbox")
    pid = started.json["public_id"]
    assert started.json["sub_merchant"] == account
    assert vendor.get_payment(pid).sub_merchant == account          # the provider collects for D1
    assert adapter.query_payment(pid).state == "unknown"             # not in the default books
    assert adapter.query_payment(pid, sub_merchant=account).sub_merchant == account

    held = _posted(session_factory, "gateway:sandbox:payee_held")
    headers, body = vendor.pay(pid)
    assert json.loads(body)["data"]["sub_merchant"] == account
    assert client.post("/callbacks/sandbox", data=body, headers=headers).status_code == 200
    got = client.get(f"/v1/payments/{pid}", headers=net.auth("s1")).json
    assert (got["state"], got["sub_merchant"]) == ("succeeded", account)
    assert _posted(session_factory, "gateway:sandbox:payee_held") - held == 10_000


class _OnlyThis:
    """The sandbox adapter for one payment; every other one is 'unreachable'
    (the job leaves it alone). Records how it was asked."""

    def __init__(self, inner, out_trade_no):
        self.inner, self.out_trade_no, self.asked = inner, out_trade_no, []
        self.name = inner.name

    def query_payment(self, out_trade_no, **sub_merchant):
        if out_trade_no != self.out_trade_no:
            raise GatewayUnavailable("not this test's payment")
        self.asked.append(sub_merchant)
        return self.inner.query_payment(out_trade_no, **sub_merchant)


def test_a_stuck_payee_payment_is_asked_about_in_the_seller_s_books(client, session_factory, unique):
    gateways = client.application.extensions[GATEWAYS_KEY]
    vendor, adapter = gateways.sandbox_vendor, gateways.adapters["sandbox"]
    net = _world(client, session_factory, unique, adapter, gateway="sandbox")
    account = f"{net.u}-d1-sbx"
    _register(net, net.codes["d1"], "sandbox", account, "account")
    pid = _start(net, _order(net), "sandbox").json["public_id"]
    vendor.pay(pid)                                                  # its callback is lost
    only = _OnlyThis(adapter, pid)
    expired = ledger.as_utc(_payment(session_factory, pid).expires_at) + timedelta(seconds=1)
    callbacks.reconcile_stuck(session_factory, {"sandbox": only}, now=expired, limit=10_000)
    assert only.asked == [{"sub_merchant": account, "sub_merchant_auth": None}]
    assert _payment(session_factory, pid).state == "succeeded"       # found, and applied once


def test_a_sandbox_request_naming_another_sub_merchant_finds_nothing(client, session_factory, unique):
    gateways = client.application.extensions[GATEWAYS_KEY]
    vendor, adapter = gateways.sandbox_vendor, gateways.adapters["sandbox"]
    net = _world(client, session_factory, unique, adapter, gateway="sandbox")
    account = f"{net.u}-d1-sbx"
    _register(net, net.codes["d1"], "sandbox", account, "account")
    pid = _start(net, _order(net), "sandbox").json["public_id"]
    headers, body = vendor.pay(pid)
    client.post("/callbacks/sandbox", data=body, headers=headers)
    txn = _payment(session_factory, pid).transaction_id
    accepted = adapter.refund(RefundRequest(pid, f"rf-{unique}", 100, 10_000, "CNY", "r", "https://x",
                                            sub_merchant=account))
    assert accepted.state == "processing"
    with pytest.raises(GatewayError) as missed:
        adapter.refund(RefundRequest(pid, f"rf2-{unique}", 100, 10_000, "CNY", "r", "https://x",
                                     sub_merchant="someone-else"))
    assert missed.value.details["status"] == 404
    with pytest.raises(SplitRefused):
        adapter.finish(FinishRequest(f"fin-{unique}", txn, "rest"))   # D1's payment, not the default's
    done = adapter.finish(FinishRequest(f"fin-{unique}", txn, "rest", sub_merchant=account))
    assert [r.account for r in done.receivers] == [account]
