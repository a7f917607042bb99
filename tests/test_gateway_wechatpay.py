"""The WeChat Pay v3 adapter against FakeWeChatPay: real keys, real
signatures, real AES-GCM; nothing leaves the process."""
from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime, timedelta, timezone
from typing import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from payments.gateway import (
    CallbackRejected, CallbackRequest, GatewayUnavailable, HttpResponse, PaymentRequest, RefundRequest,
)
from payments.wechatpay import (
    BEIJING, SIGNATURE_TYPE, BillError, WeChatPayV3, request_message, sign_message, yuan_to_fen,
)
from tests.vendors.wechatpay import (
    FakeWeChatPay, generate_key, make_platform_identity, private_key_pem,
)

NOW = datetime(2024, 5, 1, 4, 0, 0, tzinfo=timezone.utc)


def clock() -> datetime:
    return NOW


@pytest.fixture(scope="module")
def merchant_key():
    return generate_key()


@pytest.fixture(scope="module")
def stranger_key():
    """Neither WeChat's nor ours: what a forger would sign with."""
    return generate_key()


@pytest.fixture(scope="module")
def platform_old():
    return make_platform_identity()


@pytest.fixture(scope="module")
def platform_new():
    return make_platform_identity()


@pytest.fixture(scope="module")
def dated_key():
    """The key of the certificates made with chosen validity periods (one
    key, many certificates: RSA generation is the slow part)."""
    return generate_key()


def dated(key, not_before: datetime = NOW - timedelta(days=365), not_after: datetime = NOW + timedelta(days=365)):
    return make_platform_identity(key, not_before=not_before, not_after=not_after)


@pytest.fixture
def fake(merchant_key, platform_old):
    return FakeWeChatPay(merchant_key=merchant_key, platforms=[platform_old], clock=clock)


@pytest.fixture
def gateway(fake) -> WeChatPayV3:
    return fake.gateway()


def rejection(gateway: WeChatPayV3, request: CallbackRequest) -> str:
    with pytest.raises(CallbackRejected) as caught:
        gateway.verify_callback(request)
    return caught.value.code


def resigned(fake: FakeWeChatPay, body: bytes) -> CallbackRequest:
    """A body WeChat really signed, whatever it contains."""
    return CallbackRequest(headers=fake.signed_headers(body), body=body, received_at=NOW)


# -- notifications ------------------------------------------------------------

def test_payment_notification_becomes_payment_succeeded(fake, gateway):
    event = gateway.verify_callback(fake.payment_notification("pay-1", 1234, transaction_id="4200000001"))
    assert (event.gateway, event.kind, event.transaction_id) == ("wechatpay", "payment_succeeded", "4200000001")
    assert (event.out_trade_no, event.amount_minor, event.currency) == ("pay-1", 1234, "CNY")
    assert event.occurred_at == NOW and event.occurred_at.utcoffset() == timedelta(hours=8)
    assert event.app_id == fake.appid and event.raw["trade_state"] == "SUCCESS"


@pytest.mark.parametrize("currency, expected", [("HKD", "HKD"), (None, "CNY")])
def test_payment_currency_defaults_to_cny(fake, gateway, currency, expected):
    resource = fake.payment_resource("pay-1", 100)
    resource["amount"]["currency"] = currency
    assert gateway.verify_callback(fake.notification("TRANSACTION.SUCCESS", resource)).currency == expected


@pytest.mark.parametrize("trade_state, kind", [
    ("CLOSED", "payment_closed"), ("REVOKED", "payment_closed"), ("PAYERROR", "payment_failed")])
def test_unpaid_trade_states(fake, gateway, trade_state, kind):
    event = gateway.verify_callback(fake.payment_notification("pay-2", 500, trade_state=trade_state))
    assert event.kind == kind and event.occurred_at is None


def test_refund_notification_carries_the_refund_id_and_amount(fake, gateway):
    request = fake.refund_notification("pay-1", "rf-1", 300, 1234, refund_id="50000001")
    event = gateway.verify_callback(request)
    assert (event.kind, event.transaction_id, event.out_refund_no) == ("refund_succeeded", "50000001", "rf-1")
    assert (event.out_trade_no, event.amount_minor, event.currency) == ("pay-1", 300, "CNY")
    assert event.occurred_at == NOW and event.app_id is None


@pytest.mark.parametrize("status", ["ABNORMAL", "CLOSED"])
def test_refund_failures(fake, gateway, status):
    event = gateway.verify_callback(fake.refund_notification("pay-1", "rf-2", 300, 1234, status=status))
    assert event.kind == "refund_failed" and event.amount_minor == 300


