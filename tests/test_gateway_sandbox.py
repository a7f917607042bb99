"""The sandbox gateway adapter against the simulated provider, in-process:
every request and answer really signed and verified (no database)."""
from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest

from payments import signing
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
from payments.sandbox import SIGNATURE_HEADER, SandboxGateway
from payments.sandbox_vendor import SandboxError, SandboxVendor

SECRET = b"sandbox-shared-secret"
APP = "app_demo"
START = datetime(2024, 11, 26, 9, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def vendor(clock) -> SandboxVendor:
    return SandboxVendor(app_id=APP, secret=SECRET, fee_bps=60, clock=clock)


@pytest.fixture
def gateway(vendor, clock) -> SandboxGateway:
    return SandboxGateway(app_id=APP, secret=SECRET, transport=vendor, clock=clock)


def payment(no: str = "P1", amount: int = 10_000) -> PaymentRequest:
    return PaymentRequest(no, amount, "CNY", "demo order", "https://shop.example/callbacks/sandbox")


def refund(no: str = "R1", amount: int = 1_000, trade: str = "P1", total: int = 10_000) -> RefundRequest:
    return RefundRequest(trade, no, amount, total, "CNY", "returned", "https://shop.example/callbacks/sandbox")


def received(message, clock: Clock) -> CallbackRequest:
    headers, body = message
    return CallbackRequest(headers, body, clock())


# -- API round trips --------------------------------------------------------------


def test_create_then_query_a_payment(gateway, vendor):
    created = gateway.create_payment(payment("P1", 12_345))
    assert created.out_trade_no == "P1"
    assert created.pay_url == "/sandbox/checkout/P1"
    assert created.prepay_id == vendor.get_payment("P1").id

    status = gateway.query_payment("P1")
    assert (status.state, status.amount_minor, status.transaction_id) == ("pending", 12_345, created.prepay_id)

    vendor.pay("P1")
    assert gateway.query_payment("P1").state == "succeeded"


@pytest.mark.parametrize("action, state", [("fail", "failed"), ("close", "closed")])
def test_query_follows_unpaid_endings(gateway, vendor, action, state):
    gateway.create_payment(payment())
    getattr(vendor, action)("P1")
    assert gateway.query_payment("P1").state == state


def test_an_unknown_payment_queries_as_unknown(gateway):
    status = gateway.query_payment("never/created")   # quoted into the path
    assert (status.state, status.transaction_id, status.amount_minor) == ("unknown", None, None)


def test_creating_again_is_a_retry_but_another_amount_conflicts(gateway):
    first = gateway.create_payment(payment("P1", 500))
    assert gateway.create_payment(payment("P1", 500)).prepay_id == first.prepay_id
    with pytest.raises(GatewayError) as info:
        gateway.create_payment(payment("P1", 501))
    assert not isinstance(info.value, GatewayUnavailable)
    assert info.value.details["error"] == "conflict"


def test_refund_round_trip(gateway, vendor, clock):
    gateway.create_payment(payment())
    vendor.pay("P1")
    accepted = gateway.refund(refund("R1", 2_500))
    assert (accepted.out_refund_no, accepted.state) == ("R1", "processing")
    assert accepted.refund_id == vendor.get_refund("R1").id
    assert gateway.refund(refund("R1", 2_500)).refund_id == accepted.refund_id   # retry, same refund

    event = gateway.verify_callback(received(vendor.refund_notice("R1"), clock))
    assert (event.kind, event.transaction_id, event.amount_minor) == ("refund_succeeded", accepted.refund_id, 2_500)


def test_the_vendor_refuses_refunds_beyond_what_was_paid(gateway, vendor, clock):
    gateway.create_payment(payment("P1", 10_000))
    vendor.pay("P1")
    assert gateway.refund(refund("R1", 6_000)).state == "processing"
    refused = gateway.refund(refund("R2", 4_001))   # 6000 still processing counts
    assert (refused.state, refused.refund_id, refused.raw["error"]) == ("failed", None, "exceeds_paid")
    assert gateway.refund(refund("R3", 4_000)).state == "processing"

    vendor.refund_notice("R1", succeeded=False)     # a failed refund frees its amount
    assert gateway.refund(refund("R4", 6_000)).state == "processing"
    assert gateway.refund(refund("R5", 1)).raw["error"] == "exceeds_paid"


def test_no_refund_before_the_payment_is_paid(gateway):
    gateway.create_payment(payment())
    refused = gateway.refund(refund())
    assert (refused.state, refused.raw["error"]) == ("failed", "not_paid")


def test_a_refund_total_that_is_not_the_payment_is_our_error(gateway, vendor):
    gateway.create_payment(payment("P1", 10_000))
    vendor.pay("P1")
    with pytest.raises(GatewayError) as info:
        gateway.refund(refund(total=9_999))
    assert not isinstance(info.value, GatewayUnavailable)


def test_concurrent_refunds_never_exceed_what_was_paid(gateway, vendor):
    gateway.create_payment(payment("P1", 1_000))
    vendor.pay("P1")
    results, errors = [], []

    def attempt(i: int) -> None:
        try:
            results.append(gateway.refund(refund(f"R{i}", 300, total=1_000)).state)
        except Exception as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == ["failed"] * 9 + ["processing"] * 3


# -- signatures on the API --------------------------------------------------------


def test_a_request_signed_with_the_wrong_secret_is_unavailable(vendor, clock):
    wrong = SandboxGateway(app_id=APP, secret=b"not-the-secret", transport=vendor, clock=clock)
    with pytest.raises(GatewayUnavailable) as info:
        wrong.create_payment(payment())
    assert info.value.details["status"] == 401
    with pytest.raises(SandboxError):
        vendor.get_payment("P1")   # nothing was created


def test_the_vendor_answers_401_to_a_bad_signature_and_signs_its_answer(vendor, clock):
    body = json.dumps({"out_trade_no": "P1"}).encode()
    forged = {SIGNATURE_HEADER: signing.sign(b"forger", int(clock().timestamp()), body)}
    answer = vendor("POST", "http://sandbox.invalid/payments", forged, body)
    assert answer.status == 401
    assert json.loads(answer.body)["error"] == "bad_signature"
    signing.verify(answer.headers[SIGNATURE_HEADER], answer.body, [SECRET], clock())


def test_a_signature_for_another_path_is_refused(vendor, clock):
    # Signed as GET /payments/A, sent as GET /payments/B.
    stamp = int(clock().timestamp())
    headers = {SIGNATURE_HEADER: signing.sign(SECRET, stamp, signing.request_payload("GET", "/payments/A", b""))}
    assert vendor("GET", "http://sandbox.invalid/payments/B", headers, b"").status == 401
    assert vendor("GET", "http://sandbox.invalid/payments/A", headers, b"").status == 404


def test_a_tampered_answer_is_unavailable(vendor, clock):
    def tampering(method, url, headers, body):
        answer = vendor(method, url, headers, body)
        return replace(answer, body=answer.body.replace(b"created", b"succeeded"))

    gateway = SandboxGateway(app_id=APP, secret=SECRET, transport=vendor, clock=clock)
    gateway.create_payment(payment())
    tampered = SandboxGateway(app_id=APP, secret=SECRET, transport=tampering, clock=clock)
    with pytest.raises(GatewayUnavailable) as info:
        tampered.query_payment("P1")
    assert info.value.details["reason"] == "bad_signature"


def test_an_answer_about_another_payment_is_unavailable(gateway, vendor, clock):
    gateway.create_payment(payment("P1"))
    gateway.create_payment(payment("P2"))
    # A genuine, signed answer about P2, replayed to a query about P1.
    stamp = int(clock().timestamp())
    headers = {SIGNATURE_HEADER: signing.sign(SECRET, stamp, signing.request_payload("GET", "/payments/P2", b""))}
    about_p2 = vendor("GET", "http://sandbox.invalid/payments/P2", headers, b"")
    assert about_p2.status == 200
    fooled = SandboxGateway(app_id=APP, secret=SECRET, transport=lambda *request: about_p2, clock=clock)
    with pytest.raises(GatewayUnavailable, match="another out_trade_no"):
        fooled.query_payment("P1")


def test_an_answer_older_than_the_tolerance_is_unavailable(vendor, clock):
    late = Clock(clock() + timedelta(minutes=6))   # our clock runs 6 minutes ahead of the vendor's
    gateway = SandboxGateway(app_id=APP, secret=SECRET, transport=vendor, clock=late)
    with pytest.raises(GatewayUnavailable):
        gateway.create_payment(payment())


def test_a_transport_failure_is_unavailable(clock):
    def down(*args):
        raise ConnectionRefusedError("no route")

    gateway = SandboxGateway(app_id=APP, secret=SECRET, transport=down, clock=clock)
    with pytest.raises(GatewayUnavailable):
        gateway.query_payment("P1")


def test_an_unsigned_server_error_is_unavailable(clock):
    gateway = SandboxGateway(
        app_id=APP, secret=SECRET, transport=lambda *a: HttpResponse(502, {}, b"Bad Gateway"), clock=clock
    )
    with pytest.raises(GatewayUnavailable):
        gateway.create_payment(payment())


def test_a_rotated_secret_still_verifies_answers_and_callbacks(clock):
    old_vendor = SandboxVendor(app_id=APP, secret=b"old", clock=clock)
    gateway = SandboxGateway(
        app_id=APP, secret=b"new", previous_secrets=[b"old"], transport=old_vendor, clock=clock
    )
    # Our requests are signed with the new secret, which the old vendor refuses...
    with pytest.raises(GatewayUnavailable) as info:
        gateway.create_payment(payment())
    assert info.value.details["status"] == 401   # ...but its signed 401 verified
    SandboxGateway(app_id=APP, secret=b"old", transport=old_vendor, clock=clock).create_payment(payment())
    event = gateway.verify_callback(received(old_vendor.pay("P1"), clock))
    assert event.kind == "payment_succeeded"


# -- callbacks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "action, event_type, kind",
    [
        ("pay", "payment.succeeded", "payment_succeeded"),
        ("fail", "payment.failed", "payment_failed"),
        ("close", "payment.closed", "payment_closed"),
    ],
)
def test_payment_callbacks_parse_into_events(gateway, vendor, clock, action, event_type, kind):
    created = gateway.create_payment(payment("P1", 4_200))
    clock.advance(seconds=30)
    message = getattr(vendor, action)("P1")
    event = gateway.verify_callback(received(message, clock))
    assert event.gateway == "sandbox"
    assert event.kind == kind
    assert event.transaction_id == created.prepay_id
    assert (event.out_trade_no, event.amount_minor, event.currency) == ("P1", 4_200, "CNY")
    assert event.out_refund_no is None
    assert event.occurred_at == clock()
    assert event.app_id == APP
    assert event.raw["type"] == event_type


