"""The simulated payment provider behind ``SandboxGateway``: in memory,
thread-safe, speaking the sandbox wire protocol described in
``payments.sandbox``.

It is the demo's gateway, wired in by configuration only: business logic
never imports it. Two sides:

* As a ``Transport`` (call it like ``transport(method, url, headers, body)``)
  it answers the adapter's API: ``POST /payments``, ``GET /payments/<no>``,
  ``POST /refunds``. Every request must carry a valid ``Sandbox-Signature``
  (else 401) and every answer is signed.
* As the payer and the provider's back office, driven by a checkout page, a
  CLI or a test: ``pay``, ``fail``, ``close`` a payment, settle a refund with
  ``refund_notice``; each returns ``(headers, body)``, a signed callback to
  POST to the payment's ``notify_url`` (see ``get_payment``). ``redeliver``
  signs an earlier callback again, as real providers retry. ``bill(day)``
  renders the daily CSV bill with a fee of ``fee_bps`` basis points.

Splits (issue 6): ``POST /splits``, ``POST /splits/finish``, ``GET
/splits/<transaction_id>/<out_order_no>``, ``POST /split-returns`` and
``GET /split-returns/<out_order_no>/<out_return_no>`` are served as a
gateway's split product would: only for a succeeded payment; once per
``out_order_no`` (a repeat answers the first split, never splits twice);
refused over ``split_ratio`` of the payment after its fee, cumulatively
(422 ``over_cap``); nothing more after a finish (422 ``split_finished``). A
new split answers ``split_state`` ("processing" by default, carried out at
the next query; "finished": at once); ``receiver_faults`` closes a receiver
(account -> fail reason). A finish releases the rest (payment - fee -
split) to the payee (account ``payee``, or the payment's sub-merchant).
A return gives (part of) a receiver's success back, ``processing`` until
queried.

Sub-merchants: a payment created with a ``sub_merchant`` (a seller's
account, collected in its name) keeps it; every answer and callback about
it echoes it, and it is found for a query, refund, split, finish or return
only when the request names the same sub-merchant (404 otherwise), as a
provider looks a trade up in that merchant's books.

Life of a payment: ``created`` -> ``succeeded`` | ``failed`` | ``closed``
(all final; a payer who failed pays a new payment). A refund is
``processing`` until ``refund_notice`` makes it ``succeeded`` or ``failed``;
processing and succeeded refunds together never exceed the amount paid.
"""
from __future__ import annotations

import csv
import io
import json
import re
import threading
import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone, tzinfo
from fractions import Fraction
from typing import Any, Literal, Mapping
from urllib.parse import parse_qs, quote, unquote, urlsplit

from payments import signing
from payments.gateway import CallbackRejected, HttpResponse
from payments.sandbox import (
    BILL_HEADER,
    SIGNATURE_HEADER,
    Clock,
    dumps,
    header_value,
    signed_path,
    utc_now,
)

Callback = tuple[dict[str, str], bytes]   # (headers, body) ready to POST


class SandboxError(ValueError):
    """The driver asked for something the provider would not do (pay a closed
    payment, settle an unknown refund...)."""


@dataclass(frozen=True)
class SandboxPayment:
    id: str                      # the provider's transaction id
    out_trade_no: str
    amount_minor: int
    currency: str
    description: str
    notify_url: str
    status: Literal["created", "succeeded", "failed", "closed"]
    created_at: datetime
    expires_at: datetime | None = None
    finished_at: datetime | None = None   # when it left "created"
    sub_merchant: str | None = None       # collected in this merchant's name


@dataclass(frozen=True)
class SandboxRefund:
    id: str
    out_refund_no: str
    out_trade_no: str
    amount_minor: int
    currency: str
    reason: str
    notify_url: str
    status: Literal["processing", "succeeded", "failed"]
    created_at: datetime
    finished_at: datetime | None = None


class _Answer(Exception):
    """An error answer, raised inside a handler."""

    def __init__(self, status: int, error: str, message: str = "") -> None:
        super().__init__(message or error)
        self.status, self.error, self.message = status, error, message or error


