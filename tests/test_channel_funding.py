"""Prepaid funding of orders, worked end to end with every balance checked
after each step and the ledger's invariant check at the end; refusals write
nothing; on PostgreSQL, orders racing for one deposit never overspend it."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, text

import channel_api as ca
import ledger
from channel_api import catalog, credit, funding, network, orders
from channel_api.errors import InvalidInput, OrderExists
from channel_api.models import Order, OrderEvent, OutboxEvent, PaymentPart, PurchaseHabit
from channel_api.order_states import IllegalTransition
from ledger import prepared, utcnow
from tests.channel_fixtures import engine  # noqa: F401  (this module commits: a database of its own)


A = "test"


def build(s, u=""):
    ca.create_region(s, f"{u}CN", "China")
    ca.create_customer_type(s, f"{u}t", "T")
    for code, role in (("D", "distributor"), ("S", "store"), ("X", "store")):
        ca.create_party(s, code=f"{u}{code}", name=code, role=role, region=f"{u}CN",
                        customer_type=f"{u}t")
    catalog.create_category(s, f"{u}tea", "Tea")
    catalog.create_unit(s, f"{u}case", "Case")
    catalog.create_product(s, f"{u}green", "Green", category=f"{u}tea")
    catalog.create_sku(s, f"{u}g1", "G1", product=f"{u}green", unit=f"{u}case",
                       list_price_minor=1000)
    network.set_sale_permission(s, f"{u}D", product_scope={"all": True}, regions=[], actor=A)
    network.create_relationship(s, seller=f"{u}D", buyer=f"{u}S", actor=A,
                                valid_from=utcnow() - timedelta(days=1))


def race(session_factory, order_ids, refusal, pay) -> list[str]:
    """Pay every order at once, each in its own thread and transaction;
    "paid" or "refused" (``refusal`` raised) per order."""
    results: list[str] = []
    barrier = threading.Barrier(len(order_ids))

    def one(order_id):
        barrier.wait()
        try:
            with session_factory() as s, s.begin():
                pay(s, order_id)
            results.append("paid")
        except refusal:
            results.append("refused")

    threads = [threading.Thread(target=one, args=(o,)) for o in order_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.fixture
def shop(session):
    build(session)
    return session


def balances(s, order_id=None):
    # custody:bank is shared with other tests' committed data: compare deltas only.
    out = {"custody": ledger.get_account(s, funding.CUSTODY).posted_minor,
           "prepaid": funding.balances(s, buyer="S", seller="D").prepaid}
    if order_id:
        out["escrow"] = ledger.get_account(s, funding.escrow_account(order_id)).posted_minor
    return out


def test_deposit_pay_and_cancel_worked_end_to_end(shop):
    try:
        custody_before = ledger.get_account(shop, funding.CUSTODY).posted_minor
    except ledger.AccountNotFound:
        custody_before = 0
    deposit = funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=10_000,
                                      bank_reference="BANK-0001", actor="finance")
    assert (deposit.balances.prepaid.posted_minor, deposit.balances.prepaid.available_minor) == (10_000, 10_000)
    assert balances(shop)["custody"] - custody_before == 10_000
    again = funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=10_000,
                                    bank_reference="BANK-0001", actor="finance")
    assert again.entry_id == deposit.entry_id and again.balances.prepaid.posted_minor == 10_000

    order = orders.place_order(shop, buyer="S", seller="D", lines=[{"sku": "g1", "quantity": 3}],
                               actor="store")
    paid = funding.pay_with_prepaid(shop, order.public_id, actor="store")
    assert paid.state == "paid"
    after = balances(shop, order.public_id)
    assert after["prepaid"].posted_minor == 7_000 and after["prepaid"].available_minor == 7_000
    assert after["escrow"] == 3_000 and after["custody"] - custody_before == 10_000
    events = orders.order_events(shop, order.public_id)
    assert [(e.action, e.from_state, e.to_state, e.actor) for e in events] == [
        ("place", None, "placed", "store"), ("reserve", "placed", "awaiting_payment", "store"),
        ("fund", "awaiting_payment", "paid", "store")]
    assert events[1].details == {"plan": {"prepaid": 3_000}}
    assert events[2].details == {"captured": {"prepaid": 3_000}}

    cancelled = funding.cancel_order(shop, order.public_id, actor="store", reason="mistake")
    assert cancelled.state == "cancelled"
    back = balances(shop, order.public_id)
    assert back["prepaid"].posted_minor == 10_000 and back["escrow"] == 0
    assert ledger.check_ledger(shop) == []


def test_not_enough_deposit_is_refused_and_nothing_is_written(shop):
    funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=2_000,
                            bank_reference="B2", actor="finance")
    order = orders.place_order(shop, buyer="S", seller="D", lines=[{"sku": "g1", "quantity": 3}],
                               actor="store")
    with shop.begin_nested():
        with pytest.raises(ledger.InsufficientFunds):
            funding.pay_with_prepaid(shop, order.public_id, actor="store")
    assert orders.get_order(shop, order.public_id).state == "placed"
    assert balances(shop)["prepaid"].available_minor == 2_000


def test_a_paid_order_cannot_be_paid_again_and_a_shipped_one_not_cancelled(shop):
    funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=5_000,
                            bank_reference="B3", actor="finance")
    order = orders.place_order(shop, buyer="S", seller="D", lines=[{"sku": "g1", "quantity": 1}],
                               actor="store")
    funding.pay_with_prepaid(shop, order.public_id, actor="store")
    with pytest.raises(IllegalTransition):
        funding.pay_with_prepaid(shop, order.public_id, actor="store")
    orders.apply_action(shop, order.public_id, "ship", actor="dist")
    with pytest.raises(IllegalTransition):
        funding.cancel_order(shop, order.public_id, actor="store")
    assert balances(shop, order.public_id)["escrow"] == 1_000


@pytest.mark.parametrize("kwargs, field", [
    (dict(amount_minor=0), "amount_minor"),
    (dict(amount_minor=12.5), "amount_minor"),
    (dict(bank_reference="has spaces"), "bank_reference"),
    (dict(buyer="X"), "seller"),
])
def test_bad_deposits_name_the_field(shop, kwargs, field):
    base = dict(buyer="S", seller="D", amount_minor=100, bank_reference="OK-1", actor="finance")
    with pytest.raises(ca.DomainError) as refused:
        funding.confirm_deposit(shop, **{**base, **kwargs})
    assert refused.value.details["field"] == field


@pytest.mark.postgres_only
def test_orders_racing_for_one_deposit_never_overspend_it(session_factory, unique):
    u = unique + "-"
    with session_factory() as s, s.begin():
        build(s, u)
        funding.confirm_deposit(s, buyer=f"{u}S", seller=f"{u}D", amount_minor=10_000,
                                bank_reference=f"{u}B", actor="finance")
        placed = [orders.place_order(s, buyer=f"{u}S", seller=f"{u}D", actor="store",
                                     lines=[{"sku": f"{u}g1", "quantity": 3}]).public_id
                  for _ in range(20)]
    results = race(session_factory, placed, ledger.InsufficientFunds,
                   lambda s, order_id: funding.pay_with_prepaid(s, order_id, actor="store"))
    assert results.count("paid") == 3 and results.count("refused") == 17
    with session_factory() as s:
        balance = funding.balances(s, buyer=f"{u}S", seller=f"{u}D").prepaid
        assert (balance.posted_minor, balance.available_minor) == (1_000, 1_000)


def test_a_mixed_plan_reserves_at_once_and_captures_when_the_transfer_arrives(shop):
    """The issue's example: 100 rebate + 300 prepaid + 600 by transfer on a 1,000 order."""
    def custody():  # shared with other tests' committed data: count what this test adds
        try:
            return ledger.get_account(shop, funding.CUSTODY).posted_minor
        except ledger.AccountNotFound:
            return 0

    custody_before = custody()
    funding.set_rebate_rule(shop, "D", max_percent_bp=1000, max_amount_minor=None, actor="finance")
    funding.grant_rebate(shop, buyer="S", seller="D", amount_minor=500, reference="Q3",
                         reason="Q3 volume", actor="finance")
    funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=2_000,
                            bank_reference="DEP-1", actor="finance")
    order = orders.place_order(shop, buyer="S", seller="D", lines=[{"sku": "g1", "quantity": 1}],
                               actor="store")
    assert order.total_minor == 1_000
    plan = [{"method": "rebate", "amount_minor": 100}, {"method": "prepaid", "amount_minor": 300},
            {"method": "offline", "amount_minor": 600}]
    waiting = funding.set_payment_plan(shop, order.public_id, plan, actor="store")
    assert waiting.state == "awaiting_payment"
    now = funding.balances(shop, buyer="S", seller="D")
    assert (now.prepaid.posted_minor, now.prepaid.available_minor) == (2_000, 1_700)
    assert (now.rebate.posted_minor, now.rebate.available_minor) == (500, 400)
    assert ledger.get_account(shop, funding.escrow_account(order.public_id)).posted_minor == 0

    with pytest.raises(InvalidInput) as wrong:
        funding.confirm_order_transfer(shop, order.public_id, amount_minor=599,
                                       bank_reference="T-1", actor="finance")
    assert wrong.value.details["field"] == "amount_minor"
    paid = funding.confirm_order_transfer(shop, order.public_id, amount_minor=600,
                                          bank_reference="T-1", actor="finance")
    assert paid.state == "paid"
    after = funding.balances(shop, buyer="S", seller="D")
    assert (after.prepaid.posted_minor, after.rebate.posted_minor) == (1_700, 400)
    # The escrow holds the cash only (prepaid 300 + transfer 600); rebate is a discount.
    assert ledger.get_account(shop, funding.escrow_account(order.public_id)).posted_minor == 900
    assert custody() - custody_before == 2_600
    assert ledger.get_account(shop, funding.rebates_granted_account("D")).posted_minor == 400

    funding.cancel_order(shop, order.public_id, actor="dist", reason="out of stock")
    back = funding.balances(shop, buyer="S", seller="D")
    # Prepaid and rebate back; the transfer's 600 lands in the deposit.
    assert (back.prepaid.posted_minor, back.rebate.posted_minor) == (2_600, 500)
    assert ledger.get_account(shop, funding.escrow_account(order.public_id)).posted_minor == 0
    assert ledger.check_ledger(shop) == []