@pytest.mark.parametrize("succeeded, kind", [(True, "refund_succeeded"), (False, "refund_failed")])
def test_refund_callbacks_parse_into_events(gateway, vendor, clock, succeeded, kind):
    gateway.create_payment(payment("P1", 10_000))
    vendor.pay("P1")
    accepted = gateway.refund(refund("R9", 1_234))
    event = gateway.verify_callback(received(vendor.refund_notice("R9", succeeded=succeeded), clock))
    assert event.kind == kind
    assert (event.transaction_id, event.out_trade_no, event.out_refund_no) == (accepted.refund_id, "P1", "R9")
    assert event.amount_minor == 1_234


def test_a_callback_for_another_app_is_refused(gateway, clock):
    stranger = SandboxVendor(app_id="app_other", secret=SECRET, clock=clock)
    SandboxGateway(app_id="app_other", secret=SECRET, transport=stranger, clock=clock).create_payment(payment())
    with pytest.raises(CallbackRejected) as info:
        gateway.verify_callback(received(stranger.pay("P1"), clock))
    assert info.value.code == "wrong_app"


def test_a_tampered_callback_is_a_bad_signature(gateway, vendor, clock):
    gateway.create_payment(payment("P1", 100))
    headers, body = vendor.pay("P1")
    with pytest.raises(CallbackRejected) as info:
        gateway.verify_callback(CallbackRequest(headers, body.replace(b":100,", b":999,"), clock()))
    assert info.value.code == "bad_signature"


