"""Channel API: clearing rules and the business calendar, kept by the
brand's managers (a rule decides who gets the network's cash, so only the
brand's manage key writes or reads them), and an order's clearing preview,
"why this split", for the order's seller's managers and the brand (issue 6).
"""
from __future__ import annotations

import csv
import io

from flask import Response, abort, request

from channel_api import access, clearing_rules, clearings, orders
from channel_api import business_calendar as calendars
from service.channel_edge import ChannelBlueprint, actor, caller, mutation
from service.request_db import db_session
from service.schemas_clearing import (
    CalendarArgs,
    CalendarChangeOut,
    CalendarOut,
    DocumentArgs,
    DocumentList,
    DocumentOut,
    PreviewArgs,
    PreviewOut,
    RuleIn,
    RuleListArgs,
    RuleOut,
    RulePage,
    RuleUpdateIn,
)

blp = ChannelBlueprint("channel_clearing", __name__, url_prefix="/v1",
                       description="Clearing rules, an order's clearing preview, the business "
                                   "calendar.")
CSV_BODY = {"requestBody": {"required": True, "content": {"text/csv": {"schema": {
    "type": "string", "format": "binary",
    "description": "Lines date,kind[,note]: kind holiday or workday (a weekend day made a "
                   "working day); the whole calendar, every year in it."}}}}}
CSV_TYPES = ("text/csv", "text/plain")


@blp.route("/clearing-rules", methods=["POST"])
@mutation
@blp.arguments(RuleIn)
@blp.response(201, RuleOut)
def create_rule(body):
    """A clearing rule; the same code and content again returns it, other
    content is 409 ``clearing_rule_exists``."""
    access.require_brand_manager(caller())
    return clearing_rules.create_rule(db_session(), actor=actor(), **body)


@blp.route("/clearing-rules", methods=["GET"])
@blp.arguments(RuleListArgs, location="query", as_kwargs=True)
@blp.response(200, RulePage)
def list_rules(**filters):
    access.require_brand_manager(caller())
    items, next_cursor = clearing_rules.list_rules(db_session(), **filters)
    return {"items": items, "next_cursor": next_cursor}


@blp.route("/clearing-rules/<code>", methods=["GET"])
@blp.response(200, RuleOut)
def get_rule(code: str):
    access.require_brand_manager(caller())
    return clearing_rules.get_rule(db_session(), code)


@blp.route("/clearing-rules/<code>", methods=["PUT"])
@mutation
@blp.arguments(RuleUpdateIn)
@blp.response(200, RuleOut)
def update_rule(body, code: str):
    """Change the fields given (the others stay); the version goes up by one
    when anything changed. Cash already cleared keeps its split."""
    access.require_brand_manager(caller())
    return clearing_rules.update_rule(db_session(), code, actor=actor(), **body)


@blp.route("/orders/<order_id>/clearing-preview", methods=["GET"])
@blp.arguments(PreviewArgs, location="query", as_kwargs=True)
@blp.response(200, PreviewOut)
def clearing_preview(order_id: str, payment_method: str, at=None):
    """Why this split: the rule each of the order's lines gets, every other
    rule with its rank or the reason it could not apply, and the shares of
    the order's cash with their recipients' party codes."""
    who = caller()
    if not (who.is_brand and {"manage", "finance"} & who.scopes):
        access.require_manager_of(who, orders.get_order(db_session(), order_id).seller_code)
    return clearing_rules.explain_for_order(db_session(), order_id, payment_method, at=at)


@blp.route("/business-calendar", methods=["PUT"])
@blp.doc(**CSV_BODY)
@mutation
@blp.response(200, CalendarChangeOut)
def set_business_calendar():
    """Replace the business calendar (T+N counts business days) with the
    CSV body; a bad line is 422 naming it, and nothing changes."""
    access.require_brand_manager(caller())
    if request.mimetype not in CSV_TYPES:
        abort(415, description="send the calendar as text/csv")
    return calendars.set_calendar(db_session(), request.get_data(cache=True), actor())


@blp.route("/business-calendar", methods=["GET"])
@blp.arguments(CalendarArgs, location="query", as_kwargs=True)
@blp.response(200, CalendarOut)
def business_calendar(year: int | None = None):
    access.require_brand_manager(caller())
    return {"items": calendars.list_calendar(db_session(), year=year)}


CSV_COLUMNS = ("public_id", "order", "seller", "buyer", "recipient", "amount_minor",
               "clawed_minor", "currency", "rule", "rule_version", "leg_index", "basis",
               "payment_method", "state", "cleared_at", "release_at", "released_at")


@blp.route("/parties/<party>/documents", methods=["GET"])
@blp.arguments(DocumentArgs, location="query", as_kwargs=True)
@blp.response(200, DocumentList)
def documents(party: str, since=None, until=None, format: str = "json", limit: int = 500):
    """Inter-party documents of a party (as the one owed, the seller or the
    buyer) in a period: who is owed how much for which order, by which rule
    and leg. ``format=csv`` exports them. Each party sees its own; the
    brand's managers and finance see every party's."""
    who = caller()
    if who.party_code != party:
        access.require_brand_finance(who)
    rows = clearings.documents(db_session(), party=party, since=since, until=until,
                               limit=limit)
    if format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        dumped = DocumentOut(many=True).dump(rows)
        writer.writerows([d[c] if d[c] is not None else "" for c in CSV_COLUMNS] for d in dumped)
        return Response(out.getvalue(), mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="documents-{party}.csv"'})
    return {"items": rows}
