"""Payouts and settlement (issue 6): a party registers its bank account and
asks for its wallet to be paid out; the brand's finance approves payouts at
or above the threshold, exports payout files for banks that take files and
uploads their status reports; the bank's signed callbacks arrive at
``/callbacks/payouts/<bank>``; each party reads its daily settlement
batches, the brand's finance reads everyone's and can (re)run a day."""
from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, abort, current_app, request, url_for

from channel_api import access, clawback_advances, interest, payouts, settlements
from channel_api import business_calendar as calendars
from channel_api.clearings import BUSINESS_TZ
from channel_api.errors import InvalidInput
from ledger import utcnow
from payments.gateway import CallbackRejected, CallbackRequest
from payments.iso20022 import StatusFileError
from service.api_payments import GATEWAYS_KEY
from service.channel_edge import ChannelBlueprint, actor, caller, mutation, party_to_list
from service.request_db import EXTENSION_KEY, db_session
from service.schemas_payouts import (
    AdvanceIn,
    AdvanceListArgs,
    AdvanceOut,
    AdvancePage,
    BankAccountIn,
    BankAccountList,
    BankAccountOut,
    BatchArgs,
    BatchOut,
    BatchPage,
    InterestIn,
    InterestList,
    InterestOut,
    NoteIn,
    OutcomeSummaryOut,
    PayoutEventList,
    PayoutFileArgs,
    PayoutFileOut,
    PayoutIn,
    PayoutListArgs,
    PayoutOut,
    PayoutPage,
    RejectIn,
    SettleArgs,
    SettlementRunOut,
)

blp = ChannelBlueprint("channel_payouts", __name__, url_prefix="/v1",
                       description="Bank accounts, payouts, payout files, settlement batches.")
callbacks_blp = Blueprint("payout_callbacks", __name__)
XML_TYPES = ("application/xml", "text/xml")


def _settings():
    return current_app.extensions["channel_ledger.settings"]


def _own_or_brand_finance(party: str) -> None:
    who = caller()
    if who.party_code != party:
        access.require_brand_finance(who)


# -- bank accounts -----------------------------------------------------------------


@blp.route("/parties/<party>/bank-accounts", methods=["POST"])
@mutation
@blp.arguments(BankAccountIn)
@blp.response(201, BankAccountOut)
def register_bank_account(body, party: str):
    """Where the party's payouts go from now on (the previous account in the
    currency is retired). The party's finance key, or the brand's finance."""
    access.require_finance_of(caller(), party)
    return payouts.register_bank_account(db_session(), party, actor=actor(), **body)


@blp.route("/parties/<party>/bank-accounts", methods=["GET"])
@blp.response(200, BankAccountList)
def bank_accounts(party: str):
    _own_or_brand_finance(party)
    return {"items": payouts.bank_accounts(db_session(), party)}


# -- payouts -------------------------------------------------------------------------


@blp.route("/payouts", methods=["POST"])
@mutation
@blp.arguments(PayoutIn)
@blp.response(201, PayoutOut)
def request_payout(body):
    """Pay out of a wallet to the party's registered account: the amount is
    reserved at once; at or above the approval threshold it waits for the
    brand's finance. Needs an ``Idempotency-Key``: the same key is the same
    payout."""
    who = caller()
    party = body["party"] or who.party_code
    access.require_finance_of(who, party)
    key = request.headers.get("Idempotency-Key")
    if not key:
        raise InvalidInput("a payout request needs an Idempotency-Key header",
                           field="Idempotency-Key")
    return payouts.request_payout(
        db_session(), party, body["amount_minor"], request_key=f"api:{key}", actor=actor(),
        approval_threshold_minor=_settings().payout_approval_minor, currency=body["currency"],
        remark=body["remark"])


@blp.route("/payouts", methods=["GET"])
@blp.arguments(PayoutListArgs, location="query", as_kwargs=True)
@blp.response(200, PayoutPage)
def list_payouts(party=None, state=None, after=None, limit=100):
    """Newest first. A party sees its own; the brand's finance sees all."""
    party = party_to_list(party)
    items, cursor = payouts.list_payouts(db_session(), party=party, state=state, after=after,
                                         limit=limit)
    return {"items": items, "next_cursor": cursor}


def _visible(payout_id: str):
    view = payouts.get_payout(db_session(), payout_id)
    _own_or_brand_finance(view.party)
    return view


@blp.route("/payouts/<payout_id>", methods=["GET"])
@blp.response(200, PayoutOut)
def get_payout(payout_id: str):
    return _visible(payout_id)


@blp.route("/payouts/<payout_id>/events", methods=["GET"])
@blp.response(200, PayoutEventList)
def payout_events(payout_id: str):
    """Every state change with who made it, why, and the ledger entry."""
    _visible(payout_id)
    return {"items": payouts.payout_events(db_session(), payout_id)}