def test_headers_are_matched_in_any_case(fake, gateway):
    request = fake.payment_notification("pay-1", 1)
    lowered = CallbackRequest({k.lower(): v for k, v in request.headers.items()}, request.body, NOW)
    assert gateway.verify_callback(lowered).amount_minor == 1


def test_tampered_body_is_a_bad_signature(fake, gateway):
    request = fake.payment_notification("pay-1", 1234)
    body = request.body.replace(b'"summary": "notification"', b'"summary": "notificatioN"')
    assert body != request.body
    assert rejection(gateway, CallbackRequest(request.headers, body, NOW)) == "bad_signature"


def test_signed_by_another_key_is_a_bad_signature(fake, gateway, stranger_key):
    assert rejection(gateway, fake.payment_notification("pay-1", 1, sign_key=stranger_key)) == "bad_signature"


def test_garbage_signature_is_a_bad_signature(fake, gateway):
    request = fake.payment_notification("pay-1", 1)
    headers = {**request.headers, "Wechatpay-Signature": "not base64!"}
    assert rejection(gateway, CallbackRequest(headers, request.body, NOW)) == "bad_signature"


def test_unknown_serial(fake, platform_old, platform_new, merchant_key):
    both = FakeWeChatPay(merchant_key=merchant_key, platforms=[platform_old, platform_new],
                         apiv3_key=fake.apiv3_key, clock=clock)
    request = both.payment_notification("pay-1", 1, serial=platform_new.serial)
    assert rejection(fake.gateway(), request) == "unknown_certificate"


def test_certificate_rotation_accepts_both_serials(merchant_key, platform_old, platform_new):
    fake = FakeWeChatPay(merchant_key=merchant_key, platforms=[platform_old, platform_new], clock=clock)
    gateway = fake.gateway()
    for serial in (platform_old.serial, platform_new.serial):
        event = gateway.verify_callback(fake.payment_notification("pay-1", 7, serial=serial))
        assert event.amount_minor == 7
    # The serial must name the key that signed: old serial, new key -> rejected.
    crossed = fake.payment_notification("pay-1", 7, serial=platform_old.serial, sign_key=platform_new.private_key)
    assert rejection(gateway, crossed) == "bad_signature"


# -- platform certificate validity ----------------------------------------------

@pytest.mark.parametrize("not_before, not_after, code", [
    (NOW - timedelta(days=1), NOW + timedelta(days=1), None),         # valid
    (NOW - timedelta(days=1), NOW, None),                             # its last second
    (NOW, NOW + timedelta(days=1), None),                             # its first second
    (NOW - timedelta(days=2), NOW - timedelta(seconds=1), "certificate_expired"),
    (NOW + timedelta(seconds=1), NOW + timedelta(days=2), "certificate_not_yet_valid"),
])
def test_a_notification_is_trusted_only_within_its_certificate_validity(
        merchant_key, platform_old, dated_key, not_before, not_after, code):
    signer = dated(dated_key, not_before, not_after)
    fake = FakeWeChatPay(merchant_key=merchant_key, platforms=[platform_old, signer], clock=clock)
    request = fake.payment_notification("pay-1", 5, serial=signer.serial)  # really signed by its key
    if code is None:
        assert fake.gateway().verify_callback(request).amount_minor == 5
    else:
        with pytest.raises(CallbackRejected) as caught:
            fake.gateway().verify_callback(request)
        assert caught.value.code == code and caught.value.details["serial"] == signer.serial


def test_rotation_uses_the_valid_certificate_and_ignores_the_expired_one(merchant_key, dated_key):
    old = dated(dated_key, not_after=NOW - timedelta(hours=1))
    new = dated(dated_key)
    fake = FakeWeChatPay(merchant_key=merchant_key, platforms=[old, new], clock=clock)
    gateway = fake.gateway()  # one valid certificate is enough to start
    assert gateway.verify_callback(fake.payment_notification("pay-1", 7, serial=new.serial)).amount_minor == 7
    with pytest.raises(CallbackRejected) as caught:
        gateway.verify_callback(fake.payment_notification("pay-1", 7, serial=old.serial))
    assert caught.value.code == "certificate_expired"
    assert caught.value.details["not_after"] == (NOW - timedelta(hours=1)).isoformat()
    # Answers alike: signed under the new certificate, fine; under the old one, not trusted.
    fake.signing_serial = new.serial
    assert gateway.create_payment(order()).pay_url
    fake.signing_serial = old.serial
    with pytest.raises(GatewayUnavailable) as answer:
        gateway.query_payment("pay-9")
    assert answer.value.details["reason"] == "certificate_expired"
    assert answer.value.details["signature_verified"] is False