def test_a_callback_received_too_late_is_stale_and_a_redelivery_is_fresh(gateway, vendor, clock):
    gateway.create_payment(payment())
    message = vendor.pay("P1")
    clock.advance(minutes=10)
    with pytest.raises(CallbackRejected) as info:
        gateway.verify_callback(received(message, clock))
    assert info.value.code == "stale_timestamp"

    again = gateway.verify_callback(received(vendor.redeliver(json.loads(message[1])["id"]), clock))
    assert again.kind == "payment_succeeded"
    assert again.raw["id"] == json.loads(message[1])["id"]     # same event, signed anew


def test_header_names_are_case_insensitive(gateway, vendor, clock):
    gateway.create_payment(payment())
    headers, body = vendor.pay("P1")
    lowered = {k.lower(): v for k, v in headers.items()}
    assert gateway.verify_callback(CallbackRequest(lowered, body, clock())).kind == "payment_succeeded"


def signed(payload, clock: Clock) -> CallbackRequest:
    body = json.dumps(payload).encode()
    return CallbackRequest({SIGNATURE_HEADER: signing.sign(SECRET, int(clock().timestamp()), body)}, body, clock())


GOOD = {
    "id": "evt_1",
    "type": "payment.succeeded",
    "app_id": APP,
    "data": {
        "transaction_id": "sbx_pay_1",
        "out_trade_no": "P1",
        "amount_minor": 100,
        "currency": "CNY",
        "occurred_at": "2024-11-26T09:00:00+00:00",
    },
}


