"""Request and response schemas of bank accounts, payouts, payout files and
settlement batches (issue 6). Shapes only; the use cases
(``channel_api.payouts``, ``channel_api.settlements``) check the values and
name the field they refuse."""
from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from clearing.payout_states import STATES
from service.schemas_channel import StrictSchema
from service.schemas_ledger import UtcDateTime

AMOUNT = {"strict": True, "metadata": {"description": "Minor units (fen), a whole number."}}


class BankAccountIn(StrictSchema):
    holder_name = fields.String(required=True)
    account_number = fields.String(required=True, metadata={"description": "8-34 digits."})
    bank_code = fields.String(required=True, metadata={
        "description": "The bank's clearing code (CNAPS) or BIC."})
    bank_name = fields.String(required=True)
    currency = fields.String(load_default="CNY")
    sweep_above_minor = fields.Integer(load_default=None, allow_none=True, strict=True, metadata={
        "description": "A payout schedule: every day, pay out what the wallet holds above "
                       "this; null: payouts only on request."})


class BankAccountOut(ma.Schema):
    public_id = fields.String()
    party = fields.String()
    holder_name = fields.String()
    account_number_masked = fields.String()
    bank_code = fields.String()
    bank_name = fields.String()
    currency = fields.String()
    status = fields.String(metadata={"description": "active, or retired by a newer one."})
    sweep_above_minor = fields.Integer(allow_none=True)
    registered_by = fields.String()
    registered_at = UtcDateTime()


class BankAccountList(ma.Schema):
    items = fields.List(fields.Nested(BankAccountOut))


class PayoutIn(StrictSchema):
    party = fields.String(load_default=None, metadata={
        "description": "Whose wallet (default: the caller's party; the brand's finance may "
                       "name another)."})
    amount_minor = fields.Integer(required=True, **AMOUNT)
    currency = fields.String(load_default="CNY")
    remark = fields.String(load_default="", validate=validate.Length(max=140))


class NoteIn(StrictSchema):
    note = fields.String(load_default="", validate=validate.Length(max=200))


class RejectIn(StrictSchema):
    note = fields.String(required=True, validate=validate.Length(min=1, max=200))


class PayoutOut(ma.Schema):
    public_id = fields.String()
    party = fields.String()
    amount_minor = fields.Integer()
    currency = fields.String()
    state = fields.String(metadata={"description": ", ".join(STATES)})
    needs_approval = fields.Boolean()
    source = fields.String(metadata={"description": "party, or schedule."})
    bank_account = fields.String()
    payee_name = fields.String()
    payee_account_masked = fields.String()
    bank = fields.String(allow_none=True, metadata={
        "description": "The bank adapter it was sent through, or file."})
    bank_reference = fields.String(allow_none=True)
    file = fields.String(allow_none=True)
    failure_reason = fields.String(allow_none=True)
    remark = fields.String()
    requested_by = fields.String()
    requested_at = UtcDateTime()
    decided_by = fields.String(allow_none=True)
    updated_at = UtcDateTime()


class PayoutListArgs(StrictSchema):
    party = fields.String(load_default=None)
    state = fields.String(load_default=None, validate=validate.OneOf(STATES))
    after = fields.String(load_default=None)
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))


class PayoutPage(ma.Schema):
    items = fields.List(fields.Nested(PayoutOut))
    next_cursor = fields.String(allow_none=True)


class PayoutEventOut(ma.Schema):
    from_state = fields.String(allow_none=True)
    to_state = fields.String()
    actor = fields.String()
    note = fields.String()
    entry_id = fields.String(allow_none=True)
    at = UtcDateTime()


class PayoutEventList(ma.Schema):
    items = fields.List(fields.Nested(PayoutEventOut))


class PayoutFileArgs(StrictSchema):
    currency = fields.String(load_default="CNY")
    execution_date = fields.Date(load_default=None, metadata={
        "description": "When the bank should pay (default: the next business day)."})


class PayoutFileOut(ma.Schema):
    public_id = fields.String()
    currency = fields.String()
    count = fields.Integer()
    total_minor = fields.Integer()
    created_by = fields.String()
    created_at = UtcDateTime()
    download = fields.String(metadata={"description": "Where to get the pain.001 XML."})


