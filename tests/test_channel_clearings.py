"""Clearing an order's cash (issue 6, first part): the legs of the rule
moved from the escrow to pending, released by their timing, clawed back by
a refund; credit cleared only as repayments arrive; the cash invariant
after each."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import channel_api as ca
import ledger
from channel_api import (
    business_calendar,
    cash,
    clearing_rules,
    clearings,
    credit,
    funding,
    network,
    orders,
    returns,
)
from clearing.split import Timing
from ledger import EntryRequest, PostingLine, utcnow
from tests.channel_fixtures import engine  # noqa: F401  (a database of its own: exact sums)
from tests.test_channel_funding import build

SH = ZoneInfo("Asia/Shanghai")
LEGS = [  # the F2B2b example, in basis points
    {"recipient": "seller", "basis": "remainder", "value": 0,
     "timing": {"kind": "on_delivery"}},
    {"recipient": "brand", "basis": "percent", "value": 750,
     "timing": {"kind": "t_plus", "days": 2, "anchor": "delivery"}},
    {"recipient": "platform", "basis": "percent", "value": 50,
     "timing": {"kind": "immediate"}},
]


@pytest.fixture
def shop(session):
    build(session)
    ca.create_party(session, code="B", name="Brand", role="brand", region="CN",
                    customer_type="t")
    network.create_relationship(session, seller="B", buyer="D", actor="t",
                                valid_from=utcnow() - timedelta(days=1))
    clearing_rules.create_rule(session, code="d-split", name="D's split", sellers=["D"],
                               legs=LEGS, actor="brand", valid_from=utcnow() - timedelta(days=1))
    return session


def posted(s, code):
    try:
        return ledger.get_account(s, code).posted_minor
    except ledger.AccountNotFound:
        return 0


def money(s, order):
    return {"escrow": posted(s, funding.escrow_account(order)),
            "D pending": posted(s, "party:D:pending"), "D wallet": posted(s, "party:D:wallet"),
            "B pending": posted(s, "party:B:pending"), "B wallet": posted(s, "party:B:wallet"),
            "platform": posted(s, "platform:revenue")}


def pay(s, quantity=100, **plan):
    """An order of ``quantity`` x 10.00 paid by prepaid (by default)."""
    order = orders.place_order(s, buyer="S", seller="D", actor="store",
                               lines=[{"sku": "g1", "quantity": quantity}]).public_id
    parts = [{"method": m, "amount_minor": a} for m, a in (plan or {
        "prepaid": quantity * 1_000}).items()]
    funding.set_payment_plan(s, order, parts, actor="store")
    return order


def test_a_paid_order_is_cleared_released_by_timing_and_clawed_back_by_a_return(shop):
    s = shop
    funding.confirm_deposit(s, buyer="S", seller="D", amount_minor=100_000,
                            bank_reference="DEP", actor="t")
    order = pay(s)  # 1,000.00
    assert money(s, order) == {"escrow": 0, "D pending": 92_000, "D wallet": 0,
                               "B pending": 7_500, "B wallet": 0, "platform": 500}
    docs = clearings.documents(s, order=order)
    assert sorted((d.recipient, d.amount_minor, d.state) for d in docs) == [
        ("B", 7_500, "pending"), ("D", 92_000, "pending"), ("platform", 500, "released")]
    assert [d.rule_code for d in docs] == ["d-split"] * 3
    assert clearings.release_due(s) == 0  # nothing is due before delivery
    orders.ship_order(s, order, actor="dist")
    orders.confirm_receipt(s, order, actor="store")
    delivered = utcnow()
    assert clearings.release_due(s, now=delivered + timedelta(minutes=1)) == 1  # the seller's
    assert money(s, order)["D wallet"] == 92_000
    assert clearings.release_due(s, now=delivered + timedelta(days=6)) == 1  # T+2 business days
    assert money(s, order)["B wallet"] == 7_500
    assert cash.check_cash(s).holds

    # Half the order comes back: half of each leg is clawed back, from the wallets.
    ret = returns.request_return(s, order, lines=[{"line_no": 1, "quantity": 50}], reason="x",
                                 actor="store")
    returns.approve_return(s, ret.public_id, actor="dist")
    assert money(s, order) == {"escrow": 0, "D pending": 0, "D wallet": 46_000,
                               "B pending": 0, "B wallet": 3_750, "platform": 250}
    assert funding.balances(s, buyer="S", seller="D").prepaid.posted_minor == 50_000
    assert cash.check_cash(s).holds and ledger.check_ledger(s) == []


def test_a_credit_funded_order_is_cleared_only_as_repayments_arrive(shop):
    s = shop
    credit.set_credit_line(s, seller="D", buyer="S", limit_minor=100_000, actor="t")
    order = pay(s, credit=100_000)
    assert money(s, order)["D pending"] == 0  # credit is not cash: nothing cleared
    credit.repay_credit(s, buyer="S", seller="D", amount_minor=40_000, bank_reference="RP-1",
                        actor="finance")
    assert money(s, order) == {"escrow": 0, "D pending": 36_800, "D wallet": 0,
                               "B pending": 3_000, "B wallet": 0, "platform": 200}
    credit.repay_credit(s, buyer="S", seller="D", amount_minor=60_000, bank_reference="RP-2",
                        actor="finance")
    assert money(s, order)["D pending"] == 92_000 and money(s, order)["platform"] == 500
    assert cash.check_cash(s).holds and ledger.check_ledger(s) == []


def test_a_refund_that_needs_cash_a_wallet_paid_out_is_stopped_for_finance(shop):
    s = shop
    funding.confirm_deposit(s, buyer="S", seller="D", amount_minor=10_000,
                            bank_reference="DEP-2", actor="t")
    order = pay(s, quantity=10)
    orders.ship_order(s, order, actor="dist")
    orders.confirm_receipt(s, order, actor="store")
    clearings.release_due(s, now=utcnow() + timedelta(minutes=1))
    # D pays its wallet out (the payout flow is issue 6's next part).
    ledger.post_entry(s, EntryRequest(code="test.payout", postings=[
        PostingLine("party:D:wallet", "debit", 9_200, "CNY"),
        PostingLine("custody:bank", "credit", 9_200, "CNY")]))
    ret = returns.request_return(s, order, lines=[{"line_no": 1, "quantity": 5}], reason="x",
                                 actor="store")
    with pytest.raises(clearings.ClawbackBlocked) as blocked:
        returns.approve_return(s, ret.public_id, actor="dist")
    assert blocked.value.code == "clawback_blocked"


def test_t_plus_n_counts_business_days_across_a_weekend_and_a_holiday(shop):
    business_calendar.set_calendar(shop, "date,kind\n2026-10-05,holiday\n", "finance")
    friday = datetime(2026, 10, 2, 15, tzinfo=SH)
    calendar = clearings._calendar(shop)
    t_plus_1 = clearings._release_at(calendar, Timing("t_plus", 1, "payment"), friday, None, SH)
    assert t_plus_1.astimezone(SH).date() == date(2026, 10, 6)  # Saturday, Sunday, the Monday holiday
    on_delivery = clearings._release_at(calendar, Timing("on_delivery", 0, "delivery"), friday,
                                        None, SH)
    assert on_delivery is None  # waits for the delivery


def test_cash_that_no_rule_can_take_stays_in_the_escrow(shop):
    s = shop
    funding.confirm_deposit(s, buyer="S", seller="D", amount_minor=1_000,
                            bank_reference="DEP-3", actor="t")
    order = orders.place_order(s, buyer="S", seller="D", actor="store",
                               lines=[{"sku": "g1", "quantity": 1}]).public_id
    row = orders.order_row(s, order)
    assert clearings.clear_cash(s, row, amount_minor=1_000, method="carrier-pigeon",
                                cause="odd") == 0
    assert clearings.documents(s, order=order) == []


def test_legs_waiting_for_deliveries_never_keep_a_delivered_order_from_the_release_job(shop):
    s = shop
    funding.confirm_deposit(s, buyer="S", seller="D", amount_minor=30_000,
                            bank_reference="DEP-W", actor="t")
    waiting = [pay(s, quantity=10) for _ in range(2)]       # not delivered: 4 legs undated
    delivered = pay(s, quantity=10)
    orders.ship_order(s, delivered, actor="dist")
    orders.confirm_receipt(s, delivered, actor="store")
    assert posted(s, "party:D:wallet") == 0
    # One page of two: the undelivered orders' legs come first by id, yet
    # only legs a delivery dates are read.
    assert clearings.release_due(s, now=utcnow() + timedelta(minutes=1), limit=2) == 1
    assert posted(s, "party:D:wallet") == 9_200
    assert all(d.release_at is None for o in waiting for d in clearings.documents(s, order=o)
               if d.recipient != "platform")
