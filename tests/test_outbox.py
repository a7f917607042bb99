"""The event outbox and webhooks (issue 5): events commit with their cause
and are read only by the parties entitled to them; in-process handlers hear
of them after COMMIT only; webhooks reach a real HTTP server signed, are
retried on a schedule, given up, replayed, and never sent twice by two
concurrent jobs."""
from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select, update

from channel_api import outbox, webhooks
from channel_api.errors import AccessDenied, InvalidInput, PartyNotFound
from channel_api.models.events import WebhookDelivery
from channel_api.parties import party_row
from ledger import utcnow
from payments.gateway import CallbackRejected
from payments.signing import verify
from service.db import make_session_factory
from tests.channel_fixtures import build_network, engine  # noqa: F401  (fixtures)


@pytest.fixture
def net(session_factory, unique):
    return build_network(session_factory, unique)


@pytest.fixture
def dispatching(engine):  # noqa: F811
    """A session factory whose sessions tell handlers, and the handlers'
    registry left as it was found."""
    factory = make_session_factory(engine)
    outbox.install_dispatch(factory)
    before = list(outbox._handlers)
    yield factory
    outbox._handlers[:] = before


@pytest.fixture
def no_backlog(session_factory):
    """Deliveries left pending by earlier tests of this module's database are
    given up, so each delivery test sends only its own."""
    with session_factory() as s, s.begin():
        s.execute(update(WebhookDelivery).where(WebhookDelivery.state == "pending")
                  .values(state="failed"))


def paid(session, net, *, parties=("s1", "d1"), type="order.paid", **payload):
    return outbox.record(session, type=type, subject_type="order", subject="ord_1",
                         parties=[net.codes[p] for p in parties],
                         payload={"total_minor": 2850, "currency": "CNY", **payload})


# -- recording and reading ------------------------------------------------------------

def test_an_event_is_read_only_by_the_parties_entitled_to_it(net, session):
    c = net.codes
    event = paid(session, net, lines=[{"sku": "a", "quantity": 3}])
    assert event.id.startswith("evt_") and event.parties == tuple(sorted([c["s1"], c["d1"]]))
    seen = outbox.get_event(session, event.id, party=c["s1"])
    assert seen.data == {"total_minor": 2850, "currency": "CNY",
                         "lines": [{"sku": "a", "quantity": 3}]}
    assert (seen.type, seen.subject_type, seen.subject) == ("order.paid", "order", "ord_1")
    with pytest.raises(AccessDenied):
        outbox.get_event(session, event.id, party=c["s2"])
    with pytest.raises(AccessDenied):
        outbox.replay(session, c["s2"], event.id)
    assert [e.id for e in outbox.list_events(session, c["d1"])[0]] == [event.id]
    assert outbox.list_events(session, c["s2"])[0] == []


def test_events_recorded_together_get_their_own_parties_and_deliveries(net, session):
    """``record_all`` (a batch of applied callbacks): each event is read by
    its own parties, and gets one pending delivery per active webhook of
    those parties whose filter takes its type; an event for handlers only
    has neither."""
    c = net.codes
    d1_all = webhooks.register(session, party=c["d1"], url="http://d1.example/all",
                               actor="t").webhook.public_id
    d1_orders = webhooks.register(session, party=c["d1"], url="http://d1.example/orders",
                                  types=["order.*"], actor="t").webhook.public_id
    s1_paid = webhooks.register(session, party=c["s1"], url="http://s1.example/paid",
                                types=["payment.succeeded"], actor="t").webhook.public_id
    gone = webhooks.register(session, party=c["s1"], url="http://s1.example/gone",
                             actor="t").webhook.public_id
    webhooks.disable(session, gone, party=c["s1"], actor="t")
    views = outbox.record_all(session, [
        outbox.NewEvent("payment.succeeded", "payment", "pay_1", [c["s1"], c["d1"]],
                        {"amount_minor": 100}),
        outbox.NewEvent("order.paid", "order", "ord_9", [c["d1"]], {"total_minor": 5}),
        outbox.NewEvent("payment.succeeded", "payment", "pay_2",
                        {c["s2"]: party_row(session, c["s2"]).id}, {"amount_minor": 7}),
        outbox.NewEvent("ledger.checked", "ledger", "all", [], {})])
    assert [v.parties for v in views] == [tuple(sorted([c["s1"], c["d1"]])), (c["d1"],),
                                          (c["s2"],), ()]
    by_event = {v.id: sorted(d.webhook_id for party in v.parties  # each sees its own
                             for d in outbox.deliveries(session, v.id, party=party))
                for v in views[:3]}
    assert by_event == {views[0].id: sorted([d1_all, s1_paid]),
                        views[1].id: sorted([d1_all, d1_orders]),
                        views[2].id: []}
    assert [e.id for e in outbox.list_events(session, c["s2"])[0]] == [views[2].id]
    assert outbox.get_event(session, views[3].id).parties == ()


