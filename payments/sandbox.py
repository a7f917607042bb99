"""The sandbox gateway adapter: the demo's payment provider, spoken to exactly
like a real one (signed JSON over HTTP both ways, signed callbacks, a daily
bill), so nothing above the ``Gateway`` interface can tell it is simulated.
``payments.sandbox_vendor`` is the provider on the other end of the wire.

Wire protocol (the vendor implements the other side):

* Requests: JSON bodies, header ``Sandbox-Signature`` = ``signing.sign`` over
  ``signing.request_payload(method, path, body)`` with the shared secret.
  ``POST /payments``, ``GET /payments/<out_trade_no>``, ``POST /refunds``.
* Answers: JSON, header ``Sandbox-Signature`` over the body. Errors are
  ``{"error": code, "message": text}`` with a 4xx/5xx status.
* Callbacks: ``{"id", "type", "data": {...}, "app_id"}`` signed over the
  body; ``type`` is one of ``CALLBACK_TYPES``. For refund events
  ``data.transaction_id`` is the refund's id, as ``GatewayEvent`` wants.
* Bill: CSV with the header ``BILL_HEADER``; amounts in minor units.
* Splits (``payments.split.SplitGateway``, issue 6): ``POST /splits``
  (``out_order_no``, ``transaction_id``, ``receivers`` of ``account``,
  ``kind``, ``amount_minor``, ``description``; ``finish``), ``POST
  /splits/finish``, ``GET /splits/<transaction_id>/<out_order_no>``, ``POST
  /split-returns``, ``GET /split-returns/<out_order_no>/<out_return_no>``,
  signed like every other call. A split answers ``{"id", "out_order_no",
  "transaction_id", "status": processing|finished, "receivers": [{account,
  kind, amount_minor, result: pending|success|closed, fail_reason}]}``; a
  return ``{"id", "out_return_no", "out_order_no", "status":
  processing|success|failed, "fail_reason"}``. A refusal (400, 404, 409,
  422) is ``GatewayRefused`` with the vendor's ``error`` as its code.
* Sub-merchants (a payment collected for a seller as payee, in its own
  name): ``POST /payments`` may carry ``sub_merchant`` (the seller's sandbox
  account); the provider keeps it on the payment, echoes it in every answer
  and callback about the payment (``data.sub_merchant``), and finds the
  payment for a refund, split, finish or return (``sub_merchant`` in the
  body) or a query (``?sub_merchant=`` in the query string) only when the
  same sub-merchant is named (else 404), as a real provider looks a trade
  up in that merchant's books. A request's signature covers its path *and*
  query string. The sandbox needs no credential to act for a sub-merchant
  (``sub_merchant_auth`` is ignored).
"""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timezone
from fractions import Fraction
from typing import Any, Callable, Mapping, NoReturn, Sequence
from urllib.parse import quote, urlencode, urlsplit

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
)
from payments.split import (
    FinishRequest,
    GatewayRefused,
    ReceiverOutcome,
    ReceiverResult,
    ReturnRequest,
    ReturnResult,
    ReturnState,
    SplitRefused,
    SplitRequest,
    SplitResult,
    check_receivers,
    split_state,
)

SIGNATURE_HEADER = "Sandbox-Signature"

CALLBACK_TYPES: dict[str, EventKind] = {
    "payment.succeeded": "payment_succeeded",
    "payment.failed": "payment_failed",
    "payment.closed": "payment_closed",
    "refund.succeeded": "refund_succeeded",
    "refund.failed": "refund_failed",
}

# The vendor's payment statuses, as our interface names them.
PAYMENT_STATES: dict[str, PaymentState] = {
    "created": "pending",
    "succeeded": "succeeded",
    "failed": "failed",
    "closed": "closed",
}

BILL_HEADER = ["transaction_id", "out_trade_no", "kind", "amount_minor", "fee_minor", "occurred_at", "out_refund_no"]

# The sandbox's split product, like WeChat Pay's: 30 % of a payment after its
# fee may leave the payee unless the provider was set up otherwise.
SANDBOX_DEFAULT_MAX_RATIO = Fraction(3, 10)
_SPLIT_STATES = {"processing": False, "finished": True}
_RECEIVER_RESULTS: dict[str, ReceiverOutcome] = {"pending": "pending", "success": "success",
                                                 "closed": "closed"}
_RETURN_STATES: dict[str, ReturnState] = {"processing": "processing", "success": "success",
                                          "failed": "failed"}

