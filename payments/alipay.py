"""Alipay (openapi v1, public-key mode, RSA2) behind the ``Gateway`` interface.

We sign with the ``cryptography`` package directly rather than
``python-alipay-sdk``: that SDK calls ``urlopen`` itself (no injected
transport), pulls in pycryptodome, and finds the signed response node by
counting braces, which breaks on a brace inside a string value; the whole
scheme is a few dozen lines here.

Notes on the scheme, and the choices made where Alipay leaves one:

* Notifications are verified over ``k=v&...`` of every parameter except
  ``sign``/``sign_type`` and empty values, sorted by key, values URL-decoded.
* ``notify_time`` is parsed (an unparsable one is ``malformed``) but never
  compared with our clock: Alipay re-sends an unanswered notice for about 25
  hours, a replay changes nothing because callbacks are applied once per
  transaction id, and rejecting late retries would lose real payments.
* A refund reaches the *payment's* ``notify_url`` as a trade notice carrying
  ``refund_fee``/``out_biz_no``/``gmt_refund``, with ``trade_status``
  TRADE_SUCCESS (partial refund) or TRADE_CLOSED (full refund). So refund
  fields are looked at before ``trade_status``: such a notice is never a
  second payment nor a close. Alipay documents ``refund_fee`` there as the
  trade's *total* refunded so far: with several partial refunds the caller
  should post its own refund's amount (found by ``out_refund_no``).
* A refund has no id of its own at Alipay; ``trade_no + ":" + out_biz_no``
  (``out_request_no`` when we ask) is used everywhere: notices, answers, bill.
* Times are Asia/Shanghai, a fixed UTC+8 (China has no daylight saving), so
  no tz database is needed.

Trade splits (issue 6, ``payments.split.SplitGateway``) are
``alipay.trade.order.settle`` (``split``; ``finish`` is the same call with no
receivers and ``royalty_finish`` "true") and ``alipay.trade.order.settle.query``
(``query_split``). A settle answered 10000 is reported ``processing`` with its
receivers ``pending`` until ``query_split`` says each one's outcome: the
answer says the request was taken, the query says what happened. The money is
held for splitting when the trade was created with
``extend_params.royalty_freeze`` (the adapter's ``royalty_freeze=True``).
Alipay has no call that gives a split back to the payee on its own (a split is
unwound by the buyer's refund, ``alipay.trade.refund`` with
``refund_royalty_parameters``), so ``return_split``/``query_return`` raise
``NotImplementedError``.

Collecting for a seller (ISV mode, third-party application authorisation):
a seller that authorised the platform's app gave it an ``app_auth_token``.
A request naming a sub-merchant (``PaymentRequest.sub_merchant``: the
seller's ``userId``, 2088...; ``sub_merchant_auth``: its token) is sent with
``app_auth_token`` as a common (signed) parameter, so the trade is the
seller's own, and precreate names the seller as ``seller_id``; its query,
refund, settle and settle query carry the same token. A sub-merchant
without a token is refused before anything is sent
(``SubMerchantUnsupported``; ``SplitRefused`` ``sub_merchant_unsupported``
for splits). A notice about such a trade names our ``app_id`` with the
authorising seller's app as ``auth_app_id`` (our reading of Alipay's
notice fields: ``auth_app_id`` equals ``app_id`` when no authorisation is
involved); its ``seller_id`` is then accepted whatever ``seller_id`` the
adapter is configured with and handed on as ``GatewayEvent.sub_merchant``,
for the use case to check against the payment.
"""
from __future__ import annotations

import base64
import csv
import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from payments.gateway import (
    Acknowledgement, BillLine, CallbackRejected, CallbackRequest, GatewayError, GatewayEvent,
    GatewayUnavailable, PaymentCreated, PaymentRequest, PaymentState, PaymentStatus,
    RefundAccepted, RefundRequest, SubMerchantUnsupported, Transport,
)
from payments.split import (
    ALIPAY_DEFAULT_MAX_RATIO, FinishRequest, GatewayRefused, ReceiverOutcome, ReceiverResult, ReturnRequest,
    ReturnResult, SplitRefused, SplitRequest, SplitResult, check_receivers, split_state,
)

SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SUCCESS_CODE = "10000"
PAID = ("TRADE_SUCCESS", "TRADE_FINISHED")
_YUAN = re.compile(r"-?[0-9]+(\.[0-9]{1,2})?")  # not \d: no Arabic-Indic digits
RECEIVER_KINDS = ("userId", "loginName")  # trans_in_type
_ROYALTY_STATES: dict[str, ReceiverOutcome] = {"PROCESSING": "pending", "SUCCESS": "success", "FAIL": "closed"}


class CallbackNotActionable(CallbackRejected):
    """A genuine, verified notice that asks for nothing (WAIT_BUYER_PAY: the
    payer scanned the code but has not paid). It is a ``CallbackRejected``
    (code ``not_actionable``) so that nothing is ever posted by a caller that
    does not know it; a caller that does should store ``details`` and answer
    ``acknowledge(True)``, else Alipay re-sends it for a day."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__("not_actionable", message, **details)


def yuan_to_fen(text: str, *, allow_negative: bool = False) -> int:
    """Exact conversion of Alipay's yuan strings; anything but up to two
    decimals (3 decimals, exponents, spaces, "NaN") raises ValueError."""
    if not _YUAN.fullmatch(text) or (text.startswith("-") and not allow_negative):
        raise ValueError(f"not an amount in yuan: {text!r}")
    return int(Decimal(text) * 100)


def fen_to_yuan(fen: int) -> str:
    if fen <= 0:
        raise ValueError("Alipay amounts are positive")
    return f"{fen // 100}.{fen % 100:02d}"


def signing_string(params: Mapping[str, str], *, exclude: tuple[str, ...] = ("sign",)) -> str:
    """Alipay's content to sign: sorted ``k=v`` pairs, empty values left out."""
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k not in exclude and params[k] != "")


def json_member_text(text: str, name: str) -> str | None:
    """The exact raw text of member ``name`` of the top-level JSON object in
    ``text``: Alipay signs those bytes (escapes like ``\\/`` included), so
    they are cut out, not re-serialised. A real JSON scan, not brace counting."""
    decoder = json.JSONDecoder()
    ws = re.compile(r"[ \t\n\r]*")
    i = ws.match(text, 0).end()
    if text[i:i + 1] != "{":
        return None
    i += 1
    while True:
        i = ws.match(text, i).end()
        if text[i:i + 1] != '"':
            return None
        key, i = json.decoder.scanstring(text, i + 1)
        i = ws.match(text, i).end()
        if text[i:i + 1] != ":":
            return None
        start = ws.match(text, i + 1).end()
        _, end = decoder.raw_decode(text, start)
        if key == name:
            return text[start:end]
        i = ws.match(text, end).end()
        if text[i:i + 1] != ",":
            return None
        i += 1


def _time(value: str) -> datetime:
    """``yyyy-MM-dd HH:mm:ss`` in Shanghai; ``gmt_refund`` adds ``.SSS``."""
    whole, dot, fraction = value.partition(".")
    at = datetime.strptime(whole, TIME_FORMAT).replace(tzinfo=SHANGHAI)
    if dot and not re.fullmatch(r"[0-9]{1,6}", fraction):
        raise ValueError(f"bad time {value!r}")
    return at.replace(microsecond=int(fraction.ljust(6, "0"))) if dot else at


