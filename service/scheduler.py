"""The scheduler process: periodic ledger jobs, run by one scheduler at a time.

Any number of scheduler processes may be started (for availability); a lease
row in ``scheduler_lock`` decides which one acts. The holder renews the lease
every TTL/3; if it dies, its lease runs out and another process takes over
within about TTL + TTL/3. Jobs run only while their process holds the lease.

The lease is taken with one conditional statement, so it behaves the same on
PostgreSQL and SQLite:

    UPDATE scheduler_lock SET holder = me, expires_at = now + ttl
     WHERE name = :name AND (holder = me OR expires_at < now)

and, when no row exists yet, an INSERT inside a savepoint (losing that race is
a primary-key violation, i.e. "someone else holds it"). On PostgreSQL two
racing UPDATEs serialise on the row lock and the second re-checks the WHERE
against the new row, so it matches nothing; on SQLite the transaction holds
the write lock from BEGIN (``service.db``). Times come from the caller's clock
(injected in tests); scheduler hosts need clocks that agree to well under TTL.

A job that outlives a lost lease is not interrupted: every job is one or more
short transactions through the ledger, which locks what it writes and is
idempotent, so a brief overlap of two schedulers is harmless; the lease keeps
it from being the normal case.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import case, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

import ledger
from channel_api import (
    cash,
    clawback_advances,
    clearings,
    credit,
    funding,
    idempotency,
    orders,
    outbox,
    payouts,
    returns,
    settlements,
    split_instructions,
    split_returns,
    tags,
    webhooks,
)
from service import callbacks, metrics
from service.gateways import build_gateways
from service.logs import bound_request_id
from service.models import SchedulerLock

LOCK_NAME = "ledger-jobs"
VOID_BATCH_SIZE = 1000
# Dynamic tags are recomputed once a day at this hour of the business timezone.
RECOMPUTE_TAGS_HOUR = 2
SETTLEMENT_HOUR = 1  # yesterday is settled at 01:30, scheduled payouts asked for at 02:00
EXPIRE_ORDERS_SECONDS = 300  # an unpaid order's holds outlive its window by at most this
CALLBACK_RETRY_SECONDS = 60  # callbacks stored but not applied are tried again

log = logging.getLogger("service.scheduler")
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def default_holder() -> str:
    """Unique per process, readable by an operator looking at the lock row."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# --- the lease ------------------------------------------------------------------