@pytest.mark.parametrize(
    "change",
    [
        {"type": "payment.refunded"},
        {"type": ["payment.succeeded"]},
        {"data": None},
        {"data": {**GOOD["data"], "amount_minor": 1.0}},
        {"data": {**GOOD["data"], "amount_minor": "100"}},
        {"data": {**GOOD["data"], "amount_minor": True}},
        {"data": {**GOOD["data"], "amount_minor": -1}},
        {"data": {**GOOD["data"], "transaction_id": ""}},
        {"data": {**GOOD["data"], "occurred_at": "2024-11-26T09:00:00"}},
        {"data": {**GOOD["data"], "occurred_at": "yesterday"}},
        {"type": "refund.succeeded"},   # a refund without out_refund_no
    ],
)
def test_signed_but_malformed_callbacks_are_refused(gateway, clock, change):
    assert gateway.verify_callback(signed(GOOD, clock)).amount_minor == 100
    with pytest.raises(CallbackRejected) as info:
        gateway.verify_callback(signed({**GOOD, **change}, clock))
    assert info.value.code == "malformed"


def test_a_body_that_is_not_json_is_malformed(gateway, clock):
    body = b"not json"
    request = CallbackRequest({SIGNATURE_HEADER: signing.sign(SECRET, int(clock().timestamp()), body)}, body, clock())
    with pytest.raises(CallbackRejected) as info:
        gateway.verify_callback(request)
    assert info.value.code == "malformed"


def test_acknowledgements(gateway):
    ok = gateway.acknowledge(True)
    assert (ok.status, json.loads(ok.body), ok.content_type) == (200, {"received": True}, "application/json")
    no = gateway.acknowledge(False, "bad signature")
    assert (no.status, json.loads(no.body)) == (400, {"error": "bad signature"})


def test_the_vendor_refuses_to_pay_twice(gateway, vendor):
    gateway.create_payment(payment())
    vendor.pay("P1")
    with pytest.raises(SandboxError):
        vendor.pay("P1")
    with pytest.raises(SandboxError):
        vendor.close("P1")


# -- the daily bill -------------------------------------------------------------------


