"""Worked examples: each money flow of docs/accounting.md that the ledger
alone can express, written as the journal a bookkeeper would write.

The cast: a brand ``brand`` sells to distributor ``dist``; the gateway is
``wechat``; amounts are in fen (1 CNY = 100 fen).
"""
from __future__ import annotations

from datetime import timedelta

import pytest

from ledger import (
    AccountType,
    InsufficientFunds,
    LimitExceeded,
    check_ledger,
    get_entry,
    open_account,
    post_pending,
    reverse_entry,
    trial_balance,
    void_expired_pending,
    void_pending,
)
from ledger.timeutil import utcnow
from tests.ledger_helpers import CNY, balance, lines, post
from ledger import EntryRequest, post_entry

ASSET, LIABILITY, REVENUE, EXPENSE = (
    AccountType.ASSET, AccountType.LIABILITY, AccountType.REVENUE, AccountType.EXPENSE,
)


@pytest.fixture
def books(session):
    """The chart of accounts of docs/accounting.md for one brand, one distributor."""
    chart = [
        ("custody:bank", ASSET, {}),
        ("gateway:wechat:receivable", ASSET, {}),
        ("gateway:wechat:fees", EXPENSE, {}),
        ("payouts:in_flight", LIABILITY, {}),
        ("suspense", LIABILITY, {}),
        ("platform:revenue", REVENUE, {}),
        ("prepaid:dist@brand", LIABILITY, {"min_balance_minor": 0}),
        ("rebate:dist@brand", LIABILITY, {"min_balance_minor": 0}),
        ("party:brand:rebates_granted", ASSET, {}),
        ("credit:dist@brand", ASSET, {"min_balance_minor": 0, "max_balance_minor": 50_000_00}),
        ("party:brand:credit_issued", LIABILITY, {}),
        ("order:o1:escrow", LIABILITY, {"min_balance_minor": 0}),
        ("party:brand:pending", LIABILITY, {"min_balance_minor": 0}),
        ("party:brand:wallet", LIABILITY, {"min_balance_minor": 0, "balance_shards": 4}),
        ("party:dist:pending", LIABILITY, {"min_balance_minor": 0}),
        ("party:dist:wallet", LIABILITY, {"min_balance_minor": 0}),
    ]
    for code, type_, options in chart:
        open_account(session, code, code, type_, CNY, **options)
    return session


def cash_invariant_holds(session) -> bool:
    """Cash assets = cash liabilities + the platform's own result."""
    assets = balance(session, "custody:bank") + balance(session, "gateway:wechat:receivable")
    liabilities = sum(
        balance(session, code)
        for code in ("payouts:in_flight", "suspense", "prepaid:dist@brand", "order:o1:escrow",
                     "party:brand:pending", "party:brand:wallet", "party:dist:pending",
                     "party:dist:wallet")
    )
    result = balance(session, "platform:revenue") - balance(session, "gateway:wechat:fees")
    return assets == liabilities + result


def claims_net_to_zero(session) -> bool:
    return (
        balance(session, "credit:dist@brand") == balance(session, "party:brand:credit_issued")
        and balance(session, "rebate:dist@brand") == balance(session, "party:brand:rebates_granted")
    )


def test_a_deposit_by_gateway_is_owed_by_the_gateway_until_it_settles(books):
    post(books, "deposit", ("Dr", "gateway:wechat:receivable", 1_000_00), ("Cr", "prepaid:dist@brand", 1_000_00))
    assert balance(books, "prepaid:dist@brand") == 1_000_00
    assert balance(books, "gateway:wechat:receivable") == 1_000_00

    # The gateway's daily bill: it pays the net into custody and keeps 0.6% as its fee.
    post(books, "gateway_settlement",
         ("Dr", "custody:bank", 994_00), ("Dr", "gateway:wechat:fees", 6_00),
         ("Cr", "gateway:wechat:receivable", 1_000_00))
    assert balance(books, "gateway:wechat:receivable") == 0
    assert balance(books, "custody:bank") == 994_00
    assert cash_invariant_holds(books)
    assert check_ledger(books) == []


def test_an_offline_transfer_deposit_lands_in_custody_when_finance_confirms_it(books):
    post(books, "deposit", ("Dr", "custody:bank", 5_000_00), ("Cr", "prepaid:dist@brand", 5_000_00))
    assert balance(books, "custody:bank") == balance(books, "prepaid:dist@brand") == 5_000_00
    assert cash_invariant_holds(books)


