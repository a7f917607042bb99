"""Gateways configured from the environment (issue 5): WeChat Pay, Alipay and
the online bank are enabled by their ``CL_*`` variables, their keys read and
parsed at start-up (a partial set or a key that does not parse stops the
process, naming the variable), and they speak real HTTP through
``payments.http_transport``, tested here against a local ``http.server`` on
127.0.0.1 (a real socket; nothing leaves the machine).

Keys and certificates are generated here with ``cryptography`` and written
to temporary files, as an operator would mount them."""
from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Mapping
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from payments import signing
from payments.alipay import Alipay
from payments.bank import SIGNATURE_HEADER as BANK_SIGNATURE, OnlineBankGateway
from payments.gateway import (
    CallbackRejected,
    CallbackRequest,
    GatewayUnavailable,
    HttpResponse,
    PaymentRequest,
)
from payments.http_transport import HttpTransport, TransportError
from payments.wechatpay import WeChatPayV3
from service.gateways import build_gateways
from service.settings import SettingsError, load_settings
from tests.test_gateway_wechatpay import SUB_APPID, SUB_MCHID, ServiceProviderDesk
from tests.vendors.alipay import GATEWAY_URL as ALIPAY_URL
from tests.vendors.alipay import FakeAlipay, new_key, public_pem
from tests.vendors.wechatpay import FakeWeChatPay, generate_key, make_platform_identity

BANK_SECRET = "bank-secret-0123456789abcdef"
BANK_MER_ID = "104110048991234"
NOTIFY = "https://ledger.example/callbacks/x"


# -- a local HTTP server: the "gateway" at the other end of a real socket -----------------------

