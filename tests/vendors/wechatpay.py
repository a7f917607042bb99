"""FakeWeChatPay: WeChat Pay API v3 as the vendor plays it, in-process.

It owns what WeChat Pay owns (platform keys and certificates, the merchant's
APIv3 key as registered there) and speaks the real scheme, so the adapter is
exercised for real: notifications are signed and AES-256-GCM encrypted,
answers are signed with the platform key, and every call's Authorization
signature is checked against the merchant's public key (401 SIGN_ERROR if it
does not verify). Use the instance itself as the adapter's ``Transport``.

Key generation is slow (2048-bit RSA): tests make identities once per module
and pass them in; a benchmark may let the fake generate its own.

Profit sharing (``/v3/profitsharing/orders``, ``.../orders/unfreeze``,
``/v3/profitsharing/return-orders``) is served for real: only for a paid
order created with ``settle_info.profit_sharing``; once per ``out_order_no``
(a repeat answers the first instruction, never shares twice); refused over
``max_ratio`` of the order after the fee, cumulatively (400 INVALID_REQUEST,
the fake's choice of code); new orders answer ``sharing_state`` and a
PROCESSING one is FINISHED at its next query; ``receiver_faults`` closes a
receiver with a fail reason; nothing is shared after an unfreeze.

Service-provider mode (the fake's ``mchid``/``appid`` are then the service
provider's): ``/v3/pay/partner/transactions/native`` creates an order in the
books of the ``sub_mchid`` it names, and from then on the order is found
only by calls naming that same ``sub_mchid`` (the partner query, refunds,
profit-sharing orders, unfreezes, returns and their queries; a call naming
another one, or none, gets 404 as at WeChat Pay). Notifications about such
an order are written as WeChat Pay writes them to a service provider
(``sp_mchid``/``sp_appid``/``sub_mchid``, no ``mchid``/``appid``), and its
unfreeze releases the rest to the sub-merchant.
"""
from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from payments.gateway import CallbackRequest, HttpResponse
from payments.wechatpay import (
    BEIJING, PROBE_PREFIX, SIGNATURE_TYPE, WeChatPayV3, answer_message, request_message, sign_message,
)

_AUTH = re.compile(r'^WECHATPAY2-SHA256-RSA2048 (.+)$')
_AUTH_PARAM = re.compile(r'(\w+)="([^"]*)"')


def generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class PlatformIdentity:
    """One WeChat Pay platform certificate and its private key."""

    serial: str
    private_key: rsa.RSAPrivateKey
    certificate_pem: bytes


def make_platform_identity(
    key: rsa.RSAPrivateKey | None = None, *, serial_number: int | None = None,
    not_before: datetime = datetime(2020, 1, 1, tzinfo=timezone.utc),
    not_after: datetime = datetime(2040, 1, 1, tzinfo=timezone.utc),
) -> PlatformIdentity:
    """A self-signed certificate like WeChat's: the serial (uppercase hex) is
    how notifications and answers name it in ``Wechatpay-Serial``."""
    key = key or generate_key()
    number = serial_number or x509.random_serial_number()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA (fake)")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(number).not_valid_before(not_before).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    return PlatformIdentity(f"{number:X}", key, cert.public_bytes(serialization.Encoding.PEM))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def fee_of(total: int) -> int:
    """WeChat Pay's fee in this fake: 0.6 %, rounded half up to the fen."""
    return (total * 6 + 500) // 1000


def _as_partner(resource: Mapping[str, Any], sub_mchid: str) -> dict[str, Any]:
    """A resource as WeChat Pay writes it to a service provider: ``sp_mchid``
    (and ``sp_appid``) and the sub-merchant instead of ``mchid``/``appid``."""
    partner = {k: v for k, v in resource.items() if k not in ("mchid", "appid")}
    partner.update(sp_mchid=resource["mchid"], sub_mchid=sub_mchid)
    if "appid" in resource:
        partner["sp_appid"] = resource["appid"]
    return partner


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(BEIJING).isoformat(timespec="seconds")


