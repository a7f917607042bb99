"""Split instructions to gateways (issue 6, "Who moves the money"): the
issue's worked example as a payee-mode order (a store pays 1,000.00 by
WeChat Pay to its distributor as payee; 92 % to the distributor as the
remainder on delivery, 7.5 % to the brand T+2 business days after delivery,
0.5 % to the platform at once): cleared as usual, never released to a
wallet, the brand's and platform's shares carried by a profit-sharing
instruction once their timing fired, then the distributor's by the finish
that releases the rest; every balance after each step, the ledger and cash
invariants at the end. Then the ways it goes wrong: over the cap, a
receiver closed and retried, no registered account, a job run twice; and
Alipay's trade settle end to end; and a rule that gives the seller
nothing, whose payment still gets its finish (of nothing)."""
from __future__ import annotations

from datetime import timedelta
from fractions import Fraction

import pytest
from sqlalchemy import select

import ledger
from channel_api import (
    cash,
    clearing_rules,
    clearings,
    funding,
    gateway_bills,
    orders,
    returns,
    split_instructions,
)
from clearing.split_states import (
    ACTIONS,
    FINAL,
    STATES,
    TRANSITIONS,
    IllegalSplitTransition,
    next_state,
)
from ledger import utcnow
from ledger.models import JournalEntry
from payments.alipay import Alipay
from payments.models import Payment, PaymentRefund
from payments.sandbox import SandboxGateway
from payments.sandbox_vendor import SandboxVendor
from payments.split import GatewayRefused, SplitGateway
from service import scheduler
from service.api_payments import GATEWAYS_KEY
from tests.channel_fixtures import add_tea, build_network, client, engine  # noqa: F401  (fixtures)
from tests.vendors.alipay import FakeAlipay, new_key, private_pem, public_pem
from tests.vendors.wechatpay import FakeWeChatPay, fee_of, generate_key, make_platform_identity

BRAND_MCH, D1_MCH, PLATFORM_MCH = "1900000109", "1900000110", "1900000111"
# The platform is WeChat Pay's service provider for the sellers (their sales
# are collected in their own sub-merchant); this one collects the rest.
DEFAULT_SUB_MCH = "1900000100"
LEGS = [  # the issue's F2B2b example, in basis points
    {"recipient": "seller", "basis": "remainder", "timing": {"kind": "on_delivery"}},
    {"recipient": "brand", "basis": "percent", "value": 750,
     "timing": {"kind": "t_plus", "days": 2, "anchor": "delivery"}},
    {"recipient": "platform", "basis": "percent", "value": 50, "timing": {"kind": "immediate"}},
]
AFTER_T_PLUS_2 = timedelta(days=6)  # T+2 business days after delivery, whatever the weekday


# -- the state machine, as a table ---------------------------------------------------------------

@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("action", ACTIONS)
def test_every_state_and_action(state, action):
    if (state, action) in TRANSITIONS:
        assert next_state(state, action) == TRANSITIONS[(state, action)]
    else:
        with pytest.raises(IllegalSplitTransition) as refused:
            next_state(state, action)
        assert refused.value.code == "illegal_transition" and refused.value.http_status == 409


# -- fixtures --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wx_keys():
    return generate_key(), make_platform_identity()


@pytest.fixture
def wx(wx_keys) -> FakeWeChatPay:
    key, platform = wx_keys
    return FakeWeChatPay(merchant_key=key, platforms=[platform])


@pytest.fixture
def world(client, session_factory, unique, wx):
    """The network, the rule, the WeChat Pay adapter (profit sharing on) in
    the app, and the accounts registered at WeChat Pay: D1 (so it is paid as
    payee), the brand and the platform (receivers)."""
    adapter = wx.gateway(profit_sharing=True, sub_mchid=DEFAULT_SUB_MCH)
    client.application.extensions[GATEWAYS_KEY].adapters["wechatpay"] = adapter
    net = build_network(session_factory, unique)
    with session_factory() as s, s.begin():
        add_tea(s, net, list_price_minor=1_000)
        clearing_rules.create_rule(s, code=f"{unique}-rule", name="store orders", legs=LEGS,
                                   sellers=[net.codes["d1"]], actor="brand",
                                   valid_from=utcnow() - timedelta(days=1))
        register(s, net.codes["d1"], D1_MCH)
    net.extra = {"adapters": {"wechatpay": adapter}, "client": client}
    return net


def register(s, party, account, gateway="wechatpay", kind="MERCHANT_ID"):
    return split_instructions.register_gateway_account(s, party, gateway=gateway,
                                                       account=account, kind=kind, actor="t")


def receivers(s, net, *, brand=True, platform=True):
    if brand:
        register(s, net.codes["brand"], BRAND_MCH)
    if platform:
        register(s, "platform", PLATFORM_MCH)


def posted(s, code):
    try:
        return ledger.get_account(s, code).posted_minor
    except ledger.AccountNotFound:
        return 0


