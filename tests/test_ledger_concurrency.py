"""Many writers at once, each in its own session and transaction, against a
real database: bounds hold exactly, no update is lost, lock ordering leaves
no room for deadlocks, a pending entry is resolved once, an idempotency key
makes one entry.

PostgreSQL only (row locks are what is tested), except the SQLite variant of
the bounded-account race, where ``BEGIN IMMEDIATE`` serializes writers.
Everything commits into the shared test database, so account codes carry the
``unique`` prefix and every assertion but ``check_ledger`` is about our own
accounts.
"""
from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict

import pytest
from sqlalchemy import func, select

from ledger import (
    AlreadyPosted,
    AlreadyReversed,
    AlreadyVoided,
    EntryRequest,
    InsufficientFunds,
    PostingLine,
    check_ledger,
    get_account,
    get_entry,
    open_account,
    post_entry,
    post_pending,
    reverse_entry,
    void_pending,
)
from ledger.models import Account, Balance, JournalEntry

CNY = "CNY"
THREAD_TIMEOUT = 120


def transfer(debit: str, credit: str, amount: int, **kwargs) -> EntryRequest:
    return EntryRequest("transfer", [PostingLine(debit, "debit", amount, CNY),
                                     PostingLine(credit, "credit", amount, CNY)], **kwargs)


