"""Receiving a gateway callback, the same way for the HTTP endpoint, the
sandbox's checkout page and CLI, and the retry job:

1. store it raw, in its own transaction, before anything else;
2. verify it with the gateway's adapter (a bad signature or a stale
   timestamp: stored as rejected, answered with the gateway's failure);
3. apply it in a second transaction, exactly once per gateway transaction
   (``channel_api.gateway_payments.apply_event``): in the request
   (``CL_CALLBACK_APPLY=inline``, the default) or on a thread of the
   process (``background``: the gateway is answered before);
4. answer the gateway's success. If applying failed, the callback stays in
   the inbox marked ``failed`` and the retry job applies it later: it is
   stored, so it is acknowledged.
"""
from __future__ import annotations

import logging
import queue
import threading

from sqlalchemy.orm import Session, sessionmaker

from channel_api import gateway_payments
from ledger import utcnow
from payments import inbox
from payments.gateway import Acknowledgement, CallbackRejected, CallbackRequest, Gateway
from payments.models import GatewayCallback

log = logging.getLogger(__name__)


def receive(session_factory: sessionmaker[Session], name: str, adapter: Gateway,
            request: CallbackRequest, applier: "BackgroundApplier | None" = None
            ) -> Acknowledgement:
    with session_factory() as session, session.begin():
        callback_id = inbox.store(session, name, request)
    return process(session_factory, name, adapter, callback_id, request, applier)


class BackgroundApplier:
    """Applies verified callbacks on a thread of this process, so a gateway
    is answered as soon as its callback is stored and verified
    (``CL_CALLBACK_APPLY=background``). The thread takes whatever has
    queued up while it worked, up to ``batch`` callbacks, and applies them
    in one transaction (``gateway_payments.apply_events``): under load a
    batch costs a few statements and one commit however many it holds;
    a lone callback is a batch of one. A batch that fails is applied again
    callback by callback, so one bad callback cannot hold up the others.
    A callback whose process stops before applying it stays ``received``
    in the inbox, and the retry job applies it: nothing is lost, it is
    only later."""

    def __init__(self, session_factory: sessionmaker[Session], batch: int = 100) -> None:
        self.session_factory = session_factory
        self.batch = batch
        self.queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, name: str, callback_id: int, event) -> None:
        with self._lock:  # started on first use: after gunicorn forks its workers
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="callback-applier",
                                                daemon=True)
                self._thread.start()
        self.queue.put((name, callback_id, event))

    def _run(self) -> None:
        while True:
            batch = [self.queue.get()]
            while len(batch) < self.batch:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                apply_all(self.session_factory, batch)
            except Exception:  # noqa: BLE001 - e.g. the database is down: the thread goes on
                # Not even marked failed: the callbacks stay ``received`` in
                # the inbox and the retry job applies them once it can.
                log.exception("a batch of %d callbacks could not be applied nor marked; "
                              "the retry job will apply them", len(batch))
            finally:
                for _ in batch:
                    self.queue.task_done()

    def drain(self) -> None:
        """Wait until everything submitted is applied (tests, benchmarks)."""
        self.queue.join()


def apply_all(session_factory: sessionmaker[Session], batch: list[tuple[str, int, object]]
              ) -> None:
    """Apply (gateway name, callback id, event)s in one transaction; if that
    fails, each in its own (``_apply``: a failure is marked for the job)."""
    if len(batch) > 1:
        try:
            with session_factory() as session, session.begin():
                outcome = gateway_payments.apply_events(
                    session, [(callback_id, event) for _, callback_id, event in batch])
            log.info("applied a batch of %d callbacks: %s", len(batch),
                     {state: outcome.count(state) for state in set(outcome)},
                     extra={"callbacks": len(batch)})
            return
        except Exception:  # noqa: BLE001 - each is tried alone below, failures marked
            log.warning("a batch of %d callbacks failed; applying them one by one", len(batch),
                        exc_info=True)
    for name, callback_id, event in batch:
        _apply(session_factory, name, callback_id, event)


def _apply(session_factory: sessionmaker[Session], name: str, callback_id: int, event) -> None:
    try:
        with session_factory() as session, session.begin():
            state = gateway_payments.apply_event(session, callback_id, event)
        log.info("%s callback %d: %s", name, callback_id, state,
                 extra={"gateway": name, "callback": callback_id, "state": state})
    except Exception as error:  # noqa: BLE001 - stored: the retry job applies it later
        log.exception("%s callback %d could not be applied; it will be retried", name,
                      callback_id)
        with session_factory() as session, session.begin():
            row = inbox.lock(session, callback_id)
            row.state, row.reason = "failed", f"{type(error).__name__}: {error}"[:300]
            row.attempts += 1


def process(session_factory: sessionmaker[Session], name: str, adapter: Gateway,
            callback_id: int, request: CallbackRequest,
            applier: "BackgroundApplier | _Collected | None" = None) -> Acknowledgement:
    try:
        event = adapter.verify_callback(request)
    except CallbackRejected as rejection:
        with session_factory() as session, session.begin():
            row = inbox.lock(session, callback_id)
            if rejection.code == "not_actionable":  # verified; nothing to do yet
                inbox.ignore(row, str(rejection))
                return adapter.acknowledge(True)
            inbox.reject(row, rejection)
        log.warning("%s callback %d rejected: %s", name, callback_id, rejection.code,
                    extra={"gateway": name, "callback": callback_id, "reason": rejection.code})
        return adapter.acknowledge(False, rejection.code)
    if applier is not None:
        applier.submit(name, callback_id, event)
    else:
        _apply(session_factory, name, callback_id, event)
    return adapter.acknowledge(True)