@pytest.mark.parametrize("not_before, not_after, reason", [
    (NOW - timedelta(days=30), NOW - timedelta(seconds=1), "certificate_expired"),
    (NOW + timedelta(seconds=1), NOW + timedelta(days=30), "certificate_not_yet_valid"),
])
def test_an_answer_signed_outside_the_certificate_validity_is_unavailable(
        merchant_key, platform_old, dated_key, not_before, not_after, reason):
    signer = dated(dated_key, not_before, not_after)
    fake = FakeWeChatPay(merchant_key=merchant_key, platforms=[platform_old, signer], clock=clock)
    fake.signing_serial = signer.serial
    with pytest.raises(GatewayUnavailable) as caught:
        fake.gateway().create_payment(order())
    assert caught.value.details["reason"] == reason and caught.value.details["status"] == 200
    assert not isinstance(caught.value, CallbackRejected)


def test_validity_is_judged_by_the_adapters_clock(merchant_key, dated_key):
    """The certificate ended in June 2024, long before today's wall clock:
    an adapter whose clock says May 2024 still trusts it, one whose clock
    says July does not even start."""
    june = dated(dated_key, not_after=datetime(2024, 6, 1, tzinfo=timezone.utc))
    fake = FakeWeChatPay(merchant_key=merchant_key, platforms=[june], clock=clock)
    assert fake.gateway().create_payment(order()).pay_url
    with pytest.raises(ValueError, match=june.serial):
        fake.gateway(clock=lambda: datetime(2024, 7, 1, tzinfo=timezone.utc))


def test_a_notification_is_judged_when_it_was_received(merchant_key, platform_old, dated_key):
    """The retry job verifies a stored notification again later, with its
    ``received_at``: a certificate that expired in between does not turn
    it into a rejection."""
    signer = dated(dated_key, not_after=NOW + timedelta(minutes=1))
    fake = FakeWeChatPay(merchant_key=merchant_key, platforms=[platform_old, signer], clock=clock)
    later = fake.gateway(clock=lambda: NOW + timedelta(days=1))
    stored = fake.payment_notification("pay-1", 3, serial=signer.serial)  # received at NOW
    assert later.verify_callback(stored).amount_minor == 3
    late = fake.payment_notification("pay-1", 3, serial=signer.serial, timestamp=int(NOW.timestamp()) + 120,
                                     received_at=NOW + timedelta(minutes=2))
    assert rejection(later, late) == "certificate_expired"


def test_only_expired_certificates_refuse_to_start(merchant_key, dated_key):
    first = dated(dated_key, not_after=NOW - timedelta(days=1))
    second = dated(dated_key, not_after=NOW - timedelta(seconds=1))
    fake = FakeWeChatPay(merchant_key=merchant_key, platforms=[first, second], clock=clock)
    with pytest.raises(ValueError) as caught:
        fake.gateway()
    message = str(caught.value)
    assert "expired" in message
    assert f"{first.serial} (notAfter {(NOW - timedelta(days=1)).isoformat()})" in message
    assert f"{second.serial} (notAfter {(NOW - timedelta(seconds=1)).isoformat()})" in message
    # A certificate that is not valid yet will be: that is not refused.
    upcoming = dated(dated_key, not_before=NOW + timedelta(days=1))
    assert fake.gateway(platform_certificates={upcoming.serial: upcoming.certificate_pem}) is not None


def test_certificates_expiring_lists_the_ones_to_renew(merchant_key, platform_old, dated_key):
    gone = dated(dated_key, not_after=NOW - timedelta(days=1))
    soon = dated(dated_key, not_after=NOW + timedelta(days=10))
    later = dated(dated_key, not_after=NOW + timedelta(days=40))
    fake = FakeWeChatPay(merchant_key=merchant_key, platforms=[later, soon, gone], clock=clock)
    gateway = fake.gateway()
    assert gateway.certificates_expiring(timedelta(days=30)) == [
        (gone.serial, NOW - timedelta(days=1)), (soon.serial, NOW + timedelta(days=10))]
    assert [serial for serial, _ in gateway.certificates_expiring(timedelta(days=40))] == [
        gone.serial, soon.serial, later.serial]
    assert gateway.certificates_expiring(timedelta(0)) == [(gone.serial, NOW - timedelta(days=1))]


@pytest.mark.parametrize("skew, accepted", [(-301, False), (-300, True), (0, True), (300, True), (301, False)])
def test_timestamp_tolerance_both_ways(fake, gateway, skew, accepted):
    request = fake.payment_notification("pay-1", 1, timestamp=int(NOW.timestamp()) + skew)
    if accepted:
        assert gateway.verify_callback(request).amount_minor == 1
    else:
        assert rejection(gateway, request) == "stale_timestamp"