_UNSIGNED = re.compile(r"[0-9]{1,18}")   # ASCII digits only: int() would take "1_000" or " 7"
_SIGNED = re.compile(r"-?[0-9]{1,18}")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, in any case (HTTP headers are case-insensitive)."""
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def dumps(payload: Mapping[str, Any]) -> bytes:
    """Compact, key-sorted JSON: the same payload always signs the same."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class SandboxGateway:
    """``Gateway`` for the sandbox provider.

    ``secret`` signs our requests; ``secret`` and ``previous_secrets`` verify
    answers and callbacks (keep the old secret there while rotating).
    When the vendor answers in-process (``transport=SandboxVendor(...)``) the
    host in ``base_url`` is never contacted.
    """

    name = "sandbox"

    def __init__(
        self,
        *,
        app_id: str,
        secret: bytes,
        transport: Transport,
        base_url: str = "http://sandbox.invalid",
        previous_secrets: Sequence[bytes] = (),
        clock: Clock = utc_now,
        tolerance_s: int = 300,
        max_split_ratio: Fraction = SANDBOX_DEFAULT_MAX_RATIO,
    ) -> None:
        """``max_split_ratio``: how much of a payment (after the fee) the
        provider lets be split away from the payee."""
        if not isinstance(max_split_ratio, Fraction) or not 0 < max_split_ratio <= 1:
            raise ValueError("max_split_ratio must be a Fraction in (0, 1]")
        self.max_split_ratio = max_split_ratio
        self.app_id = app_id
        self._secret = secret
        self._secrets = [secret, *previous_secrets]
        self._transport = transport
        self._base_url = base_url.rstrip("/")
        self._clock = clock
        self._tolerance_s = tolerance_s

    # -- outgoing calls -------------------------------------------------------

    def create_payment(self, request: PaymentRequest) -> PaymentCreated:
        payload = {
            "out_trade_no": request.out_trade_no,
            "amount_minor": request.amount_minor,
            "currency": request.currency,
            "description": request.description,
            "notify_url": request.notify_url,
            "expires_at": request.expires_at.isoformat() if request.expires_at else None,
            **_for(request.sub_merchant),
        }
        status, answer = self._call("POST", "/payments", payload)
        if status != 200:
            _refused(status, answer)
        self._check_echo(answer, "out_trade_no", request.out_trade_no)
        self._check_echo(answer, "sub_merchant", request.sub_merchant)
        return PaymentCreated(
            out_trade_no=request.out_trade_no,
            pay_url=_answer_str(answer, "pay_url"),
            prepay_id=_answer_str(answer, "id"),
            raw=answer,
        )

    def query_payment(self, out_trade_no: str, *, sub_merchant: str | None = None,
                      sub_merchant_auth: str | None = None) -> PaymentStatus:
        status, answer = self._call("GET", "/payments/" + quote(out_trade_no, safe="") + _query(sub_merchant),
                                    None)
        if status == 404:
            return PaymentStatus(out_trade_no, "unknown", None, None, raw=answer)
        if status != 200:
            _refused(status, answer)
        self._check_echo(answer, "out_trade_no", out_trade_no)
        return PaymentStatus(
            out_trade_no=out_trade_no,
            state=PAYMENT_STATES.get(str(answer.get("status")), "unknown"),
            # The sandbox names a payment once, at creation (as Stripe does),
            # so its id is known even while pending.
            transaction_id=_answer_str(answer, "id"),
            amount_minor=_answer_int(answer, "amount_minor"),
            raw=answer,
            sub_merchant=_answer_optional_str(answer, "sub_merchant"),
        )

    def refund(self, request: RefundRequest) -> RefundAccepted:
        payload = {
            "out_trade_no": request.out_trade_no,
            "out_refund_no": request.out_refund_no,
            "amount_minor": request.amount_minor,
            "total_minor": request.total_minor,
            "currency": request.currency,
            "reason": request.reason,
            "notify_url": request.notify_url,
            **_for(request.sub_merchant),
        }
        status, answer = self._call("POST", "/refunds", payload)
        if status == 422:
            # The sandbox refused this refund (beyond what was paid, not paid
            # yet...): a definite answer, not an outage.
            return RefundAccepted(request.out_refund_no, None, "failed", raw=answer)
        if status != 200:
            _refused(status, answer)
        self._check_echo(answer, "out_refund_no", request.out_refund_no)
        state = answer.get("status")
        if state not in ("processing", "succeeded", "failed"):
            raise GatewayUnavailable("sandbox answered an unknown refund status", status=state)
        return RefundAccepted(request.out_refund_no, _answer_str(answer, "id"), state, raw=answer)

    # -- splits (payments.split.SplitGateway) ----------------------------------

    def split(self, request: SplitRequest) -> SplitResult:
        """``POST /splits``. Receivers are checked here first (``SplitRefused``,
        nothing sent); the cap is the caller's ``check_caps``. A repeated
        ``out_order_no`` gets the provider's first split back."""
        check_receivers(request.receivers)
        payload = {
            "out_order_no": request.out_order_no, "transaction_id": request.transaction_id,
            "receivers": [{"account": r.account, "kind": r.kind, "amount_minor": r.amount_minor,
                           "description": r.description} for r in request.receivers],
            "finish": request.finish,
            **_for(request.sub_merchant),
        }
        return self._split_result(self._split_call("POST", "/splits", payload),
                                  request.out_order_no, request.transaction_id)

    def query_split(self, out_order_no: str, transaction_id: str, *, sub_merchant: str | None = None,
                    sub_merchant_auth: str | None = None) -> SplitResult:
        path = (f"/splits/{quote(transaction_id, safe='')}/{quote(out_order_no, safe='')}"
                + _query(sub_merchant))
        return self._split_result(self._split_call("GET", path, None), out_order_no, transaction_id)

    def finish(self, request: FinishRequest) -> SplitResult:
        """``POST /splits/finish``: the rest of the payment to the payee, no
        more splits; its receiver in the answer is the payee."""
        payload = {"out_order_no": request.out_order_no, "transaction_id": request.transaction_id,
                   "description": request.description, **_for(request.sub_merchant)}
        return self._split_result(self._split_call("POST", "/splits/finish", payload),
                                  request.out_order_no, request.transaction_id)

    def return_split(self, request: ReturnRequest) -> ReturnResult:
        if type(request.amount_minor) is not int or request.amount_minor <= 0:
            raise SplitRefused("bad_amount", f"amount must be a positive int in fen, not {request.amount_minor!r}")
        payload = {"out_return_no": request.out_return_no, "out_order_no": request.out_order_no,
                   "return_account": request.return_account, "amount_minor": request.amount_minor,
                   "description": request.description, **_for(request.sub_merchant)}
        return self._return_result(self._split_call("POST", "/split-returns", payload),
                                   request.out_return_no, request.out_order_no)

    def query_return(self, out_return_no: str, out_order_no: str, *, sub_merchant: str | None = None,
                     sub_merchant_auth: str | None = None) -> ReturnResult:
        path = (f"/split-returns/{quote(out_order_no, safe='')}/{quote(out_return_no, safe='')}"
                + _query(sub_merchant))
        return self._return_result(self._split_call("GET", path, None), out_return_no, out_order_no)

    def _split_call(self, method: str, path: str, payload: Mapping[str, Any] | None) -> dict[str, Any]:
        """A signed 200 answer, ``GatewayRefused`` for the provider's signed
        no (400, 404, 409, 422), else ``GatewayUnavailable``."""
        status, answer = self._call(method, path, payload)
        if status in (400, 404, 409, 422):
            raise GatewayRefused(f"sandbox refused: {status} {answer.get('error')}", status=status,
                                 vendor_code=str(answer.get("error")),
                                 vendor_message=str(answer.get("message")))
        if status != 200:
            raise GatewayUnavailable(f"sandbox answered {status}: {answer.get('error')}", status=status)
        return answer

    @staticmethod
    def _split_result(answer: Mapping[str, Any], out_order_no: str, transaction_id: str) -> SplitResult:
        if answer.get("out_order_no") != out_order_no or answer.get("transaction_id") != transaction_id:
            raise GatewayUnavailable("sandbox answered about another split", expected=out_order_no)
        done = _SPLIT_STATES.get(str(answer.get("status")))
        receivers = answer.get("receivers")
        if done is None or not isinstance(receivers, list):
            raise GatewayUnavailable("sandbox answered an unknown split status", status=answer.get("status"))
        results = []
        for r in receivers:
            result = _RECEIVER_RESULTS.get(r.get("result", "")) if isinstance(r, dict) else None
            if result is None or not isinstance(r.get("account"), str) or type(r.get("amount_minor")) is not int:
                raise GatewayUnavailable(f"unreadable sandbox split receiver {r!r}")
            results.append(ReceiverResult(r["account"], r["amount_minor"], result, r.get("fail_reason") or None))
        return SplitResult(out_order_no, split_state(done, results), _answer_str(answer, "id"), tuple(results),
                           raw=answer)

    @staticmethod
    def _return_result(answer: Mapping[str, Any], out_return_no: str, out_order_no: str) -> ReturnResult:
        if answer.get("out_return_no") != out_return_no or answer.get("out_order_no") != out_order_no:
            raise GatewayUnavailable("sandbox answered about another split return", expected=out_return_no)
        state = _RETURN_STATES.get(str(answer.get("status")))
        if state is None:
            raise GatewayUnavailable("sandbox answered an unknown split return status")
        return ReturnResult(out_return_no, state, answer.get("fail_reason") or None, raw=answer)

    def _call(self, method: str, path: str, payload: Mapping[str, Any] | None) -> tuple[int, dict[str, Any]]:
        """Sign, send, verify the answer's signature, decode it."""
        url = self._base_url + path
        body = dumps(payload) if payload is not None else b""
        signed = signing.request_payload(method, signed_path(url), body)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signing.sign(self._secret, int(self._clock().timestamp()), signed),
        }
        try:
            response = self._transport(method, url, headers, body)
        except OSError as exc:  # connection refused, timeout, DNS...
            raise GatewayUnavailable(f"sandbox did not answer: {exc}") from exc
        try:
            signing.verify(
                header_value(response.headers, SIGNATURE_HEADER),
                response.body,
                self._secrets,
                self._clock(),
                self._tolerance_s,
            )
        except CallbackRejected as exc:
            raise GatewayUnavailable(
                "sandbox answer is not validly signed", status=response.status, reason=exc.code
            ) from exc
        try:
            answer = json.loads(response.body)
        except ValueError as exc:
            raise GatewayUnavailable("sandbox answer is not JSON", status=response.status) from exc
        if not isinstance(answer, dict):
            raise GatewayUnavailable("sandbox answer is not a JSON object", status=response.status)
        return response.status, answer

    @staticmethod
    def _check_echo(answer: Mapping[str, Any], key: str, expected: str | None) -> None:
        # A signed answer about another payment (a replayed answer) is no answer.
        if answer.get(key) != expected:
            raise GatewayUnavailable(f"sandbox answered about another {key}", expected=expected, got=answer.get(key))

    # -- callbacks -------------------------------------------------------------

    def verify_callback(self, request: CallbackRequest) -> GatewayEvent:
        signing.verify(
            request.header(SIGNATURE_HEADER), request.body, self._secrets, request.received_at, self._tolerance_s
        )
        try:
            payload = json.loads(request.body)
        except ValueError as exc:
            raise CallbackRejected("malformed", "callback body is not JSON") from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
            raise CallbackRejected("malformed", "callback needs an object with a data object")
        event_type = payload.get("type")
        kind = CALLBACK_TYPES.get(event_type) if isinstance(event_type, str) else None
        if kind is None:
            raise CallbackRejected("malformed", "unknown callback type", type=payload.get("type"))
        _callback_str(payload, "id")
        app_id = _callback_str(payload, "app_id")
        if app_id != self.app_id:
            raise CallbackRejected("wrong_app", "callback is for another app", app_id=app_id)

        data = payload["data"]
        out_refund_no = _callback_str(data, "out_refund_no") if kind.startswith("refund") else None
        sub_merchant = _callback_str(data, "sub_merchant") if "sub_merchant" in data else None
        return GatewayEvent(
            gateway=self.name,
            kind=kind,
            transaction_id=_callback_str(data, "transaction_id"),
            out_trade_no=_callback_str(data, "out_trade_no"),
            amount_minor=_callback_int(data, "amount_minor"),
            currency=_callback_str(data, "currency"),
            out_refund_no=out_refund_no,
            occurred_at=_callback_time(data, "occurred_at"),
            app_id=app_id,
            raw=payload,
            sub_merchant=sub_merchant,
        )

    def acknowledge(self, accepted: bool, message: str = "") -> Acknowledgement:
        # A non-2xx answer makes the sandbox (like Stripe) redeliver later.
        if accepted:
            return Acknowledgement(200, dumps({"received": True}), "application/json")
        return Acknowledgement(400, dumps({"error": message or "rejected"}), "application/json")

    # -- daily bill -------------------------------------------------------------

    def parse_bill(self, data: bytes) -> list[BillLine]:
        """The sandbox's CSV bill as ``BillLine``s; any bad row refuses the
        whole bill (``GatewayError`` naming the line), since reconciling half
        a bill would report false differences."""
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise GatewayError("bill is not UTF-8") from exc
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        lines: list[BillLine] = []
        start = 1   # where the current row begins (a quoted field may span lines)
        try:
            if next(reader, None) != BILL_HEADER:
                raise GatewayError("bill line 1: not the sandbox's header", line=1)
            start = reader.line_num + 1
            for row in reader:
                if row:
                    lines.append(_bill_line(row, start))
                start = reader.line_num + 1
        except csv.Error as exc:
            raise GatewayError(f"bill line {start}: {exc}", line=start) from exc
        return lines


