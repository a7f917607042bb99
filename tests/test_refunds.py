"""The pure refund rules (channel_api/refunds.py)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channel_api import refunds


def test_a_line_returned_in_steps_gives_back_its_total_to_the_fen():
    # 1,000 for 3 units: 333 + 333 + 334.
    assert refunds.line_refund(1_000, 3, 0, 0, 1) == 333
    assert refunds.line_refund(1_000, 3, 1, 333, 1) == 333
    assert refunds.line_refund(1_000, 3, 2, 666, 1) == 334
    with pytest.raises(ValueError):
        refunds.line_refund(1_000, 3, 2, 666, 2)


def test_the_issue_s_mix_is_refunded_in_proportion():
    room = {"rebate": 100, "prepaid": 300, "credit": 600}
    assert refunds.allocate(500, room) == {"rebate": 50, "prepaid": 150, "credit": 300}
    # 1 fen: the part with most room takes it.
    assert refunds.allocate(1, room) == {"rebate": 0, "prepaid": 0, "credit": 1}
    with pytest.raises(ValueError):
        refunds.allocate(1_001, room)


def test_an_order_discount_is_shared_by_its_returns():
    assert refunds.order_share(500, 1_000, 900, 0, False) == 450
    assert refunds.order_share(500, 1_000, 900, 450, True) == 450


@given(st.dictionaries(st.sampled_from(refunds.METHOD_ORDER), st.integers(0, 10**12),
                       min_size=1), st.data())
def test_shares_add_up_and_stay_within_each_part(room, data):
    amount = data.draw(st.integers(0, sum(room.values())))
    shares = refunds.allocate(amount, room)
    assert sum(shares.values()) == amount
    assert all(0 <= shares[m] <= room[m] for m in room)


@given(st.integers(1, 10**9), st.integers(1, 50), st.data())
def test_steps_of_any_size_return_exactly_the_line_total(line_total, quantity, data):
    returned = refunded = 0
    while returned < quantity:
        step = data.draw(st.integers(1, quantity - returned))
        refunded += refunds.line_refund(line_total, quantity, returned, refunded, step)
        returned += step
        assert refunded <= line_total
    assert refunded == line_total
