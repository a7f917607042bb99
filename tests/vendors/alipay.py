"""FakeAlipay: Alipay's side of the openapi v1 (RSA2) scheme, in-process.

It holds its own "Alipay" key pair, signs asynchronous notices (form bodies)
as Alipay does, and is a ``Transport``: it verifies the merchant's request
signature with the merchant's public key and answers signed JSON, the
response node serialised with Alipay's ``\\/`` escapes so that a client that
re-serialises instead of cutting out the raw text fails to verify.

Signing here is written independently of ``payments.alipay`` on purpose: a
mistake shared by both sides would otherwise go unnoticed.

Trade splits: ``alipay.trade.order.settle`` and ``.settle.query`` are served
for real, once per ``out_request_no`` (a repeat answers the first settle and
moves nothing), refused over ``max_ratio`` of the trade after the fee,
cumulatively (``ACQ.ALLOC_AMOUNT_VALIDATE_ERROR``), and not at all after a
``royalty_finish``. A new settle's details are ``settle_state``; PROCESSING
ones are carried out (SUCCESS, or FAIL with the ``receiver_faults`` code) at
the next query. ``royalty_freeze`` is recorded on the trade, not enforced.

Third-party application authorisation (ISV mode): ``authorize(user_id)``
is a seller authorising our app; it returns the ``app_auth_token``. A call
carrying that token (a common parameter) acts in the seller's name: the
trade it creates is the seller's (a ``seller_id`` in the request must be
the seller's), and the trade is found again only by calls carrying the
same seller's token (an unknown token is ``aop.invalid-app-auth-token``;
another seller's trade is ``ACQ.TRADE_NOT_EXIST``). Notices about such a
trade name our ``app_id``, the seller as ``seller_id`` and the seller's
authorised app as ``auth_app_id``.
"""
from __future__ import annotations

import base64
import itertools
import json
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, quote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from payments.gateway import CallbackRequest, HttpResponse

CST = timezone(timedelta(hours=8))
GATEWAY_URL = "https://openapi.alipay.com/gateway.do"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def yuan(fen: int) -> str:
    return str((Decimal(fen) / 100).quantize(Decimal("0.01")))


def fee_of(total_fen: int) -> int:
    """Alipay's fee in this fake: 0.6 %, rounded half up to the fen."""
    return (total_fen * 6 + 500) // 1000


def content_to_sign(params: Mapping[str, str], skip: set[str]) -> str:
    pairs = sorted((k, v) for k, v in params.items() if k not in skip and v)
    return "&".join(k + "=" + v for k, v in pairs)


def rsa2_sign(key: rsa.RSAPrivateKey, content: bytes) -> str:
    return base64.b64encode(key.sign(content, padding.PKCS1v15(), hashes.SHA256())).decode()


def form_body(params: Mapping[str, str], charset: str = "utf-8") -> bytes:
    """Percent-encoded as Alipay sends it (spaces as %20, Chinese as bytes)."""
    return "&".join(f"{k}={quote(v, safe='', encoding=charset)}" for k, v in params.items()).encode("ascii")


@dataclass
class Trade:
    out_trade_no: str
    trade_no: str
    total_fen: int
    status: str = "NOT_EXIST"          # until the payer scans the QR code
    refunds: dict[str, int] = field(default_factory=dict)
    royalty_freeze: bool = False
    royalty_finished: bool = False
    settles: dict[str, dict[str, Any]] = field(default_factory=dict)   # out_request_no -> settle
    seller_id: str | None = None       # None: the app's own seller
    auth_app_id: str | None = None     # the authorising seller's app (ISV mode)