Route = Callable[[str, str, Mapping[str, str], bytes], HttpResponse]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, dict(self.headers.items()), body))
        answer = self.server.route(self.command, self.path, dict(self.headers.items()), body, self)
        if answer is None:  # the route wrote (or withheld) its own answer
            return
        try:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout test): fine

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@contextlib.contextmanager
def local_server(route):
    """Serve ``route(method, path, headers, body, handler)`` on 127.0.0.1:<free port>."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.route, server.seen = route, []
    server.release = threading.Event()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()  # let a deliberately slow handler finish
        server.shutdown()
        server.server_close()


def forwarding_to(vendor: Route, as_url: str | None = None):
    """A route that hands each request to an in-process fake vendor (which
    checks our signatures and signs its answers like the real one), under
    the URL the vendor expects."""
    def route(method, path, headers, body, handler):
        url = as_url or f"http://127.0.0.1:{handler.server.server_address[1]}{path}"
        if path.startswith("/slow"):
            handler.server.release.wait(5)
        return vendor(method, url, headers, body)
    return route


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RealTimeBank:
    """The bank's B2B API as ``payments.bank`` speaks it, checking our
    signature and signing its answers with the shared secret, on the real
    clock (so it can sit behind a real socket and the app)."""

    def __init__(self, secret: bytes = BANK_SECRET.encode(), mer_id: str = BANK_MER_ID) -> None:
        self.secret, self.mer_id = secret, mer_id
        self.requests: list[dict] = []

    def __call__(self, method, url, headers, body) -> HttpResponse:
        signature = next((v for k, v in headers.items() if k.lower() == BANK_SIGNATURE.lower()), None)
        try:
            signing.verify(signature, signing.request_payload(method, urlsplit(url).path, body),
                           [self.secret], datetime.now(timezone.utc))
        except CallbackRejected:
            return self.answer({"respCode": "9001", "respMsg": "bad signature"}, status=401)
        req = json.loads(body)
        self.requests.append(req)
        if urlsplit(url).path.endswith("/b2b/pay"):
            return self.answer({"respCode": "0000", "merId": req["merId"], "orderNo": req["orderNo"],
                                "payUrl": f"https://bank.example/b2b/{req['orderNo']}"})
        if urlsplit(url).path.endswith("/b2b/refund"):
            return self.answer({"respCode": "0000", "refundNo": req["refundNo"],
                                "refundStat": "PROCESSING", "bankSerialNo": "RF" + req["refundNo"]})
        return self.answer({"respCode": "9999"}, status=404)

    def answer(self, payload: dict, status: int = 200) -> HttpResponse:
        body = json.dumps(payload).encode()
        stamp = int(datetime.now(timezone.utc).timestamp())
        return HttpResponse(status, {"Content-Type": "application/json",
                                     BANK_SIGNATURE: signing.sign(self.secret, stamp, body)}, body)

    def notice(self, fields: dict[str, str], secret: bytes | None = None) -> CallbackRequest:
        """A callback as the bank posts it: form fields, signed now."""
        from urllib.parse import urlencode

        body = urlencode(fields).encode()
        stamp = int(datetime.now(timezone.utc).timestamp())
        return CallbackRequest(
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     BANK_SIGNATURE: signing.sign(secret or self.secret, stamp, body)},
            body=body, received_at=datetime.now(timezone.utc))


# -- keys and certificates, generated once per module and written to files ----------------------

def pem_private(key, fmt=serialization.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    merchant, old_platform, platform = generate_key(), make_platform_identity(), \
        make_platform_identity()
    wechat = FakeWeChatPay(merchant_key=merchant, platforms=[old_platform, platform])
    (d / "apiclient_key.pem").write_bytes(pem_private(merchant))
    (d / "platform_old.pem").write_bytes(old_platform.certificate_pem)
    (d / "platform.pem").write_bytes(platform.certificate_pem)
    (d / "platforms.pem").write_bytes(old_platform.certificate_pem + platform.certificate_pem)

    app_key = new_key()
    alipay = FakeAlipay(public_pem(app_key))
    # The app key as PKCS#1 PEM, Alipay's public key as the bare base64 its console shows.
    (d / "alipay_app_key.pem").write_bytes(
        pem_private(app_key, serialization.PrivateFormat.TraditionalOpenSSL))
    der = serialization.load_pem_public_key(alipay.alipay_public_key_pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    (d / "alipay_public_key.txt").write_bytes(base64.b64encode(der) + b"\n")

    # Keys that must be refused.
    (d / "garbage.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    (d / "encrypted.pem").write_bytes(merchant.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    (d / "ec.pem").write_bytes(pem_private(ec.generate_private_key(ec.SECP256R1())))
    (d / "small.pem").write_bytes(pem_private(rsa.generate_private_key(65537, 1024)))
    (d / "empty.pem").write_bytes(b"")
    return {"dir": d, "wechat": wechat, "platform": platform, "old_platform": old_platform,
            "alipay": alipay}


def wechat_env(m, **overrides) -> dict[str, str]:
    w, d = m["wechat"], m["dir"]
    env = {"CL_SANDBOX_SECRET": "off",
           "CL_WECHATPAY_MCHID": w.mchid, "CL_WECHATPAY_APPID": w.appid,
           "CL_WECHATPAY_MERCHANT_SERIAL": w.merchant_serial.lower(),
           "CL_WECHATPAY_MERCHANT_KEY_FILE": str(d / "apiclient_key.pem"),
           "CL_WECHATPAY_APIV3_KEY": w.apiv3_key,
           "CL_WECHATPAY_PLATFORM_CERT_FILES": f"{d / 'platform_old.pem'}, {d / 'platform.pem'}"}
    env.update(overrides)
    return env


def alipay_env(m, **overrides) -> dict[str, str]:
    a, d = m["alipay"], m["dir"]
    env = {"CL_SANDBOX_SECRET": "off", "CL_ALIPAY_APP_ID": a.app_id,
           "CL_ALIPAY_APP_PRIVATE_KEY_FILE": str(d / "alipay_app_key.pem"),
           "CL_ALIPAY_PUBLIC_KEY_FILE": str(d / "alipay_public_key.txt"),
           "CL_ALIPAY_SELLER_ID": a.seller_id}
    env.update(overrides)
    return env


def bank_env(**overrides) -> dict[str, str]:
    env = {"CL_SANDBOX_SECRET": "off", "CL_BANK_MER_ID": BANK_MER_ID, "CL_BANK_SECRET": BANK_SECRET,
           "CL_BANK_BASE_URL": "https://bank.example/gateway"}
    env.update(overrides)
    return env


def payment(out_trade_no: str, amount: int = 600) -> PaymentRequest:
    return PaymentRequest(out_trade_no=out_trade_no, amount_minor=amount, currency="CNY",
                          description="order", notify_url=NOTIFY)


# -- enabled from the environment -----------------------------------------------------------------

def test_nothing_configured_means_the_sandbox_alone_or_nothing():
    assert set(build_gateways(load_settings({})).adapters) == {"sandbox"}
    off = build_gateways(load_settings({"CL_SANDBOX_SECRET": "off"}))
    assert off.adapters == {} and off.payout_bank is None
    settings = load_settings({})
    assert (settings.wechatpay, settings.alipay, settings.bank) == (None, None, None)


def test_wechat_pay_from_the_environment_pays_over_a_real_socket(material):
    fake, platform = material["wechat"], material["platform"]
    with local_server(forwarding_to(fake)) as server:
        settings = load_settings(wechat_env(material, CL_WECHATPAY_BASE_URL=server.url + "/",
                                            CL_WECHATPAY_PROFIT_SHARING="on"))
        config = settings.wechatpay
        # Serials come from the certificates themselves (uppercase hex), both kept for rotation.
        assert dict(config.platform_certificates).keys() == {
            platform.serial, material["old_platform"].serial}
        assert config.merchant_serial_no == fake.merchant_serial
        assert config.base_url == server.url and config.profit_sharing is True
        assert "apiv3" not in repr(config).lower() and fake.apiv3_key not in repr(settings)

        gateways = build_gateways(settings)
        assert set(gateways.adapters) == {"wechatpay"}
        adapter = gateways.get("wechatpay")
        assert isinstance(adapter, WeChatPayV3) and adapter.profit_sharing is True
        assert adapter.sub_mchid is None  # a direct merchant unless CL_WECHATPAY_SUB_MCHID says otherwise
        created = adapter.create_payment(payment("pay_env_wx"))
    # The fake checked our SHA256withRSA signature (merchant key from the file)
    # and the adapter checked the fake's answer (platform certificate from the file).
    assert created.pay_url.startswith("weixin://")
    assert [(m, p) for m, p, *_ in server.seen] == [("POST", "/v3/pay/transactions/native")]
    assert json.loads(server.seen[0][3])["settle_info"] == {"profit_sharing": True}
    event = adapter.verify_callback(fake.pay("pay_env_wx"))  # decrypted with the APIv3 key
    assert (event.kind, event.out_trade_no, event.amount_minor) == ("payment_succeeded",
                                                                  "pay_env_wx", 600)


def test_a_certificate_bundle_file_gives_every_certificate_in_it(material):
    settings = load_settings(wechat_env(
        material, CL_WECHATPAY_PLATFORM_CERT_FILES=str(material["dir"] / "platforms.pem")))
    assert len(settings.wechatpay.platform_certificates) == 2
    assert settings.wechatpay.base_url == "https://api.mch.weixin.qq.com"  # the default
    assert settings.wechatpay.profit_sharing is False
    assert (settings.wechatpay.sub_mchid, settings.wechatpay.sub_appid) == (None, None)


def test_wechat_pay_service_provider_mode_from_the_environment(material):
    fake = material["wechat"]
    settings = load_settings(wechat_env(material, CL_WECHATPAY_SUB_MCHID=SUB_MCHID,
                                        CL_WECHATPAY_SUB_APPID=SUB_APPID))
    assert (settings.wechatpay.sub_mchid, settings.wechatpay.sub_appid) == (SUB_MCHID, SUB_APPID)
    desk = ServiceProviderDesk(fake)
    adapter = build_gateways(settings, transport=desk).get("wechatpay")
    assert (adapter.sub_mchid, adapter.sub_appid) == (SUB_MCHID, SUB_APPID)
    assert adapter.create_payment(payment("pay_env_wx_sub")).pay_url.startswith("weixin://")
    method, url, _, body = desk.requests[-1]
    assert (method, url) == ("POST", "https://api.mch.weixin.qq.com/v3/pay/partner/transactions/native")
    sent = json.loads(body)
    assert (sent["sp_mchid"], sent["sub_mchid"], sent["sub_appid"]) == (fake.mchid, SUB_MCHID, SUB_APPID)


@pytest.fixture
def dated_certificates(material, tmp_path):
    """Platform certificates ending in 10 days and yesterday (real clock: the
    service's adapter has no other), written to files."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    key = material["old_platform"].private_key
    soon = make_platform_identity(key, not_after=now + timedelta(days=10))
    gone = make_platform_identity(key, not_after=now - timedelta(days=1))
    for name, identity in (("soon.pem", soon), ("gone.pem", gone)):
        (tmp_path / name).write_bytes(identity.certificate_pem)
    return {"soon": soon, "gone": gone, "dir": tmp_path}


def test_wechat_pay_certificates_near_their_end_are_warned_about_at_start(material, dated_certificates, caplog):
    d = dated_certificates["dir"]
    files = f"{material['dir'] / 'platform.pem'},{d / 'soon.pem'},{d / 'gone.pem'}"
    settings = load_settings(wechat_env(material, CL_WECHATPAY_PLATFORM_CERT_FILES=files))
    with caplog.at_level(logging.WARNING, logger="service.gateways"):
        assert build_gateways(settings, transport=material["wechat"]).get("wechatpay") is not None
    warned = [r.certificate_serial for r in caplog.records if r.name == "service.gateways"]
    # The expired one first, then the one ending in 10 days; not the one valid until 2040.
    assert warned == [dated_certificates["gone"].serial, dated_certificates["soon"].serial]
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "service.gateways")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="service.gateways"):
        build_gateways(load_settings(wechat_env(material)), transport=material["wechat"])
    assert [r for r in caplog.records if r.name == "service.gateways"] == []


