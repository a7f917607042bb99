"""The split instruction state machine, as one table and one transition
function (like ``clearing.payout_states``).

    created ─send─► processing ─succeed─► succeeded
       │  │                └──fail──► failed ─retry─► retried
       │  └─refuse─► refused ─retry─► retried
       └─block─► blocked ─retry─► retried

* ``created``: planned and recorded, its ``out_order_no`` fixed; the send job
  sends it (again, with the same id, after the gateway could not be reached:
  the gateway deduplicates on it).
* ``blocked``: not sent, and it will not be as it is: a receiver has no
  account registered at the gateway, or the split would be over the
  gateway's cap. Raised for finance.
* ``refused``: the gateway said no, definitively (a signed refusal). Raised.
* ``processing``: the gateway took it; receivers' results are polled.
* ``succeeded``: every receiver paid (for a finish: the rest released to
  the payee).
* ``failed``: the gateway is done and at least one receiver was not paid
  (``closed``, with the vendor's reason), or the gateway does not know the
  instruction. Receivers that were paid are posted all the same. Raised.
* ``retried``: finance retried it; a new instruction (a new id) carries the
  legs still owed. An instruction is retried at most once, so the same legs
  are never in two live instructions.

Pure: no database, no web.
"""
from __future__ import annotations

from .transitions import IllegalTransition, step

KINDS = ("split", "finish")
STATES = ("created", "blocked", "refused", "processing", "succeeded", "failed", "retried")
RESULTS = ("pending", "success", "closed")
FINAL = frozenset({"succeeded", "retried"})
# Waiting for finance: listed by ``GET /v1/split-instructions?attention=true``.
ATTENTION = frozenset({"blocked", "refused", "failed"})
# May still move money at the gateway (counted against the cap).
LIVE = frozenset({"created", "processing"})

TRANSITIONS: dict[tuple[str, str], str] = {
    ("created", "send"): "processing",
    ("created", "block"): "blocked",
    ("created", "refuse"): "refused",
    ("processing", "succeed"): "succeeded",
    ("processing", "fail"): "failed",
    ("blocked", "retry"): "retried",
    ("refused", "retry"): "retried",
    ("failed", "retry"): "retried",
}
ACTIONS = tuple(sorted({action for _, action in TRANSITIONS}))


class IllegalSplitTransition(IllegalTransition):
    noun = "a split instruction"
    table = TRANSITIONS


def next_state(state: str, action: str) -> str:
    """The state ``action`` leads to from ``state``, or ``IllegalSplitTransition``."""
    return step(IllegalSplitTransition, state, action)


# -- split returns (unwinding a receiver's split after a refund) ---------------------------------
#
#     requested ─send─► processing ─succeed─► succeeded
#         │                 └──fail──► failed ─retry─► retried
#         └──fail──► failed
#
# * ``requested``: recorded by a refund that needs the receiver's money back,
#   its ``out_return_no`` fixed; the job sends it (again, with the same id,
#   after the gateway could not be reached).
# * ``processing``: the gateway took it; polled.
# * ``succeeded``: the money is back in the payee's funds at the gateway
#   (posted once).
# * ``failed``: the gateway refused it or failed it, or it has no return
#   call (Alipay unwinds only through the buyer's refund). Raised for
#   finance; a retry is a new return (a new ``out_return_no``).

RETURN_STATES = ("requested", "processing", "succeeded", "failed", "retried")
# Waiting for finance: listed by ``GET /v1/split-returns?attention=true``.
RETURN_ATTENTION = frozenset({"failed"})
# May still bring money back (counted when a refund asks again).
RETURN_LIVE = frozenset({"requested", "processing"})

RETURN_TRANSITIONS: dict[tuple[str, str], str] = {
    ("requested", "send"): "processing",
    ("requested", "fail"): "failed",
    ("processing", "succeed"): "succeeded",
    ("processing", "fail"): "failed",
    ("failed", "retry"): "retried",
}
RETURN_ACTIONS = tuple(sorted({action for _, action in RETURN_TRANSITIONS}))


class IllegalSplitReturnTransition(IllegalTransition):
    noun = "a split return"
    table = RETURN_TRANSITIONS


def next_return_state(state: str, action: str) -> str:
    """The state ``action`` leads a split return to, or ``IllegalSplitReturnTransition``."""
    return step(IllegalSplitReturnTransition, state, action)
