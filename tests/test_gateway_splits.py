"""Split instructions to the gateways' split products (issue 6): the pure cap
check, then WeChat Pay profit sharing and Alipay trade settle against the
fake vendors with real keys and real signatures (made once per module)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from fractions import Fraction

import pytest

from payments.alipay import Alipay
from payments.gateway import GatewayUnavailable, HttpResponse, PaymentRequest
from payments.split import (
    FinishRequest, GatewayRefused, ReceiverResult, ReturnRequest, SplitGateway, SplitReceiver, SplitRefused,
    SplitRequest, check_caps, check_receivers, split_cap, split_state,
)
from payments.wechatpay import WeChatPayV3
from tests.test_gateway_wechatpay import SUB_MCHID, ServiceProviderDesk
from tests.vendors import alipay as alipay_vendor
from tests.vendors.alipay import FakeAlipay, new_key, private_pem, public_pem, rsa2_sign
from tests.vendors.wechatpay import (
    FakeWeChatPay, fee_of, generate_key, make_platform_identity, private_key_pem,
)

NOW = datetime(2024, 5, 1, 4, 0, 0, tzinfo=timezone.utc)
APP_ID = "2021000000000001"
BRAND = "1900000109"              # a WeChat Pay merchant receiver
DISTRIBUTOR = "1900000110"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


def clock() -> datetime:
    return NOW


def receiver(account: str = BRAND, amount: int = 100, kind: str = "MERCHANT_ID") -> SplitReceiver:
    return SplitReceiver(account, kind, amount, "分账")


# -- the cap, pure ------------------------------------------------------------

@pytest.mark.parametrize("paid, fee, ratio, cap", [
    (10000, 60, Fraction(3, 10), 2982),    # 9940 * 3/10 = 2982 exactly
    (1001, 0, Fraction(3, 10), 300),       # 300.3 -> 300
    (1009, 6, Fraction(3, 10), 300),       # 300.9 -> 300: floor, never rounded up
    (10000, 60, Fraction(1), 9940),        # Alipay: everything after the fee
    (7, 0, Fraction(1, 3), 2),
])
def test_exactly_at_the_cap_passes_and_one_fen_over_is_refused(paid, fee, ratio, cap):
    assert split_cap(paid, fee, ratio) == cap
    check_caps(paid, fee, [receiver("a", cap - 1), receiver("b", 1)], ratio)
    with pytest.raises(SplitRefused) as caught:
        check_caps(paid, fee, [receiver("a", cap), receiver("b", 1)], ratio)
    assert caught.value.code == "over_cap"
    assert caught.value.details["cap_minor"] == cap and caught.value.details["over_by_minor"] == 1


def test_the_cap_counts_what_earlier_instructions_split():
    check_caps(10000, 60, [receiver(amount=982)], Fraction(3, 10), already_split_minor=2000)
    with pytest.raises(SplitRefused) as caught:
        check_caps(10000, 60, [receiver(amount=983)], Fraction(3, 10), already_split_minor=2000)
    assert caught.value.details["already_split_minor"] == 2000


def test_a_cap_of_zero_refuses_any_split():
    assert split_cap(3, 0, Fraction(3, 10)) == 0
    with pytest.raises(SplitRefused, match="over the cap"):
        check_caps(3, 0, [receiver(amount=1)], Fraction(3, 10))


@pytest.mark.parametrize("receivers, code", [
    ([], "no_receivers"),
    ([receiver(amount=0)], "bad_amount"),
    ([receiver(amount=-5)], "bad_amount"),
    ([receiver(amount=True)], "bad_amount"),
    ([receiver(amount=1.5)], "bad_amount"),
    ([receiver(account="")], "bad_receiver"),
    ([receiver(BRAND, 10), receiver(BRAND, 20)], "duplicate_receiver"),
])
def test_receivers_that_cannot_be_sent(receivers, code):
    with pytest.raises(SplitRefused) as caught:
        check_caps(10000, 0, receivers, Fraction(1))
    assert caught.value.code == code


def test_same_account_under_another_kind_is_another_receiver():
    assert check_receivers([receiver("x", 10, "userId"), receiver("x", 20, "loginName")]) == 30


@pytest.mark.parametrize("paid, fee, ratio, error", [
    (100, 0, 0.3, TypeError),              # a float ratio is not exactly 3/10
    (100, 101, Fraction(1), ValueError),
    (100, -1, Fraction(1), ValueError),
    (100, 0, Fraction(3, 2), ValueError),
])
def test_arguments_that_are_not_a_payment(paid, fee, ratio, error):
    with pytest.raises(error):
        split_cap(paid, fee, ratio)


@pytest.mark.parametrize("done, results, state", [
    (False, ["success"], "processing"),
    (True, ["success", "pending"], "processing"),
    (True, ["success", "closed"], "finished"),
    (True, ["closed", "closed"], "failed"),
    (True, [], "finished"),                # a finish has no receivers of its own
])
def test_split_state(done, results, state):
    assert split_state(done, [ReceiverResult("a", 1, r) for r in results]) == state


# -- WeChat Pay profit sharing ------------------------------------------------

@pytest.fixture(scope="module")
def wx_merchant_key():
    return generate_key()


@pytest.fixture(scope="module")
def wx_platform():
    return make_platform_identity()


@pytest.fixture(scope="module")
def stranger_key():
    return generate_key()


@pytest.fixture
def wx(wx_merchant_key, wx_platform) -> FakeWeChatPay:
    return FakeWeChatPay(merchant_key=wx_merchant_key, platforms=[wx_platform], clock=clock)


@pytest.fixture
def wechat(wx) -> WeChatPayV3:
    return wx.gateway(profit_sharing=True)


def wx_paid(wx: FakeWeChatPay, gateway: WeChatPayV3, out_trade_no: str = "pay-1", total: int = 10000) -> str:
    gateway.create_payment(PaymentRequest(out_trade_no, total, "CNY", "两箱", "https://shop.example/n"))
    wx.pay(out_trade_no)
    return wx.orders[out_trade_no]["transaction_id"]


def wx_sent(wx: FakeWeChatPay) -> tuple[str, str, dict]:
    method, url, _, body = wx.requests[-1]
    return method, url, json.loads(body) if body else {}


def test_wechat_split_round_trip(wx, wechat):
    txn = wx_paid(wx, wechat)
    result = wechat.split(SplitRequest("PS-1", txn, (receiver(BRAND, 2000),
                                                     receiver(OPENID, 500, "PERSONAL_OPENID"))))
    assert result.state == "processing" and result.gateway_order_id == wx.sharings["PS-1"]["order_id"]
    assert [(r.account, r.amount_minor, r.result) for r in result.receivers] == [
        (BRAND, 2000, "pending"), (OPENID, 500, "pending")]
    method, url, body = wx_sent(wx)
    assert (method, url) == ("POST", "https://api.mch.weixin.qq.com/v3/profitsharing/orders")
    assert body == {"appid": wx.appid, "transaction_id": txn, "out_order_no": "PS-1", "unfreeze_unsplit": False,
                    "receivers": [{"type": "MERCHANT_ID", "account": BRAND, "amount": 2000, "description": "分账"},
                                  {"type": "PERSONAL_OPENID", "account": OPENID, "amount": 500,
                                   "description": "分账"}]}
    done = wechat.query_split("PS-1", txn)  # PROCESSING becomes FINISHED at the vendor
    assert wx_sent(wx)[:2] == ("GET", f"https://api.mch.weixin.qq.com/v3/profitsharing/orders/PS-1?transaction_id={txn}")
    assert done.state == "finished" and [r.result for r in done.receivers] == ["success", "success"]
    assert done.gateway_order_id == result.gateway_order_id


def test_payment_is_created_for_sharing_only_when_asked(wx, wechat):
    wx_paid(wx, wechat, "pay-shared")
    assert json.loads(wx.requests[-1][3])["settle_info"] == {"profit_sharing": True}
    plain = wx.gateway()
    txn = wx_paid(wx, plain, "pay-plain")
    assert "settle_info" not in wx.orders["pay-plain"]
    with pytest.raises(GatewayRefused) as caught:
        plain.split(SplitRequest("PS-2", txn, (receiver(),)))
    assert caught.value.vendor_code == "INVALID_REQUEST" and caught.value.details["status"] == 400
    assert wx.sharings == {}


def test_wechat_repeat_of_an_instruction_never_splits_twice(wx, wechat):
    txn = wx_paid(wx, wechat)
    first = wechat.split(SplitRequest("PS-1", txn, (receiver(BRAND, 2000),)))
    again = wechat.split(SplitRequest("PS-1", txn, (receiver(BRAND, 2000),)))  # the answer was lost; retry
    assert again.gateway_order_id == first.gateway_order_id and len(wx.sharings) == 1
    # had the repeat split again, 2000 + 2000 + 982 would be over the 2982 cap
    assert wechat.split(SplitRequest("PS-2", txn, (receiver(DISTRIBUTOR, 982),))).state == "processing"
    with pytest.raises(GatewayRefused):
        wechat.split(SplitRequest("PS-3", txn, (receiver(DISTRIBUTOR, 1),)))


def test_wechat_vendor_cap_and_check_caps_agree(wx, wechat):
    txn = wx_paid(wx, wechat, total=10000)
    fee = fee_of(10000)
    over = (receiver(BRAND, 2000), receiver(DISTRIBUTOR, 983))
    with pytest.raises(SplitRefused) as local:
        check_caps(10000, fee, over, wechat.max_split_ratio)
    with pytest.raises(GatewayRefused) as vendor:
        wechat.split(SplitRequest("PS-1", txn, over))
    assert local.value.code == "over_cap" and vendor.value.vendor_code == "INVALID_REQUEST"
    assert vendor.value.code == "gateway_refused" and wx.sharings == {}
    at_cap = (receiver(BRAND, 2000), receiver(DISTRIBUTOR, 982))
    check_caps(10000, fee, at_cap, wechat.max_split_ratio)
    assert wechat.split(SplitRequest("PS-1", txn, at_cap)).state == "processing"


def test_wechat_closed_receivers(wx, wechat):
    txn = wx_paid(wx, wechat)
    wx.receiver_faults = {DISTRIBUTOR: "NO_RELATION"}
    wechat.split(SplitRequest("PS-1", txn, (receiver(BRAND, 100), receiver(DISTRIBUTOR, 200))))
    mixed = wechat.query_split("PS-1", txn)
    assert mixed.state == "finished"
    assert [(r.result, r.fail_reason) for r in mixed.receivers] == [("success", None), ("closed", "NO_RELATION")]
    wechat.split(SplitRequest("PS-2", txn, (receiver(DISTRIBUTOR, 300),)))
    assert wechat.query_split("PS-2", txn).state == "failed"


def test_wechat_split_answered_finished_at_once(wx, wechat):
    txn = wx_paid(wx, wechat)
    wx.sharing_state = "FINISHED"
    result = wechat.split(SplitRequest("PS-1", txn, (receiver(BRAND, 100),)))
    assert result.state == "finished" and result.receivers[0].result == "success"


def test_wechat_unfreeze_releases_the_rest_to_the_payee(wx, wechat):
    txn = wx_paid(wx, wechat, total=10000)
    wechat.split(SplitRequest("PS-1", txn, (receiver(BRAND, 2000),)))
    released = wechat.finish(FinishRequest("PS-F", txn, "解冻剩余资金"))
    method, url, body = wx_sent(wx)
    assert (method, url) == ("POST", "https://api.mch.weixin.qq.com/v3/profitsharing/orders/unfreeze")
    assert body == {"transaction_id": txn, "out_order_no": "PS-F", "description": "解冻剩余资金"}
    assert released.state == "processing"
    done = wechat.query_split("PS-F", txn)
    assert done.state == "finished"
    assert [(r.account, r.amount_minor, r.result) for r in done.receivers] == [
        (wx.mchid, 10000 - fee_of(10000) - 2000, "success")]
    with pytest.raises(GatewayRefused) as caught:
        wechat.split(SplitRequest("PS-2", txn, (receiver(BRAND, 1),)))
    assert caught.value.vendor_code == "INVALID_REQUEST"


def test_wechat_split_with_finish_unfreezes_the_rest(wx, wechat):
    txn = wx_paid(wx, wechat)
    wechat.split(SplitRequest("PS-1", txn, (receiver(BRAND, 100),), finish=True))
    assert wx_sent(wx)[2]["unfreeze_unsplit"] is True
    with pytest.raises(GatewayRefused):
        wechat.split(SplitRequest("PS-2", txn, (receiver(BRAND, 1),)))


def test_wechat_return_round_trip(wx, wechat):
    txn = wx_paid(wx, wechat)
    wechat.split(SplitRequest("PS-1", txn, (receiver(BRAND, 2000),)))
    wechat.query_split("PS-1", txn)
    returned = wechat.return_split(ReturnRequest("RT-1", "PS-1", BRAND, 500, "退货"))
    method, url, body = wx_sent(wx)
    assert (method, url) == ("POST", "https://api.mch.weixin.qq.com/v3/profitsharing/return-orders")
    assert body == {"out_order_no": "PS-1", "out_return_no": "RT-1", "return_mchid": BRAND, "amount": 500,
                    "description": "退货"}
    assert (returned.out_return_no, returned.state) == ("RT-1", "processing")
    queried = wechat.query_return("RT-1", "PS-1")
    assert wx_sent(wx)[:2] == ("GET", "https://api.mch.weixin.qq.com/v3/profitsharing/return-orders/RT-1?out_order_no=PS-1")
    assert queried.state == "success"
    again = wechat.return_split(ReturnRequest("RT-1", "PS-1", BRAND, 500, "退货"))
    assert again.raw["return_id"] == returned.raw["return_id"] and len(wx.sharing_returns) == 1
    with pytest.raises(GatewayRefused):  # 500 + 1501 > the 2000 received
        wechat.return_split(ReturnRequest("RT-2", "PS-1", BRAND, 1501, "退货"))
    assert wechat.return_split(ReturnRequest("RT-2", "PS-1", BRAND, 1500, "退货")).state == "processing"


def test_wechat_failed_return_carries_the_reason(wx, wechat):
    txn = wx_paid(wx, wechat)
    wechat.split(SplitRequest("PS-1", txn, (receiver(BRAND, 2000),)))
    wechat.query_split("PS-1", txn)
    wx.return_result = "FAILED"
    wx.sharing_returns.clear()
    result = wechat.return_split(ReturnRequest("RT-1", "PS-1", BRAND, 500, "退货"))
    assert result.state == "failed"


def test_wechat_unknown_instruction_is_refused_with_the_vendor_code(wx, wechat):
    txn = wx_paid(wx, wechat)
    with pytest.raises(GatewayRefused) as caught:
        wechat.query_split("PS-never", txn)
    assert caught.value.vendor_code == "RESOURCE_NOT_EXISTS" and caught.value.details["status"] == 404


@pytest.mark.parametrize("fault, status", [("system_error", 500), ("rate_limited", 429)])
def test_wechat_busy_vendor_is_unavailable_not_refused(wx, wechat, fault, status):
    txn = wx_paid(wx, wechat)
    wx.answer_fault = fault
    with pytest.raises(GatewayUnavailable) as caught:
        wechat.split(SplitRequest("PS-1", txn, (receiver(),)))
    assert caught.value.details["status"] == status


def test_wechat_unreachable_is_unavailable(wx):
    def down(method, url, headers, body) -> HttpResponse:
        raise ConnectionResetError("reset")
    with pytest.raises(GatewayUnavailable):
        wx.gateway(transport=down).split(SplitRequest("PS-1", "4200x", (receiver(),)))


def test_wechat_request_signed_with_another_key_is_refused(wx, wechat, stranger_key):
    txn = wx_paid(wx, wechat)
    forger = wx.gateway(merchant_private_key=private_key_pem(stranger_key))
    with pytest.raises(GatewayRefused) as caught:
        forger.split(SplitRequest("PS-1", txn, (receiver(),)))
    assert caught.value.vendor_code == "SIGN_ERROR" and wx.sharings == {}


def test_wechat_tampered_answer_is_refused_and_the_retry_is_idempotent(wx, wechat):
    txn = wx_paid(wx, wechat)
    wx.answer_fault = "tampered"
    with pytest.raises(GatewayUnavailable) as caught:
        wechat.split(SplitRequest("PS-1", txn, (receiver(BRAND, 2000),)))
    assert caught.value.details["reason"] == "bad_signature"
    assert len(wx.sharings) == 1  # the vendor did it; only its answer was not trusted
    wx.answer_fault = None
    retried = wechat.split(SplitRequest("PS-1", txn, (receiver(BRAND, 2000),)))
    assert retried.gateway_order_id == wx.sharings["PS-1"]["order_id"] and len(wx.sharings) == 1


@pytest.mark.parametrize("fault", ["tampered", "unsigned"])
def test_wechat_refusal_that_does_not_verify_is_not_trusted(wx, wechat, fault):
    txn = wx_paid(wx, wechat)
    wx.answer_fault = fault
    with pytest.raises(GatewayUnavailable) as caught:  # over the cap, but unverified: not a refusal
        wechat.split(SplitRequest("PS-1", txn, (receiver(BRAND, 9000),)))
    assert not isinstance(caught.value, GatewayRefused)
    assert caught.value.details["status"] == 400 and caught.value.details["signature_verified"] is False


def test_wechat_signed_answer_about_another_instruction_is_unavailable(wx, wechat):
    txn = wx_paid(wx, wechat)

    def confused(method, url, headers, body):
        answer = wx(method, url, headers, body)
        data = json.loads(answer.body)
        data["out_order_no"] = "PS-other"
        resigned = json.dumps(data).encode()
        return HttpResponse(answer.status, wx.signed_headers(resigned), resigned)
    with pytest.raises(GatewayUnavailable, match="another profit-sharing order"):
        wx.gateway(transport=confused).split(SplitRequest("PS-1", txn, (receiver(),)))


# -- WeChat Pay profit sharing as a service provider (sub_mchid) ------------------

@pytest.fixture
def wx_desk(wx) -> ServiceProviderDesk:
    return ServiceProviderDesk(wx)


@pytest.fixture
def wx_partner(wx, wx_desk) -> WeChatPayV3:
    return wx.gateway(transport=wx_desk, sub_mchid=SUB_MCHID, profit_sharing=True)


def desk_sent(desk: ServiceProviderDesk) -> tuple[str, str, dict]:
    method, url, _, body = desk.requests[-1]
    return method, url, json.loads(body) if body else {}


def test_wechat_partner_split_and_query_name_the_sub_merchant(wx, wx_desk, wx_partner):
    txn = wx_paid(wx, wx_partner)
    assert desk_sent(wx_desk)[2]["settle_info"] == {"profit_sharing": True}
    result = wx_partner.split(SplitRequest("PS-1", txn, (receiver(BRAND, 2000),)))
    method, url, body = desk_sent(wx_desk)
    assert (method, url) == ("POST", "https://api.mch.weixin.qq.com/v3/profitsharing/orders")
    assert body == {"sub_mchid": SUB_MCHID, "appid": wx.appid, "transaction_id": txn, "out_order_no": "PS-1",
                    "unfreeze_unsplit": False,
                    "receivers": [{"type": "MERCHANT_ID", "account": BRAND, "amount": 2000, "description": "分账"}]}
    assert result.state == "processing" and result.gateway_order_id == wx.sharings["PS-1"]["order_id"]
    done = wx_partner.query_split("PS-1", txn)
    assert desk_sent(wx_desk)[:2] == (
        "GET", f"https://api.mch.weixin.qq.com/v3/profitsharing/orders/PS-1?sub_mchid={SUB_MCHID}&transaction_id={txn}")
    assert done.state == "finished"


def test_wechat_partner_unfreeze_and_return_name_the_sub_merchant(wx, wx_desk, wx_partner):
    txn = wx_paid(wx, wx_partner)
    wx_partner.split(SplitRequest("PS-1", txn, (receiver(BRAND, 2000),)))
    wx_partner.query_split("PS-1", txn)
    returned = wx_partner.return_split(ReturnRequest("RT-1", "PS-1", BRAND, 500, "退货"))
    method, url, body = desk_sent(wx_desk)
    assert (method, url) == ("POST", "https://api.mch.weixin.qq.com/v3/profitsharing/return-orders")
    assert body == {"sub_mchid": SUB_MCHID, "out_order_no": "PS-1", "out_return_no": "RT-1",
                    "return_mchid": BRAND, "amount": 500, "description": "退货"}
    assert returned.state == "processing"
    assert wx_partner.query_return("RT-1", "PS-1").state == "success"
    assert desk_sent(wx_desk)[:2] == (
        "GET", f"https://api.mch.weixin.qq.com/v3/profitsharing/return-orders/RT-1?sub_mchid={SUB_MCHID}"
               "&out_order_no=PS-1")
    released = wx_partner.finish(FinishRequest("PS-F", txn, "解冻剩余资金"))
    method, url, body = desk_sent(wx_desk)
    assert (method, url) == ("POST", "https://api.mch.weixin.qq.com/v3/profitsharing/orders/unfreeze")
    assert body == {"sub_mchid": SUB_MCHID, "transaction_id": txn, "out_order_no": "PS-F",
                    "description": "解冻剩余资金"}
    assert released.state == "processing"


@pytest.mark.parametrize("receivers, code", [
    ((), "no_receivers"),
    ((receiver(kind="userId"),), "bad_receiver"),
    ((receiver(amount=0),), "bad_amount"),
])
def test_wechat_refuses_locally_before_sending(wx, wechat, receivers, code):
    with pytest.raises(SplitRefused) as caught:
        wechat.split(SplitRequest("PS-1", "4200x", receivers))
    assert caught.value.code == code and wx.requests == []


# -- Alipay trade settle ------------------------------------------------------

@pytest.fixture(scope="module")
def ali_merchant_key():
    return new_key()


@pytest.fixture(scope="module")
def ali_key():
    return new_key()


@pytest.fixture
def ali(ali_merchant_key, ali_key) -> FakeAlipay:
    return FakeAlipay(public_pem(ali_merchant_key), app_id=APP_ID, key=ali_key, clock=lambda: NOW)


def alipay_adapter(ali: FakeAlipay, merchant_key, transport=None, **kw) -> Alipay:
    return Alipay(APP_ID, private_pem(merchant_key), ali.alipay_public_key_pem, transport or ali,
                  seller_id=ali.seller_id, clock=lambda: NOW, **kw)


@pytest.fixture
def alipay(ali, ali_merchant_key) -> Alipay:
    return alipay_adapter(ali, ali_merchant_key, royalty_freeze=True)


def ali_paid(ali: FakeAlipay, adapter: Alipay, out_trade_no: str = "PAY-1", total: int = 10000) -> str:
    adapter.create_payment(PaymentRequest(out_trade_no, total, "CNY", "渠道订货", "https://ledger.example/cb"))
    return adapter.verify_callback(ali.pay(out_trade_no)).transaction_id


def royalty(account: str, amount: int, kind: str = "userId") -> SplitReceiver:
    return SplitReceiver(account, kind, amount, "品牌分成")


USER = "2088101126708402"
USER2 = "2088101126708403"


def test_alipay_split_round_trip(ali, alipay):
    trade_no = ali_paid(ali, alipay)
    assert json.loads(ali.requests[0]["biz_content"])["extend_params"] == {"royalty_freeze": "true"}
    assert ali.trades["PAY-1"].royalty_freeze
    receivers = (royalty(USER, 1234), royalty("brand@example.com", 1, "loginName"), royalty(USER2, 1200))
    result = alipay.split(SplitRequest("ST-1", trade_no, receivers))
    sent = ali.requests[-1]
    assert (sent["method"], sent["sign_type"]) == ("alipay.trade.order.settle", "RSA2")
    assert json.loads(sent["biz_content"]) == {
        "out_request_no": "ST-1", "trade_no": trade_no,
        "royalty_parameters": [
            {"royalty_type": "transfer", "trans_in_type": "userId", "trans_in": USER, "amount": "12.34",
             "desc": "品牌分成"},
            {"royalty_type": "transfer", "trans_in_type": "loginName", "trans_in": "brand@example.com",
             "amount": "0.01", "desc": "品牌分成"},
            {"royalty_type": "transfer", "trans_in_type": "userId", "trans_in": USER2, "amount": "12.00",
             "desc": "品牌分成"}],
        "extend_params": {"royalty_finish": "false"}}
    assert result.state == "processing" and result.gateway_order_id == ali.trades["PAY-1"].settles["ST-1"]["settle_no"]
    assert [(r.account, r.amount_minor, r.result) for r in result.receivers] == [
        (USER, 1234, "pending"), ("brand@example.com", 1, "pending"), (USER2, 1200, "pending")]
    done = alipay.query_split("ST-1", trade_no)
    assert json.loads(ali.requests[-1]["biz_content"]) == {"out_request_no": "ST-1", "trade_no": trade_no}
    assert done.state == "finished"
    assert [(r.account, r.amount_minor, r.result) for r in done.receivers] == [
        (USER, 1234, "success"), ("brand@example.com", 1, "success"), (USER2, 1200, "success")]


def test_alipay_payment_not_frozen_unless_asked(ali, ali_merchant_key):
    ali_paid(ali, alipay_adapter(ali, ali_merchant_key))
    assert "extend_params" not in json.loads(ali.requests[0]["biz_content"])


def test_alipay_repeat_never_splits_twice(ali, alipay):
    trade_no = ali_paid(ali, alipay, total=10000)
    first = alipay.split(SplitRequest("ST-1", trade_no, (royalty(USER, 9000),)))
    again = alipay.split(SplitRequest("ST-1", trade_no, (royalty(USER, 9000),)))
    assert again.gateway_order_id == first.gateway_order_id and len(ali.trades["PAY-1"].settles) == 1
    assert alipay.split(SplitRequest("ST-2", trade_no, (royalty(USER, 940),))).state == "processing"  # 9940 in all


@pytest.mark.parametrize("ratio, cap", [(Fraction(1), 9940), (Fraction(1, 2), 4970)])
def test_alipay_vendor_cap_and_check_caps_agree(ali, ali_merchant_key, ratio, cap):
    ali.max_ratio = ratio
    adapter = alipay_adapter(ali, ali_merchant_key, royalty_freeze=True, max_split_ratio=ratio)
    trade_no = ali_paid(ali, adapter, total=10000)
    fee = alipay_vendor.fee_of(10000)
    with pytest.raises(SplitRefused):
        check_caps(10000, fee, [royalty(USER, cap + 1)], adapter.max_split_ratio)
    with pytest.raises(GatewayRefused) as caught:
        adapter.split(SplitRequest("ST-1", trade_no, (royalty(USER, cap + 1),)))
    assert caught.value.vendor_code == "ACQ.ALLOC_AMOUNT_VALIDATE_ERROR" and caught.value.details["verified"]
    check_caps(10000, fee, [royalty(USER, cap)], adapter.max_split_ratio)
    assert adapter.split(SplitRequest("ST-1", trade_no, (royalty(USER, cap),))).state == "processing"


def test_alipay_failed_transfers(ali, alipay):
    trade_no = ali_paid(ali, alipay)
    ali.receiver_faults = {"bad@example.com": "PAYEE_NOT_EXIST"}
    alipay.split(SplitRequest("ST-1", trade_no, (royalty(USER, 100), royalty("bad@example.com", 200, "loginName"))))
    mixed = alipay.query_split("ST-1", trade_no)
    assert mixed.state == "finished"
    assert [(r.result, r.fail_reason) for r in mixed.receivers] == [("success", None), ("closed", "PAYEE_NOT_EXIST")]
    alipay.split(SplitRequest("ST-2", trade_no, (royalty("bad@example.com", 300, "loginName"),)))
    assert alipay.query_split("ST-2", trade_no).state == "failed"


def test_alipay_finish_releases_the_rest(ali, alipay):
    trade_no = ali_paid(ali, alipay)
    alipay.split(SplitRequest("ST-1", trade_no, (royalty(USER, 100),)))
    finished = alipay.finish(FinishRequest("ST-F", trade_no, "分账完结"))
    assert json.loads(ali.requests[-1]["biz_content"]) == {
        "out_request_no": "ST-F", "trade_no": trade_no, "royalty_parameters": [],
        "extend_params": {"royalty_finish": "true"}}
    assert (finished.state, finished.receivers) == ("processing", ())
    assert alipay.query_split("ST-F", trade_no).state == "finished"
    with pytest.raises(GatewayRefused) as caught:
        alipay.split(SplitRequest("ST-2", trade_no, (royalty(USER, 1),)))
    assert caught.value.vendor_code == "ACQ.TRADE_SETTLE_ERROR"


def test_alipay_split_with_finish(ali, alipay):
    trade_no = ali_paid(ali, alipay)
    alipay.split(SplitRequest("ST-1", trade_no, (royalty(USER, 100),), finish=True))
    assert json.loads(ali.requests[-1]["biz_content"])["extend_params"] == {"royalty_finish": "true"}
    assert ali.trades["PAY-1"].royalty_finished


def test_alipay_has_no_split_return(ali, alipay):
    with pytest.raises(NotImplementedError, match="refund_royalty_parameters"):
        alipay.return_split(ReturnRequest("RT-1", "ST-1", USER, 100, "退货"))
    with pytest.raises(NotImplementedError):
        alipay.query_return("RT-1", "ST-1")
    assert ali.requests == []


def test_alipay_unknown_request_is_refused(ali, alipay):
    trade_no = ali_paid(ali, alipay)
    with pytest.raises(GatewayRefused) as caught:
        alipay.query_split("ST-never", trade_no)
    assert caught.value.vendor_code == "ACQ.TRADE_NOT_EXIST"


def test_alipay_busy_is_unavailable_not_refused(ali, alipay):
    trade_no = ali_paid(ali, alipay)
    ali.answer_fault = "busy"
    with pytest.raises(GatewayUnavailable) as caught:
        alipay.split(SplitRequest("ST-1", trade_no, (royalty(USER, 100),)))
    assert caught.value.details["code"] == "20000" and ali.trades["PAY-1"].settles == {}


def test_alipay_unreachable_is_unavailable(ali, ali_merchant_key):
    def down(*_):
        raise TimeoutError("timed out")
    with pytest.raises(GatewayUnavailable):
        alipay_adapter(ali, ali_merchant_key, transport=down).split(SplitRequest("ST-1", "2024x", (royalty(USER, 1),)))


def test_alipay_request_signed_with_another_key_is_refused(ali, alipay, stranger_key):
    trade_no = ali_paid(ali, alipay)
    with pytest.raises(GatewayRefused) as caught:
        alipay_adapter(ali, stranger_key).split(SplitRequest("ST-1", trade_no, (royalty(USER, 1),)))
    assert caught.value.vendor_code == "isv.invalid-signature" and ali.trades["PAY-1"].settles == {}


def test_alipay_tampered_answer_is_refused_and_the_retry_is_idempotent(ali, alipay):
    trade_no = ali_paid(ali, alipay)
    ali.answer_fault = "tampered"
    with pytest.raises(GatewayUnavailable) as caught:
        alipay.split(SplitRequest("ST-1", trade_no, (royalty(USER, 100),)))
    assert caught.value.details["reason"] == "bad_signature"
    with pytest.raises(GatewayUnavailable):  # a refusal that does not verify is not a refusal either
        alipay.query_split("ST-never", trade_no)
    ali.answer_fault = None
    retried = alipay.split(SplitRequest("ST-1", trade_no, (royalty(USER, 100),)))
    assert retried.gateway_order_id == ali.trades["PAY-1"].settles["ST-1"]["settle_no"]
    assert len(ali.trades["PAY-1"].settles) == 1


def test_alipay_amounts_written_as_json_numbers_are_read_exactly(ali, alipay, ali_key, ali_merchant_key):
    trade_no = ali_paid(ali, alipay)
    alipay.split(SplitRequest("ST-1", trade_no, (royalty(USER, 1234),)))

    def numbers(method, url, headers, body):
        text = ali(method, url, headers, body).body.decode()
        node = json.loads(text)["alipay_trade_order_settle_query_response"]
        for detail in node["royalty_detail_list"]:
            detail["amount"] = float(detail["amount"])
        node_text = json.dumps(node, ensure_ascii=False, separators=(",", ":"))
        signed = '{"alipay_trade_order_settle_query_response":' + node_text + ',"sign":"' + \
            rsa2_sign(ali_key, node_text.encode()) + '"}'
        return HttpResponse(200, {}, signed.encode())
    queried = alipay_adapter(ali, ali_merchant_key, transport=numbers).query_split("ST-1", trade_no)
    assert queried.raw["royalty_detail_list"][0]["amount"] == 12.34
    assert queried.receivers[0].amount_minor == 1234


def test_both_adapters_are_split_gateways(wechat, alipay, wx):
    assert isinstance(wechat, SplitGateway) and isinstance(alipay, SplitGateway)
    assert (wechat.max_split_ratio, alipay.max_split_ratio) == (Fraction(3, 10), Fraction(1))
    with pytest.raises(ValueError, match="max_split_ratio"):
        wx.gateway(max_split_ratio=0.3)