@pytest.mark.parametrize("bad, error", [
    ({"payload": {"total": 28.5}}, InvalidInput),           # money is never a float
    ({"payload": {"at": datetime(2024, 1, 1)}}, InvalidInput),  # not JSON
    ({"type": "OrderPaid"}, InvalidInput),
    ({"type": "order"}, InvalidInput),
    ({"subject": ""}, InvalidInput),
    ({"parties": ["nobody-here"]}, PartyNotFound),
])
def test_what_cannot_be_an_event(net, session, bad, error):
    args = dict(type="order.paid", subject_type="order", subject="ord_1",
                parties=[net.codes["s1"]], payload={"total_minor": 1})
    with pytest.raises(error):
        outbox.record(session, **(args | bad))


def test_a_party_s_feed_pages_forward_and_filters_by_type(net, session):
    s1 = net.codes["s1"]
    types = ["order.placed", "order.paid", "refund.created", "order.shipped", "payable.captured"]
    ids = [paid(session, net, type=t).id for t in types]
    first, cursor = outbox.list_events(session, s1, limit=2)
    assert [e.id for e in first] == ids[:2] and cursor == ids[1]
    second, cursor = outbox.list_events(session, s1, limit=2, after=cursor)
    third, last = outbox.list_events(session, s1, limit=2, after=cursor)
    assert [e.id for e in second + third] == ids[2:] and last is None
    orders = outbox.list_events(session, s1, types=["order.*"])[0]
    assert [e.type for e in orders] == ["order.placed", "order.paid", "order.shipped"]
    assert [e.type for e in outbox.list_events(session, s1, types=["refund.created"])[0]] == \
        ["refund.created"]
    assert len(outbox.list_events(session, s1, types=["*"])[0]) == 5
    with pytest.raises(InvalidInput):
        outbox.list_events(session, s1, after="evt_nope")
    with pytest.raises(InvalidInput):
        outbox.list_events(session, s1, types=["order"])


def test_old_events_are_purged_with_their_deliveries(net, session):
    webhooks.register(session, party=net.codes["s1"], url="https://example.com/h", actor="t")
    event = paid(session, net)
    assert len(outbox.deliveries(session, event.id, party=net.codes["s1"])) == 1
    young = event.created_at + outbox.KEEP_FOR - timedelta(seconds=1)
    outbox.purge(session, now=young)  # (older events of other tests may go)
    assert outbox.get_event(session, event.id).id == event.id
    assert outbox.purge(session, now=event.created_at + outbox.KEEP_FOR + timedelta(seconds=1)) >= 1
    with pytest.raises(outbox.EventNotFound):
        outbox.get_event(session, event.id)
    assert outbox.list_events(session, net.codes["s1"])[0] == []


# -- in-process handlers ----------------------------------------------------------------

def test_handlers_hear_of_an_event_only_after_its_commit(dispatching, net):
    heard = []
    outbox.subscribe("order.*", heard.append)
    refunds = []
    outbox.subscribe("refund.created", refunds.append)
    with dispatching() as s, s.begin():
        committed = paid(s, net)
        assert heard == []  # not yet: the transaction may still roll back
    assert [e.id for e in heard] == [committed.id] and refunds == []

    with dispatching() as s:
        s.begin()
        paid(s, net)
        s.rollback()
    with pytest.raises(RuntimeError), dispatching() as s, s.begin():
        paid(s, net)
        raise RuntimeError("the use case failed after recording")
    assert [e.id for e in heard] == [committed.id]

    with dispatching() as s, s.begin():
        with pytest.raises(RuntimeError), s.begin_nested():
            paid(s, net, type="order.cancelled")
            raise RuntimeError("a savepoint rolls back")
        kept = paid(s, net, type="order.shipped")
        refund = paid(s, net, type="refund.created")
    assert [e.id for e in heard] == [committed.id, kept.id]
    assert [e.id for e in refunds] == [refund.id]


