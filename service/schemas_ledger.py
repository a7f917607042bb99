"""Marshmallow schemas of the read-only ledger API: query arguments in, views out.

Output schemas turn the ledger's frozen view dataclasses into JSON in a
``pre_dump`` hook, so the mapping (money as integer minor units plus
currency, datetimes as ISO 8601 UTC) lives in one place and the OpenAPI
document shows the real shape.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

LIMIT_DEFAULT = 100
LIMIT_MAX = 500


# --- fields ------------------------------------------------------------------


class UtcDateTime(fields.DateTime):
    """ISO 8601 in UTC with a ``Z``; input must carry its offset.

    A naive input is refused rather than guessed: the business runs in
    Asia/Shanghai, and an operator's "2024-05-01T00:00" could mean either.
    SQLite hands stored datetimes back naive; they are UTC by convention.
    """

    default_error_messages = {
        "naive": "Must include a timezone offset, e.g. 2024-05-01T00:00:00Z or +08:00.",
    }

    def _serialize(self, value: datetime | None, attr, obj, **kwargs) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")

    def _deserialize(self, value, attr, data, **kwargs) -> datetime:
        parsed = super()._deserialize(value, attr, data, **kwargs)
        if parsed.tzinfo is None:
            raise self.make_error("naive")
        return parsed.astimezone(timezone.utc)


def money(amount_minor: int | None, currency: str) -> dict[str, Any] | None:
    return None if amount_minor is None else {"amount_minor": amount_minor, "currency": currency}


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


# --- query arguments ---------------------------------------------------------


class _LimitMixin(ma.Schema):
    limit = fields.Integer(
        load_default=LIMIT_DEFAULT,
        validate=validate.Range(min=1, max=LIMIT_MAX),
        metadata={"description": f"Page size, 1 to {LIMIT_MAX}."},
    )


class AccountListArgs(_LimitMixin):
    owner_party_id = fields.String(validate=validate.Length(min=1, max=64))
    currency = fields.String(validate=validate.Regexp(r"^[A-Z]{3}$", error="Must be an ISO 4217 code such as CNY."))
    code_prefix = fields.String(validate=validate.Length(min=1, max=200))
    after = fields.String(
        validate=validate.Length(min=1, max=500),
        metadata={"description": "The `next_cursor` of the previous page."},
    )


class BalanceAtArgs(ma.Schema):
    at = UtcDateTime(metadata={"description": "Instant to read the balance at; default now."})


class StatementCsvArgs(ma.Schema):
    """A statement's period (the CSV export takes the whole period at once)."""

    start = UtcDateTime(required=True)
    end = UtcDateTime(metadata={"description": "Inclusive end; default now."})

    @ma.validates_schema
    def _end_after_start(self, data, **_kwargs):
        if data.get("end") is not None and data["end"] < data["start"]:
            raise ma.ValidationError("Must not be before start.", field_name="end")


class StatementArgs(StatementCsvArgs, _LimitMixin):
    cursor = fields.String(
        validate=validate.Length(min=1, max=500),
        metadata={"description": "The `next_cursor` of the previous page."},
    )


class EntryListArgs(_LimitMixin):
    account = fields.String(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "Account code or public id; only entries touching it."},
    )
    after = fields.String(
        validate=validate.Length(min=1, max=500),
        metadata={"description": "The `next_cursor` of the previous page."},
    )


class TrialBalanceArgs(ma.Schema):
    at = UtcDateTime(metadata={"description": "Instant to compute the trial balance at; default now."})


# --- output ------------------------------------------------------------------


class MoneySchema(ma.Schema):
    amount_minor = fields.Integer(required=True, metadata={"description": "Integer minor units (fen for CNY)."})
    currency = fields.String(required=True, metadata={"description": "ISO 4217 code."})