def test_wechat_pay_with_only_expired_certificates_does_not_start(material, dated_certificates):
    settings = load_settings(wechat_env(
        material, CL_WECHATPAY_PLATFORM_CERT_FILES=str(dated_certificates["dir"] / "gone.pem")))
    with pytest.raises(ValueError) as caught:
        build_gateways(settings, transport=material["wechat"])
    assert dated_certificates["gone"].serial in str(caught.value) and "notAfter" in str(caught.value)


def test_alipay_from_the_environment_precreates_over_a_real_socket(material):
    fake = material["alipay"]
    with local_server(forwarding_to(fake, as_url=ALIPAY_URL)) as server:
        settings = load_settings(alipay_env(material, CL_ALIPAY_GATEWAY_URL=server.url + "/gateway.do"))
        assert settings.alipay.gateway_url == server.url + "/gateway.do"
        # Both keys normalised to PEM whatever form their files had.
        assert settings.alipay.alipay_public_key_pem == fake.alipay_public_key_pem
        adapter = build_gateways(settings).get("alipay")
        assert isinstance(adapter, Alipay) and adapter.seller_id == fake.seller_id
        assert adapter.royalty_freeze is False
        created = adapter.create_payment(payment("pay_env_ali", 1234))
    assert created.pay_url.startswith("https://qr.alipay.com/")
    assert [p for _, p, *_ in server.seen] == ["/gateway.do"]
    assert fake.requests[-1]["method"] == "alipay.trade.precreate"  # our RSA2 signature verified
    event = adapter.verify_callback(fake.pay("pay_env_ali"))       # Alipay's key from the file
    assert (event.kind, event.amount_minor) == ("payment_succeeded", 1234)
    # Signed with another key than the one Alipay gave us.
    forged = FakeAlipay(fake.alipay_public_key_pem, app_id=fake.app_id,
                        key=material["old_platform"].private_key)
    with pytest.raises(CallbackRejected):
        adapter.verify_callback(forged.payment_notice("pay_env_ali", 1234))


