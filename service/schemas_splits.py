"""Request and response schemas of parties' gateway accounts and split
instructions (issue 6, "Who moves the money"). Shapes only; the use cases
(``channel_api.split_instructions``) check the values and name the field
they refuse."""
from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from clearing.split_states import RETURN_STATES, STATES
from service.schemas_channel import StrictSchema
from service.schemas_ledger import UtcDateTime


class GatewayAccountIn(StrictSchema):
    gateway = fields.String(required=True, metadata={
        "description": "wechatpay, alipay or sandbox."})
    account = fields.String(required=True, metadata={
        "description": "The party's account at the gateway: a WeChat Pay merchant id or "
                       "openid, an Alipay userId (2088...) or login name, a sandbox account."})
    kind = fields.String(required=True, metadata={
        "description": "wechatpay: MERCHANT_ID or PERSONAL_OPENID; alipay: userId or "
                       "loginName; sandbox: account. Only a merchant collects the party's "
                       "sales as payee (MERCHANT_ID; a userId with app_auth_token; a sandbox "
                       "account); any kind receives splits."})
    app_auth_token = fields.String(load_default=None, load_only=True, metadata={
        "description": "alipay userId only: the app_auth_token the seller's authorisation of "
                       "the platform's app gave (third-party application authorisation), "
                       "so that its sales are collected in its own name. Kept for Alipay, "
                       "never shown again; send it again to replace it."})


class GatewayAccountOut(ma.Schema):
    public_id = fields.String()
    party = fields.String()
    gateway = fields.String()
    account = fields.String()
    kind = fields.String()
    status = fields.String(metadata={"description": "active, or retired by a newer one."})
    actor = fields.String()
    created_at = UtcDateTime()
    retired_at = UtcDateTime(allow_none=True)
    authorized = fields.Boolean(metadata={
        "description": "Whether the platform holds the merchant's authorisation (alipay's "
                       "app_auth_token; the token itself is never shown)."})
    payee = fields.Boolean(metadata={
        "description": "Whether this account collects the party's sales at the gateway in its "
                       "own name (a merchant there); if not, it only receives splits."})


class GatewayAccountList(ma.Schema):
    items = fields.List(fields.Nested(GatewayAccountOut))


class SplitReceiverOut(ma.Schema):
    party = fields.String(metadata={"description": "A party code, or platform."})
    account = fields.String(allow_none=True, metadata={
        "description": "null: the party has no account registered at the gateway."})
    kind = fields.String(allow_none=True)
    amount_minor = fields.Integer()
    result = fields.String(metadata={"description": "pending, success or closed."})
    fail_reason = fields.String(allow_none=True, metadata={
        "description": "The gateway's reason for a closed receiver."})
    entry_id = fields.String(allow_none=True, metadata={
        "description": "The ledger entry that posted its success."})
    documents = fields.List(fields.String(), metadata={
        "description": "The clearing documents (legs) it carries."})


class SplitInstructionOut(ma.Schema):
    public_id = fields.String(metadata={
        "description": "Also the out_order_no (Alipay: out_request_no) the gateway knows it by."})
    kind = fields.String(metadata={"description": "split, or finish (the rest to the payee)."})
    gateway = fields.String()
    payment = fields.String()
    transaction_id = fields.String()
    order = fields.String()
    payee = fields.String()
    currency = fields.String()
    amount_minor = fields.Integer()
    state = fields.String(metadata={"description": ", ".join(STATES)})
    reason = fields.String(allow_none=True, metadata={
        "description": "Why it is blocked, refused or failed."})
    last_error = fields.String(allow_none=True, metadata={
        "description": "Why the last send did not reach the gateway (it is sent again)."})
    attempts = fields.Integer()
    gateway_order_id = fields.String(allow_none=True)
    fee_minor = fields.Integer(allow_none=True, metadata={
        "description": "The fee the cap was checked with."})
    fee_source = fields.String(allow_none=True, metadata={
        "description": "bill (the gateway's daily bill) or estimate (1 %, rounded up)."})
    cap_minor = fields.Integer(allow_none=True, metadata={
        "description": "What the gateway lets be split away from the whole payment."})
    retry_of = fields.String(allow_none=True)
    retried_by = fields.String(allow_none=True)
    created_by = fields.String()
    created_at = UtcDateTime()
    updated_at = UtcDateTime()
    receivers = fields.List(fields.Nested(SplitReceiverOut))


class SplitEventOut(ma.Schema):
    from_state = fields.String(allow_none=True)
    to_state = fields.String()
    actor = fields.String()
    note = fields.String()
    entry_id = fields.String(allow_none=True)
    at = UtcDateTime()


class SplitInstructionDetailOut(SplitInstructionOut):
    events = fields.List(fields.Nested(SplitEventOut))


class SplitInstructionListArgs(StrictSchema):
    party = fields.String(load_default=None, metadata={
        "description": "Instructions this party is the payee or a receiver of."})
    state = fields.String(load_default=None, validate=validate.OneOf(STATES))
    attention = fields.Boolean(load_default=False, metadata={
        "description": "Only those waiting for finance: blocked, refused, failed."})
    gateway = fields.String(load_default=None)
    order = fields.String(load_default=None)
    payment = fields.String(load_default=None)
    after = fields.String(load_default=None)
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))


class SplitInstructionPage(ma.Schema):
    items = fields.List(fields.Nested(SplitInstructionOut))
    next_cursor = fields.String(allow_none=True)


class SplitRetryIn(StrictSchema):
    note = fields.String(load_default="", validate=validate.Length(max=200))


class SplitReturnOut(ma.Schema):
    public_id = fields.String(metadata={
        "description": "Also the out_return_no the gateway knows it by."})
    instruction = fields.String(metadata={
        "description": "The split instruction (out_order_no) being returned."})
    gateway = fields.String()
    payment = fields.String()
    order = fields.String()
    party = fields.String(metadata={"description": "The receiver giving back: a party code, "
                                                   "or platform."})
    account = fields.String()
    currency = fields.String()
    amount_minor = fields.Integer()
    documents = fields.List(fields.String(), metadata={
        "description": "The clearing documents (legs) it gives back."})
    state = fields.String(metadata={"description": ", ".join(RETURN_STATES)})
    cause = fields.String(metadata={"description": "The refund that asked for it."})
    reason = fields.String(allow_none=True, metadata={"description": "Why it failed."})
    last_error = fields.String(allow_none=True, metadata={
        "description": "Why the last send did not reach the gateway (it is sent again)."})
    attempts = fields.Integer()
    entry_id = fields.String(allow_none=True, metadata={
        "description": "The ledger entry that posted its success."})
    retry_of = fields.String(allow_none=True)
    retried_by = fields.String(allow_none=True)
    created_by = fields.String()
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class SplitReturnListArgs(StrictSchema):
    party = fields.String(load_default=None, metadata={
        "description": "Returns this receiver gives back."})
    state = fields.String(load_default=None, validate=validate.OneOf(RETURN_STATES))
    attention = fields.Boolean(load_default=False, metadata={
        "description": "Only those waiting for finance: failed."})
    order = fields.String(load_default=None)
    after = fields.String(load_default=None)
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))


class SplitReturnPage(ma.Schema):
    items = fields.List(fields.Nested(SplitReturnOut))
    next_cursor = fields.String(allow_none=True)