class AccountBalancesSchema(ma.Schema):
    posted = fields.Nested(MoneySchema, metadata={"description": "Posted balance on the normal side."})
    pending = fields.Nested(MoneySchema, metadata={"description": "Posted plus every pending entry."})
    available = fields.Nested(MoneySchema, metadata={"description": "Posted minus pending outflows."})
    pending_debits = fields.Nested(MoneySchema)
    pending_credits = fields.Nested(MoneySchema)


class AccountSchema(ma.Schema):
    id = fields.String(metadata={"description": "Public id, acct_…"})
    code = fields.String()
    name = fields.String()
    type = fields.String()
    normal_side = fields.String()
    currency = fields.String()
    owner_party_id = fields.String(allow_none=True)
    status = fields.String()
    min_balance = fields.Nested(MoneySchema, allow_none=True)
    max_balance = fields.Nested(MoneySchema, allow_none=True)
    balance_shards = fields.Integer()
    metadata = fields.Dict()
    balances = fields.Nested(AccountBalancesSchema)
    version = fields.Integer()
    created_at = UtcDateTime()

    @ma.pre_dump
    def _from_view(self, view, **_kwargs) -> dict[str, Any]:
        currency = view.currency
        return {
            "id": view.id,
            "code": view.code,
            "name": view.name,
            "type": _enum_value(view.type),
            "normal_side": _enum_value(view.normal_side),
            "currency": currency,
            "owner_party_id": view.owner_party_id,
            "status": _enum_value(view.status),
            "min_balance": money(view.min_balance_minor, currency),
            "max_balance": money(view.max_balance_minor, currency),
            "balance_shards": view.balance_shards,
            "metadata": dict(view.metadata or {}),
            "balances": {
                "posted": money(view.posted_minor, currency),
                "pending": money(view.pending_minor, currency),
                "available": money(view.available_minor, currency),
                "pending_debits": money(view.pending_debits_minor, currency),
                "pending_credits": money(view.pending_credits_minor, currency),
            },
            "version": view.version,
            "created_at": view.created_at,
        }


class AccountPageSchema(ma.Schema):
    items = fields.List(fields.Nested(AccountSchema))
    next_cursor = fields.String(allow_none=True, metadata={"description": "Pass as `after`; null on the last page."})


class BalanceAtSchema(ma.Schema):
    account = fields.String(metadata={"description": "Account code."})
    at = UtcDateTime()
    balance = fields.Nested(MoneySchema)


class PostingSchema(ma.Schema):
    line = fields.Integer()
    account = fields.String(metadata={"description": "Account code."})
    side = fields.String()
    amount = fields.Nested(MoneySchema)
    pending = fields.Boolean()
    balance_after = fields.Nested(
        MoneySchema, metadata={"description": "Balance of the account (its shard, if sharded) after this posting."}
    )
    version = fields.Integer()
    posted_at = UtcDateTime()

    @ma.pre_dump
    def _from_view(self, view, **_kwargs) -> dict[str, Any]:
        return {
            "line": view.line,
            "account": view.account,
            "side": _enum_value(view.side),
            "amount": money(view.amount_minor, view.currency),
            "pending": view.pending,
            "balance_after": money(view.balance_after_minor, view.currency),
            "version": view.version,
            "posted_at": view.posted_at,
        }


class EntrySchema(ma.Schema):
    id = fields.String(metadata={"description": "Public id, je_…"})
    code = fields.String(metadata={"description": "Why the entry exists, e.g. deposit."})
    kind = fields.String()
    status = fields.String()
    description = fields.String()
    effective_at = UtcDateTime()
    posted_at = UtcDateTime()
    expires_at = UtcDateTime(allow_none=True)
    metadata = fields.Dict()
    idempotency_key = fields.String(allow_none=True)
    pending_id = fields.String(allow_none=True)
    reverses_id = fields.String(allow_none=True)
    postings = fields.List(fields.Nested(PostingSchema))

    @ma.pre_dump
    def _from_view(self, view, **_kwargs) -> dict[str, Any]:
        return {
            "id": view.id,
            "code": view.code,
            "kind": _enum_value(view.kind),
            "status": view.status,
            "description": view.description,
            "effective_at": view.effective_at,
            "posted_at": view.posted_at,
            "expires_at": view.expires_at,
            "metadata": dict(view.metadata or {}),
            "idempotency_key": view.idempotency_key,
            "pending_id": view.pending_id,
            "reverses_id": view.reverses_id,
            "postings": list(view.postings),
        }