class FakeAlipay:
    """One merchant app at a fake Alipay. ``merchant_public_key_pem`` is what
    the merchant uploaded; ``alipay_public_key_pem`` is what Alipay gives the
    merchant. ``requests`` records every decoded openapi request."""

    def __init__(self, merchant_public_key_pem: bytes, app_id: str = "2021000000000001",
                 seller_id: str = "2088000000000001", key: rsa.RSAPrivateKey | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(CST)) -> None:
        self.app_id, self.seller_id, self.clock = app_id, seller_id, clock
        self._key = key or new_key()
        self.alipay_public_key_pem = public_pem(self._key)
        self._merchant_key = serialization.load_pem_public_key(merchant_public_key_pem)
        self.trades: dict[str, Trade] = {}
        self.requests: list[dict[str, str]] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.answer_fault: str | None = None   # None | "tampered" | "busy" (code 20000)
        self.max_ratio = Fraction(1)           # of the trade after the fee
        self.settle_state = "PROCESSING"       # a new settle's details
        self.receiver_faults: dict[str, str] = {}  # trans_in -> error_code: that detail FAILs
        self.authorizations: dict[str, tuple[str, str]] = {}  # app_auth_token -> (user_id, auth_app_id)

    def authorize(self, user_id: str) -> str:
        """A seller (its ``userId``) authorises our app: its ``app_auth_token``."""
        n = next(self._ids)
        token = f"202412BB{n:08d}" + "a" * 24
        self.authorizations[token] = (user_id, f"20219999{n:08d}")
        return token

    def _now(self) -> str:
        return self.clock().astimezone(CST).strftime("%Y-%m-%d %H:%M:%S")

    def new_trade_no(self) -> str:
        return self.clock().astimezone(CST).strftime("%Y%m%d") + "22001" + f"{next(self._ids):015d}"

    # -- notices ----------------------------------------------------------

    def sign(self, params: Mapping[str, str], charset: str = "utf-8") -> dict[str, str]:
        signed = dict(params, sign_type="RSA2")
        signed["sign"] = rsa2_sign(self._key, content_to_sign(signed, {"sign", "sign_type"}).encode(charset))
        return signed

    def notice(self, params: Mapping[str, str | None], charset: str = "utf-8") -> CallbackRequest:
        """A signed notice; ``None`` values are left out (to drop a field)."""
        present = {k: v for k, v in params.items() if v is not None}
        body = form_body(self.sign(present, charset), charset)
        headers = {"Content-Type": f"application/x-www-form-urlencoded; charset={charset}"}
        return CallbackRequest(headers=headers, body=body, received_at=datetime.now(timezone.utc))

    def _trade_fields(self, out_trade_no: str, total_fen: int, trade_no: str | None) -> dict[str, str]:
        with self._lock:  # one trade_no per out_trade_no across notices
            trade = self.trades.setdefault(out_trade_no, Trade(out_trade_no, self.new_trade_no(), total_fen))
        return {
            "notify_time": self._now(), "notify_type": "trade_status_sync",
            "notify_id": f"2024{next(self._ids):030d}", "charset": "utf-8", "version": "1.0",
            "app_id": self.app_id, "seller_id": trade.seller_id or self.seller_id,
            "auth_app_id": trade.auth_app_id or self.app_id,
            "trade_no": trade_no or trade.trade_no,
            "out_trade_no": out_trade_no, "buyer_id": "2088102122524333", "buyer_logon_id": "159****5620",
            "total_amount": yuan(total_fen), "receipt_amount": yuan(total_fen),
            "subject": "channel-ledger order", "gmt_create": self._now(),
        }

    def payment_notice(self, out_trade_no: str, total_fen: int, trade_status: str = "TRADE_SUCCESS",
                       trade_no: str | None = None, **overrides: str | None) -> CallbackRequest:
        """TRADE_SUCCESS, TRADE_FINISHED, WAIT_BUYER_PAY or TRADE_CLOSED."""
        params: dict[str, str | None] = {**self._trade_fields(out_trade_no, total_fen, trade_no),
                                         "trade_status": trade_status}
        if trade_status in ("TRADE_SUCCESS", "TRADE_FINISHED"):
            params["gmt_payment"] = self._now()
        if trade_status == "TRADE_CLOSED":
            params["gmt_close"] = self._now()
        params.update(overrides)
        return self.notice(params)

    def refund_notice(self, out_trade_no: str, out_biz_no: str, refund_fen: int, total_fen: int,
                      trade_no: str | None = None, **overrides: str | None) -> CallbackRequest:
        """Sent to the payment's notify_url: TRADE_CLOSED once all is refunded."""
        params: dict[str, str | None] = {
            **self._trade_fields(out_trade_no, total_fen, trade_no),
            "trade_status": "TRADE_CLOSED" if refund_fen >= total_fen else "TRADE_SUCCESS",
            # gmt_refund is documented with milliseconds: "2015-04-28 15:45:57.320".
            "refund_fee": yuan(refund_fen), "out_biz_no": out_biz_no, "gmt_refund": self._now() + ".320",
        }
        params.update(overrides)
        return self.notice(params)

    def pay(self, out_trade_no: str) -> CallbackRequest:
        """The payer scans and pays a precreated code: the trade succeeds and
        the notice Alipay would send is returned."""
        with self._lock:
            trade = self.trades[out_trade_no]
            trade.status = "TRADE_SUCCESS"
        return self.payment_notice(out_trade_no, trade.total_fen)

    # -- openapi ----------------------------------------------------------

    def __call__(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        params = dict(parse_qsl(body.decode("ascii"), keep_blank_values=True, encoding="utf-8"))
        self.requests.append(params)
        api = params.get("method", "")
        node = api.replace(".", "_") + "_response" if api else "error_response"
        with self._lock:
            answer: Mapping[str, Any] = self._check(method, url, params) or self._dispatch(api, params)
        return self._answer(node, answer)

    def _seller(self, params: Mapping[str, str]) -> tuple[str | None, str | None]:
        """(seller, its authorised app) the call acts for: (None, None) for our own app."""
        token = params.get("app_auth_token")
        return self.authorizations[token] if token else (None, None)

    def _trade(self, out_trade_no: Any, params: Mapping[str, str]) -> Trade | None:
        """The trade, in the books of the seller the call acts for."""
        trade = self.trades.get(out_trade_no)
        return trade if trade is not None and trade.seller_id == self._seller(params)[0] else None

    def _check(self, method: str, url: str, params: dict[str, str]) -> dict[str, str] | None:
        if method != "POST" or url != GATEWAY_URL:
            return _error("40002", "isv.invalid-method", "not a POST to the gateway")
        if params.get("app_id") != self.app_id:
            return _error("40002", "isv.invalid-app-id", "无效的AppID参数")
        for name in ("method", "format", "charset", "sign_type", "timestamp", "version", "biz_content", "sign"):
            if not params.get(name):
                return _error("40001", f"isv.missing-{name.replace('_', '-')}", f"缺少{name}参数")
        try:
            datetime.strptime(params["timestamp"], "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return _error("40002", "isv.invalid-timestamp", "非法的时间戳参数")
        if (params["format"], params["charset"], params["sign_type"], params["version"]) != ("JSON", "utf-8", "RSA2", "1.0"):
            return _error("40002", "isv.invalid-parameter", "unsupported common parameter")
        try:
            self._merchant_key.verify(base64.b64decode(params["sign"]),
                                      content_to_sign(params, {"sign"}).encode("utf-8"),
                                      padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, InvalidSignature):
            return _error("40002", "isv.invalid-signature", "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配")
        if "app_auth_token" in params and params["app_auth_token"] not in self.authorizations:
            return _error("40002", "aop.invalid-app-auth-token", "无效的应用授权令牌")
        return None

    def _dispatch(self, api: str, params: dict[str, str]) -> dict[str, Any]:
        if self.answer_fault == "busy":
            return {"code": "20000", "msg": "Service Currently Unavailable", "sub_code": "isp.unknow-error",
                    "sub_msg": "系统繁忙"}
        biz = json.loads(params["biz_content"])
        if api == "alipay.trade.precreate":
            return self._precreate(biz, params)
        if api == "alipay.trade.query":
            return self._query(biz, params)
        if api == "alipay.trade.refund":
            return self._refund(biz, params)
        if api == "alipay.trade.order.settle":
            return self._settle(biz, params)
        if api == "alipay.trade.order.settle.query":
            return self._settle_query(biz, params)
        return _error("40002", "isv.invalid-method", "不存在的方法名")

    def _precreate(self, biz: dict[str, Any], params: Mapping[str, str]) -> dict[str, str]:
        seller, auth_app_id = self._seller(params)
        if biz.get("seller_id") not in (None, seller or self.seller_id):
            return _error("40004", "ACQ.SELLER_ID_INVALID", "卖家ID与授权商户不符")
        existing = self.trades.get(biz["out_trade_no"])
        if existing and existing.status != "NOT_EXIST":
            return _error("40004", "ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
        fen = int(Decimal(biz["total_amount"]) * 100)
        trade = Trade(biz["out_trade_no"], self.new_trade_no(), fen,
                      royalty_freeze=(biz.get("extend_params") or {}).get("royalty_freeze") == "true",
                      seller_id=seller, auth_app_id=auth_app_id)
        self.trades[trade.out_trade_no] = trade
        return {"code": "10000", "msg": "Success", "out_trade_no": trade.out_trade_no,
                "qr_code": f"https://qr.alipay.com/bax0{trade.trade_no[-8:]}"}

    def _query(self, biz: dict[str, Any], params: Mapping[str, str]) -> dict[str, str]:
        trade = self._trade(biz["out_trade_no"], params)
        if trade is None or trade.status == "NOT_EXIST":
            return _error("40004", "ACQ.TRADE_NOT_EXIST", "交易不存在")
        return {"code": "10000", "msg": "Success", "trade_no": trade.trade_no,
                "out_trade_no": trade.out_trade_no, "buyer_logon_id": "159****5620",
                "trade_status": trade.status, "total_amount": yuan(trade.total_fen)}

    def _refund(self, biz: dict[str, Any], params: Mapping[str, str]) -> dict[str, str]:
        trade = self._trade(biz["out_trade_no"], params)
        if trade is None or trade.status not in ("TRADE_SUCCESS", "TRADE_CLOSED"):
            return _error("40004", "ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        request_no, fen = biz["out_request_no"], int(Decimal(biz["refund_amount"]) * 100)
        fund_change = "N"
        if request_no not in trade.refunds:  # a repeated out_request_no moves no money
            if sum(trade.refunds.values()) + fen > trade.total_fen:
                return _error("40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
            trade.refunds[request_no], fund_change = fen, "Y"
            if sum(trade.refunds.values()) == trade.total_fen:
                trade.status = "TRADE_CLOSED"
        return {"code": "10000", "msg": "Success", "trade_no": trade.trade_no,
                "out_trade_no": trade.out_trade_no, "buyer_logon_id": "159****5620",
                "fund_change": fund_change, "refund_fee": yuan(sum(trade.refunds.values())),
                "gmt_refund_pay": self._now()}

    # -- trade splits -------------------------------------------------------

    def _trade_by_no(self, trade_no: Any, params: Mapping[str, str]) -> Trade | None:
        trade = next((t for t in self.trades.values() if t.trade_no == trade_no), None)
        return trade if trade is not None and trade.seller_id == self._seller(params)[0] else None

    def _settle(self, biz: dict[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
        trade = self._trade_by_no(biz.get("trade_no"), params)
        request_no = biz.get("out_request_no")
        if not request_no:
            return _error("40004", "ACQ.INVALID_PARAMETER", "out_request_no 不能为空")
        if trade is None:
            return _error("40004", "ACQ.TRADE_NOT_EXIST", "交易不存在")
        if request_no in trade.settles:  # the first settle, never a second split
            return {"code": "10000", "msg": "Success", "trade_no": trade.trade_no,
                    "settle_no": trade.settles[request_no]["settle_no"]}
        if trade.status != "TRADE_SUCCESS":
            return _error("40004", "ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        if trade.royalty_finished:
            return _error("40004", "ACQ.TRADE_SETTLE_ERROR", "分账已完结")
        finish = (biz.get("extend_params") or {}).get("royalty_finish") == "true"
        royalties = biz.get("royalty_parameters")
        if not isinstance(royalties, list) or (not royalties and not finish):
            return _error("40004", "ACQ.INVALID_PARAMETER", "royalty_parameters 不能为空")
        details, now = [], self._now()
        for r in royalties:
            try:
                fen = int(Decimal(r["amount"]) * 100)
                if Decimal(r["amount"]) * 100 != fen or fen <= 0:
                    raise ValueError(r["amount"])
                if (r["royalty_type"], r["trans_in_type"]) not in (("transfer", "userId"), ("transfer", "loginName")):
                    raise ValueError(r["trans_in_type"])
                if not r["trans_in"] or not r.get("desc"):
                    raise ValueError("trans_in/desc")
            except (KeyError, TypeError, ArithmeticError, ValueError):
                return _error("40004", "ACQ.INVALID_PARAMETER", f"分账参数错误 {r!r}")
            details.append({"operation_type": "transfer", "trans_out": trade.seller_id or self.seller_id,
                            "trans_out_type": "userId",
                            "trans_in": r["trans_in"], "trans_in_type": r["trans_in_type"], "amount": yuan(fen),
                            "state": "PROCESSING", "detail_id": f"2024{next(self._ids):020d}",
                            "execute_dt": now, "_fen": fen})
        cap = (trade.total_fen - fee_of(trade.total_fen)) * self.max_ratio.numerator // self.max_ratio.denominator
        so_far = sum(d["_fen"] for s in trade.settles.values() for d in s["details"] if d["state"] != "FAIL")
        if so_far + sum(d["_fen"] for d in details) > cap:
            return _error("40004", "ACQ.ALLOC_AMOUNT_VALIDATE_ERROR", "分账金额超过最大可分账金额")
        settle = trade.settles[request_no] = {"settle_no": f"2024{next(self._ids):026d}", "details": details,
                                              "operation_dt": now}
        trade.royalty_finished = finish
        if self.settle_state != "PROCESSING":
            self.carry_out(trade, request_no)
        return {"code": "10000", "msg": "Success", "trade_no": trade.trade_no, "settle_no": settle["settle_no"]}

    def carry_out(self, trade: Trade, out_request_no: str) -> None:
        """Alipay does the transfers: SUCCESS, or FAIL with the receiver's
        ``receiver_faults`` code."""
        for d in trade.settles[out_request_no]["details"]:
            if d["state"] == "PROCESSING":
                fault = self.receiver_faults.get(d["trans_in"])
                d["state"] = "FAIL" if fault else "SUCCESS"
                if fault:
                    d.update(error_code=fault, error_desc="分账失败")

    def _settle_query(self, biz: dict[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
        trade = self._trade_by_no(biz.get("trade_no"), params)
        request_no = biz.get("out_request_no")
        if trade is None or request_no not in trade.settles:
            return _error("40004", "ACQ.TRADE_NOT_EXIST", "分账请求不存在")
        self.carry_out(trade, request_no)  # done by the time anyone asks
        settle = trade.settles[request_no]
        return {"code": "10000", "msg": "Success", "out_request_no": request_no,
                "operation_dt": settle["operation_dt"],
                "royalty_detail_list": [{k: v for k, v in d.items() if not k.startswith("_")}
                                        for d in settle["details"]]}

    def _answer(self, node: str, content: Mapping[str, Any]) -> HttpResponse:
        # Alipay's own JSON writer escapes "/" and keeps Chinese as UTF-8.
        node_text = json.dumps(content, ensure_ascii=False, separators=(",", ":")).replace("/", "\\/")
        sign = rsa2_sign(self._key, node_text.encode("utf-8"))
        if self.answer_fault == "tampered":  # changed after Alipay signed it
            node_text = node_text.replace('"code":"', '"injected":1,"code":"', 1)
        body = '{"' + node + '":' + node_text + ',"sign":"' + sign + '"}'
        return HttpResponse(200, {"Content-Type": "text/html;charset=utf-8"}, body.encode("utf-8"))


def _error(code: str, sub_code: str, sub_msg: str) -> dict[str, str]:
    msg = {"40001": "Missing Required Arguments", "40002": "Invalid Arguments", "40004": "Business Failed"}[code]
    return {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg}