def test_staleness_is_judged_at_reception(fake, gateway):
    late = fake.payment_notification("pay-1", 1, received_at=NOW + timedelta(minutes=6))
    assert rejection(gateway, late) == "stale_timestamp"


def test_signature_probe(fake, gateway):
    assert rejection(gateway, fake.probe_notification()) == "signature_probe"


@pytest.mark.parametrize("field", ["mchid", "appid"])
def test_notification_for_another_merchant(fake, gateway, field):
    resource = fake.payment_resource("pay-1", 1)
    resource[field] = "someone-else"
    assert rejection(gateway, fake.notification("TRANSACTION.SUCCESS", resource)) == "wrong_app"


def test_resource_sealed_with_another_apiv3_key(fake, gateway):
    request = fake.payment_notification("pay-1", 1, apiv3_key="0" * 32)
    assert rejection(gateway, request) == "bad_signature"


def test_corrupted_ciphertext(fake, gateway):
    envelope = json.loads(fake.payment_notification("pay-1", 1).body)
    sealed = bytearray(base64.b64decode(envelope["resource"]["ciphertext"]))
    sealed[0] ^= 1
    envelope["resource"]["ciphertext"] = base64.b64encode(bytes(sealed)).decode()
    assert rejection(gateway, resigned(fake, json.dumps(envelope).encode())) == "bad_signature"


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"resource": {"algorithm": "AEAD_AES_256_GCM"}}',
                                  b'{"resource": {"algorithm": "AEAD_AES_256_GCM", "nonce": "n",'
                                  b' "ciphertext": "%%%"}}'])
def test_malformed_envelopes(fake, gateway, body):
    assert rejection(gateway, resigned(fake, body)) == "malformed"


def test_missing_signature_headers_are_malformed(fake, gateway):
    request = fake.payment_notification("pay-1", 1)
    headers = {k: v for k, v in request.headers.items() if k != "Wechatpay-Nonce"}
    assert rejection(gateway, CallbackRequest(headers, request.body, NOW)) == "malformed"


@pytest.mark.parametrize("total", [12.5, "1250", None, -1, True])
def test_amount_that_is_not_fen_is_malformed(fake, gateway, total):
    resource = fake.payment_resource("pay-1", 1)
    resource["amount"]["total"] = total
    assert rejection(gateway, fake.notification("TRANSACTION.SUCCESS", resource)) == "malformed"


def test_unhandled_event_is_malformed(fake, gateway):
    resource = fake.payment_resource("pay-1", 1, trade_state="NOTPAY")
    assert rejection(gateway, fake.notification("TRANSACTION.SUCCESS", resource)) == "malformed"


def test_acknowledgements(gateway):
    ok = gateway.acknowledge(True)
    assert (ok.status, ok.body) == (204, b"")
    no = gateway.acknowledge(False, "签名错误")
    assert no.status == 400 and json.loads(no.body) == {"code": "FAIL", "message": "签名错误"}


# -- outgoing calls -------------------------------------------------------------

def order(out_trade_no: str = "pay-9", amount: int = 1999) -> PaymentRequest:
    return PaymentRequest(out_trade_no, amount, "CNY", "Two crates", "https://shop.example/notify",
                          expires_at=datetime(2024, 5, 1, 5, 0, tzinfo=timezone.utc))


def test_create_payment_round_trip(fake, gateway):
    created = gateway.create_payment(order())
    assert created.pay_url and created.pay_url.startswith("weixin://wxpay/bizpayurl?pr=")
    method, url, headers, body = fake.requests[-1]
    assert (method, url) == ("POST", "https://api.mch.weixin.qq.com/v3/pay/transactions/native")
    assert headers["Authorization"].startswith(f'WECHATPAY2-SHA256-RSA2048 mchid="{fake.mchid}",nonce_str="')
    assert f'serial_no="{fake.merchant_serial}"' in headers["Authorization"]
    sent = json.loads(body)
    assert sent["amount"] == {"total": 1999, "currency": "CNY"} and sent["appid"] == fake.appid
    assert sent["mchid"] == fake.mchid and not {"sp_mchid", "sp_appid", "sub_mchid", "sub_appid"} & set(sent)
    assert sent["time_expire"] == "2024-05-01T13:00:00+08:00"
    assert gateway.create_payment(order()).pay_url == created.pay_url  # idempotent at the vendor


