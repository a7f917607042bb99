"""Webhooks: a party registers a URL and its events are POSTed there, signed.

Each delivery is a JSON body ``{"id", "type", "created_at", "data"}`` with
the headers ``Webhook-Id`` (the event id), ``Webhook-Timestamp`` (unix
seconds) and ``Webhook-Signature: t=<unix>,v1=<hex>``: HMAC-SHA256 over
``f"{t}."`` + the body, keyed with the endpoint's whole secret (``whsec_…``)
as UTF-8 bytes (``payments.signing``, Stripe's scheme). A receiver checks the
signature and that ``t`` is recent, which refuses forgeries and replays.

Delivery is at least once: a receiver that answered 2xx after we timed
out, or a job that died between sending and recording, means the same event
arrives again. Receivers dedupe by ``Webhook-Id``. Order is not guaranteed
either: the feed (``GET /v1/events``) is the ordered, complete record.

Anything but a 2xx (redirects included: a body is not re-POSTed elsewhere)
or no answer within 5 s is retried on :data:`RETRY_DELAYS`, ten attempts
over about a day, then the delivery is ``failed``; the party can replay it.
URLs may point anywhere http(s) reaches, loopback included (local testing):
deploy the job where its outbound traffic cannot reach internal services.
"""
from __future__ import annotations

import json
import logging
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ledger import as_utc, new_uuid7, utcnow
from payments.signing import sign

from . import audit
from .errors import AccessDenied, InvalidInput, NotFound
from .models.events import OutboxEvent, WebhookDelivery, WebhookEndpoint
from .models.network import Party
from .outbox import check_pattern
from .parties import party_row

log = logging.getLogger(__name__)

WEBHOOK_PREFIX = "whk_"
SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 500
MAX_ACTIVE_PER_PARTY = 10  # every event fans out to each: keep the fan-out bounded
TIMEOUT_SECONDS = 5
# Waits after each failed attempt: ten attempts within about 24 hours
# (the last at 23 h 42 min), early ones close together for a receiver
# that blinked, late ones far apart for one that is down.
RETRY_DELAYS = tuple(timedelta(seconds=s) for s in (
    30, 120, 600, 1800, 3600, 2 * 3600, 4 * 3600, 6 * 3600, 10 * 3600))
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
CLAIM_MARGIN = timedelta(seconds=60)
USER_AGENT = "channel-ledger-webhooks/1"

# send(url, body, headers, timeout) -> HTTP status; raises when there is none.
Sender = Callable[[str, bytes, dict[str, str], float], int]


class WebhookNotFound(NotFound):
    code = "webhook_not_found"


@dataclass(frozen=True)
class WebhookView:
    public_id: str
    party_code: str
    url: str
    types: tuple[str, ...] | None  # None: every event type
    status: str
    failure_count: int
    created_at: datetime
    disabled_at: datetime | None


class RegisteredWebhook(NamedTuple):
    webhook: WebhookView
    secret: str  # shown once, at registration


@dataclass
class DeliveryCounts:
    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0


# -- endpoints -----------------------------------------------------------------------

def check_url(url: Any) -> str:
    """http(s), a host, no credentials in the URL, at most 500 characters."""
    if not isinstance(url, str) or not 1 <= len(url) <= MAX_URL_LENGTH:
        raise InvalidInput(f"url must be 1-{MAX_URL_LENGTH} characters", field="url")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidInput("url must not contain spaces or control characters", field="url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url must be an http:// or https:// URL with a host", field="url")
    if "@" in parts.netloc:
        raise InvalidInput("url must not carry a user name or password", field="url")
    try:
        parts.port
    except ValueError:
        raise InvalidInput("url has an invalid port", field="url") from None
    return url


def _types(types: Any) -> list[str] | None:
    if types is None:
        return None
    if not isinstance(types, (list, tuple)) or not 1 <= len(types) <= 20:
        raise InvalidInput("types must be 1-20 event type patterns, or null for every type",
                           field="types")
    return sorted({check_pattern(t) for t in types})


def _view(row: WebhookEndpoint, party_code: str) -> WebhookView:
    return WebhookView(row.public_id, party_code, row.url,
                       tuple(row.types) if row.types is not None else None, row.status,
                       row.failure_count, as_utc(row.created_at),
                       as_utc(row.disabled_at) if row.disabled_at else None)


