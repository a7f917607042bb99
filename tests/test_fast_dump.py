"""``service.fast_dump``: the order schemas' fast dump gives exactly what
marshmallow's own dump gives, and schemas it cannot handle fall back."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import marshmallow as ma
import pytest
from marshmallow import fields

from channel_api.orders import OrderLineView, OrderView
from service.fast_dump import FastDumpSchema, _dumper
from service.schemas_channel import OrderOut, OrderPage
from service.schemas_ledger import UtcDateTime

SHANGHAI = timezone(timedelta(hours=8))


def view(**changes) -> OrderView:
    lines = (OrderLineView(1, "g1", 3, 950, 1_000, "strategy", "d-95", 2, 0, 2_850),
             OrderLineView(2, "g2", 1, 1_137, 1_137, "list", None, None, 0, 1_137))
    base = dict(public_id="ord_1", buyer_code="S", seller_code="D", relationship="rel_1",
                state="paid", currency="CNY", subtotal_minor=3_987, discount_minor=0,
                total_minor=3_987, client_reference=None, note="",
                placed_at=datetime(2026, 12, 4, 8, 0, 1, 250, tzinfo=SHANGHAI),
                updated_at=datetime(2026, 12, 4, 0, 0, 2), version=3, lines=lines,
                allowed_actions=("cancel", "ship"))
    return OrderView(**{**base, **changes})


def marshmallow_dump(schema, obj, many=None):
    return ma.Schema.dump(schema, obj, many=many)


@pytest.mark.parametrize("order", [
    view(),
    view(client_reference="PO-1", note="leave at the back", lines=(), allowed_actions=()),
    view(updated_at=datetime(2026, 12, 4, 1, 2, 3, tzinfo=timezone.utc), state="placed"),
])
def test_an_order_dumps_as_marshmallow_dumps_it(order):
    schema = OrderOut()
    assert _dumper(schema) is not None  # the fast path is taken
    fast = schema.dump(order)
    assert fast == marshmallow_dump(schema, order)
    # and it is what a client reads: UTC times with Z, lines as objects
    assert fast["placed_at"] == "2026-12-04T00:00:01.000250Z"
    assert fast["lines"][:1] in ([], [{
        "line_no": 1, "sku": "g1", "quantity": 3, "unit_price_minor": 950,
        "list_price_minor": 1_000, "price_source": "strategy", "strategy_code": "d-95",
        "strategy_version": 2, "discount_minor": 0, "line_total_minor": 2_850}])


def test_a_page_and_a_list_dump_as_marshmallow_dumps_them():
    page = {"items": [view(), view(public_id="ord_2", client_reference="PO-2")],
            "next_cursor": "abc"}
    assert OrderPage().dump(page) == marshmallow_dump(OrderPage(), page)
    empty = {"items": [], "next_cursor": None}
    assert OrderPage().dump(empty) == marshmallow_dump(OrderPage(), empty)
    orders = [view(), view(public_id="ord_3")]
    assert OrderOut(many=True).dump(orders) == marshmallow_dump(OrderOut(many=True), orders)


def test_a_missing_attribute_is_left_out_as_marshmallow_leaves_it():
    partial = {"public_id": "ord_9", "state": "placed"}
    assert OrderOut().dump(partial) == marshmallow_dump(OrderOut(), partial) == partial


def test_what_the_fast_path_cannot_do_falls_back_to_marshmallow():
    class WithDict(FastDumpSchema):
        code = fields.String()
        details = fields.Dict()

    class WithDefault(FastDumpSchema):
        code = fields.String(dump_default="none")

    class Hooked(FastDumpSchema):
        code = fields.String()

        @ma.post_dump
        def shout(self, data, **kwargs):
            return {key: value.upper() for key, value in data.items()}

    class Dated(FastDumpSchema):
        at = UtcDateTime()

    for schema in (WithDict(), WithDefault(), Hooked(), OrderOut(only=("public_id",))):
        assert _dumper(schema) is None
    assert Hooked().dump({"code": "a"}) == {"code": "A"}
    assert WithDict().dump({"code": "a", "details": {"x": 1}}) == {"code": "a",
                                                                  "details": {"x": 1}}
    assert WithDefault().dump({}) == {"code": "none"}
    assert OrderOut(only=("public_id",)).dump(view()) == {"public_id": "ord_1"}
    assert _dumper(Dated()) is not None
    assert Dated().dump({"at": datetime(2026, 1, 1)}) == {"at": "2026-01-01T00:00:00Z"}
