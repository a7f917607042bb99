"""Channel API: CSV imports (all-or-nothing, with a report of every bad row)
and exports of the channel's master data.

An import's body is the CSV file itself (``Content-Type: text/csv``). A file
with bad rows answers 422 with the report (and keeps only the run record);
a good one answers 201 with the counts.
"""
from __future__ import annotations

from flask import Response, request, stream_with_context

from channel_api import AccessDenied, access, bulk
from service.channel_edge import ChannelBlueprint, actor, caller, mutation
from service.problems import problem
from service.request_db import db_session
from service.schemas_channel import ExportArgs, ImportListArgs, ImportPage, ImportReportOut

blp = ChannelBlueprint(
    "channel_bulk", __name__, url_prefix="/v1",
    description="CSV imports and exports of parties, catalog, relationships, coverage, strategies.",
)
CSV_BODY = {"requestBody": {"required": True, "content": {"text/csv": {"schema": {
    "type": "string", "format": "binary"}}}}}
# Kinds a seller may import or export for itself; the rest are the brand's.
SELLER_KINDS = {"strategies", "relationships", "coverage"}


def _authorize(kind: str) -> str | None:
    """The party the rows must belong to (None: the brand, unrestricted)."""
    who = caller()
    access.require_scope(who, "manage")
    if who.is_brand:
        return None
    if kind not in SELLER_KINDS:
        raise AccessDenied(f"only the brand's managers may import or export {kind}", kind=kind)
    return who.party_code


@blp.route("/imports/<kind>", methods=["POST"])
@blp.doc(**CSV_BODY)
@mutation
@blp.response(201, ImportReportOut)
@blp.alt_response(422, schema=ImportReportOut, description="Rejected: every bad row, nothing written.")
def import_file(kind: str):
    """Import a CSV file of one kind: parties, catalog, relationships, coverage, strategies."""
    restrict_to = _authorize(kind)
    report = bulk.import_csv(db_session(), kind, request.get_data(cache=True), actor=actor(),
                             restrict_to=restrict_to)
    if report.status == "rejected":
        return problem(422, "import_rejected", "Import rejected",
                       f"{report.error_count} bad row(s); nothing was imported.",
                       import_id=report.import_id, rows=report.rows,
                       error_count=report.error_count,
                       errors=[{"field": e.field, "location": f"line {e.line}",
                                "message": e.reason, "line": e.line} for e in report.errors])
    return report


@blp.route("/imports", methods=["GET"])
@blp.arguments(ImportListArgs, location="query", as_kwargs=True)
@blp.response(200, ImportPage)
def list_imports(**filters):
    access.require_brand_manager(caller())
    items, next_cursor = bulk.list_imports(db_session(), **filters)
    return {"items": items, "next_cursor": next_cursor}


@blp.route("/imports/id/<import_id>", methods=["GET"])
@blp.response(200, ImportReportOut)
def get_import(import_id: str):
    access.require_brand_manager(caller())
    return bulk.get_import(db_session(), import_id)


@blp.route("/exports/<kind>.csv", methods=["GET"])
@blp.arguments(ExportArgs, location="query", as_kwargs=True)
@blp.response(200, description="CSV text, re-importable as it is.")
def export_file(kind: str, **filters):
    """Export one kind as CSV (streamed)."""
    restrict_to = _authorize(kind)
    if restrict_to is not None:
        name = "owner" if kind == "strategies" else "seller"
        if filters.get(name, restrict_to) != restrict_to:
            raise AccessDenied(f"you may export only your own {kind}", field=name)
        filters[name] = restrict_to
    chunks = bulk.export_csv(db_session(), kind, **filters)
    first = next(chunks)  # errors (an unknown kind, a filter) surface before streaming
    response = Response(stream_with_context(_prepend(first, chunks)), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{kind}.csv"'
    return response


def _prepend(first: str, rest):
    yield first
    yield from rest
