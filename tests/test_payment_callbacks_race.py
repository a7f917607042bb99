"""On PostgreSQL (issue 5): 1,000 callbacks for 100 payments, delivered
concurrently in random order with duplicates, each payment applied exactly
once; and the inbox keeps every one of them. Applied in each request, and
by four background appliers (as four server processes would), which apply
whatever has queued up in batches: duplicates meet inside a batch and
across batches racing in other appliers."""
from __future__ import annotations

import random
import threading

import pytest
from sqlalchemy import func, select

import ledger
from channel_api import funding, gateway_payments
from ledger import utcnow
from payments.gateway import CallbackRequest, PaymentRequest
from payments.models import GatewayCallback, Payment
from service import callbacks
from service.gateways import sandbox
from tests.channel_fixtures import engine  # noqa: F401  (this module commits: a database of its own)
from tests.channel_fixtures import store_buying_from_distributor

PAYMENTS, COPIES, THREADS = 100, 10, 8


@pytest.mark.postgres_only
@pytest.mark.parametrize("appliers", [0, 4], ids=["inline", "background"])
def test_a_thousand_callbacks_for_a_hundred_payments_apply_each_once(session_factory, unique,
                                                                     appliers, monkeypatch):
    u = unique
    adapter, vendor = sandbox("race-secret-0123456789")
    with session_factory() as s, s.begin():
        store_buying_from_distributor(s, u)
        payments = [gateway_payments.start_deposit_payment(
            s, buyer=f"{u}S", seller=f"{u}D", amount_minor=100 + n, gateway="sandbox")
            for n in range(PAYMENTS)]
    deliveries = []
    for payment in payments:
        adapter.create_payment(PaymentRequest(
            out_trade_no=payment.public_id, amount_minor=payment.amount_minor, currency="CNY",
            description="deposit", notify_url="http://localhost/callbacks/sandbox"))
        headers, body = vendor.pay(payment.public_id)
        event_id = __import__("json").loads(body)["id"]
        deliveries.append((headers, body))
        deliveries += [vendor.redeliver(event_id) for _ in range(COPIES - 1)]
    random.Random(7).shuffle(deliveries)
    assert len(deliveries) == PAYMENTS * COPIES

    answers: list[int] = []
    lock = threading.Lock()
    chunks = [deliveries[i::THREADS] for i in range(THREADS)]
    barrier = threading.Barrier(THREADS)
    background = [callbacks.BackgroundApplier(session_factory) for _ in range(appliers)]
    batches: list[int] = []
    apply_all = callbacks.apply_all

    def counted(factory, batch):
        batches.append(len(batch))
        apply_all(factory, batch)

    monkeypatch.setattr(callbacks, "apply_all", counted)

    def sender(number, chunk):
        applier = background[number % appliers] if appliers else None
        barrier.wait()
        for headers, body in chunk:
            ack = callbacks.receive(session_factory, "sandbox", adapter, CallbackRequest(
                headers=headers, body=body, received_at=utcnow()), applier)
            with lock:
                answers.append(ack.status)

    threads = [threading.Thread(target=sender, args=(n, c)) for n, c in enumerate(chunks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for applier in background:
        applier.drain()
    if appliers:  # they did meet in batches
        assert sum(batches) == len(deliveries) and max(batches) > 1, batches

    assert answers == [200] * len(deliveries)
    with session_factory() as s:
        ids = [p.public_id for p in payments]
        states = dict(s.execute(select(GatewayCallback.state, func.count()).where(
            GatewayCallback.out_trade_no.in_(ids)).group_by(GatewayCallback.state)).all())
        assert states == {"applied": PAYMENTS, "duplicate": PAYMENTS * (COPIES - 1)}
        assert s.scalar(select(func.count()).select_from(Payment).where(
            Payment.public_id.in_(ids), Payment.state == "succeeded")) == PAYMENTS
        deposit = funding.balances(s, buyer=f"{u}S", seller=f"{u}D").prepaid.posted_minor
        assert deposit == sum(100 + n for n in range(PAYMENTS))
        assert ledger.check_ledger(s) == []