def test_an_order_reserves_each_source_at_once_and_captures_them_when_funded(books):
    post(books, "deposit", ("Dr", "custody:bank", 600_00), ("Cr", "prepaid:dist@brand", 600_00))
    post(books, "rebate_issued", ("Dr", "party:brand:rebates_granted", 100_00), ("Cr", "rebate:dist@brand", 100_00))

    # A 1,000.00 order: 600 from prepaid, 100 rebate, 300 on credit, all reserved at once.
    prepaid = post(books, "order_reserve", ("Dr", "prepaid:dist@brand", 600_00), ("Cr", "order:o1:escrow", 600_00), pending=True)
    rebate = post(books, "order_reserve", ("Dr", "rebate:dist@brand", 100_00), ("Cr", "party:brand:rebates_granted", 100_00), pending=True)
    credit = post(books, "order_reserve", ("Dr", "credit:dist@brand", 300_00), ("Cr", "party:brand:credit_issued", 300_00), pending=True)

    from ledger import get_account
    deposit = get_account(books, "prepaid:dist@brand")
    assert (deposit.posted_minor, deposit.available_minor) == (600_00, 0)
    with pytest.raises(InsufficientFunds):  # the reservation already holds the deposit
        post(books, "order_reserve", ("Dr", "prepaid:dist@brand", 1), ("Cr", "order:o1:escrow", 1))

    for pending in (prepaid, rebate, credit):
        post_pending(books, pending.id)
    assert balance(books, "order:o1:escrow") == 600_00  # only the cash part reaches escrow
    assert balance(books, "prepaid:dist@brand") == 0
    assert balance(books, "rebate:dist@brand") == 0
    assert balance(books, "credit:dist@brand") == 300_00  # what dist owes brand
    assert get_entry(books, prepaid.id).status == "posted"
    assert claims_net_to_zero(books)
    assert cash_invariant_holds(books)
    assert check_ledger(books) == []


def test_clearing_splits_the_escrow_and_release_moves_it_to_the_wallet(books):
    post(books, "deposit", ("Dr", "custody:bank", 1_000_00), ("Cr", "prepaid:dist@brand", 1_000_00))
    post(books, "order_capture", ("Dr", "prepaid:dist@brand", 1_000_00), ("Cr", "order:o1:escrow", 1_000_00))
    post(books, "clearing",
         ("Dr", "order:o1:escrow", 1_000_00),
         ("Cr", "party:dist:pending", 920_00),
         ("Cr", "party:brand:pending", 75_00),
         ("Cr", "platform:revenue", 5_00))
    assert balance(books, "order:o1:escrow") == 0
    post(books, "release", ("Dr", "party:dist:pending", 920_00), ("Cr", "party:dist:wallet", 920_00))
    post(books, "release", ("Dr", "party:brand:pending", 75_00), ("Cr", "party:brand:wallet", 75_00))
    assert balance(books, "party:dist:wallet") == 920_00
    assert balance(books, "party:brand:wallet") == 75_00
    assert balance(books, "platform:revenue") == 5_00
    assert cash_invariant_holds(books)
    assert check_ledger(books) == []


def test_a_credit_line_is_bounded_by_its_limit_and_restored_by_repayment(books):
    post(books, "order_capture", ("Dr", "credit:dist@brand", 50_000_00), ("Cr", "party:brand:credit_issued", 50_000_00))
    with pytest.raises(LimitExceeded):
        post(books, "order_capture", ("Dr", "credit:dist@brand", 1), ("Cr", "party:brand:credit_issued", 1))

    # dist repays 20,000 by bank transfer: cash into the order's escrow, the line restored.
    post(books, "credit_repayment", ("Dr", "custody:bank", 20_000_00), ("Cr", "order:o1:escrow", 20_000_00))
    post(books, "credit_restore", ("Dr", "party:brand:credit_issued", 20_000_00), ("Cr", "credit:dist@brand", 20_000_00))
    assert balance(books, "credit:dist@brand") == 30_000_00
    assert balance(books, "order:o1:escrow") == 20_000_00
    assert claims_net_to_zero(books)
    assert cash_invariant_holds(books)