def _order_to_pay(net, gateway: str, amount: int) -> tuple[str, str]:
    """S1 orders from D1 for ``amount`` to pay through ``gateway``; (order, payment)."""
    client = net.extra["client"]
    placed = client.post("/v1/orders", headers=net.auth("s1"), json={
        "seller": net.codes["d1"], "lines": [{"sku": f"{net.u}-a", "quantity": amount // 1_000}],
        "plan": [{"method": "gateway", "amount_minor": amount}]})
    assert placed.status_code == 201, placed.json
    order = placed.json["public_id"]
    payment = client.post("/v1/payments", headers=net.auth("s1"),
                          json={"gateway": gateway, "order": order})
    assert payment.status_code == 201, payment.json
    return order, payment.json["public_id"]


def pay(net, vendor, gateway="wechatpay", amount=100_000):
    """S1 orders from D1 and pays ``amount`` through ``gateway``: the
    vendor's signed notice reaches our callback. Returns (order, payment)."""
    order, payment = _order_to_pay(net, gateway, amount)
    notice = vendor.pay(payment)
    answer = net.extra["client"].post(f"/callbacks/{gateway}", data=notice.body,
                                      headers=dict(notice.headers))
    assert answer.status_code in (200, 204), answer.data
    return order, payment


def deliver(session_factory, order):
    with session_factory() as s, s.begin():
        orders.ship_order(s, order, actor="d1")
        orders.confirm_receipt(s, order, actor="s1")
    return utcnow()


SHARED = ("held", "receivable", "revenue", "platform at gateway")  # other tests move them too


def money(s, net, order=None, gateway="wechatpay", since=None):
    """This test's balances; the accounts every test of the module shares
    are counted from ``since`` (a ``money`` taken before the payment)."""
    c = net.codes
    now = {"held": posted(s, f"gateway:{gateway}:payee_held"),
           "receivable": posted(s, f"gateway:{gateway}:receivable"),
           "escrow": posted(s, funding.escrow_account(order)) if order else 0,
           "D1 pending": posted(s, f"party:{c['d1']}:pending"),
           "D1 wallet": posted(s, f"party:{c['d1']}:wallet"),
           "brand pending": posted(s, f"party:{c['brand']}:pending"),
           "brand wallet": posted(s, f"party:{c['brand']}:wallet"),
           "revenue": posted(s, "platform:revenue"),
           "platform at gateway": posted(s, f"platform:gateway:{gateway}")}
    if since is not None:
        now.update({k: now[k] - since[k] for k in SHARED})
    return now


def before(session_factory, net, gateway="wechatpay"):
    with session_factory() as s:
        return money(s, net, gateway=gateway)


def invariants_hold(s):
    assert ledger.check_ledger(s) == []
    check = cash.check_cash(s)
    assert check.holds, check.positions


def entries(s, code, payment):
    return [e for e in s.scalars(select(JournalEntry).where(JournalEntry.code == code))
            if (e.meta or {}).get("payment") == payment]


def only(s, payment, **filters):
    items, _ = split_instructions.list_instructions(s, payment=payment, limit=500, **filters)
    return items


# -- the worked example ----------------------------------------------------------------------------

def test_the_issue_s_example_paid_to_the_distributor_as_payee_is_split_at_the_gateway(
        world, session_factory, wx):
    net, adapters = world, world.extra["adapters"]
    c = net.codes
    with session_factory() as s, s.begin():
        receivers(s, net)
    base = before(session_factory, net)
    order, payment = pay(net, wx)

    # Collected in D1's name at WeChat Pay: held there, cleared as usual.
    with session_factory() as s:
        row = s.scalars(select(Payment).where(Payment.public_id == payment)).one()
        assert (row.payee_account, row.payee_account_kind) == (D1_MCH, "MERCHANT_ID")
        assert wx.orders[payment]["settle_info"] == {"profit_sharing": True}
        assert money(s, net, order, since=base) == {
            "held": 100_000, "receivable": 0, "escrow": 0, "D1 pending": 92_000,
            "D1 wallet": 0, "brand pending": 7_500, "brand wallet": 0, "revenue": 500,
            "platform at gateway": 0}
        docs = clearings.documents(s, order=order)
        assert sorted((d.recipient, d.amount_minor, d.carried_by, d.carrier_payment)
                      for d in docs) == sorted([
            (c["d1"], 92_000, "gateway:wechatpay", payment),
            (c["brand"], 7_500, "gateway:wechatpay", payment),
            ("platform", 500, "gateway:wechatpay", payment)])
        invariants_hold(s)

    delivered = deliver(session_factory, order)
    with session_factory() as s, s.begin():
        # The release job never moves a carried leg to a wallet: its money is not in custody.
        assert clearings.release_due(s, now=delivered + AFTER_T_PLUS_2) == 0
        assert money(s, net, order)["D1 wallet"] == money(s, net, order)["brand wallet"] == 0
        assert money(s, net, order, since=base)["held"] == 100_000

    # After the brand's timing: one instruction carries the brand's and the platform's shares.
    with session_factory() as s, s.begin():
        outcome = split_instructions.send_splits(s, adapters, now=delivered + AFTER_T_PLUS_2)
        assert (outcome["planned"], outcome["sent"], outcome["finishes"]) == (1, 1, 0)
        [split] = only(s, payment)
        assert (split.kind, split.state, split.amount_minor) == ("split", "processing", 8_000)
        assert sorted((r.party, r.account, r.amount_minor, r.result) for r in split.receivers) == \
            sorted([(c["brand"], BRAND_MCH, 7_500, "pending"),
                    ("platform", PLATFORM_MCH, 500, "pending")])
        # The cap, before the bill: a fee of 1 % rounded up, 30 % of the rest.
        assert (split.fee_minor, split.fee_source, split.cap_minor) == (1_000, "estimate", 29_700)
    sent = wx.sharings[split.public_id]
    assert sent["transaction_id"] == wx.orders[payment]["transaction_id"]
    assert sorted((r["account"], r["amount"]) for r in sent["receivers"]) == [
        (BRAND_MCH, 7_500), (PLATFORM_MCH, 500)]
    with session_factory() as s:
        assert money(s, net, order, since=base)["held"] == 100_000   # nothing until the outcome
        invariants_hold(s)

    with session_factory() as s, s.begin():
        assert split_instructions.poll_splits(s, adapters)["succeeded"] == 1
        assert money(s, net, order, since=base) == {
            "held": 92_000, "receivable": 0, "escrow": 0, "D1 pending": 92_000,
            "D1 wallet": 0, "brand pending": 0, "brand wallet": 0, "revenue": 500,
            "platform at gateway": 500}
        assert split_instructions.get_instruction(s, split.public_id).state == "succeeded"
        assert [e.to_state for e in split_instructions.instruction_events(s, split.public_id)] == [
            "created", "processing", "processing", "processing", "succeeded"]
        invariants_hold(s)

    # Every other leg carried and D1's is due: the finish releases the rest to D1.
    with session_factory() as s, s.begin():
        outcome = split_instructions.send_splits(s, adapters, now=delivered + AFTER_T_PLUS_2)
        assert (outcome["planned"], outcome["finishes"], outcome["sent"]) == (0, 1, 1)
        finish = only(s, payment, state="processing")[0]
        assert (finish.kind, finish.amount_minor, finish.payee) == ("finish", 92_000, c["d1"])
    assert wx.sharings[finish.public_id]["receivers"][0]["amount"] == \
        100_000 - fee_of(100_000) - 8_000          # the gateway's rest: D1's share less its fee
    with session_factory() as s, s.begin():
        assert split_instructions.poll_splits(s, adapters)["succeeded"] == 1
        assert money(s, net, order, since=base) == {
            "held": 0, "receivable": 0, "escrow": 0, "D1 pending": 0, "D1 wallet": 0,
            "brand pending": 0, "brand wallet": 0, "revenue": 500, "platform at gateway": 500}
        assert {d.recipient: d.carried_at is not None for d in clearings.documents(
            s, order=order)} == {c["d1"]: True, c["brand"]: True, "platform": True}
        assert len(entries(s, "split.paid", payment)) == 2
        assert len(entries(s, "split.finish", payment)) == 1
        invariants_hold(s)

    # The daily bill matches the payment but posts nothing to custody; its fee is recorded.
    with session_factory() as s, s.begin():
        custody, fees = posted(s, "custody:bank"), posted(s, "gateway:wechatpay:fees")
        report = gateway_bills.post_bill(s, gateway="wechatpay",
                                         day=delivered.astimezone(gateway_bills.BUSINESS_TZ).date(),
                                         lines=adapters["wechatpay"].parse_bill(wx.trade_bill()),
                                         actor="finance")
        assert (report.payee_collected_minor, report.payee_fees_minor) == (100_000, 600)
        assert not [d for d in report.discrepancies
                    if d.transaction_id == wx.orders[payment]["transaction_id"]]
        assert (posted(s, "custody:bank"), posted(s, "gateway:wechatpay:fees")) == (custody, fees)
        assert s.scalars(select(Payment.fee_minor).where(Payment.public_id == payment)).one() == 600
        invariants_hold(s)


def test_the_platform_s_immediate_leg_goes_at_once_and_the_brand_s_when_due(
        world, session_factory, wx):
    net, adapters = world, world.extra["adapters"]
    with session_factory() as s, s.begin():
        receivers(s, net)
    order, payment = pay(net, wx)
    with session_factory() as s, s.begin():
        split_instructions.send_splits(s, adapters)          # before delivery
        split_instructions.poll_splits(s, adapters)
        [first] = only(s, payment)
        assert [(r.party, r.amount_minor) for r in first.receivers] == [("platform", 500)]
        assert split_instructions.send_splits(s, adapters)["planned"] == 0   # nothing else due
    delivered = deliver(session_factory, order)
    with session_factory() as s, s.begin():
        split_instructions.send_splits(s, adapters, now=delivered + AFTER_T_PLUS_2)
        second = [i for i in only(s, payment) if i.public_id != first.public_id][0]
        assert [(r.party, r.amount_minor) for r in second.receivers] == [
            (net.codes["brand"], 7_500)]
        # Cumulative cap: what the first instruction split counts.
        assert second.cap_minor == 29_700 and second.state == "processing"
        invariants_hold(s)


# -- what goes wrong ------------------------------------------------------------------------------

def test_a_split_over_the_gateway_s_cap_is_not_sent_and_is_raised_for_finance(
        client, session_factory, unique, wx):
    adapter = wx.gateway(profit_sharing=True, sub_mchid=DEFAULT_SUB_MCH)
    client.application.extensions[GATEWAYS_KEY].adapters["wechatpay"] = adapter
    net = build_network(session_factory, unique)
    with session_factory() as s, s.begin():
        add_tea(s, net, list_price_minor=1_000)
        clearing_rules.create_rule(s, code=f"{unique}-greedy", name="greedy", actor="brand",
                                   sellers=[net.codes["d1"]],
                                   valid_from=utcnow() - timedelta(days=1), legs=[
            {"recipient": "seller", "basis": "remainder", "timing": {"kind": "immediate"}},
            {"recipient": "brand", "basis": "percent", "value": 3_000,
             "timing": {"kind": "immediate"}}])
        register(s, net.codes["d1"], D1_MCH)
        register(s, net.codes["brand"], BRAND_MCH)
    net.extra = {"client": client}
    order, payment = pay(net, wx)
    with session_factory() as s, s.begin():
        outcome = split_instructions.send_splits(s, {"wechatpay": adapter})
        assert (outcome["blocked"], outcome["sent"]) == (1, 0)
        [blocked] = only(s, payment)
        # 30,000 is within 30 % of the payment after WeChat Pay's 600 fee (29,820), but not
        # after the estimated 1 % (29,700): the cap is checked the safe way before the bill.
        assert blocked.state == "blocked" and blocked.cap_minor == 29_700
        assert "over_cap" in blocked.reason and "29700" in blocked.reason
        assert blocked.public_id in {i.public_id for i in split_instructions.list_instructions(
            s, attention=True, limit=500)[0]}
        assert split_instructions.send_splits(s, {"wechatpay": adapter})["sent"] == 0
        assert posted(s, f"party:{net.codes['brand']}:pending") == 30_000   # still owed
        invariants_hold(s)
    assert wx.sharings == {}                                                # nothing sent


def test_a_closed_receiver_is_raised_and_its_retry_is_posted_once(world, session_factory, wx):
    net, adapters = world, world.extra["adapters"]
    brand = net.codes["brand"]
    with session_factory() as s, s.begin():
        receivers(s, net)
    base = before(session_factory, net)
    order, payment = pay(net, wx)
    delivered = deliver(session_factory, order)
    wx.receiver_faults = {BRAND_MCH: "NO_RELATION"}
    later = delivered + AFTER_T_PLUS_2
    with session_factory() as s, s.begin():
        split_instructions.send_splits(s, adapters, now=later)
        split_instructions.poll_splits(s, adapters, now=later)
        [failed] = only(s, payment)
        assert failed.state == "failed" and "NO_RELATION" in failed.reason
        assert {r.party: (r.result, r.fail_reason) for r in failed.receivers} == {
            brand: ("closed", "NO_RELATION"), "platform": ("success", None)}
        assert posted(s, f"party:{brand}:pending") == 7_500          # still owed
        assert money(s, net, order, since=base)["platform at gateway"] == 500
        assert money(s, net, order, since=base)["held"] == 100_000 - 500
        # No finish while the brand's leg is owed.
        assert split_instructions.send_splits(s, adapters, now=later)["finishes"] == 0
        invariants_hold(s)

    wx.receiver_faults = {}
    with session_factory() as s, s.begin():
        retry = split_instructions.retry_instruction(s, failed.public_id, adapters,
                                                     actor="finance", note="relation added")
        assert retry.public_id != failed.public_id and retry.retry_of == failed.public_id
        assert [(r.party, r.amount_minor) for r in retry.receivers] == [(brand, 7_500)]
        assert split_instructions.get_instruction(s, failed.public_id).state == "retried"
        with pytest.raises(IllegalSplitTransition):                  # retried once only
            split_instructions.retry_instruction(s, failed.public_id, adapters, actor="finance")
    with session_factory() as s, s.begin():
        split_instructions.send_splits(s, adapters, now=later)
        split_instructions.poll_splits(s, adapters, now=later)
        assert split_instructions.get_instruction(s, retry.public_id).state == "succeeded"
        assert posted(s, f"party:{brand}:pending") == 0
        assert money(s, net, order, since=base)["held"] == 92_000
        paid = entries(s, "split.paid", payment)
        assert sorted(e.meta["party"] for e in paid) == sorted([brand, "platform"])
        invariants_hold(s)


def test_a_receiver_without_an_account_at_the_gateway_blocks_the_instruction(
        world, session_factory, wx):
    net, adapters = world, world.extra["adapters"]
    brand = net.codes["brand"]
    with session_factory() as s, s.begin():
        receivers(s, net, brand=False)
    order, payment = pay(net, wx)
    delivered = deliver(session_factory, order)
    later = delivered + AFTER_T_PLUS_2
    with session_factory() as s, s.begin():
        outcome = split_instructions.send_splits(s, adapters, now=later)
        assert (outcome["blocked"], outcome["sent"]) == (1, 0)
        [blocked] = only(s, payment)
        assert blocked.reason == f"{brand} has no account registered at wechatpay"
        assert {r.party: r.account for r in blocked.receivers} == {
            brand: None, "platform": PLATFORM_MCH}
    assert wx.sharings == {}
    with session_factory() as s, s.begin():
        register(s, brand, BRAND_MCH)
        retry = split_instructions.retry_instruction(s, blocked.public_id, adapters,
                                                     actor="finance")
        assert retry.state == "created"
        split_instructions.send_splits(s, adapters, now=later)
        split_instructions.poll_splits(s, adapters, now=later)
        assert split_instructions.get_instruction(s, retry.public_id).state == "succeeded"
        assert posted(s, f"party:{brand}:pending") == 0
        invariants_hold(s)


def test_rerunning_the_jobs_posts_nothing_twice(world, session_factory, wx):
    net, adapters = world, world.extra["adapters"]
    with session_factory() as s, s.begin():
        receivers(s, net)
    base = before(session_factory, net)
    order, payment = pay(net, wx)
    delivered = deliver(session_factory, order)
    later = delivered + AFTER_T_PLUS_2
    wx.sharing_state = "FINISHED"             # carried out at once: the answer is the outcome
    for _ in range(2):
        with session_factory() as s, s.begin():
            split_instructions.send_splits(s, adapters, now=later)
            split_instructions.poll_splits(s, adapters, now=later)
    # and the scheduler's jobs, each in its own transactions, twice more
    for _ in range(2):
        scheduler.send_splits(session_factory, adapters)
        scheduler.poll_splits(session_factory, adapters)
    with session_factory() as s:
        kinds = sorted((i.kind, i.state) for i in only(s, payment))
        assert kinds == [("finish", "succeeded"), ("split", "succeeded")]
        assert len(entries(s, "split.paid", payment)) == 2
        assert len(entries(s, "split.finish", payment)) == 1
        assert len(wx.sharings) >= 2 and all(
            sum(1 for sent in wx.sharings.values() if sent["out_order_no"] == i.public_id) == 1
            for i in only(s, payment))
        assert money(s, net, order, since=base)["held"] == 0
        assert money(s, net, order, since=base)["platform at gateway"] == 500
        invariants_hold(s)


def test_a_refund_after_the_split_is_refused_for_finance(world, session_factory, wx):
    net, adapters = world, world.extra["adapters"]
    with session_factory() as s, s.begin():
        receivers(s, net)
    order, payment = pay(net, wx)
    delivered = deliver(session_factory, order)
    with session_factory() as s, s.begin():
        split_instructions.send_splits(s, adapters, now=delivered + AFTER_T_PLUS_2)
    with session_factory() as s, s.begin():
        ret = returns.request_return(s, order, lines=[{"line_no": 1, "quantity": 10}],
                                     reason="broken", actor="s1")
        with pytest.raises(clearings.ClawbackBlocked, match="split"):
            returns.approve_return(s, ret.public_id, actor="d1")


def test_a_gateway_that_cannot_be_reached_is_sent_the_same_instruction_again(
        world, session_factory, wx):
    net, adapters = world, world.extra["adapters"]
    with session_factory() as s, s.begin():
        receivers(s, net)
    order, payment = pay(net, wx)
    wx.answer_fault = "system_error"
    with session_factory() as s, s.begin():
        assert split_instructions.send_splits(s, adapters)["unavailable"] == 1
        [waiting] = only(s, payment)
        assert (waiting.state, waiting.attempts) == ("created", 1) and waiting.last_error
    wx.answer_fault = None
    with session_factory() as s, s.begin():
        assert split_instructions.send_splits(s, adapters)["sent"] == 1
        [sent] = only(s, payment)
        assert (sent.public_id, sent.state, sent.attempts) == (waiting.public_id, "processing", 2)


# -- Alipay --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ali_keys():
    return new_key(), new_key()


def test_alipay_trade_settle_carries_the_split_and_royalty_finish_the_rest(
        client, session_factory, unique, ali_keys):
    merchant_key, alipay_key = ali_keys
    ali = FakeAlipay(public_pem(merchant_key), key=alipay_key)
    adapter = Alipay(ali.app_id, private_pem(merchant_key), ali.alipay_public_key_pem, ali,
                     seller_id=ali.seller_id, royalty_freeze=True)
    client.application.extensions[GATEWAYS_KEY].adapters["alipay"] = adapter
    adapters = {"alipay": adapter}
    net = build_network(session_factory, unique)
    c = net.codes
    with session_factory() as s, s.begin():
        add_tea(s, net, list_price_minor=1_000)
        clearing_rules.create_rule(s, code=f"{unique}-rule", name="store orders", legs=LEGS,
                                   sellers=[c["d1"]], actor="brand",
                                   valid_from=utcnow() - timedelta(days=1))
        # D1 authorised the platform's app: its sales are trades of its own.
        split_instructions.register_gateway_account(
            s, c["d1"], gateway="alipay", account="2088000000000110", kind="userId", actor="t",
            app_auth_token=ali.authorize("2088000000000110"))
        register(s, c["brand"], "2088000000000109", gateway="alipay", kind="userId")
        register(s, "platform", "platform@example.com", gateway="alipay", kind="loginName")
    net.extra = {"client": client}
    base = before(session_factory, net, "alipay")
    order, payment = pay(net, ali, gateway="alipay")
    with session_factory() as s:
        assert money(s, net, order, "alipay", since=base)["held"] == 100_000
    assert ali.trades[payment].seller_id == "2088000000000110"     # in D1's own name
    delivered = deliver(session_factory, order)
    later = delivered + AFTER_T_PLUS_2
    with session_factory() as s, s.begin():
        split_instructions.send_splits(s, adapters, now=later)
        [split] = only(s, payment)
        assert split.state == "processing"       # Alipay took it; the query says the outcome
        settle = ali.trades[payment].settles[split.public_id]
        assert sorted((d["trans_in"], d["amount"]) for d in settle["details"]) == [
            ("2088000000000109", "75.00"), ("platform@example.com", "5.00")]
        assert split_instructions.poll_splits(s, adapters, now=later)["succeeded"] == 1
        split_instructions.send_splits(s, adapters, now=later)      # the finish
        split_instructions.poll_splits(s, adapters, now=later)
        assert sorted((i.kind, i.state) for i in only(s, payment)) == [
            ("finish", "succeeded"), ("split", "succeeded")]
        assert ali.trades[payment].royalty_finished
        assert money(s, net, order, "alipay", since=base) == {
            "held": 0, "receivable": 0, "escrow": 0, "D1 pending": 0, "D1 wallet": 0,
            "brand pending": 0, "brand wallet": 0, "revenue": 500, "platform at gateway": 500}
        assert len(entries(s, "split.paid", payment)) == 2
        assert len(entries(s, "split.finish", payment)) == 1
        invariants_hold(s)


def test_a_refund_before_any_split_comes_out_of_the_payee_s_held_money(
        world, session_factory, wx):
    """A return before the split job ran: the legs are clawed back from
    pending as in custody, WeChat Pay refunds from D1's held money, and the
    daily bill moves that refund from the receivable it was posted against
    to ``payee_held``; what is left is then split and finished."""
    from payments.models import PaymentRefund

    net, adapters, client = world, world.extra["adapters"], world.extra["client"]
    with session_factory() as s, s.begin():
        receivers(s, net)
    base = before(session_factory, net)
    order, payment = pay(net, wx)
    delivered = deliver(session_factory, order)
    asked = client.post(f"/v1/orders/{order}/returns", headers=net.auth("s1"), json={
        "lines": [{"line_no": 1, "quantity": 10}], "reason": "ten cases broken"}).json
    approved = client.post(f"/v1/returns/{asked['public_id']}/approve", headers=net.auth("d1"),
                           json={})
    assert approved.status_code == 200, approved.json
    with session_factory() as s:
        [refund] = s.scalars(select(PaymentRefund).join(
            Payment, Payment.id == PaymentRefund.payment_id).where(
            Payment.public_id == payment)).all()
        assert refund.amount_minor == 10_000
    done = wx.finish_refund(refund.public_id)
    assert client.post("/callbacks/wechatpay", data=done.body,
                       headers=dict(done.headers)).status_code == 204
    with session_factory() as s:
        assert money(s, net, order, since=base) == {
            "held": 100_000, "receivable": -10_000, "escrow": 0, "D1 pending": 82_800,
            "D1 wallet": 0, "brand pending": 6_750, "brand wallet": 0, "revenue": 450,
            "platform at gateway": 0}
        invariants_hold(s)
    with session_factory() as s, s.begin():
        report = gateway_bills.post_bill(s, gateway="wechatpay",
                                         day=delivered.astimezone(gateway_bills.BUSINESS_TZ).date(),
                                         lines=adapters["wechatpay"].parse_bill(wx.trade_bill()),
                                         actor="finance")
        assert report.payee_collected_minor == 90_000
        assert money(s, net, order, since=base)["held"] == 90_000
        assert money(s, net, order, since=base)["receivable"] == 0
        invariants_hold(s)
    later = delivered + AFTER_T_PLUS_2
    with session_factory() as s, s.begin():
        split_instructions.send_splits(s, adapters, now=later)
        [split] = only(s, payment)
        assert sorted(r.amount_minor for r in split.receivers) == [450, 6_750]
        assert split.fee_source == "bill" and split.fee_minor == fee_of(100_000)
        split_instructions.poll_splits(s, adapters, now=later)
        split_instructions.send_splits(s, adapters, now=later)
        split_instructions.poll_splits(s, adapters, now=later)
        assert money(s, net, order, since=base) == {
            "held": 0, "receivable": 0, "escrow": 0, "D1 pending": 0, "D1 wallet": 0,
            "brand pending": 0, "brand wallet": 0, "revenue": 450, "platform at gateway": 450}
        invariants_hold(s)


# -- a rule that gives the seller (the payee) nothing ---------------------------------------------

NOTHING_FOR_THE_SELLER = {
    # every fen to the brand (the remainder) and the platform: the seller has no leg at all
    "no seller leg": [
        {"recipient": "brand", "basis": "remainder",
         "timing": {"kind": "t_plus", "days": 2, "anchor": "delivery"}},
        {"recipient": "platform", "basis": "percent", "value": 50,
         "timing": {"kind": "immediate"}}],
    # the seller's remainder leg comes to 0 fen on an order of 1,000.00
    "seller leg of 0 fen": [
        {"recipient": "seller", "basis": "remainder", "timing": {"kind": "on_delivery"}},
        {"recipient": "brand", "basis": "per_order", "value": 99_500,
         "timing": {"kind": "t_plus", "days": 2, "anchor": "delivery"}},
        {"recipient": "platform", "basis": "percent", "value": 50,
         "timing": {"kind": "immediate"}}],
}
SBX_SECRET = b"split-instructions-sandbox-secret"


class Watched:
    """A split gateway that counts the finishes it is sent and can refuse
    the next ones (``refuse``), as a gateway refuses with a signed no."""

    def __init__(self, inner):
        self.inner, self.name, self.max_split_ratio = inner, inner.name, inner.max_split_ratio
        self.finishes: list[str] = []
        self.refuse = 0

    def split(self, request):
        return self.inner.split(request)

    def query_split(self, out_order_no, transaction_id, **sub_merchant):
        return self.inner.query_split(out_order_no, transaction_id, **sub_merchant)

    def finish(self, request):
        self.finishes.append(request.out_order_no)
        if self.refuse:
            self.refuse -= 1
            raise GatewayRefused("refused", vendor_code="SYSTEM_BUSY", vendor_message="busy")
        return self.inner.finish(request)

    def return_split(self, request):
        return self.inner.return_split(request)

    def query_return(self, out_return_no, out_order_no, **sub_merchant):
        return self.inner.query_return(out_return_no, out_order_no, **sub_merchant)


@pytest.fixture
def nothing_for_the_seller(client, session_factory, unique, request):
    """D1 paid as payee at a sandbox gateway that takes no fee and lets the
    whole payment be split (a rule that gives the seller nothing cannot be
    carried out elsewhere: see the cap test below); the rule is the test's
    parameter (default: no seller leg)."""
    legs = NOTHING_FOR_THE_SELLER[getattr(request, "param", "no seller leg")]
    vendor = SandboxVendor(app_id="split-test", secret=SBX_SECRET, fee_bps=0,
                           bill_tz=gateway_bills.BUSINESS_TZ)
    vendor.split_ratio = Fraction(1)
    adapter = SandboxGateway(app_id="split-test", secret=SBX_SECRET, transport=vendor,
                             max_split_ratio=Fraction(1))
    client.application.extensions[GATEWAYS_KEY].adapters["sandbox"] = adapter
    net = build_network(session_factory, unique)
    c = net.codes
    with session_factory() as s, s.begin():
        add_tea(s, net, list_price_minor=1_000)
        clearing_rules.create_rule(s, code=f"{unique}-all-away", name="all to others",
                                   legs=legs, sellers=[c["d1"]], actor="brand",
                                   valid_from=utcnow() - timedelta(days=1))
        for party in (c["d1"], c["brand"]):
            register(s, party, f"{party}-sbx", gateway="sandbox", kind="account")
        register(s, "platform", "platform-sbx", gateway="sandbox", kind="account")
    watched = Watched(adapter)
    assert isinstance(watched, SplitGateway)
    net.extra = {"client": client, "vendor": vendor, "adapter": adapter,
                 "adapters": {"sandbox": watched}}
    return net


def pay_sandbox(net, amount=100_000):
    order, payment = _order_to_pay(net, "sandbox", amount)
    headers, body = net.extra["vendor"].pay(payment)
    assert net.extra["client"].post("/callbacks/sandbox", data=body,
                                    headers=headers).status_code == 200
    return order, payment


def sandbox_bill(s, net):
    """Today's sandbox bill: it records the payment's fee (0)."""
    day = utcnow().astimezone(gateway_bills.BUSINESS_TZ).date()
    return gateway_bills.post_bill(s, gateway="sandbox", day=day, actor="finance",
                                   lines=net.extra["adapter"].parse_bill(
                                       net.extra["vendor"].bill(day)))


def states(s, payment):
    return sorted((i.kind, i.state, i.amount_minor) for i in only(s, payment))


def split_everything_away(net, session_factory):
    """Pay 1,000.00 to D1 as payee, post the bill (fee 0), split the
    platform's 5.00 at once and, after delivery, the brand's 995.00: every
    leg is carried, none is D1's. Returns (base, order, payment, later)."""
    adapters, c = net.extra["adapters"], net.codes
    base = before(session_factory, net, "sandbox")
    order, payment = pay_sandbox(net)
    with session_factory() as s, s.begin():
        # Cleared as usual, with no leg for D1 (clearing writes no leg of 0 fen).
        assert sorted((d.recipient, d.amount_minor, d.carried_by) for d in
                      clearings.documents(s, order=order)) == sorted([
            (c["brand"], 99_500, "gateway:sandbox"), ("platform", 500, "gateway:sandbox")])
        assert money(s, net, order, "sandbox", since=base) == {
            "held": 100_000, "receivable": 0, "escrow": 0, "D1 pending": 0, "D1 wallet": 0,
            "brand pending": 99_500, "brand wallet": 0, "revenue": 500, "platform at gateway": 0}
        assert sandbox_bill(s, net).payee_fees_minor == 0
        # The platform's immediate leg is split at once, and carried.
        split_instructions.send_splits(s, adapters)
        assert split_instructions.poll_splits(s, adapters)["succeeded"] >= 1
        assert states(s, payment) == [("split", "succeeded", 500)]
        # No finish while the brand's leg is owed.
        split_instructions.send_splits(s, adapters)
        assert states(s, payment) == [("split", "succeeded", 500)]
        invariants_hold(s)
    later = deliver(session_factory, order) + AFTER_T_PLUS_2
    with session_factory() as s, s.begin():
        split_instructions.send_splits(s, adapters, now=later)
        [brand_split] = [i for i in only(s, payment) if i.amount_minor == 99_500]
        # The whole rest of the payment: within a cap of 100 % after a fee of 0.
        assert (brand_split.state, brand_split.fee_minor, brand_split.fee_source,
                brand_split.cap_minor) == ("processing", 0, "bill", 100_000)
        assert [i.kind for i in only(s, payment)] == ["split", "split"]  # no finish yet
        split_instructions.poll_splits(s, adapters, now=later)
        assert states(s, payment) == [("split", "succeeded", 500),
                                      ("split", "succeeded", 99_500)]
        assert money(s, net, order, "sandbox", since=base)["held"] == 0
        invariants_hold(s)
    return base, order, payment, later


@pytest.mark.parametrize("nothing_for_the_seller", list(NOTHING_FOR_THE_SELLER), indirect=True)
def test_a_payee_the_rule_gives_nothing_gets_one_finish_that_posts_nothing(
        nothing_for_the_seller, session_factory):
    net = nothing_for_the_seller
    adapters, c = net.extra["adapters"], net.codes
    base, order, payment, later = split_everything_away(net, session_factory)

    # Every other leg carried, D1 has none: one finish, of nothing, that releases whatever
    # the gateway still holds for D1 (here nothing: no fee, everything split).
    with session_factory() as s, s.begin():
        split_instructions.send_splits(s, adapters, now=later)
        [finish] = [i for i in only(s, payment) if i.kind == "finish"]
        assert (finish.state, finish.payee, finish.amount_minor, finish.receivers) == (
            "processing", c["d1"], 0, ())
        assert adapters["sandbox"].finishes == [finish.public_id]
        split_instructions.poll_splits(s, adapters, now=later)
        assert states(s, payment) == [("finish", "succeeded", 0), ("split", "succeeded", 500),
                                      ("split", "succeeded", 99_500)]
        assert not [i for i in only(s, payment) if i.state not in FINAL]   # nothing open
        assert [(e.to_state, e.entry_id) for e in split_instructions.instruction_events(
            s, finish.public_id)] == [("created", None), ("processing", None),
                                      ("succeeded", None)]
        assert len(entries(s, "split.paid", payment)) == 2
        assert entries(s, "split.finish", payment) == []                   # posts nothing
        assert money(s, net, order, "sandbox", since=base) == {
            "held": 0, "receivable": 0, "escrow": 0, "D1 pending": 0, "D1 wallet": 0,
            "brand pending": 0, "brand wallet": 0, "revenue": 500, "platform at gateway": 500}
        assert all(d.carried_at is not None for d in clearings.documents(s, order=order))
        invariants_hold(s)
    carried_out = net.extra["adapter"].query_split(finish.public_id,
                                                   transaction_of(session_factory, payment),
                                                   sub_merchant=f"{net.codes['d1']}-sbx")
    assert (carried_out.state, carried_out.receivers) == ("finished", ())   # nothing was left

    # The jobs again, in one transaction and as the scheduler runs them: nothing more.
    for _ in range(2):
        with session_factory() as s, s.begin():
            split_instructions.send_splits(s, adapters, now=later)
            split_instructions.poll_splits(s, adapters, now=later)
        scheduler.send_splits(session_factory, adapters)
        scheduler.poll_splits(session_factory, adapters)
    with session_factory() as s:
        assert [i.public_id for i in only(s, payment) if i.kind == "finish"] == [finish.public_id]
        assert states(s, payment) == [("finish", "succeeded", 0), ("split", "succeeded", 500),
                                      ("split", "succeeded", 99_500)]
        assert adapters["sandbox"].finishes == [finish.public_id]          # sent once
        assert len(entries(s, "split.paid", payment)) == 2
        assert entries(s, "split.finish", payment) == []
        assert money(s, net, order, "sandbox", since=base)["held"] == 0
        invariants_hold(s)


def transaction_of(session_factory, payment):
    """The payment's transaction id at the gateway."""
    with session_factory() as s:
        return s.scalars(select(Payment.transaction_id).where(
            Payment.public_id == payment)).one()


def test_a_refused_finish_of_nothing_waits_for_finance_and_its_retry_is_one_finish_of_nothing(
        nothing_for_the_seller, session_factory):
    net = nothing_for_the_seller
    adapters = net.extra["adapters"]
    _, order, payment, later = split_everything_away(net, session_factory)
    adapters["sandbox"].refuse = 1
    with session_factory() as s, s.begin():
        assert split_instructions.send_splits(s, adapters, now=later)["refused"] == 1
        [refused] = [i for i in only(s, payment) if i.kind == "finish"]
        assert refused.state == "refused" and "SYSTEM_BUSY" in refused.reason
        assert refused.public_id in {i.public_id for i in split_instructions.list_instructions(
            s, attention=True, limit=500)[0]}
    with session_factory() as s, s.begin():          # never planned a second time on its own
        split_instructions.send_splits(s, adapters, now=later)
        assert [i.public_id for i in only(s, payment) if i.kind == "finish"] == [
            refused.public_id]
        retry = split_instructions.retry_instruction(s, refused.public_id, adapters,
                                                     actor="finance", note="gateway back")
        assert (retry.kind, retry.state, retry.amount_minor, retry.receivers,
                retry.retry_of) == ("finish", "created", 0, (), refused.public_id)
        with pytest.raises(IllegalSplitTransition):                        # retried once only
            split_instructions.retry_instruction(s, refused.public_id, adapters, actor="finance")
    for _ in range(2):
        with session_factory() as s, s.begin():
            split_instructions.send_splits(s, adapters, now=later)
            split_instructions.poll_splits(s, adapters, now=later)
    with session_factory() as s:
        assert states(s, payment) == [("finish", "retried", 0), ("finish", "succeeded", 0),
                                      ("split", "succeeded", 500), ("split", "succeeded", 99_500)]
        assert adapters["sandbox"].finishes == [refused.public_id, retry.public_id]
        assert entries(s, "split.finish", payment) == []
        invariants_hold(s)


def test_a_finish_of_nothing_waits_while_a_refund_unwinds_a_split(
        nothing_for_the_seller, session_factory):
    """A return of a tenth of the order after everything was split away,
    before the finish: the refund waits for the split returns, and the
    finish waits for the refund; then one finish, of nothing."""
    net = nothing_for_the_seller
    adapters, client, c = net.extra["adapters"], net.extra["client"], net.codes
    base, order, payment, later = split_everything_away(net, session_factory)
    asked = client.post(f"/v1/orders/{order}/returns", headers=net.auth("s1"), json={
        "lines": [{"line_no": 1, "quantity": 10}], "reason": "ten cases broken"})
    assert asked.status_code == 201, asked.json

    def approve():
        return client.post(f"/v1/returns/{asked.json['public_id']}/approve",
                           headers=net.auth("d1"), json={})

    refused = approve()
    assert refused.status_code == 409 and refused.json["code"] == "split_return_pending"
    assert sorted((n["party"], n["amount_minor"]) for n in
                  refused.json["details"]["split_returns"]) == sorted([
        (c["brand"], 9_950), ("platform", 50)])
    with session_factory() as s, s.begin():          # a return under way: no finish
        split_instructions.send_splits(s, adapters, now=later)
        assert [i.kind for i in only(s, payment)] == ["split", "split"]
    for _ in range(2):
        scheduler.send_split_returns(session_factory, adapters)
    with session_factory() as s, s.begin():          # returned, not yet taken by the refund
        assert money(s, net, order, "sandbox", since=base)["held"] == 10_000
        split_instructions.send_splits(s, adapters, now=later)
        assert [i.kind for i in only(s, payment)] == ["split", "split"]
        invariants_hold(s)
    assert approve().status_code == 200
    with session_factory() as s:
        [refund] = s.scalars(select(PaymentRefund).join(
            Payment, Payment.id == PaymentRefund.payment_id).where(
            Payment.public_id == payment)).all()
    headers, body = net.extra["vendor"].refund_notice(refund.public_id)
    assert client.post("/callbacks/sandbox", data=body, headers=headers).status_code == 200
    with session_factory() as s, s.begin():
        sandbox_bill(s, net)                         # the refund came out of D1's money there
        split_instructions.send_splits(s, adapters, now=later)
        [finish] = [i for i in only(s, payment) if i.kind == "finish"]
        assert (finish.amount_minor, finish.receivers) == (0, ())
        split_instructions.poll_splits(s, adapters, now=later)
        split_instructions.send_splits(s, adapters, now=later)
        assert states(s, payment) == [("finish", "succeeded", 0), ("split", "succeeded", 500),
                                      ("split", "succeeded", 99_500)]
        assert entries(s, "split.finish", payment) == []
        assert money(s, net, order, "sandbox", since=base) == {
            "held": 0, "receivable": 0, "escrow": 0, "D1 pending": 0, "D1 wallet": 0,
            "brand pending": 0, "brand wallet": 0, "revenue": 450, "platform at gateway": 450}
        invariants_hold(s)
    assert adapters["sandbox"].finishes == [finish.public_id]


def test_a_rule_giving_the_seller_nothing_is_over_the_cap_of_a_gateway_with_a_fee(
        client, session_factory, unique, wx):
    """At WeChat Pay (a fee, 30 % at most) such a split cannot be sent: it
    is blocked for finance, and no finish is planned while it is."""
    adapter = wx.gateway(profit_sharing=True, sub_mchid=DEFAULT_SUB_MCH)
    client.application.extensions[GATEWAYS_KEY].adapters["wechatpay"] = adapter
    net = build_network(session_factory, unique)
    with session_factory() as s, s.begin():
        add_tea(s, net, list_price_minor=1_000)
        clearing_rules.create_rule(s, code=f"{unique}-all-away", name="all to others",
                                   legs=NOTHING_FOR_THE_SELLER["no seller leg"],
                                   sellers=[net.codes["d1"]], actor="brand",
                                   valid_from=utcnow() - timedelta(days=1))
        register(s, net.codes["d1"], D1_MCH)
        receivers(s, net)
    net.extra = {"client": client}
    order, payment = pay(net, wx)
    later = deliver(session_factory, order) + AFTER_T_PLUS_2
    with session_factory() as s, s.begin():
        split_instructions.send_splits(s, {"wechatpay": adapter}, now=later)
        split_instructions.send_splits(s, {"wechatpay": adapter}, now=later)
        [blocked] = only(s, payment)
        assert (blocked.kind, blocked.state) == ("split", "blocked")
        assert "over_cap" in blocked.reason
        invariants_hold(s)
    assert wx.sharings == {}
