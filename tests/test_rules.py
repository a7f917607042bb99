"""The pure rules of double entry, by example and by property (no database)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import InsufficientFunds, LimitExceeded, PostingLine, UnbalancedEntry
from ledger.rules import (
    Totals,
    available_balance,
    check_balanced,
    check_bounds,
    moves_toward_bound,
    pending_balance,
    posted_balance,
)

amounts = st.integers(min_value=0, max_value=10**12)


@given(amounts, amounts, amounts, amounts)
def test_available_never_exceeds_posted_and_pending_adds_both_ways(pd, pc, qd, qc):
    totals = Totals(pd, pc, qd, qc)
    for side in ("debit", "credit"):
        posted = posted_balance(side, pd, pc)
        assert available_balance(side, totals) <= posted
        inflow, outflow = (qd, qc) if side == "debit" else (qc, qd)
        assert pending_balance(side, totals) == posted + inflow - outflow


@given(st.lists(st.tuples(st.sampled_from(["debit", "credit"]), st.integers(1, 10**9)), min_size=1, max_size=8))
def test_lines_balance_exactly_when_debits_equal_credits(rows):
    postings = [PostingLine("a", side, amount, "CNY") for side, amount in rows]
    debits = sum(a for s, a in rows if s == "debit")
    credits = sum(a for s, a in rows if s == "credit")
    if debits == credits:
        check_balanced(postings)
    else:
        with pytest.raises(UnbalancedEntry):
            check_balanced(postings)


@pytest.mark.parametrize(
    "normal, low, high, side, toward",
    [
        ("credit", 0, None, "debit", True),     # a wallet being spent
        ("credit", 0, None, "credit", False),   # a wallet being paid
        ("debit", 0, 500, "debit", True),       # a credit line being used
        ("debit", 0, 500, "credit", True),      # ... or repaid (toward its floor)
        ("debit", None, None, "credit", False), # unbounded
    ],
)
def test_which_postings_move_an_account_toward_a_bound(normal, low, high, side, toward):
    assert moves_toward_bound(normal, low, high, side) is toward


def test_the_minimum_counts_pending_outflows_and_the_maximum_pending_inflows():
    before = Totals(posted_credits=100)
    with pytest.raises(InsufficientFunds):
        check_bounds("w", "credit", 0, None, before, Totals(posted_credits=100, pending_debits=101))
    check_bounds("w", "credit", 0, None, before, Totals(posted_credits=100, pending_debits=100))
    with pytest.raises(LimitExceeded):
        check_bounds("c", "debit", 0, 100, Totals(), Totals(posted_debits=60, pending_debits=41))


def test_a_balance_already_outside_a_bound_may_move_back_but_not_further():
    outside = Totals(posted_debits=800)  # a credit line of 500 used 800 (limit lowered)
    check_bounds("c", "debit", 0, 500, outside, Totals(posted_debits=800, posted_credits=100))
    with pytest.raises(LimitExceeded):
        check_bounds("c", "debit", 0, 500, outside, Totals(posted_debits=801))
