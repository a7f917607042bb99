"""Daily settlement batches (issue 6): per party and business day, what was
cleared, released, clawed back, paid out and returned, between opening and
closing balances read from the ledger's running balances; the batch ties
(or says by how much it does not); a rerun writes nothing twice."""
from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channel_api import payouts, settlements
from channel_api.errors import InvalidInput
from clearing.settlement import Movement, settle_day
from ledger import utcnow
from tests.channel_fixtures import engine  # noqa: F401  (a database of its own: exact sums)
from tests.test_channel_clearings import shop  # noqa: F401  (fixture)
from tests.test_payouts import bank, clock, paid, register, request  # noqa: F401  (fixtures)

SH = ZoneInfo("Asia/Shanghai")


def by_party(run_day, s):
    items, _ = settlements.list_batches(s, since=run_day, until=run_day)
    return {b.party: b for b in items}


def test_a_day_of_clearing_release_and_payouts_settles_and_ties(paid, bank, clock):
    s = paid
    day = utcnow().astimezone(SH).date()
    register(s)
    confirmed = request(s, 30_000, key="p1")
    payouts.send_payouts(s, bank)
    register(s, number="6222021234560000")             # the bank fails this one
    failed = request(s, 10_000, key="p2")
    payouts.send_payouts(s, bank)
    clock.now += timedelta(minutes=6)
    assert payouts.poll_sent(s, bank).applied == 2
    assert {payouts.get_payout(s, p.public_id).state for p in (confirmed, failed)} == {
        "confirmed", "failed"}
    if utcnow().astimezone(SH).date() != day:
        pytest.skip("the business day ended during the test")

    with pytest.raises(InvalidInput) as early:
        settlements.settle(s, day)                      # the day is not over
    assert early.value.details["field"] == "day"
    _, end = settlements.day_bounds(day)
    after = end + timedelta(minutes=1)
    run = settlements.settle(s, day, now=after)
    assert (run.settled, run.already, run.mismatched) == (2, 0, [])
    batches = by_party(day, s)
    d = batches["D"]
    assert (d.pending_opening_minor, d.wallet_opening_minor) == (0, 0)
    assert (d.cleared_minor, d.released_minor, d.paid_out_minor, d.payout_returned_minor) == (
        92_000, 92_000, 40_000, 10_000)
    assert (d.clawed_back_minor, d.other_minor, d.other_detail) == (0, 0, {})
    assert (d.pending_closing_minor, d.wallet_closing_minor) == (0, 62_000)
    assert (d.difference_minor, d.status) == (0, "balanced")
    b = batches["B"]
    assert (b.cleared_minor, b.released_minor, b.pending_closing_minor, b.status) == (
        7_500, 0, 7_500, "balanced")
    assert settlements.get_batch(s, d.public_id) == d

    again = settlements.settle(s, day, now=after)       # a rerun adds nothing
    assert (again.settled, again.already) == (0, 2)

    # The next day nothing moves: the balances carry over and still tie.
    next_day = day + timedelta(days=1)
    quiet = settlements.settle(s, next_day, now=after + timedelta(days=1))
    assert quiet.settled == 2
    d2 = by_party(next_day, s)["D"]
    assert (d2.wallet_opening_minor, d2.wallet_closing_minor, d2.paid_out_minor) == (
        62_000, 62_000, 0)
    listed, _ = settlements.list_batches(s, party="D")
    assert [x.business_day for x in listed] == [day, next_day]


def test_settle_day_names_a_difference_and_the_other_movements():
    fine = settle_day(pending_opening=100, wallet_opening=50, pending_closing=70,
                      wallet_closing=80, movements=[
                          Movement("pending", "clearing.release", -30),
                          Movement("wallet", "clearing.release", 30)])
    assert (fine.released_minor, fine.balanced) == (30, True)
    off = settle_day(pending_opening=0, wallet_opening=0, pending_closing=0,
                     wallet_closing=101, movements=[
                         Movement("wallet", "clearing.release", 100)])
    assert (off.difference_minor, off.balanced) == (1, False)
    other = settle_day(pending_opening=0, wallet_opening=0, pending_closing=0,
                       wallet_closing=7, movements=[Movement("wallet", "manual.adjust", 7)])
    assert (other.other_minor, other.other_detail, other.balanced) == (
        7, {"manual.adjust": 7}, True)
    with pytest.raises(ValueError):
        settle_day(pending_opening=0, wallet_opening=0, pending_closing=0, wallet_closing=0,
                   movements=[Movement("escrow", "x", 1)])


CODES = st.sampled_from(["order.clear", "clearing.release", "clearing.clawback", "payout.send",
                         "payout.fail", "interest.allocate", "manual.adjust"])
MOVES = st.lists(st.tuples(st.sampled_from(["pending", "wallet"]), CODES,
                           st.integers(-10**12, 10**12)), max_size=30)


@given(MOVES, st.integers(0, 10**12), st.integers(0, 10**12), st.integers(-3, 3))
def test_the_figures_always_add_up_from_opening_to_closing(moves, p_open, w_open, skew):
    movements = [Movement(*m) for m in moves]
    p_close = p_open + sum(m.net_minor for m in movements if m.account == "pending")
    w_close = w_open + sum(m.net_minor for m in movements if m.account == "wallet") + skew
    day = settle_day(pending_opening=p_open, wallet_opening=w_open, pending_closing=p_close,
                     wallet_closing=w_close, movements=movements)
    assert day.difference_minor == abs(skew)
    # Every movement lands in exactly one figure: the release moves money
    # between the two accounts, the rest changes the total.
    total_in = (day.cleared_minor - day.clawed_back_minor - day.paid_out_minor
                + day.payout_returned_minor + day.interest_minor + day.other_minor)
    released_net = sum(m.net_minor for m in movements if m.entry_code == "clearing.release")
    assert p_open + w_open + total_in + released_net == p_close + w_close - skew