@pytest.mark.parametrize("plan, field", [
    ([{"method": "prepaid", "amount_minor": 999}], "parts"),
    ([{"method": "prepaid", "amount_minor": 500}, {"method": "prepaid", "amount_minor": 500}],
     "parts[1].method"),
    ([{"method": "cash", "amount_minor": 1000}], "parts[0].method"),
    ([{"method": "prepaid", "amount_minor": 1000.0}], "parts[0].amount_minor"),
    ([{"method": "rebate", "amount_minor": 200}, {"method": "offline", "amount_minor": 800}], "parts"),
])
def test_plans_that_break_a_rule_are_refused_and_write_nothing(shop, plan, field):
    funding.set_rebate_rule(shop, "D", max_percent_bp=1000, max_amount_minor=150, actor="finance")
    order = orders.place_order(shop, buyer="S", seller="D", lines=[{"sku": "g1", "quantity": 1}],
                               actor="store")
    with pytest.raises(InvalidInput) as refused:
        funding.set_payment_plan(shop, order.public_id, plan, actor="store")
    assert refused.value.details["field"] == field
    assert orders.get_order(shop, order.public_id).state == "placed"


def test_the_rebate_cap_is_the_smallest_of_the_rules():
    from channel_api.models import RebateRule

    assert funding.rebate_cap(None, 1000) == 0
    assert funding.rebate_cap(RebateRule(max_percent_bp=1000, max_amount_minor=None), 999) == 99
    assert funding.rebate_cap(RebateRule(max_percent_bp=5000, max_amount_minor=120), 1000) == 120
    assert funding.rebate_cap(RebateRule(max_percent_bp=None, max_amount_minor=None), 700) == 700