def test_bill_round_trip_with_fees_rounded_down(gateway, vendor, clock):
    for no, amount in [("P1", 10_000), ("P2", 999), ("P3", 12_345)]:
        gateway.create_payment(payment(no, amount))
    vendor.pay("P1")
    clock.advance(minutes=5)
    vendor.pay("P2")
    vendor.fail("P3")                     # never on the bill
    gateway.refund(refund("R1", 2_000, "P1", 10_000))
    clock.advance(minutes=5)
    vendor.refund_notice("R1")
    p1, p2, r1 = vendor.get_payment("P1"), vendor.get_payment("P2"), vendor.get_refund("R1")

    clock.advance(days=1)                 # the next day's activity stays off this bill
    gateway.create_payment(payment("P4", 700))
    vendor.pay("P4")

    lines = gateway.parse_bill(vendor.bill(date(2024, 11, 26)))
    assert lines == [
        BillLine(p1.id, "P1", "payment", 10_000, 60, START),
        BillLine(p2.id, "P2", "payment", 999, 5, START + timedelta(minutes=5)),   # 5.994 -> 5
        BillLine(r1.id, "P1", "refund", 2_000, 0, START + timedelta(minutes=10), "R1"),
    ]
    assert all(type(line.amount_minor) is int and type(line.fee_minor) is int for line in lines)
    assert [line.out_trade_no for line in gateway.parse_bill(vendor.bill(date(2024, 11, 27)))] == ["P4"]


def test_fee_basis_points_are_configurable(clock):
    vendor = SandboxVendor(app_id=APP, secret=SECRET, fee_bps=250, clock=clock)
    gateway = SandboxGateway(app_id=APP, secret=SECRET, transport=vendor, clock=clock)
    gateway.create_payment(payment("P1", 1_999))
    vendor.pay("P1")
    (line,) = gateway.parse_bill(vendor.bill(START.date()))
    assert line.fee_minor == 49            # 1999 * 2.5% = 49.975 -> 49


HEADER = "transaction_id,out_trade_no,kind,amount_minor,fee_minor,occurred_at,out_refund_no\n"
ROW = "t1,P1,payment,100,1,2024-11-26T09:00:00+00:00,\n"


@pytest.mark.parametrize(
    "bad_row",
    [
        "t2,P2,payment,1.5,0,2024-11-26T09:00:00+00:00,\n",
        "t2,P2,payment, 15,0,2024-11-26T09:00:00+00:00,\n",
        "t2,P2,payment,1_5,0,2024-11-26T09:00:00+00:00,\n",
        "t2,P2,payment,-15,0,2024-11-26T09:00:00+00:00,\n",
        "t2,P2,payment,15,x,2024-11-26T09:00:00+00:00,\n",
        "t2,P2,capture,15,0,2024-11-26T09:00:00+00:00,\n",
        "t2,P2,refund,15,0,2024-11-26T09:00:00+00:00,\n",
        "t2,P2,payment,15,0,2024-11-26T09:00:00,\n",
        "t2,P2,payment,15,0\n",
        ',P2,payment,15,0,2024-11-26T09:00:00+00:00,\n',
        't2,"P2,payment,15,0,2024-11-26T09:00:00+00:00,\n',
    ],
)
def test_a_bad_bill_row_is_refused_with_its_line_number(gateway, bad_row):
    assert len(gateway.parse_bill((HEADER + ROW + ROW).encode())) == 2
    with pytest.raises(GatewayError) as info:
        gateway.parse_bill((HEADER + ROW + bad_row + ROW).encode())
    assert info.value.details["line"] == 3
    assert "line 3" in str(info.value)


def test_a_bill_with_another_header_is_refused(gateway):
    with pytest.raises(GatewayError):
        gateway.parse_bill(("id,amount\n" + ROW).encode())


def test_a_refund_line_may_hand_a_fee_back(gateway):
    (line,) = gateway.parse_bill((HEADER + "r1,P1,refund,100,-1,2024-11-26T09:00:00+08:00,R1\n").encode())
    assert (line.kind, line.fee_minor, line.out_refund_no) == ("refund", -1, "R1")
    assert line.occurred_at == datetime(2024, 11, 26, 1, 0, tzinfo=timezone.utc)
