"""Statements, balances at a past time, the trial balance, account listings."""
from __future__ import annotations

from datetime import timedelta

import pytest

from ledger import (
    InvalidEntry,
    balance_at,
    list_accounts,
    open_account,
    statement,
    trial_balance,
)
from ledger import posting as posting_module
from ledger.timeutil import utcnow
from tests.ledger_helpers import post

T0 = utcnow().replace(microsecond=0) - timedelta(days=10)


@pytest.fixture
def clock(monkeypatch):
    """Lets a test post at chosen times of record."""
    state = {"now": T0}
    monkeypatch.setattr(posting_module, "utcnow", lambda: state["now"])

    def at(days: float):
        state["now"] = T0 + timedelta(days=days)

    return at


@pytest.fixture
def history(session, clock):
    open_account(session, "cash", "Cash", "asset", "CNY")
    open_account(session, "wallet", "Wallet", "liability", "CNY", min_balance_minor=0)
    open_account(session, "hot", "Hot wallet", "liability", "CNY", balance_shards=4)
    for day, amount in [(1, 100), (2, 250), (3, 50), (4, 400), (5, 75)]:
        clock(day)
        post(session, "deposit", ("Dr", "cash", amount), ("Cr", "wallet", amount))
        post(session, "sale", ("Dr", "cash", amount), ("Cr", "hot", amount))
    clock(6)
    post(session, "spend", ("Dr", "wallet", 300), ("Cr", "cash", 300))
    return session


def test_the_balance_at_a_past_time_is_what_it_was_then(history):
    assert balance_at(history, "wallet", T0 + timedelta(days=0.5)) == 0
    assert balance_at(history, "wallet", T0 + timedelta(days=2)) == 350
    assert balance_at(history, "wallet", T0 + timedelta(days=3, hours=12)) == 400
    assert balance_at(history, "wallet", T0 + timedelta(days=7)) == 575
    assert balance_at(history, "hot", T0 + timedelta(days=4, hours=1)) == 800


def test_a_statement_has_opening_closing_and_running_balances(history):
    report = statement(history, "wallet", T0 + timedelta(days=2), T0 + timedelta(days=6))
    assert report.opening_balance_minor == 100
    assert report.closing_balance_minor == 575
    assert [(l.side.value, l.amount_minor, l.balance_after_minor) for l in report.lines] == [
        ("credit", 250, 350), ("credit", 50, 400), ("credit", 400, 800), ("credit", 75, 875),
        ("debit", 300, 575),
    ]
    assert report.next_cursor is None


def test_a_statement_pages_with_a_cursor_and_keeps_the_running_balance(history):
    start, end = T0, T0 + timedelta(days=6)
    first = statement(history, "hot", start, end, limit=2)
    second = statement(history, "hot", start, end, limit=2, cursor=first.next_cursor)
    third = statement(history, "hot", start, end, limit=2, cursor=second.next_cursor)
    running = [l.balance_after_minor for page in (first, second, third) for l in page.lines]
    assert running == [100, 350, 400, 800, 875]
    assert third.next_cursor is None
    assert third.closing_balance_minor == 875


def test_a_statement_refuses_a_cursor_it_did_not_give_out_and_an_inverted_period(history):
    with pytest.raises(InvalidEntry):
        statement(history, "wallet", T0, T0 + timedelta(days=1), cursor="not-a-cursor")
    with pytest.raises(InvalidEntry):
        statement(history, "wallet", T0 + timedelta(days=1), T0)


def _own(report):
    """This test's rows (other tests may have committed rows of their own)."""
    return {r.account: (r.debit_minor, r.credit_minor) for r in report.rows
            if r.account in ("cash", "wallet", "hot")}


def test_the_trial_balance_now_and_at_a_past_time(history):
    now = trial_balance(history)
    assert now.balanced
    assert _own(now) == {"cash": (1450, 0), "wallet": (0, 575), "hot": (0, 875)}
    then = trial_balance(history, at=T0 + timedelta(days=2))
    assert then.balanced
    assert _own(then) == {"cash": (700, 0), "wallet": (0, 350), "hot": (0, 350)}


def test_accounts_are_listed_by_code_in_pages_and_filtered(session):
    for n in range(5):
        open_account(session, f"party:p{n}:wallet", f"P{n}", "liability", "CNY", owner_party_id=f"p{n % 2}")
    open_account(session, "party_x", "Not a party wallet", "liability", "CNY")
    page, cursor = list_accounts(session, code_prefix="party:", limit=3)
    assert [a.code for a in page] == ["party:p0:wallet", "party:p1:wallet", "party:p2:wallet"]
    rest, end = list_accounts(session, code_prefix="party:", after=cursor, limit=3)
    assert [a.code for a in rest] == ["party:p3:wallet", "party:p4:wallet"] and end is None
    owned, _ = list_accounts(session, owner_party_id="p1")
    assert [a.code for a in owned] == ["party:p1:wallet", "party:p3:wallet"]
    # "_" in a prefix is a literal, not a LIKE wildcard
    assert [a.code for a in list_accounts(session, code_prefix="party_")[0]] == ["party_x"]
