"""Money in suspense refunded to its payer through the gateway that collected
it (issue 5): finance resolves a payment exception with a refund of its
whole amount, recorded ``requested`` with the resolution, sent after commit,
posted when the gateway confirms (Dr ``suspense`` / Cr
``gateway:G:receivable``); a refused refund opens the exception again. The
use case with the sandbox gateway, then the same over HTTP."""
from __future__ import annotations

import json
import secrets
import pytest

import ledger
from channel_api import audit, cash, funding, gateway_payments, gateway_refunds
from channel_api import errors as ca_errors
from ledger import utcnow
from payments import inbox
from payments.gateway import CallbackRequest, PaymentRequest, RefundRequest
from payments.models import GatewayCallback, Payment, PaymentException, PaymentRefund
from service import callbacks
from service.api_payments import GATEWAYS_KEY
from service.gateways import sandbox
from tests.channel_fixtures import add_tea, build_network, client, engine  # noqa: F401  (fixtures)

NOTIFY = {"sandbox": "http://ledger.example/callbacks/sandbox"}
RECEIVABLE = gateway_payments.receivable_account("sandbox")


@pytest.fixture
def net(session_factory, unique):
    net = build_network(session_factory, unique)
    with session_factory() as s, s.begin():
        add_tea(s, net)
    return net


@pytest.fixture
def gateway():
    return sandbox("suspense-refund-secret-0123")


def posted(session_factory, code: str) -> int:
    with session_factory() as s:
        try:
            return ledger.get_account(s, code).posted_minor
        except ledger.AccountNotFound:
            return 0


def deliver(session_factory, adapter, callback) -> int:
    """A sandbox callback received as the endpoint would; its inbox id."""
    headers, body = callback
    callbacks.receive(session_factory, "sandbox", adapter,
                      CallbackRequest(headers=headers, body=body, received_at=utcnow()))
    with session_factory() as s:
        return max(c.id for c in s.query(GatewayCallback))


def stray_payment(session_factory, gateway, amount: int) -> tuple[str, str]:
    """Money paid at the gateway for a trade we never started: it goes to
    suspense as an ``unknown_payment`` exception. (out_trade_no, exception)."""
    adapter, vendor = gateway
    out_trade_no = f"pay_stray_{secrets.token_hex(6)}"
    adapter.create_payment(PaymentRequest(out_trade_no=out_trade_no, amount_minor=amount,
                                          currency="CNY", description="?",
                                          notify_url=NOTIFY["sandbox"]))
    deliver(session_factory, adapter, vendor.pay(out_trade_no))
    with session_factory() as s:
        exception = s.query(PaymentException).filter_by(out_trade_no=out_trade_no).one()
        assert (exception.kind, exception.state, exception.amount_minor) == (
            "unknown_payment", "open", amount)
        return out_trade_no, exception.public_id


def refund(session_factory, exception: str, **kwargs):
    with session_factory() as s, s.begin():
        return gateway_refunds.refund_suspense(
            s, exception, actor=kwargs.pop("actor", "finance:test"),
            notify_urls=kwargs.pop("notify_urls", NOTIFY),
            note=kwargs.pop("note", "nobody claims it"), **kwargs)


def exception_row(session_factory, public_id: str) -> PaymentException:
    with session_factory() as s:
        row = s.query(PaymentException).filter_by(public_id=public_id).one()
        s.expunge(row)
        return row


def refund_row(session_factory, public_id: str) -> PaymentRefund:
    with session_factory() as s:
        row = s.query(PaymentRefund).filter_by(public_id=public_id).one()
        s.expunge(row)
        return row


# -- the use case --------------------------------------------------------------------------------

