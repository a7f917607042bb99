"""Orders (first slice of issue 4): placed through one relationship with
server-side prices frozen on the lines, refused with nothing written when
the network does not allow them, moved only through the state machine with
every transition recorded, linked along the chain."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

import channel_api as ca
from channel_api import catalog, funding, network, orders, prices
from channel_api.errors import InvalidInput, NotPurchasable, OrderExists
from channel_api.models import Order
from channel_api.order_states import IllegalTransition
from ledger import utcnow

A = "test"


@pytest.fixture
def shop(session):
    s = session
    ca.create_region(s, "CN", "China")
    ca.create_customer_type(s, "t", "T")
    for code, role in (("B", "brand"), ("D", "distributor"), ("S", "store"), ("X", "store")):
        ca.create_party(s, code=code, name=code, role=role, region="CN", customer_type="t")
    catalog.create_category(s, "tea", "Tea")
    catalog.create_category(s, "snacks", "Snacks")
    catalog.create_unit(s, "case", "Case")
    catalog.create_product(s, "green", "Green", category="tea")
    catalog.create_product(s, "chips", "Chips", category="snacks")
    catalog.create_sku(s, "g1", "G1", product="green", unit="case", list_price_minor=1000)
    catalog.create_sku(s, "g2", "G2", product="green", unit="case", list_price_minor=2999)
    catalog.create_sku(s, "c1", "C1", product="chips", unit="case", list_price_minor=500)
    network.set_sale_permission(s, "D", product_scope={"categories": ["tea"]}, regions=[], actor=A)
    earlier = utcnow() - timedelta(days=1)
    network.create_relationship(s, seller="B", buyer="D", actor=A, valid_from=earlier)
    network.create_relationship(s, seller="D", buyer="S", actor=A, valid_from=earlier)
    prices.create_strategy(s, code="d90", owner="D", name="90%", rule="percent",
                           product_scope={"all": True}, valid_from=earlier, actor=A,
                           tiers=[{"sku": None, "min_qty": 1, "percent_bp": 9000},
                                  {"sku": None, "min_qty": 10, "percent_bp": 8500}])
    return s


def count(session) -> int:
    return session.scalar(select(func.count()).select_from(Order))


def test_an_order_is_priced_on_the_server_and_the_prices_are_frozen(shop):
    order = orders.place_order(shop, buyer="S", seller="D", actor="api:s",
                               lines=[{"sku": "g1", "quantity": 2}, {"sku": "g2", "quantity": 10}])
    assert order.public_id.startswith("ord_") and order.state == "placed"
    g1, g2 = order.lines
    assert (g1.unit_price_minor, g1.line_total_minor, g1.strategy_code, g1.strategy_version) == (
        900, 1800, "d90", 1)
    assert (g2.unit_price_minor, g2.line_total_minor) == (2999 * 8500 // 10000, 2549 * 10)
    assert order.subtotal_minor == order.total_minor == 1800 + 25490
    assert order.allowed_actions == ("cancel", "hold", "reserve")

    prices.update_strategy(shop, "d90", tiers=[{"sku": None, "min_qty": 1, "percent_bp": 5000}],
                           actor=A)
    again = orders.get_order(shop, order.public_id)
    assert again.lines[0].unit_price_minor == 900 and again.total_minor == order.total_minor
    later = orders.place_order(shop, buyer="S", seller="D", actor="api:s",
                               lines=[{"sku": "g1", "quantity": 2}])
    assert (later.lines[0].unit_price_minor, later.lines[0].strategy_version) == (500, 2)


@pytest.mark.parametrize("lines, field", [
    ([], "lines"),
    ([{"sku": "g1", "quantity": 0}], "lines[0].quantity"),
    ([{"sku": "g1", "quantity": 1.5}], "lines[0].quantity"),
    ([{"sku": "g1", "quantity": True}], "lines[0].quantity"),
    ([{"sku": "g1", "quantity": 1, "unit_price_minor": 1}], "lines[0].unit_price_minor"),
    ([{"sku": "g1", "quantity": 1}, {"sku": "g1", "quantity": 2}], "lines[1].sku"),
    ([{"sku": "nope", "quantity": 1}], "lines[0].sku"),
])
def test_bad_lines_are_refused_and_nothing_is_written(shop, lines, field):
    with pytest.raises(ca.DomainError) as refused:
        orders.place_order(shop, buyer="S", seller="D", lines=lines, actor=A)
    assert refused.value.details["field"] == field
    assert count(shop) == 0


def test_the_network_must_allow_every_line(shop):
    with pytest.raises(NotPurchasable) as outside:
        orders.place_order(shop, buyer="S", seller="D", actor=A,
                           lines=[{"sku": "g1", "quantity": 1}, {"sku": "c1", "quantity": 1}])
    assert (outside.value.details["reason"], outside.value.details["field"]) == (
        "outside_sale_permission", "lines[1].sku")
    with pytest.raises(NotPurchasable) as foreign:
        orders.place_order(shop, buyer="X", seller="D", lines=[{"sku": "g1", "quantity": 1}],
                           actor=A)
    assert foreign.value.details["reason"] == "no_relationship"
    ca.update_party(shop, "S", status="frozen")
    with pytest.raises(NotPurchasable) as frozen:
        orders.place_order(shop, buyer="S", seller="D", lines=[{"sku": "g1", "quantity": 1}],
                           actor=A)
    assert frozen.value.details["reason"] == "buyer_inactive"
    assert count(shop) == 0


def test_a_client_reference_makes_placing_idempotent(shop):
    lines = [{"sku": "g1", "quantity": 3}]
    first = orders.place_order(shop, buyer="S", seller="D", lines=lines, client_reference="PO-1",
                               actor=A)
    again = orders.place_order(shop, buyer="S", seller="D", lines=lines, client_reference="PO-1",
                               actor=A)
    assert again == first and count(shop) == 1
    with pytest.raises(OrderExists):
        orders.place_order(shop, buyer="S", seller="D", client_reference="PO-1", actor=A,
                           lines=[{"sku": "g1", "quantity": 4}])


def test_transitions_follow_the_machine_and_are_recorded(shop):
    order = orders.place_order(shop, buyer="S", seller="D", lines=[{"sku": "g1", "quantity": 1}],
                               actor="api:store")
    with pytest.raises(IllegalTransition) as illegal:
        orders.apply_action(shop, order.public_id, "ship", actor="api:dist")
    assert illegal.value.details["allowed"] == ["cancel", "hold", "reserve"]
    orders.apply_action(shop, order.public_id, "reserve", actor="system")
    cancelled = funding.cancel_order(shop, order.public_id, actor="api:store", reason="changed mind")
    assert cancelled.state == "cancelled" and cancelled.allowed_actions == ()
    assert [(e.action, e.from_state, e.to_state, e.actor) for e in
            orders.order_events(shop, order.public_id)] == [
        ("place", None, "placed", "api:store"),
        ("reserve", "placed", "awaiting_payment", "system"),
        ("cancel", "awaiting_payment", "cancelled", "api:store")]
    with pytest.raises(IllegalTransition):
        funding.cancel_order(shop, order.public_id, actor="api:store")


def test_orders_link_along_the_chain_and_list_by_party(shop):
    up = orders.place_order(shop, buyer="D", seller="B", lines=[{"sku": "g1", "quantity": 50}],
                            actor=A)
    down = orders.place_order(shop, buyer="S", seller="D", lines=[{"sku": "g1", "quantity": 5}],
                              actor=A)
    orders.link_orders(shop, upstream=up.public_id, downstream=down.public_id, actor=A)
    orders.link_orders(shop, upstream=up.public_id, downstream=down.public_id, actor=A)
    assert [o.public_id for o in orders.downstream_orders(shop, up.public_id)] == [down.public_id]
    with pytest.raises(InvalidInput):
        orders.link_orders(shop, upstream=down.public_id, downstream=up.public_id, actor=A)
    mine, _ = orders.list_orders(shop, buyer="S")
    assert [o.public_id for o in mine] == [down.public_id]
    sold, _ = orders.list_orders(shop, seller="D", state="placed")
    assert [o.public_id for o in sold] == [down.public_id]
