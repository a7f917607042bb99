"""The transaction wrapper: a use case that deadlocks is run again, so the
deadlock never reaches its caller."""
from __future__ import annotations

import threading

import pytest

from ledger import EntryRequest, PostingLine, get_account, open_account, post_entry
from service.db import run_in_transaction


def transfer(session, source, target, amount):
    post_entry(session, EntryRequest("transfer", [
        PostingLine(source, "debit", amount, "CNY"), PostingLine(target, "credit", amount, "CNY")]))


@pytest.mark.postgres_only
def test_two_use_cases_locking_in_opposite_orders_both_complete(session_factory, unique):
    a, b, bank = f"{unique}:a", f"{unique}:b", f"{unique}:bank"
    sinks = {name: f"{unique}:sink:{name}" for name in ("a-then-b", "b-then-a")}
    with session_factory() as s, s.begin():
        open_account(s, bank, "bank", "asset", "CNY")
        for sink in sinks.values():
            open_account(s, sink, sink, "liability", "CNY")
        for code in (a, b):
            open_account(s, code, code, "liability", "CNY", min_balance_minor=0)
            transfer(s, bank, code, 1_000)

    barrier = threading.Barrier(2)
    attempts = {"a-then-b": 0, "b-then-a": 0}
    errors = []

    def use_case(first, second, name):
        def run(session):
            attempts[name] += 1
            transfer(session, first, sinks[name], 1)  # locks `first` (and its own sink)
            if attempts[name] == 1:
                barrier.wait(timeout=10)  # both hold their first lock: a cycle is sure
            transfer(session, second, sinks[name], 1)  # then wants the other's
        return run

    def worker(first, second, name):
        try:
            run_in_transaction(session_factory, use_case(first, second, name))
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(a, b, "a-then-b")),
               threading.Thread(target=worker, args=(b, a, "b-then-a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sorted(attempts.values()) == [1, 2]  # one was the deadlock victim and ran again
    with session_factory() as s, s.begin():
        assert get_account(s, a).posted_minor == 998
        assert get_account(s, b).posted_minor == 998


def test_an_error_that_is_not_a_deadlock_is_raised_at_once(session_factory):
    calls = []

    def failing(session):
        calls.append(1)
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        run_in_transaction(session_factory, failing)
    assert calls == [1]