def test_unknown_money_goes_back_through_its_gateway_and_leaves_suspense_once(
        session_factory, gateway):
    adapter, vendor = gateway
    before = (posted(session_factory, gateway_payments.SUSPENSE),
              posted(session_factory, RECEIVABLE))
    out_trade_no, exception = stray_payment(session_factory, gateway, 250)
    assert posted(session_factory, gateway_payments.SUSPENSE) - before[0] == 250

    view = refund(session_factory, exception, reason="not our customer")
    assert (view.state, view.amount_minor, view.currency) == ("requested", 250, "CNY")
    assert (view.payment, view.exception, view.gateway, view.order) == (
        out_trade_no, exception, "sandbox", None)
    assert (view.total_minor, view.notify_url) == (250, NOTIFY["sandbox"])
    resolved = exception_row(session_factory, exception)
    assert (resolved.state, resolved.resolved_by) == ("resolved", "finance:test")
    assert resolved.note == f"refunded through sandbox by {view.public_id}: nobody claims it"
    # Recorded, not yet sent: nothing moved.
    assert posted(session_factory, gateway_payments.SUSPENSE) - before[0] == 250
    # The same money cannot leave twice, nor become a deposit as well.
    with pytest.raises(ca_errors.InvalidInput, match="resolved already"):
        refund(session_factory, exception)
    with session_factory() as s, s.begin():
        with pytest.raises(ca_errors.InvalidInput, match="resolved already"):
            gateway_payments.resolve_to_deposit(s, exception, buyer="x", seller="y", note="n",
                                                actor="t")
    with session_factory() as s:
        assert s.query(PaymentRefund).filter(
            PaymentRefund.exception_id == resolved.id).count() == 1

    assert callbacks.send_refunds(session_factory, {"sandbox": adapter}) >= 1
    sent = refund_row(session_factory, view.public_id)
    assert (sent.state, sent.payment_id) == ("processing", None)
    at_vendor = vendor.get_refund(view.public_id)
    assert (at_vendor.out_trade_no, at_vendor.amount_minor, at_vendor.reason,
            at_vendor.notify_url) == (out_trade_no, 250, "not our customer", NOTIFY["sandbox"])
    assert posted(session_factory, gateway_payments.SUSPENSE) - before[0] == 250

    notice = vendor.refund_notice(view.public_id)
    deliver(session_factory, adapter, notice)
    done = refund_row(session_factory, view.public_id)
    assert (done.state, done.refund_id) == ("succeeded", at_vendor.id)
    assert posted(session_factory, gateway_payments.SUSPENSE) == before[0]   # back where it was
    assert posted(session_factory, RECEIVABLE) == before[1]                # the gateway paid it
    with session_factory() as s:
        entry = ledger.get_entry(s, done.entry_id)
        assert entry.code == "suspense.gateway.refund"
        assert sorted((p.account, p.side, p.amount_minor) for p in entry.postings) == [
            (RECEIVABLE, "credit", 250), (gateway_payments.SUSPENSE, "debit", 250)]
    # The gateway repeats its notice: acknowledged, not posted again.
    redelivered = vendor.redeliver(json.loads(notice[1])["id"])
    deliver(session_factory, adapter, redelivered)
    with session_factory() as s:
        assert s.query(GatewayCallback).order_by(GatewayCallback.id.desc()).first().state == \
            "duplicate"
    assert posted(session_factory, gateway_payments.SUSPENSE) == before[0]
    with session_factory() as s:
        actions = [a.action for a in audit.list_audit(s, subject_type="payment_exception",
                                                      subject=exception)[0]]
        assert sorted(actions) == ["payment_exception.refund", "payment_exception.refunded"]
        assert ledger.check_ledger(s) == []


def test_a_refund_the_gateway_refuses_opens_the_exception_again(session_factory, gateway, net):
    adapter, vendor = gateway
    out_trade_no, exception = stray_payment(session_factory, gateway, 300)
    # Someone refunded that trade at the gateway's console already: ours is refused.
    adapter.refund(RefundRequest(out_trade_no=out_trade_no, out_refund_no=f"console-{out_trade_no}",
                                 amount_minor=300, total_minor=300, currency="CNY", reason="",
                                 notify_url=""))
    suspense = posted(session_factory, gateway_payments.SUSPENSE)
    view = refund(session_factory, exception)
    callbacks.send_refunds(session_factory, {"sandbox": adapter})
    assert refund_row(session_factory, view.public_id).state == "failed"
    reopened = exception_row(session_factory, exception)
    assert (reopened.state, reopened.resolved_by, reopened.resolved_at) == ("open", None, None)
    assert reopened.note.startswith(f"refund {view.public_id} failed (the gateway refused")
    assert posted(session_factory, gateway_payments.SUSPENSE) == suspense  # still there
    with session_factory() as s:
        assert exception in [e.public_id for e in gateway_payments.payment_exceptions(s)]
        # No second exception for the same money.
        assert s.query(PaymentException).filter_by(out_trade_no=out_trade_no).count() == 1
    # Finance decides anew: it was a buyer's after all.
    with session_factory() as s, s.begin():
        gateway_payments.resolve_to_deposit(s, exception, buyer=net.codes["s1"],
                                            seller=net.codes["d1"], note="found", actor="t")
    assert posted(session_factory, gateway_payments.SUSPENSE) == suspense - 300
    assert posted(session_factory, funding.prepaid_account(net.codes["s1"], net.codes["d1"])) == 300


