"""``ledger.ensure_accounts``: accounts opened on first use in one insert,
an account already open used as it is, bad attributes refused with nothing
written, and two transactions opening the same account at once ending with
one account and no error (PostgreSQL)."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

import ledger
from ledger import AccountSpec, EntryRequest, InvalidAccount, PostingLine, ensure_accounts
from ledger.locking import _cache_for
from ledger.models import Account, Balance

CNY = "CNY"


def _balance_rows(session, code: str) -> int:
    return session.scalar(select(func.count()).select_from(Balance).join(
        Account, Account.id == Balance.account_id).where(Account.code == code))


def test_opens_the_missing_ones_and_returns_their_codes(session, unique):
    ledger.open_account(session, f"{unique}:old", "Old name", "asset", CNY)
    opened = ensure_accounts(session, [
        AccountSpec(f"{unique}:old", "Another name", "liability", CNY),
        AccountSpec(f"{unique}:hot", "Hot", "liability", CNY, owner_party_id="P",
                    min_balance_minor=0, balance_shards=4),
        AccountSpec(f"{unique}:new", "New", "asset", CNY),
    ])
    assert opened == [f"{unique}:hot", f"{unique}:new"]
    old = ledger.get_account(session, f"{unique}:old")
    assert (old.name, old.type.value) == ("Old name", "asset")  # used as it is
    hot = ledger.get_account(session, f"{unique}:hot")
    assert (hot.owner_party_id, hot.min_balance_minor, hot.balance_shards,
            hot.normal_side.value) == ("P", 0, 4, "credit")
    assert _balance_rows(session, f"{unique}:hot") == 4
    assert _balance_rows(session, f"{unique}:new") == 1
    # Again: nothing to open.
    assert ensure_accounts(session, [AccountSpec(f"{unique}:new", "New", "asset", CNY)]) == []


def test_an_account_just_opened_takes_an_entry_at_once(session, unique):
    ensure_accounts(session, [AccountSpec(f"{unique}:cash", "Cash", "asset", CNY),
                              AccountSpec(f"{unique}:wallet", "Wallet", "liability", CNY,
                                          min_balance_minor=0)])
    assert f"{unique}:cash" in _cache_for(session)  # its shape is known: no look-up
    ledger.post_entry(session, EntryRequest(code="t", postings=[
        PostingLine(f"{unique}:cash", "debit", 70, CNY),
        PostingLine(f"{unique}:wallet", "credit", 70, CNY)]))
    assert ledger.get_account(session, f"{unique}:wallet").posted_minor == 70
    with pytest.raises(ledger.InsufficientFunds):
        ledger.post_entry(session, EntryRequest(code="t", postings=[
            PostingLine(f"{unique}:wallet", "debit", 71, CNY),
            PostingLine(f"{unique}:cash", "credit", 71, CNY)]))


@pytest.mark.parametrize("spec, field", [
    (dict(type="cash"), "type"),
    (dict(currency="yuan"), "currency"),
    (dict(code="bad code!"), "code"),
    (dict(min_balance_minor=5, max_balance_minor=1), "min_balance_minor"),
    (dict(balance_shards=0), "balance_shards"),
])
def test_bad_attributes_are_refused_and_nothing_is_opened(session, unique, spec, field):
    good = AccountSpec(f"{unique}:good", "Good", "asset", CNY)
    bad = dict(code=f"{unique}:bad", name="Bad", type="asset", currency=CNY) | spec
    with pytest.raises(InvalidAccount) as refused:
        ensure_accounts(session, [good, AccountSpec(**bad)])
    assert refused.value.details.get("field") == field
    assert session.scalar(select(func.count()).select_from(Account).where(
        Account.code.like(f"{unique}:%"))) == 0


@pytest.mark.postgres_only
def test_two_transactions_opening_one_account_make_one(session_factory, unique):
    """The second waits on the first's uncommitted row (the unique code),
    then skips it: no error, one account, one balance row."""
    code = f"{unique}:escrow"
    first = session_factory()
    first.begin()
    assert ensure_accounts(first, [AccountSpec(code, "Escrow", "liability", CNY)]) == [code]
    outcome: dict = {}

    def second():
        with session_factory() as s, s.begin():
            outcome["opened"] = ensure_accounts(s, [AccountSpec(code, "Escrow", "liability", CNY)])

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(timeout=1)
    assert thread.is_alive()  # waiting for the first transaction
    first.commit()
    first.close()
    thread.join(timeout=30)
    assert outcome["opened"] == []
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Account).where(Account.code == code)) == 1
        assert _balance_rows(s, code) == 1


class _Statements:
    """Counts the statements an engine runs while active."""

    def __init__(self, engine):
        from sqlalchemy import event
        self.engine, self.count, self._event = engine, 0, event

    def _tick(self, *args):
        self.count += 1

    def __enter__(self):
        self._event.listen(self.engine, "before_cursor_execute", self._tick)
        return self

    def __exit__(self, *exc):
        self._event.remove(self.engine, "before_cursor_execute", self._tick)


def _ensure_in_own_transaction(session_factory, code):
    with session_factory() as s, s.begin():
        return ensure_accounts(s, [AccountSpec(code, "Cash", "asset", CNY)])


def test_an_account_seen_committed_needs_no_statement_the_next_time(session_factory, engine,
                                                                     unique):
    code = f"{unique}:known"
    assert _ensure_in_own_transaction(session_factory, code) == [code]
    with session_factory() as s, s.begin():
        with _Statements(engine) as statements:
            assert ensure_accounts(s, [AccountSpec(code, "Cash", "asset", CNY)]) == []
        assert statements.count == 0
        # and it is really there
        assert ledger.get_account(s, code).code == code


def test_an_account_whose_opening_rolled_back_is_opened_again(session_factory, unique):
    code = f"{unique}:undone"
    with session_factory() as s:
        with s.begin():
            ensure_accounts(s, [AccountSpec(code, "Cash", "asset", CNY)])
            s.rollback()
    assert _ensure_in_own_transaction(session_factory, code) == [code]


def test_an_account_opened_in_a_savepoint_that_rolled_back_is_opened_again(session_factory,
                                                                             unique):
    code = f"{unique}:nested"
    with session_factory() as s, s.begin():
        savepoint = s.begin_nested()
        ensure_accounts(s, [AccountSpec(code, "Cash", "asset", CNY)])
        savepoint.rollback()
    # The outer transaction committed; the savepoint's account is gone and
    # was not taken for known.
    assert _ensure_in_own_transaction(session_factory, code) == [code]


def test_a_session_inside_an_outer_transaction_learns_nothing(session, session_factory,
                                                               unique):
    """The tests' ``session`` commits savepoints of a transaction that is
    rolled back at the end: what it opens must not be taken for known."""
    code = f"{unique}:outer"
    with session.begin():
        ensure_accounts(session, [AccountSpec(code, "Cash", "asset", CNY)])
    session.commit()
    session.get_bind().rollback()  # what the fixture does at the end
    assert _ensure_in_own_transaction(session_factory, code) == [code]


def test_opening_accounts_is_one_or_two_statements_however_many(session, unique):
    """Every order opens its escrow on its hot path: the accounts go in one
    insert, their balance rows (one per shard) in another; on PostgreSQL
    both in one prepared statement (counted too: ``ledger.prepared``
    reports its round trips to the engine's listeners)."""
    from sqlalchemy import event

    statements = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if not statement.startswith(("SAVEPOINT", "RELEASE")):  # the fixture's
            statements.append(statement)

    engine = session.get_bind().engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        opened = ensure_accounts(session, [
            AccountSpec(f"{unique}:one", "One", "asset", CNY),
            AccountSpec(f"{unique}:three", "Three", "liability", CNY, min_balance_minor=0,
                        balance_shards=3)])
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert opened == [f"{unique}:one", f"{unique}:three"]
    assert len(statements) == (1 if session.get_bind().dialect.name == "postgresql" else 2), \
        statements
    assert (_balance_rows(session, f"{unique}:one"), _balance_rows(session, f"{unique}:three")) \
        == (1, 3)
    entry = ledger.post_entry(session, EntryRequest(code="t", postings=[
        PostingLine(f"{unique}:one", "debit", 5, CNY),
        PostingLine(f"{unique}:three", "credit", 5, CNY)]))
    assert entry.id and ledger.get_account(session, f"{unique}:three").posted_minor == 5