def test_a_failing_handler_never_breaks_the_caller(dispatching, net, caplog):
    def broken(event):
        raise ValueError("handler bug")

    heard = []
    outbox.subscribe("*", broken)
    outbox.subscribe("order.paid", heard.append)
    with caplog.at_level(logging.ERROR, logger="channel_api.outbox"), \
            dispatching() as s, s.begin():
        event = paid(s, net)
    assert [e.id for e in heard] == [event.id]  # the next handler still ran
    assert "handler bug" in caplog.text and event.id in caplog.text
    with dispatching() as s:  # and the event committed
        assert outbox.get_event(s, event.id, party=net.codes["s1"]).type == "order.paid"


# -- webhooks: a real receiver -----------------------------------------------------------

class Receiver:
    """An HTTP server in a thread that checks every delivery's signature with
    ``secret`` at ``now`` and answers the next of ``statuses`` (then 200)."""

    def __init__(self):
        self.secret = None
        self.now = None
        self.statuses: list[int] = []
        self.received: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    verify(self.headers["Webhook-Signature"], body, [receiver.secret.encode()],
                           receiver.now)
                    verified = True
                except CallbackRejected:
                    verified = False
                receiver.received.append({"headers": dict(self.headers), "body": body,
                                          "verified": verified, "path": self.path})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/ledger"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(session_factory, net, no_backlog):
    receiver = Receiver()
    with session_factory() as s, s.begin():
        registered = webhooks.register(s, party=net.codes["s1"], url=receiver.url, actor="t")
    receiver.secret = registered.secret
    receiver.webhook_id = registered.webhook.public_id
    yield receiver
    receiver.close()


def deliver(session_factory, receiver, at, **kwargs):
    receiver.now = at
    return webhooks.deliver_due(session_factory, now=at, **kwargs)


def delivery(session_factory, net, event_id, party="s1"):
    with session_factory() as s:
        [found] = outbox.deliveries(s, event_id, party=net.codes[party])
    return found


def test_a_webhook_reaches_a_real_server_signed(session_factory, net, receiver):
    with session_factory() as s, s.begin():
        event = paid(s, net)
    at = utcnow()
    counts = deliver(session_factory, receiver, at)
    assert (counts.claimed, counts.delivered) == (1, 1)
    [got] = receiver.received
    assert got["verified"] and got["path"] == "/hooks/ledger"
    assert got["headers"]["Webhook-Id"] == event.id
    assert got["headers"]["Webhook-Timestamp"] == str(int(at.timestamp()))
    assert got["headers"]["Content-Type"] == "application/json"
    body = json.loads(got["body"])
    assert body == {"id": event.id, "type": "order.paid",
                    "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
                    "data": {"total_minor": 2850, "currency": "CNY"}}
    done = delivery(session_factory, net, event.id)
    assert (done.state, done.attempts, done.last_status) == ("delivered", 1, 200)
    assert webhooks.deliver_due(session_factory, now=at + timedelta(days=1)).claimed == 0
    # d1 is entitled to the event too, but has no webhook: nothing went its way.
    with session_factory() as s:
        assert outbox.deliveries(s, event.id, party=net.codes["d1"]) == []


def test_a_failed_delivery_is_retried_after_its_backoff(session_factory, net, receiver):
    receiver.statuses = [500]
    with session_factory() as s, s.begin():
        event = paid(s, net)
    t0 = utcnow()
    assert deliver(session_factory, receiver, t0).retrying == 1
    waiting = delivery(session_factory, net, event.id)
    assert (waiting.state, waiting.last_status, waiting.last_error) == ("pending", 500, "HTTP 500")
    assert waiting.next_attempt_at == t0 + timedelta(seconds=30)
    with session_factory() as s:
        assert webhooks.get_endpoint(s, receiver.webhook_id).failure_count == 1
    assert deliver(session_factory, receiver, t0 + timedelta(seconds=29)).claimed == 0
    assert deliver(session_factory, receiver, t0 + timedelta(seconds=30)).delivered == 1
    first, second = receiver.received
    assert first["body"] == second["body"] and first["verified"] and second["verified"]
    assert first["headers"]["Webhook-Id"] == second["headers"]["Webhook-Id"] == event.id
    done = delivery(session_factory, net, event.id)
    assert (done.state, done.attempts, done.last_status) == ("delivered", 2, 200)
    with session_factory() as s:
        assert webhooks.get_endpoint(s, receiver.webhook_id).failure_count == 0


