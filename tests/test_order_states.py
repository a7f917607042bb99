"""The order state machine as a table: every (state, action) pair, allowed or
refused with a named error."""
from __future__ import annotations

import pytest

from channel_api.order_states import (
    ACTIONS,
    STATES,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    allowed_actions,
    transition,
)

EXPECTED = {
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


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("action", ACTIONS)
def test_every_state_and_action(state, action):
    if (state, action) in EXPECTED:
        assert transition(state, action) == EXPECTED[(state, action)]
    else:
        with pytest.raises(IllegalTransition) as refused:
            transition(state, action)
        assert refused.value.code == "illegal_transition"
        assert refused.value.details == {"state": state, "action": action,
                                         "allowed": list(allowed_actions(state))}


def test_the_table_is_the_documented_one_and_final_states_are_final():
    assert TRANSITIONS == EXPECTED
    for state in TERMINAL:
        assert allowed_actions(state) == ()
    # Shipment is the point of no cancel.
    assert "cancel" not in allowed_actions("shipped")
    assert "cancel" in allowed_actions("paid")


def test_an_unknown_state_is_a_programming_error():
    with pytest.raises(ValueError):
        transition("lost", "ship")
