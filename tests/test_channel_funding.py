"""Prepaid funding of orders, worked end to end with every balance checked
after each step and the ledger's invariant check at the end; refusals write
nothing; on PostgreSQL, orders racing for one deposit never overspend it."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest

import channel_api as ca
import ledger
from channel_api import catalog, funding, network, orders
from channel_api.order_states import IllegalTransition
from ledger import utcnow

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


@pytest.fixture
def shop(session):
    build(session)
    return session


def balances(s, order_id=None):
    out = {"custody": ledger.get_account(s, funding.CUSTODY).posted_minor,
           "prepaid": funding.prepaid_balance(s, buyer="S", seller="D")}
    if order_id:
        out["escrow"] = ledger.get_account(s, funding.escrow_account(order_id)).posted_minor
    return out


def test_deposit_pay_and_cancel_worked_end_to_end(shop):
    deposit = funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=10_000,
                                      bank_reference="BANK-0001", actor="finance")
    assert (deposit.balance.posted_minor, deposit.balance.available_minor) == (10_000, 10_000)
    assert balances(shop)["custody"] == 10_000
    again = funding.confirm_deposit(shop, buyer="S", seller="D", amount_minor=10_000,
                                    bank_reference="BANK-0001", actor="finance")
    assert again.entry_id == deposit.entry_id and again.balance.posted_minor == 10_000

    order = orders.place_order(shop, buyer="S", seller="D", lines=[{"sku": "g1", "quantity": 3}],
                               actor="store")
    paid = funding.pay_with_prepaid(shop, order.public_id, actor="store")
    assert paid.state == "paid"
    after = balances(shop, order.public_id)
    assert after["prepaid"].posted_minor == 7_000 and after["prepaid"].available_minor == 7_000
    assert after["escrow"] == 3_000 and after["custody"] == 10_000
    assert [e.action for e in orders.order_events(shop, order.public_id)] == ["place", "reserve", "fund"]

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
                  for _ in range(12)]
    results: list[str] = []
    barrier = threading.Barrier(len(placed))

    def pay(order_id):
        barrier.wait()
        try:
            with session_factory() as s, s.begin():
                funding.pay_with_prepaid(s, order_id, actor="store")
            results.append("paid")
        except ledger.InsufficientFunds:
            results.append("refused")

    threads = [threading.Thread(target=pay, args=(o,)) for o in placed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("paid") == 3 and results.count("refused") == 9
    with session_factory() as s:
        balance = funding.prepaid_balance(s, buyer=f"{u}S", seller=f"{u}D")
        assert (balance.posted_minor, balance.available_minor) == (1_000, 1_000)