def test_the_bank_from_the_environment_pays_over_a_real_socket_and_rotates_secrets():
    bank = RealTimeBank()
    old = "the-previous-bank-secret-1234"
    with local_server(forwarding_to(bank)) as server:
        settings = load_settings(bank_env(CL_BANK_BASE_URL=server.url + "/gateway",
                                          CL_BANK_PREVIOUS_SECRETS=f" {old} ",
                                          CL_BANK_STATEMENT_ENCODING="GBK",
                                          CL_GATEWAY_TIMEOUT_SECONDS="7"))
        assert settings.gateway_timeout_seconds == 7
        assert settings.bank.statement_encoding == "gbk"
        assert BANK_SECRET not in repr(settings)
        gateways = build_gateways(settings)
        adapter = gateways.get("bank")
        assert isinstance(adapter, OnlineBankGateway) and adapter.mer_id == BANK_MER_ID
        created = adapter.create_payment(payment("pay_env_bank", 123456))
    assert created.pay_url == "https://bank.example/b2b/pay_env_bank"
    assert server.seen[0][1] == "/gateway/b2b/pay"
    assert bank.requests[0]["tranAmt"] == "1234.56"
    fields = {"merId": BANK_MER_ID, "orderNo": "pay_env_bank", "bankSerialNo": "B1",
              "tranAmt": "1234.56", "tranStat": "SUCCESS", "tranTime": "20241126103000"}
    assert adapter.verify_callback(bank.notice(fields)).amount_minor == 123456
    # The previous secret still verifies while the bank rotates; any other does not.
    assert adapter.verify_callback(bank.notice(fields, secret=old.encode())).amount_minor == 123456
    with pytest.raises(CallbackRejected):
        adapter.verify_callback(bank.notice(fields, secret=b"someone-else-entirely-0000"))