def test_query_follows_the_payment(fake, gateway):
    gateway.create_payment(order())
    pending = gateway.query_payment("pay-9")
    assert (pending.state, pending.transaction_id, pending.amount_minor) == ("pending", None, 1999)
    assert fake.requests[-1][1].endswith("/v3/pay/transactions/out-trade-no/pay-9?mchid=1900000001")
    notification = fake.pay("pay-9")
    paid = gateway.query_payment("pay-9")
    assert paid.state == "succeeded" and paid.transaction_id == fake.orders["pay-9"]["transaction_id"]
    assert gateway.verify_callback(notification).transaction_id == paid.transaction_id


@pytest.mark.parametrize("trade_state, state", [
    ("USERPAYING", "pending"), ("CLOSED", "closed"), ("REVOKED", "closed"), ("PAYERROR", "failed"),
    ("REFUND", "succeeded"), ("SOMETHING_NEW", "unknown")])
def test_query_state_mapping(fake, gateway, trade_state, state):
    gateway.create_payment(order())
    fake.orders["pay-9"]["trade_state"] = trade_state
    assert gateway.query_payment("pay-9").state == state


def test_query_of_an_unknown_order_carries_the_vendor_code(gateway):
    with pytest.raises(GatewayUnavailable) as caught:
        gateway.query_payment("nope")
    assert caught.value.details["status"] == 404 and caught.value.details["vendor_code"] == "ORDER_NOT_EXIST"


def test_refund_round_trip(fake, gateway):
    gateway.create_payment(order())
    fake.pay("pay-9")
    request = RefundRequest("pay-9", "rf-9", 999, 1999, "CNY", "damaged", "https://shop.example/refunds")
    accepted = gateway.refund(request)
    assert accepted.state == "processing" and accepted.refund_id == fake.refunds["rf-9"]["refund_id"]
    assert json.loads(fake.requests[-1][3])["amount"] == {"refund": 999, "total": 1999, "currency": "CNY"}
    assert "sub_mchid" not in json.loads(fake.requests[-1][3])
    event = gateway.verify_callback(fake.finish_refund("rf-9"))
    assert (event.kind, event.transaction_id, event.amount_minor) == ("refund_succeeded", accepted.refund_id, 999)
    with pytest.raises(GatewayUnavailable) as caught:  # 999 + 1001 > 1999
        gateway.refund(RefundRequest("pay-9", "rf-10", 1001, 1999, "CNY", "", "https://shop.example/r"))
    assert caught.value.details["vendor_code"] == "NOT_ENOUGH"


def test_refund_answered_at_once(fake, gateway):
    gateway.create_payment(order())
    fake.pay("pay-9")
    fake.refund_status = "SUCCESS"
    accepted = gateway.refund(RefundRequest("pay-9", "rf-9", 1999, 1999, "CNY", "", "https://x/r"))
    assert accepted.state == "succeeded"


def test_wrong_merchant_key_is_refused_by_the_vendor(fake, stranger_key):
    gateway = fake.gateway(merchant_private_key=private_key_pem(stranger_key))
    with pytest.raises(GatewayUnavailable) as caught:
        gateway.create_payment(order())
    assert caught.value.details["status"] == 401 and caught.value.details["vendor_code"] == "SIGN_ERROR"
    assert caught.value.details["signature_verified"] is True
    assert fake.orders == {}


@pytest.mark.parametrize("fault", ["tampered", "unsigned"])
def test_answer_without_a_good_platform_signature(fake, gateway, fault):
    fake.answer_fault = fault
    with pytest.raises(GatewayUnavailable) as caught:
        gateway.create_payment(order())
    assert caught.value.details["signature_verified"] is False
    assert caught.value.details["reason"] == ("bad_signature" if fault == "tampered" else "malformed")


def test_answers_follow_certificate_rotation(merchant_key, platform_old, platform_new):
    fake = FakeWeChatPay(merchant_key=merchant_key, platforms=[platform_old, platform_new], clock=clock)
    fake.signing_serial = platform_new.serial
    assert fake.gateway().create_payment(order()).pay_url
    only_old = fake.gateway(platform_certificates={platform_old.serial: platform_old.certificate_pem})
    with pytest.raises(GatewayUnavailable) as caught:
        only_old.query_payment("pay-9")
    assert caught.value.details["reason"] == "unknown_certificate"


def test_unreachable_vendor(fake):
    def down(method, url, headers, body) -> HttpResponse:
        raise ConnectionRefusedError("connection refused")
    with pytest.raises(GatewayUnavailable):
        fake.gateway(transport=down).query_payment("pay-9")


@pytest.mark.parametrize("amount", [0, -1, 19.99, True])
def test_outgoing_amounts_must_be_positive_fen(gateway, fake, amount):
    with pytest.raises(ValueError):
        gateway.create_payment(order(amount=amount))
    assert fake.requests == []