class SandboxVendor:
    def __init__(
        self,
        *,
        app_id: str,
        secret: bytes,
        fee_bps: int = 60,
        checkout_url: str = "/sandbox/checkout/{out_trade_no}",
        bill_tz: tzinfo = timezone.utc,
        clock: Clock = utc_now,
        tolerance_s: int = 300,
    ) -> None:
        """``fee_bps``: the provider's fee on payments in basis points (60 is
        0.6%), rounded down to the fen. ``checkout_url`` becomes each
        payment's ``pay_url``. ``bill_tz`` decides which day a bill covers."""
        if not 0 <= fee_bps <= 10_000:
            raise ValueError("fee_bps must be between 0 and 10000")
        self.app_id = app_id
        self._secret = secret
        self.fee_bps = fee_bps
        self._checkout_url = checkout_url
        self._bill_tz = bill_tz
        self._clock = clock
        self._tolerance_s = tolerance_s
        self._lock = threading.Lock()
        self._payments: dict[str, SandboxPayment] = {}
        self._refunds: dict[str, SandboxRefund] = {}
        self._events: dict[str, dict[str, Any]] = {}
        # splits
        self.split_ratio = Fraction(3, 10)        # of a payment after its fee
        self.split_state = "processing"           # what a new split answers with
        self.receiver_faults: dict[str, str] = {}  # account -> fail reason: that receiver closes
        self._splits: dict[str, dict[str, Any]] = {}          # out_order_no -> split
        self._split_returns: dict[str, dict[str, Any]] = {}   # out_return_no -> return
        self._split_finished: set[str] = set()                # transaction ids

    # -- the API, as a Transport ---------------------------------------------------

    def __call__(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        parts = urlsplit(url)
        path = parts.path
        sub = {k: v[0] for k, v in parse_qs(parts.query).items()}.get("sub_merchant")
        try:
            signing.verify(
                header_value(headers, SIGNATURE_HEADER),
                signing.request_payload(method, signed_path(url), body),
                [self._secret],
                self._clock(),
                self._tolerance_s,
            )
        except CallbackRejected as exc:
            return self._answer(401, {"error": exc.code, "message": str(exc)})
        try:
            if method == "POST" and path.endswith("/payments"):
                return self._answer(200, self._create(_json_object(body)))
            if method == "GET" and (match := re.fullmatch(r".*/payments/([^/]+)", path)):
                return self._answer(200, self._query(unquote(match[1]), sub))
            if method == "POST" and path.endswith("/refunds"):
                return self._answer(200, self._refund(_json_object(body)))
            if method == "POST" and path.endswith("/splits/finish"):
                return self._answer(200, self._finish_split(_json_object(body)))
            if method == "POST" and path.endswith("/splits"):
                return self._answer(200, self._split(_json_object(body)))
            if method == "GET" and (match := re.fullmatch(r".*/splits/([^/]+)/([^/]+)", path)):
                return self._answer(200, self._query_split(unquote(match[1]), unquote(match[2]), sub))
            if method == "POST" and path.endswith("/split-returns"):
                return self._answer(200, self._return_split(_json_object(body)))
            if method == "GET" and (match := re.fullmatch(r".*/split-returns/([^/]+)/([^/]+)", path)):
                return self._answer(200, self._query_return(unquote(match[1]), unquote(match[2]), sub))
            raise _Answer(404, "no_route", f"{method} {path}")
        except _Answer as exc:
            return self._answer(exc.status, {"error": exc.error, "message": exc.message})

    def _answer(self, status: int, payload: Mapping[str, Any]) -> HttpResponse:
        body = dumps(payload)
        signature = signing.sign(self._secret, int(self._clock().timestamp()), body)
        return HttpResponse(status, {"Content-Type": "application/json", SIGNATURE_HEADER: signature}, body)

    def _create(self, req: Mapping[str, Any]) -> dict[str, Any]:
        out_trade_no = _field(req, "out_trade_no", str)
        amount = _field(req, "amount_minor", int)
        currency = _field(req, "currency", str)
        description = _field(req, "description", str)
        notify_url = _field(req, "notify_url", str)
        expires = req.get("expires_at")
        expires_at = _aware(expires, "expires_at") if expires is not None else None
        sub_merchant = _sub_merchant(req)
        if not 0 < len(out_trade_no) <= 64:
            raise _Answer(400, "invalid_request", "out_trade_no must be 1 to 64 characters")
        if amount <= 0:
            raise _Answer(400, "invalid_request", "amount_minor must be positive")
        with self._lock:
            payment = self._payments.get(out_trade_no)
            if payment is None:
                payment = SandboxPayment(
                    id="sbx_pay_" + uuid.uuid4().hex,
                    out_trade_no=out_trade_no,
                    amount_minor=amount,
                    currency=currency,
                    description=description,
                    notify_url=notify_url,
                    status="created",
                    created_at=self._clock(),
                    expires_at=expires_at,
                    sub_merchant=sub_merchant,
                )
                self._payments[out_trade_no] = payment
            elif (payment.amount_minor, payment.currency, payment.sub_merchant) != \
                    (amount, currency, sub_merchant):
                # Same out_trade_no again is a retry, unless it says otherwise.
                raise _Answer(409, "conflict", "out_trade_no already used with another amount or payee")
        return {
            **_payment_view(payment),
            "pay_url": self._checkout_url.format(out_trade_no=quote(out_trade_no, safe="")),
        }

    def _query(self, out_trade_no: str, sub_merchant: str | None) -> dict[str, Any]:
        with self._lock:
            payment = self._payments.get(out_trade_no)
        if payment is None or payment.sub_merchant != sub_merchant:
            raise _Answer(404, "not_found", "no such payment")
        return _payment_view(payment)

    def _refund(self, req: Mapping[str, Any]) -> dict[str, Any]:
        out_trade_no = _field(req, "out_trade_no", str)
        out_refund_no = _field(req, "out_refund_no", str)
        amount = _field(req, "amount_minor", int)
        total = _field(req, "total_minor", int)
        currency = _field(req, "currency", str)
        reason = _field(req, "reason", str)
        notify_url = _field(req, "notify_url", str)
        sub_merchant = _sub_merchant(req)
        if amount <= 0:
            raise _Answer(400, "invalid_request", "amount_minor must be positive")
        with self._lock:
            payment = self._payments.get(out_trade_no)
            if payment is None or payment.sub_merchant != sub_merchant:
                raise _Answer(404, "not_found", "no such payment")
            refund = self._refunds.get(out_refund_no)
            if refund is not None:
                if (refund.out_trade_no, refund.amount_minor) != (out_trade_no, amount):
                    raise _Answer(409, "conflict", "out_refund_no already used for another refund")
                return _refund_view(refund)
            if (total, currency) != (payment.amount_minor, payment.currency):
                raise _Answer(400, "invalid_request", "total_minor and currency must match the payment")
            if payment.status != "succeeded":
                raise _Answer(422, "not_paid", f"payment is {payment.status}")
            if amount > payment.amount_minor - self._reserved(out_trade_no):
                raise _Answer(422, "exceeds_paid", "refunds would exceed the amount paid")
            refund = SandboxRefund(
                id="sbx_re_" + uuid.uuid4().hex,
                out_refund_no=out_refund_no,
                out_trade_no=out_trade_no,
                amount_minor=amount,
                currency=currency,
                reason=reason,
                notify_url=notify_url,
                status="processing",
                created_at=self._clock(),
            )
            self._refunds[out_refund_no] = refund
        return _refund_view(refund)

    def _reserved(self, out_trade_no: str) -> int:
        """Refunded or being refunded (caller holds the lock)."""
        return sum(
            r.amount_minor
            for r in self._refunds.values()
            if r.out_trade_no == out_trade_no and r.status != "failed"
        )

    # -- splits ----------------------------------------------------------------------

    def fee_of(self, amount_minor: int) -> int:
        """The provider's fee on a payment (the bill's), rounded down."""
        return amount_minor * self.fee_bps // 10_000

    def _payment_by_id(self, transaction_id: str, sub_merchant: str | None) -> SandboxPayment:
        """The payment, looked up in the named merchant's books (caller
        holds the lock)."""
        payment = next((p for p in self._payments.values() if p.id == transaction_id), None)
        if payment is None or payment.sub_merchant != sub_merchant:
            raise _Answer(404, "not_found", "no such payment")
        return payment

    def _splittable(self, transaction_id: str, sub_merchant: str | None) -> SandboxPayment:
        """The succeeded payment to split (caller holds the lock)."""
        payment = self._payment_by_id(transaction_id, sub_merchant)
        if payment.status != "succeeded":
            raise _Answer(422, "not_paid", f"payment is {payment.status}")
        if transaction_id in self._split_finished:
            raise _Answer(422, "split_finished", "the payment's splits are finished")
        return payment

    def _split_so_far(self, transaction_id: str) -> int:
        """Split away by earlier splits (not closed receivers, not finishes)."""
        return sum(r["amount_minor"] for s in self._splits.values()
                   if s["transaction_id"] == transaction_id and not s["_finish"]
                   for r in s["receivers"] if r["result"] != "closed")

    def _known_split(self, out_order_no: str, transaction_id: str) -> dict[str, Any] | None:
        split = self._splits.get(out_order_no)
        if split is not None and split["transaction_id"] != transaction_id:
            raise _Answer(409, "conflict", "out_order_no already used for another payment")
        return split

    def _split(self, req: Mapping[str, Any]) -> dict[str, Any]:
        out_order_no = _field(req, "out_order_no", str)
        transaction_id = _field(req, "transaction_id", str)
        receivers = req.get("receivers")
        finish = req.get("finish", False)
        sub_merchant = _sub_merchant(req)
        if not isinstance(receivers, list) or not 1 <= len(receivers) <= 50 or type(finish) is not bool:
            raise _Answer(400, "invalid_request", "receivers: 1 to 50; finish: a boolean")
        cleaned, seen = [], set()
        for r in receivers:
            if not isinstance(r, dict):
                raise _Answer(400, "invalid_request", "a receiver is an object")
            account, kind = _field(r, "account", str), _field(r, "kind", str)
            amount, description = _field(r, "amount_minor", int), _field(r, "description", str)
            if not account or not kind or amount <= 0 or (kind, account) in seen:
                raise _Answer(400, "invalid_request", f"bad or repeated receiver {account!r}")
            seen.add((kind, account))
            cleaned.append({"account": account, "kind": kind, "amount_minor": amount,
                            "description": description, "result": "pending", "fail_reason": None})
        with self._lock:
            known = self._known_split(out_order_no, transaction_id)
            if known is not None:  # the first split, never a second one
                self._payment_by_id(transaction_id, sub_merchant)
                return _split_view(known)
            payment = self._splittable(transaction_id, sub_merchant)
            cap = (payment.amount_minor - self.fee_of(payment.amount_minor)) \
                * self.split_ratio.numerator // self.split_ratio.denominator
            if self._split_so_far(transaction_id) + sum(r["amount_minor"] for r in cleaned) > cap:
                raise _Answer(422, "over_cap", f"splits may take at most {cap} of this payment")
            split = self._new_split(out_order_no, transaction_id, cleaned, finish=False)
            if finish:
                self._split_finished.add(transaction_id)
            return _split_view(split)

    def _finish_split(self, req: Mapping[str, Any]) -> dict[str, Any]:
        out_order_no = _field(req, "out_order_no", str)
        transaction_id = _field(req, "transaction_id", str)
        _field(req, "description", str)
        sub_merchant = _sub_merchant(req)
        with self._lock:
            known = self._known_split(out_order_no, transaction_id)
            if known is not None:
                self._payment_by_id(transaction_id, sub_merchant)
                return _split_view(known)
            payment = self._splittable(transaction_id, sub_merchant)
            rest = payment.amount_minor - self.fee_of(payment.amount_minor) - self._split_so_far(transaction_id)
            receivers = [{"account": payment.sub_merchant or "payee", "kind": "payee", "amount_minor": rest,
                          "description": "the rest to the payee", "result": "pending",
                          "fail_reason": None}] if rest > 0 else []
            self._split_finished.add(transaction_id)
            return _split_view(self._new_split(out_order_no, transaction_id, receivers, finish=True))

    def _new_split(self, out_order_no: str, transaction_id: str, receivers: list[dict[str, Any]], *,
                   finish: bool) -> dict[str, Any]:
        """Record a split (caller holds the lock)."""
        split = self._splits[out_order_no] = {
            "id": "sbx_split_" + uuid.uuid4().hex, "out_order_no": out_order_no,
            "transaction_id": transaction_id, "status": "processing", "receivers": receivers,
            "_finish": finish,
        }
        if self.split_state == "finished":
            self._carry_out(split)
        return split

    def _carry_out(self, split: dict[str, Any]) -> None:
        """The provider carries a split out: each receiver success, or closed
        with its ``receiver_faults`` reason (caller holds the lock)."""
        for r in split["receivers"]:
            if r["result"] == "pending":
                fault = self.receiver_faults.get(r["account"])
                r.update(result="closed" if fault else "success", fail_reason=fault)
        split["status"] = "finished"

    def _query_split(self, transaction_id: str, out_order_no: str, sub_merchant: str | None) -> dict[str, Any]:
        with self._lock:
            split = self._splits.get(out_order_no)
            if split is None or split["transaction_id"] != transaction_id:
                raise _Answer(404, "not_found", "no such split")
            self._payment_by_id(transaction_id, sub_merchant)
            if split["status"] == "processing":  # carried out by the time anyone asks
                self._carry_out(split)
            return _split_view(split)

    def _return_split(self, req: Mapping[str, Any]) -> dict[str, Any]:
        out_return_no = _field(req, "out_return_no", str)
        out_order_no = _field(req, "out_order_no", str)
        account = _field(req, "return_account", str)
        amount = _field(req, "amount_minor", int)
        _field(req, "description", str)
        sub_merchant = _sub_merchant(req)
        if amount <= 0:
            raise _Answer(400, "invalid_request", "amount_minor must be positive")
        with self._lock:
            known = self._split_returns.get(out_return_no)
            split = self._splits.get(out_order_no)
            if split is None or split["_finish"]:
                raise _Answer(404, "not_found", "no such split")
            self._payment_by_id(split["transaction_id"], sub_merchant)
            if known is not None:
                return dict(known)
            received = sum(r["amount_minor"] for r in split["receivers"]
                           if r["account"] == account and r["result"] == "success")
            returned = sum(r["amount_minor"] for r in self._split_returns.values()
                           if r["out_order_no"] == out_order_no and r["return_account"] == account
                           and r["status"] != "failed")
            if returned + amount > received:
                raise _Answer(422, "exceeds_received", "more than the receiver was paid")
            returning = self._split_returns[out_return_no] = {
                "id": "sbx_sret_" + uuid.uuid4().hex, "out_return_no": out_return_no,
                "out_order_no": out_order_no, "return_account": account, "amount_minor": amount,
                "status": "processing", "fail_reason": None}
            return dict(returning)

    def _query_return(self, out_order_no: str, out_return_no: str, sub_merchant: str | None) -> dict[str, Any]:
        with self._lock:
            returning = self._split_returns.get(out_return_no)
            if returning is None or returning["out_order_no"] != out_order_no:
                raise _Answer(404, "not_found", "no such split return")
            self._payment_by_id(self._splits[out_order_no]["transaction_id"], sub_merchant)
            if returning["status"] == "processing":
                returning["status"] = "success"
            return dict(returning)

    # -- the driver: payer and back office ------------------------------------------

    def get_payment(self, out_trade_no: str) -> SandboxPayment:
        with self._lock:
            return self._get(self._payments, out_trade_no)

    def get_refund(self, out_refund_no: str) -> SandboxRefund:
        with self._lock:
            return self._get(self._refunds, out_refund_no)

    def pay(self, out_trade_no: str) -> Callback:
        """The payer pays: ``payment.succeeded``."""
        return self._finish_payment(out_trade_no, "succeeded")

    def fail(self, out_trade_no: str) -> Callback:
        """The payer's attempt fails (declined, cancelled): ``payment.failed``."""
        return self._finish_payment(out_trade_no, "failed")

    def close(self, out_trade_no: str) -> Callback:
        """The provider closes the payment unpaid (expired): ``payment.closed``."""
        return self._finish_payment(out_trade_no, "closed")

    def refund_notice(self, out_refund_no: str, succeeded: bool = True) -> Callback:
        """Settle a processing refund: ``refund.succeeded`` or ``refund.failed``
        (a failed refund frees its amount for another refund)."""
        status: Literal["succeeded", "failed"] = "succeeded" if succeeded else "failed"
        with self._lock:
            refund = self._get(self._refunds, out_refund_no)
            if refund.status != "processing":
                raise SandboxError(f"refund {out_refund_no} is already {refund.status}")
            refund = replace(refund, status=status, finished_at=self._clock())
            self._refunds[out_refund_no] = refund
            data = {
                "transaction_id": refund.id,
                "out_trade_no": refund.out_trade_no,
                "out_refund_no": refund.out_refund_no,
                "amount_minor": refund.amount_minor,
                "currency": refund.currency,
                "occurred_at": refund.finished_at.isoformat(),  # type: ignore[union-attr]
            }
            sub_merchant = self._payments[refund.out_trade_no].sub_merchant
            if sub_merchant is not None:
                data["sub_merchant"] = sub_merchant
            return self._event(f"refund.{status}", data)

    def redeliver(self, event_id: str) -> Callback:
        """The same callback (same event id and body) signed anew, as when the
        provider retries a delivery our side did not acknowledge."""
        with self._lock:
            payload = self._get(self._events, event_id)
        return self._signed(payload)

    def bill(self, day: date) -> bytes:
        """The CSV bill of ``day`` (in ``bill_tz``): succeeded payments with
        their fee, succeeded refunds (fee 0: the sandbox keeps the fee of a
        refunded payment, as Stripe does)."""
        with self._lock:
            rows = [
                (p.finished_at, [p.id, p.out_trade_no, "payment", p.amount_minor,
                                 p.amount_minor * self.fee_bps // 10_000, p.finished_at.isoformat(), ""])
                for p in self._payments.values()
                if p.status == "succeeded" and p.finished_at and p.finished_at.astimezone(self._bill_tz).date() == day
            ] + [
                (r.finished_at, [r.id, r.out_trade_no, "refund", r.amount_minor, 0,
                                 r.finished_at.isoformat(), r.out_refund_no])
                for r in self._refunds.values()
                if r.status == "succeeded" and r.finished_at and r.finished_at.astimezone(self._bill_tz).date() == day
            ]
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(BILL_HEADER)
        writer.writerows(row for _, row in sorted(rows, key=lambda item: (item[0], item[1][0])))
        return out.getvalue().encode()

    def _finish_payment(self, out_trade_no: str, status: Literal["succeeded", "failed", "closed"]) -> Callback:
        with self._lock:
            payment = self._get(self._payments, out_trade_no)
            if payment.status != "created":
                raise SandboxError(f"payment {out_trade_no} is already {payment.status}")
            payment = replace(payment, status=status, finished_at=self._clock())
            self._payments[out_trade_no] = payment
            data = {
                "transaction_id": payment.id,
                "out_trade_no": payment.out_trade_no,
                "amount_minor": payment.amount_minor,
                "currency": payment.currency,
                "occurred_at": payment.finished_at.isoformat(),  # type: ignore[union-attr]
            }
            if payment.sub_merchant is not None:
                data["sub_merchant"] = payment.sub_merchant
            return self._event(f"payment.{status}", data)

    def _event(self, event_type: str, data: dict[str, Any]) -> Callback:
        """Record a callback (caller holds the lock) and sign it."""
        payload = {"id": "evt_" + uuid.uuid4().hex, "type": event_type, "data": data, "app_id": self.app_id}
        self._events[payload["id"]] = payload
        return self._signed(payload)

    def _signed(self, payload: Mapping[str, Any]) -> Callback:
        body = dumps(payload)
        signature = signing.sign(self._secret, int(self._clock().timestamp()), body)
        return {"Content-Type": "application/json", SIGNATURE_HEADER: signature}, body

    @staticmethod
    def _get(table: Mapping[str, Any], key: str) -> Any:
        try:
            return table[key]
        except KeyError:
            raise SandboxError(f"unknown: {key}") from None


def _payment_view(payment: SandboxPayment) -> dict[str, Any]:
    view = {
        "id": payment.id,
        "out_trade_no": payment.out_trade_no,
        "status": payment.status,
        "amount_minor": payment.amount_minor,
        "currency": payment.currency,
    }
    if payment.sub_merchant is not None:
        view["sub_merchant"] = payment.sub_merchant
    return view


def _split_view(split: Mapping[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in split.items() if not k.startswith("_")},
            "receivers": [dict(r) for r in split["receivers"]]}


def _refund_view(refund: SandboxRefund) -> dict[str, Any]:
    return {
        "id": refund.id,
        "out_refund_no": refund.out_refund_no,
        "out_trade_no": refund.out_trade_no,
        "status": refund.status,
        "amount_minor": refund.amount_minor,
    }


def _json_object(body: bytes) -> Mapping[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError:
        raise _Answer(400, "invalid_request", "body is not JSON") from None
    if not isinstance(payload, dict):
        raise _Answer(400, "invalid_request", "body is not a JSON object")
    return payload


def _field(req: Mapping[str, Any], key: str, kind: type) -> Any:
    value = req.get(key)
    if type(value) is not kind:  # exact: a JSON true is no amount
        raise _Answer(400, "invalid_request", f"{key} must be a {kind.__name__}")
    return value


def _sub_merchant(req: Mapping[str, Any]) -> str | None:
    """A request's optional ``sub_merchant``: a non-empty string or absent."""
    value = req.get("sub_merchant")
    if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 64):
        raise _Answer(400, "invalid_request", "sub_merchant must be 1 to 64 characters")
    return value


def _aware(value: Any, key: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise _Answer(400, "invalid_request", f"{key} must be ISO 8601") from None
    if parsed.tzinfo is None:
        raise _Answer(400, "invalid_request", f"{key} must carry a timezone")
    return parsed
