"""Verified callbacks applied in batches (issue 5): a background applier
applies whatever has queued up in one transaction
(``gateway_payments.apply_events``). Each callback of a batch ends as it
would alone: duplicates in the batch and money paid twice are caught,
money that cannot be applied goes to suspense, an order moves on, a
refund notice before its refund waits; a batch costs the same statements
however many deposits it holds; a batch that fails is applied callback by
callback, so one bad callback holds up no other."""
from __future__ import annotations

import pytest
from sqlalchemy import event, func, select

import ledger
from channel_api import funding, gateway_payments, orders
from channel_api.books import RECEIVABLE_SHARDS, SUSPENSE, receivable_account
from channel_api.models.network import AuditRecord
from channel_api.models.events import OutboxEvent
from ledger import utcnow
from payments import inbox
from payments.gateway import CallbackRequest, GatewayEvent
from payments.models import CallbackClaim, GatewayCallback, Payment, PaymentException
from service import callbacks
from tests.channel_fixtures import (  # noqa: F401  (fixtures)
    client,
    engine,
    order_with_gateway_part,
    tea_network_with_deposit,
)


@pytest.fixture
def net(session_factory, unique):
    return tea_network_with_deposit(session_factory, unique)


def deposits(session_factory, net, *amounts):
    with session_factory() as s, s.begin():
        return [gateway_payments.start_deposit_payment(
            s, buyer=net.codes["s1"], seller=net.codes["d1"], amount_minor=amount,
            gateway="sandbox").public_id for amount in amounts]


def stored(session_factory, how_many):
    """Callback rows as the endpoint stores them (the batch applies events)."""
    with session_factory() as s, s.begin():
        return [inbox.store(s, "sandbox", CallbackRequest(headers={"X": "1"}, body=b"{}",
                                                         received_at=utcnow()))
                for _ in range(how_many)]


def paid(out_trade_no, transaction_id, amount, kind="payment_succeeded"):
    return GatewayEvent(gateway="sandbox", kind=kind, transaction_id=transaction_id,
                        out_trade_no=out_trade_no, amount_minor=amount, currency="CNY")


def deposit_of(session_factory, net):
    with session_factory() as s:
        return funding.balances(s, buyer=net.codes["s1"],
                                seller=net.codes["d1"]).prepaid.posted_minor


