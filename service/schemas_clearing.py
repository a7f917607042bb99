"""Request and response schemas of clearing rules, an order's clearing
preview ("why this split") and the business calendar (issue 6).

Shapes only: a leg's values (a percent within 0..10000 basis points, one
remainder leg, a timing that makes sense) are the use case's to check, so
the API refuses a rule exactly as any other caller of
``channel_api.clearing_rules`` is refused, naming ``legs[1].value``.
"""
from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from channel_api.clearing_rules import PAYMENT_METHODS
from service.schemas_channel import CODE, NAME, PageArgs, StrictSchema
from service.schemas_ledger import UtcDateTime

STATUS = {"validate": validate.OneOf(("active", "inactive"))}
WORD = {"validate": validate.Length(min=1, max=80)}
CODES = {"metadata": {"description": "Codes; null (or left out on create) = any."}}


def _codes(**options) -> fields.List:
    return fields.List(fields.String(**CODE), allow_none=True, **CODES, **options)


class TimingIn(StrictSchema):
    kind = fields.String(required=True, **WORD, metadata={
        "description": "immediate, on_delivery, or t_plus (N business days)."})
    days = fields.Integer(strict=True, metadata={"description": "t_plus only: N (1-365)."})
    anchor = fields.String(**WORD, metadata={
        "description": "t_plus only: counted from the delivery (default) or the payment."})


class LegIn(StrictSchema):
    recipient = fields.String(required=True, **WORD, metadata={
        "description": "seller, brand, buyer_upstream, platform, or party:<code>."})
    basis = fields.String(required=True, **WORD, metadata={
        "description": "percent, per_unit, per_order, or remainder (exactly one leg)."})
    value = fields.Integer(strict=True, metadata={
        "description": "percent: basis points (750 = 7.5%); per_unit, per_order: fen; "
                       "remainder: 0 or left out."})
    timing = fields.Nested(TimingIn, required=True)


class RuleIn(StrictSchema):
    code = fields.String(required=True, **CODE)
    name = fields.String(required=True, **NAME)
    priority = fields.Integer(load_default=0, strict=True)
    status = fields.String(load_default="active", **STATUS)
    trade_modes = _codes(load_default=None)
    categories = _codes(load_default=None)
    sellers = _codes(load_default=None)
    buyers = _codes(load_default=None)
    payment_methods = _codes(load_default=None)
    valid_from = UtcDateTime(load_default=None, allow_none=True,
                             metadata={"description": "Default: now."})
    valid_to = UtcDateTime(load_default=None, allow_none=True)
    legs = fields.List(fields.Nested(LegIn), required=True)


class RuleUpdateIn(StrictSchema):
    """Fields given replace the rule's; fields left out keep their value
    (null: any, or open-ended for ``valid_to``). Partial on purpose: a
    criterion left out of a body must not silently widen the rule to any."""

    name = fields.String(**NAME)
    priority = fields.Integer(strict=True)
    status = fields.String(**STATUS)
    trade_modes = _codes()
    categories = _codes()
    sellers = _codes()
    buyers = _codes()
    payment_methods = _codes()
    valid_from = UtcDateTime()
    valid_to = UtcDateTime(allow_none=True)
    legs = fields.List(fields.Nested(LegIn))
    version = fields.Integer(strict=True, metadata={
        "description": "The version you read: refused (409) if the rule changed since."})


class TimingOut(ma.Schema):
    kind = fields.String()
    days = fields.Integer()
    anchor = fields.String()


class LegOut(ma.Schema):
    recipient = fields.String()
    basis = fields.String()
    value = fields.Integer()
    timing = fields.Nested(TimingOut)


class RuleOut(ma.Schema):
    code = fields.String()
    name = fields.String()
    priority = fields.Integer()
    status = fields.String()
    trade_modes = fields.List(fields.String(), allow_none=True)
    categories = fields.List(fields.String(), allow_none=True)
    sellers = fields.List(fields.String(), allow_none=True)
    buyers = fields.List(fields.String(), allow_none=True)
    payment_methods = fields.List(fields.String(), allow_none=True)
    valid_from = UtcDateTime()
    valid_to = UtcDateTime(allow_none=True)
    legs = fields.List(fields.Nested(LegOut))
    version = fields.Integer()
    created_at = UtcDateTime()
    updated_at = UtcDateTime()
    actor = fields.String()


class RuleListArgs(PageArgs):
    status = fields.String(**STATUS)