def test_a_redirect_is_a_failed_attempt_not_followed(session_factory, net, receiver):
    receiver.statuses = [302]
    with session_factory() as s, s.begin():
        event = paid(s, net)
    assert deliver(session_factory, receiver, utcnow()).retrying == 1
    assert [r["path"] for r in receiver.received] == ["/hooks/ledger"]
    assert delivery(session_factory, net, event.id).last_status == 302


def test_a_delivery_is_given_up_after_its_schedule_and_a_replay_starts_afresh(
        session_factory, net, receiver):
    with session_factory() as s, s.begin():
        event = paid(s, net)

    def unreachable(url, body, headers, timeout):
        assert timeout == 5
        raise TimeoutError("timed out")

    t0, at, attempts_at = utcnow(), utcnow(), []
    for _ in range(webhooks.MAX_ATTEMPTS):
        counts = webhooks.deliver_due(session_factory, now=at, send=unreachable)
        assert counts.claimed == 1
        attempts_at.append(at)
        state = delivery(session_factory, net, event.id)
        at = state.next_attempt_at or at
    assert (counts.retrying, counts.failed) == (0, 1)
    assert (state.state, state.attempts, state.last_status) == ("failed", 10, None)
    assert state.last_error == "TimeoutError: timed out"
    gaps = [b - a for a, b in zip(attempts_at, attempts_at[1:])]
    assert gaps == list(webhooks.RETRY_DELAYS)
    assert timedelta(hours=23) < attempts_at[-1] - t0 <= timedelta(hours=24)
    assert webhooks.deliver_due(session_factory, now=t0 + timedelta(days=3),
                                send=unreachable).claimed == 0

    # The storefront fixed its server and asks for the event again.
    with session_factory() as s, s.begin():
        [again] = outbox.replay(s, net.codes["s1"], event.id)
    assert (again.state, again.attempts) == ("pending", 10)
    receiver.statuses = [502]
    later = utcnow()
    assert deliver(session_factory, receiver, later).retrying == 1  # a fresh schedule
    assert deliver(session_factory, receiver, later + timedelta(seconds=30)).delivered == 1
    assert [r["verified"] for r in receiver.received] == [True, True]
    done = delivery(session_factory, net, event.id)
    assert (done.state, done.attempts) == ("delivered", 12)


def test_a_delivered_event_is_replayed_to_the_party_s_webhooks(session_factory, net, receiver):
    c = net.codes
    with session_factory() as s, s.begin():
        event = paid(s, net)
    deliver(session_factory, receiver, utcnow())
    with session_factory() as s, s.begin():
        filtered = webhooks.register(s, party=c["s1"], url=receiver.url + "?refunds",
                                     types=["refund.*"], actor="t")
        later = webhooks.register(s, party=c["s1"], url=receiver.url + "?all", actor="t")
        replayed = outbox.replay(s, c["s1"], event.id)
    # The delivered one is pending again; the new catch-all endpoint gets it
    # too; the refunds-only endpoint does not want an order event.
    assert sorted((d.webhook_id, d.state, d.attempts) for d in replayed) == sorted(
        [(receiver.webhook_id, "pending", 1), (later.webhook.public_id, "pending", 0)])
    assert filtered.webhook.public_id not in {d.webhook_id for d in replayed}
    assert deliver(session_factory, receiver, utcnow()).delivered == 2
    assert sorted(r["path"] for r in receiver.received) == \
        ["/hooks/ledger", "/hooks/ledger", "/hooks/ledger?all"]
    assert {r["headers"]["Webhook-Id"] for r in receiver.received} == {event.id}