def test_every_gateway_at_once_through_the_app_factory(material, tmp_path):
    from service.api_payments import GATEWAYS_KEY
    from service.app import create_app

    env = {**wechat_env(material), **alipay_env(material), **bank_env(),
           "CL_SANDBOX_SECRET": "", "CL_DATABASE_URL": f"sqlite:///{tmp_path}/app.sqlite3",
           "CL_LOG_FORMAT": "text"}
    app = create_app(load_settings(env))
    gateways = app.extensions[GATEWAYS_KEY]
    assert set(gateways.adapters) == {"sandbox", "wechatpay", "alipay", "bank"}
    assert isinstance(gateways.get("bank")._transport, HttpTransport)
    assert gateways.get("bank")._transport.timeout == 10


# -- refused at start-up ---------------------------------------------------------------------------

@pytest.mark.parametrize("missing", [
    "CL_WECHATPAY_MCHID", "CL_WECHATPAY_APPID", "CL_WECHATPAY_MERCHANT_SERIAL",
    "CL_WECHATPAY_MERCHANT_KEY_FILE", "CL_WECHATPAY_APIV3_KEY", "CL_WECHATPAY_PLATFORM_CERT_FILES",
    "CL_ALIPAY_APP_ID", "CL_ALIPAY_APP_PRIVATE_KEY_FILE", "CL_ALIPAY_PUBLIC_KEY_FILE",
    "CL_BANK_MER_ID", "CL_BANK_SECRET", "CL_BANK_BASE_URL",
])
def test_a_partial_configuration_is_refused_naming_what_is_missing(material, missing):
    env = {**wechat_env(material), **alipay_env(material), **bank_env()}
    env[missing] = "  "  # blank is unset
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert caught.value.variable == missing
    assert str(caught.value).startswith(f"{missing}: not set")
    assert f"missing: {missing}" in str(caught.value)


def test_an_optional_variable_alone_is_a_partial_configuration_too():
    with pytest.raises(SettingsError) as caught:
        load_settings({"CL_ALIPAY_GATEWAY_URL": "https://openapi-sandbox.dl.alipaydev.com/gateway.do"})
    assert caught.value.variable == "CL_ALIPAY_APP_ID"
    message = str(caught.value)
    assert "CL_ALIPAY_APP_PRIVATE_KEY_FILE" in message and "CL_ALIPAY_PUBLIC_KEY_FILE" in message