def try_acquire_lease(session: Session, name: str, holder: str, ttl_seconds: int, now: datetime) -> bool:
    """Take or renew the lease; True if ``holder`` holds it until now + ttl.

    Flushes, never commits: call inside ``with session.begin():``.
    """
    expires_at = now + timedelta(seconds=ttl_seconds)
    taken = session.execute(
        update(SchedulerLock)
        .where(SchedulerLock.name == name,
               or_(SchedulerLock.holder == holder, SchedulerLock.expires_at < now))
        .values(
            # A renewal keeps its acquired_at; a takeover starts a new one.
            acquired_at=_acquired_at_on_update(holder, now),
            holder=holder,
            expires_at=expires_at,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if taken == 1:
        return True
    if session.scalar(select(SchedulerLock.name).where(SchedulerLock.name == name)) is not None:
        return False  # the row exists and someone else's lease is still running
    try:
        with session.begin_nested():
            session.execute(insert(SchedulerLock).values(
                name=name, holder=holder, acquired_at=now, expires_at=expires_at))
    except IntegrityError:
        return False  # another scheduler inserted the row first
    return True


def _acquired_at_on_update(holder: str, now: datetime):
    return case((SchedulerLock.holder == holder, SchedulerLock.acquired_at), else_=now)


def release_lease(session: Session, name: str, holder: str, now: datetime) -> bool:
    """Give the lease up at once (clean shutdown) so another scheduler need not wait out the TTL."""
    released = session.execute(
        update(SchedulerLock)
        .where(SchedulerLock.name == name, SchedulerLock.holder == holder)
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    return released == 1


def lease_holder(session: Session, name: str, now: datetime) -> str | None:
    """Who holds the lease at ``now``, or None."""
    row = session.execute(
        select(SchedulerLock.holder, SchedulerLock.expires_at).where(SchedulerLock.name == name)
    ).first()
    if row is None or _as_utc(row.expires_at) <= now:
        return None
    return row.holder


def _as_utc(value: datetime) -> datetime:
    # SQLite returns naive datetimes; everything stored is UTC.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


@dataclass
class Lease:
    """One process's view of the lease: renews it, and says whether jobs may run."""

    session_factory: sessionmaker[Session]
    ttl_seconds: int
    name: str = LOCK_NAME
    holder: str = field(default_factory=default_holder)
    clock: Clock = utcnow
    held_until: datetime | None = None

    def renew(self) -> bool:
        """Acquire or renew; a database error counts as "not held" (and is logged)."""
        now = self.clock()
        try:
            with self.session_factory() as session, session.begin():
                held = try_acquire_lease(session, self.name, self.holder, self.ttl_seconds, now)
        except SQLAlchemyError:
            log.exception("scheduler lease: could not reach the database")
            held = False
        was_held = self.holds()
        self.held_until = now + timedelta(seconds=self.ttl_seconds) if held else None
        if held and not was_held:
            log.info("scheduler lease %r acquired by %s", self.name, self.holder)
        elif was_held and not held:
            log.warning("scheduler lease %r lost by %s", self.name, self.holder)
        return held

    def holds(self) -> bool:
        return self.held_until is not None and self.clock() < self.held_until

    def release(self) -> None:
        if self.held_until is None:
            return
        try:
            with self.session_factory() as session, session.begin():
                release_lease(session, self.name, self.holder, self.clock())
        except SQLAlchemyError:
            log.exception("scheduler lease: could not release; it will expire by itself")
        self.held_until = None


# --- jobs -------------------------------------------------------------------------


def void_expired_pending(session_factory: sessionmaker[Session], now: datetime | None = None) -> int:
    """Void every expired pending entry, in batches of short transactions."""
    total = 0
    while True:
        with session_factory() as session, session.begin():
            voided = ledger.void_expired_pending(session, now=now, limit=VOID_BATCH_SIZE)
        total += voided
        if voided < VOID_BATCH_SIZE:
            break
    log.info("voided %d expired pending entries", total, extra={"voided": total})
    return total


def check_ledger(session_factory: sessionmaker[Session]) -> list[ledger.Finding]:
    """Run the ledger's invariant checks; every finding is logged at ERROR."""
    with session_factory() as session, session.begin():
        findings = ledger.check_ledger(session)
        entries, postings = ledger.ledger_counts(session)
    for finding in findings:
        log.error("ledger check %s failed for %s: %s", finding.check, finding.subject, finding.message,
                  extra={"check": finding.check, "subject": finding.subject})
    if not findings:
        log.info("ledger OK: %d entries, %d postings checked", entries, postings)
    return findings


def recompute_dynamic_tags(
    session_factory: sessionmaker[Session],
    *,
    only: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    actor: str = "scheduler",
) -> list[tags.RecomputeResult]:
    """Recompute every dynamic tag (or only the one coded ``only``), each in a
    transaction of its own; ``progress(code, done, total)`` after each chunk."""
    with session_factory() as session:
        codes = [only] if only is not None else [t.code for t in tags.list_dynamic_tags(session)]
    results = []
    for code in codes:
        report = (lambda done, total, code=code: progress(code, done, total)) if progress else None
        with session_factory() as session, session.begin():
            result = tags.recompute_dynamic_tag(session, code, progress=report, actor=actor)
        log.info("dynamic tag %s: %d matched, %d added, %d removed", code, result.matched,
                 result.added, result.removed,
                 extra={"tag": code, "matched": result.matched, "added": result.added,
                        "removed": result.removed})
        results.append(result)
    return results


def purge_idempotency_records(session_factory: sessionmaker[Session]) -> int:
    """Forget stored answers of mutating calls older than a week."""
    with session_factory() as session, session.begin():
        purged = idempotency.purge(session)
    log.info("purged %d idempotency records", purged)
    return purged


def _in_batches(session_factory: sessionmaker[Session], step: Callable[[Session, int], int],
                what: str, batch: int = 500) -> int:
    """Run ``step(session, limit)`` in transactions of at most ``batch`` rows
    until it does less than a batch; log the total."""
    total = 0
    while True:
        with session_factory() as session, session.begin():
            done = step(session, batch)
        total += done
        if done < batch:
            break
    if total:
        log.info("%s: %d", what, total, extra={"job_total": total})
    return total


def expire_unpaid_orders(session_factory: sessionmaker[Session]) -> int:
    """Expire orders left awaiting payment past the window, releasing their holds."""
    return _in_batches(session_factory, lambda s, n: funding.expire_unpaid_orders(s, limit=n),
                       "expired unpaid orders")


def auto_confirm_receipts(session_factory: sessionmaker[Session], *,
                          after: timedelta | None = None) -> int:
    """Shipped orders not confirmed within ``after`` count as delivered."""
    return _in_batches(session_factory,
                       lambda s, n: orders.auto_confirm_receipts(s, after=after, limit=n),
                       "auto-confirmed shipped orders")


def release_clearings(session_factory: sessionmaker[Session], tz=None) -> int:
    """Cleared legs whose timing has come move from pending to wallets."""
    return _in_batches(session_factory,
                       lambda s, n: clearings.release_due(s, limit=n, **({"tz": tz} if tz else {})),
                       "released cleared legs")


def complete_orders(session_factory: sessionmaker[Session], *,
                    window: timedelta | None = None) -> int:
    """Delivered orders past the return window, with no return waiting, complete."""
    return _in_batches(session_factory,
                       lambda s, n: returns.complete_orders(s, window=window, limit=n),
                       "completed delivered orders")


def freeze_overdue_credit(session_factory: sessionmaker[Session], tz=None) -> int:
    """Freeze credit lines overdue beyond their seller's policy."""
    with session_factory() as session, session.begin():
        frozen = credit.freeze_overdue_lines(session, **({"tz": tz} if tz else {}))
    log.info("froze %d overdue credit lines", frozen, extra={"frozen": frozen})
    return frozen


def lapse_credit_increases(session_factory: sessionmaker[Session]) -> int:
    """Lower the ledger bound of lines whose temporary increase expired."""
    with session_factory() as session, session.begin():
        return credit.lapse_increases(session)


WEBHOOK_INTERVAL_SECONDS = 10  # a new event's webhook leaves within this


def deliver_webhooks(session_factory: sessionmaker[Session]) -> int:
    """Send due webhooks, batch after batch, until fewer than a batch are due."""
    total = 0
    while True:
        claimed = webhooks.deliver_due(session_factory, limit=100).claimed
        total += claimed
        if claimed < 100:
            return total


def purge_events(session_factory: sessionmaker[Session]) -> int:
    """Forget events (and their deliveries) older than outbox.KEEP_FOR (90 days)."""
    return _in_batches(session_factory, lambda s, n: outbox.purge(s, limit=n), "purged events")


def check_cash_invariant(session_factory: sessionmaker[Session]) -> bool:
    """Check the cash invariant and the claim pairs; every difference is
    logged at ERROR (an alert for finance)."""
    with session_factory() as session:
        result = cash.check_cash(session)
    for position in result.positions:
        if position.difference_minor:
            log.error("cash invariant broken in %s: assets %d, liabilities %d, result %d, "
                      "difference %d", position.currency, position.assets_minor,
                      position.liabilities_minor, position.result_minor,
                      position.difference_minor,
                      extra={"currency": position.currency,
                             "difference_minor": position.difference_minor})
    for claim in result.claims:
        log.error("claim pair broken: %s's %s: buyers %d, memo %d", claim.seller, claim.kind,
                  claim.buyers_minor, claim.memo_minor,
                  extra={"seller": claim.seller, "kind": claim.kind})
    if result.holds:
        log.info("cash invariant holds in %d currencies", len(result.positions))
    return result.holds


def send_payouts(session_factory: sessionmaker[Session], bank) -> int:
    """Approved payouts go to the custody bank as instructions, a batch per
    transaction."""
    if bank is None:
        return 0
    return _in_batches(session_factory,
                       lambda s, n: sum(payouts.send_payouts(s, bank, limit=n).values()),
                       "payouts sent to the bank", batch=200)


def poll_payouts(session_factory: sessionmaker[Session], bank) -> int:
    """Ask the bank about payouts in flight that no callback settled yet."""
    if bank is None:
        return 0
    with session_factory() as session, session.begin():
        summary = payouts.poll_sent(session, bank)
    if summary.applied or summary.conflicts or summary.resent:
        log.info("payout outcomes applied: %d; conflicts: %s; sent again (the bank did not "
                 "know them): %s", summary.applied, summary.conflicts, summary.resent,
                 extra={"applied": summary.applied})
    return summary.applied


def send_splits(session_factory: sessionmaker[Session], adapters, tz=None) -> int:
    """Due legs that gateways carry become split instructions, committed
    before anything is sent (so a crash only resends the same
    ``out_order_no``, which the gateway deduplicates); then what is created
    goes to the gateways. Safe to rerun: a leg is taken up once."""
    with session_factory() as session, session.begin():
        planned = split_instructions.plan_splits(session, adapters,
                                                 **({"tz": tz} if tz else {}))
    with session_factory() as session, session.begin():
        sent = split_instructions.send_planned(session, adapters)
    if planned or sent:
        log.info("split instructions planned: %s; sent: %s", dict(planned), dict(sent),
                 extra={"sent": sent["sent"]})
    return sent["sent"]


def poll_splits(session_factory: sessionmaker[Session], adapters) -> int:
    """Ask the gateways about split instructions they are carrying out;
    each receiver's outcome is posted once."""
    with session_factory() as session, session.begin():
        outcome = split_instructions.poll_splits(session, adapters)
    if outcome:
        log.info("split instructions polled: %s", dict(outcome))
    return sum(n for state, n in outcome.items() if state in ("succeeded", "failed"))


def send_split_returns(session_factory: sessionmaker[Session], adapters) -> int:
    """Split returns refunds asked for go to the gateways (the same
    ``out_return_no`` after an outage) and those under way are polled; each
    success is posted once. Returns how many ended."""
    with session_factory() as session, session.begin():
        outcome = split_returns.send_split_returns(session, adapters)
    if outcome:
        log.info("split returns: %s", dict(outcome))
    return sum(n for state, n in outcome.items() if state in ("succeeded", "failed"))


def sweep_wallets(session_factory: sessionmaker[Session], settings) -> int:
    """The payout schedule: wallets above their registered level are paid
    out, once per business day."""
    day = utcnow().astimezone(settings.tz).date()
    with session_factory() as session, session.begin():
        requested = payouts.sweep_wallets(session, day=day,
                                          approval_threshold_minor=settings.payout_approval_minor)
    log.info("scheduled payouts requested: %d", requested, extra={"requested": requested})
    return requested


def recover_clawback_advances(session_factory: sessionmaker[Session]) -> int:
    """What parties owe back for advanced clawbacks comes out of their
    wallets as money arrives there."""
    with session_factory() as session, session.begin():
        recovered = clawback_advances.recover(session)
    if recovered:
        log.info("clawback advances recovered: %d", recovered, extra={"recovered": recovered})
    return recovered


def settle_yesterday(session_factory: sessionmaker[Session], tz=None) -> int:
    """The daily settlement batch of every party for the business day just
    ended; a rerun settles only who was not."""
    day = settlements.default_day(**({"tz": tz} if tz else {}))
    with session_factory() as session, session.begin():
        run = settlements.settle(session, day, **({"tz": tz} if tz else {}))
    for party in run.mismatched:
        log.error("settlement of %s for %s does not tie to the ledger", party, day,
                  extra={"party": party})
    log.info("settled %s: %d batches (%d already)", day, run.settled, run.already,
             extra={"settled": run.settled})
    return run.settled


def run_if_leader(lease: Lease, job_name: str, job: Callable[[], object]) -> bool:
    """Run ``job`` only if this process holds (and could just renew) the lease.

    Renewing right before the job, not trusting the cached expiry, means a
    process that lost the lease while busy finds out before acting.
    """
    with bound_request_id(f"job-{job_name}-{uuid.uuid4().hex[:12]}"):
        if not lease.renew():
            log.debug("skipping %s: another scheduler holds the lease", job_name)
            return False
        started, outcome = time.perf_counter(), "ok"
        try:
            job()
        except Exception:  # noqa: BLE001 - a failed run must not stop the scheduler
            outcome = "failed"
            log.exception("job %s failed", job_name)
        finally:
            metrics.job_duration_seconds.labels(job=job_name).observe(
                time.perf_counter() - started)
            metrics.job_runs_total.labels(job=job_name, outcome=outcome).inc()
        return True


# --- the process ------------------------------------------------------------------


def build_scheduler(settings, session_factory: sessionmaker[Session], lease: Lease):
    """A BlockingScheduler with the lease keeper, the two ledger jobs, the
    daily dynamic-tag recompute (at RECOMPUTE_TAGS_HOUR, business timezone)
    and, half an hour later, the purge of old idempotency records."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    scheduler = BlockingScheduler(
        timezone=settings.tz,
        # One run at a time per job; after a pause, run once rather than catch up.
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
    )
    scheduler.add_job(
        lambda: _renew_quietly(lease), "interval", id="renew_lease",
        seconds=max(1, settings.scheduler_lock_ttl_seconds // 3), next_run_time=utcnow(),
    )
    scheduler.add_job(
        run_if_leader, "interval", id="void_expired_pending",
        seconds=settings.pending_expiry_interval_seconds,
        args=(lease, "void_expired_pending", lambda: void_expired_pending(session_factory)),
    )
    scheduler.add_job(
        run_if_leader, "interval", id="check_ledger",
        seconds=settings.check_interval_seconds,
        args=(lease, "check_ledger", lambda: check_ledger(session_factory)),
    )
    scheduler.add_job(
        run_if_leader, "cron", id="recompute_dynamic_tags",
        hour=RECOMPUTE_TAGS_HOUR, minute=0,
        # Daily: a scheduler that was down at the hour still runs it within the next hour.
        misfire_grace_time=3600,
        args=(lease, "recompute_dynamic_tags", lambda: recompute_dynamic_tags(session_factory)),
    )
    scheduler.add_job(
        run_if_leader, "interval", id="expire_unpaid_orders", seconds=EXPIRE_ORDERS_SECONDS,
        args=(lease, "expire_unpaid_orders", lambda: expire_unpaid_orders(session_factory)),
    )
    confirm_after = timedelta(days=settings.auto_confirm_days)
    return_window = timedelta(days=settings.return_window_days)
    scheduler.add_job(
        run_if_leader, "interval", id="auto_confirm_receipts", seconds=EXPIRE_ORDERS_SECONDS,
        args=(lease, "auto_confirm_receipts",
              lambda: auto_confirm_receipts(session_factory, after=confirm_after)),
    )
    scheduler.add_job(
        run_if_leader, "interval", id="release_clearings", seconds=EXPIRE_ORDERS_SECONDS,
        args=(lease, "release_clearings", lambda: release_clearings(session_factory, settings.tz)),
    )
    scheduler.add_job(
        run_if_leader, "interval", id="complete_orders", seconds=EXPIRE_ORDERS_SECONDS,
        args=(lease, "complete_orders",
              lambda: complete_orders(session_factory, window=return_window)),
    )
    scheduler.add_job(
        run_if_leader, "interval", id="lapse_credit_increases", seconds=EXPIRE_ORDERS_SECONDS,
        args=(lease, "lapse_credit_increases", lambda: lapse_credit_increases(session_factory)),
    )
    scheduler.add_job(
        run_if_leader, "interval", id="deliver_webhooks", seconds=WEBHOOK_INTERVAL_SECONDS,
        args=(lease, "deliver_webhooks", lambda: deliver_webhooks(session_factory)),
    )
    scheduler.add_job(
        run_if_leader, "cron", id="purge_events",
        hour=RECOMPUTE_TAGS_HOUR, minute=45, misfire_grace_time=3600,
        args=(lease, "purge_events", lambda: purge_events(session_factory)),
    )
    built = build_gateways(settings)
    gateways = built.adapters
    scheduler.add_job(
        run_if_leader, "interval", id="retry_callbacks", seconds=CALLBACK_RETRY_SECONDS,
        args=(lease, "retry_callbacks",
              lambda: callbacks.retry_stored(session_factory, gateways)),
    )
    scheduler.add_job(
        run_if_leader, "interval", id="send_refunds", seconds=CALLBACK_RETRY_SECONDS,
        args=(lease, "send_refunds", lambda: callbacks.send_refunds(session_factory, gateways)),
    )
    scheduler.add_job(
        run_if_leader, "interval", id="reconcile_stuck_payments", seconds=EXPIRE_ORDERS_SECONDS,
        args=(lease, "reconcile_stuck_payments",
              lambda: callbacks.reconcile_stuck(session_factory, gateways)),
    )
    bank = built.payout_bank
    scheduler.add_job(
        run_if_leader, "interval", id="send_payouts", seconds=CALLBACK_RETRY_SECONDS,
        args=(lease, "send_payouts", lambda: send_payouts(session_factory, bank)),
    )
    scheduler.add_job(
        run_if_leader, "interval", id="poll_payouts", seconds=CALLBACK_RETRY_SECONDS,
        args=(lease, "poll_payouts", lambda: poll_payouts(session_factory, bank)),
    )
    scheduler.add_job(
        run_if_leader, "interval", id="send_splits", seconds=CALLBACK_RETRY_SECONDS,
        args=(lease, "send_splits", lambda: send_splits(session_factory, gateways, settings.tz)),
    )
    scheduler.add_job(
        run_if_leader, "interval", id="poll_splits", seconds=CALLBACK_RETRY_SECONDS,
        args=(lease, "poll_splits", lambda: poll_splits(session_factory, gateways)),
    )
    scheduler.add_job(
        run_if_leader, "interval", id="send_split_returns", seconds=CALLBACK_RETRY_SECONDS,
        args=(lease, "send_split_returns", lambda: send_split_returns(session_factory, gateways)),
    )
    scheduler.add_job(
        run_if_leader, "interval", id="recover_clawback_advances", seconds=EXPIRE_ORDERS_SECONDS,
        args=(lease, "recover_clawback_advances",
              lambda: recover_clawback_advances(session_factory)),
    )
    scheduler.add_job(
        run_if_leader, "cron", id="settle_yesterday",
        hour=SETTLEMENT_HOUR, minute=30, misfire_grace_time=3600,
        args=(lease, "settle_yesterday", lambda: settle_yesterday(session_factory, settings.tz)),
    )
    scheduler.add_job(
        run_if_leader, "cron", id="sweep_wallets",
        hour=SETTLEMENT_HOUR + 1, minute=0, misfire_grace_time=3600,
        args=(lease, "sweep_wallets", lambda: sweep_wallets(session_factory, settings)),
    )
    scheduler.add_job(
        run_if_leader, "cron", id="check_cash_invariant",
        hour=RECOMPUTE_TAGS_HOUR + 1, minute=0, misfire_grace_time=3600,
        args=(lease, "check_cash_invariant", lambda: check_cash_invariant(session_factory)),
    )
    scheduler.add_job(
        run_if_leader, "cron", id="freeze_overdue_credit",
        hour=RECOMPUTE_TAGS_HOUR, minute=15, misfire_grace_time=3600,
        args=(lease, "freeze_overdue_credit",
              lambda: freeze_overdue_credit(session_factory, settings.tz)),
    )
    scheduler.add_job(
        run_if_leader, "cron", id="purge_idempotency_records",
        hour=RECOMPUTE_TAGS_HOUR, minute=30, misfire_grace_time=3600,
        args=(lease, "purge_idempotency_records",
              lambda: purge_idempotency_records(session_factory)),
    )
    return scheduler


def _renew_quietly(lease: Lease) -> None:
    with bound_request_id(f"job-renew_lease-{uuid.uuid4().hex[:12]}"):
        lease.renew()


def run(settings, session_factory: sessionmaker[Session]) -> None:
    """Run until SIGINT or SIGTERM; release the lease on the way out."""
    lease = Lease(session_factory, ttl_seconds=settings.scheduler_lock_ttl_seconds)
    scheduler = build_scheduler(settings, session_factory, lease)

    def _stop(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _stop)
    exporter = None
    if settings.scheduler_metrics_port:
        exporter = metrics.serve_exposition(settings.scheduler_metrics_port)
        log.info("scheduler metrics at :%d/metrics", settings.scheduler_metrics_port)
    # APScheduler logs every run at INFO; our jobs log what they did instead.
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    log.info("scheduler %s starting (lease %r, ttl %ds)", lease.holder, lease.name,
             settings.scheduler_lock_ttl_seconds)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=True)
        lease.release()
        if exporter is not None:
            exporter.shutdown()
        log.info("scheduler %s stopped", lease.holder)