def test_a_payout_is_in_flight_until_the_bank_confirms_and_a_failure_is_reversed(books):
    post(books, "deposit", ("Dr", "custody:bank", 500_00), ("Cr", "party:dist:wallet", 500_00))
    sent = post(books, "payout", ("Dr", "party:dist:wallet", 300_00), ("Cr", "payouts:in_flight", 300_00))
    assert balance(books, "payouts:in_flight") == 300_00
    post(books, "payout_confirmed", ("Dr", "payouts:in_flight", 200_00), ("Cr", "custody:bank", 200_00))
    # A second payout fails at the bank: its entry is reversed, the money is back.
    failed = post(books, "payout", ("Dr", "party:dist:wallet", 100_00), ("Cr", "payouts:in_flight", 100_00))
    reversal = reverse_entry(books, failed.id)
    assert reversal.reverses_id == failed.id
    assert get_entry(books, failed.id).status == "reversed"
    assert balance(books, "party:dist:wallet") == 200_00
    assert balance(books, "payouts:in_flight") == 100_00  # the first payout's unconfirmed rest
    assert sent.status == "posted"
    assert cash_invariant_holds(books)
    assert check_ledger(books) == []


def test_unexplained_money_waits_in_suspense_until_finance_resolves_it(books):
    post(books, "unexplained", ("Dr", "gateway:wechat:receivable", 88_00), ("Cr", "suspense", 88_00))
    assert cash_invariant_holds(books)
    post(books, "suspense_resolved", ("Dr", "suspense", 88_00), ("Cr", "prepaid:dist@brand", 88_00))
    assert balance(books, "suspense") == 0
    assert balance(books, "prepaid:dist@brand") == 88_00
    assert cash_invariant_holds(books)


def test_an_order_cancelled_before_capture_releases_its_reservations(books):
    post(books, "deposit", ("Dr", "custody:bank", 100_00), ("Cr", "prepaid:dist@brand", 100_00))
    hold = post(books, "order_reserve", ("Dr", "prepaid:dist@brand", 100_00), ("Cr", "order:o1:escrow", 100_00), pending=True)
    void_pending(books, hold.id, reason="order cancelled")
    from ledger import get_account
    deposit = get_account(books, "prepaid:dist@brand")
    assert (deposit.posted_minor, deposit.available_minor) == (100_00, 100_00)
    assert get_entry(books, hold.id).status == "voided"


def test_an_expired_hold_is_voided_by_the_expiry_job(books):
    post(books, "deposit", ("Dr", "custody:bank", 100_00), ("Cr", "prepaid:dist@brand", 100_00))
    hold = post_entry(books, EntryRequest(
        "order_reserve", lines(("Dr", "prepaid:dist@brand", 40_00), ("Cr", "order:o1:escrow", 40_00)),
        pending=True, expires_at=utcnow() + timedelta(minutes=30)))
    assert void_expired_pending(books) == 0  # not yet
    assert void_expired_pending(books, now=utcnow() + timedelta(hours=1)) == 1
    assert get_entry(books, hold.id).status == "expired"
    from ledger import get_account
    assert get_account(books, "prepaid:dist@brand").available_minor == 100_00
    assert check_ledger(books) == []


def test_a_refund_returns_each_funding_part_to_its_source(books):
    post(books, "deposit", ("Dr", "custody:bank", 700_00), ("Cr", "prepaid:dist@brand", 700_00))
    post(books, "rebate_issued", ("Dr", "party:brand:rebates_granted", 300_00), ("Cr", "rebate:dist@brand", 300_00))
    capture = post(books, "order_capture",
                   ("Dr", "prepaid:dist@brand", 700_00), ("Cr", "order:o1:escrow", 700_00),
                   ("Dr", "rebate:dist@brand", 300_00), ("Cr", "party:brand:rebates_granted", 300_00))
    reverse_entry(books, capture.id, description="order refunded before clearing")
    assert balance(books, "prepaid:dist@brand") == 700_00
    assert balance(books, "rebate:dist@brand") == 300_00
    assert balance(books, "order:o1:escrow") == 0
    assert claims_net_to_zero(books)
    assert cash_invariant_holds(books)


def test_the_trial_balance_of_a_day_of_business_balances(books):
    # Other tests' committed books share the database: compare with before.
    debits, credits = trial_balance(books).totals.get(CNY, (0, 0))
    post(books, "deposit", ("Dr", "gateway:wechat:receivable", 1_000_00), ("Cr", "prepaid:dist@brand", 1_000_00))
    post(books, "order_capture", ("Dr", "prepaid:dist@brand", 800_00), ("Cr", "order:o1:escrow", 800_00))
    post(books, "clearing", ("Dr", "order:o1:escrow", 800_00), ("Cr", "party:brand:pending", 796_00), ("Cr", "platform:revenue", 4_00))
    report = trial_balance(books)
    assert report.balanced
    assert report.totals[CNY] == (debits + 1_000_00, credits + 1_000_00)
    rows = {row.account: row for row in report.rows}
    assert rows["gateway:wechat:receivable"].debit_minor == 1_000_00
    assert rows["party:brand:pending"].credit_minor == 796_00
