"""The online-banking (B2B) gateway adapter: the bank's dialect (yuan strings,
China time, respCode) translated exactly; its API answered by a small fake
bank below, which checks our signatures as the real one would."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments import signing
from payments.bank import (
    SIGNATURE_HEADER,
    OnlineBankGateway,
    fen_to_yuan,
    parse_bank_time,
    yuan_to_fen,
)
from payments.gateway import (
    BillLine,
    CallbackRejected,
    CallbackRequest,
    GatewayError,
    GatewayUnavailable,
    HttpResponse,
    PaymentRequest,
    RefundRequest,
)

SECRET = b"bank-shared-secret"
MER_ID = "104110048991234"
NOW = datetime(2024, 11, 26, 2, 30, tzinfo=timezone.utc)     # 10:30 in Shanghai
CST = timezone(timedelta(hours=8))


class FakeBank:
    """Just enough of the bank's API: checks the request signature, keeps
    orders, signs answers. ``respond`` overrides the next answer."""

    def __init__(self, secret: bytes = SECRET) -> None:
        self.secret = secret
        self.orders: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.respond: dict | None = None

    def __call__(self, method, url, headers, body) -> HttpResponse:
        try:
            signing.verify(
                headers.get(SIGNATURE_HEADER),
                signing.request_payload(method, urlsplit(url).path, body),
                [self.secret],
                NOW,
            )
        except CallbackRejected:
            return self.answer({"respCode": "9001", "respMsg": "signature"}, status=401)
        req = json.loads(body)
        self.requests.append(req)
        if self.respond is not None:
            return self.answer(self.respond)
        path = urlsplit(url).path
        if path.endswith("/b2b/pay"):
            self.orders[req["orderNo"]] = {"tranAmt": req["tranAmt"], "tranStat": "PROCESSING"}
            return self.answer({"respCode": "0000", "merId": req["merId"], "orderNo": req["orderNo"],
                                "payUrl": f"https://bank.example/b2b/{req['orderNo']}"})
        if path.endswith("/b2b/query"):
            order = self.orders.get(req["orderNo"])
            if order is None:
                return self.answer({"respCode": "1001", "respMsg": "no such order"})
            return self.answer({"respCode": "0000", "orderNo": req["orderNo"], **order})
        if path.endswith("/b2b/refund"):
            return self.answer({"respCode": "0000", "refundNo": req["refundNo"], "refundStat": "PROCESSING",
                                "bankSerialNo": "RF" + req["refundNo"]})
        return self.answer({"respCode": "9999"}, status=404)

    def answer(self, payload: dict, status: int = 200) -> HttpResponse:
        body = json.dumps(payload).encode()
        return HttpResponse(status, {SIGNATURE_HEADER: signing.sign(self.secret, int(NOW.timestamp()), body)}, body)


@pytest.fixture
def bank() -> FakeBank:
    return FakeBank()


@pytest.fixture
def gateway(bank) -> OnlineBankGateway:
    return OnlineBankGateway(
        mer_id=MER_ID, secret=SECRET, transport=bank, base_url="https://bank.example/gateway", clock=lambda: NOW
    )


# -- yuan <-> fen ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, fen",
    [("0.10", 10), ("1234.56", 123456), ("0", 0), ("1.5", 150), ("0.01", 1), ("007.00", 700),
     ("999999999999999.99", 99999999999999999)],
)
def test_yuan_strings_convert_to_fen_exactly(text, fen):
    assert yuan_to_fen(text) == fen
    assert type(yuan_to_fen(text)) is int


@pytest.mark.parametrize(
    "text",
    ["1.005", "1.000", "1e3", "1E3", "-1.00", "+1.00", "1.", ".5", " 1.00", "1.00 ", "NaN", "Infinity",
     "1,000.00", "", "１.００", "0x10", "1_000.00", "1000000000000000.00", 1.5, None],
)
def test_anything_else_is_not_an_amount(text):
    with pytest.raises(ValueError):
        yuan_to_fen(text)


@given(st.integers(0, 10**15))
def test_property_fen_to_yuan_round_trips(fen):
    assert yuan_to_fen(fen_to_yuan(fen)) == fen


def test_fen_format_as_two_decimals():
    assert [fen_to_yuan(n) for n in (0, 5, 10, 123456)] == ["0.00", "0.05", "0.10", "1234.56"]
    with pytest.raises(ValueError):
        fen_to_yuan(-1)


def test_bank_times_are_china_time():
    assert parse_bank_time("20241126103000") == NOW
    for bad in ("2024112610300", "20241326103000", "2024-11-26 10:30"):
        with pytest.raises(ValueError):
            parse_bank_time(bad)


# -- callbacks ---------------------------------------------------------------------------

PAID = {
    "merId": MER_ID,
    "orderNo": "P1",
    "bankSerialNo": "B20241126000123",
    "tranAmt": "1234.56",
    "tranStat": "SUCCESS",
    "tranTime": "20241126103000",
}


def notice(fields: dict, as_json: bool = False, secret: bytes = SECRET, at: datetime = NOW) -> CallbackRequest:
    if as_json:
        body, content_type = json.dumps(fields).encode(), "application/json"
    else:
        body, content_type = urlencode(fields).encode(), "application/x-www-form-urlencoded"
    headers = {"Content-Type": content_type, SIGNATURE_HEADER: signing.sign(secret, int(at.timestamp()), body)}
    return CallbackRequest(headers, body, NOW)


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize(
    "stat, kind", [("SUCCESS", "payment_succeeded"), ("FAIL", "payment_failed"), ("CLOSED", "payment_closed")]
)
def test_payment_notices_parse_into_events(gateway, as_json, stat, kind):
    event = gateway.verify_callback(notice({**PAID, "tranStat": stat}, as_json))
    assert event.gateway == "bank"
    assert event.kind == kind
    assert (event.transaction_id, event.out_trade_no) == ("B20241126000123", "P1")
    assert (event.amount_minor, event.currency) == (123456, "CNY")
    assert event.occurred_at == datetime(2024, 11, 26, 10, 30, tzinfo=CST)
    assert event.app_id == MER_ID
    assert event.out_refund_no is None


@pytest.mark.parametrize("stat, kind", [("SUCCESS", "refund_succeeded"), ("FAIL", "refund_failed")])
def test_refund_notices_parse_into_events(gateway, stat, kind):
    fields = {**PAID, "bankSerialNo": "RF0001", "refundNo": "R1", "refundAmt": "0.10", "refundStat": stat}
    del fields["tranStat"]
    event = gateway.verify_callback(notice(fields))
    assert event.kind == kind
    assert (event.transaction_id, event.out_trade_no, event.out_refund_no) == ("RF0001", "P1", "R1")
    assert event.amount_minor == 10


def test_a_notice_for_another_merchant_is_refused(gateway):
    with pytest.raises(CallbackRejected) as info:
        gateway.verify_callback(notice({**PAID, "merId": "104110048999999"}))
    assert info.value.code == "wrong_app"


@pytest.mark.parametrize(
    "change",
    [
        {"tranAmt": "1.005"},
        {"tranAmt": "1e3"},
        {"tranAmt": "-1.00"},
        {"tranAmt": ""},
        {"tranStat": "PENDING"},
        {"tranTime": "2024-11-26 10:30:00"},
        {"orderNo": ""},
        {"curType": "USD"},
    ],
)
def test_signed_but_malformed_notices_are_refused(gateway, change):
    with pytest.raises(CallbackRejected) as info:
        gateway.verify_callback(notice({**PAID, **change}))
    assert info.value.code == "malformed"


def test_a_json_number_amount_is_refused_never_read_as_float(gateway):
    with pytest.raises(CallbackRejected) as info:
        gateway.verify_callback(notice({**PAID, "tranAmt": 1234.56}, as_json=True))
    assert info.value.code == "malformed"


def test_a_form_field_given_twice_is_refused(gateway):
    body = (urlencode(PAID) + "&tranAmt=0.01").encode()
    request = CallbackRequest({SIGNATURE_HEADER: signing.sign(SECRET, int(NOW.timestamp()), body),
                               "Content-Type": "application/x-www-form-urlencoded"}, body, NOW)
    with pytest.raises(CallbackRejected) as info:
        gateway.verify_callback(request)
    assert info.value.code == "malformed"


def test_notice_signatures_are_checked_first(gateway):
    for request, code in [
        (notice(PAID, secret=b"forger"), "bad_signature"),
        (notice({**PAID, "merId": "other"}, secret=b"forger"), "bad_signature"),
        (notice(PAID, at=NOW - timedelta(minutes=6)), "stale_timestamp"),
        (CallbackRequest({}, urlencode(PAID).encode(), NOW), "malformed"),
    ]:
        with pytest.raises(CallbackRejected) as info:
            gateway.verify_callback(request)
        assert info.value.code == code


def test_acknowledgements_in_the_banks_dialect(gateway):
    ok = gateway.acknowledge(True)
    assert (ok.status, json.loads(ok.body)) == (200, {"respCode": "0000"})
    no = gateway.acknowledge(False, "bad signature")
    assert json.loads(no.body) == {"respCode": "9999", "respMsg": "bad signature"}
    assert no.status != 200


# -- the API through the fake bank ----------------------------------------------------------


def test_create_sends_yuan_and_china_time_and_query_reads_them_back(gateway, bank):
    created = gateway.create_payment(
        PaymentRequest("P1", 123456, "CNY", "bulk order", "https://us/callbacks/bank", expires_at=NOW + timedelta(hours=2))
    )
    assert created.pay_url == "https://bank.example/b2b/P1"
    sent = bank.requests[-1]
    assert (sent["merId"], sent["tranAmt"], sent["expireTime"]) == (MER_ID, "1234.56", "20241126123000")

    status = gateway.query_payment("P1")
    assert (status.state, status.amount_minor, status.transaction_id) == ("pending", 123456, None)
    bank.orders["P1"].update(tranStat="SUCCESS", bankSerialNo="B1")
    assert (gateway.query_payment("P1").state, gateway.query_payment("P1").transaction_id) == ("succeeded", "B1")
    assert gateway.query_payment("P404").state == "unknown"


def test_refund_sends_yuan_and_a_refusal_is_a_failed_refund(gateway, bank):
    accepted = gateway.refund(RefundRequest("P1", "R1", 10, 123456, "CNY", "damaged", "https://us/cb"))
    assert (accepted.state, accepted.refund_id) == ("processing", "RFR1")
    assert (bank.requests[-1]["refundAmt"], bank.requests[-1]["orderAmt"]) == ("0.10", "1234.56")

    bank.respond = {"respCode": "2001", "respMsg": "refund exceeds the amount paid"}
    refused = gateway.refund(RefundRequest("P1", "R2", 999999, 123456, "CNY", "", "https://us/cb"))
    assert (refused.state, refused.refund_id) == ("failed", None)


def test_a_system_error_is_unavailable_and_another_refusal_an_error(gateway, bank):
    bank.respond = {"respCode": "9999", "respMsg": "busy"}
    with pytest.raises(GatewayUnavailable):
        gateway.create_payment(PaymentRequest("P1", 100, "CNY", "x", "https://us/cb"))
    bank.respond = {"respCode": "3005", "respMsg": "duplicate order"}
    with pytest.raises(GatewayError) as info:
        gateway.create_payment(PaymentRequest("P1", 100, "CNY", "x", "https://us/cb"))
    assert not isinstance(info.value, GatewayUnavailable)
    assert info.value.details["respCode"] == "3005"


def test_requests_signed_with_the_wrong_secret_are_unavailable(bank):
    wrong = OnlineBankGateway(mer_id=MER_ID, secret=b"wrong", transport=bank, base_url="https://bank.example",
                              previous_secrets=[SECRET], clock=lambda: NOW)
    with pytest.raises(GatewayUnavailable) as info:
        wrong.query_payment("P1")
    assert info.value.details["status"] == 401
    assert bank.requests == []


def test_an_answer_signed_by_someone_else_is_unavailable(gateway):
    impostor = FakeBank(secret=b"impostor")
    fooled = OnlineBankGateway(mer_id=MER_ID, secret=SECRET, transport=lambda *r: impostor.answer(
        {"respCode": "0000", "orderNo": "P1", "tranStat": "SUCCESS", "tranAmt": "1.00"}), base_url="https://b",
        clock=lambda: NOW)
    with pytest.raises(GatewayUnavailable):
        fooled.query_payment("P1")


def test_the_bank_pays_in_cny_only(gateway):
    with pytest.raises(GatewayError):
        gateway.create_payment(PaymentRequest("P1", 100, "USD", "x", "https://us/cb"))


# -- the statement ----------------------------------------------------------------------------

HEADER = "bankSerialNo|orderNo|tranType|tranAmt|feeAmt|tranTime|refundNo"
PAY_LINE = "B001|P1|PAY|1234.56|3.70|20241126103000|"
REFUND_LINE = "RF01|P1|REFUND|0.10|0.00|20241126113000|R1"


def statement(*lines: str, total: str = "TOTAL|2|1234.66") -> bytes:
    return "\r\n".join([HEADER, *lines, total, ""]).encode()


def test_a_statement_parses_into_bill_lines(gateway):
    assert gateway.parse_bill(statement(PAY_LINE, REFUND_LINE)) == [
        BillLine("B001", "P1", "payment", 123456, 370, datetime(2024, 11, 26, 10, 30, tzinfo=CST)),
        BillLine("RF01", "P1", "refund", 10, 0, datetime(2024, 11, 26, 11, 30, tzinfo=CST), "R1"),
    ]
    assert gateway.parse_bill(statement(total="TOTAL|0|0.00")) == []


@pytest.mark.parametrize(
    "total", ["TOTAL|2|1234.65", "TOTAL|3|1234.66", "TOTAL|1|1234.66", "TOTAL|2|1234.660", "TOTAL|2", "TOTAL|x|1.00"]
)
def test_a_statement_whose_totals_do_not_match_is_refused(gateway, total):
    with pytest.raises(GatewayError) as info:
        gateway.parse_bill(statement(PAY_LINE, REFUND_LINE, total=total))
    assert info.value.details["line"] == 4


def test_a_truncated_statement_is_refused(gateway):
    truncated = "\n".join([HEADER, PAY_LINE, REFUND_LINE]).encode()
    with pytest.raises(GatewayError, match="TOTAL"):
        gateway.parse_bill(truncated)


@pytest.mark.parametrize(
    "bad",
    [
        "B002|P2|PAY|1.005|0.00|20241126103000|",
        "B002|P2|PAY|1e3|0.00|20241126103000|",
        "B002|P2|PAY|1.00|0.00|2024112610|",
        "B002|P2|CHARGE|1.00|0.00|20241126103000|",
        "B002|P2|REFUND|1.00|0.00|20241126103000|",
        "B002|P2|PAY|1.00|0.00",
        "",
    ],
)
def test_a_bad_statement_line_is_refused_with_its_line_number(gateway, bad):
    with pytest.raises(GatewayError) as info:
        gateway.parse_bill(statement(PAY_LINE, bad, total="TOTAL|2|1235.56"))
    assert info.value.details["line"] == 3


def test_a_statement_with_another_header_is_refused(gateway):
    with pytest.raises(GatewayError):
        gateway.parse_bill(b"serial|order|amount\n" + PAY_LINE.encode() + b"\nTOTAL|1|1234.56\n")