@blp.route("/payouts/<payout_id>/approve", methods=["POST"])
@mutation
@blp.arguments(NoteIn)
@blp.response(200, PayoutOut)
def approve_payout(body, payout_id: str):
    """The brand's finance, and never whoever requested it."""
    access.require_brand_finance(caller())
    return payouts.approve_payout(db_session(), payout_id, actor=actor(), note=body["note"])


@blp.route("/payouts/<payout_id>/reject", methods=["POST"])
@mutation
@blp.arguments(RejectIn)
@blp.response(200, PayoutOut)
def reject_payout(body, payout_id: str):
    """The reservation is released to the wallet."""
    access.require_brand_finance(caller())
    return payouts.reject_payout(db_session(), payout_id, actor=actor(), note=body["note"])


@blp.route("/payouts/<payout_id>/cancel", methods=["POST"])
@mutation
@blp.arguments(NoteIn)
@blp.response(200, PayoutOut)
def cancel_payout(body, payout_id: str):
    """The party takes back a payout not yet sent to the bank."""
    view = payouts.get_payout(db_session(), payout_id)
    access.require_finance_of(caller(), view.party)
    return payouts.cancel_payout(db_session(), payout_id, actor=actor(), note=body["note"])


# -- payout files (banks that take files) ---------------------------------------------------


def _file_out(row) -> dict:
    return {"public_id": row.public_id, "currency": row.currency, "count": row.count,
            "total_minor": row.total_minor, "created_by": row.created_by,
            "created_at": row.created_at,
            "download": url_for("channel_payouts.download_payout_file", file_id=row.public_id)}


@blp.route("/payout-files", methods=["POST"])
@mutation
@blp.arguments(PayoutFileArgs, location="query", as_kwargs=True)
@blp.response(201, PayoutFileOut)
@blp.alt_response(204, description="No approved payout to send.")
def export_payout_file(currency: str = "CNY", execution_date=None):
    """Every approved payout in one ISO 20022 pain.001 file for the custody
    bank; they are sent from now on, and their outcomes come back in the
    bank's status report (``POST /v1/payout-status-files``)."""
    access.require_brand_finance(caller())
    session, settings = db_session(), _settings()
    if execution_date is None:
        today = utcnow().astimezone(BUSINESS_TZ).date()
        execution_date = calendars.calendar(session).add_business_days(today, 1)
    row = payouts.export_payout_file(
        session, actor=actor(), debtor_name=settings.custody_account_name,
        debtor_account=settings.custody_account_number,
        debtor_bank_code=settings.custody_bank_code, execution_date=execution_date,
        currency=currency)
    if row is None:
        return Response(status=204)
    return _file_out(row)


@blp.route("/payout-files/<file_id>", methods=["GET"])
@blp.response(200, description="The pain.001 XML, byte for byte as exported.")
def download_payout_file(file_id: str):
    access.require_brand_finance(caller())
    row = payouts.payout_file(db_session(), file_id)
    return Response(row.content, mimetype="application/xml", headers={
        "Content-Disposition": f'attachment; filename="{row.public_id}.xml"'})


@blp.route("/payout-status-files", methods=["POST"])
@blp.doc(requestBody={"required": True, "content": {"application/xml": {"schema": {
    "type": "string", "format": "binary",
    "description": "The bank's ISO 20022 pain.002 payment status report."}}}})
@mutation
@blp.response(200, OutcomeSummaryOut)
def upload_status_file():
    """The bank's status report for exported payouts: confirmations and
    failures are applied once each (a second upload applies nothing)."""
    access.require_brand_finance(caller())
    if request.mimetype not in XML_TYPES:
        abort(415, description="send the status report as application/xml")
    bank = _payout_bank()
    try:
        outcomes = bank.parse_status_file(request.get_data(cache=True))
    except StatusFileError as bad:
        raise InvalidInput(f"not a usable pain.002 status report: {bad}", field="body") from None
    return payouts.apply_outcomes(db_session(), outcomes, actor=actor())


def _payout_bank():
    bank = current_app.extensions[GATEWAYS_KEY].payout_bank
    if bank is None:
        abort(404, description="no payout bank is configured here")
    return bank


@callbacks_blp.route("/callbacks/payouts/<bank>", methods=["POST"])
def payout_callback(bank: str):
    """The custody bank's signed notice of confirmed or failed payouts."""
    adapter = current_app.extensions[GATEWAYS_KEY].payout_bank
    if adapter is None or adapter.name != bank:
        abort(404)
    received = CallbackRequest(headers=dict(request.headers), body=request.get_data(),
                               received_at=utcnow())
    try:
        outcomes = adapter.verify_callback(received)
    except CallbackRejected as refused:
        ack = adapter.acknowledge(False, str(refused))
        return Response(ack.body, status=ack.status, content_type=ack.content_type)
    factory = current_app.extensions[EXTENSION_KEY]
    with factory() as session, session.begin():
        payouts.apply_outcomes(session, outcomes, actor=f"bank:{bank}")
    ack = adapter.acknowledge(True)
    return Response(ack.body, status=ack.status, content_type=ack.content_type)


