"""WeChat Pay API v3 adapter (Native pay, refunds, notifications, trade bill).

Implements ``payments.gateway.Gateway`` with the real v3 scheme: requests are
signed SHA256withRSA with the merchant key (``WECHATPAY2-SHA256-RSA2048``),
every answer and notification is checked against the platform certificate
its ``Wechatpay-Serial`` names, and notification resources are decrypted with
AES-256-GCM under the APIv3 key.

Platform certificates are only trusted within their validity period: one
that is expired or not yet valid verifies nothing (a notification is
rejected ``certificate_expired`` / ``certificate_not_yet_valid``, an answer
is ``GatewayUnavailable`` with that reason), so during a rotation the old and
the new certificate can both be configured and each is used only while it is
valid. Notifications are judged at ``received_at`` (like their timestamp, so
the retry job judges a stored one as it was when it came), answers at the
adapter's clock. An adapter given only expired certificates refuses to start
(``ValueError``); ``certificates_expiring`` lists those about to expire, for
a warning.

Not built on the ``wechatpayv3`` SDK: it sends its requests with ``requests``
itself (no injectable transport) and, given certificates rather than a
platform public key, downloads ``/v3/certificates`` over the network at init
and again on any unknown serial, so it cannot run offline on injected
certificates.

Two modes:

* direct merchant (the default): ``mchid``/``appid`` are the merchant's own,
  payments go to ``/v3/pay/transactions/...``. Such a merchant collects
  only for itself: a request that names a sub-merchant (``sub_merchant``,
  below) is refused before anything is sent (``SubMerchantUnsupported``;
  ``SplitRefused`` ``sub_merchant_unsupported`` for profit sharing), since
  the money would otherwise land in the platform's own account;
* service provider (``sub_mchid`` set, optionally ``sub_appid``): ``mchid``
  and ``appid`` are the service provider's (``sp_mchid``/``sp_appid``; its
  key signs the requests), and every call is made for a sub-merchant:
  payments use the partner endpoints ``/v3/pay/partner/transactions/...``
  (``sp_appid``, ``sp_mchid``, ``sub_mchid`` in the body or the query),
  refunds and profit-sharing bodies carry ``sub_mchid``, profit-sharing
  queries take ``sub_mchid=`` as a query parameter.

  Which sub-merchant: the one a request names (``PaymentRequest``,
  ``RefundRequest``, ``SplitRequest``, ``FinishRequest``, ``ReturnRequest``
  ``.sub_merchant``; the ``sub_merchant=`` keyword of ``query_payment``,
  ``query_split``, ``query_return``), i.e. the seller a payment is
  collected for as payee; else the configured ``sub_mchid``, the default
  that collects everything no seller collects in its own name.
  ``sub_appid`` (the configured sub-merchant's own app) is sent only for
  that sub-merchant. Notifications must name our ``sp_mchid`` (and
  ``sp_appid`` when they name an app); any ``sub_mchid`` is accepted, since
  the service provider collects for many sellers, and is handed on as
  ``GatewayEvent.sub_merchant`` for the use case to check against the
  payment (a notification for another sub-merchant than the payment's is
  money in the wrong seller's name: suspense). ``sub_appid`` is checked
  only for the configured sub-merchant.

There is no close call: an unpaid payment expires by its ``time_expire``.

Profit sharing (issue 6, ``payments.split.SplitGateway``): ``split``,
``query_split``, ``finish`` (unfreeze), ``return_split`` and ``query_return``
call ``/v3/profitsharing/...``, signed and verified like every other call. A
payment can be shared only if it was created with
``settle_info.profit_sharing`` (the adapter's ``profit_sharing=True``):
otherwise WeChat Pay settles it to the merchant at once. In service-provider
mode the sub-merchant is the payer of the split (it must have authorised the
service provider to share, at the ratio it granted). Receivers must have
been added (``/v3/profitsharing/receivers/add``) beforehand, which is account
set-up, not done here; a receiver that was not comes back ``closed``
(``NO_RELATION``) or refused. Receivers are ``MERCHANT_ID`` or
``PERSONAL_OPENID`` (``PERSONAL_SUB_OPENID`` is not supported).
"""
from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
import secrets
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable, Literal, Mapping
from urllib.parse import quote

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from payments.gateway import (
    Acknowledgement, BillLine, CallbackRejected, CallbackRequest, EventKind,
    GatewayError, GatewayEvent, GatewayUnavailable, HttpResponse, PaymentCreated,
    PaymentRequest, PaymentState, PaymentStatus, RefundAccepted, RefundRequest,
    SubMerchantUnsupported, Transport,
    header,
)
from payments.split import (
    WECHATPAY_DEFAULT_MAX_RATIO, FinishRequest, GatewayRefused, ReceiverOutcome, ReceiverResult,
    ReturnRequest, ReturnResult, ReturnState, SplitRefused, SplitRequest, SplitResult, check_receivers,
    split_state,
)

SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
PROBE_PREFIX = "WECHATPAY/SIGNTEST/"
BEIJING = timezone(timedelta(hours=8))

# trade_state -> what the payment is now. REFUND means "paid, then (partly)
# refunded": the payment itself did succeed.
_TRADE_STATES: dict[str, PaymentState] = {
    "NOTPAY": "pending", "USERPAYING": "pending", "SUCCESS": "succeeded",
    "REFUND": "succeeded", "CLOSED": "closed", "REVOKED": "closed", "PAYERROR": "failed",
}
_PAYMENT_EVENTS: dict[str, EventKind] = {
    "SUCCESS": "payment_succeeded", "CLOSED": "payment_closed",
    "REVOKED": "payment_closed", "PAYERROR": "payment_failed",
}
_REFUND_EVENTS: dict[str, EventKind] = {
    "REFUND.SUCCESS": "refund_succeeded", "REFUND.ABNORMAL": "refund_failed",
    "REFUND.CLOSED": "refund_failed",
}
_REFUND_STATES: dict[str, Literal["processing", "succeeded", "failed"]] = {
    "PROCESSING": "processing", "SUCCESS": "succeeded",
    "ABNORMAL": "failed", "CLOSED": "failed",
}
# profit sharing: an order's state is "done?", each receiver has its result
_SHARING_DONE = {"PROCESSING": False, "FINISHED": True}
_RECEIVER_RESULTS: dict[str, ReceiverOutcome] = {"PENDING": "pending", "SUCCESS": "success", "CLOSED": "closed"}
_RETURN_RESULTS: dict[str, ReturnState] = {"PROCESSING": "processing", "SUCCESS": "success", "FAILED": "failed"}
RECEIVER_KINDS = ("MERCHANT_ID", "PERSONAL_OPENID")
# 4xx answers that mean "not now" rather than "no": retried like a 5xx
_RETRYABLE_CODES = frozenset({"SYSTEM_ERROR", "FREQUENCY_LIMITED", "RATELIMIT_EXCEED", "FREQUENCY_LIMIT_EXCEED"})


class BillError(GatewayError, ValueError):
    """The bill is not what WeChat Pay sends; reconciliation must not guess."""

    code = "malformed_bill"


