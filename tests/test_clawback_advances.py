"""A refund after release whose clawback a wallet cannot give back (the
distributor paid its share out): stopped with ``clawback_blocked`` naming
who is short and by how much, nothing written; finance advances the
difference (the platform stands behind it), the refund goes through, and
the advance is recovered from the wallet as money arrives and before any
payout. The ledger and the cash invariant hold after each step."""
from __future__ import annotations

from datetime import timedelta

import pytest

import ledger
from channel_api import clawback_advances, clearings, funding, orders, payouts, returns
from channel_api.errors import InvalidInput, PayoutRefused
from ledger import utcnow
from tests.channel_fixtures import build_network, client, engine  # noqa: F401  (fixtures)
from tests.test_channel_clearings import pay, posted, shop  # noqa: F401  (fixture)
from tests.test_payouts import bank, clock, holds, register, request  # noqa: F401  (fixtures)


def delivered_and_released(s, quantity):
    order = pay(s, quantity=quantity)
    orders.ship_order(s, order, actor="dist")
    orders.confirm_receipt(s, order, actor="store")
    clearings.release_due(s, now=utcnow() + timedelta(minutes=1))
    return order


@pytest.fixture
def paid_out(shop, bank, clock):
    """D was released 9,200 of a 100.00 order and paid all of it out."""
    s = shop
    funding.confirm_deposit(s, buyer="S", seller="D", amount_minor=40_000,
                            bank_reference="DEP", actor="t")
    order = delivered_and_released(s, 10)
    register(s)
    request(s, 9_200, key="all")
    payouts.send_payouts(s, bank)
    clock.now += timedelta(minutes=6)
    assert payouts.poll_sent(s, bank).applied == 1
    assert posted(s, "party:D:wallet") == 0
    return s, order


def test_a_blocked_clawback_is_advanced_the_refund_goes_through_and_it_is_recovered(paid_out):
    s, order = paid_out
    ret = returns.request_return(s, order, lines=[{"line_no": 1, "quantity": 5}], reason="broken",
                                 actor="store")
    prepaid = posted(s, "prepaid:S@D")
    with pytest.raises(clearings.ClawbackBlocked) as blocked:
        with s.begin_nested():
            returns.approve_return(s, ret.public_id, actor="dist")
    # 50.00 back: 92 % of it from D's wallet, which holds nothing now.
    assert blocked.value.details["shortfalls"] == [
        {"party": "D", "needed_minor": 4_600, "available_minor": 0, "short_minor": 4_600}]
    assert "D is short 4600" in str(blocked.value)
    assert returns.get_return(s, ret.public_id).state == "requested"
    assert posted(s, "prepaid:S@D") == prepaid
    holds(s)

    revenue = posted(s, "platform:revenue")
    made = clawback_advances.advance(s, order=order, party="D", amount_minor=4_600,
                                     reason="D paid out before the return", request_key="adv-1",
                                     actor="brand-finance")
    assert (made.outstanding_minor, made.recovered_minor, made.approved_by) == (
        4_600, 0, "brand-finance")
    assert (posted(s, "party:D:wallet"), posted(s, "party:D:clawback_due")) == (4_600, 4_600)
    holds(s)                           # the platform's result stands behind the advance
    assert clawback_advances.advance(s, order=order, party="D", amount_minor=4_600,
                                     reason="D paid out before the return", request_key="adv-1",
                                     actor="brand-finance") == made

    returns.approve_return(s, ret.public_id, actor="dist")
    assert posted(s, "prepaid:S@D") == prepaid + 5_000
    assert posted(s, "party:D:wallet") == 0
    assert posted(s, "platform:revenue") == revenue - 25
    holds(s)

    # Money arrives in D's wallet: a payout first pays the debt back.
    funding.confirm_deposit(s, buyer="S", seller="D", amount_minor=10_000,
                            bank_reference="DEP-2", actor="t")
    delivered_and_released(s, 5)                         # 4,600 more to D's wallet
    assert posted(s, "party:D:wallet") == 4_600
    with pytest.raises(PayoutRefused):
        with s.begin_nested():
            request(s, 1_000, key="after")
    assert clawback_advances.recover(s) == 4_600   # (the refused payout's recovery rolled back)
    assert (posted(s, "party:D:wallet"), posted(s, "party:D:clawback_due")) == (0, 0)
    done = clawback_advances.get_advance(s, made.public_id)
    assert (done.outstanding_minor, done.recovered_at is not None) == (0, True)
    assert clawback_advances.recover(s) == 0                 # a rerun takes nothing
    holds(s)


