"""Only one scheduler acts at a time: the lease in ``scheduler_lock``.

Each test uses its own lock name (the rows are committed in the shared test
database) and an injected clock, so expiry is exact and instant.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

import ledger
from ledger import EntryRequest, PostingLine
from service import scheduler
from service.models import SchedulerLock
from service.scheduler import Lease, lease_holder, release_lease, run_if_leader, try_acquire_lease
from tests.isolated_db import isolated_engine

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
TTL = 30


@pytest.fixture(scope="module")
def engine(backend, tmp_path_factory):
    """This module commits: it gets a database of its own (see tests/isolated_db.py)."""
    with isolated_engine(backend, tmp_path_factory.mktemp("db")) as engine:
        yield engine


@pytest.fixture
def lock_name(unique):
    return f"test-{unique}"


def acquire(session_factory, name, holder, now, ttl=TTL) -> bool:
    with session_factory() as s, s.begin():
        return try_acquire_lease(s, name, holder, ttl, now)


def holder_at(session_factory, name, now):
    with session_factory() as s:
        return lease_holder(s, name, now)


def test_first_comer_takes_the_lease_and_the_second_is_refused(session_factory, lock_name):
    assert acquire(session_factory, lock_name, "A", T0) is True
    assert acquire(session_factory, lock_name, "B", T0 + timedelta(seconds=1)) is False
    assert holder_at(session_factory, lock_name, T0 + timedelta(seconds=1)) == "A"


def test_the_holder_renews_and_keeps_its_acquired_at(session_factory, lock_name):
    acquire(session_factory, lock_name, "A", T0)

    assert acquire(session_factory, lock_name, "A", T0 + timedelta(seconds=20)) is True
    # Renewed to T0+50s: at T0+40s (past the first expiry) B is still refused.
    assert acquire(session_factory, lock_name, "B", T0 + timedelta(seconds=40)) is False

    with session_factory() as s:
        row = s.scalar(select(SchedulerLock).where(SchedulerLock.name == lock_name))
        assert row.holder == "A"
        assert _utc(row.acquired_at) == T0
        assert _utc(row.expires_at) == T0 + timedelta(seconds=50)


def test_an_expired_lease_passes_to_another_and_the_old_holder_is_refused(session_factory, lock_name):
    acquire(session_factory, lock_name, "A", T0)
    later = T0 + timedelta(seconds=TTL + 1)

    assert acquire(session_factory, lock_name, "B", later) is True
    assert acquire(session_factory, lock_name, "A", later + timedelta(seconds=1)) is False
    assert holder_at(session_factory, lock_name, later) == "B"
    with session_factory() as s:
        row = s.scalar(select(SchedulerLock).where(SchedulerLock.name == lock_name))
        assert _utc(row.acquired_at) == later  # a takeover starts a new lease


def test_a_lease_is_still_held_at_the_instant_it_expires(session_factory, lock_name):
    acquire(session_factory, lock_name, "A", T0)

    assert acquire(session_factory, lock_name, "B", T0 + timedelta(seconds=TTL)) is False


def test_release_lets_another_take_over_at_once(session_factory, lock_name):
    acquire(session_factory, lock_name, "A", T0)
    with session_factory() as s, s.begin():
        assert release_lease(s, lock_name, "A", T0 + timedelta(seconds=1)) is True
        assert release_lease(s, lock_name, "B", T0 + timedelta(seconds=1)) is False  # not B's to release

    assert holder_at(session_factory, lock_name, T0 + timedelta(seconds=2)) is None
    assert acquire(session_factory, lock_name, "B", T0 + timedelta(seconds=2)) is True


def test_racing_schedulers_only_one_acquires(session_factory, lock_name):
    contenders = 8
    barrier = threading.Barrier(contenders)
    results: dict[str, bool] = {}
    errors: list[BaseException] = []

    def contend(holder: str) -> None:
        try:
            barrier.wait(timeout=10)
            results[holder] = acquire(session_factory, lock_name, holder, T0)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=contend, args=(f"h{n}",)) for n in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    winners = [holder for holder, won in results.items() if won]
    assert len(results) == contenders
    assert len(winners) == 1
    assert holder_at(session_factory, lock_name, T0) == winners[0]


def test_a_scheduler_waiting_on_an_uncommitted_insert_loses(session_factory, lock_name):
    """The INSERT race, made deterministic: A has inserted the row but not yet
    committed; B must wait (PostgreSQL: on the primary key; SQLite: on the
    write lock) and then be refused, never get a second lease."""
    result: dict[str, bool] = {}
    first = session_factory()
    first.begin()
    try:
        assert try_acquire_lease(first, lock_name, "A", TTL, T0) is True
        second = threading.Thread(
            target=lambda: result.setdefault("B", acquire(session_factory, lock_name, "B", T0)))
        second.start()
        second.join(timeout=1.0)
        assert second.is_alive(), "B should be waiting for A's transaction"
        first.commit()
    finally:
        first.close()
    second.join(timeout=30)

    assert result == {"B": False}
    assert holder_at(session_factory, lock_name, T0) == "A"


# --- Lease and run_if_leader: what a scheduler process does -------------------------


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_two_schedulers_only_the_leader_runs_jobs(session_factory, lock_name):
    clock = Clock(T0)
    first = Lease(session_factory, ttl_seconds=TTL, name=lock_name, holder="first", clock=clock)
    second = Lease(session_factory, ttl_seconds=TTL, name=lock_name, holder="second", clock=clock)
    runs: list[str] = []

    assert run_if_leader(first, "job", lambda: runs.append("first")) is True
    assert run_if_leader(second, "job", lambda: runs.append("second")) is False
    clock.now += timedelta(seconds=10)
    run_if_leader(first, "job", lambda: runs.append("first"))
    run_if_leader(second, "job", lambda: runs.append("second"))

    assert runs == ["first", "first"]
    assert first.holds() and not second.holds()


def test_when_the_leader_stops_renewing_the_other_takes_over(session_factory, lock_name):
    clock = Clock(T0)
    first = Lease(session_factory, ttl_seconds=TTL, name=lock_name, holder="first", clock=clock)
    second = Lease(session_factory, ttl_seconds=TTL, name=lock_name, holder="second", clock=clock)
    assert first.renew() is True

    clock.now += timedelta(seconds=TTL + 1)  # first is gone (crashed, paused)
    runs: list[str] = []
    assert run_if_leader(second, "job", lambda: runs.append("second")) is True
    assert run_if_leader(first, "job", lambda: runs.append("first")) is False

    assert runs == ["second"]
    assert not first.holds()


def test_a_clean_shutdown_hands_over_without_waiting(session_factory, lock_name):
    clock = Clock(T0)
    first = Lease(session_factory, ttl_seconds=TTL, name=lock_name, holder="first", clock=clock)
    second = Lease(session_factory, ttl_seconds=TTL, name=lock_name, holder="second", clock=clock)
    first.renew()

    first.release()
    clock.now += timedelta(seconds=1)

    assert second.renew() is True


def test_a_failing_job_is_logged_and_does_not_stop_the_scheduler(session_factory, lock_name, caplog):
    lease = Lease(session_factory, ttl_seconds=TTL, name=lock_name, holder="only", clock=Clock(T0))

    def broken():
        raise ValueError("boom")

    with caplog.at_level(logging.ERROR, logger="service.scheduler"):
        assert run_if_leader(lease, "broken", broken) is True

    assert "job broken failed" in caplog.text


def test_an_unreachable_database_means_not_leader(tmp_path, caplog):
    from service.db import make_engine, make_session_factory

    factory = make_session_factory(make_engine(f"sqlite:///{tmp_path}/no-such-dir/x.sqlite3"))
    lease = Lease(factory, ttl_seconds=TTL, holder="lonely", clock=Clock(T0))

    with caplog.at_level(logging.ERROR, logger="service.scheduler"):
        assert run_if_leader(lease, "job", lambda: pytest.fail("must not run")) is False
    assert "could not reach the database" in caplog.text


# --- the jobs ----------------------------------------------------------------------------


def test_void_expired_pending_job_voids_an_expired_hold(session_factory, unique):
    buyer, order = f"prepaid:{unique}@s", f"order:{unique}:escrow"
    with session_factory() as s, s.begin():
        ledger.open_account(s, f"custody:{unique}", "Bank", "asset", "CNY")
        ledger.open_account(s, buyer, "Prepaid", "liability", "CNY", min_balance_minor=0)
        ledger.open_account(s, order, "Escrow", "liability", "CNY", min_balance_minor=0)
        ledger.post_entry(s, EntryRequest("deposit", [
            PostingLine(f"custody:{unique}", "debit", 500, "CNY"), PostingLine(buyer, "credit", 500, "CNY")]))
        hold = ledger.post_entry(s, EntryRequest(
            "order_hold", [PostingLine(buyer, "debit", 200, "CNY"), PostingLine(order, "credit", 200, "CNY")],
            pending=True, expires_at=datetime.now(timezone.utc) + timedelta(minutes=30)))

    voided = scheduler.void_expired_pending(session_factory, now=datetime.now(timezone.utc) + timedelta(hours=1))

    assert voided >= 1
    with session_factory() as s:
        # The ledger derives "expired" for a hold voided by the expiry job
        # (the contract in ledger_api.md lists only "voided").
        assert ledger.get_entry(s, hold.id).status == "expired"
        assert ledger.get_account(s, buyer).available_minor == 500


def test_check_ledger_job_logs_every_finding_at_error(session_factory, monkeypatch, caplog):
    findings = [ledger.Finding("entries_balance", "je_1", "debits 5 != credits 4"),
                ledger.Finding("bounds", "prepaid:x@y", "balance -1 below minimum 0")]
    monkeypatch.setattr(ledger, "check_ledger", lambda session: findings)

    with caplog.at_level(logging.INFO, logger="service.scheduler"):
        assert scheduler.check_ledger(session_factory) == findings

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "ledger check entries_balance failed for je_1: debits 5 != credits 4",
        "ledger check bounds failed for prepaid:x@y: balance -1 below minimum 0",
    ]


def test_build_scheduler_registers_the_jobs_at_their_intervals(session_factory):
    from service.settings import Settings

    settings = Settings(scheduler_lock_ttl_seconds=30, pending_expiry_interval_seconds=45,
                        check_interval_seconds=900)
    lease = Lease(session_factory, ttl_seconds=30)

    jobs = {job.id: job for job in scheduler.build_scheduler(settings, session_factory, lease).get_jobs()}
    daily = jobs.pop("recompute_dynamic_tags")  # a cron job (tests/test_channel_tags.py)
    purge = jobs.pop("purge_idempotency_records")
    assert {f.name: str(f) for f in purge.trigger.fields}["minute"] == "30"
    assert {f.name: str(f) for f in jobs.pop("purge_events").trigger.fields}["minute"] == "45"
    assert {f.name: str(f) for f in jobs.pop("check_cash_invariant").trigger.fields}["hour"] == "3"
    settle = {f.name: str(f) for f in jobs.pop("settle_yesterday").trigger.fields}
    assert (settle["hour"], settle["minute"]) == ("1", "30")
    assert {f.name: str(f) for f in jobs.pop("sweep_wallets").trigger.fields}["hour"] == "2"
    freeze = jobs.pop("freeze_overdue_credit")
    assert {f.name: str(f) for f in freeze.trigger.fields}["minute"] == "15"

    assert {f.name: str(f) for f in daily.trigger.fields}["hour"] == "2"
    assert {name: job.trigger.interval.total_seconds() for name, job in jobs.items()} == {
        "renew_lease": 10, "void_expired_pending": 45, "check_ledger": 900,
        "expire_unpaid_orders": 300, "auto_confirm_receipts": 300, "complete_orders": 300,
        "lapse_credit_increases": 300, "retry_callbacks": 60, "reconcile_stuck_payments": 300, "send_refunds": 60, "release_clearings": 300,
        "deliver_webhooks": 10, "send_payouts": 60, "poll_payouts": 60,
        "send_splits": 60, "poll_splits": 60, "send_split_returns": 60,
        "recover_clawback_advances": 300}


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def test_job_runs_are_counted_and_served_by_the_scheduler_s_own_metrics(
        session_factory, lock_name):
    """The scheduler's /metrics (``CL_SCHEDULER_METRICS_PORT``): the lease
    holder's runs by outcome and their durations; a run skipped for want of
    the lease is not counted."""
    import http.client
    import socket

    from service import metrics

    def count(job: str, outcome: str) -> float:
        return metrics.job_runs_total.labels(job=job, outcome=outcome)._value.get()

    clock = Clock(T0)
    leader = Lease(session_factory, ttl_seconds=TTL, name=lock_name, holder="leader", clock=clock)
    other = Lease(session_factory, ttl_seconds=TTL, name=lock_name, holder="other", clock=clock)
    job = f"{lock_name}-job"
    before = (count(job, "ok"), count(job, "failed"))

    def broken():
        raise RuntimeError("the bank did not answer")

    assert run_if_leader(leader, job, lambda: None) is True
    assert run_if_leader(leader, job, broken) is True
    assert run_if_leader(other, job, lambda: None) is False
    assert (count(job, "ok") - before[0], count(job, "failed") - before[1]) == (1, 1)

    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = metrics.serve_exposition(port, host="127.0.0.1")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        text = response.read().decode()
        assert response.status == 200
        assert f'scheduler_job_runs_total{{job="{job}",outcome="failed"}} 1.0' in text
        assert f'scheduler_job_duration_seconds_count{{job="{job}"}} 2.0' in text
    finally:
        server.shutdown()
        server.server_close()