@pytest.mark.parametrize(("variable", "file", "message"), [
    ("CL_WECHATPAY_MERCHANT_KEY_FILE", "garbage.pem", "not a PEM (or base64) private key"),
    ("CL_WECHATPAY_MERCHANT_KEY_FILE", "encrypted.pem", "the key is encrypted"),
    ("CL_WECHATPAY_MERCHANT_KEY_FILE", "ec.pem", "not an RSA private key"),
    ("CL_WECHATPAY_MERCHANT_KEY_FILE", "small.pem", "a 1024-bit key"),
    ("CL_WECHATPAY_MERCHANT_KEY_FILE", "empty.pem", "is empty"),
    ("CL_WECHATPAY_MERCHANT_KEY_FILE", "no-such-file.pem", "cannot read"),
    ("CL_WECHATPAY_PLATFORM_CERT_FILES", "apiclient_key.pem", "not a PEM certificate"),
    ("CL_ALIPAY_APP_PRIVATE_KEY_FILE", "alipay_public_key.txt", "not a PEM (or base64) private key"),
    ("CL_ALIPAY_PUBLIC_KEY_FILE", "garbage.pem", "not a PEM (or base64) public key"),
    ("CL_ALIPAY_PUBLIC_KEY_FILE", "platform.pem", "not a PEM (or base64) public key"),
])
def test_a_key_that_does_not_parse_is_refused_naming_its_variable(material, variable, file, message):
    path = str(material["dir"] / file)
    env = wechat_env(material) if "WECHAT" in variable else alipay_env(material)
    env[variable] = path
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert caught.value.variable == variable
    assert message in str(caught.value)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("CL_WECHATPAY_APIV3_KEY", "k" * 31, "must be the 32-character APIv3 key"),
    ("CL_WECHATPAY_MCHID", "19000 00001", "does not match"),
    ("CL_WECHATPAY_MERCHANT_SERIAL", "not-hex", "does not match"),
    ("CL_WECHATPAY_BASE_URL", "http://api.mch.weixin.qq.com", "not an https:// URL"),
    ("CL_WECHATPAY_BASE_URL", "https://api.mch.weixin.qq.com/?x=1", "not an https:// URL"),
    ("CL_WECHATPAY_PROFIT_SHARING", "maybe", "not on or off"),
    ("CL_WECHATPAY_SUB_MCHID", "1900-000109", "does not match"),
    ("CL_WECHATPAY_SUB_APPID", SUB_APPID, "only with CL_WECHATPAY_SUB_MCHID"),
])
def test_bad_wechat_pay_values_are_refused(material, variable, value, message):
    with pytest.raises(SettingsError) as caught:
        load_settings(wechat_env(material, **{variable: value}))
    assert caught.value.variable == variable and message in str(caught.value)
    if variable == "CL_WECHATPAY_APIV3_KEY":
        assert value not in str(caught.value)  # a secret is never echoed


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("CL_BANK_SECRET", "short-secret", "too short (12 characters)"),
    ("CL_BANK_PREVIOUS_SECRETS", "long-enough-previous-secret,tiny", "too short (4 characters)"),
    ("CL_BANK_BASE_URL", "ftp://bank.example/", "not an https:// URL"),
    ("CL_BANK_BASE_URL", "https://bank.example:port/", "not an https:// URL"),
    ("CL_BANK_STATEMENT_ENCODING", "klingon", "not a text encoding"),
    ("CL_BANK_MER_ID", "mer id", "does not match"),
    ("CL_GATEWAY_TIMEOUT_SECONDS", "0", "between 1 and 120"),
])
def test_bad_bank_values_are_refused(variable, value, message):
    with pytest.raises(SettingsError) as caught:
        load_settings(bank_env(**{variable: value}))
    assert caught.value.variable == variable and message in str(caught.value)
    if "SECRET" in variable:
        assert "short-secret" not in str(caught.value) and "tiny" not in str(caught.value)


def test_plain_http_is_allowed_to_this_machine_only():
    assert load_settings(bank_env(CL_BANK_BASE_URL="http://127.0.0.1:8081/b2b/")).bank.base_url \
        == "http://127.0.0.1:8081/b2b"
    with pytest.raises(SettingsError):
        load_settings(bank_env(CL_BANK_BASE_URL="http://10.0.0.7/b2b"))


# -- the HTTP transport against a local server --------------------------------------------------------

def _routes(method, path, headers, body, handler):
    if path.startswith("/echo"):
        return HttpResponse(200, {"Content-Type": "application/json", "X-Echo": "yes"},
                            json.dumps({"method": method, "path": path, "body": body.decode(),
                                        "signature": headers.get("Bank-Signature")}).encode())
    if path == "/refused":
        return HttpResponse(409, {"Content-Type": "application/json"}, b'{"code":"CONFLICT"}')
    if path == "/down":
        return HttpResponse(503, {}, b"maintenance")
    if path == "/redirect":
        return HttpResponse(302, {"Location": "/echo/redirected"}, b"")
    if path == "/slow":
        handler.server.release.wait(5)
        return HttpResponse(200, {}, b"too late")
    if path == "/drip":
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        try:
            for _ in range(100):
                if handler.server.release.wait(0.05):
                    break
                handler.wfile.write(b"x")
                handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
        return None
    if path == "/big":
        return HttpResponse(200, {}, b"x" * 5000)
    if path == "/hangup":
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)
        return None
    return HttpResponse(404, {}, b"")


@pytest.fixture(scope="module")
def server():
    with local_server(_routes) as s:
        yield s


@pytest.fixture
def transport():
    return HttpTransport(timeout=2, proxies={})