class RulePage(ma.Schema):
    items = fields.List(fields.Nested(RuleOut))
    next_cursor = fields.String(allow_none=True)


# --- an order's clearing preview ---------------------------------------------------------

class PreviewArgs(StrictSchema):
    payment_method = fields.String(required=True, validate=validate.OneOf(PAYMENT_METHODS))
    at = UtcDateTime(metadata={"description": "Rules valid at this instant (default now)."})


class RuleCandidateOut(ma.Schema):
    code = fields.String()
    version = fields.Integer()
    eligible = fields.Boolean()
    reason = fields.String(allow_none=True, metadata={
        "description": "Why it could not apply: inactive, not_yet_valid, expired, trade_mode, "
                       "category, seller, buyer, payment_method."})
    rank = fields.Integer(allow_none=True)
    criteria_count = fields.Integer(allow_none=True)
    category_depth = fields.Integer(allow_none=True)
    matched_category = fields.String(allow_none=True)
    decided_by = fields.String(allow_none=True, metadata={
        "description": "On the chosen rule: what put it ahead of the runner-up."})


class PathExplanationOut(ma.Schema):
    category_path = fields.List(fields.String())
    lines = fields.List(fields.Integer())
    candidates = fields.List(fields.Nested(RuleCandidateOut))


class ShareOut(ma.Schema):
    leg_index = fields.Integer()
    recipient = fields.String()
    party = fields.String(allow_none=True, metadata={
        "description": "The recipient's party code (platform: the platform)."})
    basis = fields.String()
    amount_minor = fields.Integer()
    timing = fields.Nested(TimingOut)
    unresolved = fields.String(allow_none=True)


class PartOut(ma.Schema):
    rule = fields.String(allow_none=True)
    rule_version = fields.Integer(allow_none=True)
    lines = fields.List(fields.Integer())
    cash_minor = fields.Integer()
    units = fields.Integer()
    shares = fields.List(fields.Nested(ShareOut))
    explanations = fields.List(fields.Nested(PathExplanationOut))
    problem = fields.String(allow_none=True)


class PreviewOut(ma.Schema):
    order = fields.String()
    seller = fields.String()
    buyer = fields.String()
    trade_mode = fields.String()
    payment_method = fields.String()
    at = UtcDateTime()
    currency = fields.String()
    total_minor = fields.Integer()
    units = fields.Integer()
    parts = fields.List(fields.Nested(PartOut), metadata={
        "description": "One per rule the order's lines chose (usually one)."})


# --- the business calendar ------------------------------------------------------------------

class CalendarArgs(StrictSchema):
    year = fields.Integer(validate=validate.Range(min=1, max=9999))


class CalendarDayOut(ma.Schema):
    day = fields.Date()
    kind = fields.String()
    note = fields.String()


class CalendarOut(ma.Schema):
    items = fields.List(fields.Nested(CalendarDayOut))


class CalendarChangeOut(ma.Schema):
    holidays = fields.Integer()
    workdays = fields.Integer()
    added = fields.Integer()
    removed = fields.Integer()
    changed = fields.Integer()


class DocumentArgs(StrictSchema):
    since = UtcDateTime(load_default=None, allow_none=True,
                        metadata={"description": "Cleared at or after (default: all)."})
    until = UtcDateTime(load_default=None, allow_none=True,
                        metadata={"description": "Cleared before."})
    format = fields.String(load_default="json", validate=validate.OneOf(("json", "csv")))
    limit = fields.Integer(load_default=500, validate=validate.Range(1, 10_000))


class DocumentOut(ma.Schema):
    public_id = fields.String()
    order_ref = fields.String(data_key="order")
    seller = fields.String()
    buyer = fields.String()
    recipient = fields.String(metadata={"description": "Who is owed: a party, or platform."})
    amount_minor = fields.Integer()
    clawed_minor = fields.Integer(metadata={"description": "Taken back by refunds."})
    currency = fields.String()
    rule_code = fields.String(data_key="rule")
    rule_version = fields.Integer()
    leg_index = fields.Integer()
    basis = fields.String()
    payment_method = fields.String()
    cause = fields.String()
    state = fields.String(metadata={"description": "pending, or released to the wallet."})
    cleared_at = UtcDateTime()
    release_at = UtcDateTime(allow_none=True)
    released_at = UtcDateTime(allow_none=True)


class DocumentList(ma.Schema):
    items = fields.List(fields.Nested(DocumentOut))