def test_an_unpaid_order_expires_after_the_window_and_its_holds_are_released(shop):
    funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=1_000,
                            bank_reference="DEP-2", actor="finance")
    order = orders.place_order(shop, buyer="S", seller="D", lines=[{"sku": "g1", "quantity": 1}],
                               actor="store")
    funding.set_payment_plan(shop, order.public_id, [
        {"method": "prepaid", "amount_minor": 400}, {"method": "offline", "amount_minor": 600}],
        actor="store")
    assert funding.balances(shop, buyer="S", seller="D").prepaid.available_minor == 600
    assert funding.expire_unpaid_orders(shop) == 0
    later = utcnow() + funding.PAYMENT_WINDOW + timedelta(minutes=1)
    assert funding.expire_unpaid_orders(shop, now=later) == 1
    assert orders.get_order(shop, order.public_id).state == "cancelled"
    assert funding.balances(shop, buyer="S", seller="D").prepaid.available_minor == 1_000
    assert [e.action for e in orders.order_events(shop, order.public_id)][-1] == "expire"


def test_the_scheduler_job_expires_committed_unpaid_orders(session_factory, unique, monkeypatch):
    from service import scheduler

    u = unique + "-"
    with session_factory() as s, s.begin():
        build(s, u)
        order = orders.place_order(s, buyer=f"{u}S", seller=f"{u}D", actor="store",
                                   lines=[{"sku": f"{u}g1", "quantity": 1}]).public_id
        funding.set_payment_plan(s, order, [{"method": "offline", "amount_minor": 1_000}],
                                 actor="store")
    # Move the clock past the window instead of waiting a day.
    monkeypatch.setattr(funding, "PAYMENT_WINDOW", timedelta(seconds=-1))
    assert scheduler.expire_unpaid_orders(session_factory) >= 1
    with session_factory() as s:
        assert orders.get_order(s, order).state == "cancelled"


