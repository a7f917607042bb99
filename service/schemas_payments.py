"""Request and response schemas of payments through gateways (issue 5)."""
from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from service.schemas_channel import CODE, StrictSchema
from service.schemas_ledger import UtcDateTime

GATEWAY = validate.OneOf(("sandbox", "wechatpay", "alipay", "bank"))


class PaymentIn(StrictSchema):
    gateway = fields.String(required=True, validate=GATEWAY)
    purpose = fields.String(load_default="order",
                            validate=validate.OneOf(("order", "deposit", "repayment")))
    order = fields.String(load_default=None, allow_none=True, **CODE, metadata={
        "description": "purpose order: the order whose gateway part this pays."})
    seller = fields.String(load_default=None, allow_none=True, **CODE, metadata={
        "description": "purpose deposit or repayment: at which seller."})
    amount_minor = fields.Integer(load_default=None, allow_none=True, strict=True, metadata={
        "description": "purpose deposit or repayment (an order's is its gateway part)."})

    @ma.validates_schema
    def _purpose_fields(self, data, **_):
        if data["purpose"] == "order":
            if data["order"] is None:
                raise ma.ValidationError("required to pay an order", "order")
            for name in ("seller", "amount_minor"):
                if data[name] is not None:
                    raise ma.ValidationError("not for an order's payment", name)
        else:
            for name in ("seller", "amount_minor"):
                if data[name] is None:
                    raise ma.ValidationError(f"required for a {data['purpose']}", name)
            if data["order"] is not None:
                raise ma.ValidationError("only for an order's payment", "order")


class PaymentOut(ma.Schema):
    public_id = fields.String(metadata={"description": "Also the out_trade_no at the gateway."})
    gateway = fields.String()
    purpose = fields.String()
    order = fields.String(allow_none=True)
    payer = fields.String()
    payee = fields.String()
    amount_minor = fields.Integer()
    currency = fields.String()
    state = fields.String(metadata={"description": "created, pending, succeeded, failed, expired."})
    transaction_id = fields.String(allow_none=True)
    refunded_minor = fields.Integer()
    pay_url = fields.String(allow_none=True, metadata={"description": "Where the payer pays."})
    expires_at = UtcDateTime()
    created_at = UtcDateTime()
    sub_merchant = fields.String(allow_none=True, metadata={
        "description": "The payee's own merchant at the gateway the payment is collected for "
                       "(its WeChat Pay sub_mchid, Alipay userId, sandbox account); null: the "
                       "platform's configured merchant."})


class ExceptionOut(ma.Schema):
    public_id = fields.String()
    kind = fields.String(metadata={"description": "unknown_payment, amount_mismatch, "
                                                  "payable_closed, paid_twice, payee_mismatch "
                                                  "(collected for another merchant than the "
                                                  "payment's payee), refund_failed."})
    gateway = fields.String()
    transaction_id = fields.String()
    out_trade_no = fields.String(allow_none=True)
    amount_minor = fields.Integer()
    currency = fields.String()
    state = fields.String()
    detail = fields.String()
    entry_id = fields.String(allow_none=True)
    created_at = UtcDateTime()


class ResolveIn(StrictSchema):
    buyer = fields.String(required=True, **CODE)
    seller = fields.String(required=True, **CODE)
    note = fields.String(required=True, validate=validate.Length(min=1, max=500))


class SuspenseRefundIn(StrictSchema):
    note = fields.String(required=True, validate=validate.Length(min=1, max=500), metadata={
        "description": "Why the money goes back (kept here, in the exception and the audit)."})
    reason = fields.String(load_default="", validate=validate.Length(max=80), metadata={
        "description": "Sent to the gateway with the refund; the payer may see it."})


class RefundOut(ma.Schema):
    public_id = fields.String(metadata={"description": "Also the out_refund_no at the gateway."})
    exception = fields.String(allow_none=True, metadata={
        "description": "The payment exception whose money this refund gives back."})
    gateway = fields.String()
    out_trade_no = fields.String(attribute="payment", metadata={
        "description": "The trade at the gateway the money is refunded from."})
    amount_minor = fields.Integer()
    currency = fields.String()
    state = fields.String(metadata={"description": "requested (sent after this call), "
                                                   "processing, succeeded, failed."})
    refund_id = fields.String(allow_none=True, metadata={"description": "The gateway's id."})
    reason = fields.String()
    created_at = UtcDateTime()


class ExceptionList(ma.Schema):
    items = fields.List(fields.Nested(ExceptionOut))


class PositionOut(ma.Schema):
    currency = fields.String()
    assets_minor = fields.Integer(metadata={"description": "Custody cash and gateway receivables."})
    liabilities_minor = fields.Integer(metadata={
        "description": "Wallets, pending, deposits, escrows, suspense, payouts in flight."})
    result_minor = fields.Integer(metadata={"description": "Platform revenue less gateway fees."})
    difference_minor = fields.Integer(metadata={"description": "Zero when the invariant holds."})


class ClaimOut(ma.Schema):
    seller = fields.String()
    kind = fields.String()
    currency = fields.String()
    buyers_minor = fields.Integer()
    memo_minor = fields.Integer()


class CashPositionOut(ma.Schema):
    holds = fields.Boolean()
    positions = fields.List(fields.Nested(PositionOut))
    claims = fields.List(fields.Nested(ClaimOut))


class BillArgs(StrictSchema):
    day = fields.Date(required=True, metadata={"description": "The day the bill covers."})
    currency = fields.String(load_default="CNY", validate=validate.Length(equal=3))


class DiscrepancyOut(ma.Schema):
    kind = fields.String(metadata={"description": "unknown_transaction, amount_differs, "
                                                  "missing_from_bill."})
    transaction_id = fields.String()
    bill_minor = fields.Integer(allow_none=True)
    ours_minor = fields.Integer(allow_none=True)


class BillReportOut(ma.Schema):
    gateway = fields.String()
    day = fields.Date()
    payments_minor = fields.Integer()
    refunds_minor = fields.Integer()
    fees_minor = fields.Integer()
    net_minor = fields.Integer(metadata={"description": "What reached custody."})
    lines = fields.Integer()
    matched = fields.Integer()
    entry_id = fields.String(allow_none=True)
    discrepancies = fields.List(fields.Nested(DiscrepancyOut))
