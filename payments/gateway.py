"""The gateway interface (issue 5): what every payment gateway adapter offers.

An adapter speaks one vendor's protocol (WeChat Pay API v3, Alipay, a bank's
B2B payment, the sandbox) and nothing else: it signs outgoing requests,
verifies and parses incoming callbacks, and parses the daily bill. It knows
nothing of orders or the ledger; ``payments`` use cases turn what it returns
into postings. So a simulated gateway is one more adapter behind this same
interface, never a shortcut in business logic.

Outgoing calls go through a ``Transport`` (an injected callable), so tests
and the sandbox answer them in-process while production uses HTTP; the
adapter still signs every request and verifies every answer for real.

Amounts are integers in minor units (fen), as everywhere in the project.

Whose money (issue 6, payee-collected payments): a payment may be collected
for a *sub-merchant*, a merchant other than the one the adapter is
configured as (a seller paid as payee). Each request about such a payment
names it (``sub_merchant``: the WeChat Pay ``sub_mchid`` of the seller when
the platform is its service provider, the Alipay ``userId`` of a seller that
authorised the platform's app, the sandbox's account), and the credential
the gateway needs to act in its name rides along (``sub_merchant_auth``:
Alipay's ``app_auth_token``; WeChat Pay and the sandbox need none, the
service provider's own key signs). ``None`` (the default): the adapter's own
configured merchant collects, as before. An adapter that cannot collect for
another merchant (WeChat Pay in direct-merchant mode, Alipay without the
seller's ``app_auth_token``) refuses such a request with
``SubMerchantUnsupported`` rather than collecting the money in the
platform's own name. A verified callback says for whom the money was
collected (``GatewayEvent.sub_merchant``), so the use case can check it
against the payment.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Literal, Mapping, Protocol

EventKind = Literal[
    "payment_succeeded",  # money collected: post it
    "payment_failed",     # the payer's attempt failed; nothing to post
    "payment_closed",     # the gateway closed the payment unpaid
    "refund_succeeded",
    "refund_failed",
]


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value whatever the case of its name (HTTP names are not
    case-sensitive, and servers and frameworks spell them differently)."""
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


# (method, url, headers, body) -> response; production wraps urllib/requests.
Transport = Callable[[str, str, Mapping[str, str], bytes], HttpResponse]


@dataclass(frozen=True)
class CallbackRequest:
    """A callback exactly as it reached us: headers (any case), raw body."""

    headers: Mapping[str, str]
    body: bytes
    received_at: datetime

    def header(self, name: str) -> str | None:
        return header(self.headers, name)


@dataclass(frozen=True)
class GatewayEvent:
    """A verified callback, parsed. ``transaction_id`` is the gateway's own id
    of the payment or refund: callbacks are applied exactly once per
    (gateway, kind family, transaction_id)."""

    gateway: str
    kind: EventKind
    transaction_id: str          # gateway's id (payment: transaction id; refund: refund id)
    out_trade_no: str            # our payment's id as sent to the gateway
    amount_minor: int            # payment: amount paid; refund: amount refunded
    currency: str
    out_refund_no: str | None = None
    occurred_at: datetime | None = None
    app_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    # The sub-merchant the gateway says the money was collected for (WeChat
    # Pay's ``sub_mchid`` in service-provider mode, also when it is the
    # configured one; Alipay's ``seller_id`` of a trade made under a
    # seller's authorisation; the sandbox's ``sub_merchant``); None when the
    # gateway names none, i.e. the adapter's own merchant collected it.
    sub_merchant: str | None = None


@dataclass(frozen=True)
class Acknowledgement:
    """What to answer the gateway, in its own dialect."""

    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True)
class PaymentRequest:
    """``sub_merchant``: collect in this merchant's name instead of the
    adapter's own (see the module docstring); ``sub_merchant_auth``: what
    the gateway needs to act for it (Alipay's ``app_auth_token``; never
    shown in a repr, it is a credential)."""

    out_trade_no: str
    amount_minor: int
    currency: str
    description: str
    notify_url: str
    expires_at: datetime | None = None
    sub_merchant: str | None = None
    sub_merchant_auth: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PaymentCreated:
    """What the payer needs to pay: a code URL, a form or a redirect."""

    out_trade_no: str
    pay_url: str | None = None
    prepay_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


PaymentState = Literal["pending", "succeeded", "failed", "closed", "unknown"]


@dataclass(frozen=True)
class PaymentStatus:
    """``sub_merchant``: whom the gateway says the payment is collected
    for, as ``GatewayEvent.sub_merchant``."""

    out_trade_no: str
    state: PaymentState
    transaction_id: str | None
    amount_minor: int | None
    raw: Mapping[str, Any] = field(default_factory=dict)
    sub_merchant: str | None = None


@dataclass(frozen=True)
class RefundRequest:
    """A refund of a payment collected for a sub-merchant names it (and its
    credential) exactly as the payment did: the gateway looks the trade up
    in that merchant's books."""

    out_trade_no: str
    out_refund_no: str
    amount_minor: int
    total_minor: int
    currency: str
    reason: str
    notify_url: str
    sub_merchant: str | None = None
    sub_merchant_auth: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RefundAccepted:
    out_refund_no: str
    refund_id: str | None
    state: Literal["processing", "succeeded", "failed"]
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BillLine:
    """One line of a gateway's daily bill (for reconciliation)."""

    transaction_id: str
    out_trade_no: str
    kind: Literal["payment", "refund"]
    amount_minor: int
    fee_minor: int
    occurred_at: datetime
    out_refund_no: str | None = None


class GatewayError(Exception):
    """Base of the adapter's errors; ``code`` is stable."""

    code = "gateway_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class CallbackRejected(GatewayError):
    """A callback that must not be acted on. ``code`` names why:
    ``bad_signature``, ``signature_probe`` (WeChat Pay's deliberate probe),
    ``stale_timestamp``, ``unknown_certificate``, ``malformed``, ``wrong_app``."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.code = code


class GatewayUnavailable(GatewayError):
    """The gateway did not answer, or answered with a failure or a bad
    signature; the call may be retried."""

    code = "gateway_unavailable"


class SubMerchantUnsupported(GatewayError, ValueError):
    """A request names a sub-merchant this adapter cannot act for (WeChat
    Pay configured as a direct merchant; Alipay without the merchant's
    ``app_auth_token``). Nothing was sent: retrying will not help until the
    configuration or the seller's registration changes."""

    code = "sub_merchant_unsupported"


class Gateway(Protocol):
    name: str

    def create_payment(self, request: PaymentRequest) -> PaymentCreated: ...

    def query_payment(self, out_trade_no: str, *, sub_merchant: str | None = None,
                      sub_merchant_auth: str | None = None) -> PaymentStatus:
        """``sub_merchant``/``sub_merchant_auth``: as the payment was created
        with (only adapters that collect for sub-merchants take them)."""
        ...

    def refund(self, request: RefundRequest) -> RefundAccepted: ...

    def verify_callback(self, request: CallbackRequest) -> GatewayEvent:
        """The verified event, or ``CallbackRejected``. No side effect."""
        ...

    def acknowledge(self, accepted: bool, message: str = "") -> Acknowledgement: ...

    def parse_bill(self, data: bytes) -> list[BillLine]: ...