def test_a_credit_line_funds_orders_up_to_its_limit(shop):
    line = credit.set_credit_line(shop, seller="D", buyer="S", limit_minor=5_000, terms_days=30,
                                   actor="seller")
    assert (line.limit_minor, line.available_minor) == (5_000, 5_000)
    funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=1_000,
                            bank_reference="DEP-C", actor="finance")
    order = orders.place_order(shop, buyer="S", seller="D", lines=[{"sku": "g1", "quantity": 4}],
                               actor="store")
    paid = funding.set_payment_plan(shop, order.public_id, [
        {"method": "credit", "amount_minor": 3_000}, {"method": "prepaid", "amount_minor": 1_000}],
        actor="store")
    assert paid.state == "paid"
    now = funding.balances(shop, buyer="S", seller="D").credit
    assert (now.used_minor, now.reserved_minor, now.available_minor) == (3_000, 0, 2_000)
    # Credit is a claim between the parties, never cash: the escrow holds the prepaid part only.
    assert ledger.get_account(shop, funding.escrow_account(order.public_id)).posted_minor == 1_000
    assert ledger.get_account(shop, funding.credit_issued_account("D")).posted_minor == 3_000

    big = orders.place_order(shop, buyer="S", seller="D", lines=[{"sku": "g1", "quantity": 3}],
                             actor="store")
    with shop.begin_nested():
        with pytest.raises(ledger.LimitExceeded):
            funding.set_payment_plan(shop, big.public_id,
                                     [{"method": "credit", "amount_minor": 3_000}], actor="store")
    assert orders.get_order(shop, big.public_id).state == "placed"

    funding.cancel_order(shop, order.public_id, actor="store")
    restored = funding.balances(shop, buyer="S", seller="D").credit
    assert (restored.used_minor, restored.available_minor) == (0, 5_000)
    assert ledger.check_ledger(shop) == []


