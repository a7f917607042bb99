"""The cash invariant and the claim pairs, checked by the service over real
flows, and a break of each found (docs/accounting.md, rule 6)."""
from __future__ import annotations

import ledger
from channel_api import cash, credit, funding, orders, returns
from ledger import EntryRequest, PostingLine
from tests.channel_fixtures import engine  # noqa: F401  (a database of its own: exact sums)
from tests.test_channel_funding import build


def test_the_invariant_holds_through_the_flows_and_a_break_is_found(session):
    s = session
    build(s)
    funding.set_rebate_rule(s, "D", max_percent_bp=10_000, max_amount_minor=None, actor="t")
    funding.grant_rebate(s, buyer="S", seller="D", amount_minor=500, reference="RB",
                         reason="q", actor="t")
    funding.confirm_deposit(s, buyer="S", seller="D", amount_minor=3_000,
                            bank_reference="DEP", actor="t")
    credit.set_credit_line(s, seller="D", buyer="S", limit_minor=5_000, actor="t")
    order = orders.place_order(s, buyer="S", seller="D", actor="store",
                               lines=[{"sku": "g1", "quantity": 4}]).public_id
    funding.set_payment_plan(s, order, [{"method": "rebate", "amount_minor": 500},
                                        {"method": "prepaid", "amount_minor": 1_500},
                                        {"method": "credit", "amount_minor": 2_000}], actor="t")
    orders.ship_order(s, order, actor="t")
    orders.confirm_receipt(s, order, actor="t")
    credit.repay_credit(s, buyer="S", seller="D", amount_minor=1_000, bank_reference="RP",
                        actor="t")
    ret = returns.request_return(s, order, lines=[{"line_no": 1, "quantity": 1}], reason="x",
                                 actor="t")
    returns.approve_return(s, ret.public_id, actor="t")
    check = cash.check_cash(s)
    assert check.holds, check
    [cny] = check.positions
    # Custody holds the deposit and the repayment: 3,000 + 1,000.
    assert (cny.currency, cny.assets_minor, cny.difference_minor) == ("CNY", 4_000, 0)

    # Cash that appears from nowhere breaks the invariant...
    ledger.open_account(s, "equity:test", "Test equity", "equity", "CNY")
    ledger.post_entry(s, EntryRequest(code="test.break", postings=[
        PostingLine("custody:bank", "debit", 7, "CNY"),
        PostingLine("equity:test", "credit", 7, "CNY")]))
    assert cash.check_cash(s).positions[0].difference_minor == 7
    # ...and credit booked against something else breaks its pair.
    ledger.post_entry(s, EntryRequest(code="test.break", postings=[
        PostingLine(credit.credit_account("S", "D"), "debit", 3, "CNY"),
        PostingLine("equity:test", "credit", 3, "CNY")]))
    [mismatch] = cash.check_cash(s).claims
    assert (mismatch.seller, mismatch.kind, mismatch.buyers_minor - mismatch.memo_minor) == (
        "D", "credit", 3)


def test_the_daily_job_logs_a_break_as_an_error(session_factory, caplog):
    from service import scheduler

    assert scheduler.check_cash_invariant(session_factory) is True
    with session_factory() as s, s.begin():
        ledger.open_account(s, "custody:bank", "Custody", "asset", "CNY")
        ledger.open_account(s, "equity:job", "Equity", "equity", "CNY")
        ledger.post_entry(s, EntryRequest(code="test.break", postings=[
            PostingLine("custody:bank", "debit", 11, "CNY"),
            PostingLine("equity:job", "credit", 11, "CNY")]))
    with caplog.at_level("ERROR", logger="service.scheduler"):
        assert scheduler.check_cash_invariant(session_factory) is False
    assert any("difference 11" in r.getMessage() for r in caplog.records)
