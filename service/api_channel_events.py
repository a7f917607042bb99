"""Channel API: events and webhooks (issue 5).

Every key, whatever its scope, acts for its own party only: it reads the
events its party is entitled to, replays them to its own webhooks, and
registers or disables its own webhooks. Another party's event or webhook
is refused with 403, as another party's order is.
"""
from __future__ import annotations

from dataclasses import asdict

from channel_api import outbox, webhooks
from service.channel_edge import ChannelBlueprint, actor, caller, mutation
from service.request_db import db_session
from service.schemas_events import (
    EventDetailOut,
    EventListArgs,
    EventPage,
    RegisteredWebhookOut,
    ReplayOut,
    WebhookIn,
    WebhookList,
    WebhookOut,
)

blp = ChannelBlueprint("channel_events", __name__, url_prefix="/v1",
                       description="Events of your party, and the webhooks they are sent to.")


def _patterns(type_: str | None) -> list[str] | None:
    """``order`` reads as ``order.*``; a pattern or a type as itself."""
    if type_ is None:
        return None
    return [type_ if "." in type_ or type_ == "*" else type_ + ".*"]


@blp.route("/events", methods=["GET"])
@blp.arguments(EventListArgs, location="query", as_kwargs=True)
@blp.response(200, EventPage)
def list_events(limit: int, after: str | None = None, type: str | None = None):
    """Your party's events, oldest first: page with `after` to catch up on
    what happened since the last event you processed."""
    items, next_cursor = outbox.list_events(db_session(), caller().party_code, after=after,
                                            limit=limit, types=_patterns(type))
    return {"items": items, "next_cursor": next_cursor}


@blp.route("/events/<event_id>", methods=["GET"])
@blp.response(200, EventDetailOut)
def get_event(event_id: str):
    """One of your events, with how it is getting to your webhooks."""
    session, party = db_session(), caller().party_code
    event = outbox.get_event(session, event_id, party=party)
    return {**asdict(event), "deliveries": outbox.deliveries(session, event_id, party=party)}


@blp.route("/events/<event_id>/replay", methods=["POST"])
@mutation
@blp.response(202, ReplayOut)
def replay_event(event_id: str):
    """Send one of your events again to your active webhooks (a failed or
    delivered delivery starts a fresh retry schedule); the job sends it."""
    deliveries = outbox.replay(db_session(), caller().party_code, event_id)
    return {"event_id": event_id, "deliveries": deliveries}


@blp.route("/webhooks", methods=["POST"])
@mutation
@blp.arguments(WebhookIn)
@blp.response(201, RegisteredWebhookOut)
def create_webhook(body):
    """Register a URL for your party's events. The signing secret is shown
    only in this answer."""
    return webhooks.register(db_session(), party=caller().party_code, url=body["url"],
                             types=body["types"], actor=actor())._asdict()


@blp.route("/webhooks", methods=["GET"])
@blp.response(200, WebhookList)
def list_webhooks():
    """Your party's webhooks, active and disabled (never their secrets)."""
    return {"items": webhooks.list_endpoints(db_session(), caller().party_code)}


@blp.route("/webhooks/<webhook_id>", methods=["DELETE"])
@mutation
@blp.response(200, WebhookOut)
def disable_webhook(webhook_id: str):
    """Stop sending to a webhook of yours; what it had pending is given up."""
    return webhooks.disable(db_session(), webhook_id, party=caller().party_code, actor=actor())
