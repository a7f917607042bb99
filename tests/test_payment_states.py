"""The payment state machine as a table of (state, action) -> outcome."""
from __future__ import annotations

import pytest

from payments import states

ACTIONS = ("send", "succeed", "fail", "expire")
EXPECTED = {
    ("created", "send"): "pending", ("created", "succeed"): "succeeded",
    ("created", "fail"): "failed", ("created", "expire"): "expired",
    ("pending", "succeed"): "succeeded", ("pending", "fail"): "failed",
    ("pending", "expire"): "expired",
}


@pytest.mark.parametrize("state", states.STATES)
@pytest.mark.parametrize("action", ACTIONS)
def test_every_state_and_action(state, action):
    if (state, action) in EXPECTED:
        assert states.transition(state, action) == EXPECTED[(state, action)]
    else:
        with pytest.raises(states.IllegalPaymentTransition) as refused:
            states.transition(state, action)
        assert refused.value.details == {"state": state, "action": action}


def test_terminal_states_accept_nothing():
    for state in states.TERMINAL:
        assert not [a for a in ACTIONS if (state, a) in states.TRANSITIONS]