def test_a_request_and_its_answer_cross_the_socket_unchanged(server, transport):
    answer = transport("POST", server.url + "/echo?x=1", {"Bank-Signature": "t=1,v1=ab",
                                                          "Content-Type": "application/json"},
                       '{"amount":"12.34","名":"茶"}'.encode())
    assert answer.status == 200 and answer.headers["X-Echo"] == "yes"
    echoed = json.loads(answer.body)
    assert echoed == {"method": "POST", "path": "/echo?x=1", "body": '{"amount":"12.34","名":"茶"}',
                      "signature": "t=1,v1=ab"}
    got = json.loads(transport("GET", server.url + "/echo/q", {}, b"").body)
    assert (got["method"], got["body"]) == ("GET", "")


def test_error_statuses_are_answers_and_redirects_are_not_followed(server, transport):
    refused = transport("POST", server.url + "/refused", {}, b"{}")
    assert (refused.status, refused.body) == (409, b'{"code":"CONFLICT"}')
    assert transport("GET", server.url + "/down", {}, b"").status == 503
    moved = transport("POST", server.url + "/redirect", {}, b"{}")
    assert moved.status == 302 and moved.headers["Location"] == "/echo/redirected"
    assert not any(path == "/echo/redirected" for _, path, *_ in server.seen)


def test_a_timeout_is_gateway_unavailable_within_the_timeout(server):
    quick = HttpTransport(timeout=0.3, proxies={})
    started = time.monotonic()
    with pytest.raises(GatewayUnavailable) as caught:
        quick("POST", server.url + "/slow", {}, b"{}")
    assert time.monotonic() - started < 2
    assert isinstance(caught.value, TransportError) and isinstance(caught.value, OSError)
    assert caught.value.details["reason"] == "timeout"
    assert caught.value.details["url"] == server.url + "/slow"


def test_an_answer_dripping_past_the_timeout_is_cut_off(server):
    quick = HttpTransport(timeout=0.5, proxies={})
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        quick("GET", server.url + "/drip", {}, b"")
    assert time.monotonic() - started < 2.5  # each byte came in time; the whole did not
    assert caught.value.details["reason"] == "timeout"


def test_no_answer_is_gateway_unavailable(server, transport):
    for url, reason in ((f"http://127.0.0.1:{free_port()}/x", "connection refused"),
                        (server.url + "/hangup", None)):
        with pytest.raises(TransportError) as caught:
            transport("POST", url, {}, b"{}")
        assert isinstance(caught.value, GatewayUnavailable)
        if reason:
            assert caught.value.details["reason"] == reason


def test_oversized_answers_and_other_schemes_are_refused(server):
    small = HttpTransport(timeout=2, max_body=4096, proxies={})
    with pytest.raises(TransportError) as caught:
        small("GET", server.url + "/big", {}, b"")
    assert caught.value.details["reason"] == "too_large"
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x", "http:///nohost"):
        with pytest.raises(TransportError) as caught:
            small("GET", url, {}, b"")
        assert caught.value.details["reason"] == "bad_url"


def test_an_adapter_over_the_transport_reports_a_slow_bank_as_unavailable(server):
    bank = RealTimeBank()
    with local_server(forwarding_to(bank)) as bank_server:
        adapter = OnlineBankGateway(mer_id=BANK_MER_ID, secret=BANK_SECRET.encode(),
                                    transport=HttpTransport(timeout=0.3, proxies={}),
                                    base_url=bank_server.url + "/slow")
        with pytest.raises(GatewayUnavailable) as caught:
            adapter.create_payment(payment("pay_slow"))
        assert isinstance(caught.value.__cause__, TransportError)
        assert caught.value.__cause__.details["reason"] == "timeout"
        assert bank.requests == []  # the bank never answered, nothing was done there
        down = OnlineBankGateway(mer_id=BANK_MER_ID, secret=BANK_SECRET.encode(),
                                 transport=HttpTransport(timeout=2, proxies={}),
                                 base_url=f"http://127.0.0.1:{free_port()}")
        with pytest.raises(GatewayUnavailable):
            down.create_payment(payment("pay_down"))


def test_alipay_royalty_freeze_is_set_from_the_environment(material):
    settings = load_settings(alipay_env(material, CL_ALIPAY_ROYALTY_FREEZE="on"))
    assert settings.alipay.royalty_freeze is True
    adapter = build_gateways(settings).get("alipay")
    assert isinstance(adapter, Alipay) and adapter.royalty_freeze is True
    with pytest.raises(SettingsError) as bad:
        load_settings(alipay_env(material, CL_ALIPAY_ROYALTY_FREEZE="sometimes"))
    assert bad.value.variable == "CL_ALIPAY_ROYALTY_FREEZE"