def register(session: Session, *, party: str, url: str, types: list[str] | None = None,
             actor: str) -> RegisteredWebhook:
    """A new endpoint for ``party``'s events, with a fresh signing secret."""
    owner = party_row(session, party)
    clean_url, clean_types = check_url(url), _types(types)
    active = session.scalar(select(func.count()).select_from(WebhookEndpoint).where(
        WebhookEndpoint.party_id == owner.id, WebhookEndpoint.status == "active"))
    if active >= MAX_ACTIVE_PER_PARTY:
        raise InvalidInput(f"a party has at most {MAX_ACTIVE_PER_PARTY} active webhooks; "
                           "disable one first", field="url")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    row = WebhookEndpoint(public_id=WEBHOOK_PREFIX + new_uuid7().hex, party_id=owner.id,
                          url=clean_url, secret=secret, types=clean_types, status="active",
                          failure_count=0, created_at=utcnow())
    session.add(row)
    session.flush()
    audit.record(session, actor=actor, action="webhook.create", subject_type="party",
                 subject=owner.code, details={"webhook_id": row.public_id, "url": clean_url,
                                              "types": clean_types})
    return RegisteredWebhook(_view(row, owner.code), secret)


def _endpoint(session: Session, webhook_id: str) -> tuple[WebhookEndpoint, str]:
    found = session.execute(
        select(WebhookEndpoint, Party.code).join(Party, Party.id == WebhookEndpoint.party_id)
        .where(WebhookEndpoint.public_id == webhook_id)).one_or_none()
    if found is None:
        raise WebhookNotFound(f"no webhook {webhook_id!r}", field="webhook_id")
    return found[0], found[1]


def get_endpoint(session: Session, webhook_id: str) -> WebhookView:
    return _view(*_endpoint(session, webhook_id))


def list_endpoints(session: Session, party: str) -> list[WebhookView]:
    owner = party_row(session, party)
    rows = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.party_id == owner.id)
                           .order_by(WebhookEndpoint.id))
    return [_view(row, owner.code) for row in rows]


def disable(session: Session, webhook_id: str, *, party: str, actor: str) -> WebhookView:
    """Stop sending to an endpoint (for good: register a new one to resume);
    its pending deliveries are given up. Only its own party may."""
    row, owner = _endpoint(session, webhook_id)
    if owner != party:
        raise AccessDenied("this webhook is not yours")
    if row.status == "active":
        now = utcnow()
        row.status, row.disabled_at = "disabled", now
        session.execute(update(WebhookDelivery).where(
            WebhookDelivery.endpoint_id == row.id, WebhookDelivery.state == "pending")
            .values(state="failed", claimed_until=None, last_error="webhook disabled")
            .execution_options(synchronize_session=False))
        session.flush()
        audit.record(session, actor=actor, action="webhook.disable", subject_type="party",
                     subject=owner, details={"webhook_id": row.public_id})
    return _view(row, owner)


# -- delivery --------------------------------------------------------------------------

class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 3xx is an answer (not 2xx), not somewhere else to POST to


_OPENER = urllib.request.build_opener(_NoRedirects)


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST with the standard library; the HTTP status, whatever it is."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        error.close()
        return error.code


@dataclass(frozen=True)
class _Job:
    delivery_id: int
    endpoint_id: int
    webhook_id: str
    url: str
    secret: str
    event_id: str
    body: bytes


def message(event: OutboxEvent) -> bytes:
    """The body POSTed for an event (the same bytes on every attempt)."""
    created = as_utc(event.created_at).isoformat().replace("+00:00", "Z")
    return json.dumps({"id": event.public_id, "type": event.type, "created_at": created,
                       "data": event.payload}, separators=(",", ":"), ensure_ascii=False).encode()


