"""Read-only operator endpoints over the ledger, under ``/v1``.

Each view parses its arguments (the schema names any bad field), calls one
ledger read function, and lets the schema shape the answer. Ledger errors
travel up to the app's problem+json handler untouched.
"""
from __future__ import annotations

from datetime import datetime, timezone

import marshmallow as ma
from flask import Response
from flask_smorest import Blueprint

import ledger
from service.exports import statement_csv
from service.request_db import db_session
from service.schemas_ledger import (
    AccountListArgs,
    AccountPageSchema,
    AccountSchema,
    BalanceAtArgs,
    BalanceAtSchema,
    EntryListArgs,
    EntryPageSchema,
    EntrySchema,
    StatementArgs,
    StatementCsvArgs,
    StatementSchema,
    TrialBalanceArgs,
    TrialBalanceSchema,
    money,
)

blp = Blueprint(
    "ledger", __name__, url_prefix="/v1",
    description="Read-only views of the double-entry ledger for operators.",
)

# Query strings are strict: a misspelt parameter (`?limt=5`) is a 422 naming
# it, not a silently ignored filter on a finance report.
QUERY = {"location": "query", "unknown": ma.RAISE}
NOT_FOUND = {"description": "No such account or entry (problem+json)."}


def _now() -> datetime:
    return datetime.now(timezone.utc)


@blp.route("/accounts", methods=["GET"])
@blp.arguments(AccountListArgs, **QUERY, as_kwargs=True)
@blp.response(200, AccountPageSchema)
def list_accounts(limit: int, **filters):
    """List accounts, ordered, one page at a time."""
    accounts, next_cursor = ledger.list_accounts(db_session(), limit=limit, **filters)
    return {"items": accounts, "next_cursor": next_cursor}


@blp.route("/accounts/<code_or_id>", methods=["GET"])
@blp.response(200, AccountSchema)
@blp.alt_response(404, **NOT_FOUND)
def get_account(code_or_id: str):
    """One account with its posted, pending and available balances."""
    return ledger.get_account(db_session(), code_or_id)


@blp.route("/accounts/<code_or_id>/balance", methods=["GET"])
@blp.arguments(BalanceAtArgs, **QUERY, as_kwargs=True)
@blp.response(200, BalanceAtSchema)
@blp.alt_response(404, **NOT_FOUND)
def get_balance_at(code_or_id: str, at: datetime | None = None):
    """The posted balance of an account at an instant (default now)."""
    session = db_session()
    account = ledger.get_account(session, code_or_id)
    at = at or _now()
    balance_minor = ledger.balance_at(session, account.code, at)
    return {"account": account.code, "at": at, "balance": money(balance_minor, account.currency)}


@blp.route("/accounts/<code_or_id>/statement", methods=["GET"])
@blp.arguments(StatementArgs, **QUERY, as_kwargs=True)
@blp.response(200, StatementSchema)
@blp.alt_response(404, **NOT_FOUND)
def get_statement(code_or_id: str, start: datetime, limit: int, end: datetime | None = None,
                  cursor: str | None = None):
    """Opening and closing balance of a period and its posted lines, oldest first."""
    session = db_session()
    account = ledger.get_account(session, code_or_id)
    end = end or _now()
    if end < start:  # only reachable when end defaulted to now and start is in the future
        raise ma.ValidationError({"start": ["Must not be in the future when end is omitted."]})
    return ledger.statement(session, account.code, start, end, cursor=cursor, limit=limit)


@blp.route("/accounts/<code_or_id>/statement.csv", methods=["GET"])
@blp.arguments(StatementCsvArgs, **QUERY, as_kwargs=True)
@blp.response(200, content_type="text/csv", description="The statement as CSV, amounts in decimal units.")
@blp.alt_response(404, **NOT_FOUND)
def get_statement_csv(code_or_id: str, start: datetime, end: datetime | None = None):
    """The whole statement of a period as a CSV file (opening row, lines, closing row)."""
    session = db_session()
    account = ledger.get_account(session, code_or_id)  # a 404 before any byte is sent
    end = end or _now()
    if end < start:
        raise ma.ValidationError({"start": ["Must not be in the future when end is omitted."]})
    filename = f"statement-{account.code.replace(':', '_')}-{start:%Y%m%d}-{end:%Y%m%d}.csv"
    # Built whole before responding: the request's session closes at teardown,
    # before a streamed body would be read.
    body = "".join(statement_csv(session, account.code, start, end))
    return Response(body, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@blp.route("/entries", methods=["GET"])
@blp.arguments(EntryListArgs, **QUERY, as_kwargs=True)
@blp.response(200, EntryPageSchema)
@blp.alt_response(404, **NOT_FOUND)
def list_entries(limit: int, account: str | None = None, after: str | None = None):
    """Journal entries, oldest first, optionally only those touching one account."""
    session = db_session()
    if account is not None:
        # The ledger filters by code; resolve a public id (acct_…) first.
        account = ledger.get_account(session, account).code
    entries, next_cursor = ledger.list_entries(session, account=account, after=after, limit=limit)
    return {"items": entries, "next_cursor": next_cursor}


@blp.route("/entries/<entry_id>", methods=["GET"])
@blp.response(200, EntrySchema)
@blp.alt_response(404, **NOT_FOUND)
def get_entry(entry_id: str):
    """One journal entry with its postings."""
    return ledger.get_entry(db_session(), entry_id)


@blp.route("/trial-balance", methods=["GET"])
@blp.arguments(TrialBalanceArgs, **QUERY, as_kwargs=True)
@blp.response(200, TrialBalanceSchema)
def get_trial_balance(at: datetime | None = None):
    """Every account's posted balance in the debit or credit column, with totals per currency."""
    return ledger.trial_balance(db_session(), at=at)
