"""Request and response schemas of returns after payment and of
remittances (issue 4)."""
from __future__ import annotations

import base64
import binascii

import marshmallow as ma
from marshmallow import fields, validate

from service.schemas_channel import CODE, PageArgs, StrictSchema
from service.schemas_ledger import UtcDateTime


class ReturnLineIn(StrictSchema):
    line_no = fields.Integer(required=True, strict=True)
    quantity = fields.Integer(required=True, strict=True)


class ReturnIn(StrictSchema):
    lines = fields.List(fields.Nested(ReturnLineIn), required=True,
                        validate=validate.Length(min=1, max=500))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))
    client_reference = fields.String(load_default=None, allow_none=True,
                                     validate=validate.Length(min=1, max=64))


class ReturnLineOut(ma.Schema):
    line_no = fields.Integer()
    sku = fields.String(allow_none=True)
    quantity = fields.Integer()
    amount_minor = fields.Integer()


class ReturnOut(ma.Schema):
    public_id = fields.String()
    order = fields.String()
    buyer = fields.String()
    seller = fields.String()
    state = fields.String(metadata={"description": "requested, refunded, rejected or withdrawn."})
    amount_minor = fields.Integer(metadata={"description": "Computed by the server."})
    reason = fields.String()
    client_reference = fields.String(allow_none=True)
    requested_by = fields.String()
    created_at = UtcDateTime()
    decided_by = fields.String(allow_none=True)
    decided_at = UtcDateTime(allow_none=True)
    note = fields.String()
    allocation = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "How much went back to each funding source."})
    entry_id = fields.String(allow_none=True)
    lines = fields.List(fields.Nested(ReturnLineOut))


class ReturnList(ma.Schema):
    items = fields.List(fields.Nested(ReturnOut))


class ReturnListArgs(StrictSchema):
    state = fields.String(validate=validate.OneOf(("requested", "refunded", "rejected",
                                                   "withdrawn")))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))


class ReturnDecisionIn(StrictSchema):
    note = fields.String(load_default="", validate=validate.Length(max=500))


class Base64Bytes(fields.Field):
    """A file sent as base64 in JSON (receipts are small: at most 5 MB)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ma.ValidationError("must be base64 text")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ma.ValidationError("is not valid base64") from None


class RemittanceIn(StrictSchema):
    seller = fields.String(required=True, **CODE)
    purpose = fields.String(required=True,
                            validate=validate.OneOf(("order", "deposit", "repayment")))
    order = fields.String(load_default=None, allow_none=True, **CODE)
    amount_minor = fields.Integer(required=True, strict=True)
    currency = fields.String(load_default="CNY", validate=validate.Length(equal=3))
    payer_account = fields.String(required=True, validate=validate.Length(min=4, max=64))
    payer_name = fields.String(load_default="", validate=validate.Length(max=200))
    bank_reference = fields.String(required=True, **CODE)
    proof_base64 = Base64Bytes(load_default=None, allow_none=True, metadata={
        "description": "The receipt scan, base64 (PNG, JPEG or PDF, at most 5 MB)."})
    proof_content_type = fields.String(load_default=None, allow_none=True)


class RemittanceOut(ma.Schema):
    public_id = fields.String()
    buyer = fields.String()
    seller = fields.String()
    purpose = fields.String()
    order = fields.String(allow_none=True)
    amount_minor = fields.Integer()
    currency = fields.String()
    payer_account = fields.String()
    payer_name = fields.String()
    bank_reference = fields.String()
    has_proof = fields.Boolean()
    proof_content_type = fields.String(allow_none=True)
    proof_sha256 = fields.String(allow_none=True)
    state = fields.String(metadata={"description": "filed, confirmed or rejected."})
    filed_by = fields.String()
    filed_at = UtcDateTime()
    decided_by = fields.String(allow_none=True)
    decided_at = UtcDateTime(allow_none=True)
    note = fields.String()


class RemittancePage(ma.Schema):
    items = fields.List(fields.Nested(RemittanceOut))
    next_cursor = fields.String(allow_none=True)


class RemittanceListArgs(PageArgs):
    role = fields.String(load_default="buyer", validate=validate.OneOf(("buyer", "seller")))
    state = fields.String(validate=validate.OneOf(("filed", "confirmed", "rejected")))


class RemittanceDecisionIn(StrictSchema):
    note = fields.String(load_default="", validate=validate.Length(max=500))