@pytest.mark.parametrize("line, reason", [
    (None, "no_credit_line"),
    (dict(status="frozen"), "credit_frozen"),
    (dict(valid_to=utcnow() - timedelta(days=1)), "credit_expired"),
])
def test_credit_that_cannot_be_used_is_refused_with_a_reason(shop, line, reason):
    from channel_api.errors import CreditUnavailable

    if line is not None:
        credit.set_credit_line(shop, seller="D", buyer="S", limit_minor=5_000, actor="seller",
                                **line)
    order = orders.place_order(shop, buyer="S", seller="D", lines=[{"sku": "g1", "quantity": 1}],
                               actor="store")
    with pytest.raises(CreditUnavailable) as refused:
        funding.set_payment_plan(shop, order.public_id,
                                 [{"method": "credit", "amount_minor": 1_000}], actor="store")
    assert refused.value.details["reason"] == reason


@pytest.mark.postgres_only
def test_orders_racing_for_one_credit_line_never_exceed_it(session_factory, unique):
    u = unique + "-"
    with session_factory() as s, s.begin():
        build(s, u)
        credit.set_credit_line(s, seller=f"{u}D", buyer=f"{u}S", limit_minor=10_000,
                                actor="seller")
        placed = [orders.place_order(s, buyer=f"{u}S", seller=f"{u}D", actor="store",
                                     lines=[{"sku": f"{u}g1", "quantity": 3}]).public_id
                  for _ in range(20)]
    results = race(session_factory, placed, ledger.LimitExceeded, lambda s, order_id: (
        funding.set_payment_plan(s, order_id, [{"method": "credit", "amount_minor": 3_000}],
                                 actor="store")))
    assert results.count("paid") == 3 and results.count("refused") == 17
    with session_factory() as s:
        line = funding.balances(s, buyer=f"{u}S", seller=f"{u}D").credit
        assert (line.used_minor, line.available_minor) == (9_000, 1_000)


def test_a_paid_order_is_shipped_then_received_by_the_buyer_or_the_job(shop):
    funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=5_000,
                            bank_reference="DEP-S", actor="finance")
    first, second = (orders.place_order(shop, buyer="S", seller="D", actor="store",
                                        lines=[{"sku": "g1", "quantity": 1}]).public_id
                     for _ in range(2))
    for order in (first, second):
        funding.pay_with_prepaid(shop, order, actor="store")
        shipped = orders.ship_order(shop, order, actor="dist", tracking="SF123")
        assert shipped.state == "shipped" and "cancel" not in shipped.allowed_actions
    assert orders.confirm_receipt(shop, first, actor="store").state == "delivered"
    assert orders.auto_confirm_receipts(shop) == 0
    later = utcnow() + orders.AUTO_CONFIRM_AFTER + timedelta(minutes=1)
    assert orders.auto_confirm_receipts(shop, now=later) == 1
    events = orders.order_events(shop, second)
    assert [(e.action, e.actor) for e in events][-2:] == [("ship", "dist"), ("auto_confirm", "scheduler")]
    assert events[-2].details == {"tracking": "SF123"}


def test_aging_buckets_are_by_whole_days_overdue():
    due = utcnow()
    assert credit.aging_bucket(None, due) == "not_due"
    assert credit.aging_bucket(due, due - timedelta(seconds=1)) == "not_due"
    for days, bucket in ((0, "0-30"), (30, "0-30"), (31, "31-60"), (60, "31-60"),
                         (61, "61-90"), (90, "61-90"), (91, "90+"), (400, "90+")):
        assert credit.aging_bucket(due, due + timedelta(days=days, hours=1)) == bucket