class FakeWeChatPay:
    """The vendor side for one merchant. ``platforms[-1]`` signs by default
    (the newest certificate); ``signing_serial`` switches it, as WeChat does
    when it rotates."""

    def __init__(
        self, *, mchid: str = "1900000001", appid: str = "wxd678efh567hg6787",
        merchant_key: rsa.RSAPrivateKey | None = None, merchant_serial: str = "3775B6A45ACD588826D15E583A95F5DD",
        platforms: Sequence[PlatformIdentity] | None = None, apiv3_key: str | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.mchid, self.appid, self.merchant_serial = mchid, appid, merchant_serial
        self.merchant_key = merchant_key or generate_key()
        self.platforms = {p.serial: p for p in (platforms or [make_platform_identity()])}
        self.signing_serial = list(self.platforms)[-1]
        self.apiv3_key = apiv3_key or secrets.token_hex(16)  # 32 ASCII characters
        self.clock = clock
        # None | "tampered" | "unsigned" | "system_error" (500) | "rate_limited" (429)
        self.answer_fault: str | None = None
        self.refund_status = "PROCESSING"      # what a new refund answers with
        self.requests: list[tuple[str, str, Mapping[str, str], bytes]] = []
        self.orders: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        # profit sharing
        self.max_ratio = Fraction(3, 10)       # of the order after the fee
        self.sharing_state = "PROCESSING"      # what a new sharing order answers with
        self.return_result = "PROCESSING"      # what a new return answers with
        self.receiver_faults: dict[str, str] = {}  # account -> fail_reason: that receiver is CLOSED
        self.sharings: dict[str, dict[str, Any]] = {}      # out_order_no -> order, as answered
        self.sharing_returns: dict[str, dict[str, Any]] = {}  # out_return_no -> return, as answered

    # -- the merchant's configuration --------------------------------------

    def platform_certificates(self) -> dict[str, bytes]:
        return {serial: p.certificate_pem for serial, p in self.platforms.items()}

    def gateway(self, **overrides: Any) -> WeChatPayV3:
        """An adapter configured as the merchant would be, talking to us."""
        settings: dict[str, Any] = dict(
            mchid=self.mchid, appid=self.appid, merchant_serial_no=self.merchant_serial,
            merchant_private_key=private_key_pem(self.merchant_key), apiv3_key=self.apiv3_key,
            platform_certificates=self.platform_certificates(), transport=self, clock=self.clock,
        )
        settings.update(overrides)
        return WeChatPayV3(**settings)

    # -- notifications -------------------------------------------------------

    def signed_headers(self, body: bytes, *, serial: str | None = None, timestamp: int | None = None,
                       key: rsa.RSAPrivateKey | None = None) -> dict[str, str]:
        serial = serial or self.signing_serial
        stamp = str(int(self.clock().timestamp()) if timestamp is None else timestamp)
        nonce = secrets.token_hex(16)
        signer = key or self.platforms[serial].private_key
        return {"Wechatpay-Timestamp": stamp, "Wechatpay-Nonce": nonce, "Wechatpay-Serial": serial,
                "Wechatpay-Signature": sign_message(signer, answer_message(stamp, nonce, body)),
                "Wechatpay-Signature-Type": SIGNATURE_TYPE}

    def encrypt(self, resource: Mapping[str, Any], original_type: str, *,
                apiv3_key: str | None = None) -> dict[str, str]:
        nonce, aad = secrets.token_hex(6), original_type  # 12-character nonce, as WeChat's
        sealed = AESGCM((apiv3_key or self.apiv3_key).encode()).encrypt(
            nonce.encode(), json.dumps(resource, ensure_ascii=False).encode(), aad.encode())
        return {"original_type": original_type, "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode(), "associated_data": aad, "nonce": nonce}

    def notification(
        self, event_type: str, resource: Mapping[str, Any], *, serial: str | None = None,
        timestamp: int | None = None, received_at: datetime | None = None,
        sign_key: rsa.RSAPrivateKey | None = None, apiv3_key: str | None = None,
        probe: bool = False,
    ) -> CallbackRequest:
        """A notification as it reaches the merchant; the keyword arguments
        make the faulty ones (foreign key, other APIv3 key, odd timestamp)."""
        original_type = "refund" if event_type.startswith("REFUND.") else "transaction"
        envelope = {"id": secrets.token_hex(16), "create_time": _rfc3339(self.clock()),
                    "resource_type": "encrypt-resource", "event_type": event_type,
                    "summary": "notification", "resource": self.encrypt(resource, original_type,
                                                                        apiv3_key=apiv3_key)}
        body = json.dumps(envelope, ensure_ascii=False).encode()
        headers = self.signed_headers(body, serial=serial, timestamp=timestamp, key=sign_key)
        if probe:  # WeChat's probe: a notification whose signature is deliberately bogus
            headers["Wechatpay-Signature"] = PROBE_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
        return CallbackRequest(headers=headers, body=body, received_at=received_at or self.clock())

    def payment_resource(self, out_trade_no: str, amount_minor: int, *, trade_state: str = "SUCCESS",
                         transaction_id: str | None = None, sub_mchid: str | None = None) -> dict[str, Any]:
        """As WeChat Pay writes it to the merchant, or, with ``sub_mchid``,
        to the service provider about that sub-merchant's order."""
        resource: dict[str, Any] = {
            "appid": self.appid, "mchid": self.mchid, "out_trade_no": out_trade_no,
            "transaction_id": transaction_id or "4200" + secrets.token_hex(12),
            "trade_type": "NATIVE", "trade_state": trade_state, "trade_state_desc": trade_state,
            "bank_type": "OTHERS", "attach": "", "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            "amount": {"total": amount_minor, "payer_total": amount_minor,
                       "currency": "CNY", "payer_currency": "CNY"},
        }
        if trade_state == "SUCCESS":
            resource["success_time"] = _rfc3339(self.clock())
        return _as_partner(resource, sub_mchid) if sub_mchid else resource

    def payment_notification(self, out_trade_no: str, amount_minor: int, *, trade_state: str = "SUCCESS",
                             transaction_id: str | None = None, sub_mchid: str | None = None,
                             **faults: Any) -> CallbackRequest:
        resource = self.payment_resource(out_trade_no, amount_minor, trade_state=trade_state,
                                         transaction_id=transaction_id, sub_mchid=sub_mchid)
        return self.notification("TRANSACTION.SUCCESS", resource, **faults)

    def refund_notification(self, out_trade_no: str, out_refund_no: str, amount_minor: int,
                            total_minor: int, *, status: str = "SUCCESS", refund_id: str | None = None,
                            transaction_id: str | None = None, sub_mchid: str | None = None,
                            **faults: Any) -> CallbackRequest:
        resource: dict[str, Any] = {
            "mchid": self.mchid, "out_trade_no": out_trade_no, "out_refund_no": out_refund_no,
            "transaction_id": transaction_id or "4200" + secrets.token_hex(12),
            "refund_id": refund_id or "50" + secrets.token_hex(13), "refund_status": status,
            "user_received_account": "支付用户零钱",
            "amount": {"total": total_minor, "refund": amount_minor,
                       "payer_total": total_minor, "payer_refund": amount_minor},
        }
        if status == "SUCCESS":
            resource["success_time"] = _rfc3339(self.clock())
        if sub_mchid:
            resource = _as_partner(resource, sub_mchid)
        return self.notification(f"REFUND.{status}", resource, **faults)

    def probe_notification(self, **faults: Any) -> CallbackRequest:
        resource = self.payment_resource("probe-" + secrets.token_hex(4), 1)
        return self.notification("TRANSACTION.SUCCESS", resource, probe=True, **faults)

    # -- the payer and the back office ---------------------------------------

    def pay(self, out_trade_no: str) -> CallbackRequest:
        """The payer scans and pays: the order succeeds, and here is the
        notification WeChat Pay sends for it."""
        order = self.orders[out_trade_no]
        order.update(trade_state="SUCCESS", transaction_id="4200" + secrets.token_hex(12),
                     success_time=_rfc3339(self.clock()))
        return self.payment_notification(out_trade_no, order["amount"]["total"],
                                         transaction_id=order["transaction_id"],
                                         sub_mchid=order.get("sub_mchid"))

    def finish_refund(self, out_refund_no: str, status: str = "SUCCESS") -> CallbackRequest:
        refund = self.refunds[out_refund_no]
        refund.update(status=status, success_time=_rfc3339(self.clock()))
        return self.refund_notification(refund["out_trade_no"], out_refund_no, refund["amount"]["refund"],
                                        refund["amount"]["total"], status=status,
                                        refund_id=refund["refund_id"], transaction_id=refund["transaction_id"],
                                        sub_mchid=self.orders[refund["out_trade_no"]].get("sub_mchid"))

    def trade_bill(self) -> bytes:
        """An ALL trade bill of the paid orders and successful refunds. Fees
        (0.6%) are rounded to whole fen here; real bills may carry sub-fen
        fees, which the adapter refuses rather than rounds."""
        header = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,"
                  "付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,"
                  "退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注")
        lines, totals = [header], {"settled": 0, "refunded": 0, "fee": 0, "ordered": 0}
        def yuan(fen: int, places: int = 2) -> str:
            return f"{'-' if fen < 0 else ''}{abs(fen) // 100}.{abs(fen) % 100:02d}" + "0" * (places - 2)
        def row(fields: list[str]) -> str:
            return ",".join("`" + f for f in fields)
        for o in self.orders.values():
            if o["trade_state"] not in ("SUCCESS", "REFUND"):
                continue
            total = o["amount"]["total"]
            fee = fee_of(total)
            when = datetime.fromisoformat(o["success_time"]).strftime("%Y-%m-%d %H:%M:%S")
            lines.append(row([when, self.appid, self.mchid, o.get("sub_mchid") or "0", "", o["transaction_id"],
                              o["out_trade_no"],
                              "oUpF8u", "NATIVE", "SUCCESS", "OTHERS", "CNY", yuan(total), "0.00", "0", "0",
                              "0.00", "0.00", "", "", o["description"], "", yuan(fee, 5), "0.60%",
                              yuan(total), "0.00", ""]))
            totals.update(settled=totals["settled"] + total, fee=totals["fee"] + fee,
                          ordered=totals["ordered"] + total)
        for r in self.refunds.values():
            if r["status"] != "SUCCESS":
                continue
            order, amount = self.orders[r["out_trade_no"]], r["amount"]["refund"]
            fee = -fee_of(amount)
            when = datetime.fromisoformat(r["success_time"]).strftime("%Y-%m-%d %H:%M:%S")
            lines.append(row([when, self.appid, self.mchid, order.get("sub_mchid") or "0", "",
                              order["transaction_id"], r["out_trade_no"], "oUpF8u", "NATIVE", "REFUND", "OTHERS", "CNY", "0.00", "0.00",
                              r["refund_id"], r["out_refund_no"], yuan(amount), "0.00", "ORIGINAL", "SUCCESS",
                              order["description"], "", yuan(fee, 5), "0.60%", yuan(order["amount"]["total"]),
                              yuan(amount), ""]))
            totals.update(refunded=totals["refunded"] + amount, fee=totals["fee"] + fee)
        count = len(lines) - 1  # trade lines, without the header
        lines.append("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额")
        lines.append(row([str(count), yuan(totals["settled"]), yuan(totals["refunded"]), "0.00",
                          yuan(totals["fee"], 5), yuan(totals["ordered"]), yuan(totals["refunded"])]))
        return ("\r\n".join(lines) + "\r\n").encode()

    # -- the API, as a Transport ---------------------------------------------

    def __call__(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        self.requests.append((method, url, headers, body))
        parts = urlsplit(url)
        canonical = parts.path + (f"?{parts.query}" if parts.query else "")
        if not self._authorized(method, canonical, headers, body):
            return self._answer(401, {"code": "SIGN_ERROR", "message": "签名错误"})
        if self.answer_fault == "system_error":
            return self._answer(500, {"code": "SYSTEM_ERROR", "message": "系统错误"})
        if self.answer_fault == "rate_limited":
            return self._answer(429, {"code": "FREQUENCY_LIMITED", "message": "频率超限"})
        payload = json.loads(body) if body else {}
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if method == "POST" and parts.path == "/v3/pay/transactions/native":
            return self._create(payload)
        if method == "POST" and parts.path == "/v3/pay/partner/transactions/native":
            return self._create_partner(payload)
        match = re.fullmatch(r"/v3/pay/transactions/out-trade-no/([^/]+)", parts.path)
        if method == "GET" and match:
            return self._query(unquote(match.group(1)), query.get("mchid", ""))
        match = re.fullmatch(r"/v3/pay/partner/transactions/out-trade-no/([^/]+)", parts.path)
        if method == "GET" and match:
            if query.get("sp_mchid") != self.mchid:
                return self._answer(400, {"code": "PARAM_ERROR", "message": "sp_mchid mismatch"})
            return self._query(unquote(match.group(1)), self.mchid, query.get("sub_mchid"))
        if method == "POST" and parts.path == "/v3/refund/domestic/refunds":
            return self._refund(payload)
        if method == "POST" and parts.path == "/v3/profitsharing/orders":
            return self._share(payload)
        if method == "POST" and parts.path == "/v3/profitsharing/orders/unfreeze":
            return self._unfreeze(payload)
        match = re.fullmatch(r"/v3/profitsharing/orders/([^/]+)", parts.path)
        if method == "GET" and match:
            return self._query_sharing(unquote(match.group(1)), query.get("transaction_id", ""),
                                       query.get("sub_mchid"))
        if method == "POST" and parts.path == "/v3/profitsharing/return-orders":
            return self._return_sharing(payload)
        match = re.fullmatch(r"/v3/profitsharing/return-orders/([^/]+)", parts.path)
        if method == "GET" and match:
            return self._query_return(unquote(match.group(1)), query.get("out_order_no", ""),
                                      query.get("sub_mchid"))
        return self._answer(404, {"code": "NOT_FOUND", "message": "no such API"})

    def _authorized(self, method: str, canonical: str, headers: Mapping[str, str], body: bytes) -> bool:
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        match = _AUTH.match(auth)
        params = dict(_AUTH_PARAM.findall(match.group(1))) if match else {}
        if (params.get("mchid") != self.mchid or params.get("serial_no") != self.merchant_serial
                or not params.get("timestamp", "").isdigit()
                or abs(int(params["timestamp"]) - self.clock().timestamp()) > 300):
            return False
        message = request_message(method, canonical, params["timestamp"], params.get("nonce_str", ""), body)
        try:
            self.merchant_key.public_key().verify(base64.b64decode(params.get("signature", "")), message,
                                                  padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return False
        return True

    def _answer(self, status: int, data: Mapping[str, Any]) -> HttpResponse:
        body = json.dumps(data, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "Request-ID": secrets.token_hex(8)}
        if self.answer_fault != "unsigned":
            headers.update(self.signed_headers(body))
        if self.answer_fault == "tampered":
            body = body.replace(b"{", b'{"injected":1,', 1)
        return HttpResponse(status=status, headers=headers, body=body)

    def _create(self, p: dict[str, Any]) -> HttpResponse:
        if p.get("mchid") != self.mchid or p.get("appid") != self.appid:
            return self._answer(400, {"code": "PARAM_ERROR", "message": "mchid/appid mismatch"})
        total = (p.get("amount") or {}).get("total")
        if not isinstance(total, int) or total <= 0 or not p.get("out_trade_no") or not p.get("notify_url"):
            return self._answer(400, {"code": "PARAM_ERROR", "message": "missing or bad parameter"})
        order = self.orders.get(p["out_trade_no"])
        if order is not None and order.get("sub_mchid") != p.get("sub_mchid"):
            return self._answer(400, {"code": "INVALID_REQUEST", "message": "商户订单号重复"})
        if order is not None and order["trade_state"] != "NOTPAY":
            return self._answer(400, {"code": "ORDERPAID", "message": "该订单已支付"})
        if order is None:
            order = self.orders[p["out_trade_no"]] = {
                **p, "trade_state": "NOTPAY", "code_url": "weixin://wxpay/bizpayurl?pr=" + secrets.token_hex(4)}
        return self._answer(200, {"code_url": order["code_url"]})

    def _create_partner(self, p: dict[str, Any]) -> HttpResponse:
        """The partner endpoint: the order goes into ``sub_mchid``'s books."""
        if p.get("sp_mchid") != self.mchid or p.get("sp_appid") != self.appid or "mchid" in p or "appid" in p:
            return self._answer(400, {"code": "PARAM_ERROR", "message": "sp_mchid/sp_appid mismatch"})
        if not isinstance(p.get("sub_mchid"), str) or not p["sub_mchid"]:
            return self._answer(400, {"code": "PARAM_ERROR", "message": "sub_mchid is required"})
        direct = {k: v for k, v in p.items() if k not in ("sp_mchid", "sp_appid")}
        return self._create({**direct, "mchid": self.mchid, "appid": self.appid})

    @staticmethod
    def _books(order: dict[str, Any] | None, sub_mchid: Any) -> bool:
        """Whether a call naming ``sub_mchid`` (None: a direct call) finds the order."""
        return order is not None and order.get("sub_mchid") == (sub_mchid or None)

    def _query(self, out_trade_no: str, mchid: str, sub_mchid: str | None = None) -> HttpResponse:
        order = self.orders.get(out_trade_no)
        if mchid != self.mchid or not self._books(order, sub_mchid):
            return self._answer(404, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"})
        answer = {key: order[key] for key in ("appid", "mchid", "out_trade_no", "trade_state")}
        if sub_mchid:
            answer = {"sp_appid": order["appid"], "sp_mchid": order["mchid"], "sub_mchid": sub_mchid,
                      "out_trade_no": order["out_trade_no"], "trade_state": order["trade_state"]}
        answer["amount"] = {"total": order["amount"]["total"], "currency": order["amount"].get("currency", "CNY")}
        for key in ("transaction_id", "success_time"):
            if key in order:
                answer[key] = order[key]
        return self._answer(200, answer)

    def _refund(self, p: dict[str, Any]) -> HttpResponse:
        if p.get("out_refund_no") in self.refunds:
            return self._answer(200, self.refunds[p["out_refund_no"]])
        order = self.orders.get(p.get("out_trade_no", ""))
        if not self._books(order, p.get("sub_mchid")):
            return self._answer(404, {"code": "RESOURCE_NOT_EXISTS", "message": "订单不存在"})
        amount, total = p.get("amount") or {}, order["amount"]["total"]
        refunded = sum(r["amount"]["refund"] for r in self.refunds.values()
                       if r["out_trade_no"] == order["out_trade_no"])
        if order["trade_state"] not in ("SUCCESS", "REFUND") or amount.get("total") != total:
            return self._answer(400, {"code": "INVALID_REQUEST", "message": "订单状态或金额不符"})
        if not isinstance(amount.get("refund"), int) or refunded + amount["refund"] > total:
            return self._answer(403, {"code": "NOT_ENOUGH", "message": "退款金额超过可退金额"})
        order["trade_state"] = "REFUND"
        refund = self.refunds[p["out_refund_no"]] = {
            "refund_id": "50" + secrets.token_hex(13), "out_refund_no": p["out_refund_no"],
            "transaction_id": order["transaction_id"], "out_trade_no": order["out_trade_no"],
            "channel": "ORIGINAL", "create_time": _rfc3339(self.clock()), "status": self.refund_status,
            "amount": {"total": total, "refund": amount["refund"], "payer_total": total,
                       "payer_refund": amount["refund"], "currency": amount.get("currency", "CNY")},
        }
        if self.refund_status == "SUCCESS":
            refund["success_time"] = refund["create_time"]
        return self._answer(200, refund)

    # -- profit sharing ------------------------------------------------------

    def _shared_order(self, transaction_id: Any) -> dict[str, Any] | None:
        return next((o for o in self.orders.values() if o.get("transaction_id") == transaction_id), None)

    def _shared_so_far(self, transaction_id: str) -> int:
        """Shared away from the order by earlier instructions (not closed
        receivers, not the unfreeze back to the merchant)."""
        return sum(r["amount"] for s in self.sharings.values()
                   if s["transaction_id"] == transaction_id and not s["_unfreeze"]
                   for r in s["receivers"] if r["result"] != "CLOSED")

    def _sharable(self, p: dict[str, Any]) -> dict[str, Any] | HttpResponse:
        """The paid order to share, or the vendor's refusal."""
        order = self._shared_order(p.get("transaction_id"))
        if not self._books(order, p.get("sub_mchid")):
            return self._answer(404, {"code": "RESOURCE_NOT_EXISTS", "message": "订单不存在"})
        if order["trade_state"] not in ("SUCCESS", "REFUND"):
            return self._answer(400, {"code": "INVALID_REQUEST", "message": "订单未支付"})
        if not (order.get("settle_info") or {}).get("profit_sharing"):
            return self._answer(400, {"code": "INVALID_REQUEST", "message": "该笔订单不支持分账"})
        if order.get("_unfrozen"):
            return self._answer(400, {"code": "INVALID_REQUEST", "message": "订单已完成分账，剩余资金已解冻"})
        return order

    def _new_sharing(self, p: dict[str, Any], receivers: list[dict[str, Any]], unfreeze: bool) -> dict[str, Any]:
        now = _rfc3339(self.clock())
        for r in receivers:
            r.update(result="PENDING", detail_id="36" + secrets.token_hex(11), create_time=now)
        sharing = self.sharings[p["out_order_no"]] = {
            "transaction_id": p["transaction_id"], "out_order_no": p["out_order_no"],
            "order_id": "3008" + secrets.token_hex(12), "state": "PROCESSING", "receivers": receivers,
            "_unfreeze": unfreeze,
        }
        if self.sharing_state == "FINISHED":
            self.complete_sharing(p["out_order_no"])
        return sharing

    def complete_sharing(self, out_order_no: str) -> None:
        """WeChat Pay carries the order out: each receiver SUCCESS, or CLOSED
        with its ``receiver_faults`` reason (the money stays with the payer)."""
        sharing = self.sharings[out_order_no]
        now = _rfc3339(self.clock())
        for r in sharing["receivers"]:
            if r["result"] == "PENDING":
                fault = self.receiver_faults.get(r["account"])
                r.update(result="CLOSED" if fault else "SUCCESS", finish_time=now)
                if fault:
                    r["fail_reason"] = fault
        sharing["state"] = "FINISHED"

    def _sharing_answer(self, sharing: dict[str, Any]) -> HttpResponse:
        return self._answer(200, {k: v for k, v in sharing.items() if not k.startswith("_")})

    def _share(self, p: dict[str, Any]) -> HttpResponse:
        if p.get("appid") != self.appid or not p.get("out_order_no") or not p.get("transaction_id"):
            return self._answer(400, {"code": "PARAM_ERROR", "message": "appid, out_order_no or transaction_id"})
        if p["out_order_no"] in self.sharings:  # the first instruction, never a second split
            if not self._books(self._shared_order(p["transaction_id"]), p.get("sub_mchid")):
                return self._answer(404, {"code": "RESOURCE_NOT_EXISTS", "message": "订单不存在"})
            return self._sharing_answer(self.sharings[p["out_order_no"]])
        order = self._sharable(p)
        if isinstance(order, HttpResponse):
            return order
        receivers = p.get("receivers")
        if not isinstance(receivers, list) or not 1 <= len(receivers) <= 50:
            return self._answer(400, {"code": "PARAM_ERROR", "message": "receivers: 1 to 50"})
        seen = set()
        for r in receivers:
            amount = r.get("amount") if isinstance(r, dict) else None
            if (not isinstance(r, dict) or r.get("type") not in ("MERCHANT_ID", "PERSONAL_OPENID")
                    or not r.get("account") or not r.get("description")
                    or not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0):
                return self._answer(400, {"code": "PARAM_ERROR", "message": f"bad receiver {r!r}"})
            if (r["type"], r["account"]) in seen:
                return self._answer(400, {"code": "PARAM_ERROR", "message": "分账接收方重复"})
            seen.add((r["type"], r["account"]))
        total = order["amount"]["total"]
        cap = (total - fee_of(total)) * self.max_ratio.numerator // self.max_ratio.denominator
        if self._shared_so_far(p["transaction_id"]) + sum(r["amount"] for r in receivers) > cap:
            return self._answer(400, {"code": "INVALID_REQUEST", "message": "分账金额超出最大分账比例"})
        sharing = self._new_sharing(p, [{k: r[k] for k in ("type", "account", "amount", "description")}
                                        for r in receivers], unfreeze=False)
        if p.get("unfreeze_unsplit") is True:
            order["_unfrozen"] = True
        return self._sharing_answer(sharing)

    def _unfreeze(self, p: dict[str, Any]) -> HttpResponse:
        if not (p.get("out_order_no") and p.get("transaction_id") and p.get("description")):
            return self._answer(400, {"code": "PARAM_ERROR", "message": "transaction_id, out_order_no, description"})
        if p["out_order_no"] in self.sharings:
            return self._sharing_answer(self.sharings[p["out_order_no"]])
        order = self._sharable(p)
        if isinstance(order, HttpResponse):
            return order
        total = order["amount"]["total"]
        rest = total - fee_of(total) - self._shared_so_far(p["transaction_id"])
        order["_unfrozen"] = True
        payee = order.get("sub_mchid") or self.mchid
        sharing = self._new_sharing(p, [{"type": "MERCHANT_ID", "account": payee, "amount": rest,
                                         "description": "解冻给分账方"}], unfreeze=True)
        return self._sharing_answer(sharing)

    def _query_sharing(self, out_order_no: str, transaction_id: str, sub_mchid: str | None = None) -> HttpResponse:
        sharing = self.sharings.get(out_order_no)
        if (sharing is None or sharing["transaction_id"] != transaction_id
                or not self._books(self._shared_order(transaction_id), sub_mchid)):
            return self._answer(404, {"code": "RESOURCE_NOT_EXISTS", "message": "记录不存在"})
        if sharing["state"] == "PROCESSING":  # carried out by the time anyone asks again
            self.complete_sharing(out_order_no)
        return self._sharing_answer(sharing)

    def _return_sharing(self, p: dict[str, Any]) -> HttpResponse:
        amount = p.get("amount")
        if (not p.get("out_order_no") or not p.get("out_return_no") or not p.get("return_mchid")
                or not p.get("description") or not isinstance(amount, int) or isinstance(amount, bool)
                or amount <= 0):
            return self._answer(400, {"code": "PARAM_ERROR", "message": "missing or bad parameter"})
        sharing = self.sharings.get(p["out_order_no"])
        if (sharing is None or sharing["_unfreeze"]
                or not self._books(self._shared_order(sharing["transaction_id"]), p.get("sub_mchid"))):
            return self._answer(404, {"code": "RESOURCE_NOT_EXISTS", "message": "分账单不存在"})
        if p["out_return_no"] in self.sharing_returns:
            return self._return_answer(self.sharing_returns[p["out_return_no"]])
        received = sum(r["amount"] for r in sharing["receivers"] if r["type"] == "MERCHANT_ID"
                       and r["account"] == p["return_mchid"] and r["result"] == "SUCCESS")
        returned = sum(r["amount"] for r in self.sharing_returns.values()
                       if r["out_order_no"] == p["out_order_no"] and r["return_mchid"] == p["return_mchid"]
                       and r["result"] != "FAILED")
        if returned + amount > received:
            return self._answer(400, {"code": "INVALID_REQUEST", "message": "回退金额超过可回退金额"})
        returning = self.sharing_returns[p["out_return_no"]] = {
            "order_id": sharing["order_id"], "out_order_no": p["out_order_no"],
            "out_return_no": p["out_return_no"], "return_id": "3008" + secrets.token_hex(12),
            "return_mchid": p["return_mchid"], "amount": amount, "description": p["description"],
            "result": self.return_result, "create_time": _rfc3339(self.clock()),
        }
        if self.return_result != "PROCESSING":
            returning["finish_time"] = returning["create_time"]
        return self._return_answer(returning)

    def _query_return(self, out_return_no: str, out_order_no: str, sub_mchid: str | None = None) -> HttpResponse:
        returning = self.sharing_returns.get(out_return_no)
        if (returning is None or returning["out_order_no"] != out_order_no or not self._books(
                self._shared_order(self.sharings[out_order_no]["transaction_id"]), sub_mchid)):
            return self._answer(404, {"code": "RESOURCE_NOT_EXISTS", "message": "记录不存在"})
        if returning["result"] == "PROCESSING":
            returning.update(result="SUCCESS", finish_time=_rfc3339(self.clock()))
        return self._return_answer(returning)

    def _return_answer(self, returning: dict[str, Any]) -> HttpResponse:
        return self._answer(200, dict(returning))
