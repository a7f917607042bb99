"""The payment state machine (pure): one table, one transition function.

::

    created ──send──► pending ──succeed──► succeeded
       │  └─succeed─────────────────────────┘
       ├──fail / expire──► failed / expired ◄──fail / expire── pending

* ``send``: the gateway accepted the payment and gave a way to pay.
* ``succeed``: a verified callback (or a query) says the money arrived; it
  may come before we recorded ``send``.
* ``fail``: the gateway closed it unpaid for good; ``expire``: our payment
  window passed (or the gateway closed it for time).
* Refunds do not change the state: they are recorded on the payment's
  refunds and its ``refunded_minor``.
"""
from __future__ import annotations

from ledger import DomainError

STATES = ("created", "pending", "succeeded", "failed", "expired")
TERMINAL = frozenset({"succeeded", "failed", "expired"})

TRANSITIONS: dict[tuple[str, str], str] = {
    ("created", "send"): "pending",
    ("created", "succeed"): "succeeded",
    ("created", "fail"): "failed",
    ("created", "expire"): "expired",
    ("pending", "succeed"): "succeeded",
    ("pending", "fail"): "failed",
    ("pending", "expire"): "expired",
}


class IllegalPaymentTransition(DomainError):
    code = "illegal_payment_transition"
    http_status = 409


def transition(state: str, action: str) -> str:
    """The state after ``action``, or ``IllegalPaymentTransition``."""
    if state not in STATES:
        raise ValueError(f"unknown payment state {state!r}")
    target = TRANSITIONS.get((state, action))
    if target is None:
        raise IllegalPaymentTransition(f"a payment that is {state} cannot {action}",
                                       state=state, action=action)
    return target