def test_constructor_refuses_bad_configuration(fake, platform_old, platform_new):
    with pytest.raises(ValueError, match="32 bytes"):
        fake.gateway(apiv3_key="short")
    with pytest.raises(ValueError, match="has serial"):
        fake.gateway(platform_certificates={platform_new.serial: platform_old.certificate_pem})


# -- service-provider mode ---------------------------------------------------------

SUB_MCHID = "1900000109"           # the sub-merchant the service provider (fake.mchid) acts for
SUB_APPID = "wx8888888888888888"


class ServiceProviderDesk:
    """WeChat Pay's service-provider API in front of FakeWeChatPay, which
    keeps the sub-merchant's books. Each call is recorded as the adapter sent
    it and must be signed by the service provider; the sub-merchant fields
    must be there (``sub_mchid`` in the body or the query; ``sp_mchid``,
    ``sp_appid`` on the partner payment endpoints) or the test fails. They
    are then taken off and the call forwarded as the direct one the fake
    knows, signed again with the same merchant key."""

    def __init__(self, fake: FakeWeChatPay, sub_mchid: str = SUB_MCHID) -> None:
        self.fake, self.sub_mchid = fake, sub_mchid
        self.requests: list[tuple[str, str, Mapping[str, str], bytes]] = []

    def __call__(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        self.requests.append((method, url, headers, body))
        fake, parts = self.fake, urlsplit(url)
        assert fake._authorized(method, parts.path + (f"?{parts.query}" if parts.query else ""), headers, body)
        payload, query, path = (json.loads(body) if body else None), dict(parse_qsl(parts.query)), parts.path
        where = query if payload is None else payload
        assert where.pop("sub_mchid", None) == self.sub_mchid, f"no sub_mchid in {method} {url}"
        if path.startswith("/v3/pay/partner/"):
            path = path.replace("/partner", "", 1)
            assert where.pop("sp_mchid", None) == fake.mchid, f"no sp_mchid in {method} {url}"
            where["mchid"] = fake.mchid
            if payload is not None:
                assert payload.pop("sp_appid", None) == fake.appid and "appid" not in payload
                payload.pop("sub_appid", None)
                payload["appid"] = fake.appid
        direct = path + (f"?{urlencode(query)}" if query else "")
        direct_body = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode()
        stamp, nonce = str(int(fake.clock().timestamp())), secrets.token_hex(16)
        signature = sign_message(fake.merchant_key, request_message(method, direct, stamp, nonce, direct_body))
        authorization = (f'{SIGNATURE_TYPE} mchid="{fake.mchid}",nonce_str="{nonce}",signature="{signature}",'
                         f'timestamp="{stamp}",serial_no="{fake.merchant_serial}"')
        return fake(method, "https://api.mch.weixin.qq.com" + direct, {"Authorization": authorization}, direct_body)


def as_partner(resource: dict, sub_mchid: str = SUB_MCHID) -> dict:
    """A notification resource as WeChat Pay writes it to a service provider:
    ``sp_mchid``/``sp_appid`` and the sub-merchant, no ``mchid``/``appid``."""
    partner = {k: v for k, v in resource.items() if k not in ("mchid", "appid")}
    partner.update(sp_mchid=resource["mchid"], sub_mchid=sub_mchid)
    if "appid" in resource:
        partner["sp_appid"] = resource["appid"]
    return partner


@pytest.fixture
def desk(fake) -> ServiceProviderDesk:
    return ServiceProviderDesk(fake)


@pytest.fixture
def partner(fake, desk) -> WeChatPayV3:
    return fake.gateway(transport=desk, sub_mchid=SUB_MCHID)


def test_partner_payment_creation(fake, desk, partner):
    created = partner.create_payment(order())
    method, url, headers, body = desk.requests[-1]
    assert (method, url) == ("POST", "https://api.mch.weixin.qq.com/v3/pay/partner/transactions/native")
    # The service provider signs: its mchid in the Authorization.
    assert headers["Authorization"].startswith(f'WECHATPAY2-SHA256-RSA2048 mchid="{fake.mchid}",')
    sent = json.loads(body)
    assert (sent["sp_mchid"], sent["sp_appid"], sent["sub_mchid"]) == (fake.mchid, fake.appid, SUB_MCHID)
    assert not {"mchid", "appid", "sub_appid"} & set(sent)
    assert sent["amount"] == {"total": 1999, "currency": "CNY"} and sent["out_trade_no"] == "pay-9"
    assert created.pay_url == fake.orders["pay-9"]["code_url"]


def test_partner_payment_with_the_sub_merchants_app_and_profit_sharing(fake, desk):
    gateway = fake.gateway(transport=desk, sub_mchid=SUB_MCHID, sub_appid=SUB_APPID, profit_sharing=True)
    gateway.create_payment(order())
    sent = json.loads(desk.requests[-1][3])
    assert (sent["sub_mchid"], sent["sub_appid"]) == (SUB_MCHID, SUB_APPID)
    assert sent["settle_info"] == {"profit_sharing": True}


def test_partner_query_and_refund(fake, desk, partner):
    partner.create_payment(order())
    assert partner.query_payment("pay-9").state == "pending"
    assert desk.requests[-1][:2] == ("GET", "https://api.mch.weixin.qq.com/v3/pay/partner/transactions/out-trade-no/"
                                            f"pay-9?sp_mchid={fake.mchid}&sub_mchid={SUB_MCHID}")
    fake.pay("pay-9")
    assert partner.query_payment("pay-9").state == "succeeded"
    accepted = partner.refund(RefundRequest("pay-9", "rf-9", 999, 1999, "CNY", "damaged", "https://x/r"))
    method, url, _, body = desk.requests[-1]
    assert (method, url) == ("POST", "https://api.mch.weixin.qq.com/v3/refund/domestic/refunds")
    assert json.loads(body)["sub_mchid"] == SUB_MCHID
    assert accepted.refund_id == fake.refunds["rf-9"]["refund_id"]


def test_partner_notifications_name_the_service_provider_and_the_sub_merchant(fake, partner):
    paid = fake.notification("TRANSACTION.SUCCESS", as_partner(fake.payment_resource("pay-1", 1234)))
    event = partner.verify_callback(paid)
    assert (event.kind, event.amount_minor, event.app_id) == ("payment_succeeded", 1234, fake.appid)
    refunded = fake.notification("REFUND.SUCCESS", {
        "sp_mchid": fake.mchid, "sub_mchid": SUB_MCHID, "out_trade_no": "pay-1", "out_refund_no": "rf-1",
        "transaction_id": "4200000001", "refund_id": "50000001", "refund_status": "SUCCESS",
        "amount": {"total": 1234, "refund": 300, "payer_total": 1234, "payer_refund": 300}})
    assert partner.verify_callback(refunded).transaction_id == "50000001"


def test_partner_notification_for_another_sub_merchant_is_accepted_and_names_it(fake, partner):
    """The service provider collects for many sellers: a notification about
    another of its sub-merchants is ours; the event names the sub-merchant
    for the use case to check against the payment."""
    request = fake.notification("TRANSACTION.SUCCESS",
                                as_partner(fake.payment_resource("pay-1", 1), sub_mchid="1900000999"))
    assert partner.verify_callback(request).sub_merchant == "1900000999"
    own = fake.notification("TRANSACTION.SUCCESS", as_partner(fake.payment_resource("pay-2", 1)))
    assert partner.verify_callback(own).sub_merchant == SUB_MCHID


@pytest.mark.parametrize("resource", [
    pytest.param(lambda r: {**as_partner(r), "sub_mchid": ""}, id="no sub-merchant"),
    pytest.param(lambda r: {**as_partner(r), "sp_mchid": "1900000999"}, id="another service provider"),
    pytest.param(lambda r: {**as_partner(r), "sp_appid": "wx-someone-else"}, id="another app"),
    pytest.param(lambda r: r, id="direct-merchant resource"),
])
def test_partner_notification_for_someone_else(fake, partner, resource):
    request = fake.notification("TRANSACTION.SUCCESS", resource(fake.payment_resource("pay-1", 1)))
    assert rejection(partner, request) == "wrong_app"


def test_partner_notification_for_another_sub_app(fake, desk):
    gateway = fake.gateway(transport=desk, sub_mchid=SUB_MCHID, sub_appid=SUB_APPID)
    resource = {**as_partner(fake.payment_resource("pay-1", 1)), "sub_appid": SUB_APPID}
    assert gateway.verify_callback(fake.notification("TRANSACTION.SUCCESS", resource)).amount_minor == 1
    resource["sub_appid"] = "wx-someone-else"
    assert rejection(gateway, fake.notification("TRANSACTION.SUCCESS", resource)) == "wrong_app"


def test_direct_merchant_refuses_a_partner_notification(fake, gateway):
    request = fake.notification("TRANSACTION.SUCCESS", as_partner(fake.payment_resource("pay-1", 1)))
    assert rejection(gateway, request) == "wrong_app"


def test_sub_appid_needs_sub_mchid(fake):
    with pytest.raises(ValueError, match="sub_mchid"):
        fake.gateway(sub_appid=SUB_APPID)
    assert fake.gateway().sub_mchid is None


# -- the bill ------------------------------------------------------------------

HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
          "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
          "手续费,费率,订单金额,申请退款金额,费率备注")