def test_a_mixed_batch_ends_each_callback_as_it_would_end_alone(client, net, session_factory,
                                                                unique):
    u = unique
    p1, p2, p3, p4 = deposits(session_factory, net, 100, 200, 300, 400)
    order, payment = order_with_gateway_part(client, net)
    order_payment = payment["public_id"]
    with session_factory() as s:
        held = ledger.get_accounts(s, [SUSPENSE])
        suspense_before = held[SUSPENSE].posted_minor if SUSPENSE in held else 0
        events_before = s.scalar(select(func.count()).select_from(OutboxEvent).where(
            OutboxEvent.type == "payment.succeeded"))
    ids = stored(session_factory, 9)
    batch = [
        (ids[0], paid(p1, f"{u}t1", 100)),
        (ids[1], paid(p1, f"{u}t1", 100)),             # the same transaction again
        (ids[2], paid(p2, f"{u}t2", 200)),
        (ids[3], paid(p1, f"{u}t9", 100)),             # p1 paid a second time
        (ids[4], paid(f"pay_{u}nope", f"{u}t3", 50)),   # not ours
        (ids[5], paid(p3, f"{u}t4", 301)),             # another amount
        (ids[6], paid(p4, f"{u}t5", 400, "payment_failed")),
        (ids[7], paid(order_payment, f"{u}t6", 600)),
        (ids[8], GatewayEvent(gateway="sandbox", kind="refund_succeeded",
                              transaction_id=f"{u}r1", out_trade_no=p2, amount_minor=10,
                              currency="CNY", out_refund_no=f"ref_{u}")),  # before its refund
        (ids[0], paid(p1, f"{u}t1", 100)),             # one callback twice in the batch
    ]
    with session_factory() as s, s.begin():
        outcome = gateway_payments.apply_events(s, batch)
    assert outcome == ["applied", "duplicate", "applied", "applied", "applied", "applied",
                       "applied", "applied", "waiting", "applied"]

    with session_factory() as s:
        view = {p: gateway_payments.get_payment(s, p) for p in (p1, p2, p3, p4, order_payment)}
        assert {p: v.state for p, v in view.items()} == {
            p1: "succeeded", p2: "succeeded", p3: "created", p4: "failed",
            order_payment: "succeeded"}
        assert view[p1].transaction_id == f"{u}t1"
        entries = dict(s.execute(select(Payment.public_id, Payment.entry_id).where(
            Payment.public_id.in_([p1, p2, order_payment]))).all())
        assert all(entries.values()) and len(set(entries.values())) == 3
        assert orders.get_order(s, order).state == "paid"
        assert ledger.get_account(s, funding.escrow_account(order)).posted_minor == 1000
        assert ledger.get_account(s, SUSPENSE).posted_minor - suspense_before == 100 + 50 + 301
        kinds = sorted(e.kind for e in s.scalars(select(PaymentException).where(
            PaymentException.callback_id.in_(ids))))
        assert kinds == ["amount_mismatch", "paid_twice", "unknown_payment"]
        assert s.scalar(select(func.count()).select_from(OutboxEvent).where(
            OutboxEvent.type == "payment.succeeded")) - events_before == 3
        audited = {r.details["payment"] for r in s.scalars(select(AuditRecord).where(
            AuditRecord.action == "payment.succeeded", AuditRecord.subject == net.codes["s1"]))}
        assert {p1, p2, order_payment} <= audited and not {p3, p4} & audited
        claims = dict(s.execute(select(CallbackClaim.callback_id, CallbackClaim.dedupe_key)
                                .where(CallbackClaim.callback_id.in_(ids))).all())
        assert set(claims) == {ids[0], ids[2], ids[3], ids[4], ids[5], ids[6], ids[7]}
        rows = {c.id: c for c in s.scalars(select(GatewayCallback).where(
            GatewayCallback.id.in_(ids)))}
        assert rows[ids[1]].dedupe_key is None and rows[ids[0]].dedupe_key == claims[ids[0]]
        assert rows[ids[0]].attempts == 1 and rows[ids[5]].amount_minor == 301
        assert ledger.check_ledger(s) == []

    assert deposit_of(session_factory, net) == 400 + 100 + 200 - 400  # the order took 400

    # Applied again (a retry of the whole batch): nothing moves twice.
    with session_factory() as s, s.begin():
        again = gateway_payments.apply_events(s, batch[:8])
    assert again == ["applied", "duplicate"] + ["applied"] * 6
    assert deposit_of(session_factory, net) == 300


def test_a_batch_costs_the_same_statements_however_many_deposits_it_holds(
        net, session_factory, engine, unique):
    counts = []
    for size in (1, 3, 30):  # the first opens the accounts
        numbers = deposits(session_factory, net, *range(100, 100 + size))
        ids = stored(session_factory, size)
        batch = [(i, paid(p, f"{unique}-{size}-{n}", 100 + n))
                 for n, (i, p) in enumerate(zip(ids, numbers))]
        statements = []

        def count(conn, cursor, statement, parameters, context, executemany):
            statements.append(statement)

        event.listen(engine, "before_cursor_execute", count)
        try:
            with session_factory() as s, s.begin():
                assert gateway_payments.apply_events(s, batch) == ["applied"] * size
        finally:
            event.remove(engine, "before_cursor_execute", count)
        counts.append(len(statements))
    assert counts[1] == counts[2], counts
    assert counts[2] <= 20, counts  # one callback applied alone cost 17 before batches
    with session_factory() as s:
        assert ledger.check_ledger(s) == []
        receivable = ledger.get_account(s, receivable_account("sandbox"))
        assert receivable.posted_minor >= 100 + sum(range(100, 103)) + sum(range(100, 130))
        # Opened with shards: batches applied by several processes at once
        # debit it without queuing on one balance row.
        assert receivable.balance_shards == RECEIVABLE_SHARDS
    assert deposit_of(session_factory, net) == 400 + 100 + sum(range(100, 103)) + sum(range(100, 130))


