"""Issue 6's worked examples, one per trade mode: an order of 100 x 10.00
paid from the buyer's prepaid deposit, cleared by the rule for its mode,
delivered and released; every recipient's pending and wallet balance is
checked after clearing and after release, then the ledger invariant and
the cash invariant. Together the rules use every recipient (seller, brand,
the buyer's upstream, the platform, a named party), every basis (percent,
per unit, per order, remainder) and every timing (at once, on delivery,
T+N after delivery or payment).

F2B2b2C (a store selling to consumers) is accepted by the rules but no
order has that mode: consumers are not parties of the channel."""
from __future__ import annotations

from datetime import timedelta

import pytest

import ledger
from channel_api import cash, clearing_rules, clearings, funding, network, orders
from ledger import utcnow
from tests.channel_fixtures import add_tea, build_network, engine  # noqa: F401  (fixtures)

TOTAL = 100_000    # 100 x 10.00


def leg(recipient, basis, value=0, kind="immediate", days=0, anchor="delivery"):
    timing = {"kind": kind} if kind != "t_plus" else {"kind": kind, "days": days, "anchor": anchor}
    return {"recipient": recipient, "basis": basis, "value": value, "timing": timing}


# mode: (seller, buyer, linked to an upstream order, legs, the shares by party name)
CASES = {
    "F2B": ("brand", "d1", False,
            [leg("seller", "remainder", kind="on_delivery"), leg("platform", "percent", 50)],
            {"brand": 99_500, "platform": 500}),
    "F2b": ("brand", "s1", False,
            [leg("seller", "remainder", kind="on_delivery"),
             leg("party:d1", "per_order", 500, kind="t_plus", days=1),   # the covering distributor
             leg("platform", "percent", 50)],
            {"brand": 99_000, "d1": 500, "platform": 500}),
    "B2b": ("d1", "s1", False,
            [leg("seller", "remainder", kind="on_delivery"),
             leg("brand", "percent", 750, kind="t_plus", days=2, anchor="payment"),
             leg("platform", "per_unit", 1)],
            {"d1": 92_400, "brand": 7_500, "platform": 100}),
    "F2B2b": ("d1", "s1", True,
              [leg("seller", "remainder", kind="on_delivery"),
               leg("buyer_upstream", "percent", 750, kind="t_plus", days=2),
               leg("platform", "percent", 50)],
              {"d1": 92_000, "brand": 7_500, "platform": 500}),
    "B2B": ("d1", "d2", False,
            [leg("seller", "remainder", kind="on_delivery"),
             leg("buyer_upstream", "percent", 300, kind="t_plus", days=1, anchor="payment"),
             leg("platform", "percent", 50)],
            {"d1": 96_500, "brand": 3_000, "platform": 500}),
}


def posted(s, code):
    try:
        return ledger.get_account(s, code).posted_minor
    except ledger.AccountNotFound:
        return 0


@pytest.mark.parametrize("mode", sorted(CASES))
def test_an_order_of_each_trade_mode_is_cleared_and_released_by_its_rule(
        session_factory, unique, mode):
    seller_name, buyer_name, linked, legs, shares = CASES[mode]
    net = build_network(session_factory, unique)
    c = net.codes
    seller, buyer = c[seller_name], c[buyer_name]
    code = {name: (c[name] if name != "platform" else "platform") for name in shares}
    with session_factory() as s, s.begin():
        add_tea(s, net)
        for up, down in (("brand", "s1"), ("d1", "d2")):
            network.create_relationship(s, seller=c[up], buyer=c[down], actor="t",
                                        valid_from=utcnow() - timedelta(days=1))
        clearing_rules.create_rule(
            s, code=f"{unique}-{mode}", name=mode, trade_modes=[mode], actor="brand",
            valid_from=utcnow() - timedelta(days=1),
            legs=[{**l, "recipient": (f"party:{c['d1']}" if l["recipient"] == "party:d1"
                                      else l["recipient"])} for l in legs])
        funding.confirm_deposit(s, buyer=buyer, seller=seller, amount_minor=TOTAL,
                                bank_reference=f"DEP-{unique}", actor="finance")
        order = orders.place_order(s, buyer=buyer, seller=seller, actor="buyer",
                                   lines=[{"sku": f"{unique}-a", "quantity": 100}]).public_id
        if linked:
            upstream = orders.place_order(s, buyer=seller, seller=c["brand"], actor="d1",
                                          lines=[{"sku": f"{unique}-a", "quantity": 100}])
            orders.link_orders(s, upstream=upstream.public_id, downstream=order, actor="d1")
        assert clearing_rules.explain_for_order(s, order, "prepaid").trade_mode == mode
        funding.set_payment_plan(s, order, [{"method": "prepaid", "amount_minor": TOTAL}],
                                 actor="buyer")

    def where(s):
        out = {}
        for name, account in code.items():
            if account == "platform":
                out[name] = {"revenue": posted(s, "platform:revenue")}
            else:
                out[name] = {"pending": posted(s, f"party:{account}:pending"),
                             "wallet": posted(s, f"party:{account}:wallet")}
        return out

    with session_factory() as s, s.begin():
        assert posted(s, funding.escrow_account(order)) == 0
        documents = clearings.documents(s, order=order)
        assert {("platform" if d.recipient == "platform" else
                 next(n for n, a in code.items() if a == d.recipient)): d.amount_minor
                for d in documents} == shares
        assert sum(d.amount_minor for d in documents) == TOTAL
        # Cleared: the platform's share at once; the parties' wait in pending.
        before_release = where(s)
        assert before_release["platform"]["revenue"] >= shares["platform"]
        for name in shares.keys() - {"platform"}:
            assert before_release[name]["pending"] == shares[name]
            assert before_release[name]["wallet"] == 0
        orders.ship_order(s, order, actor="seller")
        orders.confirm_receipt(s, order, actor="buyer")
        clearings.release_due(s, now=utcnow() + timedelta(days=10))
        after = where(s)
        for name in shares.keys() - {"platform"}:
            assert after[name] == {"pending": 0, "wallet": shares[name]}, name
        assert all(d.state == "released" for d in clearings.documents(s, order=order))
        assert ledger.check_ledger(s) == []
        assert cash.check_cash(s).holds
