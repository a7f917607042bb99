"""Events and webhooks over HTTP: a party registers a webhook and sees its
secret once, lists and replays its events; another party's key sees none of
them and replays nothing."""
from __future__ import annotations

import json

import pytest

from sqlalchemy import update

from channel_api import outbox, webhooks
from channel_api.models.events import WebhookDelivery
from ledger import utcnow
from payments.signing import verify
from tests.channel_fixtures import build_network, client, engine  # noqa: F401  (fixtures)


@pytest.fixture
def net(session_factory, unique):
    return build_network(session_factory, unique)


@pytest.fixture
def no_backlog(session_factory):
    """Deliveries other tests left pending are given up: each test sends its own."""
    with session_factory() as s, s.begin():
        s.execute(update(WebhookDelivery).where(WebhookDelivery.state == "pending")
                  .values(state="failed"))


def record(session_factory, net, type="order.paid", parties=("s1", "d1")):
    with session_factory() as s, s.begin():
        return outbox.record(s, type=type, subject_type="order", subject="ord_x",
                             parties=[net.codes[p] for p in parties],
                             payload={"total_minor": 2850, "currency": "CNY"})


def test_a_webhook_s_secret_is_shown_once_and_signs_its_deliveries(client, net, session_factory,
                                                                   no_backlog):
    made = client.post("/v1/webhooks", headers=net.auth("s1"),
                       json={"url": "http://127.0.0.1:9/hook", "types": ["order.*"]})
    assert made.status_code == 201, made.json
    secret, hook = made.json["secret"], made.json["webhook"]
    assert secret.startswith("whsec_")
    assert (hook["status"], hook["types"], hook["failure_count"]) == ("active", ["order.*"], 0)
    listed = client.get("/v1/webhooks", headers=net.auth("s1"))
    assert [w["public_id"] for w in listed.json["items"]] == [hook["public_id"]]
    assert secret not in listed.get_data(as_text=True) and "secret" not in listed.json["items"][0]

    event = record(session_factory, net)
    sent = []
    counts = webhooks.deliver_due(session_factory, now=utcnow(),
                                  send=lambda url, body, headers, timeout:
                                  sent.append((url, body, headers)) or 204)
    assert counts.delivered == 1
    [(url, body, headers)] = sent
    assert url == "http://127.0.0.1:9/hook" and json.loads(body)["id"] == event.id
    # The secret shown at registration is the one that signs.
    assert verify(headers["Webhook-Signature"], body, [secret.encode()], utcnow())


@pytest.mark.parametrize("body, field", [
    ({"url": "ftp://example.com/hook"}, "url"),
    ({"url": "https://u:p@example.com/hook"}, "url"),
    ({"url": "https://example.com/hook", "types": ["order"]}, "types"),
    ({"url": "https://example.com/hook", "party": "someone-else"}, "party"),
])
def test_a_bad_webhook_is_refused_naming_the_field(client, net, body, field):
    refused = client.post("/v1/webhooks", headers=net.auth("d1"), json=body)
    assert refused.status_code == 422
    assert refused.json["errors"][0]["field"] == field
    assert client.get("/v1/webhooks", headers=net.auth("d1")).json["items"] == []


