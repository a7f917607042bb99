"""Issue 6's worked example, as a true F2B2b order from payment to payout:
the brand sells to distributor D1, D1 sells to store S1 and links its
purchase to that sale; S1 pays 1,000.00 through WeChat Pay (a real signed,
encrypted notification); the F2B2b rule gives D1 92 % on delivery, the
brand 7.5 % T+2 business days after delivery and the platform 0.5 % at
once. After delivery and release, D1's wallet is paid out through the
custody bank, and the day's settlement batches tie to the ledger. Every
balance is checked at each step, with the ledger invariant and the cash
invariant at the end."""
from __future__ import annotations

from datetime import timedelta

import pytest

import ledger
from channel_api import (
    cash, clearing_rules, clearings, funding, orders, payouts, settlements,
)
from ledger import utcnow
from payments.sandbox_bank import SimulatedBank
from service.api_payments import GATEWAYS_KEY
from tests.channel_fixtures import add_tea, build_network, client, engine  # noqa: F401  (fixtures)
from tests.vendors.wechatpay import FakeWeChatPay


@pytest.fixture(scope="module")
def wechat_vendor():
    return FakeWeChatPay()


def posted(s, code):
    try:
        return ledger.get_account(s, code).posted_minor
    except ledger.AccountNotFound:
        return 0


def test_an_f2b2b_order_paid_by_wechat_is_split_released_paid_out_and_settled(
        client, session_factory, unique, wechat_vendor):
    client.application.extensions[GATEWAYS_KEY].adapters["wechatpay"] = wechat_vendor.gateway()
    net = build_network(session_factory, unique)
    brand, d1, s1 = net.codes["brand"], net.codes["d1"], net.codes["s1"]
    with session_factory() as s, s.begin():
        add_tea(s, net, list_price_minor=1_000)
        clearing_rules.create_rule(
            s, code=f"{unique}-f2b2b", name="F2B2b split", trade_modes=["F2B2b"],
            sellers=[d1], actor="brand", valid_from=utcnow() - timedelta(days=1), legs=[
                {"recipient": "seller", "basis": "remainder", "timing": {"kind": "on_delivery"}},
                {"recipient": "brand", "basis": "percent", "value": 750,
                 "timing": {"kind": "t_plus", "days": 2, "anchor": "delivery"}},
                {"recipient": "platform", "basis": "percent", "value": 50,
                 "timing": {"kind": "immediate"}}])
        # D1's purchase from the brand (F2B), which the store's order will draw on.
        upstream = orders.place_order(s, buyer=d1, seller=brand, actor="d1",
                                      lines=[{"sku": f"{unique}-a", "quantity": 100}]).public_id

    placed = client.post("/v1/orders", headers=net.auth("s1"), json={
        "seller": d1, "lines": [{"sku": f"{unique}-a", "quantity": 100}],
        "plan": [{"method": "gateway", "amount_minor": 100_000}]})
    assert placed.status_code == 201, placed.json
    order = placed.json["public_id"]
    with session_factory() as s, s.begin():
        orders.link_orders(s, upstream=upstream, downstream=order, actor="d1")
        preview = clearing_rules.explain_for_order(s, order, "wechatpay")
        assert preview.trade_mode == "F2B2b"
    payment = client.post("/v1/payments", headers=net.auth("s1"),
                          json={"gateway": "wechatpay", "order": order}).json
    notice = wechat_vendor.payment_notification(payment["public_id"], 100_000,
                                                transaction_id=f"4200-{unique}")
    paid = client.post("/callbacks/wechatpay", data=notice.body, headers=dict(notice.headers))
    assert paid.status_code in (200, 204), paid.data

    def money(s):
        return {"receivable": posted(s, "gateway:wechatpay:receivable"),
                "escrow": posted(s, funding.escrow_account(order)),
                "D1 pending": posted(s, f"party:{d1}:pending"),
                "D1 wallet": posted(s, f"party:{d1}:wallet"),
                "brand pending": posted(s, f"party:{brand}:pending"),
                "brand wallet": posted(s, f"party:{brand}:wallet"),
                "platform": posted(s, "platform:revenue")}

    with session_factory() as s:
        assert money(s) == {"receivable": 100_000, "escrow": 0, "D1 pending": 92_000,
                            "D1 wallet": 0, "brand pending": 7_500, "brand wallet": 0,
                            "platform": 500}
        docs = clearings.documents(s, order=order)
        assert sorted((d.recipient, d.amount_minor, d.payment_method) for d in docs) == sorted([
            (d1, 92_000, "wechatpay"), (brand, 7_500, "wechatpay"), ("platform", 500, "wechatpay")])

    with session_factory() as s, s.begin():
        orders.ship_order(s, order, actor="d1")
        orders.confirm_receipt(s, order, actor="s1")
        delivered = utcnow()
        assert clearings.release_due(s, now=delivered + timedelta(minutes=1)) == 1
        assert money(s)["D1 wallet"] == 92_000 and money(s)["brand wallet"] == 0
        # T+2 business days after delivery: at most 4 calendar days over a weekend.
        assert clearings.release_due(s, now=delivered + timedelta(days=5)) == 1
        assert money(s) == {"receivable": 100_000, "escrow": 0, "D1 pending": 0,
                            "D1 wallet": 92_000, "brand pending": 0, "brand wallet": 7_500,
                            "platform": 500}

    bank = SimulatedBank(b"custody-bank-secret-0123456789")
    with session_factory() as s, s.begin():
        payouts.register_bank_account(s, d1, holder_name="D1 Trading", bank_code="102100099996",
                                      account_number="6222021234567890", bank_name="ICBC",
                                      actor="d1-finance")
        payout = payouts.request_payout(s, d1, 92_000, request_key="all", actor="d1-finance",
                                        approval_threshold_minor=100_000)
        assert payouts.send_payouts(s, bank) == {"sent": 1}
        assert payouts.poll_sent(s, bank).applied == 1     # the bank settled at once
        assert payouts.get_payout(s, payout.public_id).state == "confirmed"
        assert (money(s)["D1 wallet"], posted(s, "payouts:in_flight")) == (0, 0)

    day = utcnow().astimezone(settlements.BUSINESS_TZ).date()
    if day != delivered.astimezone(settlements.BUSINESS_TZ).date():
        pytest.skip("the business day ended during the test")
    with session_factory() as s, s.begin():
        run = settlements.settle(s, day, now=settlements.day_bounds(day)[1]
                                 + timedelta(minutes=1))
        assert run.mismatched == []
        batches = {b.party: b for b in settlements.list_batches(s, since=day, until=day,
                                                                 limit=500)[0]}
        mine = batches[d1]
        assert (mine.cleared_minor, mine.released_minor, mine.paid_out_minor,
                mine.wallet_closing_minor, mine.status) == (92_000, 92_000, 92_000, 0,
                                                            "balanced")
        theirs = batches[brand]
        assert (theirs.cleared_minor, theirs.released_minor, theirs.wallet_closing_minor) == (
            7_500, 7_500, 7_500)
    with session_factory() as s:
        assert ledger.check_ledger(s) == []
        assert cash.check_cash(s).holds
