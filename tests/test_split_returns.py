"""Unwinding gateway splits for a refund (issue 6, "with return-orders to
unwind"): the issue's example paid to D1 as payee at WeChat Pay, the
brand's and platform's shares split away at the gateway, then a return of
a tenth of the order. The refund first waits for the receivers' split
returns (``split_return_pending``, naming them), the job sends them and
posts each success once, the refund is retried and goes through, and the
finish releases the rest to D1; every balance after each step, the ledger
and cash invariants at the end. Then a return the gateway fails, and a
gateway without return orders (Alipay's case): both listed for finance and
retried."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from channel_api import clearings, gateway_bills, split_instructions, split_returns
from clearing.models import ClearingShare
from clearing.split_states import (
    RETURN_ACTIONS,
    RETURN_STATES,
    RETURN_TRANSITIONS,
    IllegalSplitReturnTransition,
    next_return_state,
)
from payments.split import SplitGateway
from service import scheduler
from tests.channel_fixtures import client, engine  # noqa: F401  (fixtures)
from tests.test_split_instructions import (  # noqa: F401  (fixtures)
    AFTER_T_PLUS_2,
    before,
    deliver,
    entries,
    invariants_hold,
    money,
    only,
    pay,
    receivers,
    world,
    wx,
    wx_keys,
)


@pytest.mark.parametrize("state", RETURN_STATES)
@pytest.mark.parametrize("action", RETURN_ACTIONS)
def test_every_return_state_and_action(state, action):
    if (state, action) in RETURN_TRANSITIONS:
        assert next_return_state(state, action) == RETURN_TRANSITIONS[(state, action)]
    else:
        with pytest.raises(IllegalSplitReturnTransition) as refused:
            next_return_state(state, action)
        assert refused.value.code == "illegal_transition" and refused.value.http_status == 409


def split_and_carry(net, session_factory, wx):
    """Pay 1,000.00 to D1 as payee, deliver, and let the split carry the
    brand's 75.00 and the platform's 5.00 (no finish yet)."""
    adapters = net.extra["adapters"]
    with session_factory() as s, s.begin():
        receivers(s, net)
    base = before(session_factory, net)
    order, payment = pay(net, wx)
    later = deliver(session_factory, order) + AFTER_T_PLUS_2
    with session_factory() as s, s.begin():
        assert split_instructions.send_splits(s, adapters, now=later)["sent"] == 1
        assert split_instructions.poll_splits(s, adapters, now=later)["succeeded"] == 1
    return base, order, payment, later


def ask_refund(net, order):
    """S1 asks to return 10 of the 100 cases (100.00); D1 approves."""
    client = net.extra["client"]
    asked = client.post(f"/v1/orders/{order}/returns", headers=net.auth("s1"), json={
        "lines": [{"line_no": 1, "quantity": 10}], "reason": "ten cases broken"})
    assert asked.status_code == 201, asked.json
    return asked.json["public_id"]


def approve(net, return_id):
    return net.extra["client"].post(f"/v1/returns/{return_id}/approve", headers=net.auth("d1"),
                                    json={})


def returns_of(session_factory, order, **filters):
    with session_factory() as s:
        items, _ = split_returns.list_returns(s, order=order, limit=500, **filters)
        return sorted(items, key=lambda r: r.party)


def test_a_refund_after_the_split_waits_for_the_split_returns_then_goes_through(
        world, session_factory, wx):
    net, adapters = world, world.extra["adapters"]
    c = net.codes
    base, order, payment, later = split_and_carry(net, session_factory, wx)
    with session_factory() as s:
        assert money(s, net, order, since=base) == {
            "held": 92_000, "receivable": 0, "escrow": 0, "D1 pending": 92_000,
            "D1 wallet": 0, "brand pending": 0, "brand wallet": 0, "revenue": 500,
            "platform at gateway": 500}

    # The refund of 10,000 needs 9,200 of D1 (pending), 750 of the brand, 50 of the
    # platform (refunds.allocate): the brand and the platform were paid at WeChat Pay.
    return_id = ask_refund(net, order)
    refused = approve(net, return_id)
    assert refused.status_code == 409, refused.json
    assert refused.json["code"] == "split_return_pending"
    named = refused.json["details"]["split_returns"]
    assert sorted((n["party"], n["amount_minor"], n["state"]) for n in named) == sorted([
        (c["brand"], 750, "requested"), ("platform", 50, "requested")])
    recorded = returns_of(session_factory, order)
    assert {r.public_id for r in recorded} == {n["split_return"] for n in named}
    [split] = [i for i in only_(session_factory, payment) if i.kind == "split"]
    assert all(r.instruction == split.public_id and r.state == "requested" and r.attempts == 0
               for r in recorded)
    assert {r.party: r.account for r in recorded} == {c["brand"]: "1900000109",
                                                      "platform": "1900000111"}
    with session_factory() as s:
        # Nothing of the refund was written: the clawback and the refund were rolled back.
        assert money(s, net, order, since=base)["D1 pending"] == 92_000
        assert sum(d.clawed_minor for d in clearings.documents(s, order=order)) == 0
        invariants_hold(s)

    # Asking again while they are under way asks for nothing more.
    again = approve(net, return_id)
    assert again.status_code == 409 and again.json["code"] == "split_return_pending"
    assert {n["split_return"] for n in again.json["details"]["split_returns"]} == \
        {r.public_id for r in recorded}
    assert len(returns_of(session_factory, order)) == 2

    # The job sends them (WeChat Pay answers PROCESSING), then polls them (SUCCESS).
    assert scheduler.send_split_returns(session_factory, adapters) == 0
    assert sorted(wx.sharing_returns) == sorted(r.public_id for r in recorded)
    assert sorted((sent["out_order_no"], sent["return_mchid"], sent["amount"])
                  for sent in wx.sharing_returns.values()) == sorted([
        (split.public_id, "1900000109", 750), (split.public_id, "1900000111", 50)])
    assert {r.state for r in returns_of(session_factory, order)} == {"processing"}
    with session_factory() as s:
        assert money(s, net, order, since=base)["held"] == 92_000        # nothing posted yet
    assert scheduler.send_split_returns(session_factory, adapters) == 2
    done = returns_of(session_factory, order)
    assert {r.state for r in done} == {"succeeded"} and all(r.entry_id for r in done)
    with session_factory() as s:
        assert money(s, net, order, since=base) == {
            "held": 92_800, "receivable": 0, "escrow": 0, "D1 pending": 92_000,
            "D1 wallet": 0, "brand pending": 750, "brand wallet": 0, "revenue": 500,
            "platform at gateway": 450}
        legs = {d.recipient: d for d in clearings.documents(s, order=order)}
        assert legs[c["brand"]].state == "pending" and legs[c["brand"]].carried_at is not None
        assert len(entries(s, "split.returned", payment)) == 2
        invariants_hold(s)

    # No finish while the returned money waits for the refund: it would go to D1.
    with session_factory() as s, s.begin():
        assert split_instructions.send_splits(s, adapters, now=later)["finishes"] == 0
        assert [i.kind for i in only(s, payment)] == ["split"]

    # The job again, twice, and the scheduler's: nothing posted twice, nothing resent.
    for _ in range(2):
        assert scheduler.send_split_returns(session_factory, adapters) == 0
        with session_factory() as s, s.begin():
            assert split_returns.send_split_returns(s, adapters) == {}
    with session_factory() as s:
        assert len(entries(s, "split.returned", payment)) == 2
        assert money(s, net, order, since=base)["held"] == 92_800
    assert len(wx.sharing_returns) == 2

    # The refund retried goes through: the returned shares come back from pending.
    retried = approve(net, return_id)
    assert retried.status_code == 200, retried.json
    with session_factory() as s:
        assert money(s, net, order, since=base) == {
            "held": 92_800, "receivable": 0, "escrow": 10_000, "D1 pending": 82_800,
            "D1 wallet": 0, "brand pending": 0, "brand wallet": 0, "revenue": 450,
            "platform at gateway": 450}       # the refund is with WeChat Pay, in the escrow
        assert {d.recipient: d.clawed_minor for d in clearings.documents(s, order=order)} == {
            c["d1"]: 9_200, c["brand"]: 750, "platform": 50}
        invariants_hold(s)
    assert len(returns_of(session_factory, order)) == 2                 # none asked again

    # WeChat Pay refunds from D1's funds; the bill moves the refund to payee_held.
    from payments.models import Payment, PaymentRefund

    with session_factory() as s:
        [refund] = s.scalars(select(PaymentRefund).join(
            Payment, Payment.id == PaymentRefund.payment_id).where(
            Payment.public_id == payment)).all()
        assert refund.amount_minor == 10_000
    settled = wx.finish_refund(refund.public_id)
    assert net.extra["client"].post("/callbacks/wechatpay", data=settled.body,
                                    headers=dict(settled.headers)).status_code == 204
    with session_factory() as s, s.begin():
        gateway_bills.post_bill(s, gateway="wechatpay",
                                day=later.astimezone(gateway_bills.BUSINESS_TZ).date(),
                                lines=adapters["wechatpay"].parse_bill(wx.trade_bill()),
                                actor="finance")
        assert money(s, net, order, since=base) == {
            "held": 82_800, "receivable": 0, "escrow": 0, "D1 pending": 82_800,
            "D1 wallet": 0, "brand pending": 0, "brand wallet": 0, "revenue": 450,
            "platform at gateway": 450}
        invariants_hold(s)

    # The finish releases the rest to D1: what it is owed after the refund.
    with session_factory() as s, s.begin():
        assert split_instructions.send_splits(s, adapters, now=later)["finishes"] == 1
        split_instructions.poll_splits(s, adapters, now=later)
        [finish] = [i for i in only(s, payment) if i.kind == "finish"]
        assert (finish.state, finish.amount_minor) == ("succeeded", 82_800)
        assert money(s, net, order, since=base) == {
            "held": 0, "receivable": 0, "escrow": 0, "D1 pending": 0, "D1 wallet": 0,
            "brand pending": 0, "brand wallet": 0, "revenue": 450, "platform at gateway": 450}
        assert len(entries(s, "split.returned", payment)) == 2
        invariants_hold(s)


def only_(session_factory, payment):
    with session_factory() as s:
        return only(s, payment)


def test_a_failed_return_is_listed_for_finance_and_its_retry_unblocks_the_refund(
        world, session_factory, wx):
    net, adapters, client = world, world.extra["adapters"], world.extra["client"]
    c = net.codes
    base, order, payment, _ = split_and_carry(net, session_factory, wx)
    return_id = ask_refund(net, order)
    assert approve(net, return_id).json["code"] == "split_return_pending"
    wx.return_result = "FAILED"
    assert scheduler.send_split_returns(session_factory, adapters) == 2
    failed = returns_of(session_factory, order)
    assert [(r.party, r.state) for r in failed] == [(c["brand"], "failed"), ("platform", "failed")]
    assert all("wechatpay failed it" in r.reason for r in failed)
    with session_factory() as s:
        assert money(s, net, order, since=base)["held"] == 92_000      # nothing came back
        assert entries(s, "split.returned", payment) == []

    # Listed for finance, over the API too; a party's key may not read them.
    listed = client.get("/v1/split-returns?attention=true&limit=500",
                        headers=net.auth("brand"))
    assert listed.status_code == 200, listed.json
    assert {r.public_id for r in failed} <= {i["public_id"] for i in listed.json["items"]}
    assert all(i["state"] == "failed" for i in listed.json["items"])
    assert client.get("/v1/split-returns", headers=net.auth("d1")).status_code == 403

    # The refund asked again names the failed returns and asks for nothing new.
    waiting = approve(net, return_id)
    assert waiting.status_code == 409 and "for finance to retry" in waiting.json["detail"]
    assert {n["state"] for n in waiting.json["details"]["split_returns"]} == {"failed"}
    assert len(returns_of(session_factory, order)) == 2

    wx.return_result = "PROCESSING"
    retries = {}
    for r in failed:
        answer = client.post(f"/v1/split-returns/{r.public_id}/retry",
                             headers=net.auth("brand"), json={"note": "relation fixed"})
        assert answer.status_code == 201, answer.json
        assert answer.json["retry_of"] == r.public_id and answer.json["state"] == "requested"
        assert answer.json["amount_minor"] == r.amount_minor
        retries[r.party] = answer.json["public_id"]
    again = client.post(f"/v1/split-returns/{failed[0].public_id}/retry",
                        headers=net.auth("brand"), json={})
    assert again.status_code == 409 and again.json["code"] == "illegal_transition"

    scheduler.send_split_returns(session_factory, adapters)
    assert scheduler.send_split_returns(session_factory, adapters) == 2
    with session_factory() as s:
        assert {r.public_id: r.state for r in split_returns.list_returns(s, order=order)[0]} \
            == {**{r.public_id: "retried" for r in failed},
                **{new: "succeeded" for new in retries.values()}}
        assert money(s, net, order, since=base)["brand pending"] == 750
    assert approve(net, return_id).status_code == 200
    with session_factory() as s:
        assert money(s, net, order, since=base)["brand pending"] == 0
        assert money(s, net, order, since=base)["D1 pending"] == 82_800
        assert len(entries(s, "split.returned", payment)) == 2
        invariants_hold(s)


class NoReturnOrders:
    """A gateway with splits but no return call (Alipay's case: a split is
    unwound only through the buyer's refund)."""

    def __init__(self, inner):
        self.inner, self.name, self.max_split_ratio = inner, inner.name, inner.max_split_ratio

    def split(self, request):
        return self.inner.split(request)

    def query_split(self, out_order_no, transaction_id):
        return self.inner.query_split(out_order_no, transaction_id)

    def finish(self, request):
        return self.inner.finish(request)

    def return_split(self, request):
        raise NotImplementedError("no return call here; unwound by the buyer's refund")

    def query_return(self, out_return_no, out_order_no):
        raise NotImplementedError("no return call here")


def test_a_gateway_without_return_orders_fails_the_return_for_finance(
        world, session_factory, wx):
    net, adapters = world, world.extra["adapters"]
    base, order, payment, _ = split_and_carry(net, session_factory, wx)
    return_id = ask_refund(net, order)
    assert approve(net, return_id).json["code"] == "split_return_pending"
    no_returns = {"wechatpay": NoReturnOrders(adapters["wechatpay"])}
    assert isinstance(no_returns["wechatpay"], SplitGateway)
    assert scheduler.send_split_returns(session_factory, no_returns) == 2
    failed = returns_of(session_factory, order)
    assert {r.state for r in failed} == {"failed"}
    assert all("cannot return a split on its own" in r.reason and "buyer's refund" in r.reason
               for r in failed)
    assert wx.sharing_returns == {}
    with session_factory() as s:
        attention, _ = split_returns.list_returns(s, attention=True, limit=500)
        assert {r.public_id for r in failed} <= {r.public_id for r in attention}
        assert money(s, net, order, since=base)["held"] == 92_000
        # The refund stays refused; the legs are untouched.
        legs = s.scalars(select(ClearingShare).where(ClearingShare.order_ref == order)).all()
        assert sum(leg.clawed_minor for leg in legs) == 0
        invariants_hold(s)
    assert approve(net, return_id).status_code == 409


def settle_refunds(net, session_factory, wx, payment):
    """WeChat Pay carries out the payment's refunds; its notices reach us."""
    from payments.models import Payment, PaymentRefund

    with session_factory() as s:
        refunds = s.scalars(select(PaymentRefund).join(
            Payment, Payment.id == PaymentRefund.payment_id).where(
            Payment.public_id == payment, PaymentRefund.state != "succeeded")).all()
        ids = [r.public_id for r in refunds]
    for refund in ids:
        done = wx.finish_refund(refund)
        assert net.extra["client"].post("/callbacks/wechatpay", data=done.body,
                                        headers=dict(done.headers)).status_code == 204


def test_a_second_refund_asks_for_new_returns_and_takes_only_what_they_bring_back(
        world, session_factory, wx):
    """Two returns of ten cases each: the second refund finds nothing left in
    pending from the first returns (their money went to the first refund),
    asks for new returns of its own shares, and takes exactly those."""
    net, adapters = world, world.extra["adapters"]
    c = net.codes
    base, order, payment, _ = split_and_carry(net, session_factory, wx)
    wx.return_result = "SUCCESS"                   # carried out at once: one job run
    for step, (d1, brand, platform) in enumerate([(82_800, 750, 50), (73_600, 1_500, 100)], 1):
        return_id = ask_refund(net, order)
        refused = approve(net, return_id)
        assert refused.status_code == 409, (step, refused.json)
        assert refused.json["code"] == "split_return_pending"
        assert sorted((n["party"], n["amount_minor"]) for n in refused.json["details"][
            "split_returns"]) == sorted([(c["brand"], 750), ("platform", 50)])
        assert scheduler.send_split_returns(session_factory, adapters) == 2
        assert approve(net, return_id).status_code == 200
        settle_refunds(net, session_factory, wx, payment)
        with session_factory() as s:
            now = money(s, net, order, since=base)
            assert (now["D1 pending"], now["brand pending"], now["escrow"]) == (d1, 0, 0)
            assert now["receivable"] == -10_000 * step
            assert (now["revenue"], now["platform at gateway"]) == (500 - platform,
                                                                    500 - platform)
            assert now["held"] == 92_000 + brand + platform
            assert {d.recipient: d.clawed_minor for d in clearings.documents(s, order=order)} \
                == {c["d1"]: 92_000 - d1, c["brand"]: brand, "platform": platform}
            assert len(entries(s, "split.returned", payment)) == 2 * step
            invariants_hold(s)
    assert [r.state for r in returns_of(session_factory, order)] == ["succeeded"] * 4
    assert sum(r["amount"] for r in wx.sharing_returns.values()) == 1_600