class OutcomeSummaryOut(ma.Schema):
    applied = fields.Integer()
    duplicates = fields.Integer()
    waiting = fields.Integer()
    unknown = fields.List(fields.String())
    conflicts = fields.List(fields.String())


class BatchArgs(StrictSchema):
    party = fields.String(load_default=None)
    since = fields.Date(load_default=None)
    until = fields.Date(load_default=None)
    status = fields.String(load_default=None, validate=validate.OneOf(("balanced", "mismatch")))
    after = fields.String(load_default=None)
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))
    format = fields.String(load_default="json", validate=validate.OneOf(("json", "csv")))


class BatchOut(ma.Schema):
    public_id = fields.String()
    party = fields.String()
    business_day = fields.Date()
    currency = fields.String()
    pending_opening_minor = fields.Integer()
    wallet_opening_minor = fields.Integer()
    cleared_minor = fields.Integer()
    released_minor = fields.Integer()
    clawed_back_minor = fields.Integer()
    paid_out_minor = fields.Integer()
    payout_returned_minor = fields.Integer()
    interest_minor = fields.Integer()
    other_minor = fields.Integer()
    other_detail = fields.Dict(keys=fields.String(), values=fields.Integer())
    pending_closing_minor = fields.Integer()
    wallet_closing_minor = fields.Integer()
    difference_minor = fields.Integer(metadata={
        "description": "How far opening + movements is from the ledger's closing balances; "
                       "0 when the batch ties."})
    status = fields.String()
    created_at = UtcDateTime()


class BatchPage(ma.Schema):
    items = fields.List(fields.Nested(BatchOut))
    next_cursor = fields.String(allow_none=True)


class SettleArgs(StrictSchema):
    day = fields.Date(required=True)


class SettlementRunOut(ma.Schema):
    day = fields.Date()
    settled = fields.Integer()
    already = fields.Integer()
    mismatched = fields.List(fields.String())


class InterestIn(StrictSchema):
    amount_minor = fields.Integer(required=True, **AMOUNT)
    period_end = fields.Date(required=True, metadata={
        "description": "The last business day the interest covers; wallets are weighed at "
                       "its end."})
    bank_reference = fields.String(required=True, metadata={
        "description": "The bank's reference of the interest credit: once per reference."})
    platform_share_bp = fields.Integer(required=True, strict=True, metadata={
        "description": "What the platform keeps, in basis points (0-10000)."})
    currency = fields.String(load_default="CNY")


class InterestOut(ma.Schema):
    public_id = fields.String()
    bank_reference = fields.String()
    period_end = fields.Date()
    currency = fields.String()
    amount_minor = fields.Integer()
    platform_share_bp = fields.Integer()
    platform_minor = fields.Integer()
    parties = fields.Integer()
    parties_minor = fields.Integer()
    actor = fields.String()
    created_at = UtcDateTime()


class InterestList(ma.Schema):
    items = fields.List(fields.Nested(InterestOut))


class AdvanceIn(StrictSchema):
    order = fields.String(required=True)
    party = fields.String(required=True, metadata={
        "description": "The recipient whose wallet could not give the clawback back "
                       "(the clawback_blocked error's shortfalls name it)."})
    amount_minor = fields.Integer(required=True, **AMOUNT)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=200))


class AdvanceOut(ma.Schema):
    public_id = fields.String()
    party = fields.String()
    order = fields.String()
    currency = fields.String()
    amount_minor = fields.Integer()
    recovered_minor = fields.Integer()
    outstanding_minor = fields.Integer()
    reason = fields.String()
    approved_by = fields.String()
    created_at = UtcDateTime()
    recovered_at = UtcDateTime(allow_none=True)


class AdvanceListArgs(StrictSchema):
    party = fields.String(load_default=None)
    outstanding = fields.Boolean(load_default=False)
    after = fields.String(load_default=None)
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))


class AdvancePage(ma.Schema):
    items = fields.List(fields.Nested(AdvanceOut))
    next_cursor = fields.String(allow_none=True)