def test_a_refund_failed_notice_opens_the_exception_again_and_a_new_refund_may_follow(
        session_factory, gateway):
    adapter, vendor = gateway
    _, exception = stray_payment(session_factory, gateway, 410)
    suspense = posted(session_factory, gateway_payments.SUSPENSE)
    first = refund(session_factory, exception)
    callbacks.send_refunds(session_factory, {"sandbox": adapter})
    with session_factory() as s:
        exceptions_before = s.query(PaymentException).count()
    deliver(session_factory, adapter, vendor.refund_notice(first.public_id, succeeded=False))
    assert refund_row(session_factory, first.public_id).state == "failed"
    assert exception_row(session_factory, exception).state == "open"
    with session_factory() as s:
        assert s.query(PaymentException).count() == exceptions_before  # reopened, not a new one
    assert posted(session_factory, gateway_payments.SUSPENSE) == suspense

    second = refund(session_factory, exception, note="try again")
    assert second.public_id != first.public_id
    callbacks.send_refunds(session_factory, {"sandbox": adapter})
    deliver(session_factory, adapter, vendor.refund_notice(second.public_id))
    assert refund_row(session_factory, second.public_id).state == "succeeded"
    assert exception_row(session_factory, exception).state == "resolved"
    assert posted(session_factory, gateway_payments.SUSPENSE) == suspense - 410  # once, not twice


def test_what_cannot_be_refunded_from_suspense_is_refused_and_changes_nothing(
        session_factory, gateway, net):
    _, exception = stray_payment(session_factory, gateway, 120)
    refusals = [
        (dict(notify_urls={}), "not enabled here"),
        (dict(note=" "), "say why"),
        (dict(reason="r" * 81), "at most 80"),
    ]
    for kwargs, message in refusals:
        with pytest.raises(ca_errors.InvalidInput, match=message):
            refund(session_factory, exception, **kwargs)
    with pytest.raises(ca_errors.NotFound):
        refund(session_factory, "exc_nope")
    assert exception_row(session_factory, exception).state == "open"
    with session_factory() as s:
        assert s.query(PaymentRefund).filter(PaymentRefund.payment_id.is_(None)).join(
            PaymentException, PaymentRefund.exception_id == PaymentException.id).filter(
            PaymentException.public_id == exception).count() == 0
    # A refund that failed leaves its money in the order's escrow, not in suspense.
    with session_factory() as s, s.begin():
        callback_id = inbox.store(s, "sandbox", CallbackRequest({}, b"{}", utcnow()))
        s.add(PaymentException(public_id=f"exc_{secrets.token_hex(8)}", kind="refund_failed",
                               gateway="sandbox", transaction_id="r1", out_trade_no="pay_x",
                               amount_minor=50, currency="CNY", callback_id=callback_id,
                               entry_id=None, state="open", detail="refund failed",
                               created_at=utcnow(), note=""))
        escrowed = s.query(PaymentException).filter_by(transaction_id="r1").one().public_id
    with pytest.raises(ca_errors.InvalidInput, match="not in suspense"):
        refund(session_factory, escrowed)
    # Money already made a deposit cannot be refunded too.
    with session_factory() as s, s.begin():
        gateway_payments.resolve_to_deposit(s, exception, buyer=net.codes["s1"],
                                            seller=net.codes["d1"], note="found", actor="t")
    with pytest.raises(ca_errors.InvalidInput, match="resolved already"):
        refund(session_factory, exception)


def test_a_refund_names_a_payment_or_an_exception_and_a_payment_s_still_waits(
        session_factory, gateway, net):
    """The suspense path leaves the payment refunds' rules as they were."""
    from sqlalchemy.exc import IntegrityError

    _, exception = stray_payment(session_factory, gateway, 90)
    suspense_refund = refund(session_factory, exception)
    _, still_open = stray_payment(session_factory, gateway, 60)
    s = session_factory()
    s.begin()
    try:
        started = gateway_payments.start_deposit_payment(
            s, buyer=net.codes["s1"], seller=net.codes["d1"], amount_minor=500, gateway="sandbox")
        payment = s.query(Payment).filter_by(public_id=started.public_id).one()
        exc_id = s.query(PaymentException).filter_by(public_id=exception).one().id

        def new_refund(state="requested", **subject):
            return PaymentRefund(public_id=f"rfd_t{secrets.token_hex(8)}", amount_minor=100,
                                 state=state, reason="", attempts=0, created_at=utcnow(),
                                 updated_at=utcnow(), **subject)

        waiting = new_refund(payment_id=payment.id)
        s.add(waiting)
        s.flush()
        assert not gateway_refunds.can_settle(s, waiting)  # its payment is not applied yet
        payment.state = "succeeded"
        assert gateway_refunds.can_settle(s, waiting)
        view = gateway_refunds._view(s, waiting)
        assert (view.payment, view.total_minor, view.exception) == (started.public_id, 500, None)
        mine = s.query(PaymentRefund).filter_by(public_id=suspense_refund.public_id).one()
        assert gateway_refunds.can_settle(s, mine)
        # Rows that disagree (an open exception with a refund under way) send nothing more.
        open_id = s.query(PaymentException).filter_by(public_id=still_open).one().id
        s.add(new_refund(exception_id=open_id, state="processing"))
        s.flush()
        with pytest.raises(ca_errors.InvalidInput, match="being refunded already"):
            gateway_refunds.refund_suspense(s, still_open, note="n", actor="t", notify_urls=NOTIFY)
        for subject in ({"payment_id": payment.id, "exception_id": exc_id}, {}):
            with pytest.raises(IntegrityError):
                with s.begin_nested():
                    s.add(new_refund(**subject))
                    s.flush()
    finally:
        s.rollback()
        s.close()


