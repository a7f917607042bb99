"""Interest the custody account earned (issue 6): allocated by a rule, the
platform's share in basis points and the rest in proportion to each party's
wallet at the period's end; the shares add up to the interest to the fen,
once per bank reference, with the ledger and the cash invariant holding."""
from __future__ import annotations

from datetime import timedelta
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ledger
from channel_api import books, interest, settlements
from channel_api.errors import InvalidInput
from clearing.interest import allocate
from ledger import utcnow
from tests.channel_fixtures import build_network, client, engine  # noqa: F401  (fixtures)
from tests.test_channel_clearings import posted, shop  # noqa: F401  (fixture)
from tests.test_payouts import holds, paid  # noqa: F401  (fixture)

balances = st.dictionaries(st.text("ABCDEFGH", min_size=1, max_size=3),
                           st.integers(-10**9, 10**12), max_size=12)


@given(st.integers(0, 10**12), balances, st.integers(0, 10_000))
def test_allocate_adds_up_and_each_share_is_within_a_fen_of_its_proportion(amount, weights, bp):
    platform, shares = allocate(amount, weights, bp)
    assert platform + sum(shares.values()) == amount
    positive = {p: w for p, w in weights.items() if w > 0}
    if not positive:
        assert (platform, shares) == (amount, {})
        return
    assert platform == amount * bp // 10_000
    rest, total = amount - platform, sum(positive.values())
    assert set(shares) <= set(positive)
    for party, weight in positive.items():
        exact = Fraction(rest * weight, total)
        assert exact - 1 < shares.get(party, 0) < exact + 1


def test_allocate_gives_the_leftover_fen_to_the_largest_fractions_then_by_code():
    # 100 fen over 1:1:1 = 33.33 each: one fen is left, the first code gets it.
    assert allocate(100, {"B": 5, "A": 5, "C": 5}, 0) == (0, {"A": 34, "B": 33, "C": 33})
    # 10 fen over 3:7 after the platform's 10 % (1 fen): 2.7 and 6.3 -> 3 and 6.
    assert allocate(10, {"X": 3, "Y": 7}, 1_000) == (1, {"X": 3, "Y": 6})
    # A party whose share rounds to nothing is left out.
    assert allocate(1, {"big": 10**9, "small": 1}, 0) == (0, {"big": 1})


@pytest.mark.parametrize("amount, bp", [(-1, 0), (1.5, 0), (10, -1), (10, 10_001), (10, 0.5)])
def test_allocate_refuses_what_is_not_an_amount_or_a_share(amount, bp):
    with pytest.raises(ValueError):
        allocate(amount, {"A": 1}, bp)


def _fund_wallet(s, party, amount):
    books.ensure(s, books.wallet_account(party), "wallet", "liability", "CNY", owner=party,
                 min_balance=0)
    ledger.post_entry(s, ledger.EntryRequest(code="test.fund", postings=[
        ledger.PostingLine(books.CUSTODY, "debit", amount, "CNY"),
        ledger.PostingLine(books.wallet_account(party), "credit", amount, "CNY")]))


