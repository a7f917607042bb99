"""The payout state machine, as one table and one transition function.

    awaiting_approval ─approve─► approved ─send─► sent ─confirm─► confirmed
          │    └──cancel──┐        │  └─refuse─► refused       └─fail─► failed
          └─reject─► rejected      └─cancel─► cancelled

A payout at or above the approval threshold starts ``awaiting_approval``;
below it, ``approved``. ``refused``: the bank would not take the
instruction (nothing left the wallet). ``failed``: the bank took it and
could not pay; the money comes back to the wallet. The four states on the
right of each arrow with no way out are final.
"""
from __future__ import annotations

from .transitions import IllegalTransition, step

STATES = ("awaiting_approval", "approved", "sent", "confirmed", "failed", "rejected",
          "refused", "cancelled")
FINAL = frozenset({"confirmed", "failed", "rejected", "refused", "cancelled"})
# Still holding money in the wallet or in flight (counted against balance).
OPEN = frozenset({"awaiting_approval", "approved", "sent"})

TRANSITIONS: dict[tuple[str, str], str] = {
    ("awaiting_approval", "approve"): "approved",
    ("awaiting_approval", "reject"): "rejected",
    ("awaiting_approval", "cancel"): "cancelled",
    ("approved", "cancel"): "cancelled",
    ("approved", "send"): "sent",
    ("approved", "refuse"): "refused",
    ("sent", "confirm"): "confirmed",
    ("sent", "fail"): "failed",
}
ACTIONS = tuple(sorted({action for _, action in TRANSITIONS}))


class IllegalPayoutTransition(IllegalTransition):
    noun = "a payout"
    table = TRANSITIONS


def initial_state(amount_minor: int, approval_threshold_minor: int) -> str:
    """At or above the threshold a second person approves."""
    return "awaiting_approval" if amount_minor >= approval_threshold_minor else "approved"


def next_state(state: str, action: str) -> str:
    """The state ``action`` leads a payout to, or ``IllegalPayoutTransition``."""
    return step(IllegalPayoutTransition, state, action)
