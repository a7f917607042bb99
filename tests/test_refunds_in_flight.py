"""Two returns of one gateway-paid order, the second approved while the
gateway has not yet confirmed the first: the escrow still holds the first
refund's cash until the confirmation, so that cash must not count as room
for the second. The second return claws its own share back from the
cleared legs, and both confirmations post; the invariants hold."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from channel_api import clearing_rules, funding
from ledger import utcnow
from payments.models import Payment, PaymentRefund
from service.api_payments import GATEWAYS_KEY
from tests.channel_fixtures import add_tea, build_network, client, engine  # noqa: F401  (fixtures)
from tests.test_split_instructions import (  # noqa: F401  (fixtures and helpers)
    LEGS, deliver, invariants_hold, pay, posted, wx, wx_keys,
)


@pytest.fixture
def custody_world(client, session_factory, unique, wx):
    """D1 has no account at WeChat Pay: its sales are collected into custody."""
    client.application.extensions[GATEWAYS_KEY].adapters["wechatpay"] = wx.gateway()
    net = build_network(session_factory, unique)
    with session_factory() as s, s.begin():
        add_tea(s, net, list_price_minor=1_000)
        clearing_rules.create_rule(s, code=f"{unique}-rule", name="store orders", legs=LEGS,
                                   sellers=[net.codes["d1"]], actor="brand",
                                   valid_from=utcnow() - timedelta(days=1))
    net.extra = {"client": client}
    return net


def test_a_second_return_does_not_take_the_cash_a_first_gateway_refund_awaits(
        custody_world, session_factory, wx):
    net, client = custody_world, custody_world.extra["client"]
    order, payment = pay(net, wx)                        # 100 x 10.00, cleared at once
    deliver(session_factory, order)
    d1 = net.codes["d1"]
    with session_factory() as s:
        assert posted(s, funding.escrow_account(order)) == 0
        cleared = posted(s, f"party:{d1}:pending") + posted(s, f"party:{d1}:wallet")

    def return_ten():
        asked = client.post(f"/v1/orders/{order}/returns", headers=net.auth("s1"), json={
            "lines": [{"line_no": 1, "quantity": 10}], "reason": "broken"}).json
        approved = client.post(f"/v1/returns/{asked['public_id']}/approve",
                               headers=net.auth("d1"), json={})
        assert approved.status_code == 200, approved.json

    return_ten()
    return_ten()                                         # the first refund not confirmed yet
    with session_factory() as s:
        refunds = s.scalars(select(PaymentRefund).join(
            Payment, Payment.id == PaymentRefund.payment_id).where(
            Payment.public_id == payment).order_by(PaymentRefund.id)).all()
        assert [r.amount_minor for r in refunds] == [10_000, 10_000]
        # Both returns clawed their cash back: the escrow holds both refunds.
        assert posted(s, funding.escrow_account(order)) == 20_000
        assert cleared - posted(s, f"party:{d1}:pending") - posted(s, f"party:{d1}:wallet") \
            == 2 * 9_200
        ids = [r.public_id for r in refunds]
    for refund in ids:
        done = wx.finish_refund(refund)
        assert client.post("/callbacks/wechatpay", data=done.body,
                           headers=dict(done.headers)).status_code == 204
    with session_factory() as s:
        assert [r.state for r in s.scalars(select(PaymentRefund).where(
            PaymentRefund.public_id.in_(ids)))] == ["succeeded", "succeeded"]
        assert posted(s, funding.escrow_account(order)) == 0
        invariants_hold(s)