def deliver_due(session_factory: sessionmaker[Session], *, now: datetime | None = None,
                send: Sender = http_post, limit: int = 100) -> DeliveryCounts:
    """Send up to ``limit`` due deliveries: claim them in one short
    transaction, send each with no transaction open, record each result in
    a transaction of its own. ``now`` fixes the clock (tests)."""
    jobs = _claim(session_factory, now or utcnow(), limit)
    counts = DeliveryCounts(claimed=len(jobs))
    for job in jobs:
        at = now or utcnow()
        status, error = _attempt(job, at, send)
        outcome = _settle(session_factory, job, at, status, error)
        setattr(counts, outcome, getattr(counts, outcome) + 1)
    if jobs:
        log.info("webhooks: %d sent, %d delivered, %d to retry, %d given up", counts.claimed,
                 counts.delivered, counts.retrying, counts.failed,
                 extra={"claimed": counts.claimed, "delivered": counts.delivered,
                        "retrying": counts.retrying, "failed": counts.failed})
    return counts


def _claim(session_factory: sessionmaker[Session], now: datetime, limit: int) -> list[_Job]:
    """Mark due deliveries as being sent (``claimed_until``) and return what
    to send. On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets two jobs claim at
    once without waiting for or taking each other's rows; the mark then keeps
    them out of every later claim until the send is recorded (or, if this job
    dies, until the claim runs out and the delivery is due again)."""
    with session_factory() as session, session.begin():
        query = (select(WebhookDelivery)
                 .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                 .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now,
                        or_(WebhookDelivery.claimed_until.is_(None),
                            WebhookDelivery.claimed_until <= now),
                        WebhookEndpoint.status == "active")
                 .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(limit))
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
        rows = list(session.scalars(query))
        if not rows:
            return []
        events = {e.id: e for e in session.scalars(select(OutboxEvent).where(
            OutboxEvent.id.in_({r.event_id for r in rows})))}
        endpoints = {e.id: e for e in session.scalars(select(WebhookEndpoint).where(
            WebhookEndpoint.id.in_({r.endpoint_id for r in rows})))}
        claimed_until = now + CLAIM_MARGIN + len(rows) * timedelta(seconds=TIMEOUT_SECONDS)
        jobs = []
        for row in rows:
            # Counted when claimed: a job that dies mid-send still used an attempt.
            row.attempts += 1
            row.round_attempts += 1
            row.claimed_until = claimed_until
            event, endpoint = events[row.event_id], endpoints[row.endpoint_id]
            jobs.append(_Job(row.id, endpoint.id, endpoint.public_id, endpoint.url,
                             endpoint.secret, event.public_id, message(event)))
    return jobs


def _attempt(job: _Job, at: datetime, send: Sender) -> tuple[int | None, str | None]:
    timestamp = int(at.timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Webhook-Id": job.event_id,
        "Webhook-Timestamp": str(timestamp),
        "Webhook-Signature": sign(job.secret.encode(), timestamp, job.body),
    }
    try:
        status = int(send(job.url, job.body, headers, TIMEOUT_SECONDS))
    except Exception as error:  # noqa: BLE001 - any failure to send is a failed attempt
        return None, f"{type(error).__name__}: {error}"
    return status, (None if 200 <= status < 300 else f"HTTP {status}")


def _settle(session_factory: sessionmaker[Session], job: _Job, at: datetime,
            status: int | None, error: str | None) -> str:
    """Record one attempt; returns which count it adds to."""
    with session_factory() as session, session.begin():
        row = session.get(WebhookDelivery, job.delivery_id, with_for_update=True)
        if row is None:  # purged meanwhile
            return "failed"
        row.claimed_until, row.last_status = None, status
        if error is None:
            row.state, row.delivered_at, row.last_error = "delivered", at, None
            session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == job.endpoint_id)
                            .values(failure_count=0))
            return "delivered"
        row.last_error = error[:500]
        session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == job.endpoint_id)
                        .values(failure_count=WebhookEndpoint.failure_count + 1))
        # The webhook's id, not its URL: receivers put tokens in URLs.
        log.warning("webhook %s: %s failed (attempt %d): %s", job.webhook_id, job.event_id,
                    row.attempts, row.last_error)
        if row.state != "pending":  # disabled while we were sending
            return "failed"
        if row.round_attempts >= MAX_ATTEMPTS:
            row.state = "failed"
            return "failed"
        row.next_attempt_at = at + RETRY_DELAYS[row.round_attempts - 1]
        return "retrying"
