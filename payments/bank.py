"""The online-banking gateway (企业网银支付): a bank's B2B payment, where the
buyer's company pays from its corporate account.

The bank speaks its own dialect, which this adapter translates:

* Amounts are yuan strings ("1234.56"), converted to fen exactly with
  ``Decimal``; anything with more than two decimals, a sign or an exponent is
  refused rather than rounded.
* Times are ``yyyyMMddHHmmss`` in China Standard Time.
* Callbacks (form fields or JSON, header ``Bank-Signature``, the HMAC scheme
  of ``payments.signing`` over the raw body): ``merId``, ``orderNo`` (our
  out_trade_no), ``bankSerialNo`` (the bank's id of the payment, or of the
  refund in a refund notice), ``tranAmt``, ``tranStat``
  (SUCCESS/FAIL/CLOSED), ``tranTime``; refund notices add ``refundNo`` (our
  out_refund_no), ``refundAmt``, ``refundStat`` (SUCCESS/FAIL).
* API: signed JSON POSTs like the sandbox's (``/b2b/pay``, ``/b2b/query``,
  ``/b2b/refund``); answers carry ``respCode`` ("0000" is success).
* Statement: ``|``-separated, a header line, detail lines, and a control
  line ``TOTAL|<count>|<sum of tranAmt>`` that must match.

The response codes and paths are ours until a real bank's spec is chosen;
they live in the constants below.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, Mapping, NoReturn, Sequence
from urllib.parse import parse_qsl, urlsplit

from payments import signing
from payments.gateway import (
    Acknowledgement,
    BillLine,
    CallbackRejected,
    CallbackRequest,
    EventKind,
    GatewayError,
    GatewayEvent,
    GatewayUnavailable,
    PaymentCreated,
    PaymentRequest,
    PaymentState,
    PaymentStatus,
    RefundAccepted,
    RefundRequest,
    Transport,
    header,
)

SIGNATURE_HEADER = "Bank-Signature"
CURRENCY = "CNY"

# China has kept UTC+8 without daylight saving since 1991, so a fixed offset
# is exact for every bank time we will read, and needs no tz database (slim
# container images may lack one).
CHINA_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")

PAY_PATH, QUERY_PATH, REFUND_PATH = "/b2b/pay", "/b2b/query", "/b2b/refund"
RESP_OK = "0000"
RESP_NOT_FOUND = "1001"       # no such order
RESP_REFUSED = "2001"         # business refusal (refund beyond paid, order unpaid...)
RESP_SYSTEM_ERROR = "9999"    # the bank's own trouble: retry later

PAYMENT_EVENTS: dict[str, EventKind] = {
    "SUCCESS": "payment_succeeded",
    "FAIL": "payment_failed",
    "CLOSED": "payment_closed",
}
REFUND_EVENTS: dict[str, EventKind] = {"SUCCESS": "refund_succeeded", "FAIL": "refund_failed"}
QUERY_STATES: dict[str, PaymentState] = {
    "PROCESSING": "pending",
    "SUCCESS": "succeeded",
    "FAIL": "failed",
    "CLOSED": "closed",
}
REFUND_STATES = {"PROCESSING": "processing", "SUCCESS": "succeeded", "FAIL": "failed"}

STATEMENT_HEADER = "bankSerialNo|orderNo|tranType|tranAmt|feeAmt|tranTime|refundNo"
STATEMENT_KINDS = {"PAY": "payment", "REFUND": "refund"}

_YUAN = re.compile(r"[0-9]{1,15}(\.[0-9]{1,2})?")   # no sign, no exponent, at most 2 decimals
_BANK_TIME = re.compile(r"[0-9]{14}")


def yuan_to_fen(text: str) -> int:
    """ "1234.56" -> 123456, exactly. ``ValueError`` for anything else."""
    if not isinstance(text, str) or not _YUAN.fullmatch(text):
        raise ValueError(f"not a yuan amount with at most two decimals: {text!r}")
    fen = Decimal(text) * 100   # at most 17 digits: exact in the default context
    if fen != fen.to_integral_value():
        raise ValueError(f"not a whole number of fen: {text!r}")
    return int(fen)


def fen_to_yuan(amount_minor: int) -> str:
    """123456 -> "1234.56"."""
    if type(amount_minor) is not int or amount_minor < 0:
        raise ValueError("an amount in fen is a non-negative integer")
    return f"{amount_minor // 100}.{amount_minor % 100:02d}"


def parse_bank_time(text: str) -> datetime:
    """ "20241126103000" -> 2024-11-26 10:30:00+08:00."""
    if not isinstance(text, str) or not _BANK_TIME.fullmatch(text):
        raise ValueError(f"not a yyyyMMddHHmmss time: {text!r}")
    return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=CHINA_TZ)


def format_bank_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("a bank time is formatted from an aware datetime")
    return moment.astimezone(CHINA_TZ).strftime("%Y%m%d%H%M%S")


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _dumps(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class OnlineBankGateway:
    """``Gateway`` for the bank's B2B payment. ``mer_id`` is our merchant
    number at the bank; ``secret`` signs requests, ``secret`` and
    ``previous_secrets`` verify answers and callbacks."""

    name = "bank"

    def __init__(
        self,
        *,
        mer_id: str,
        secret: bytes,
        transport: Transport,
        base_url: str,
        previous_secrets: Sequence[bytes] = (),
        clock: Callable[[], datetime] = _utc_now,
        tolerance_s: int = 300,
        statement_encoding: str = "utf-8",   # some banks still write GBK
    ) -> None:
        self.mer_id = mer_id
        self._secret = secret
        self._secrets = [secret, *previous_secrets]
        self._transport = transport
        self._base_url = base_url.rstrip("/")
        self._clock = clock
        self._tolerance_s = tolerance_s
        self._statement_encoding = statement_encoding

    # -- outgoing calls -------------------------------------------------------

    def create_payment(self, request: PaymentRequest) -> PaymentCreated:
        _require_cny(request.currency)
        payload = {
            "merId": self.mer_id,
            "orderNo": request.out_trade_no,
            "tranAmt": fen_to_yuan(request.amount_minor),
            "curType": CURRENCY,
            "orderDesc": request.description,
            "notifyUrl": request.notify_url,
        }
        if request.expires_at is not None:
            payload["expireTime"] = format_bank_time(request.expires_at)
        answer = self._call(PAY_PATH, payload)
        code = answer.get("respCode")
        if code != RESP_OK:
            _refused(code, answer)
        _check_echo(answer, "orderNo", request.out_trade_no)
        pay_url = answer.get("payUrl")
        if not isinstance(pay_url, str) or not pay_url:
            raise GatewayUnavailable("bank answer lacks payUrl")
        return PaymentCreated(request.out_trade_no, pay_url=pay_url, raw=answer)

    def query_payment(self, out_trade_no: str) -> PaymentStatus:
        answer = self._call(QUERY_PATH, {"merId": self.mer_id, "orderNo": out_trade_no})
        code = answer.get("respCode")
        if code == RESP_NOT_FOUND:
            return PaymentStatus(out_trade_no, "unknown", None, None, raw=answer)
        if code != RESP_OK:
            _refused(code, answer)
        _check_echo(answer, "orderNo", out_trade_no)
        try:
            amount = yuan_to_fen(answer.get("tranAmt"))  # type: ignore[arg-type]
        except ValueError as exc:
            raise GatewayUnavailable("bank answer's tranAmt is not an amount") from exc
        serial = answer.get("bankSerialNo")
        return PaymentStatus(
            out_trade_no=out_trade_no,
            state=QUERY_STATES.get(str(answer.get("tranStat")), "unknown"),
            transaction_id=serial if isinstance(serial, str) and serial else None,
            amount_minor=amount,
            raw=answer,
        )

    def refund(self, request: RefundRequest) -> RefundAccepted:
        _require_cny(request.currency)
        payload = {
            "merId": self.mer_id,
            "orderNo": request.out_trade_no,
            "refundNo": request.out_refund_no,
            "refundAmt": fen_to_yuan(request.amount_minor),
            "orderAmt": fen_to_yuan(request.total_minor),
            "refundReason": request.reason,
            "notifyUrl": request.notify_url,
        }
        answer = self._call(REFUND_PATH, payload)
        code = answer.get("respCode")
        if code == RESP_REFUSED:
            return RefundAccepted(request.out_refund_no, None, "failed", raw=answer)
        if code != RESP_OK:
            _refused(code, answer)
        _check_echo(answer, "refundNo", request.out_refund_no)
        state = REFUND_STATES.get(str(answer.get("refundStat")))
        if state is None:
            raise GatewayUnavailable("bank answered an unknown refundStat", refundStat=answer.get("refundStat"))
        serial = answer.get("bankSerialNo")
        return RefundAccepted(
            request.out_refund_no,
            serial if isinstance(serial, str) and serial else None,
            state,  # type: ignore[arg-type]
            raw=answer,
        )

    def _call(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Sign, POST, verify the answer's signature, decode it."""
        url = self._base_url + path
        body = _dumps(payload)
        signed = signing.request_payload("POST", urlsplit(url).path, body)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signing.sign(self._secret, int(self._clock().timestamp()), signed),
        }
        try:
            response = self._transport("POST", url, headers, body)
        except OSError as exc:
            raise GatewayUnavailable(f"bank did not answer: {exc}") from exc
        try:
            signing.verify(
                header(response.headers, SIGNATURE_HEADER), response.body, self._secrets, self._clock(), self._tolerance_s
            )
        except CallbackRejected as exc:
            raise GatewayUnavailable("bank answer is not validly signed", status=response.status, reason=exc.code) from exc
        if response.status != 200:
            raise GatewayUnavailable(f"bank answered HTTP {response.status}", status=response.status)
        try:
            answer = json.loads(response.body)
        except ValueError as exc:
            raise GatewayUnavailable("bank answer is not JSON") from exc
        if not isinstance(answer, dict):
            raise GatewayUnavailable("bank answer is not a JSON object")
        if "merId" in answer and answer["merId"] != self.mer_id:
            raise GatewayUnavailable("bank answered for another merchant", merId=answer["merId"])
        return answer

    # -- callbacks -------------------------------------------------------------

    def verify_callback(self, request: CallbackRequest) -> GatewayEvent:
        signing.verify(
            request.header(SIGNATURE_HEADER), request.body, self._secrets, request.received_at, self._tolerance_s
        )
        fields = _callback_fields(request)
        mer_id = _required(fields, "merId")
        if mer_id != self.mer_id:
            raise CallbackRejected("wrong_app", "callback is for another merchant", merId=mer_id)
        if fields.get("curType", CURRENCY) != CURRENCY:
            raise CallbackRejected("malformed", "the bank pays in CNY only", curType=fields.get("curType"))

        if "refundNo" in fields:
            kind = REFUND_EVENTS.get(_required(fields, "refundStat"))
            amount_field, out_refund_no = "refundAmt", _required(fields, "refundNo")
        else:
            kind = PAYMENT_EVENTS.get(_required(fields, "tranStat"))
            amount_field, out_refund_no = "tranAmt", None
        if kind is None:
            raise CallbackRejected("malformed", "unknown tranStat/refundStat")
        try:
            amount = yuan_to_fen(_required(fields, amount_field))
            occurred_at = parse_bank_time(_required(fields, "tranTime"))
        except ValueError as exc:
            raise CallbackRejected("malformed", str(exc)) from exc
        return GatewayEvent(
            gateway=self.name,
            kind=kind,
            transaction_id=_required(fields, "bankSerialNo"),
            out_trade_no=_required(fields, "orderNo"),
            amount_minor=amount,
            currency=CURRENCY,
            out_refund_no=out_refund_no,
            occurred_at=occurred_at,
            app_id=mer_id,
            raw=fields,
        )

    def acknowledge(self, accepted: bool, message: str = "") -> Acknowledgement:
        # The bank reads respCode (anything but "0000" makes it notify again);
        # the HTTP status says the same for our logs and proxies.
        if accepted:
            return Acknowledgement(200, _dumps({"respCode": RESP_OK}), "application/json")
        body = _dumps({"respCode": RESP_SYSTEM_ERROR, "respMsg": message or "rejected"})
        return Acknowledgement(400, body, "application/json")

    # -- statement ---------------------------------------------------------------

    def parse_bill(self, data: bytes) -> list[BillLine]:
        """The day's statement as ``BillLine``s. The TOTAL line is the bank's
        control total: a truncated or altered file fails it, and the whole
        statement is refused rather than reconciled in part."""
        try:
            text = data.decode(self._statement_encoding)
        except UnicodeDecodeError as exc:
            raise GatewayError("statement is not in the expected encoding") from exc
        rows = text.lstrip("\ufeff").split("\n")
        while rows and not rows[-1].strip():
            rows.pop()
        rows = [row.rstrip("\r") for row in rows]
        if not rows or rows[0] != STATEMENT_HEADER:
            raise GatewayError("statement line 1: not the expected header", line=1)
        if len(rows) < 2 or not rows[-1].startswith("TOTAL|"):
            raise GatewayError("statement has no TOTAL line (truncated?)", line=len(rows))

        lines = [_statement_line(row, number) for number, row in enumerate(rows[1:-1], start=2)]
        total_line = len(rows)
        parts = rows[-1].split("|")
        try:
            if len(parts) != 3 or not parts[1].isascii() or not parts[1].isdigit():
                raise ValueError("TOTAL line is TOTAL|count|sum")
            count, total = int(parts[1]), yuan_to_fen(parts[2])
        except ValueError as exc:
            raise GatewayError(f"statement line {total_line}: {exc}", line=total_line) from exc
        if count != len(lines) or total != sum(line.amount_minor for line in lines):
            raise GatewayError(
                f"statement line {total_line}: totals do not match the lines",
                line=total_line,
                stated=(count, total),
                counted=(len(lines), sum(line.amount_minor for line in lines)),
            )
        return lines