def test_interest_goes_to_the_platform_and_the_wallets_in_proportion(paid):
    s = paid                                         # D's wallet: 92,000
    _fund_wallet(s, "B", 8_000)                      # B's wallet: 8,000 (its pending is not weighed)
    day = utcnow().astimezone(settlements.BUSINESS_TZ).date()
    after = settlements.day_bounds(day)[1] + timedelta(minutes=1)
    before = {code: posted(s, code) for code in (
        "custody:bank", "party:D:wallet", "party:B:wallet", "party:B:pending", "platform:revenue")}

    made = interest.allocate_interest(s, amount_minor=1_001, period_end=day,
                                      bank_reference_="INT-2026-11", platform_share_bp=1_000,
                                      actor="brand-finance", now=after)
    # The platform keeps 100 (10 %, down to the fen); 901 over 92:8 = 828.92 and 72.08.
    assert (made.platform_minor, made.parties, made.parties_minor) == (100, 2, 901)
    after_ = {code: posted(s, code) for code in before}
    assert {code: after_[code] - before[code] for code in before} == {
        "custody:bank": 1_001, "party:D:wallet": 829, "party:B:wallet": 72,
        "party:B:pending": 0, "platform:revenue": 100}
    holds(s)

    # The same bank reference again: the first allocation, nothing posted twice.
    assert interest.allocate_interest(s, amount_minor=1_001, period_end=day,
                                      bank_reference_="INT-2026-11", platform_share_bp=1_000,
                                      actor="brand-finance", now=after) == made
    assert posted(s, "custody:bank") == after_["custody:bank"]
    with pytest.raises(InvalidInput) as other:
        interest.allocate_interest(s, amount_minor=999, period_end=day,
                                   bank_reference_="INT-2026-11", platform_share_bp=1_000,
                                   actor="brand-finance", now=after)
    assert other.value.details["field"] == "bank_reference"
    assert [a.public_id for a in interest.list_allocations(s)] == [made.public_id]


@pytest.mark.parametrize("change, field", [
    ({"amount_minor": 0}, "amount_minor"),
    ({"amount_minor": 10.5}, "amount_minor"),
    ({"platform_share_bp": 10_001}, "platform_share_bp"),
    ({"platform_share_bp": True}, "platform_share_bp"),
    ({"bank_reference_": ""}, "bank_reference"),
    ({"period_end": "today"}, "period_end"),
])
def test_bad_allocations_are_refused_and_nothing_is_posted(paid, change, field):
    s = paid
    day = utcnow().astimezone(settlements.BUSINESS_TZ).date()
    args = {"amount_minor": 500, "period_end": day, "bank_reference_": "INT-X",
            "platform_share_bp": 0, "actor": "t",
            "now": settlements.day_bounds(day)[1] + timedelta(minutes=1)}
    if change.get("period_end") == "today":          # a period that is not over yet
        change = {"now": utcnow()}
    custody = posted(s, "custody:bank")
    with pytest.raises(InvalidInput) as refused:
        interest.allocate_interest(s, **{**args, **change})
    assert refused.value.details["field"] == field
    assert posted(s, "custody:bank") == custody and interest.list_allocations(s) == []


def test_finance_allocates_interest_over_http_and_others_may_not(client, session_factory, unique):
    net = build_network(session_factory, unique)
    c = net.codes
    from channel_api import keys
    with session_factory() as s, s.begin():
        net.tokens["brand-finance"] = keys.create_api_key(
            s, party=c["brand"], scopes=["finance"], actor="test").token
        books.ensure(s, books.CUSTODY, "custody", "asset", "CNY")
        _fund_wallet(s, c["d1"], 3_000)
        _fund_wallet(s, c["d2"], 1_000)
    yesterday = utcnow().astimezone(settlements.BUSINESS_TZ).date() - timedelta(days=1)
    body = {"amount_minor": 400, "period_end": str(yesterday), "bank_reference": "INT-HTTP",
            "platform_share_bp": 0}
    # The wallets were funded today: at yesterday's end they held nothing,
    # so the platform keeps the whole interest.
    made = client.post("/v1/interest-allocations", headers=net.auth("brand-finance"), json=body)
    assert made.status_code == 201, made.json
    assert (made.json["platform_minor"], made.json["parties"]) == (400, 0)
    assert client.post("/v1/interest-allocations", headers=net.auth("d1"),
                       json={**body, "bank_reference": "INT-D1"}).status_code == 403
    bad = client.post("/v1/interest-allocations", headers=net.auth("brand-finance"),
                      json={**body, "bank_reference": "INT-2", "platform_share_bp": 20_000})
    assert bad.status_code == 422 and bad.json["details"]["field"] == "platform_share_bp"
    listed = client.get("/v1/interest-allocations", headers=net.auth("brand-finance")).json
    assert [a["bank_reference"] for a in listed["items"]] == ["INT-HTTP"]
    assert client.get("/v1/interest-allocations", headers=net.auth("d2")).status_code == 403
