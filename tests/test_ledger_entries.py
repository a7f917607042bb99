"""Journal entries: validation, idempotency, batches, two-phase, reversal, status."""
from __future__ import annotations

from datetime import timedelta

import pytest

from ledger import (
    AccountClosed,
    AccountFrozen,
    AccountNotFound,
    AlreadyPosted,
    AlreadyReversed,
    AlreadyVoided,
    CurrencyMismatch,
    EntryRequest,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAccount,
    InvalidEntry,
    NotPending,
    NotReversible,
    PendingExpired,
    PostingLine,
    UnbalancedEntry,
    get_account,
    get_entry,
    list_entries,
    open_account,
    post_entries,
    post_entry,
    post_pending,
    reverse_entry,
    set_account_bounds,
    set_account_status,
    void_pending,
)
from ledger.timeutil import utcnow
from tests.ledger_helpers import balance, lines, post


@pytest.fixture
def accounts(session):
    open_account(session, "cash", "Cash", "asset", "CNY")
    open_account(session, "wallet:a", "Wallet A", "liability", "CNY", min_balance_minor=0)
    open_account(session, "wallet:b", "Wallet B", "liability", "CNY", min_balance_minor=0)
    open_account(session, "usd:cash", "USD cash", "asset", "USD")
    post(session, "fund", ("Dr", "cash", 1_000), ("Cr", "wallet:a", 1_000))
    return session


def transfer(amount, key=None, **kwargs):
    return EntryRequest("transfer", lines(("Dr", "wallet:a", amount), ("Cr", "wallet:b", amount)),
                        idempotency_key=key, **kwargs)


@pytest.mark.parametrize(
    "postings, error, field",
    [
        ([PostingLine("wallet:a", "debit", 5, "CNY")], InvalidEntry, "postings"),
        ([PostingLine("wallet:a", "debit", 5, "CNY"), PostingLine("wallet:b", "credit", 4, "CNY")], UnbalancedEntry, None),
        ([PostingLine("wallet:a", "debit", 0, "CNY"), PostingLine("wallet:b", "credit", 0, "CNY")], InvalidEntry, "postings[0].amount_minor"),
        ([PostingLine("wallet:a", "debit", -5, "CNY"), PostingLine("wallet:b", "credit", -5, "CNY")], InvalidEntry, "postings[0].amount_minor"),
        ([PostingLine("wallet:a", "debit", 1.5, "CNY"), PostingLine("wallet:b", "credit", 1.5, "CNY")], InvalidEntry, "postings[0].amount_minor"),
        ([PostingLine("wallet:a", "debit", True, "CNY"), PostingLine("wallet:b", "credit", True, "CNY")], InvalidEntry, "postings[0].amount_minor"),
        ([PostingLine("wallet:a", "up", 5, "CNY"), PostingLine("wallet:b", "credit", 5, "CNY")], InvalidEntry, "postings[0].side"),
        ([PostingLine("wallet:a", "debit", 5, "cny"), PostingLine("wallet:b", "credit", 5, "cny")], InvalidEntry, "postings[0].currency"),
    ],
)
def test_a_malformed_entry_is_refused_with_the_field_named(accounts, postings, error, field):
    with pytest.raises(error) as caught:
        post_entry(accounts, EntryRequest("transfer", postings))
    if field:
        assert caught.value.details["field"] == field
    assert balance(accounts, "wallet:a") == 1_000


def test_an_entry_balanced_per_currency_is_accepted_and_one_that_is_not_is_refused(accounts):
    open_account(accounts, "usd:wallet", "USD wallet", "liability", "USD")
    post_entry(accounts, EntryRequest("fx", [
        PostingLine("cash", "debit", 700, "CNY"), PostingLine("wallet:a", "credit", 700, "CNY"),
        PostingLine("usd:cash", "debit", 100, "USD"), PostingLine("usd:wallet", "credit", 100, "USD"),
    ]))
    with pytest.raises(UnbalancedEntry):
        post_entry(accounts, EntryRequest("fx", [
            PostingLine("cash", "debit", 700, "CNY"), PostingLine("usd:wallet", "credit", 700, "USD")]))


def test_a_posting_in_another_currency_than_its_account_is_refused(accounts):
    with pytest.raises(CurrencyMismatch):
        post_entry(accounts, EntryRequest("x", [
            PostingLine("usd:cash", "debit", 5, "CNY"), PostingLine("wallet:b", "credit", 5, "CNY")]))


def test_an_unknown_account_is_named_in_the_error(accounts):
    with pytest.raises(AccountNotFound) as caught:
        post(accounts, "x", ("Dr", "cash", 5), ("Cr", "nowhere", 5))
    assert caught.value.details["account"] == "nowhere"