def test_recovery_takes_what_the_wallet_has_oldest_advance_first(paid_out):
    s, order = paid_out
    first = clawback_advances.advance(s, order=order, party="D", amount_minor=3_000,
                                      reason="first", request_key="a", actor="f")
    second = clawback_advances.advance(s, order=order, party="D", amount_minor=2_000,
                                       reason="second", request_key="b", actor="f")
    # Both advances sit in the wallet, unused: recovery takes them straight back.
    assert clawback_advances.recover(s, party="D") == 5_000
    ledger.post_entry(s, ledger.EntryRequest(code="test.fund", postings=[
        ledger.PostingLine("custody:bank", "debit", 1_000, "CNY"),
        ledger.PostingLine("party:D:wallet", "credit", 1_000, "CNY")]))
    third = clawback_advances.advance(s, order=order, party="D", amount_minor=4_200,
                                      reason="third", request_key="c", actor="f")
    with s.begin_nested():                                   # spend the advance elsewhere
        ledger.post_entry(s, ledger.EntryRequest(code="test.spend", postings=[
            ledger.PostingLine("party:D:wallet", "debit", 5_000, "CNY"),
            ledger.PostingLine("custody:bank", "credit", 5_000, "CNY")]))
    ledger.post_entry(s, ledger.EntryRequest(code="test.fund", postings=[
        ledger.PostingLine("custody:bank", "debit", 3_000, "CNY"),
        ledger.PostingLine("party:D:wallet", "credit", 3_000, "CNY")]))
    assert clawback_advances.recover(s) == 3_200                  # 200 left + 3,000 arrived
    views = {v.public_id: v for v in clawback_advances.list_advances(s, party="D")[0]}
    assert [views[a.public_id].outstanding_minor for a in (first, second, third)] == [0, 0, 1_000]
    outstanding, _ = clawback_advances.list_advances(s, outstanding=True)
    assert [v.public_id for v in outstanding] == [third.public_id]
    # Pages of two, newest first, the cursor being the last id seen.
    first_page, cursor = clawback_advances.list_advances(s, limit=2)
    assert [v.public_id for v in first_page] == [third.public_id, second.public_id]
    assert clawback_advances.list_advances(s, limit=2, after=cursor) == (
        [clawback_advances.get_advance(s, first.public_id)], None)
    for bad, field in (({"after": "cba_nope"}, "after"), ({"limit": 0}, "limit")):
        with pytest.raises(InvalidInput) as refused:
            clawback_advances.list_advances(s, **bad)
        assert refused.value.details["field"] == field
    holds(s)


@pytest.mark.parametrize("change, field", [
    ({"amount_minor": 9_201}, "amount_minor"),      # more than was ever released to D
    ({"amount_minor": 0}, "amount_minor"),
    ({"party": "B"}, "party"),                       # B's leg is still pending: nothing released
    ({"reason": " "}, "reason"),
    ({"request_key": ""}, "request_key"),
])
def test_advances_beyond_what_was_released_or_without_a_reason_are_refused(paid_out, change, field):
    s, order = paid_out
    args = {"order": order, "party": "D", "amount_minor": 100, "reason": "r",
            "request_key": "k", "actor": "f"}
    with pytest.raises(InvalidInput) as refused:
        clawback_advances.advance(s, **{**args, **change})
    assert refused.value.details["field"] == field
    assert posted(s, "party:D:clawback_due") == 0 and clawback_advances.list_advances(s)[0] == []


def test_a_request_key_reused_for_another_advance_is_refused(paid_out):
    s, order = paid_out
    clawback_advances.advance(s, order=order, party="D", amount_minor=100, reason="r",
                              request_key="k", actor="f")
    with pytest.raises(InvalidInput) as reused:
        clawback_advances.advance(s, order=order, party="D", amount_minor=200, reason="r",
                                  request_key="k", actor="f")
    assert reused.value.details["field"] == "request_key"
    # Advances over all requests stay within what was released (9,200).
    clawback_advances.advance(s, order=order, party="D", amount_minor=9_100, reason="r",
                              request_key="k2", actor="f")
    with pytest.raises(InvalidInput):
        clawback_advances.advance(s, order=order, party="D", amount_minor=1, reason="r",
                                  request_key="k3", actor="f")


def test_only_brand_finance_advances_over_http_and_a_party_lists_its_own(client, session_factory,
                                                                        unique):
    from channel_api import keys

    net = build_network(session_factory, unique)
    with session_factory() as s, s.begin():
        net.tokens["brand-finance"] = keys.create_api_key(
            s, party=net.codes["brand"], scopes=["finance"], actor="test").token
    body = {"order": "ord_nothing", "party": net.codes["d1"], "amount_minor": 100, "reason": "r"}
    brand = net.auth("brand-finance")
    assert client.post("/v1/clawback-advances", json=body,
                       headers={**net.auth("d1"), "Idempotency-Key": "x"}).status_code == 403
    keyless = client.post("/v1/clawback-advances", json=body, headers=brand)
    assert keyless.status_code == 422 and keyless.json["details"]["field"] == "Idempotency-Key"
    unknown = client.post("/v1/clawback-advances", json=body,
                          headers={**brand, "Idempotency-Key": "x"})
    assert unknown.status_code == 404 and unknown.json["code"] == "order_not_found"
    assert client.get("/v1/clawback-advances", headers=net.auth("d1")).json == {
        "items": [], "next_cursor": None}
    assert client.get(f"/v1/clawback-advances?party={net.codes['d1']}",
                      headers=net.auth("d2")).status_code == 403