def test_a_batch_that_fails_is_applied_callback_by_callback(net, session_factory, monkeypatch,
                                                            unique):
    good, bad, other = deposits(session_factory, net, 100, 200, 300)
    ids = stored(session_factory, 3)
    real = gateway_payments._problem

    def breaks_on_bad(session, row, event_):
        if event_.out_trade_no == bad:
            raise RuntimeError("the database went away")
        return real(session, row, event_)

    monkeypatch.setattr(gateway_payments, "_problem", breaks_on_bad)
    callbacks.apply_all(session_factory, [
        ("sandbox", ids[0], paid(good, f"{unique}g", 100)),
        ("sandbox", ids[1], paid(bad, f"{unique}b", 200)),
        ("sandbox", ids[2], paid(other, f"{unique}o", 300))])
    with session_factory() as s:
        rows = {c.id: c for c in s.scalars(select(GatewayCallback).where(
            GatewayCallback.id.in_(ids)))}
        assert [rows[i].state for i in ids] == ["applied", "failed", "applied"]
        assert "the database went away" in rows[ids[1]].reason
        assert gateway_payments.get_payment(s, bad).state == "created"
    assert deposit_of(session_factory, net) == 400 + 100 + 300

    monkeypatch.setattr(gateway_payments, "_problem", real)  # the job's retry applies it
    callbacks.apply_all(session_factory, [("sandbox", ids[1], paid(bad, f"{unique}b", 200))])
    assert deposit_of(session_factory, net) == 400 + 100 + 300 + 200


def test_the_retry_job_verifies_stored_callbacks_again_and_applies_them_as_one_batch(
        net, session_factory, monkeypatch, unique):
    """A backlog (callbacks stored, then the process died before applying
    them) is worked off in batches: each verified again from its raw row,
    a tampered one rejected, the rest applied together."""
    from datetime import timedelta

    from payments.gateway import PaymentRequest
    from service.gateways import sandbox

    adapter, vendor = sandbox("retry-secret-0123456789")
    numbers = deposits(session_factory, net, 110, 220, 330)
    raw = []
    for number, amount in zip(numbers, (110, 220, 330)):
        adapter.create_payment(PaymentRequest(out_trade_no=number, amount_minor=amount,
                                              currency="CNY", description="d",
                                              notify_url="http://x"))
        raw.append(vendor.pay(number))
    # The first notice again, its amount altered on the way: the signature fails.
    headers, body = vendor.redeliver(__import__("json").loads(raw[0][1])["id"])
    raw.append((headers, body.replace(b"110", b"999")))
    with session_factory() as s, s.begin():
        ids = [inbox.store(s, "sandbox", CallbackRequest(headers=h, body=b,
                                                         received_at=utcnow()))
               for h, b in raw]
    batches = []
    apply_all = callbacks.apply_all

    def counted(factory, batch):
        batches.append(sorted(callback_id for _, callback_id, _ in batch))
        apply_all(factory, batch)

    monkeypatch.setattr(callbacks, "apply_all", counted)
    tried = callbacks.retry_stored(session_factory, {"sandbox": adapter},
                                   now=utcnow() + timedelta(minutes=1))
    assert tried >= 4
    assert batches == [sorted(ids[:3])]
    with session_factory() as s:
        rows = {c.id: c for c in s.scalars(select(GatewayCallback).where(
            GatewayCallback.id.in_(ids)))}
        assert [rows[i].state for i in ids] == ["applied", "applied", "applied", "rejected"]
    assert deposit_of(session_factory, net) == 400 + 110 + 220 + 330


def test_the_background_applier_outlives_a_batch_it_could_not_apply(
        net, session_factory, monkeypatch, unique):
    """The database gone even for marking a callback failed: the applier's
    thread logs it and goes on with what comes next (the stored callbacks
    wait for the retry job)."""
    first, second = deposits(session_factory, net, 10, 20)
    ids = stored(session_factory, 2)
    applier = callbacks.BackgroundApplier(session_factory)
    real = callbacks.apply_all
    outage = [True]

    def flaky(factory, batch):
        if outage[0]:
            raise RuntimeError("could not connect to server")
        real(factory, batch)

    monkeypatch.setattr(callbacks, "apply_all", flaky)
    applier.submit("sandbox", ids[0], paid(first, f"{unique}f", 10))
    applier.drain()
    thread = applier._thread
    outage[0] = False
    applier.submit("sandbox", ids[1], paid(second, f"{unique}s", 20))
    applier.drain()
    assert applier._thread is thread and thread.is_alive()  # the same thread went on
    with session_factory() as s:
        rows = {c.id: c.state for c in s.scalars(select(GatewayCallback).where(
            GatewayCallback.id.in_(ids)))}
    assert rows == {ids[0]: "received", ids[1]: "applied"}
    assert deposit_of(session_factory, net) == 400 + 20