PAYMENT = ("`2024-05-01 10:00:00,`wxd678efh567hg6787,`1900000001,`0,`,`4200001,`pay-1,`o1,`NATIVE,`SUCCESS,"
           "`OTHERS,`CNY,`99.50,`0.00,`0,`0,`0.00,`0.00,`,`,`Crates,`,`0.60000,`0.60%,`100.00,`0.00,`")
REFUND = ("`2024-05-01 11:30:00,`wxd678efh567hg6787,`1900000001,`0,`,`4200001,`pay-1,`o1,`NATIVE,`REFUND,"
          "`OTHERS,`CNY,`0.00,`0.00,`5000001,`rf-1,`25.00,`0.00,`ORIGINAL,`SUCCESS,`Crates,`,`-0.15000,`0.60%,"
          "`100.00,`25.00,`")
PENDING_REFUND = REFUND.replace("`5000001", "`5000002").replace("`rf-1", "`rf-2").replace("`SUCCESS,`Crates",
                                                                                           "`PROCESSING,`Crates")
SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"


def bill(*rows: str, count: int | None = None) -> bytes:
    tail = f"`{len(rows) if count is None else count},`99.50,`50.00,`0.00,`0.30000,`100.00,`50.00"
    return ("\ufeff" + "\r\n".join([HEADER, *rows, SUMMARY, tail]) + "\r\n").encode()