def test_credit_debts_fall_due_after_delivery_and_repayments_go_to_the_oldest_first(shop):
    credit.set_credit_line(shop, seller="D", buyer="S", limit_minor=10_000, terms_days=30,
                            actor="seller")
    ids = []
    for quantity in (2, 3):  # 2,000 then 3,000
        order = orders.place_order(shop, buyer="S", seller="D", actor="store",
                                   lines=[{"sku": "g1", "quantity": quantity}]).public_id
        funding.set_payment_plan(shop, order, [{"method": "credit", "amount_minor": quantity * 1000}],
                                 actor="store")
        ids.append(order)
    # The second order is delivered first, so it falls due first.
    for order in reversed(ids):
        orders.ship_order(shop, order, actor="dist")
        orders.confirm_receipt(shop, order, actor="store")
    in_45_days = utcnow() + timedelta(days=45)
    aging = credit.credit_aging(shop, buyer="S", seller="D", at=in_45_days)
    assert aging.outstanding_minor == 5_000 and aging.buckets["0-30"] == 5_000
    assert [d.order for d in aging.debts] == [ids[1], ids[0]]

    after = credit.repay_credit(shop, buyer="S", seller="D", amount_minor=3_500,
                                 bank_reference="REPAY-1", actor="finance")
    assert [(d.order, d.outstanding_minor) for d in after.debts] == [(ids[0], 1_500)]
    # Cash reached each order's escrow; the line is restored by what was repaid.
    assert ledger.get_account(shop, funding.escrow_account(ids[1])).posted_minor == 3_000
    assert ledger.get_account(shop, funding.escrow_account(ids[0])).posted_minor == 500
    assert funding.balances(shop, buyer="S", seller="D").credit.used_minor == 1_500
    again = credit.repay_credit(shop, buyer="S", seller="D", amount_minor=3_500,
                                 bank_reference="REPAY-1", actor="finance")
    assert again.outstanding_minor == 1_500  # a retry allocates nothing twice
    with pytest.raises(InvalidInput) as too_much:
        credit.repay_credit(shop, buyer="S", seller="D", amount_minor=1_501,
                             bank_reference="REPAY-2", actor="finance")
    assert too_much.value.details["owed_minor"] == 1_500
    assert ledger.check_ledger(shop) == []


def test_a_paid_order_feeds_the_buyer_s_purchase_habits(shop):
    from channel_api import habits

    assert habits.get_habit(shop, "S") is None
    funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=10_000,
                            bank_reference="DEP-H", actor="finance")
    order = orders.place_order(shop, buyer="S", seller="D", lines=[{"sku": "g1", "quantity": 3}],
                               actor="store")
    assert habits.get_habit(shop, "S") is None  # placed is not bought
    funding.pay_with_prepaid(shop, order.public_id, actor="store")
    habit = habits.get_habit(shop, "S")
    assert (habit.order_count, habit.total_minor, habit.top_categories) == (1, 3_000, (("tea", 3_000),))


def test_an_overdue_debt_blocks_new_credit_when_the_line_says_so(shop):
    from channel_api.errors import CreditUnavailable

    credit.set_credit_line(shop, seller="D", buyer="S", limit_minor=10_000, terms_days=0,
                            block_overdue_days=0, actor="seller")
    first = orders.place_order(shop, buyer="S", seller="D", lines=[{"sku": "g1", "quantity": 1}],
                               actor="store").public_id
    funding.set_payment_plan(shop, first, [{"method": "credit", "amount_minor": 1_000}],
                             actor="store")
    orders.ship_order(shop, first, actor="dist")
    orders.confirm_receipt(shop, first, actor="store")
    second = orders.place_order(shop, buyer="S", seller="D", actor="store",
                                lines=[{"sku": "g1", "quantity": 1}]).public_id
    tomorrow = utcnow() + timedelta(days=1, minutes=1)
    with pytest.raises(CreditUnavailable) as blocked:
        funding.set_payment_plan(shop, second, [{"method": "credit", "amount_minor": 1_000}],
                                 actor="store", at=tomorrow)
    assert blocked.value.details["reason"] == "overdue"
    credit.repay_credit(shop, buyer="S", seller="D", amount_minor=1_000, bank_reference="R-OD",
                         actor="finance")
    paid = funding.set_payment_plan(shop, second, [{"method": "credit", "amount_minor": 1_000}],
                                    actor="store", at=tomorrow)
    assert paid.state == "paid"


