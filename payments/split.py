"""Instructions to a gateway's split product (issue 6, "Who moves the money").

When a gateway collected an order's money with the seller as payee, the
money sits at the gateway in the seller's name (frozen for splitting: WeChat
Pay's ``settle_info.profit_sharing``, Alipay's ``royalty_freeze``). A
clearing split of that money is carried out by an *instruction to the
gateway's split product* (WeChat Pay profit sharing, Alipay trade settle),
never by the platform paying the receivers out of its own pool.

This module is the adapter-level vocabulary: pure values, the
``SplitGateway`` protocol the adapters implement, and ``check_caps``, the
local check of the gateway's split cap done before anything is sent. Standard
library only (no database, no web), like ``clearing.split``.

Idempotency: ``out_order_no`` (and ``out_return_no``) is *our* id of one
instruction. Gateways deduplicate on it, so after ``GatewayUnavailable`` (no
answer, a 5xx, an answer whose signature did not verify) the caller retries
with the same id and the same content and never splits twice. A
``GatewayRefused`` is the gateway's definitive, signed "no": retrying the
same instruction will not help.

States
------

``SplitResult.state``:

* ``processing``: accepted, not done; ``query_split`` later.
* ``finished``: the gateway is done with the instruction. Look at each
  receiver: one may still be ``closed`` (not paid, ``fail_reason`` says why)
  while others are ``success``.
* ``failed``: the gateway is done and *no* receiver was paid (every receiver
  ``closed``). An instruction without receivers (a finish) is never failed.

Caps and rounding
-----------------

A gateway lets only part of a payment be split away from the payee: WeChat
Pay by default 30 % of the order amount after its fee, Alipay up to 100 %
after fees unless the contract says less. ``split_cap`` is
``floor((paid - fee) * max_ratio)`` in fen: rounded **down** to the fen, as
every split in the ledger (``docs/accounting.md``, "Rounding"), so the cap we
check is never above the gateway's. The ratio is a ``Fraction`` (never a
float: ``0.3`` as a float is not 3/10 and would move the cap by a fen at the
boundary). The cap is per payment and cumulative over its instructions: pass
what earlier instructions for the same payment already split away as
``already_split_minor``.

Sub-merchants
-------------

When the payment was collected for a sub-merchant (``payments.gateway``:
a seller paid as payee in its own name), every instruction about it names
that merchant (``sub_merchant``, with ``sub_merchant_auth`` where the
gateway needs a credential: Alipay's ``app_auth_token``), and so do the
queries (keyword arguments). The sub-merchant is the payer of the split.
An adapter that cannot act for it refuses with ``SplitRefused``
``sub_merchant_unsupported`` before sending anything.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable, Literal, Mapping, Protocol, runtime_checkable

from payments.gateway import GatewayError

SplitState = Literal["processing", "finished", "failed"]
ReceiverOutcome = Literal["pending", "success", "closed"]
ReturnState = Literal["processing", "success", "failed"]

WECHATPAY_DEFAULT_MAX_RATIO = Fraction(3, 10)
ALIPAY_DEFAULT_MAX_RATIO = Fraction(1)


@dataclass(frozen=True)
class SplitReceiver:
    """One receiver of an instruction. ``kind`` is the gateway's account
    type: WeChat Pay ``MERCHANT_ID`` / ``PERSONAL_OPENID``; Alipay ``userId``
    (2088...) / ``loginName`` (email or phone)."""

    account: str
    kind: str
    amount_minor: int
    description: str


@dataclass(frozen=True)
class SplitRequest:
    out_order_no: str                      # our idempotent instruction id
    transaction_id: str                    # the gateway's payment id
    receivers: tuple[SplitReceiver, ...]
    finish: bool = False                   # release the remainder to the payee afterwards
                                           # (WeChat unfreeze_unsplit, Alipay royalty_finish)
    sub_merchant: str | None = None        # the payment's sub-merchant, if it had one
    sub_merchant_auth: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class FinishRequest:
    """Release what is still frozen to the payee: no more splits after it."""

    out_order_no: str                      # an instruction id of its own
    transaction_id: str
    description: str
    sub_merchant: str | None = None
    sub_merchant_auth: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ReceiverResult:
    account: str
    amount_minor: int
    result: ReceiverOutcome
    fail_reason: str | None = None


@dataclass(frozen=True)
class SplitResult:
    out_order_no: str
    state: SplitState
    gateway_order_id: str | None           # the gateway's id of the instruction
    receivers: tuple[ReceiverResult, ...]
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReturnRequest:
    """A receiver gives (part of) its split back to the payee."""

    out_return_no: str                     # our idempotent id of the return
    out_order_no: str                      # the split instruction being returned
    return_account: str                    # the receiver that gives the money back
    amount_minor: int
    description: str
    sub_merchant: str | None = None        # the payee the money goes back to, if a sub-merchant
    sub_merchant_auth: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ReturnResult:
    out_return_no: str
    state: ReturnState
    fail_reason: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


class SplitRefused(GatewayError):
    """A split that must not be sent as it is. ``code``: ``no_receivers``,
    ``bad_amount``, ``bad_receiver``, ``duplicate_receiver``, ``over_cap``
    (checked here), ``sub_merchant_unsupported`` (the adapter cannot act
    for the payment's sub-merchant) or ``gateway_refused``
    (``GatewayRefused``)."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.code = code


class GatewayRefused(SplitRefused):
    """The gateway answered, with a verified signature, that it will not do
    it (a 4xx with the vendor's code): definitive for this instruction.
    ``vendor_code``/``vendor_message`` are the vendor's own words."""

    def __init__(self, message: str, *, vendor_code: str | None, vendor_message: str | None,
                 **details: Any) -> None:
        super().__init__("gateway_refused", message, vendor_code=vendor_code,
                         vendor_message=vendor_message, **details)
        self.vendor_code, self.vendor_message = vendor_code, vendor_message


@runtime_checkable
class SplitGateway(Protocol):
    name: str
    max_split_ratio: Fraction

    def split(self, request: SplitRequest) -> SplitResult: ...

    def query_split(self, out_order_no: str, transaction_id: str, *, sub_merchant: str | None = None,
                    sub_merchant_auth: str | None = None) -> SplitResult: ...

    def finish(self, request: FinishRequest) -> SplitResult: ...

    def return_split(self, request: ReturnRequest) -> ReturnResult: ...

    def query_return(self, out_return_no: str, out_order_no: str, *, sub_merchant: str | None = None,
                     sub_merchant_auth: str | None = None) -> ReturnResult: ...


def _is_positive_fen(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_receivers(receivers: Iterable[SplitReceiver]) -> int:
    """The receivers' total, or ``SplitRefused``: none at all, an amount that
    is not a positive int (fen; ``True`` is not 1), an empty account, or the
    same (kind, account) twice. Adapters run it before sending anything."""
    receivers = tuple(receivers)
    if not receivers:
        raise SplitRefused("no_receivers", "a split needs at least one receiver")
    seen: set[tuple[str, str]] = set()
    for receiver in receivers:
        if not _is_positive_fen(receiver.amount_minor):
            raise SplitRefused("bad_amount", f"amount must be a positive int in fen, not {receiver.amount_minor!r}",
                               account=receiver.account)
        if not receiver.account or not receiver.kind:
            raise SplitRefused("bad_receiver", "receiver without account or kind", account=receiver.account)
        key = (receiver.kind, receiver.account)
        if key in seen:
            raise SplitRefused("duplicate_receiver", f"receiver {receiver.kind}:{receiver.account} appears twice",
                               account=receiver.account, kind=receiver.kind)
        seen.add(key)
    return sum(r.amount_minor for r in receivers)


def split_cap(paid_minor: int, fee_minor: int, max_ratio: Fraction) -> int:
    """``floor((paid - fee) * max_ratio)`` in fen. Arguments that cannot be
    a payment (negative, a fee above the payment, a float or out-of-range
    ratio) are programming errors: ``TypeError``/``ValueError``."""
    for name, value in (("paid_minor", paid_minor), ("fee_minor", fee_minor)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be an int >= 0 in fen, not {value!r}")
    if fee_minor > paid_minor:
        raise ValueError(f"fee {fee_minor} is more than the payment {paid_minor}")
    if not isinstance(max_ratio, (Fraction, int)) or isinstance(max_ratio, bool):
        raise TypeError(f"max_ratio must be a Fraction, not {type(max_ratio).__name__}")
    if not 0 <= max_ratio <= 1:
        raise ValueError(f"max_ratio must be within 0..1, not {max_ratio}")
    return math.floor((paid_minor - fee_minor) * Fraction(max_ratio))


def check_caps(paid_minor: int, fee_minor: int, receivers: Iterable[SplitReceiver], max_ratio: Fraction,
               *, already_split_minor: int = 0) -> None:
    """``SplitRefused`` unless the receivers can be sent: see
    ``check_receivers``, and ``over_cap`` when what they get, plus what the
    payment's earlier instructions already split away, is more than
    ``split_cap(paid_minor, fee_minor, max_ratio)``. Exactly at the cap is
    allowed."""
    total = check_receivers(receivers)
    cap = split_cap(paid_minor, fee_minor, max_ratio)
    if not isinstance(already_split_minor, int) or isinstance(already_split_minor, bool) or already_split_minor < 0:
        raise ValueError(f"already_split_minor must be an int >= 0, not {already_split_minor!r}")
    if already_split_minor + total > cap:
        raise SplitRefused(
            "over_cap",
            f"split of {total} (after {already_split_minor} already split) is over the cap of {cap}"
            f" = floor(({paid_minor} - {fee_minor}) * {max_ratio})",
            total_minor=total, already_split_minor=already_split_minor, cap_minor=cap,
            over_by_minor=already_split_minor + total - cap, paid_minor=paid_minor, fee_minor=fee_minor,
            max_ratio=str(max_ratio))


def split_state(done: bool, receivers: Iterable[ReceiverResult]) -> SplitState:
    """The instruction's state from the gateway's "done" and its receivers'
    results (see "States" above)."""
    results = [r.result for r in receivers]
    if not done or "pending" in results:
        return "processing"
    if results and all(result == "closed" for result in results):
        return "failed"
    return "finished"