def _bill_line(row: list[str], line: int) -> BillLine:
    def bad(why: str) -> NoReturn:
        raise GatewayError(f"bill line {line}: {why}", line=line)

    if len(row) != len(BILL_HEADER):
        bad(f"expected {len(BILL_HEADER)} fields, got {len(row)}")
    transaction_id, out_trade_no, kind, amount, fee, occurred, out_refund_no = row
    if not transaction_id or not out_trade_no:
        bad("transaction_id and out_trade_no are required")
    if kind not in ("payment", "refund"):
        bad(f"kind must be payment or refund, not {kind!r}")
    if not _UNSIGNED.fullmatch(amount):
        bad(f"amount_minor must be a non-negative integer, not {amount!r}")
    if not _SIGNED.fullmatch(fee):  # a gateway may hand a fee back on a refund
        bad(f"fee_minor must be an integer, not {fee!r}")
    if kind == "refund" and not out_refund_no:
        bad("a refund line needs out_refund_no")
    try:
        occurred_at = datetime.fromisoformat(occurred)
    except ValueError:
        bad(f"occurred_at is not ISO 8601: {occurred!r}")
    if occurred_at.tzinfo is None:
        bad("occurred_at must carry a timezone offset")
    return BillLine(
        transaction_id=transaction_id,
        out_trade_no=out_trade_no,
        kind=kind,  # type: ignore[arg-type]  (checked above)
        amount_minor=int(amount),
        fee_minor=int(fee),
        occurred_at=occurred_at,
        out_refund_no=out_refund_no or None,
    )