# --- placing and paying in one call (the storefront's POST /v1/orders with a plan) ------------

@contextmanager
def _statements(session):
    """Collects the statements the session's engine runs while the block runs
    (``ledger.prepared``'s round trips included)."""
    seen: list[str] = []

    def count(conn, cursor, statement, *args):
        seen.append(" ".join(statement.split()))

    engine_ = session.get_bind().engine
    event.listen(engine_, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine_, "before_cursor_execute", count)


def _place_and_pay(s, u="", reference=None, quantity=3):
    total = 1_000 * quantity  # g1's list price
    return funding.place_and_fund(s, buyer=f"{u}S", seller=f"{u}D", actor="store",
                                  lines=[{"sku": f"{u}g1", "quantity": quantity}],
                                  parts=[{"method": "prepaid", "amount_minor": total}],
                                  client_reference=reference)


def test_an_order_paid_as_placed_is_written_once_in_its_final_state(shop):
    funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=10_000,
                            bank_reference="B-once", actor="finance")
    first = _place_and_pay(shop, reference="PO-once-0")  # warm: statements compiled, accounts open
    with _statements(shop) as seen:
        paid = _place_and_pay(shop, reference="PO-once")
    assert (paid.state, paid.version, paid.total_minor) == ("paid", 3, 3 * 1_000)
    row = shop.scalars(select(Order).where(Order.public_id == paid.public_id)).one()
    assert (row.state, row.version) == ("paid", 3)
    events = orders.order_events(shop, paid.public_id)
    assert [(e.action, e.from_state, e.to_state, e.actor) for e in events] == [
        ("place", None, "placed", "store"), ("reserve", "placed", "awaiting_payment", "store"),
        ("fund", "awaiting_payment", "paid", "store")]
    assert events[0].details == {"lines": 1, "total_minor": 3_000}
    assert events[1].details == {"plan": {"prepaid": 3_000}}
    assert events[2].details == {"captured": {"prepaid": 3_000}}
    assert [(l.sku, l.quantity, l.unit_price_minor, l.line_total_minor)
            for l in orders.get_order(shop, paid.public_id).lines] == [("g1", 3, 1_000, 3_000)]
    parts = shop.scalars(select(PaymentPart).where(PaymentPart.order_id == row.id)).all()
    assert [(p.method, p.amount_minor, p.state) for p in parts] == [("prepaid", 3_000, "captured")]
    assert shop.scalar(select(func.count()).select_from(OutboxEvent).where(
        OutboxEvent.subject == paid.public_id, OutboxEvent.type == "order.paid")) == 1
    habit = shop.get(PurchaseHabit, row.buyer_id)
    assert (habit.order_count, habit.total_minor) == (2, 2 * 3_000)
    assert funding.balances(shop, buyer="S", seller="D").prepaid.posted_minor == 10_000 - 2 * 3_000
    assert ledger.get_account(shop, funding.escrow_account(paid.public_id)).posted_minor == 3_000
    assert ledger.check_ledger(shop) == []
    # Inserted once, already paid: never updated; on PostgreSQL with its
    # lines and events in the same statement.
    orders_written = [q for q in seen if "channel_order" in q and q.startswith(("INSERT", "WITH", "UPDATE"))]
    assert not any(q.startswith("UPDATE channel_order ") for q in orders_written), orders_written
    expected = 1 if shop.get_bind().dialect.name == "postgresql" else 3
    assert len(orders_written) == expected, orders_written
    if shop.get_bind().dialect.name == "postgresql":
        # The whole call, prepared statements included (docs/performance.md):
        # the parties with the relationship and the buyer's labels; the
        # order; its event; the escrow; the balances locked and the journal
        # written; the parts (and whether any clearing rule exists); the
        # habits. Nothing else.
        assert len(seen) == 8, "\n".join(seen)
    assert first.public_id != paid.public_id