def _statement_line(row: str, line: int) -> BillLine:
    def bad(why: str) -> NoReturn:
        raise GatewayError(f"statement line {line}: {why}", line=line)

    parts = row.split("|")
    if len(parts) != 7:
        bad(f"expected 7 fields, got {len(parts)}")
    serial, order_no, tran_type, amount, fee, tran_time, refund_no = parts
    kind = STATEMENT_KINDS.get(tran_type)
    if kind is None:
        bad(f"tranType must be PAY or REFUND, not {tran_type!r}")
    if not serial or not order_no:
        bad("bankSerialNo and orderNo are required")
    if kind == "refund" and not refund_no:
        bad("a REFUND line needs refundNo")
    try:
        return BillLine(
            transaction_id=serial,
            out_trade_no=order_no,
            kind=kind,  # type: ignore[arg-type]
            amount_minor=yuan_to_fen(amount),
            fee_minor=yuan_to_fen(fee),
            occurred_at=parse_bank_time(tran_time),
            out_refund_no=refund_no or None,
        )
    except ValueError as exc:
        bad(str(exc))


def _callback_fields(request: CallbackRequest) -> dict[str, str]:
    """The notice's fields, whether posted as a form or as JSON; every value
    must be a string (a JSON number would be a float amount)."""
    content_type = (request.header("Content-Type") or "").lower()
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CallbackRejected("malformed", "callback is not UTF-8") from exc
    if "json" in content_type or (not content_type and text.lstrip().startswith("{")):
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise CallbackRejected("malformed", "callback body is not JSON") from exc
        if not isinstance(payload, dict) or not all(isinstance(v, str) for v in payload.values()):
            raise CallbackRejected("malformed", "callback must be an object of strings")
        return payload
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise CallbackRejected("malformed", "callback body is not a form") from exc
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise CallbackRejected("malformed", "a field appears twice")
    return fields


def _required(fields: Mapping[str, str], key: str) -> str:
    value = fields.get(key)
    if not value:
        raise CallbackRejected("malformed", f"callback lacks {key}")
    return value


def _require_cny(currency: str) -> None:
    if currency != CURRENCY:
        raise GatewayError("the bank pays in CNY only", currency=currency)


def _check_echo(answer: Mapping[str, Any], key: str, expected: str) -> None:
    # A signed answer about another order (a replayed answer) is no answer.
    if answer.get(key) != expected:
        raise GatewayUnavailable(f"bank answered about another {key}", expected=expected, got=answer.get(key))


def _refused(code: Any, answer: Mapping[str, Any]) -> NoReturn:
    details = {"respCode": code, "respMsg": answer.get("respMsg")}
    if code == RESP_SYSTEM_ERROR or not isinstance(code, str):
        raise GatewayUnavailable(f"bank failed: {answer.get('respMsg')}", **details)
    raise GatewayError(f"bank refused the request: {code} {answer.get('respMsg')}", **details)