# -- settlement batches -------------------------------------------------------------------

CSV_COLUMNS = ("public_id", "party", "business_day", "currency", "pending_opening_minor",
               "wallet_opening_minor", "cleared_minor", "released_minor", "clawed_back_minor",
               "paid_out_minor", "payout_returned_minor", "interest_minor", "other_minor",
               "pending_closing_minor", "wallet_closing_minor", "difference_minor", "status")


@blp.route("/settlement-batches", methods=["GET"])
@blp.arguments(BatchArgs, location="query", as_kwargs=True)
@blp.response(200, BatchPage)
def list_batches(party=None, since=None, until=None, status=None, after=None, limit=100,
                 format="json"):
    """Daily settlement batches, oldest first; ``format=csv`` exports the
    page. A party sees its own; the brand's finance sees every party's."""
    party = party_to_list(party)
    items, cursor = settlements.list_batches(db_session(), party=party, since=since,
                                             until=until, status=status, after=after,
                                             limit=limit)
    if format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in BatchOut(many=True).dump(items):
            writer.writerow(row[c] for c in CSV_COLUMNS)
        headers = {"Content-Disposition": 'attachment; filename="settlement-batches.csv"'}
        if cursor:
            headers["Link"] = f'<?after={cursor}&format=csv>; rel="next"'
        return Response(out.getvalue(), mimetype="text/csv", headers=headers)
    return {"items": items, "next_cursor": cursor}


@blp.route("/settlement-batches/<batch_id>", methods=["GET"])
@blp.response(200, BatchOut)
def get_batch(batch_id: str):
    view = settlements.get_batch(db_session(), batch_id)
    _own_or_brand_finance(view.party)
    return view


@blp.route("/settlement-runs", methods=["POST"])
@mutation
@blp.arguments(SettleArgs, location="query", as_kwargs=True)
@blp.response(200, SettlementRunOut)
def run_settlement(day):
    """Settle a past business day for every party not settled for it yet
    (the nightly job does yesterday; this reruns or catches up)."""
    access.require_brand_finance(caller())
    return settlements.settle(db_session(), day, tz=BUSINESS_TZ)



# -- interest on the custody account ---------------------------------------------------


@blp.route("/interest-allocations", methods=["POST"])
@mutation
@blp.arguments(InterestIn)
@blp.response(201, InterestOut)
def allocate_interest(body):
    """Interest the custody bank credited for a period: the platform keeps
    its share, the rest goes to the parties' wallets in proportion to what
    each held at the period's end. Once per bank reference."""
    access.require_brand_finance(caller())
    return interest.allocate_interest(
        db_session(), amount_minor=body["amount_minor"], period_end=body["period_end"],
        bank_reference_=body["bank_reference"], platform_share_bp=body["platform_share_bp"],
        currency=body["currency"], actor=actor())


@blp.route("/interest-allocations", methods=["GET"])
@blp.response(200, InterestList)
def list_interest_allocations():
    access.require_brand_finance(caller())
    return {"items": interest.list_allocations(db_session())}


# -- clawbacks a wallet could not give back -------------------------------------------


@blp.route("/clawback-advances", methods=["POST"])
@mutation
@blp.arguments(AdvanceIn)
@blp.response(201, AdvanceOut)
def advance_clawback(body):
    """Approve an advance for a refund stopped with ``clawback_blocked``:
    the platform puts the shortfall into the party's wallet as a debt the
    party owes back (recovered from its wallet as money arrives, and before
    any payout); then retry the refund. Needs an ``Idempotency-Key``."""
    access.require_brand_finance(caller())
    key = request.headers.get("Idempotency-Key")
    if not key:
        raise InvalidInput("an advance needs an Idempotency-Key header", field="Idempotency-Key")
    return clawback_advances.advance(
        db_session(), order=body["order"], party=body["party"], amount_minor=body["amount_minor"],
        reason=body["reason"], request_key=f"api:{key}", actor=actor())


@blp.route("/clawback-advances", methods=["GET"])
@blp.arguments(AdvanceListArgs, location="query", as_kwargs=True)
@blp.response(200, AdvancePage)
def list_clawback_advances(party=None, outstanding=False, after=None, limit=100):
    """Newest first. A party sees what it owes back; the brand's finance sees all."""
    party = party_to_list(party)
    items, cursor = clawback_advances.list_advances(
        db_session(), party=party, outstanding=outstanding, after=after, limit=limit)
    return {"items": items, "next_cursor": cursor}


@blp.route("/clawback-advances/<advance_id>", methods=["GET"])
@blp.response(200, AdvanceOut)
def get_clawback_advance(advance_id: str):
    view = clawback_advances.get_advance(db_session(), advance_id)
    _own_or_brand_finance(view.party)
    return view