def test_placing_and_paying_again_with_the_reference_returns_the_order_and_takes_nothing(shop):
    funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=10_000,
                            bank_reference="B-again", actor="finance")
    first = _place_and_pay(shop, reference="PO-again")
    again = _place_and_pay(shop, reference="PO-again")
    assert (again.public_id, again.state, again.version) == (first.public_id, "paid", 3)
    assert funding.balances(shop, buyer="S", seller="D").prepaid.posted_minor == 10_000 - 3_000
    with pytest.raises(OrderExists):
        _place_and_pay(shop, reference="PO-again", quantity=4)
    assert ledger.check_ledger(shop) == []


def test_a_shortfall_when_placing_and_paying_writes_nothing(shop):
    funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=1_000,
                            bank_reference="B-short", actor="finance")

    def counts():
        return [shop.scalar(select(func.count()).select_from(model))
                for model in (Order, OrderEvent, OutboxEvent, PurchaseHabit)]

    before = counts()
    # The order goes in before the entry finds the shortfall: the error
    # rolls back the caller's transaction (here a savepoint), as a request's.
    with pytest.raises(ledger.InsufficientFunds):
        with shop.begin_nested():
            _place_and_pay(shop, reference="PO-short")
    assert counts() == before
    assert funding.balances(shop, buyer="S", seller="D").prepaid.available_minor == 1_000


@pytest.mark.postgres_only
def test_concurrent_repeats_of_one_client_reference_make_one_paid_order(session_factory, unique):
    """Six storefront retries of one order at once: the first insert wins,
    the others wait for its commit, find the order and take nothing more."""
    u = unique + "-"
    with session_factory() as s, s.begin():
        build(s, u)
        funding.confirm_deposit(s, buyer=f"{u}S", seller=f"{u}D", amount_minor=10_000,
                                bank_reference=f"{u}B", actor="finance")
    answers: list[tuple[str, str]] = []
    barrier = threading.Barrier(6)

    def one():
        barrier.wait()
        with session_factory() as s, s.begin():
            order = _place_and_pay(s, u, reference=f"{u}PO")
        answers.append((order.public_id, order.state))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 6 and len(set(answers)) == 1 and answers[0][1] == "paid", answers
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Order).where(
            Order.client_reference == f"{u}PO")) == 1
        prepaid = funding.balances(s, buyer=f"{u}S", seller=f"{u}D").prepaid
        assert prepaid.posted_minor == 10_000 - 3_000
        assert ledger.check_ledger(s) == []


@pytest.mark.postgres_only
def test_orders_are_placed_and_paid_the_same_without_prepared_statements(shop, monkeypatch):
    """Behind a transaction-mode pooler ``ledger.prepared.ENABLED`` is off:
    every statement the order's path prepares runs as plain SQL instead."""

    connection = shop.connection()
    connection.exec_driver_sql("DEALLOCATE ALL")
    connection.info.pop(prepared._INFO_KEY, None)
    monkeypatch.setattr(prepared, "ENABLED", False)
    funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=10_000,
                            bank_reference="B-plain", actor="finance")
    paid = _place_and_pay(shop, reference="PO-plain")
    assert shop.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar() == 0
    assert (paid.state, paid.version) == ("paid", 3)
    assert [e.action for e in orders.order_events(shop, paid.public_id)] == [
        "place", "reserve", "fund"]
    assert _place_and_pay(shop, reference="PO-plain").public_id == paid.public_id
    assert funding.balances(shop, buyer="S", seller="D").prepaid.posted_minor == 7_000
    assert ledger.check_ledger(shop) == []