def test_a_debit_beyond_the_balance_is_refused_and_leaves_nothing(accounts):
    with pytest.raises(InsufficientFunds) as caught:
        post_entry(accounts, transfer(1_001))
    assert caught.value.code == "insufficient_funds"
    assert balance(accounts, "wallet:a") == 1_000
    assert balance(accounts, "wallet:b") == 0


def test_the_same_key_and_content_returns_the_first_entry_and_changes_nothing(accounts):
    first = post_entry(accounts, transfer(100, key="t-1"))
    again = post_entry(accounts, transfer(100, key="t-1"))
    assert again.id == first.id
    assert balance(accounts, "wallet:b") == 100


def test_the_same_key_with_other_content_is_a_conflict(accounts):
    post_entry(accounts, transfer(100, key="t-1"))
    with pytest.raises(IdempotencyConflict):
        post_entry(accounts, transfer(101, key="t-1"))
    assert balance(accounts, "wallet:b") == 100


def test_a_batch_reports_each_entry_on_its_own(accounts):
    results = post_entries(accounts, [
        transfer(600), transfer(600), transfer(300, key="k"), transfer(300, key="k"),
        EntryRequest("bad", []),
    ])
    assert [r.ok for r in results] == [True, False, True, True, False]
    assert results[1].error.code == "insufficient_funds"
    assert results[3].replayed and results[3].entry.id == results[2].entry.id
    assert results[4].error.code == "invalid_entry"
    assert balance(accounts, "wallet:b") == 900


def test_a_big_batch_posted_again_replays_every_entry_and_moves_nothing(accounts):
    """More keys than the look-up sends one by one (on PostgreSQL they go as
    one array): each replayed, a changed one a conflict, new ones posted."""
    first = post_entries(accounts, [transfer(10, key=f"big-{n}") for n in range(30)])
    assert all(r.ok for r in first) and balance(accounts, "wallet:b") == 300
    again = post_entries(accounts, [transfer(10, key=f"big-{n}") for n in range(35)]
                         + [transfer(11, key="big-3")])
    assert [r.replayed for r in again[:30]] == [True] * 30
    assert [r.entry.id for r in again[:30]] == [r.entry.id for r in first]
    assert [r.ok and not r.replayed for r in again[30:35]] == [True] * 5
    assert again[35].error.code == "idempotency_conflict"
    assert balance(accounts, "wallet:b") == 350


