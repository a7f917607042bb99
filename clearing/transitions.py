"""What the state machines of this package share (payouts, split
instructions, split returns): a table of ``(state, action) -> state`` and
one error that names the illegal move and what the state allows. Each
machine subclasses the error with its noun and its table. Pure."""
from __future__ import annotations

from collections.abc import Mapping

from ledger.errors import DomainError


class IllegalTransition(DomainError):
    code = "illegal_transition"
    http_status = 409
    noun = "a record"
    table: Mapping[tuple[str, str], str] = {}

    def __init__(self, state: str, action: str) -> None:
        allowed = sorted(a for (src, a) in self.table if src == state)
        super().__init__(f"{self.noun} that is {state.replace('_', ' ')} does not allow {action!r}"
                         + (f"; allowed: {', '.join(allowed)}" if allowed else "; it is final"),
                         state=state, action=action, allowed=allowed)


def step(error: type[IllegalTransition], state: str, action: str) -> str:
    """The state ``action`` leads to from ``state`` in ``error.table``, or ``error``."""
    try:
        return error.table[(state, action)]
    except KeyError:
        raise error(state, action) from None
