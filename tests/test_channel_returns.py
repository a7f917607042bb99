"""Returns after payment (issue 4): partial and full, refunded to each
funding source in proportion; the return window and completion."""
from __future__ import annotations

from datetime import timedelta

import pytest

import ledger
from channel_api import credit, funding, orders, returns
from channel_api.errors import InvalidInput
from channel_api.order_states import IllegalTransition
from ledger import utcnow
from tests.test_channel_funding import build


@pytest.fixture
def shop(session):
    build(session)
    funding.set_rebate_rule(session, "D", max_percent_bp=10_000, max_amount_minor=None,
                            actor="dist")
    return session


def money(s):
    b = funding.balances(s, buyer="S", seller="D")
    return {"rebate": b.rebate.posted_minor, "prepaid": b.prepaid.posted_minor,
            "credit_used": b.credit.used_minor}


def escrow(s, order):
    return ledger.get_account(s, funding.escrow_account(order)).posted_minor


def test_returns_give_back_each_source_in_proportion_until_the_order_is_returned(shop):
    funding.grant_rebate(shop, buyer="S", seller="D", amount_minor=400, reference="RB-1",
                         reason="q3", actor="finance")
    funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=1_200,
                            bank_reference="DEP-1", actor="finance")
    credit.set_credit_line(shop, seller="D", buyer="S", limit_minor=10_000, actor="dist")
    order = orders.place_order(shop, buyer="S", seller="D", actor="store",
                               lines=[{"sku": "g1", "quantity": 4}]).public_id
    funding.set_payment_plan(shop, order, [{"method": "rebate", "amount_minor": 400},
                                           {"method": "prepaid", "amount_minor": 1_200},
                                           {"method": "credit", "amount_minor": 2_400}],
                             actor="store")
    orders.ship_order(shop, order, actor="dist")
    orders.confirm_receipt(shop, order, actor="store")
    assert money(shop) == {"rebate": 0, "prepaid": 0, "credit_used": 2_400}

    # One unit of four: a quarter of each part.
    first = returns.request_return(shop, order, lines=[{"line_no": 1, "quantity": 1}],
                                   reason="damaged", actor="store", client_reference="R1")
    assert (first.state, first.amount_minor) == ("requested", 1_000)
    assert money(shop)["prepaid"] == 0  # nothing moves before the seller approves
    done = returns.approve_return(shop, first.public_id, actor="dist")
    assert done.allocation == {"rebate": 100, "prepaid": 300, "credit": 600}
    assert money(shop) == {"rebate": 100, "prepaid": 300, "credit_used": 1_800}
    assert escrow(shop, order) == 900

    # 1,000 of the debt is repaid in cash; the next return forgives the 800
    # still owed and gives the 400 repaid back as cash.
    credit.repay_credit(shop, buyer="S", seller="D", amount_minor=1_000, bank_reference="RP-1",
                        actor="finance")
    second = returns.request_return(shop, order, lines=[{"line_no": 1, "quantity": 2}],
                                    reason="wrong flavour", actor="store")
    done = returns.approve_return(shop, second.public_id, actor="dist")
    assert done.allocation == {"rebate": 200, "prepaid": 600, "credit": 1_200}
    assert money(shop) == {"rebate": 300, "prepaid": 300 + 600 + 400, "credit_used": 0}
    assert escrow(shop, order) == 900 + 1_000 - 600 - 400

    last = returns.request_return(shop, order, lines=[{"line_no": 1, "quantity": 1}],
                                  reason="all of it", actor="store")
    returns.approve_return(shop, last.public_id, actor="dist")
    assert money(shop) == {"rebate": 400, "prepaid": 1_200 + 1_000, "credit_used": 0}
    assert escrow(shop, order) == 0
    aging = credit.credit_aging(shop, buyer="S", seller="D")
    assert aging.outstanding_minor == 0
    with pytest.raises(InvalidInput) as nothing_left:
        returns.request_return(shop, order, lines=[{"line_no": 1, "quantity": 1}],
                               reason="again", actor="store")
    assert nothing_left.value.details["returnable"] == 0
    # A retry with the same client reference is the same return.
    assert returns.request_return(shop, order, lines=[{"line_no": 1, "quantity": 1}],
                                  reason="damaged", actor="store",
                                  client_reference="R1").public_id == first.public_id
    assert [r.state for r in returns.list_returns(shop, order=order)] == ["refunded"] * 3
    assert ledger.check_ledger(shop) == []