# -- over HTTP -----------------------------------------------------------------------------------

def test_finance_refunds_late_money_from_suspense_over_http(client, net, session_factory):
    vendor = client.application.extensions[GATEWAYS_KEY].sandbox_vendor
    placed = client.post("/v1/orders", headers=net.auth("s1"), json={
        "seller": net.codes["d1"], "lines": [{"sku": f"{net.u}-a", "quantity": 1}],
        "plan": [{"method": "gateway", "amount_minor": 1_000}]}).json
    order = placed["public_id"]
    payment = client.post("/v1/payments", headers=net.auth("s1"),
                          json={"gateway": "sandbox", "order": order}).json
    assert client.post(f"/v1/orders/{order}/cancel", headers=net.auth("s1"),
                       json={}).status_code == 200
    suspense = posted(session_factory, gateway_payments.SUSPENSE)
    # The payer pays anyway, after the cancel: the money goes to suspense.
    headers, body = vendor.pay(payment["public_id"])
    assert client.post("/callbacks/sandbox", data=body, headers=headers).status_code == 200
    assert posted(session_factory, gateway_payments.SUSPENSE) - suspense == 1_000
    listed = client.get("/v1/payment-exceptions", headers=net.auth("brand")).json["items"]
    [late] = [e for e in listed if e["out_trade_no"] == payment["public_id"]]
    assert late["kind"] == "payable_closed"
    with session_factory() as s:
        gap = {p.currency: p.difference_minor for p in cash.check_cash(s).positions}

    path = f"/v1/payment-exceptions/{late['public_id']}/refund"
    for who in ("d1", "s1"):
        assert client.post(path, headers=net.auth(who), json={"note": "x"}).status_code == 403
    missing = client.post(path, headers=net.auth("brand"), json={})
    assert missing.status_code == 422 and missing.json["errors"][0]["field"] == "note"
    assert client.post("/v1/payment-exceptions/exc_nope/refund", headers=net.auth("brand"),
                       json={"note": "x"}).status_code == 404
    answer = client.post(path, headers=net.auth("brand"),
                         json={"note": "order was cancelled; payer asked", "reason": "订单已取消"})
    assert answer.status_code == 202, answer.json
    out = answer.json
    assert (out["exception"], out["gateway"], out["out_trade_no"], out["amount_minor"],
            out["currency"], out["state"], out["reason"]) == (
        late["public_id"], "sandbox", payment["public_id"], 1_000, "CNY", "requested", "订单已取消")
    # Sent once the call committed: the sandbox took it.
    assert vendor.get_refund(out["public_id"]).status == "processing"
    with session_factory() as s:
        assert s.query(PaymentRefund).filter_by(public_id=out["public_id"]).one().state == \
            "processing"
    assert client.post(path, headers=net.auth("brand"), json={"note": "again"}).status_code == 422
    listed = client.get("/v1/payment-exceptions", headers=net.auth("brand")).json["items"]
    assert late["public_id"] not in [e["public_id"] for e in listed]
    assert posted(session_factory, gateway_payments.SUSPENSE) - suspense == 1_000  # not yet

    headers, body = vendor.refund_notice(out["public_id"])
    assert client.post("/callbacks/sandbox", data=body, headers=headers).status_code == 200
    assert posted(session_factory, gateway_payments.SUSPENSE) == suspense
    assert posted(session_factory, funding.escrow_account(order)) == 0  # the order's money untouched
    seen = client.get(f"/v1/payments/{payment['public_id']}", headers=net.auth("s1")).json
    assert seen["refunded_minor"] == 0  # that refund was not the payment's
    with session_factory() as s:
        assert ledger.check_ledger(s) == []
        assert {p.currency: p.difference_minor for p in cash.check_cash(s).positions} == gap
    # The gateway's daily bill knows the refund, and so do we.
    day = utcnow().date()
    report = client.post(f"/v1/gateway-bills/sandbox?day={day.isoformat()}",
                         headers=net.auth("brand"), data=vendor.bill(day)).json
    refund_id = vendor.get_refund(out["public_id"]).id
    assert report["refunds_minor"] == 1_000
    assert refund_id not in [d["transaction_id"] for d in report["discrepancies"]]
