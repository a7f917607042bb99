"""Request and response schemas of events and webhooks (issue 5)."""
from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from service.schemas_channel import PageArgs, StrictSchema
from service.schemas_ledger import UtcDateTime

TYPE_PATTERN = validate.Length(min=1, max=64)


class EventListArgs(PageArgs):
    type = fields.String(validate=TYPE_PATTERN, metadata={
        "description": "Only these types: 'order' or 'order.*' (every order event), "
                       "'order.paid' (that type)."})


class DeliveryOut(ma.Schema):
    webhook_id = fields.String()
    state = fields.String(metadata={"description": "pending, delivered or failed (given up)."})
    attempts = fields.Integer()
    last_status = fields.Integer(allow_none=True, metadata={
        "description": "Your endpoint's last HTTP status; null when it did not answer."})
    last_error = fields.String(allow_none=True)
    next_attempt_at = UtcDateTime(allow_none=True)
    delivered_at = UtcDateTime(allow_none=True)


class EventOut(ma.Schema):
    id = fields.String(metadata={"description": "evt_…: the Webhook-Id of its deliveries."})
    type = fields.String()
    subject_type = fields.String()
    subject = fields.String()
    created_at = UtcDateTime()
    data = fields.Dict(metadata={"description": "Amounts are integers in minor units."})


class EventDetailOut(EventOut):
    deliveries = fields.List(fields.Nested(DeliveryOut), metadata={
        "description": "How it is getting to your webhooks."})


class EventPage(ma.Schema):
    items = fields.List(fields.Nested(EventOut))
    next_cursor = fields.String(allow_none=True)


class ReplayOut(ma.Schema):
    event_id = fields.String()
    deliveries = fields.List(fields.Nested(DeliveryOut), metadata={
        "description": "One per active webhook of yours that wants this type."})


class WebhookIn(StrictSchema):
    url = fields.String(required=True, validate=validate.Length(min=1, max=500))
    types = fields.List(fields.String(validate=TYPE_PATTERN), load_default=None, allow_none=True,
                        validate=validate.Length(min=1, max=20), metadata={
                            "description": "Event type patterns ('order.paid', 'order.*'); "
                                           "null or absent: every type."})


class WebhookOut(ma.Schema):
    public_id = fields.String()
    url = fields.String()
    types = fields.List(fields.String(), allow_none=True)
    status = fields.String(metadata={"description": "active or disabled."})
    failure_count = fields.Integer(metadata={
        "description": "Failed attempts since the last delivered one."})
    created_at = UtcDateTime()
    disabled_at = UtcDateTime(allow_none=True)


class RegisteredWebhookOut(ma.Schema):
    webhook = fields.Nested(WebhookOut)
    secret = fields.String(metadata={
        "description": "Shown once: verify each Webhook-Signature with it."})


class WebhookList(ma.Schema):
    items = fields.List(fields.Nested(WebhookOut))