def test_a_return_is_refused_decided_once_and_only_while_the_order_allows(shop):
    funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=5_000,
                            bank_reference="DEP-2", actor="finance")
    placed = orders.place_order(shop, buyer="S", seller="D", actor="store",
                                lines=[{"sku": "g1", "quantity": 2}]).public_id
    with pytest.raises(IllegalTransition):
        returns.request_return(shop, placed, lines=[{"line_no": 1, "quantity": 1}], reason="x",
                               actor="store")
    funding.pay_with_prepaid(shop, placed, actor="store")
    for lines, field in (([{"line_no": 2, "quantity": 1}], "lines[0].line_no"),
                         ([{"line_no": 1, "quantity": 3}], "lines[0].quantity"),
                         ([{"line_no": 1, "quantity": 1, "amount_minor": 5}], "lines[0]"),
                         ([], "lines")):
        with pytest.raises(InvalidInput) as bad:
            returns.request_return(shop, placed, lines=lines, reason="x", actor="store")
        assert bad.value.details["field"] == field
    ret = returns.request_return(shop, placed, lines=[{"line_no": 1, "quantity": 1}],
                                 reason="x", actor="store")
    # A second request cannot return the unit the first one holds... beyond the line.
    with pytest.raises(InvalidInput):
        returns.request_return(shop, placed, lines=[{"line_no": 1, "quantity": 2}],
                               reason="x", actor="store")
    rejected = returns.reject_return(shop, ret.public_id, actor="dist", note="opened box")
    assert rejected.state == "rejected" and money(shop)["prepaid"] == 3_000
    with pytest.raises(IllegalTransition):
        returns.approve_return(shop, ret.public_id, actor="dist")
    again = returns.request_return(shop, placed, lines=[{"line_no": 1, "quantity": 2}],
                                   reason="x", actor="store")
    assert returns.withdraw_return(shop, again.public_id, actor="store").state == "withdrawn"
    assert [r.public_id for r in returns.list_returns(shop, seller="D", state="rejected")] == [
        ret.public_id]


def test_delivered_orders_complete_after_the_return_window_unless_a_return_waits(shop):
    funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=5_000,
                            bank_reference="DEP-3", actor="finance")
    ids = []
    for _ in range(2):
        order = orders.place_order(shop, buyer="S", seller="D", actor="store",
                                   lines=[{"sku": "g1", "quantity": 1}]).public_id
        funding.pay_with_prepaid(shop, order, actor="store")
        orders.ship_order(shop, order, actor="dist")
        orders.confirm_receipt(shop, order, actor="store")
        ids.append(order)
    waiting = returns.request_return(shop, ids[1], lines=[{"line_no": 1, "quantity": 1}],
                                     reason="x", actor="store")
    assert returns.complete_orders(shop) == 0
    later = utcnow() + returns.RETURN_WINDOW + timedelta(minutes=1)
    assert returns.complete_orders(shop, now=later) == 1
    assert orders.get_order(shop, ids[0]).state == "completed"
    with pytest.raises(IllegalTransition):
        returns.request_return(shop, ids[0], lines=[{"line_no": 1, "quantity": 1}], reason="x",
                               actor="store")
    returns.reject_return(shop, waiting.public_id, actor="dist", note="no")
    assert returns.complete_orders(shop, now=later) == 1
    assert orders.get_order(shop, ids[1]).state == "completed"


def test_an_order_with_a_return_cannot_be_cancelled_whole(shop):
    funding.grant_rebate(shop, buyer="S", seller="D", amount_minor=1_000, reference="RB-9",
                         reason="q4", actor="finance")
    funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=5_000,
                            bank_reference="DEP-9", actor="finance")
    order = orders.place_order(shop, buyer="S", seller="D", actor="store",
                               lines=[{"sku": "g1", "quantity": 2}]).public_id
    funding.set_payment_plan(shop, order, [{"method": "rebate", "amount_minor": 500},
                                           {"method": "prepaid", "amount_minor": 1_500}],
                             actor="store")
    ret = returns.request_return(shop, order, lines=[{"line_no": 1, "quantity": 1}],
                                 reason="x", actor="store")
    returns.approve_return(shop, ret.public_id, actor="dist")
    with pytest.raises(InvalidInput) as refused:
        funding.cancel_order(shop, order, actor="store")
    assert "return" in str(refused.value)
    # Without returns, a cancel gives both parts back from their one capture entry.
    other = orders.place_order(shop, buyer="S", seller="D", actor="store",
                               lines=[{"sku": "g1", "quantity": 1}]).public_id
    before = money(shop)
    funding.set_payment_plan(shop, other, [{"method": "rebate", "amount_minor": 250},
                                           {"method": "prepaid", "amount_minor": 750}],
                             actor="store")
    assert funding.cancel_order(shop, other, actor="store").state == "cancelled"
    assert money(shop) == before
    assert ledger.check_ledger(shop) == []