class Alipay:
    """The Alipay adapter. ``clock`` (aware datetimes) exists for tests."""

    name = "alipay"

    def __init__(
        self,
        app_id: str,
        app_private_key_pem: bytes,
        alipay_public_key_pem: bytes,
        transport: Transport,
        gateway_url: str = "https://openapi.alipay.com/gateway.do",
        seller_id: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        royalty_freeze: bool = False,
        max_split_ratio: Fraction = ALIPAY_DEFAULT_MAX_RATIO,
    ) -> None:
        """``royalty_freeze``: create trades with ``extend_params.royalty_freeze``
        so their money stays frozen for ``split`` until ``finish``.
        ``max_split_ratio``: how much of a trade (after fees) the contract lets
        be split away; 100 % unless it says less."""
        key = serialization.load_pem_private_key(app_private_key_pem, password=None)
        public = serialization.load_pem_public_key(alipay_public_key_pem)
        if not isinstance(key, rsa.RSAPrivateKey) or not isinstance(public, rsa.RSAPublicKey):
            raise ValueError("Alipay RSA2 needs RSA keys")
        self.app_id, self.seller_id = app_id, seller_id
        self._key, self._alipay_key = key, public
        self._transport, self.gateway_url, self._clock = transport, gateway_url, clock
        if not isinstance(max_split_ratio, Fraction) or not 0 < max_split_ratio <= 1:
            raise ValueError("max_split_ratio must be a Fraction in (0, 1]")
        self.royalty_freeze, self.max_split_ratio = royalty_freeze, max_split_ratio

    # -- signatures -------------------------------------------------------

    def _sign(self, content: str) -> str:
        raw = self._key.sign(content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(raw).decode("ascii")

    def _verifies(self, content: bytes, sign: str) -> bool:
        try:
            # "+" that reached us unencoded was form-decoded into a space.
            raw = base64.b64decode(sign.replace(" ", "+"), validate=True)
            self._alipay_key.verify(raw, content, padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, InvalidSignature):
            return False
        return True

    # -- callbacks --------------------------------------------------------

    def verify_callback(self, request: CallbackRequest) -> GatewayEvent:
        """Payment and refund notices. WAIT_BUYER_PAY raises
        ``CallbackNotActionable``; see the module docstring for refunds."""
        params, charset = self._form(request)
        if not params.get("sign"):
            raise CallbackRejected("malformed", "notice without sign")
        if params.get("sign_type", "RSA2") != "RSA2":
            raise CallbackRejected("bad_signature", f"unsupported sign_type {params['sign_type']!r}")
        content = signing_string(params, exclude=("sign", "sign_type")).encode(charset)
        if not self._verifies(content, params["sign"]):
            raise CallbackRejected("bad_signature", "Alipay signature does not verify")
        if params.get("app_id") != self.app_id:
            raise CallbackRejected("wrong_app", "notice for another app", app_id=params.get("app_id"))
        sub_merchant = None
        if params.get("auth_app_id", self.app_id) not in ("", self.app_id):
            # A trade made under a seller's authorisation: the seller's own.
            sub_merchant = params.get("seller_id")
            if not sub_merchant:
                raise CallbackRejected("malformed", "notice under an authorisation names no seller_id")
        elif self.seller_id is not None and params.get("seller_id") != self.seller_id:
            raise CallbackRejected("wrong_app", "notice for another seller", seller_id=params.get("seller_id"))
        try:
            return self._event(params, sub_merchant)
        except (KeyError, ValueError) as exc:
            raise CallbackRejected("malformed", f"bad or missing field: {exc}") from exc

    def _form(self, request: CallbackRequest) -> tuple[dict[str, str], str]:
        """The form's fields, URL-decoded in its charset (the Content-Type's
        ``charset``, else the form's own ``charset`` field, else utf-8)."""
        match = re.search(r"charset=([\w-]+)", request.header("Content-Type") or "", re.I)
        ascii_fields = dict(parse_qsl(request.body.decode("latin-1"), keep_blank_values=True))
        charset = match.group(1) if match else ascii_fields.get("charset") or "utf-8"
        try:
            pairs = parse_qsl(request.body.decode(charset), keep_blank_values=True,
                              strict_parsing=True, encoding=charset, errors="strict")
        except (LookupError, ValueError) as exc:  # unknown charset, bad bytes, not a form
            raise CallbackRejected("malformed", f"unreadable form: {exc}") from exc
        params = dict(pairs)
        if len(params) != len(pairs):
            raise CallbackRejected("malformed", "a field appears twice")
        return params, charset

    def _event(self, p: dict[str, str], sub_merchant: str | None = None) -> GatewayEvent:
        notified = _time(p["notify_time"])
        common = dict(gateway=self.name, out_trade_no=p["out_trade_no"], currency="CNY",
                      app_id=p["app_id"], raw=p, sub_merchant=sub_merchant)
        trade_no = p["trade_no"]
        if not trade_no or not common["out_trade_no"]:
            raise ValueError("empty trade_no or out_trade_no")
        refund_fee = p.get("refund_fee", "")
        if p.get("out_biz_no") or p.get("gmt_refund") or (refund_fee and yuan_to_fen(refund_fee)):
            refund_no = p["out_biz_no"]
            if not refund_no:
                raise ValueError("refund notice without out_biz_no")
            return GatewayEvent(kind="refund_succeeded", transaction_id=f"{trade_no}:{refund_no}",
                                amount_minor=yuan_to_fen(p["refund_fee"]), out_refund_no=refund_no,
                                occurred_at=_time(p["gmt_refund"]) if p.get("gmt_refund") else notified,
                                **common)
        status = p["trade_status"]
        amount = yuan_to_fen(p["total_amount"])
        if status in PAID:
            at = _time(p["gmt_payment"]) if p.get("gmt_payment") else notified
            return GatewayEvent(kind="payment_succeeded", transaction_id=trade_no,
                                amount_minor=amount, occurred_at=at, **common)
        if status == "TRADE_CLOSED":
            at = _time(p["gmt_close"]) if p.get("gmt_close") else notified
            return GatewayEvent(kind="payment_closed", transaction_id=trade_no,
                                amount_minor=amount, occurred_at=at, **common)
        if status == "WAIT_BUYER_PAY":
            raise CallbackNotActionable("payer has not paid yet", trade_status=status, trade_no=trade_no,
                                        out_trade_no=p["out_trade_no"], notify_id=p.get("notify_id"))
        raise ValueError(f"unknown trade_status {status!r}")

    def acknowledge(self, accepted: bool, message: str = "") -> Acknowledgement:
        """Alipay reads only the body: exactly ``success`` stops the re-sends,
        anything else is retried. A refusal is still HTTP 200 with ``fail``:
        a deliberate refusal is not an outage for proxies or our alerting (the
        caller logs why). ``message`` has nowhere to go in Alipay's dialect."""
        return Acknowledgement(200, b"success" if accepted else b"fail", "text/plain; charset=utf-8")

    # -- openapi calls ----------------------------------------------------

    def _call(self, method: str, biz: dict[str, Any], notify_url: str | None = None,
              tolerated: tuple[str, ...] = (), refusals: bool = False,
              app_auth_token: str | None = None) -> dict[str, Any]:
        """Sign, POST, verify; the response node. ``code`` != 10000 raises
        ``GatewayUnavailable`` (details: code, sub_code, sub_msg) unless its
        ``sub_code`` is ``tolerated`` and the answer is signed. With
        ``refusals``, a signed business or argument error (not 20000 "service
        unavailable", not a ``*SYSTEM_ERROR``) is ``GatewayRefused``.
        ``app_auth_token``: act for the seller that granted it (a common
        parameter, signed with the rest; never put in an error's details)."""
        params = {
            "app_id": self.app_id, "method": method, "format": "JSON", "charset": "utf-8",
            "sign_type": "RSA2", "version": "1.0",
            "timestamp": self._clock().astimezone(SHANGHAI).strftime(TIME_FORMAT),
            "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
        }
        if notify_url:
            params["notify_url"] = notify_url
        if app_auth_token:
            params["app_auth_token"] = app_auth_token
        params["sign"] = self._sign(signing_string(params))
        headers = {"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"}
        try:
            answer = self._transport("POST", self.gateway_url, headers, urlencode(params).encode("ascii"))
        except OSError as exc:  # urllib's, requests' and socket errors all are
            raise GatewayUnavailable(f"{method}: {exc}") from exc
        if answer.status != 200:
            raise GatewayUnavailable(f"{method}: HTTP {answer.status}", status=answer.status)
        try:
            text = answer.body.decode("utf-8")
            node_text = json_member_text(text, method.replace(".", "_") + "_response")
            node_text = node_text or json_member_text(text, "error_response")
            sign = json.loads(text).get("sign")
            node = json.loads(node_text) if node_text else None
        except ValueError as exc:
            raise GatewayUnavailable(f"{method}: unreadable answer") from exc
        if not isinstance(node, dict):
            raise GatewayUnavailable(f"{method}: answer without a response node")
        error = {k: node.get(k) for k in ("code", "msg", "sub_code", "sub_msg")}
        if sign is None and node.get("code") != SUCCESS_CODE:
            # Alipay leaves some gateway-level errors unsigned (e.g. an unknown
            # app_id); reported, but never trusted to mean anything else.
            raise GatewayUnavailable(f"{method}: unsigned error {error}", verified=False, **error)
        if not isinstance(sign, str) or not self._verifies(node_text.encode("utf-8"), sign):
            raise GatewayUnavailable(f"{method}: answer signature does not verify", reason="bad_signature")
        if node.get("code") != SUCCESS_CODE and node.get("sub_code") not in tolerated:
            if refusals and _is_refusal(node):
                raise GatewayRefused(f"{method}: {error}", vendor_code=node.get("sub_code") or node.get("code"),
                                     vendor_message=node.get("sub_msg") or node.get("msg"), verified=True,
                                     alipay_code=node.get("code"), sub_code=node.get("sub_code"))
            raise GatewayUnavailable(f"{method}: {error}", verified=True, **error)
        return node

    @staticmethod
    def _token(sub_merchant: str | None, sub_merchant_auth: str | None) -> str | None:
        """The ``app_auth_token`` to act for ``sub_merchant`` (None: for our
        own app); a sub-merchant without one: ``SubMerchantUnsupported``."""
        if sub_merchant is None:
            return None
        if not sub_merchant_auth:
            raise SubMerchantUnsupported(
                f"Alipay collects for the seller {sub_merchant} only under the app_auth_token its "
                "authorisation gave the platform's app; none was given", sub_merchant=sub_merchant)
        return sub_merchant_auth

    @classmethod
    def _split_token(cls, sub_merchant: str | None, sub_merchant_auth: str | None) -> str | None:
        try:
            return cls._token(sub_merchant, sub_merchant_auth)
        except SubMerchantUnsupported as refused:
            raise SplitRefused(refused.code, str(refused), **refused.details) from None

    @staticmethod
    def _same_trade(node: Mapping[str, Any], out_trade_no: str) -> None:
        if node.get("out_trade_no") != out_trade_no:
            raise GatewayUnavailable("answer is about another trade", out_trade_no=node.get("out_trade_no"))

    def create_payment(self, request: PaymentRequest) -> PaymentCreated:
        """``alipay.trade.precreate``: a QR code URL (``pay_url``). Alipay
        creates the trade only once the code is scanned. For a sub-merchant:
        under its ``app_auth_token``, with it as ``seller_id``."""
        if request.currency != "CNY":
            raise ValueError("Alipay trades are in CNY")
        token = self._token(request.sub_merchant, request.sub_merchant_auth)
        biz: dict[str, Any] = {"out_trade_no": request.out_trade_no, "subject": request.description,
                               "total_amount": fen_to_yuan(request.amount_minor)}
        if request.sub_merchant is not None:
            biz["seller_id"] = request.sub_merchant
        elif self.seller_id:
            biz["seller_id"] = self.seller_id
        if self.royalty_freeze:
            biz["extend_params"] = {"royalty_freeze": "true"}
        if request.expires_at is not None:
            # Relative minutes, rounded down so the code never outlives expires_at.
            minutes = int((request.expires_at - self._clock()).total_seconds() // 60)
            if minutes < 1:
                raise ValueError("expires_at is less than a minute away")
            biz["timeout_express"] = f"{minutes}m"
        node = self._call("alipay.trade.precreate", biz, notify_url=request.notify_url,
                          app_auth_token=token)
        self._same_trade(node, request.out_trade_no)
        if not node.get("qr_code"):
            raise GatewayUnavailable("precreate answer without qr_code")
        return PaymentCreated(out_trade_no=request.out_trade_no, pay_url=node["qr_code"], raw=node)

    def query_payment(self, out_trade_no: str, *, sub_merchant: str | None = None,
                      sub_merchant_auth: str | None = None) -> PaymentStatus:
        """``alipay.trade.query`` (under the sub-merchant's token when the
        trade is its own). ``unknown`` (ACQ.TRADE_NOT_EXIST) is normal for a
        precreated code nobody has scanned yet: it is not a failure."""
        token = self._token(sub_merchant, sub_merchant_auth)
        node = self._call("alipay.trade.query", {"out_trade_no": out_trade_no},
                          tolerated=("ACQ.TRADE_NOT_EXIST",), app_auth_token=token)
        if node.get("code") != SUCCESS_CODE:
            return PaymentStatus(out_trade_no, "unknown", None, None, raw=node, sub_merchant=sub_merchant)
        self._same_trade(node, out_trade_no)
        states: dict[str, PaymentState] = {"WAIT_BUYER_PAY": "pending", "TRADE_SUCCESS": "succeeded",
                                           "TRADE_FINISHED": "succeeded", "TRADE_CLOSED": "closed"}
        try:
            state = states[node["trade_status"]]
            amount = yuan_to_fen(node["total_amount"])
        except (KeyError, ValueError) as exc:
            raise GatewayUnavailable(f"unexpected query answer: {exc}") from exc
        # Asked under the seller's token, the answer is about the seller's trade.
        return PaymentStatus(out_trade_no, state, node.get("trade_no"), amount, raw=node,
                             sub_merchant=sub_merchant)

    def refund(self, request: RefundRequest) -> RefundAccepted:
        """``alipay.trade.refund`` (synchronous). ``fund_change`` Y: money
        moved now; N: already refunded by an earlier identical request, or not
        settled yet, so ``processing`` until a query or notice says more.
        ``notify_url`` is unused: Alipay notifies the payment's notify_url."""
        if request.currency != "CNY":
            raise ValueError("Alipay trades are in CNY")
        token = self._token(request.sub_merchant, request.sub_merchant_auth)
        biz = {"out_trade_no": request.out_trade_no, "out_request_no": request.out_refund_no,
               "refund_amount": fen_to_yuan(request.amount_minor), "refund_reason": request.reason}
        node = self._call("alipay.trade.refund", biz, app_auth_token=token)
        self._same_trade(node, request.out_trade_no)
        refund_id = f"{node['trade_no']}:{request.out_refund_no}" if node.get("trade_no") else None
        state = "succeeded" if node.get("fund_change") == "Y" else "processing"
        return RefundAccepted(request.out_refund_no, refund_id, state, raw=node)

    # -- trade splits (payments.split.SplitGateway) -------------------------

    def split(self, request: SplitRequest) -> SplitResult:
        """``alipay.trade.order.settle``: one ``transfer`` royalty per
        receiver, from the seller (Alipay's default ``trans_out``); amounts in
        yuan strings made from fen with integer arithmetic. Receivers are
        checked first (``SplitRefused``, nothing sent); the cap is the
        caller's ``check_caps``."""
        check_receivers(request.receivers)
        for receiver in request.receivers:
            if receiver.kind not in RECEIVER_KINDS:
                raise SplitRefused("bad_receiver", f"Alipay receivers are {' or '.join(RECEIVER_KINDS)},"
                                   f" not {receiver.kind!r}", account=receiver.account)
        token = self._split_token(request.sub_merchant, request.sub_merchant_auth)
        royalties = [{"royalty_type": "transfer", "trans_in_type": r.kind, "trans_in": r.account,
                      "amount": fen_to_yuan(r.amount_minor), "desc": r.description} for r in request.receivers]
        return self._settle(request.out_order_no, request.transaction_id, royalties, request.finish, token)

    def finish(self, request: FinishRequest) -> SplitResult:
        """``alipay.trade.order.settle`` with no royalty and ``royalty_finish``
        "true": no more splits, the rest of the frozen money to the seller.
        Alipay's settle has no description; ``request.description`` is unused."""
        token = self._split_token(request.sub_merchant, request.sub_merchant_auth)
        return self._settle(request.out_order_no, request.transaction_id, [], True, token)

    def _settle(self, out_request_no: str, trade_no: str, royalties: list[dict[str, str]],
                finish: bool, app_auth_token: str | None) -> SplitResult:
        biz = {"out_request_no": out_request_no, "trade_no": trade_no, "royalty_parameters": royalties,
               "extend_params": {"royalty_finish": "true" if finish else "false"}}
        node = self._call("alipay.trade.order.settle", biz, refusals=True, app_auth_token=app_auth_token)
        if node.get("trade_no") != trade_no:
            raise GatewayUnavailable("settle answer is about another trade", trade_no=node.get("trade_no"))
        receivers = tuple(ReceiverResult(r["trans_in"], yuan_to_fen(r["amount"]), "pending") for r in royalties)
        return SplitResult(out_request_no, "processing", node.get("settle_no"), receivers, raw=node)

    def query_split(self, out_order_no: str, transaction_id: str, *, sub_merchant: str | None = None,
                    sub_merchant_auth: str | None = None) -> SplitResult:
        """``alipay.trade.order.settle.query``: each ``transfer`` detail is a
        receiver (PROCESSING pending, SUCCESS, FAIL closed with its
        ``error_code``); other operation types stay in ``raw``. An unknown
        request is ``GatewayRefused``."""
        token = self._split_token(sub_merchant, sub_merchant_auth)
        node = self._call("alipay.trade.order.settle.query",
                          {"out_request_no": out_order_no, "trade_no": transaction_id}, refusals=True,
                          app_auth_token=token)
        if node.get("out_request_no", out_order_no) != out_order_no:
            raise GatewayUnavailable("settle query answer is about another request",
                                     out_request_no=node.get("out_request_no"))
        details = node.get("royalty_detail_list") or []
        receivers: list[ReceiverResult] = []
        try:
            for d in details:
                if d.get("operation_type", "transfer") != "transfer":
                    continue
                result = _ROYALTY_STATES[d["state"]]
                receivers.append(ReceiverResult(
                    d["trans_in"], _amount_fen(d["amount"]), result,
                    (d.get("error_code") or d.get("error_desc") or None) if result == "closed" else None))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GatewayUnavailable(f"unreadable settle query answer: {exc!r}") from exc
        return SplitResult(out_order_no, split_state(True, receivers), node.get("settle_no"), tuple(receivers),
                           raw=node)

    def return_split(self, request: ReturnRequest) -> ReturnResult:
        raise NotImplementedError(
            "Alipay has no call that returns a split to the payee on its own; a split is unwound by the "
            "buyer's refund (alipay.trade.refund with refund_royalty_parameters), built by the refund use case")

    def query_return(self, out_return_no: str, out_order_no: str, *, sub_merchant: str | None = None,
                     sub_merchant_auth: str | None = None) -> ReturnResult:
        raise NotImplementedError("Alipay has no split returns to query; see return_split")

    # -- bill -------------------------------------------------------------

    def parse_bill(self, data: bytes) -> list[BillLine]:
        """The trade bill's detail CSV (业务明细, from the downloaded zip),
        GBK. ``#`` lines are the banner and totals; columns are found by
        name. ``amount_minor`` is 订单金额 made positive; ``fee_minor`` is the
        fee charged to us (服务费 negated): positive on a payment, negative on
        a refund that gives fee back. An unknown 业务类型 raises."""
        text = data.decode("gb18030")  # GBK's superset: never fails on a GBK bill
        rows = csv.reader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
        lines: list[BillLine] = []
        header: dict[str, int] | None = None
        for row in rows:
            cells = [cell.strip() for cell in row]
            if header is None:
                header = {name: i for i, name in enumerate(cells)}
                continue
            columns = header

            def get(name: str) -> str:
                return cells[columns[name]]
            try:
                kind = {"交易": "payment", "退款": "refund"}[get("业务类型")]
                refund_no = get("退款批次号/请求号") if kind == "refund" else None
                lines.append(BillLine(
                    transaction_id=f"{get('支付宝交易号')}:{refund_no}" if refund_no else get("支付宝交易号"),
                    out_trade_no=get("商户订单号"), kind=kind,  # type: ignore[arg-type]
                    amount_minor=abs(yuan_to_fen(get("订单金额（元）"), allow_negative=True)),
                    fee_minor=-yuan_to_fen(get("服务费（元）") or "0", allow_negative=True),
                    occurred_at=_time(get("完成时间") or get("创建时间")), out_refund_no=refund_no))
            except (KeyError, IndexError, ValueError) as exc:
                raise GatewayError(f"unreadable bill line {cells[:3]}: {exc!r}") from exc
        return lines


def _amount_fen(value: Any) -> int:
    """An answer's amount, a yuan string (or a JSON number: the docs show
    both) to fen, exactly."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"not an amount: {value!r}")
    return yuan_to_fen(value if isinstance(value, str) else repr(value))


def _is_refusal(node: Mapping[str, Any]) -> bool:
    """A signed error that retrying the same request will not change: any
    code but 20000 (service unavailable), unless its sub_code is a system
    error (``ACQ.SYSTEM_ERROR``, ``isp.*``)."""
    sub_code = str(node.get("sub_code") or "")
    return (node.get("code") != "20000" and not sub_code.endswith("SYSTEM_ERROR")
            and not sub_code.startswith("isp."))