def run_together(workers):
    """Start one thread per callable at the same moment; return their results
    (the value returned, or the exception raised) in the same order."""
    barrier = threading.Barrier(len(workers))
    results: list = [None] * len(workers)

    def run(index, work):
        try:
            barrier.wait()
            results[index] = work()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            results[index] = error

    threads = [threading.Thread(target=run, args=(i, w), daemon=True) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a writer hung (deadlock or lock wait)"
    return results


def unexpected(results, *allowed) -> list[str]:
    """The exceptions among ``results`` that are not of an allowed type, readably."""
    return [f"{type(r).__name__}: {str(r).splitlines()[0][:160]}" for r in results
            if isinstance(r, BaseException) and not isinstance(r, allowed)]


def assert_ledger_healthy(session_factory):
    with session_factory() as s:
        assert check_ledger(s) == []


def open_accounts(session_factory, *specs):
    with session_factory() as s, s.begin():
        for code, type_, kwargs in specs:
            open_account(s, code, code, type_, CNY, **kwargs)


def fund(session_factory, source, target, amount):
    with session_factory() as s, s.begin():
        post_entry(s, transfer(source, target, amount, description="funding"))


def posted(session_factory, code) -> int:
    with session_factory() as s:
        return get_account(s, code).posted_minor


# -- (a) one bounded account, many debits ---------------------------------------


def _race_debits_on_a_bounded_account(session_factory, unique, threads, attempts, amount):
    custody, wallet, sink = f"{unique}:custody", f"{unique}:wallet", f"{unique}:sink"
    open_accounts(session_factory, (custody, "asset", {}),
                  (wallet, "liability", {"min_balance_minor": 0}), (sink, "liability", {}))
    succeed = threads * attempts // 2
    fund(session_factory, custody, wallet, succeed * amount)

    def debit_repeatedly():
        outcomes = []
        for _ in range(attempts):
            try:
                with session_factory() as s, s.begin():
                    post_entry(s, transfer(wallet, sink, amount))
                outcomes.append("ok")
            except InsufficientFunds:
                outcomes.append("refused")
        return outcomes

    results = run_together([debit_repeatedly] * threads)
    leaked = [r for r in results if isinstance(r, BaseException)]
    assert leaked == [], f"errors other than InsufficientFunds leaked out: {leaked!r}"
    counts = Counter(outcome for outcomes in results for outcome in outcomes)
    assert counts == {"ok": succeed, "refused": threads * attempts - succeed}
    with session_factory() as s:
        account = get_account(s, wallet)
        assert (account.posted_minor, account.available_minor) == (0, 0)
        assert get_account(s, sink).posted_minor == succeed * amount
    assert_ledger_healthy(session_factory)


@pytest.mark.postgres_only
def test_racing_debits_on_a_bounded_account_stop_exactly_at_its_minimum(session_factory, unique):
    _race_debits_on_a_bounded_account(session_factory, unique, threads=8, attempts=6, amount=100)


def test_racing_debits_on_sqlite_still_stop_exactly_at_the_minimum(session_factory, unique, backend):
    if backend != "sqlite":
        pytest.skip("the SQLite variant; PostgreSQL has its own test")
    _race_debits_on_a_bounded_account(session_factory, unique, threads=4, attempts=6, amount=100)


# -- (b) a hot unbounded account and transfers in both directions ---------------


@pytest.mark.postgres_only
def test_no_update_is_lost_on_a_hot_account_or_on_wallets_paying_each_other(session_factory, unique):
    custody, hot = f"{unique}:custody", f"{unique}:brand"
    wallets = [f"{unique}:wallet{n}" for n in range(6)]
    open_accounts(session_factory, (custody, "asset", {}), (hot, "liability", {"balance_shards": 8}),
                  *[(w, "liability", {"min_balance_minor": 0}) for w in wallets])
    funding = 150_000
    for w in wallets:
        fund(session_factory, custody, w, funding)

    def writer(seed):
        def work():
            rng = random.Random(seed)
            done = []  # (debit, credit, amount) of each committed transfer
            refused = 0
            for _ in range(40):
                amount = rng.randint(1, 10_000)
                if rng.random() < 0.5:
                    debit, credit = rng.choice(wallets), hot
                else:
                    debit, credit = rng.sample(wallets, 2)  # both directions happen across threads
                try:
                    with session_factory() as s, s.begin():
                        post_entry(s, transfer(debit, credit, amount))
                    done.append((debit, credit, amount))
                except InsufficientFunds:
                    refused += 1
            return done, refused
        return work

    results = run_together([writer(seed) for seed in range(8)])
    leaked = [r for r in results if isinstance(r, BaseException)]
    assert leaked == [], f"errors other than InsufficientFunds leaked out: {leaked!r}"

    expected = defaultdict(int)
    for w in wallets:
        expected[w] = funding
    for done, _ in results:
        for debit, credit, amount in done:
            expected[debit] -= amount  # liabilities: a debit lowers them
            expected[credit] += amount
    assert sum(len(done) for done, _ in results) > 0
    assert posted(session_factory, hot) == expected[hot]
    for w in wallets:
        assert posted(session_factory, w) == expected[w], w
    with session_factory() as s:
        hot_id = s.scalar(select(Account.id).where(Account.code == hot))
        shards_used = s.scalar(select(func.count()).select_from(Balance)
                               .where(Balance.account_id == hot_id, Balance.version > 0))
    assert shards_used > 1, "every credit to the hot account landed on one shard"
    assert_ledger_healthy(session_factory)


# -- (c) a hot account with a bound -------------------------------------------


@pytest.mark.postgres_only
def test_a_sharded_account_with_a_minimum_never_goes_below_it_under_racing_credits_and_debits(
    session_factory, unique
):
    custody, hot, sink = f"{unique}:custody", f"{unique}:brand", f"{unique}:sink"
    payers = [f"{unique}:payer{n}" for n in range(4)]
    open_accounts(session_factory, (custody, "asset", {}), (sink, "liability", {}),
                  (hot, "liability", {"balance_shards": 8, "min_balance_minor": 0}),
                  *[(p, "liability", {"min_balance_minor": 0}) for p in payers])
    for p in payers:
        fund(session_factory, custody, p, 100_000)

    stop = threading.Event()
    seen = []  # (posted, available) of the hot account as other sessions see it

    def watch():
        while not stop.is_set():
            with session_factory() as s:
                view = get_account(s, hot)
            seen.append((view.posted_minor, view.available_minor))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    def creditor(payer, seed):
        def work():
            rng = random.Random(seed)
            total = 0
            for _ in range(40):
                amount = rng.randint(1, 1_000)
                with session_factory() as s, s.begin():
                    post_entry(s, transfer(payer, hot, amount))  # one shard
                total += amount
            return total
        return work

    def debitor(seed):
        def work():
            rng = random.Random(seed)
            total, refused = 0, 0
            for _ in range(40):
                amount = rng.randint(200, 2_000)
                try:
                    with session_factory() as s, s.begin():
                        post_entry(s, transfer(hot, sink, amount))  # every shard
                    total += amount
                except InsufficientFunds:
                    refused += 1
            return total, refused
        return work

    try:
        results = run_together([creditor(p, n) for n, p in enumerate(payers)]
                               + [debitor(100 + n) for n in range(4)])
    finally:
        stop.set()
        watcher.join(THREAD_TIMEOUT)
    leaked = [r for r in results if isinstance(r, BaseException)]
    assert leaked == [], f"errors other than InsufficientFunds leaked out: {leaked!r}"
    credited = sum(results[:4])
    debited = sum(total for total, _ in results[4:])
    refused = sum(n for _, n in results[4:])

    remaining = posted(session_factory, hot)
    assert remaining == credited - debited >= 0
    assert posted(session_factory, sink) == debited
    assert refused > 0, "the bound was never reached: the test proved nothing"
    assert seen and min(available for _, available in seen) >= 0

    # Exactly at the bound: one unit more than what is left is refused, what is left is not.
    with pytest.raises(InsufficientFunds):
        with session_factory() as s, s.begin():
            post_entry(s, transfer(hot, sink, remaining + 1))
    if remaining:
        with session_factory() as s, s.begin():
            post_entry(s, transfer(hot, sink, remaining))
    with session_factory() as s:
        view = get_account(s, hot)
    assert (view.posted_minor, view.available_minor) == (0, 0)
    assert_ledger_healthy(session_factory)


# -- (d) resolving one pending entry twice at once ------------------------------


@pytest.mark.postgres_only
@pytest.mark.parametrize("first, second", [("post", "void"), ("post", "post"), ("void", "void")])
def test_a_pending_entry_raced_by_two_resolutions_is_resolved_exactly_once(
    session_factory, unique, first, second
):
    custody, wallet, merchant = f"{unique}:custody", f"{unique}:wallet", f"{unique}:merchant"
    open_accounts(session_factory, (custody, "asset", {}),
                  (wallet, "liability", {"min_balance_minor": 0}), (merchant, "liability", {}))
    fund(session_factory, custody, wallet, 10_000)
    resolve = {"post": post_pending, "void": void_pending}
    lost_to = {"post": AlreadyPosted, "void": AlreadyVoided}
    amount, rounds, posted_count = 300, 8, 0

    for _ in range(rounds):
        with session_factory() as s, s.begin():
            pending = post_entry(s, transfer(wallet, merchant, amount, pending=True))

        def attempt(action):
            def work():
                with session_factory() as s, s.begin():
                    return resolve[action](s, pending.id)
            return work

        results = run_together([attempt(first), attempt(second)])
        won = [n for n, r in enumerate(results) if not isinstance(r, BaseException)]
        assert len(won) == 1, f"expected one winner, got {results!r}"
        winner = (first, second)[won[0]]
        loser = results[1 - won[0]]
        assert type(loser) is lost_to[winner], f"the loser got {loser!r}"
        assert results[won[0]].pending_id == pending.id
        posted_count += winner == "post"
        with session_factory() as s:
            assert get_entry(s, pending.id).status == ("posted" if winner == "post" else "voided")

    with session_factory() as s:
        w = get_account(s, wallet)
        assert (w.posted_minor, w.pending_debits_minor, w.available_minor) == (
            10_000 - amount * posted_count, 0, 10_000 - amount * posted_count)
        assert get_account(s, merchant).posted_minor == amount * posted_count
    assert_ledger_healthy(session_factory)


# -- (e) one idempotency key from many threads ---------------------------------


def _race_one_key(session_factory, unique, debit, credit, rounds=5, threads=8):
    for r in range(rounds):
        key = f"{unique}:order-{r}"

        def send():
            with session_factory() as s, s.begin():
                return post_entry(s, transfer(debit, credit, 100, idempotency_key=key)).id

        results = run_together([send] * threads)
        assert unexpected(results) == [], f"round {r}"
        assert len(set(results)) == 1
        with session_factory() as s:
            stored = s.scalars(select(JournalEntry.id).where(JournalEntry.idempotency_key == key)).all()
        assert len(stored) == 1 and results[0] == "je_" + stored[0].hex
    assert posted(session_factory, credit) == 100 * rounds
    assert_ledger_healthy(session_factory)


@pytest.mark.postgres_only
def test_one_idempotency_key_sent_by_eight_threads_at_once_makes_one_entry(session_factory, unique):
    custody, wallet, hot = f"{unique}:custody", f"{unique}:wallet", f"{unique}:brand"
    open_accounts(session_factory, (custody, "asset", {}),
                  (wallet, "liability", {"min_balance_minor": 0}),
                  (hot, "liability", {"balance_shards": 8}))
    fund(session_factory, custody, wallet, 10_000)
    _race_one_key(session_factory, unique, wallet, hot)
    assert posted(session_factory, wallet) == 10_000 - 500


@pytest.mark.postgres_only
def test_one_idempotency_key_makes_one_entry_even_between_two_hot_accounts(session_factory, unique):
    """Both accounts sharded and unbounded: each thread locks the shard of its
    own worker slot, so the threads share no lock. The key must still make one
    entry and every thread get its id, not a unique-violation error."""
    source, hot = f"{unique}:brand-a", f"{unique}:brand-b"
    open_accounts(session_factory, (source, "asset", {"balance_shards": 8}),
                  (hot, "liability", {"balance_shards": 8}))
    _race_one_key(session_factory, unique, source, hot)


def _race_reversals(session_factory, debit, credit, rounds=5, threads=8):
    for _ in range(rounds):
        with session_factory() as s, s.begin():
            original = post_entry(s, transfer(debit, credit, 100))

        def reverse():
            with session_factory() as s, s.begin():
                return reverse_entry(s, original.id).id

        results = run_together([reverse] * threads)
        won = [r for r in results if isinstance(r, str)]
        lost = [r for r in results if not isinstance(r, str)]
        assert unexpected(lost, AlreadyReversed) == []
        assert len(won) == 1, results
        with session_factory() as s:
            assert get_entry(s, original.id).status == "reversed"
    assert posted(session_factory, credit) == 0
    assert_ledger_healthy(session_factory)


@pytest.mark.postgres_only
def test_an_entry_reversed_by_eight_threads_at_once_is_reversed_once(session_factory, unique):
    custody, wallet = f"{unique}:custody", f"{unique}:wallet"
    open_accounts(session_factory, (custody, "asset", {}),
                  (wallet, "liability", {"min_balance_minor": 0}))
    _race_reversals(session_factory, custody, wallet)


@pytest.mark.postgres_only
def test_an_entry_between_two_hot_accounts_reversed_by_eight_threads_is_reversed_once(
    session_factory, unique
):
    source, hot = f"{unique}:brand-a", f"{unique}:brand-b"
    open_accounts(session_factory, (source, "asset", {"balance_shards": 8}),
                  (hot, "liability", {"balance_shards": 8}))
    _race_reversals(session_factory, source, hot)