def test_a_party_lists_its_events_and_replays_one(client, net, session_factory, no_backlog):
    hook = client.post("/v1/webhooks", headers=net.auth("s1"),
                       json={"url": "https://s1.example/hook"}).json["webhook"]
    ids = [record(session_factory, net, type=t).id
           for t in ("order.placed", "order.paid", "refund.created")]
    page = client.get("/v1/events?limit=2", headers=net.auth("s1")).json
    assert [e["id"] for e in page["items"]] == ids[:2] and page["next_cursor"] == ids[1]
    rest = client.get(f"/v1/events?after={page['next_cursor']}", headers=net.auth("s1")).json
    assert [e["id"] for e in rest["items"]] == ids[2:] and rest["next_cursor"] is None
    for type_filter in ("order", "order.*"):
        orders = client.get(f"/v1/events?type={type_filter}", headers=net.auth("s1")).json
        assert [e["type"] for e in orders["items"]] == ["order.placed", "order.paid"]
    assert client.get("/v1/events?after=evt_nope", headers=net.auth("s1")).status_code == 422

    detail = client.get(f"/v1/events/{ids[1]}", headers=net.auth("s1")).json
    assert detail["data"] == {"total_minor": 2850, "currency": "CNY"}
    [pending] = detail["deliveries"]
    assert (pending["webhook_id"], pending["state"], pending["attempts"]) == \
        (hook["public_id"], "pending", 0)

    webhooks.deliver_due(session_factory, now=utcnow(), send=lambda *args: 200)
    delivered = client.get(f"/v1/events/{ids[1]}", headers=net.auth("s1")).json["deliveries"]
    assert [(d["state"], d["last_status"]) for d in delivered] == [("delivered", 200)]
    replayed = client.post(f"/v1/events/{ids[1]}/replay", headers=net.auth("s1"))
    assert replayed.status_code == 202, replayed.json
    assert [(d["webhook_id"], d["state"], d["attempts"]) for d in replayed.json["deliveries"]] == \
        [(hook["public_id"], "pending", 1)]


def test_another_party_s_key_cannot_see_replay_or_disable(client, net, session_factory):
    hook = client.post("/v1/webhooks", headers=net.auth("s1"),
                       json={"url": "https://s1.example/hook"}).json["webhook"]
    event = record(session_factory, net)
    for attacker in ("s2", "d2", "brand"):  # the brand's manage key acts for the brand only
        seen = client.get(f"/v1/events/{event.id}", headers=net.auth(attacker))
        assert seen.status_code == 403 and seen.json["code"] == "access_denied"
        replay = client.post(f"/v1/events/{event.id}/replay", headers=net.auth(attacker))
        assert replay.status_code == 403 and replay.json["code"] == "access_denied"
        assert client.get("/v1/events", headers=net.auth(attacker)).json["items"] == []
        assert client.get("/v1/webhooks", headers=net.auth(attacker)).json["items"] == []
        disable = client.delete(f"/v1/webhooks/{hook['public_id']}", headers=net.auth(attacker))
        assert disable.status_code == 403 and disable.json["code"] == "access_denied"
    missing = client.get("/v1/events/evt_0000", headers=net.auth("s2"))
    assert missing.status_code == 404 and missing.json["code"] == "event_not_found"
    # The seller is entitled to the event but sees none of the buyer's deliveries.
    by_seller = client.get(f"/v1/events/{event.id}", headers=net.auth("d1")).json
    assert by_seller["id"] == event.id and by_seller["deliveries"] == []
    assert [w["status"] for w in client.get("/v1/webhooks", headers=net.auth("s1")).json["items"]] \
        == ["active"]


def test_a_party_disables_its_webhook(client, net, session_factory):
    hook = client.post("/v1/webhooks", headers=net.auth("d1"),
                       json={"url": "https://d1.example/hook"}).json["webhook"]
    event = record(session_factory, net)
    off = client.delete(f"/v1/webhooks/{hook['public_id']}", headers=net.auth("d1"))
    assert off.status_code == 200 and off.json["status"] == "disabled"
    again = client.delete(f"/v1/webhooks/{hook['public_id']}", headers=net.auth("d1"))
    assert again.status_code == 200 and again.json["disabled_at"] == off.json["disabled_at"]
    [given_up] = client.get(f"/v1/events/{event.id}", headers=net.auth("d1")).json["deliveries"]
    assert (given_up["state"], given_up["last_error"]) == ("failed", "webhook disabled")
    replay = client.post(f"/v1/events/{event.id}/replay", headers=net.auth("d1"))
    assert replay.status_code == 202 and replay.json["deliveries"] == []
    unknown = client.delete("/v1/webhooks/whk_nope", headers=net.auth("d1"))
    assert unknown.status_code == 404 and unknown.json["code"] == "webhook_not_found"
