"""The order state machine: one table, one transition function (pure).

::

    placed ──reserve──► awaiting_payment ──fund──► paid ──ship──► shipped
      │  └─hold─► held ─approve─┘   │                │             │
      │            └─reject─► cancelled ◄─cancel─────┘        deliver / confirm_receipt
      └─cancel─► cancelled ◄─expire─┘                          / auto_confirm
                                                                   ▼
                                        completed ◄──complete── delivered

* ``reserve``: the payment plan's holds are in place (rebate, prepaid and
  credit reserved with pending entries); ``hold``: a credit rule sent the
  order to approval instead; ``approve``/``reject`` decide it.
* ``fund``: the plan is fully funded (every part captured).
* ``cancel`` is allowed before shipment: from placed, held, awaiting payment
  and paid (a paid order's money goes back to its sources); ``expire`` is the
  payment window's job.
* ``deliver`` (the seller), ``confirm_receipt`` (the buyer) and
  ``auto_confirm`` (a job, after the configured days) all mean delivered.
* Returns after payment have their own records and states (a later slice);
  they do not move the order back.
"""
from __future__ import annotations

from ledger import DomainError

STATES = ("placed", "held", "awaiting_payment", "paid", "shipped", "delivered", "completed",
          "cancelled")
TERMINAL = frozenset({"completed", "cancelled"})

TRANSITIONS: dict[tuple[str, str], str] = {
    ("placed", "reserve"): "awaiting_payment",
    ("placed", "hold"): "held",
    ("placed", "cancel"): "cancelled",
    ("held", "approve"): "awaiting_payment",
    ("held", "reject"): "cancelled",
    ("held", "cancel"): "cancelled",
    ("awaiting_payment", "fund"): "paid",
    ("awaiting_payment", "cancel"): "cancelled",
    ("awaiting_payment", "expire"): "cancelled",
    ("paid", "ship"): "shipped",
    ("paid", "cancel"): "cancelled",
    ("shipped", "deliver"): "delivered",
    ("shipped", "confirm_receipt"): "delivered",
    ("shipped", "auto_confirm"): "delivered",
    ("delivered", "complete"): "completed",
}
ACTIONS = tuple(sorted({action for _, action in TRANSITIONS}))


class IllegalTransition(DomainError):
    """The action is not allowed in the order's state; ``details`` names the
    state, the action and what is allowed there."""

    code = "illegal_transition"
    http_status = 409


def allowed_actions(state: str) -> tuple[str, ...]:
    return tuple(sorted(action for (src, action) in TRANSITIONS if src == state))


def transition(state: str, action: str) -> str:
    """The state after ``action``, or ``IllegalTransition``."""
    if state not in STATES:
        raise ValueError(f"unknown order state {state!r}")
    target = TRANSITIONS.get((state, action))
    if target is None:
        allowed = allowed_actions(state)
        raise IllegalTransition(
            f"an order that is {state.replace('_', ' ')} cannot {action.replace('_', ' ')}"
            + (f"; allowed: {', '.join(allowed)}" if allowed else "; it is final"),
            state=state, action=action, allowed=list(allowed))
    return target