def retry_stored(session_factory: sessionmaker[Session], adapters: dict[str, Gateway], *,
                 now=None, limit: int = 100) -> int:
    """The job: apply callbacks that were stored but not applied (a failure
    after storing, or a notice waiting for an earlier one). Each is verified
    again from its raw row; those that pass are applied as one batch, as
    the background applier does (a backlog after an outage is worked off
    at the batches' pace). Returns how many it tried."""
    with session_factory() as session:
        ids = inbox.to_retry(session, now=now or utcnow(), limit=limit)
        rows = {i: (session.get(GatewayCallback, i).gateway,
                    inbox.as_request(session.get(GatewayCallback, i))) for i in ids}
    verified = _Collected()
    for callback_id, (name, request) in rows.items():
        adapter = adapters.get(name)
        if adapter is not None:
            process(session_factory, name, adapter, callback_id, request, verified)
    if verified.batch:
        apply_all(session_factory, verified.batch)
    return len(rows)


class _Collected:
    """An applier that only collects what ``process`` verified, for the
    caller to apply as one batch."""

    def __init__(self) -> None:
        self.batch: list[tuple[str, int, object]] = []

    def submit(self, name: str, callback_id: int, event) -> None:
        self.batch.append((name, callback_id, event))


def reconcile_stuck(session_factory: sessionmaker[Session], adapters: dict[str, Gateway], *,
                    now=None, limit: int = 100) -> dict[str, int]:
    """The job for payments still open past their window: ask the gateway
    (its answer is signed and verified by the adapter). Paid: applied as a
    callback would be (stored in the inbox as the query's answer, applied
    once by the same dedupe key, so a late real callback is a duplicate).
    Closed or failed: the payment is closed. Still waiting: closed at our
    end too, as expired (money arriving later goes to suspense). A payment
    collected for a sub-merchant is asked about in that merchant's books."""
    import json

    from channel_api import gateway_payments as gp
    from channel_api import sub_merchants
    from payments.gateway import GatewayEvent, GatewayError
    from payments.models import Payment
    from sqlalchemy import select

    now = now or utcnow()
    with session_factory() as session:
        stuck = [(p.public_id, p.gateway, p.amount_minor, p.currency,
                  sub_merchants.request_fields(sub_merchants.of_payment(session, p)))
                 for p in session.scalars(
            select(Payment).where(Payment.state.in_(("created", "pending")),
                                  Payment.expires_at <= now).order_by(Payment.id).limit(limit))]
    counts = {"paid": 0, "closed": 0, "unreachable": 0}
    for public_id, name, amount, currency, collected_for in stuck:
        adapter = adapters.get(name)
        if adapter is None:
            continue
        try:
            status = adapter.query_payment(public_id, **collected_for)
        except GatewayError:
            counts["unreachable"] += 1
            continue
        if status.state == "succeeded":
            event = GatewayEvent(gateway=name, kind="payment_succeeded",
                                 transaction_id=status.transaction_id,
                                 out_trade_no=public_id,
                                 amount_minor=status.amount_minor or 0, currency=currency,
                                 sub_merchant=status.sub_merchant)
            request = CallbackRequest(headers={"X-Channel-Ledger-Source": "query"},
                                      body=json.dumps({"query": dict(status.raw)},
                                                      default=str).encode(),
                                      received_at=now)
            with session_factory() as session, session.begin():
                callback_id = inbox.store(session, name, request)
            with session_factory() as session, session.begin():
                gp.apply_event(session, callback_id, event, actor="scheduler")
            counts["paid"] += 1
        else:
            with session_factory() as session, session.begin():
                gp.close_payment(session, public_id,
                                 "fail" if status.state == "failed" else "expire")
            counts["closed"] += 1
    if stuck:
        log.info("stuck payments: %s", counts, extra=counts)
    return counts


def send_refunds(session_factory: sessionmaker[Session], adapters: dict[str, Gateway], *,
                 limit: int = 100) -> int:
    """Send refunds decided here but not yet accepted by their gateway (right
    after the return or cancel commits, and by a job for any left over).
    Each is sent with its ``out_refund_no``, which the gateway dedupes, so
    sending one again is safe. Returns how many were sent."""
    from channel_api import gateway_refunds, sub_merchants
    from payments.gateway import GatewayError, GatewayUnavailable, RefundAccepted, RefundRequest

    with session_factory() as session:
        # A payment's refund, or one of money in suspense (no payment here):
        # the view carries the trade's total and where the gateway calls back;
        # money collected for a sub-merchant goes back through that merchant.
        todo = [(refund, refund.total_minor, refund.notify_url or "",
                 sub_merchants.request_fields(sub_merchants.named(session, refund.gateway,
                                                                refund.sub_merchant)))
                for refund in gateway_refunds.to_send(session, limit)]
    sent = 0
    for refund, total, notify_url, collected_for in todo:
        adapter = adapters.get(refund.gateway)
        if adapter is None:
            continue
        try:
            accepted = adapter.refund(RefundRequest(
                out_trade_no=refund.payment, out_refund_no=refund.public_id,
                amount_minor=refund.amount_minor, total_minor=total, currency=refund.currency,
                reason=refund.reason, notify_url=notify_url, **collected_for))
        except GatewayUnavailable:
            log.warning("refund %s: %s did not answer; it will be sent again", refund.public_id,
                        refund.gateway)
            accepted = None
        except GatewayError as refused:  # a lasting refusal: finance decides
            log.error("refund %s refused by %s: %s", refund.public_id, refund.gateway, refused)
            accepted = RefundAccepted(refund.public_id, None, "failed")
        with session_factory() as session, session.begin():
            gateway_refunds.refund_sent(session, refund.public_id, accepted)
        sent += 1
    return sent