def test_a_disabled_webhook_gets_nothing_more(session_factory, net, receiver):
    with session_factory() as s, s.begin():
        event = paid(s, net)
        with pytest.raises(AccessDenied):
            webhooks.disable(s, receiver.webhook_id, party=net.codes["s2"], actor="t")
        off = webhooks.disable(s, receiver.webhook_id, party=net.codes["s1"], actor="t")
        assert off.status == "disabled" and off.disabled_at is not None
        later = paid(s, net)  # a disabled endpoint is not a destination
        assert outbox.replay(s, net.codes["s1"], event.id) == []
    assert deliver(session_factory, receiver, utcnow()).claimed == 0
    assert receiver.received == []
    given_up = delivery(session_factory, net, event.id)
    assert (given_up.state, given_up.last_error) == ("failed", "webhook disabled")
    with session_factory() as s:
        assert outbox.deliveries(s, later.id, party=net.codes["s1"]) == []


# -- registering ------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "ftp://example.com/hook", "https://user:pw@example.com/hook", "http://", "example.com/hook",
    "https://example.com/a b", "https://example.com:99999/", "https://example.com/" + "x" * 500,
])
def test_a_webhook_url_must_be_plain_http_or_https(net, session, url):
    with pytest.raises(InvalidInput) as refused:
        webhooks.register(session, party=net.codes["s1"], url=url, actor="t")
    assert refused.value.details["field"] == "url"


def test_a_registered_webhook_s_secret_is_shown_once(net, session):
    s1 = net.codes["s1"]
    made = webhooks.register(session, party=s1, url="http://127.0.0.1:8080/hook",
                             types=["order.*", "refund.created"], actor="t")
    assert made.secret.startswith("whsec_") and len(made.secret) >= 6 + 43
    assert made.webhook.types == ("order.*", "refund.created") and made.webhook.status == "active"
    [listed] = webhooks.list_endpoints(session, s1)
    assert listed == made.webhook and made.secret not in repr(listed)
    other = webhooks.register(session, party=s1, url="https://example.com/h", actor="t")
    assert other.secret != made.secret and other.webhook.types is None
    with pytest.raises(InvalidInput):
        webhooks.register(session, party=s1, url="https://example.com/h", types=["order"],
                          actor="t")
    for n in range(webhooks.MAX_ACTIVE_PER_PARTY - 2):
        webhooks.register(session, party=s1, url=f"https://example.com/{n}", actor="t")
    with pytest.raises(InvalidInput):
        webhooks.register(session, party=s1, url="https://example.com/one-too-many", actor="t")


# -- two jobs at once ----------------------------------------------------------------------

@pytest.fixture
def backlog(session_factory, net, no_backlog):
    with session_factory() as s, s.begin():
        webhooks.register(s, party=net.codes["s1"], url="https://example.invalid/h", actor="t")
        return [paid(s, net, n=n).id for n in range(30)]


@pytest.mark.postgres_only
def test_two_concurrent_jobs_never_send_a_delivery_twice(session_factory, backlog):
    sent, lock = [], threading.Lock()
    start = threading.Barrier(2)

    def send(url, body, headers, timeout):
        with lock:
            sent.append(headers["Webhook-Id"])
        return 204

    def job():
        start.wait()
        while webhooks.deliver_due(session_factory, send=send, limit=3).claimed:
            pass

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(sent) == sorted(backlog)  # each exactly once


@pytest.mark.postgres_only
def test_a_job_skips_deliveries_another_is_claiming_instead_of_waiting(
        session_factory, backlog):
    sent, result = [], {}

    def job():
        result["counts"] = webhooks.deliver_due(
            session_factory, send=lambda url, body, headers, timeout: sent.append(1) or 200)

    with session_factory() as holder:
        holder.begin()
        locked = holder.scalars(select(WebhookDelivery.id).where(WebhookDelivery.state == "pending")
                                .order_by(WebhookDelivery.id).limit(10).with_for_update()).all()
        assert len(locked) == 10
        worker = threading.Thread(target=job)
        worker.start()
        worker.join(timeout=10)
        finished_while_locked = not worker.is_alive()  # it did not wait for our rows
        holder.rollback()
        worker.join()
    assert finished_while_locked
    assert result["counts"].claimed == result["counts"].delivered == len(sent) == 20
    assert webhooks.deliver_due(session_factory, send=lambda *a: 200).delivered == 10