def signed_path(url: str) -> str:
    """What a request's signature covers of its URL: the path and, when
    there is one, the query string (``?sub_merchant=...`` is signed too)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _for(sub_merchant: str | None) -> dict[str, str]:
    """A body's ``sub_merchant`` field, when the request names one."""
    return {} if sub_merchant is None else {"sub_merchant": sub_merchant}


def _query(sub_merchant: str | None) -> str:
    return "" if sub_merchant is None else "?" + urlencode({"sub_merchant": sub_merchant})


# -- field readers: one for answers (an outage), one for callbacks (refused) ---

def _refused(status: int, answer: Mapping[str, Any]) -> NoReturn:
    """A failure answer. 400/404/409/422 will fail the same way again (our
    request is wrong or conflicts); anything else (401, 5xx...) may pass on
    retry."""
    details = {"status": status, "error": answer.get("error"), "reason": answer.get("message")}
    if status in (400, 404, 409, 422):
        raise GatewayError(f"sandbox refused the request: {answer.get('error')}", **details)
    raise GatewayUnavailable(f"sandbox answered {status}: {answer.get('error')}", **details)


def _answer_str(answer: Mapping[str, Any], key: str) -> str:
    value = answer.get(key)
    if not isinstance(value, str) or not value:
        raise GatewayUnavailable(f"sandbox answer lacks {key}")
    return value


def _answer_optional_str(answer: Mapping[str, Any], key: str) -> str | None:
    value = answer.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise GatewayUnavailable(f"sandbox answer's {key} is not a string")
    return value


def _answer_int(answer: Mapping[str, Any], key: str) -> int:
    value = answer.get(key)
    if type(value) is not int:  # not bool, not float
        raise GatewayUnavailable(f"sandbox answer's {key} is not an integer")
    return value


def _callback_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise CallbackRejected("malformed", f"callback lacks {key}")
    return value


def _callback_int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if type(value) is not int or value < 0:  # JSON 1.0 or true are not amounts
        raise CallbackRejected("malformed", f"callback's {key} is not a non-negative integer")
    return value


def _callback_time(data: Mapping[str, Any], key: str) -> datetime:
    try:
        value = datetime.fromisoformat(_callback_str(data, key))
    except ValueError as exc:
        raise CallbackRejected("malformed", f"callback's {key} is not ISO 8601") from exc
    if value.tzinfo is None:
        raise CallbackRejected("malformed", f"callback's {key} has no timezone")
    return value