def sign_message(private_key: rsa.RSAPrivateKey, message: bytes) -> str:
    """SHA256withRSA (PKCS#1 v1.5), base64: WeChat's only v3 RSA signature."""
    return base64.b64encode(private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def request_message(method: str, canonical_url: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """What the merchant signs: each part followed by a newline, body raw."""
    return f"{method}\n{canonical_url}\n{timestamp}\n{nonce}\n".encode() + body + b"\n"


def answer_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    """What the platform signs in answers and notifications."""
    return f"{timestamp}\n{nonce}\n".encode() + body + b"\n"


def yuan_to_fen(text: str, max_places: int = 2) -> int:
    """``"12.34"`` -> 1234, exactly (Decimal, never float). Refuses more than
    ``max_places`` decimals and any value that is not a whole number of fen,
    so a sub-fen amount is an error rather than a silent rounding."""
    if not re.fullmatch(r"-?\d+(\.\d{1,%d})?" % max_places, text):
        raise ValueError(f"not a yuan amount with at most {max_places} decimals: {text!r}")
    fen = Decimal(text) * 100
    if fen != fen.to_integral_value():
        raise ValueError(f"not a whole number of fen: {text!r}")
    return int(fen)


class WeChatPayV3:
    """One merchant (mchid + appid) on WeChat Pay API v3, or a service
    provider (mchid + appid) acting for its sub-merchants: the configured
    ``sub_mchid`` by default, another one when a request names it."""

    name = "wechatpay"

    def __init__(
        self, *, mchid: str, appid: str, merchant_serial_no: str, merchant_private_key: bytes,
        apiv3_key: str, platform_certificates: Mapping[str, bytes], transport: Transport,
        base_url: str = "https://api.mch.weixin.qq.com",
        clock: Callable[[], datetime] | None = None, timestamp_tolerance: int = 300,
        profit_sharing: bool = False, max_split_ratio: Fraction = WECHATPAY_DEFAULT_MAX_RATIO,
        sub_mchid: str | None = None, sub_appid: str | None = None,
    ) -> None:
        """``profit_sharing``: create payments with ``settle_info.profit_sharing``
        so their money stays frozen for ``split`` until ``finish``.
        ``max_split_ratio``: the merchant's profit-sharing cap (30 % unless
        WeChat Pay configured another), after fees. ``sub_mchid``: act as
        the service provider ``mchid``, for this sub-merchant unless a
        request names another (``sub_appid``: this sub-merchant's own app,
        optional)."""
        key = serialization.load_pem_private_key(merchant_private_key, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the merchant key must be an RSA private key")
        if len(apiv3_key.encode()) != 32:
            raise ValueError("the APIv3 key must be 32 bytes (AES-256)")
        if not platform_certificates:
            raise ValueError("at least one platform certificate is needed")
        if sub_appid and not sub_mchid:
            raise ValueError("sub_appid is only for the service-provider mode: set sub_mchid too")
        self._mchid, self._appid, self._serial = mchid, appid, merchant_serial_no
        self.sub_mchid, self.sub_appid = sub_mchid or None, sub_appid or None
        self._key = key
        self._aead = AESGCM(apiv3_key.encode())
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._certs = {s.upper(): self._load_certificate(s, pem) for s, pem in platform_certificates.items()}
        now = self._clock()
        if all(cert.not_valid_after_utc < now for cert in self._certs.values()):
            # Nothing could ever verify again: every answer and notification
            # would be refused. Better not to start than to fail each call.
            expired = ", ".join(f"{serial} (notAfter {cert.not_valid_after_utc.isoformat()})"
                                for serial, cert in sorted(self._certs.items()))
            raise ValueError(f"every WeChat Pay platform certificate has expired: {expired}; "
                             "configure the current one")
        self._transport = transport
        self._base_url = base_url.rstrip("/")
        self._tolerance = timestamp_tolerance
        if not isinstance(max_split_ratio, Fraction) or not 0 < max_split_ratio <= 1:
            raise ValueError("max_split_ratio must be a Fraction in (0, 1]")
        self.profit_sharing, self.max_split_ratio = profit_sharing, max_split_ratio

    @staticmethod
    def _load_certificate(serial: str, pem: bytes) -> x509.Certificate:
        cert = x509.load_pem_x509_certificate(pem)
        # A mislabelled certificate would make rotation fail on the day it
        # matters; catch it at start-up instead.
        if f"{cert.serial_number:X}" != serial.upper().lstrip("0"):
            raise ValueError(f"certificate filed under {serial} has serial {cert.serial_number:X}")
        if not isinstance(cert.public_key(), rsa.RSAPublicKey):
            raise ValueError(f"platform certificate {serial} has no RSA key")
        return cert

    def certificates_expiring(self, within: timedelta) -> list[tuple[str, datetime]]:
        """(serial, notAfter) of the platform certificates that expire within
        ``within`` of the adapter's clock, or already have, soonest first:
        for operations to fetch the next one before WeChat Pay signs with it."""
        limit = self._clock() + within
        return sorted(((serial, cert.not_valid_after_utc) for serial, cert in self._certs.items()
                       if cert.not_valid_after_utc <= limit), key=lambda item: item[1])

    # -- signatures ------------------------------------------------------

    def _check_signed(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        """Raise CallbackRejected unless the platform signed ``body`` recently."""
        timestamp = header(headers, "Wechatpay-Timestamp")
        nonce = header(headers, "Wechatpay-Nonce")
        signature = header(headers, "Wechatpay-Signature")
        serial = header(headers, "Wechatpay-Serial")
        if not (timestamp and nonce and signature and serial):
            raise CallbackRejected("malformed", "missing Wechatpay-* signature headers")
        if signature.startswith(PROBE_PREFIX):
            raise CallbackRejected("signature_probe", "WeChat Pay signature probe")
        if not timestamp.isdigit():
            raise CallbackRejected("malformed", "Wechatpay-Timestamp is not a number")
        skew = abs(now.timestamp() - int(timestamp))
        if skew > self._tolerance:
            raise CallbackRejected("stale_timestamp", "timestamp outside tolerance", skew_seconds=skew)
        cert = self._certs.get(serial.upper())
        if cert is None:
            raise CallbackRejected("unknown_certificate", f"no platform certificate {serial}", serial=serial)
        # Outside its validity a certificate vouches for nothing, even if the
        # signature would verify: a rotated-out key may have leaked.
        if now > cert.not_valid_after_utc:
            raise CallbackRejected("certificate_expired",
                                   f"platform certificate {serial} expired at {cert.not_valid_after_utc.isoformat()}",
                                   serial=serial, not_after=cert.not_valid_after_utc.isoformat())
        if now < cert.not_valid_before_utc:
            raise CallbackRejected("certificate_not_yet_valid",
                                   f"platform certificate {serial} is valid only from "
                                   f"{cert.not_valid_before_utc.isoformat()}",
                                   serial=serial, not_before=cert.not_valid_before_utc.isoformat())
        sig_type = header(headers, "Wechatpay-Signature-Type")
        if sig_type not in (None, SIGNATURE_TYPE):
            raise CallbackRejected("bad_signature", f"unsupported signature type {sig_type}")
        try:
            raw_sig = base64.b64decode(signature, validate=True)
            public_key = cert.public_key()
            assert isinstance(public_key, rsa.RSAPublicKey)
            public_key.verify(raw_sig, answer_message(timestamp, nonce, body),
                              padding.PKCS1v15(), hashes.SHA256())
        except (binascii.Error, InvalidSignature):
            raise CallbackRejected("bad_signature", "signature does not verify", serial=serial) from None

    def _authorization(self, method: str, canonical_url: str, body: bytes) -> str:
        timestamp = str(int(self._clock().timestamp()))
        nonce = secrets.token_hex(16).upper()
        signature = sign_message(self._key, request_message(method, canonical_url, timestamp, nonce, body))
        return (f'{SIGNATURE_TYPE} mchid="{self._mchid}",nonce_str="{nonce}",'
                f'signature="{signature}",timestamp="{timestamp}",serial_no="{self._serial}"')

    # -- outgoing calls --------------------------------------------------

    def _send(self, method: str, canonical_url: str,
              payload: Mapping[str, Any] | None) -> tuple[int, Any, dict[str, Any], str | None]:
        """Sign and send: (status, the answer's JSON or None, details for an
        error, why the platform signature did not verify or None)."""
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Authorization": self._authorization(method, canonical_url, body),
                   "Accept": "application/json", "Content-Type": "application/json",
                   "User-Agent": "channel-ledger-wechatpay-v3"}
        try:
            answer: HttpResponse = self._transport(method, self._base_url + canonical_url, headers, body)
        except OSError as exc:
            raise GatewayUnavailable(f"WeChat Pay unreachable: {exc}", path=canonical_url) from exc
        try:
            self._check_signed(answer.headers, answer.body, self._clock())
            reason = None
        except CallbackRejected as exc:
            reason = exc.code
        try:
            data = json.loads(answer.body) if answer.body else {}
        except ValueError:
            data = None
        details = {"status": answer.status, "path": canonical_url, "signature_verified": reason is None}
        if isinstance(data, dict):
            details.update(vendor_code=data.get("code"), vendor_message=data.get("message"))
        return answer.status, data, details, reason

    def _call(self, method: str, canonical_url: str, payload: Mapping[str, Any] | None = None,
              *, refusals: bool = False) -> dict[str, Any]:
        """Sign, send, verify the answer; anything short of a signed 2xx JSON
        answer is GatewayUnavailable (with the vendor's code/message). With
        ``refusals``, a *signed* 4xx with a vendor code other than "busy" is
        the vendor's definitive no: ``GatewayRefused``. An unsigned or
        unverifiable refusal is never trusted: still GatewayUnavailable."""
        status, data, details, reason = self._send(method, canonical_url, payload)
        if not 200 <= status < 300:
            code = details.get("vendor_code")
            if (refusals and 400 <= status < 500 and status != 429 and reason is None
                    and isinstance(code, str) and code not in _RETRYABLE_CODES):
                raise GatewayRefused(f"WeChat Pay refused: {status} {code} {details.get('vendor_message')}",
                                     **details)
            raise GatewayUnavailable(f"WeChat Pay answered {status}", **details)
        if reason is not None:
            raise GatewayUnavailable("WeChat Pay answer signature rejected", reason=reason, **details)
        if not isinstance(data, dict):
            raise GatewayUnavailable("WeChat Pay answer is not a JSON object", **details)
        return data

    def _for(self, sub_merchant: str | None) -> str | None:
        """The sub-merchant a call is made for: the one the request names,
        else the configured one (None: a direct merchant, for itself). A
        direct merchant cannot act for another merchant:
        ``SubMerchantUnsupported``, nothing sent."""
        if sub_merchant is None:
            return self.sub_mchid
        if not isinstance(sub_merchant, str) or not re.fullmatch(r"[0-9]{1,32}", sub_merchant):
            raise SubMerchantUnsupported(f"not a WeChat Pay merchant number: {sub_merchant!r}",
                                         sub_merchant=sub_merchant)
        if self.sub_mchid is None:
            raise SubMerchantUnsupported(
                f"WeChat Pay is configured as the direct merchant {self._mchid}: it cannot collect "
                f"for the sub-merchant {sub_merchant} (service-provider mode needs "
                "CL_WECHATPAY_SUB_MCHID)", sub_merchant=sub_merchant)
        return sub_merchant

    def _split_for(self, sub_merchant: str | None) -> str | None:
        """``_for`` for profit sharing, whose callers expect ``SplitRefused``."""
        try:
            return self._for(sub_merchant)
        except SubMerchantUnsupported as refused:
            raise SplitRefused(refused.code, str(refused), **refused.details) from None

    @staticmethod
    def _sub_merchant(sub_mchid: str | None) -> dict[str, str]:
        """What a refund or profit-sharing body adds in service-provider
        mode: the sub-merchant it is for (nothing for a direct merchant)."""
        return {} if sub_mchid is None else {"sub_mchid": sub_mchid}

    @staticmethod
    def _sub_merchant_query(sub_mchid: str | None) -> str:
        """The same for a query string: ``sub_mchid=...&`` or nothing."""
        return "" if sub_mchid is None else f"sub_mchid={quote(sub_mchid, safe='')}&"

    def create_payment(self, request: PaymentRequest) -> PaymentCreated:
        """Native pay: the payer scans ``code_url`` rendered as a QR code.
        Collected for ``request.sub_merchant`` when it names one (partner
        endpoint), else as the adapter is configured."""
        _require_fen(request.amount_minor)
        sub_mchid = self._for(request.sub_merchant)
        if sub_mchid is None:
            path, payload = "/v3/pay/transactions/native", {"appid": self._appid, "mchid": self._mchid}
        else:
            path = "/v3/pay/partner/transactions/native"
            payload = {"sp_appid": self._appid, "sp_mchid": self._mchid, "sub_mchid": sub_mchid}
            if self.sub_appid and sub_mchid == self.sub_mchid:
                payload["sub_appid"] = self.sub_appid
        payload.update({
            "description": request.description, "out_trade_no": request.out_trade_no,
            "notify_url": request.notify_url,
            "amount": {"total": request.amount_minor, "currency": request.currency},
        })
        if self.profit_sharing:
            payload["settle_info"] = {"profit_sharing": True}
        if request.expires_at is not None:
            payload["time_expire"] = request.expires_at.astimezone(BEIJING).isoformat(timespec="seconds")
        data = self._call("POST", path, payload)
        if not isinstance(data.get("code_url"), str):
            raise GatewayUnavailable("answer has no code_url", raw=data)
        return PaymentCreated(out_trade_no=request.out_trade_no, pay_url=data["code_url"], raw=data)

    def query_payment(self, out_trade_no: str, *, sub_merchant: str | None = None,
                      sub_merchant_auth: str | None = None) -> PaymentStatus:
        """By our ``out_trade_no``, in the books of ``sub_merchant`` (the
        one the payment was created for; ``sub_merchant_auth`` is unused)."""
        sub_mchid = self._for(sub_merchant)
        if sub_mchid is None:
            path = f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}?mchid={quote(self._mchid)}"
        else:
            path = (f"/v3/pay/partner/transactions/out-trade-no/{quote(out_trade_no, safe='')}"
                    f"?sp_mchid={quote(self._mchid)}&sub_mchid={quote(sub_mchid)}")
        data = self._call("GET", path)
        amount = (data.get("amount") or {}).get("total")
        named = data.get("sub_mchid") if sub_mchid is not None else None
        return PaymentStatus(
            out_trade_no=out_trade_no, state=_TRADE_STATES.get(data.get("trade_state", ""), "unknown"),
            transaction_id=data.get("transaction_id"),
            amount_minor=amount if _is_fen(amount) else None, raw=data,
            sub_merchant=named if isinstance(named, str) and named else sub_mchid,
        )

    def refund(self, request: RefundRequest) -> RefundAccepted:
        """``POST /v3/refund/domestic/refunds``, with ``sub_mchid`` in the
        body for a payment collected for a sub-merchant."""
        _require_fen(request.amount_minor)
        _require_fen(request.total_minor)
        sub_mchid = self._for(request.sub_merchant)
        payload: dict[str, Any] = {
            "out_trade_no": request.out_trade_no, "out_refund_no": request.out_refund_no,
            "notify_url": request.notify_url,
            "amount": {"refund": request.amount_minor, "total": request.total_minor,
                       "currency": request.currency},
        }
        if request.reason:
            payload["reason"] = request.reason
        payload.update(self._sub_merchant(sub_mchid))
        data = self._call("POST", "/v3/refund/domestic/refunds", payload)
        state = _REFUND_STATES.get(data.get("status", ""))
        if state is None:
            # Retrying is safe: WeChat Pay deduplicates on out_refund_no.
            raise GatewayUnavailable(f"unknown refund status {data.get('status')!r}", raw=data)
        return RefundAccepted(out_refund_no=request.out_refund_no, refund_id=data.get("refund_id"),
                              state=state, raw=data)

    # -- profit sharing (payments.split.SplitGateway) --------------------

    def split(self, request: SplitRequest) -> SplitResult:
        """``POST /v3/profitsharing/orders``. Receivers are checked here
        first (``SplitRefused``, nothing sent); the cap is the caller's
        ``check_caps`` (the adapter does not know the payment's fee). A
        repeated ``out_order_no`` gets WeChat Pay's first instruction back."""
        check_receivers(request.receivers)
        for receiver in request.receivers:
            if receiver.kind not in RECEIVER_KINDS:
                raise SplitRefused("bad_receiver", f"WeChat Pay receivers are {' or '.join(RECEIVER_KINDS)},"
                                   f" not {receiver.kind!r}", account=receiver.account)
        sub_mchid = self._split_for(request.sub_merchant)
        payload = {
            "appid": self._appid, "transaction_id": request.transaction_id,
            "out_order_no": request.out_order_no,
            "receivers": [{"type": r.kind, "account": r.account, "amount": r.amount_minor,
                           "description": r.description} for r in request.receivers],
            "unfreeze_unsplit": request.finish, **self._sub_merchant(sub_mchid),
        }
        data = self._call("POST", "/v3/profitsharing/orders", payload, refusals=True)
        return self._sharing_result(data, request.out_order_no, request.transaction_id)

    def query_split(self, out_order_no: str, transaction_id: str, *, sub_merchant: str | None = None,
                    sub_merchant_auth: str | None = None) -> SplitResult:
        """``GET /v3/profitsharing/orders/{out_order_no}``; also answers for
        a ``finish`` (its ``out_order_no``). Unknown: ``GatewayRefused``
        (404), which after a lost answer means the instruction never arrived."""
        sub_mchid = self._split_for(sub_merchant)
        path = (f"/v3/profitsharing/orders/{quote(out_order_no, safe='')}"
                f"?{self._sub_merchant_query(sub_mchid)}transaction_id={quote(transaction_id, safe='')}")
        return self._sharing_result(self._call("GET", path, refusals=True), out_order_no, transaction_id)

    def finish(self, request: FinishRequest) -> SplitResult:
        """``POST /v3/profitsharing/orders/unfreeze``: what is still frozen
        goes to us (the payee); the answer's receiver is the payee itself."""
        sub_mchid = self._split_for(request.sub_merchant)
        payload = {"transaction_id": request.transaction_id, "out_order_no": request.out_order_no,
                   "description": request.description, **self._sub_merchant(sub_mchid)}
        data = self._call("POST", "/v3/profitsharing/orders/unfreeze", payload, refusals=True)
        return self._sharing_result(data, request.out_order_no, request.transaction_id)

    def return_split(self, request: ReturnRequest) -> ReturnResult:
        """``POST /v3/profitsharing/return-orders``: a merchant receiver
        (``return_account`` is its mchid) gives money back to us."""
        if not _is_fen(request.amount_minor) or request.amount_minor == 0:
            raise SplitRefused("bad_amount", f"amount must be a positive int in fen, not {request.amount_minor!r}")
        sub_mchid = self._split_for(request.sub_merchant)
        payload = {"out_order_no": request.out_order_no, "out_return_no": request.out_return_no,
                   "return_mchid": request.return_account, "amount": request.amount_minor,
                   "description": request.description, **self._sub_merchant(sub_mchid)}
        data = self._call("POST", "/v3/profitsharing/return-orders", payload, refusals=True)
        return self._return_result(data, request.out_return_no, request.out_order_no)

    def query_return(self, out_return_no: str, out_order_no: str, *, sub_merchant: str | None = None,
                     sub_merchant_auth: str | None = None) -> ReturnResult:
        sub_mchid = self._split_for(sub_merchant)
        path = (f"/v3/profitsharing/return-orders/{quote(out_return_no, safe='')}"
                f"?{self._sub_merchant_query(sub_mchid)}out_order_no={quote(out_order_no, safe='')}")
        return self._return_result(self._call("GET", path, refusals=True), out_return_no, out_order_no)

    @staticmethod
    def _sharing_result(data: dict[str, Any], out_order_no: str, transaction_id: str) -> SplitResult:
        """A verified answer is still checked to be about *this* instruction
        and to be readable; if not, GatewayUnavailable (retry, then alert)."""
        if data.get("out_order_no") != out_order_no or data.get("transaction_id") != transaction_id:
            raise GatewayUnavailable("answer is about another profit-sharing order", raw=data)
        done = _SHARING_DONE.get(data.get("state", ""))
        receivers = data.get("receivers") or []
        if done is None or not isinstance(receivers, list):
            raise GatewayUnavailable(f"unknown profit-sharing state {data.get('state')!r}", raw=data)
        results = []
        for r in receivers:
            result = _RECEIVER_RESULTS.get(r.get("result", "")) if isinstance(r, dict) else None
            if result is None or not isinstance(r.get("account"), str) or not _is_fen(r.get("amount")):
                raise GatewayUnavailable(f"unreadable profit-sharing receiver {r!r}", raw=data)
            results.append(ReceiverResult(r["account"], r["amount"], result, r.get("fail_reason") or None))
        return SplitResult(out_order_no, split_state(done, results), data.get("order_id"), tuple(results),
                           raw=data)

    @staticmethod
    def _return_result(data: dict[str, Any], out_return_no: str, out_order_no: str) -> ReturnResult:
        if data.get("out_return_no") != out_return_no or data.get("out_order_no") != out_order_no:
            raise GatewayUnavailable("answer is about another profit-sharing return", raw=data)
        state = _RETURN_RESULTS.get(data.get("result", ""))
        if state is None:
            raise GatewayUnavailable(f"unknown profit-sharing return result {data.get('result')!r}", raw=data)
        return ReturnResult(out_return_no, state, data.get("fail_reason") or None, raw=data)

    # -- callbacks -------------------------------------------------------

    def verify_callback(self, request: CallbackRequest) -> GatewayEvent:
        """Checks run cheapest and most specific first; the body is trusted
        only once its signature verified. Staleness is judged against
        ``received_at`` (when it reached us), not when a worker gets to it."""
        self._check_signed(request.headers, request.body, request.received_at)
        try:
            envelope = json.loads(request.body)
            resource = envelope["resource"]
            if resource.get("algorithm") != "AEAD_AES_256_GCM":
                raise CallbackRejected("malformed", f"unsupported algorithm {resource.get('algorithm')}")
            ciphertext = base64.b64decode(resource["ciphertext"], validate=True)
            nonce, aad = resource["nonce"].encode(), (resource.get("associated_data") or "").encode()
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise CallbackRejected("malformed", "notification envelope is not WeChat Pay's") from None
        try:
            plaintext = self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            # The RSA signature already proved WeChat sent this, so a failing
            # GCM tag means the resource was not sealed with *our* APIv3 key
            # (key reset, or another merchant's): an authentication failure,
            # hence bad_signature, which is alerted on, not "malformed".
            raise CallbackRejected("bad_signature", "resource does not decrypt under the APIv3 key") from None
        except ValueError:  # e.g. a nonce length AES-GCM refuses
            raise CallbackRejected("malformed", "resource cannot be decrypted") from None
        try:
            data = json.loads(plaintext)
            if not isinstance(data, dict):
                raise ValueError
        except ValueError:
            raise CallbackRejected("malformed", "decrypted resource is not a JSON object") from None
        if not self._ours(data):
            raise CallbackRejected("wrong_app", "notification is for another merchant or app",
                                   mchid=data.get("mchid", data.get("sp_mchid")),
                                   appid=data.get("appid", data.get("sp_appid")),
                                   sub_mchid=data.get("sub_mchid"))
        return self._event(str(envelope.get("event_type", "")), data)

    def _ours(self, data: dict[str, Any]) -> bool:
        """Is the decrypted resource about our merchant (and app, when it
        names one)? In service-provider mode WeChat Pay names the service
        provider ``sp_mchid``/``sp_appid`` and the sub-merchant ``sub_mchid``
        (refunds name no app): any sub-merchant of ours is accepted (whether
        it is the payment's is the use case's check, on
        ``GatewayEvent.sub_merchant``); ``sub_appid`` is checked for the
        configured sub-merchant, the only one whose app we know."""
        if self.sub_mchid is None:
            return data.get("mchid") == self._mchid and data.get("appid", self._appid) == self._appid
        sub_mchid = data.get("sub_mchid")
        return (data.get("sp_mchid") == self._mchid and isinstance(sub_mchid, str) and sub_mchid != ""
                and data.get("sp_appid", self._appid) == self._appid
                and (self.sub_appid is None or sub_mchid != self.sub_mchid
                     or data.get("sub_appid", self.sub_appid) == self.sub_appid))

    def _event(self, event_type: str, data: dict[str, Any]) -> GatewayEvent:
        amount = data.get("amount")
        if not isinstance(amount, dict):
            raise CallbackRejected("malformed", "resource has no amount")
        if event_type.startswith("TRANSACTION."):
            kind = _PAYMENT_EVENTS.get(str(data.get("trade_state")))
            ids, value = ("transaction_id", "out_trade_no"), amount.get("total")
        else:
            kind = _REFUND_EVENTS.get(event_type)
            ids, value = ("refund_id", "out_trade_no", "out_refund_no"), amount.get("refund")
        if kind is None:
            raise CallbackRejected("malformed", f"unhandled event {event_type} / {data.get('trade_state')}")
        if not all(isinstance(data.get(name), str) and data[name] for name in ids) or not _is_fen(value):
            raise CallbackRejected("malformed", f"resource lacks {', '.join(ids)} or a fen amount")
        occurred_at = None
        if data.get("success_time"):
            try:
                occurred_at = datetime.fromisoformat(data["success_time"])
            except (TypeError, ValueError):
                raise CallbackRejected("malformed", "success_time is not RFC 3339") from None
            if occurred_at.tzinfo is None:
                raise CallbackRejected("malformed", "success_time has no offset")
        return GatewayEvent(
            gateway=self.name, kind=kind, transaction_id=data[ids[0]], out_trade_no=data["out_trade_no"],
            amount_minor=value, currency=amount.get("currency") or "CNY",
            out_refund_no=data.get("out_refund_no"), occurred_at=occurred_at,
            app_id=data.get("appid", data.get("sp_appid")), raw=data,
            sub_merchant=data["sub_mchid"] if self.sub_mchid is not None else None,
        )

    def acknowledge(self, accepted: bool, message: str = "") -> Acknowledgement:
        """204 when accepted. A rejection is always 400: WeChat Pay retries
        any 4xx/5xx alike, and guessing "server error" from free text would
        be fragile; the message says why."""
        if accepted:
            return Acknowledgement(status=204, body=b"", content_type="application/json")
        body = json.dumps({"code": "FAIL", "message": message or "rejected"}, ensure_ascii=False)
        return Acknowledgement(status=400, body=body.encode(), content_type="application/json")

    # -- bill ------------------------------------------------------------

    def parse_bill(self, data: bytes) -> list[BillLine]:
        """The trade bill (ALL, SUCCESS or REFUND type): header, one line per
        trade with every field prefixed by a backtick, then a summary header
        and line. Payments (trade state SUCCESS) and successful refunds are
        returned; amounts match the notifications' (order total, applied
        refund); fees keep their sign (a refund's is negative: fee returned).
        Fees are written with 5 decimals but must still be whole fen."""
        try:
            rows = [r for r in csv.reader(io.StringIO(data.decode("utf-8-sig"))) if r]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise BillError(f"unreadable bill: {exc}") from exc
        if len(rows) < 3 or rows[-2][0] != "总交易单数":
            raise BillError("bill has no summary lines")
        header, trades = rows[0], rows[1:-2]
        summary = dict(zip(rows[-2], (f.lstrip("`") for f in rows[-1])))
        if summary.get("总交易单数") != str(len(trades)):
            raise BillError(f"summary counts {summary.get('总交易单数')} trades, bill has {len(trades)}")
        lines: list[BillLine] = []
        for number, row in enumerate(trades, start=2):
            if len(row) != len(header):
                raise BillError(f"line {number}: {len(row)} fields, header has {len(header)}")
            try:
                line = self._bill_line(dict(zip(header, (f.removeprefix("`") for f in row))))
            except (KeyError, ValueError) as exc:
                raise BillError(f"line {number}: {exc}") from exc
            if line is not None:
                lines.append(line)
        return lines

    @staticmethod
    def _bill_line(f: dict[str, str]) -> BillLine | None:
        occurred_at = datetime.strptime(f["交易时间"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
        fee = yuan_to_fen(f["手续费"], max_places=5)
        if f["交易状态"] == "SUCCESS":
            return BillLine(transaction_id=f["微信订单号"], out_trade_no=f["商户订单号"], kind="payment",
                            amount_minor=yuan_to_fen(f["订单金额"]), fee_minor=fee, occurred_at=occurred_at)
        if f["交易状态"] == "REFUND" and f.get("退款状态", "SUCCESS") == "SUCCESS":
            return BillLine(transaction_id=f["微信退款单号"], out_trade_no=f["商户订单号"], kind="refund",
                            amount_minor=yuan_to_fen(f["申请退款金额"]), fee_minor=fee,
                            occurred_at=occurred_at, out_refund_no=f["商户退款单号"])
        return None  # revoked trades and refunds still processing move no money yet


def _is_fen(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _require_fen(value: Any) -> None:
    if not _is_fen(value) or value == 0:
        raise ValueError(f"amount must be a positive int in fen, not {value!r}")
