"""Credit (issue 4): due dates, the policy's checks, grade defaults,
temporary increases, holds and their approval, the freeze job."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

import channel_api as ca
import ledger
from channel_api import credit, funding, orders
from channel_api.errors import CreditUnavailable, InvalidInput
from channel_api.order_states import IllegalTransition
from ledger import utcnow
from tests.test_channel_funding import build

SH = ZoneInfo("Asia/Shanghai")
UTC = timezone.utc


def local(*args) -> datetime:
    return datetime(*args, tzinfo=SH)


# -- pure rules -----------------------------------------------------------------------------------

@pytest.mark.parametrize("delivered, kind, days, day, overdue_from", [
    (local(2026, 1, 5, 10), "days_after_delivery", 30, None, local(2026, 2, 4, 10)),
    # Payable through the 10th of the month: from the 5th of January, the 10th of January.
    (local(2026, 1, 5, 10), "day_of_month", 0, 10, local(2026, 1, 11)),
    # Delivered on the due day itself: still that day.
    (local(2026, 1, 10, 23), "day_of_month", 0, 10, local(2026, 1, 11)),
    (local(2026, 1, 15), "day_of_month", 0, 10, local(2026, 2, 11)),
    # 30 days' grace first: 5 Jan + 30 = 4 Feb, then the next 10th.
    (local(2026, 1, 5), "day_of_month", 30, 10, local(2026, 2, 11)),
    # Across the year end.
    (local(2026, 12, 20), "day_of_month", 0, 1, local(2027, 1, 2)),
    # The local date decides: 23:30 UTC on 9 Jan is 10 Jan in Shanghai.
    (datetime(2026, 1, 9, 23, 30, tzinfo=UTC), "day_of_month", 0, 9, local(2026, 2, 10)),
])
def test_due_dates_follow_the_line_s_terms(delivered, kind, days, day, overdue_from):
    assert credit.due_at(delivered, kind, days, day, SH) == overdue_from


@pytest.mark.parametrize("kwargs, expected", [
    (dict(), []),
    (dict(expired=True), [("credit_expired", "block")]),
    (dict(expired=True, policy=credit.Policy(on_expired="hold")), [("credit_expired", "hold")]),
    # Over the limit is left to the ledger's bound unless the policy holds.
    (dict(amount=900), []),
    (dict(amount=900, policy=credit.Policy(on_limit="hold")), [("limit_exceeded", "hold")]),
    (dict(amount=500, policy=credit.Policy(on_limit="hold")), []),
    (dict(worst_overdue_days=5), []),
    (dict(worst_overdue_days=5, policy=credit.Policy(overdue_days=5)), []),
    (dict(worst_overdue_days=6, policy=credit.Policy(overdue_days=5, on_overdue="hold")),
     [("overdue", "hold")]),
    # The line's own rule blocks, whatever the policy says.
    (dict(worst_overdue_days=6, line_block_overdue_days=0,
          policy=credit.Policy(overdue_days=5, on_overdue="hold")), [("overdue", "block")]),
])
def test_credit_findings(kwargs, expected):
    args = dict(amount=100, available=500, expired=False, worst_overdue_days=None,
                line_block_overdue_days=None, policy=credit.DEFAULT_POLICY) | kwargs
    assert credit.credit_findings(**args) == expected


# -- with a database --------------------------------------------------------------------------------

@pytest.fixture
def shop(session):
    build(session)
    ca.create_grade(session, "gold", "Gold")
    ca.create_grade(session, "silver", "Silver")
    ca.update_party(session, "S", grade="gold")
    return session


def place(shop, quantity=1, buyer="S"):
    return orders.place_order(shop, buyer=buyer, seller="D", actor="store",
                              lines=[{"sku": "g1", "quantity": quantity}]).public_id


def on_credit(shop, order, amount, **kw):
    return funding.set_payment_plan(shop, order, [{"method": "credit", "amount_minor": amount}],
                                    actor="store", **kw)


def bound(shop):
    return ledger.get_account(shop, credit.credit_account("S", "D")).max_balance_minor


def test_a_buyer_gets_its_grade_s_default_line_until_one_is_set_by_hand(shop):
    assert funding.balances(shop, buyer="S", seller="D").credit.status is None
    credit.set_credit_default(shop, seller="D", grade="gold", limit_minor=8_000,
                              terms_kind="day_of_month", terms_days=0, due_day=10, actor="dist")
    shown = funding.balances(shop, buyer="S", seller="D").credit
    assert (shown.limit_minor, shown.source, shown.due_day) == (8_000, "grade_default", 10)
    assert on_credit(shop, place(shop, 3), 3_000).state == "paid"
    assert bound(shop) == 8_000
    # The default changes: the line follows it at its next use.
    credit.set_credit_default(shop, seller="D", grade="gold", limit_minor=4_000, actor="dist")
    with pytest.raises(ledger.LimitExceeded):
        on_credit(shop, place(shop, 2), 2_000)
    assert bound(shop) == 4_000
    # Set by hand, it no longer follows the default.
    credit.set_credit_line(shop, seller="D", buyer="S", limit_minor=20_000, actor="dist")
    credit.set_credit_default(shop, seller="D", grade="gold", limit_minor=1_000, actor="dist")
    assert on_credit(shop, place(shop, 5), 5_000).state == "paid"
    line = funding.balances(shop, buyer="S", seller="D").credit
    assert (line.source, line.limit_minor, line.used_minor) == ("manual", 20_000, 8_000)
    assert [d.grade for d in credit.credit_defaults(shop, "D")] == ["gold"]
    with pytest.raises(InvalidInput) as bad:
        credit.set_credit_default(shop, seller="D", grade="gold", limit_minor=1_000,
                                  terms_kind="day_of_month", due_day=31, actor="dist")
    assert bad.value.details["field"] == "due_day"


def test_a_temporary_increase_counts_until_it_lapses(shop):
    credit.set_credit_line(shop, seller="D", buyer="S", limit_minor=1_000, actor="dist")
    now = utcnow()
    credit.grant_increase(shop, seller="D", buyer="S", amount_minor=2_000,
                          valid_to=now + timedelta(days=1), reason="festival stock", actor="dist")
    assert bound(shop) == 3_000
    shown = funding.balances(shop, buyer="S", seller="D").credit
    assert (shown.limit_minor, shown.base_limit_minor, shown.increases_minor) == (3_000, 1_000,
                                                                                  2_000)
    assert on_credit(shop, place(shop, 2), 2_000).state == "paid"
    # Two days on the increase has lapsed: the job lowers the bound again, and
    # the debt above the limit stays (it can be repaid, not increased).
    assert credit.lapse_increases(shop, now=now + timedelta(days=2)) == 1
    assert bound(shop) == 1_000
    with pytest.raises(ledger.LimitExceeded):
        on_credit(shop, place(shop, 1), 1_000, at=now + timedelta(days=2))
    assert [i.reason for i in credit.increases(shop, seller="D", buyer="S")] == ["festival stock"]
    with pytest.raises(InvalidInput):
        credit.grant_increase(shop, seller="D", buyer="S", amount_minor=1,
                              valid_to=now - timedelta(days=1), reason="late", actor="dist")


def test_over_the_limit_the_policy_holds_the_order_for_approval(shop):
    credit.set_credit_line(shop, seller="D", buyer="S", limit_minor=2_000, actor="dist")
    credit.set_credit_policy(shop, seller="D", grade="gold", on_limit="hold", actor="dist")
    funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=1_000,
                            bank_reference="DEP-1", actor="finance")
    order = place(shop, 4)
    held = funding.set_payment_plan(shop, order, [{"method": "credit", "amount_minor": 3_000},
                                                  {"method": "prepaid", "amount_minor": 1_000}],
                                    actor="store")
    assert held.state == "held"
    waiting = funding.held_orders(shop, seller="D")
    assert [(h.order, h.reasons, h.plan) for h in waiting] == [
        (order, ("limit_exceeded",), {"credit": 3_000, "prepaid": 1_000})]
    # Nothing is reserved while it waits.
    now = funding.balances(shop, buyer="S", seller="D")
    assert (now.credit.reserved_minor, now.prepaid.reserved_minor) == (0, 0)
    with pytest.raises(IllegalTransition):
        orders.ship_order(shop, order, actor="dist")

    paid = funding.approve_held_order(shop, order, actor="dist-finance", note="good customer")
    assert paid.state == "paid"
    after = funding.balances(shop, buyer="S", seller="D")
    assert (after.credit.used_minor, after.prepaid.posted_minor) == (3_000, 0)
    # The approval granted exactly the shortfall, for this order.
    [increase] = credit.increases(shop, seller="D", buyer="S")
    assert (increase.amount_minor, increase.order) == (1_000, order)
    assert funding.held_orders(shop, seller="D") == []
    assert [e.action for e in orders.order_events(shop, order)] == [
        "place", "hold", "approve", "fund"]
    with pytest.raises(IllegalTransition):
        funding.approve_held_order(shop, order, actor="dist")
    assert ledger.check_ledger(shop) == []


def test_a_rejected_or_cancelled_hold_cancels_the_order_and_holds_nothing(shop):
    credit.set_credit_line(shop, seller="D", buyer="S", limit_minor=1_000, actor="dist",
                           valid_to=utcnow() - timedelta(days=1))
    credit.set_credit_policy(shop, seller="D", on_expired="hold", actor="dist")
    first, second = place(shop), place(shop)
    for order in (first, second):
        assert on_credit(shop, order, 1_000).state == "held"
    assert funding.held_orders(shop, seller="D")[0].reasons == ("credit_expired",)
    rejected = funding.reject_held_order(shop, first, actor="dist", note="renew the contract")
    assert rejected.state == "cancelled"
    assert funding.cancel_order(shop, second, actor="store").state == "cancelled"
    assert funding.held_orders(shop, seller="D") == []
    assert [h.note for h in funding.held_orders(shop, seller="D", state="rejected")] == [
        "renew the contract"]
    assert funding.balances(shop, buyer="S", seller="D").credit.reserved_minor == 0


def test_a_silver_buyer_falls_under_the_seller_s_policy_for_all_grades(shop):
    ca.create_party(shop, code="S2", name="S2", role="store", region="CN", customer_type="t",
                    grade="silver")
    from channel_api import network
    network.create_relationship(shop, seller="D", buyer="S2", actor="t",
                                valid_from=utcnow() - timedelta(days=1))
    credit.set_credit_policy(shop, seller="D", on_limit="hold", actor="dist")
    credit.set_credit_policy(shop, seller="D", grade="gold", on_limit="block", actor="dist")
    for buyer in ("S", "S2"):
        credit.set_credit_line(shop, seller="D", buyer=buyer, limit_minor=500, actor="dist")
    assert on_credit(shop, place(shop, 1, buyer="S2"), 1_000).state == "held"
    with pytest.raises(ledger.LimitExceeded):
        on_credit(shop, place(shop, 1), 1_000)
    assert [p.grade for p in credit.credit_policies(shop, "D")] == [None, "gold"]


def test_overdue_debts_hold_per_policy_and_the_job_freezes_the_line(shop):
    credit.set_credit_line(shop, seller="D", buyer="S", limit_minor=10_000, terms_days=0,
                           actor="dist")
    credit.set_credit_policy(shop, seller="D", overdue_days=3, on_overdue="hold",
                             freeze_overdue_days=10, actor="dist")
    first = place(shop)
    on_credit(shop, first, 1_000)
    orders.ship_order(shop, first, actor="dist")
    orders.confirm_receipt(shop, first, actor="store")
    soon, later = utcnow() + timedelta(days=2), utcnow() + timedelta(days=5)
    assert on_credit(shop, place(shop), 1_000, at=soon).state == "paid"
    assert on_credit(shop, place(shop), 1_000, at=later).state == "held"
    assert credit.freeze_overdue_lines(shop, now=later) == 0
    much_later = utcnow() + timedelta(days=11, hours=1)
    assert credit.freeze_overdue_lines(shop, now=much_later) == 1
    assert credit.freeze_overdue_lines(shop, now=much_later) == 0  # safe to rerun
    with pytest.raises(CreditUnavailable) as frozen:
        on_credit(shop, place(shop), 1_000, at=much_later)
    assert frozen.value.details["reason"] == "credit_frozen"
    aging = credit.credit_aging(shop, buyer="S", seller="D", at=much_later)
    assert aging.buckets["0-30"] == 1_000 and aging.buckets["not_due"] == 1_000
    shown = funding.balances(shop, buyer="S", seller="D").credit
    assert (shown.used_minor, shown.overdue_minor, shown.due_minor) == (2_000, 1_000, 0)


def test_a_day_of_month_line_puts_its_debts_due_on_that_day(shop):
    credit.set_credit_line(shop, seller="D", buyer="S", limit_minor=10_000,
                           terms_kind="day_of_month", terms_days=0, due_day=28, actor="dist")
    order = place(shop)
    on_credit(shop, order, 1_000)
    orders.ship_order(shop, order, actor="dist")
    orders.confirm_receipt(shop, order, actor="store")
    [debt] = credit.credit_aging(shop, buyer="S", seller="D").debts
    due_local = debt.due_at.astimezone(SH)
    # Payable through the 28th: overdue from midnight of the 29th, local time.
    assert (due_local.day, due_local.hour, due_local.minute) == (29, 0, 0)
    assert debt.due_at - debt.delivered_at <= timedelta(days=32)
    assert credit.due_at(debt.delivered_at, "day_of_month", 0, 28, SH) == debt.due_at
