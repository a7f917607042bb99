"""Request and response schemas of credit administration and held orders
(issue 4): grade defaults, policies, temporary increases, approvals."""
from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from service.schemas_channel import CODE, StrictSchema
from service.schemas_ledger import UtcDateTime

TERMS = validate.OneOf(("days_after_delivery", "day_of_month"))
ACTION = validate.OneOf(("block", "hold"))


class CreditDefaultIn(StrictSchema):
    limit_minor = fields.Integer(required=True, strict=True)
    terms_kind = fields.String(load_default="days_after_delivery", validate=TERMS)
    terms_days = fields.Integer(load_default=30, strict=True)
    due_day = fields.Integer(load_default=None, allow_none=True, strict=True)
    currency = fields.String(load_default="CNY", validate=validate.Length(equal=3))


class CreditDefaultOut(ma.Schema):
    seller = fields.String()
    grade = fields.String()
    limit_minor = fields.Integer()
    terms_kind = fields.String()
    terms_days = fields.Integer()
    due_day = fields.Integer(allow_none=True)
    currency = fields.String()


class CreditDefaultList(ma.Schema):
    items = fields.List(fields.Nested(CreditDefaultOut))


class CreditPolicyIn(StrictSchema):
    grade = fields.String(load_default=None, allow_none=True, **CODE, metadata={
        "description": "The grade it is for; null: every grade without a policy of its own."})
    on_limit = fields.String(load_default="block", validate=ACTION)
    on_expired = fields.String(load_default="block", validate=ACTION)
    overdue_days = fields.Integer(load_default=None, allow_none=True, strict=True, metadata={
        "description": "Check debts overdue by more than this many days (null: no check)."})
    on_overdue = fields.String(load_default="block", validate=ACTION)
    freeze_overdue_days = fields.Integer(load_default=None, allow_none=True, strict=True, metadata={
        "description": "The freeze job freezes a line overdue by more days than this."})


class CreditPolicyOut(ma.Schema):
    seller = fields.String()
    grade = fields.String(allow_none=True)
    on_limit = fields.String()
    on_expired = fields.String()
    overdue_days = fields.Integer(allow_none=True)
    on_overdue = fields.String()
    freeze_overdue_days = fields.Integer(allow_none=True)


class CreditPolicyList(ma.Schema):
    items = fields.List(fields.Nested(CreditPolicyOut))


class IncreaseIn(StrictSchema):
    amount_minor = fields.Integer(required=True, strict=True)
    valid_to = UtcDateTime(required=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))


class IncreaseOut(ma.Schema):
    id = fields.Integer()
    seller = fields.String()
    buyer = fields.String()
    amount_minor = fields.Integer()
    valid_from = UtcDateTime()
    valid_to = UtcDateTime()
    reason = fields.String()
    order = fields.String(allow_none=True)
    actor = fields.String()


class IncreaseList(ma.Schema):
    items = fields.List(fields.Nested(IncreaseOut))


class HoldOut(ma.Schema):
    order = fields.String()
    buyer = fields.String()
    seller = fields.String()
    total_minor = fields.Integer()
    reasons = fields.List(fields.String(), metadata={
        "description": "limit_exceeded, credit_expired, overdue."})
    plan = fields.Dict(keys=fields.String(), values=fields.Integer())
    state = fields.String()
    created_at = UtcDateTime()
    decided_by = fields.String(allow_none=True)
    decided_at = UtcDateTime(allow_none=True)
    note = fields.String()


class HoldList(ma.Schema):
    items = fields.List(fields.Nested(HoldOut))


class HoldArgs(StrictSchema):
    state = fields.String(load_default="pending",
                          validate=validate.OneOf(("pending", "approved", "rejected", "cancelled")))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))


class DecisionIn(StrictSchema):
    note = fields.String(load_default="", validate=validate.Length(max=500))