def test_a_batch_large_enough_for_copy_reads_back_as_posted(accounts):
    """A batch of ``writer.COPY_FROM`` postings or more goes by COPY on
    PostgreSQL: every entry reads back as the batch answered, text that COPY
    must escape included, the balances move and the checks find nothing."""
    from ledger import check_ledger
    from ledger.writer import COPY_FROM

    awkward = 'tab\there, new\nline, back\\slash, \\N, "quotes", 零售'
    requests = [EntryRequest("bulk", lines(("Dr", "cash", 1), ("Cr", "wallet:b", 1)),
                             description=f"{awkward} #{n}", idempotency_key=f"bulk-{n}",
                             metadata={"n": n, "text": awkward})
                for n in range(COPY_FROM // 2 + 1)]
    results = post_entries(accounts, requests)
    assert all(r.ok for r in results)
    for result in (results[0], results[-1]):
        assert get_entry(accounts, result.entry.id) == result.entry
    assert get_entry(accounts, results[7].entry.id).description == f"{awkward} #7"
    assert get_entry(accounts, results[7].entry.id).metadata == {"n": 7, "text": awkward}
    assert balance(accounts, "wallet:b") == len(requests)
    assert check_ledger(accounts) == []


def test_an_atomic_batch_writes_nothing_when_one_entry_fails(accounts):
    before = len(list_entries(accounts, limit=1000)[0])
    with pytest.raises(InsufficientFunds):
        post_entries(accounts, [transfer(600), transfer(600)], atomic=True)
    assert balance(accounts, "wallet:b") == 0
    assert len(list_entries(accounts, limit=1000)[0]) == before


def test_a_frozen_account_takes_no_entry_until_unfrozen(accounts):
    set_account_status(accounts, "wallet:b", "frozen")
    with pytest.raises(AccountFrozen):
        post_entry(accounts, transfer(5))
    set_account_status(accounts, "wallet:b", "open")
    post_entry(accounts, transfer(5))
    assert balance(accounts, "wallet:b") == 5


def test_an_account_closes_only_when_empty_and_then_for_good(accounts):
    with pytest.raises(InvalidAccount):
        set_account_status(accounts, "wallet:a", "closed")
    set_account_status(accounts, "wallet:b", "closed")
    with pytest.raises(AccountClosed):
        post_entry(accounts, transfer(5))
    with pytest.raises(InvalidAccount):
        set_account_status(accounts, "wallet:b", "open")


def test_opening_an_account_twice_is_idempotent_but_not_with_other_attributes(accounts):
    again = open_account(accounts, "wallet:a", "Wallet A", "liability", "CNY", min_balance_minor=0)
    assert again.posted_minor == 1_000
    from ledger import AccountExists
    with pytest.raises(AccountExists) as caught:
        open_account(accounts, "wallet:a", "Wallet A", "liability", "USD", min_balance_minor=0)
    assert caught.value.details["fields"] == ["currency"]


def test_a_contra_account_can_be_opened_on_the_other_side(session):
    account = open_account(session, "party:s:rebates_granted", "Rebates granted", "asset", "CNY", normal_side="credit")
    assert account.normal_side.value == "credit"


def test_a_pending_entry_posts_in_part_and_releases_the_rest(accounts):
    hold = post_entry(accounts, transfer(800, pending=True))
    assert get_account(accounts, "wallet:a").available_minor == 200
    posted = post_pending(accounts, hold.id, postings=lines(("Dr", "wallet:a", 500), ("Cr", "wallet:b", 500)))
    assert posted.pending_id == hold.id
    a = get_account(accounts, "wallet:a")
    assert (a.posted_minor, a.available_minor, a.pending_debits_minor) == (500, 500, 0)
    assert balance(accounts, "wallet:b") == 500


@pytest.mark.parametrize(
    "partial",
    [
        lines(("Dr", "wallet:a", 900), ("Cr", "wallet:b", 900)),  # more than reserved
        lines(("Dr", "wallet:b", 100), ("Cr", "wallet:a", 100)),  # sides not reserved
        lines(("Dr", "wallet:a", 100), ("Cr", "wallet:b", 90)),   # unbalanced
    ],
)
def test_a_partial_post_must_fit_inside_the_reservation(accounts, partial):
    hold = post_entry(accounts, transfer(800, pending=True))
    with pytest.raises(InvalidEntry):
        post_pending(accounts, hold.id, postings=partial)
    assert get_entry(accounts, hold.id).status == "pending"


def test_a_pending_entry_is_resolved_once(accounts):
    hold = post_entry(accounts, transfer(100, pending=True))
    post_pending(accounts, hold.id)
    with pytest.raises(AlreadyPosted):
        post_pending(accounts, hold.id)
    with pytest.raises(AlreadyPosted):
        void_pending(accounts, hold.id)
    other = post_entry(accounts, transfer(100, pending=True))
    void_pending(accounts, other.id)
    with pytest.raises(AlreadyVoided):
        post_pending(accounts, other.id)


def test_resolving_with_the_same_key_replays_the_first_resolution(accounts):
    hold = post_entry(accounts, transfer(100, pending=True))
    first = post_pending(accounts, hold.id, idempotency_key="capture-1")
    again = post_pending(accounts, hold.id, idempotency_key="capture-1")
    assert again.id == first.id
    assert balance(accounts, "wallet:b") == 100


def test_an_expired_pending_entry_cannot_be_posted_but_can_be_voided(accounts):
    from ledger.posting import _resolve  # noqa: F401 (the public API below is what is tested)
    hold = post_entry(accounts, transfer(100, pending=True, expires_at=utcnow() + timedelta(seconds=60)))
    from ledger import posting
    original = posting.utcnow
    posting.utcnow = lambda: original() + timedelta(minutes=5)
    try:
        with pytest.raises(PendingExpired):
            post_pending(accounts, hold.id)
        void_pending(accounts, hold.id)
    finally:
        posting.utcnow = original
    assert get_entry(accounts, hold.id).status == "voided"


def test_only_a_pending_entry_can_be_posted_or_voided(accounts):
    entry = post_entry(accounts, transfer(5))
    with pytest.raises(NotPending):
        post_pending(accounts, entry.id)
    with pytest.raises(NotPending):
        void_pending(accounts, entry.id)


def test_an_expiry_belongs_to_pending_entries_and_lies_in_the_future(accounts):
    with pytest.raises(InvalidEntry):
        post_entry(accounts, transfer(5, expires_at=utcnow() + timedelta(minutes=1)))
    with pytest.raises(InvalidEntry):
        post_entry(accounts, transfer(5, pending=True, expires_at=utcnow() - timedelta(minutes=1)))


def test_a_reversal_mirrors_the_entry_once(accounts):
    entry = post_entry(accounts, transfer(250))
    reversal = reverse_entry(accounts, entry.id)
    assert [(p.account, p.side.value, p.amount_minor) for p in reversal.postings] == [
        ("wallet:a", "credit", 250), ("wallet:b", "debit", 250)]
    assert balance(accounts, "wallet:a") == 1_000
    with pytest.raises(AlreadyReversed):
        reverse_entry(accounts, entry.id)
    with pytest.raises(NotReversible):
        reverse_entry(accounts, reversal.id)


def test_a_reversal_that_would_overdraw_is_refused(accounts):
    entry = post_entry(accounts, transfer(250))
    post(accounts, "spend", ("Dr", "wallet:b", 250), ("Cr", "cash", 250))
    with pytest.raises(InsufficientFunds):
        reverse_entry(accounts, entry.id)


def test_a_pending_entry_is_voided_not_reversed(accounts):
    hold = post_entry(accounts, transfer(5, pending=True))
    with pytest.raises(NotReversible):
        reverse_entry(accounts, hold.id)


def test_a_lower_limit_keeps_the_balance_but_refuses_going_further(session):
    open_account(session, "credit:b@s", "Credit line", "asset", "CNY", min_balance_minor=0, max_balance_minor=1_000)
    open_account(session, "credit_issued", "Credit issued", "liability", "CNY")
    post(session, "use", ("Dr", "credit:b@s", 800), ("Cr", "credit_issued", 800))
    set_account_bounds(session, "credit:b@s", min_balance_minor=0, max_balance_minor=500)
    from ledger import LimitExceeded
    with pytest.raises(LimitExceeded):
        post(session, "use", ("Dr", "credit:b@s", 1), ("Cr", "credit_issued", 1))
    post(session, "repay", ("Dr", "credit_issued", 100), ("Cr", "credit:b@s", 100))
    assert balance(session, "credit:b@s") == 700


def test_a_hot_account_spreads_over_shards_and_its_balance_is_their_sum(session):
    open_account(session, "cash", "Cash", "asset", "CNY")
    open_account(session, "brand:wallet", "Brand", "liability", "CNY", min_balance_minor=0, balance_shards=8)
    for _ in range(5):
        post(session, "sale", ("Dr", "cash", 100), ("Cr", "brand:wallet", 100))
    post(session, "payout", ("Dr", "brand:wallet", 450), ("Cr", "cash", 450))
    with pytest.raises(InsufficientFunds):
        post(session, "payout", ("Dr", "brand:wallet", 51), ("Cr", "cash", 51))
    account = get_account(session, "brand:wallet")
    assert (account.posted_minor, account.balance_shards) == (50, 8)
    from ledger import check_ledger
    assert check_ledger(session) == []


def test_listing_entries_pages_with_a_cursor(accounts):
    for amount in range(1, 6):
        post_entry(accounts, transfer(amount))
    page, cursor = list_entries(accounts, account="wallet:b", limit=3)
    assert [p.postings[1].amount_minor for p in page] == [1, 2, 3]
    rest, end = list_entries(accounts, account="wallet:b", after=cursor, limit=3)
    assert [p.postings[1].amount_minor for p in rest] == [4, 5]
    assert end is None


def test_the_check_finds_every_broken_rule_at_once(engine, backend):
    """Corrupt a copy of the books behind the ledger's back (as a bad migration
    or a hand-edited row would) and the check reports each problem."""
    from sqlalchemy import text

    from ledger import check_ledger
    from service.db import make_session_factory

    with make_session_factory(engine)() as s:
        s.begin()
        open_account(s, "chk:cash", "Cash", "asset", "CNY")
        open_account(s, "chk:wallet", "Wallet", "liability", "CNY", min_balance_minor=0)
        entry = post(s, "fund", ("Dr", "chk:cash", 100), ("Cr", "chk:wallet", 100))
        reversal = reverse_entry(s, entry.id)
        assert check_ledger(s) == [] or all(not f.subject.startswith("chk:") for f in check_ledger(s))
        # A cached balance that no longer matches its postings, and a bound broken:
        s.execute(text("UPDATE ledger_balance SET posted_debits_minor = posted_debits_minor + 500 "
                       "WHERE account_id = (SELECT id FROM ledger_account WHERE code = 'chk:wallet')"))
        # Two extra (balanced) lines slipped into the reversal: it no longer mirrors.
        from sqlalchemy import insert, select as sa_select
        from ledger.ids import parse_entry_id
        from ledger.models import Account, Posting
        from ledger.timeutil import utcnow
        ids = dict(s.execute(sa_select(Account.code, Account.id).where(Account.code.like("chk:%"))).all())
        s.execute(insert(Posting.__table__), [
            {"entry_id": parse_entry_id(reversal.id), "line": 7 + n, "account_id": ids[code],
             "shard": 0, "side": side, "amount_minor": 1, "currency": "CNY", "pending": False,
             "balance_after_minor": 0, "version": 0, "posted_at": utcnow()}
            for n, (code, side) in enumerate([("chk:cash", "debit"), ("chk:wallet", "credit")])])
        findings = {(f.check, f.subject.split("#")[0]) for f in check_ledger(s)}
        s.rollback()
    assert ("cached_balance", "chk:wallet") in findings
    assert ("running_balance", "chk:wallet") in findings
    assert ("bound", "chk:wallet") in findings
    assert ("reversal", reversal.id) in findings
