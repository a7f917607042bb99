"""The Alipay adapter against FakeAlipay (its own keys, its own signing code),
plus vectors computed by hand here. Nothing reaches the network."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, quote, quote_plus

import pytest

from payments.alipay import Alipay, CallbackNotActionable, fen_to_yuan, json_member_text, signing_string, yuan_to_fen
from payments.gateway import (
    BillLine, CallbackRejected, CallbackRequest, GatewayError, GatewayUnavailable, HttpResponse,
    PaymentRequest, RefundRequest,
)
from tests.vendors.alipay import FakeAlipay, form_body, new_key, private_pem, public_pem, rsa2_sign

CST = timezone(timedelta(hours=8))
NOW = datetime(2024, 3, 1, 10, 0, 0, tzinfo=CST)
APP_ID = "2021000000000001"


@pytest.fixture(scope="module")
def merchant_key():
    return new_key()


@pytest.fixture(scope="module")
def alipay_key():
    return new_key()


@pytest.fixture(scope="module")
def stranger_key():
    return new_key()


@pytest.fixture
def fake(merchant_key, alipay_key) -> FakeAlipay:
    return FakeAlipay(public_pem(merchant_key), app_id=APP_ID, key=alipay_key, clock=lambda: NOW)


@pytest.fixture
def adapter(fake, merchant_key) -> Alipay:
    return Alipay(APP_ID, private_pem(merchant_key), fake.alipay_public_key_pem, fake,
                  seller_id=fake.seller_id, clock=lambda: NOW)


def rejection(adapter: Alipay, request: CallbackRequest) -> str:
    with pytest.raises(CallbackRejected) as caught:
        adapter.verify_callback(request)
    return caught.value.code


def with_body(request: CallbackRequest, body: bytes) -> CallbackRequest:
    return CallbackRequest(request.headers, body, request.received_at)


# -- notices -------------------------------------------------------------

def test_trade_success_is_a_payment(adapter, fake):
    notice = fake.payment_notice("PAY-1", 12345, trade_no="2024030122001400000000000001")
    event = adapter.verify_callback(notice)
    assert (event.gateway, event.kind, event.transaction_id) == ("alipay", "payment_succeeded",
                                                                 "2024030122001400000000000001")
    assert (event.out_trade_no, event.amount_minor, event.currency, event.app_id) == ("PAY-1", 12345, "CNY", APP_ID)
    assert event.occurred_at == NOW and event.occurred_at.utcoffset() == timedelta(hours=8)
    assert event.raw["trade_status"] == "TRADE_SUCCESS"


def test_trade_finished_is_a_payment_too(adapter, fake):
    event = adapter.verify_callback(fake.payment_notice("PAY-2", 100, "TRADE_FINISHED"))
    assert (event.kind, event.amount_minor) == ("payment_succeeded", 100)


def test_wait_buyer_pay_is_verified_but_not_actionable(adapter, fake):
    with pytest.raises(CallbackNotActionable) as caught:
        adapter.verify_callback(fake.payment_notice("PAY-3", 500, "WAIT_BUYER_PAY"))
    assert isinstance(caught.value, CallbackRejected) and caught.value.code == "not_actionable"
    assert caught.value.details["out_trade_no"] == "PAY-3"
    assert caught.value.details["trade_status"] == "WAIT_BUYER_PAY"


def test_trade_closed_is_a_close(adapter, fake):
    event = adapter.verify_callback(fake.payment_notice("PAY-4", 800, "TRADE_CLOSED"))
    assert (event.kind, event.out_trade_no, event.amount_minor) == ("payment_closed", "PAY-4", 800)


def test_partial_refund_notice_is_a_refund_not_a_second_payment(adapter, fake):
    notice = fake.refund_notice("PAY-5", "RF-1", 2550, total_fen=10000, trade_no="T5")
    assert dict(parse_qsl(notice.body.decode()))["trade_status"] == "TRADE_SUCCESS"
    event = adapter.verify_callback(notice)
    assert (event.kind, event.transaction_id, event.out_refund_no) == ("refund_succeeded", "T5:RF-1", "RF-1")
    assert (event.out_trade_no, event.amount_minor) == ("PAY-5", 2550)
    assert event.occurred_at == NOW.replace(microsecond=320000)


def test_full_refund_notice_with_trade_closed_is_a_refund(adapter, fake):
    event = adapter.verify_callback(fake.refund_notice("PAY-6", "RF-2", 10000, total_fen=10000))
    assert (event.kind, event.amount_minor) == ("refund_succeeded", 10000)


def test_tampered_amount_is_a_bad_signature(adapter, fake):
    notice = fake.payment_notice("PAY-7", 12345)
    assert b"total_amount=123.45" in notice.body
    assert rejection(adapter, with_body(notice, notice.body.replace(b"total_amount=123.45", b"total_amount=999.99"))) == "bad_signature"


def test_notice_signed_by_another_key_is_refused(adapter, merchant_key, stranger_key):
    impostor = FakeAlipay(public_pem(merchant_key), app_id=APP_ID, key=stranger_key, clock=lambda: NOW)
    assert rejection(adapter, impostor.payment_notice("PAY-8", 100)) == "bad_signature"


def test_notice_for_another_app_or_seller_is_wrong_app(adapter, fake):
    assert rejection(adapter, fake.payment_notice("PAY-9", 100, app_id="2021999999999999")) == "wrong_app"
    assert rejection(adapter, fake.payment_notice("PAY-9", 100, seller_id="2088999999999999")) == "wrong_app"


def test_missing_sign_or_field_is_malformed(adapter, fake):
    notice = fake.payment_notice("PAY-10", 100)
    unsigned = "&".join(p for p in notice.body.decode().split("&") if not p.startswith("sign="))
    assert rejection(adapter, with_body(notice, unsigned.encode())) == "malformed"
    fields = dict(parse_qsl(notice.body.decode()), sign=None, sign_type=None)
    assert rejection(adapter, fake.notice({**fields, "trade_no": None})) == "malformed"  # signed, incomplete
    assert rejection(adapter, fake.notice({**fields, "out_trade_no": ""})) == "malformed"
    assert rejection(adapter, with_body(notice, b"")) == "malformed"


def test_signed_string_excludes_sign_type_and_empty_values(adapter, alipay_key):
    params = {"trade_status": "TRADE_SUCCESS", "app_id": APP_ID, "body": "", "sign_type": "RSA2",
              "out_trade_no": "PAY-11", "trade_no": "T11", "total_amount": "0.01", "seller_id": "2088000000000001",
              "notify_time": "2024-03-01 10:00:00", "subject": "测试 订单"}
    expected = ("app_id=2021000000000001&notify_time=2024-03-01 10:00:00&out_trade_no=PAY-11"
                "&seller_id=2088000000000001&subject=测试 订单&total_amount=0.01&trade_no=T11&trade_status=TRADE_SUCCESS")
    assert signing_string(params, exclude=("sign", "sign_type")) == expected

    def notice(signed_text: str) -> CallbackRequest:
        signed = dict(params, sign=rsa2_sign(alipay_key, signed_text.encode("utf-8")))
        return CallbackRequest({}, form_body(signed), NOW)

    assert adapter.verify_callback(notice(expected)).amount_minor == 1
    # The same notice signed over a string that kept sign_type, or the empty body: refused.
    assert rejection(adapter, notice(expected.replace("&subject", "&sign_type=RSA2&subject"))) == "bad_signature"
    assert rejection(adapter, notice(expected.replace("&notify_time", "&body=&notify_time"))) == "bad_signature"


def test_url_encoded_values_are_decoded_before_verifying(adapter, fake, alipay_key):
    subject = "渠道 订货 & co+1 = 100%"
    notice = fake.payment_notice("PAY 12/甲", 4200, subject=subject)
    assert b"%20" in notice.body and "渠道".encode() not in notice.body
    event = adapter.verify_callback(notice)
    assert (event.out_trade_no, event.raw["subject"]) == ("PAY 12/甲", subject)
    # The same form with "+" for spaces (quote_plus), as some senders do.
    pairs = parse_qsl(notice.body.decode(), keep_blank_values=True)
    plus_body = "&".join(f"{k}={quote_plus(v)}" for k, v in pairs).encode()
    assert b"+" in plus_body and adapter.verify_callback(with_body(notice, plus_body)).raw["subject"] == subject


def test_charset_of_the_notice_is_honoured(adapter, fake):
    notice = fake.notice({**dict(parse_qsl(fake.payment_notice("PAY-13", 100).body.decode())),
                          "subject": "订货", "charset": "GBK", "sign": None, "sign_type": None}, charset="gbk")
    assert quote("订", encoding="gbk").encode() in notice.body
    assert adapter.verify_callback(notice).raw["subject"] == "订货"
    headerless = CallbackRequest({}, notice.body, NOW)  # falls back on the form's own charset field
    assert adapter.verify_callback(headerless).raw["subject"] == "订货"


@pytest.mark.parametrize("amount", ["12.345", "1e3", "12,00", " 12.00", "-1.00", "NaN", "١٢"])
def test_amount_not_in_two_decimal_yuan_is_malformed(adapter, fake, amount):
    assert rejection(adapter, fake.payment_notice("PAY-14", 100, total_amount=amount)) == "malformed"


def test_amounts_convert_exactly(adapter, fake):
    assert adapter.verify_callback(fake.payment_notice("PAY-15", 0, total_amount="0.29")).amount_minor == 29
    assert adapter.verify_callback(fake.payment_notice("PAY-15", 0, total_amount="12.3")).amount_minor == 1230
    assert [yuan_to_fen(v) for v in ("19.99", "1234567.89", "0.01")] == [1999, 123456789, 1]
    assert [fen_to_yuan(v) for v in (1, 29, 1230, 123456789)] == ["0.01", "0.29", "12.30", "1234567.89"]
    with pytest.raises(ValueError):
        fen_to_yuan(0)


def test_old_notify_time_is_accepted_but_a_bad_one_is_malformed(adapter, fake):
    late = fake.payment_notice("PAY-16", 100, notify_time="2024-02-28 09:00:00", gmt_payment=None)
    assert adapter.verify_callback(late).occurred_at == datetime(2024, 2, 28, 9, 0, tzinfo=CST)
    assert rejection(adapter, fake.payment_notice("PAY-16", 100, notify_time="2024-02-28T09:00:00Z")) == "malformed"


def test_acknowledgements(adapter):
    ok, refused = adapter.acknowledge(True), adapter.acknowledge(False, "bad signature")
    assert (ok.status, ok.body, ok.content_type.split(";")[0]) == (200, b"success", "text/plain")
    assert refused.body == b"fail" and refused.body != b"success"


# -- openapi -------------------------------------------------------------

def payment(out_trade_no: str, fen: int = 12345, **kw) -> PaymentRequest:
    return PaymentRequest(out_trade_no, fen, "CNY", "渠道订货", "https://ledger.example/cb/alipay", **kw)


def test_precreate_query_and_payment_round_trip(adapter, fake):
    created = adapter.create_payment(payment("PAY-20", expires_at=NOW + timedelta(minutes=30, seconds=59)))
    assert created.pay_url and created.pay_url.startswith("https://qr.alipay.com/bax0")  # "\/" undone
    sent = fake.requests[-1]
    assert (sent["method"], sent["sign_type"], sent["timestamp"]) == ("alipay.trade.precreate", "RSA2", "2024-03-01 10:00:00")
    assert sent["notify_url"] == "https://ledger.example/cb/alipay"
    assert json.loads(sent["biz_content"]) == {"out_trade_no": "PAY-20", "subject": "渠道订货", "total_amount": "123.45",
                                               "seller_id": fake.seller_id, "timeout_express": "30m"}
    unscanned = adapter.query_payment("PAY-20")
    assert (unscanned.state, unscanned.transaction_id) == ("unknown", None)
    event = adapter.verify_callback(fake.pay("PAY-20"))
    status = adapter.query_payment("PAY-20")
    assert (status.state, status.amount_minor, status.transaction_id) == ("succeeded", 12345, event.transaction_id)


def test_refunds_round_trip(adapter, fake):
    adapter.create_payment(payment("PAY-21", 10000))
    trade_no = adapter.verify_callback(fake.pay("PAY-21")).transaction_id
    first = adapter.refund(RefundRequest("PAY-21", "RF-21a", 2500, 10000, "CNY", "退货", "https://unused"))
    assert (first.state, first.refund_id) == ("succeeded", f"{trade_no}:RF-21a")
    assert json.loads(fake.requests[-1]["biz_content"])["refund_amount"] == "25.00"
    assert "notify_url" not in fake.requests[-1]
    again = adapter.refund(RefundRequest("PAY-21", "RF-21a", 2500, 10000, "CNY", "退货", "https://unused"))
    assert again.state == "processing"  # fund_change N: no money moved twice
    adapter.refund(RefundRequest("PAY-21", "RF-21b", 7500, 10000, "CNY", "退货", "https://unused"))
    assert adapter.query_payment("PAY-21").state == "closed"
    with pytest.raises(GatewayUnavailable) as caught:
        adapter.refund(RefundRequest("PAY-21", "RF-21c", 1, 10000, "CNY", "退货", "https://unused"))
    assert caught.value.details["sub_code"] == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"


def test_request_signed_with_a_wrong_merchant_key_is_refused_by_alipay(fake, stranger_key):
    wrong = Alipay(APP_ID, private_pem(stranger_key), fake.alipay_public_key_pem, fake, clock=lambda: NOW)
    with pytest.raises(GatewayUnavailable) as caught:
        wrong.query_payment("PAY-22")
    assert caught.value.details["code"] == "40002"
    assert caught.value.details["sub_code"] == "isv.invalid-signature"
    assert caught.value.details["verified"] is True


def test_answer_with_a_bad_signature_is_unavailable(merchant_key, fake, stranger_key):
    impostor = FakeAlipay(public_pem(merchant_key), app_id=APP_ID, key=stranger_key, clock=lambda: NOW)
    adapter = Alipay(APP_ID, private_pem(merchant_key), fake.alipay_public_key_pem, impostor, clock=lambda: NOW)
    with pytest.raises(GatewayUnavailable) as caught:
        adapter.create_payment(payment("PAY-23"))
    assert caught.value.details["reason"] == "bad_signature"
    assert "PAY-23" in impostor.trades  # the request got there; only the answer was refused


def answering(body: str, status: int = 200):
    return lambda method, url, headers, sent: HttpResponse(status, {}, body.encode())


@pytest.mark.parametrize("body, status, detail", [
    ('{"alipay_trade_query_response":{"code":"10000","trade_status":"TRADE_SUCCESS"}}', 200, {"reason": "bad_signature"}),
    ('{"error_response":{"code":"40002","sub_code":"isv.invalid-app-id"}}', 200, {"verified": False, "sub_code": "isv.invalid-app-id"}),
    ('<html>busy</html>', 200, {}),
    ('', 502, {"status": 502}),
])
def test_unsigned_unreadable_or_failed_answers_are_unavailable(merchant_key, alipay_key, body, status, detail):
    adapter = Alipay(APP_ID, private_pem(merchant_key), public_pem(alipay_key), answering(body, status))
    with pytest.raises(GatewayUnavailable) as caught:
        adapter.query_payment("PAY-24")
    assert detail.items() <= caught.value.details.items()


def test_transport_failure_is_unavailable(merchant_key, alipay_key):
    def down(*_):
        raise ConnectionRefusedError("no route")
    adapter = Alipay(APP_ID, private_pem(merchant_key), public_pem(alipay_key), down)
    with pytest.raises(GatewayUnavailable):
        adapter.query_payment("PAY-25")


def test_the_signed_node_is_cut_out_of_the_raw_text_not_reserialised():
    node = '{ "msg":"a}{\\"b", "qr_code":"https:\\/\\/qr.alipay.com\\/x","n":[1,{"z":2}] }'
    text = '{"alipay_trade_precreate_response": ' + node + ' ,"sign":"abc"}'
    assert json_member_text(text, "alipay_trade_precreate_response") == node
    assert json_member_text(text, "sign") == '"abc"' and json_member_text(text, "absent") is None


def test_non_cny_or_expired_requests_are_refused_before_sending(adapter, fake):
    with pytest.raises(ValueError):
        adapter.create_payment(PaymentRequest("PAY-26", 100, "USD", "x", "https://n"))
    with pytest.raises(ValueError):
        adapter.create_payment(payment("PAY-26", expires_at=NOW + timedelta(seconds=30)))
    assert fake.requests == []


# -- bill ----------------------------------------------------------------

COLUMNS = ("支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,"
           "订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,"
           "券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注")
BILL = "\r\n".join([
    "#支付宝业务明细查询",
    "#账号：[20880000000000010156]",
    "#起始日期：[2024年03月01日 00:00:00]   终止日期：[2024年03月02日 00:00:00]",
    "#-----------------------------------------业务明细列表----------------------------------------",
    COLUMNS,
    "2024030122001404560000000001\t,PAY-20240301-0001\t,交易\t,\"渠道订货,订单#1\"\t,2024-03-01 10:00:01,"
    "2024-03-01 10:00:09,\t,\t,\t,\t,159****5620\t,1234.56,1234.56,0.00,0.00,0.00,0.00,0.00,\t,0.00,0.00,\t,-7.41,0.00,\t",
    "2024030122001404560000000002\t,PAY-20240301-0002\t,交易\t,小额\t,2024-03-01 10:05:00,"
    "2024-03-01 10:05:02,\t,\t,\t,\t,138****0001\t,0.29,0.29,0.00,0.00,0.00,0.00,0.00,\t,0.00,0.00,\t,0.00,0.00,\t",
    "2024030122001404560000000001\t,PAY-20240301-0001\t,退款\t,\"渠道订货,订单#1\"\t,2024-03-01 11:20:00,"
    "2024-03-01 11:20:01,\t,\t,\t,\t,159****5620\t,-200.00,-200.00,0.00,0.00,0.00,0.00,0.00,\t,0.00,0.00,RF-0001\t,1.20,0.00,\t",
    "#-----------------------------------------业务明细列表结束------------------------------------",
    "#交易合计：2笔，商家实收：￥1234.85元，商家优惠：￥0.00元",
    "#退款合计：1笔，商家实收：￥-200.00元，商家优惠：￥0.00元",
    "#导出时间：[2024年03月02日 03:15:11]",
]).encode("gbk")


def test_bill_parses_to_exact_lines(adapter):
    lines = adapter.parse_bill(BILL)
    assert lines == [
        BillLine("2024030122001404560000000001", "PAY-20240301-0001", "payment", 123456, 741,
                 datetime(2024, 3, 1, 10, 0, 9, tzinfo=CST)),
        BillLine("2024030122001404560000000002", "PAY-20240301-0002", "payment", 29, 0,
                 datetime(2024, 3, 1, 10, 5, 2, tzinfo=CST)),
        BillLine("2024030122001404560000000001:RF-0001", "PAY-20240301-0001", "refund", 20000, -120,
                 datetime(2024, 3, 1, 11, 20, 1, tzinfo=CST), out_refund_no="RF-0001"),
    ]


@pytest.mark.parametrize("old, new", [("交易\t,小额", "冻结\t,小额"), ("0.29,0.29", "0.295,0.29")])
def test_bill_with_unknown_type_or_bad_amount_raises(adapter, old, new):
    bad = BILL.decode("gbk").replace(old, new).encode("gbk")
    with pytest.raises(GatewayError):
        adapter.parse_bill(bad)


def test_refund_notice_and_bill_share_the_refund_id(adapter, fake):
    event = adapter.verify_callback(fake.refund_notice("PAY-20240301-0001", "RF-0001", 20000, total_fen=123456,
                                                       trade_no="2024030122001404560000000001"))
    assert event.transaction_id == adapter.parse_bill(BILL)[2].transaction_id


def test_signature_base64_is_checked_strictly(adapter, fake):
    notice = fake.payment_notice("PAY-27", 100)
    params = dict(parse_qsl(notice.body.decode()))
    params["sign"] = "!!" + params["sign"][2:]
    assert rejection(adapter, CallbackRequest({}, form_body(params), NOW)) == "bad_signature"
    assert base64.b64decode(dict(parse_qsl(notice.body.decode()))["sign"])  # the original was valid base64