class EntryPageSchema(ma.Schema):
    items = fields.List(fields.Nested(EntrySchema))
    next_cursor = fields.String(allow_none=True, metadata={"description": "Pass as `after`; null on the last page."})


class StatementLineSchema(ma.Schema):
    entry_id = fields.String()
    entry_code = fields.String()
    description = fields.String()
    side = fields.String()
    amount = fields.Nested(MoneySchema)
    balance_after = fields.Nested(MoneySchema)
    posted_at = UtcDateTime()


class StatementSchema(ma.Schema):
    account = fields.Nested(AccountSchema)
    start = UtcDateTime()
    end = UtcDateTime()
    opening_balance = fields.Nested(MoneySchema)
    closing_balance = fields.Nested(MoneySchema)
    lines = fields.List(fields.Nested(StatementLineSchema))
    next_cursor = fields.String(allow_none=True, metadata={"description": "Pass as `cursor`; null on the last page."})

    @ma.pre_dump
    def _from_view(self, statement, **_kwargs) -> dict[str, Any]:
        currency = statement.account.currency
        return {
            "account": statement.account,
            "start": statement.start,
            "end": statement.end,
            "opening_balance": money(statement.opening_balance_minor, currency),
            "closing_balance": money(statement.closing_balance_minor, currency),
            # The posting's database id is left out: the API shows no bare
            # sequence numbers, and entry_id + order identify the line.
            "lines": [
                {
                    "entry_id": line.entry_id,
                    "entry_code": line.entry_code,
                    "description": line.description,
                    "side": _enum_value(line.side),
                    "amount": money(line.amount_minor, currency),
                    "balance_after": money(line.balance_after_minor, currency),
                    "posted_at": line.posted_at,
                }
                for line in statement.lines
            ],
            "next_cursor": statement.next_cursor,
        }


class TrialBalanceRowSchema(ma.Schema):
    account = fields.String()
    name = fields.String()
    type = fields.String()
    debit = fields.Nested(MoneySchema)
    credit = fields.Nested(MoneySchema)


class TrialBalanceTotalSchema(ma.Schema):
    currency = fields.String()
    debits = fields.Nested(MoneySchema)
    credits = fields.Nested(MoneySchema)


class TrialBalanceSchema(ma.Schema):
    at = UtcDateTime(allow_none=True)
    balanced = fields.Boolean(metadata={"description": "Debits equal credits in every currency."})
    rows = fields.List(fields.Nested(TrialBalanceRowSchema))
    totals = fields.List(fields.Nested(TrialBalanceTotalSchema))

    @ma.pre_dump
    def _from_view(self, tb, **_kwargs) -> dict[str, Any]:
        return {
            "at": tb.at,
            "balanced": tb.balanced,
            "rows": [
                {
                    "account": row.account,
                    "name": row.name,
                    "type": _enum_value(row.type),
                    "debit": money(row.debit_minor, row.currency),
                    "credit": money(row.credit_minor, row.currency),
                }
                for row in tb.rows
            ],
            "totals": [
                {"currency": currency, "debits": money(debits, currency), "credits": money(credits, currency)}
                for currency, (debits, credits) in sorted(tb.totals.items())
            ],
        }


class HealthSchema(ma.Schema):
    status = fields.String()
    database = fields.String()


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details, the body of every error response."""

    type = fields.String(metadata={"description": "URI naming the problem type."})
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    code = fields.String(metadata={"description": "Stable machine-readable code, e.g. insufficient_funds."})
    errors = fields.List(
        fields.Dict(),
        metadata={"description": "Validation errors: one {field, location, message} per problem."},
    )
    details = fields.Dict(metadata={"description": "Extra facts of a ledger error."})