def test_bill_payments_and_refunds(gateway):
    lines = gateway.parse_bill(bill(PAYMENT, REFUND, PENDING_REFUND))
    assert len(lines) == 2  # the refund still processing moves no money yet
    payment, refund = lines
    assert (payment.kind, payment.transaction_id, payment.out_trade_no) == ("payment", "4200001", "pay-1")
    assert (payment.amount_minor, payment.fee_minor) == (10000, 60)
    assert payment.occurred_at == datetime(2024, 5, 1, 2, 0, tzinfo=timezone.utc)
    assert (refund.kind, refund.transaction_id, refund.out_refund_no) == ("refund", "5000001", "rf-1")
    assert (refund.amount_minor, refund.fee_minor, refund.out_trade_no) == (2500, -15, "pay-1")
    assert all(type(x) is int for line in lines for x in (line.amount_minor, line.fee_minor))


def test_empty_bill(gateway):
    assert gateway.parse_bill(bill()) == []


@pytest.mark.parametrize("data, why", [
    (bill(PAYMENT, count=2), "summary counts 2"),
    (bill(PAYMENT.replace("`0.60000", "`0.59700")), "whole number of fen"),
    (bill(PAYMENT.replace("`100.00,`0.00,`", "`100.001,`0.00,`")), "at most 2 decimals"),
    (bill(PAYMENT.replace("`Crates", "`Crates,`extra")), "fields"),
    (bill(PAYMENT)[: -len("\r\n`1,`99.50,`50.00,`0.00,`0.30000,`100.00,`50.00\r\n")], "no summary"),
])
def test_bill_refuses_what_it_cannot_read_exactly(gateway, data, why):
    with pytest.raises(BillError, match=why):
        gateway.parse_bill(data)


def test_fake_bill_round_trip(fake, gateway):
    gateway.create_payment(order("pay-a", 1999))
    fake.pay("pay-a")
    gateway.refund(RefundRequest("pay-a", "rf-a", 500, 1999, "CNY", "", "https://x/r"))
    fake.finish_refund("rf-a")
    lines = gateway.parse_bill(fake.trade_bill())
    assert [(x.kind, x.amount_minor, x.fee_minor) for x in lines] == [("payment", 1999, 12), ("refund", 500, -3)]
    assert lines[0].occurred_at == NOW.astimezone(BEIJING)


@pytest.mark.parametrize("text, places, fen", [
    ("0.01", 2, 1), ("12.34", 2, 1234), ("100", 2, 10000), ("-0.15", 2, -15), ("0.1", 2, 10),
    ("0.60000", 5, 60), ("99999999.99", 2, 9999999999), ("0.07", 2, 7)])
def test_yuan_to_fen_is_exact(text, places, fen):
    result = yuan_to_fen(text, max_places=places)
    assert result == fen and type(result) is int


@pytest.mark.parametrize("text, places", [
    ("0.001", 2), ("1.234", 2), ("0.05940", 5), ("1e3", 2), ("", 2), (" 1.00", 2), ("1.", 2), ("NaN", 2),
    ("0.000001", 5)])
def test_yuan_to_fen_refuses_fractional_fen_and_junk(text, places):
    with pytest.raises(ValueError):
        yuan_to_fen(text, max_places=places)
