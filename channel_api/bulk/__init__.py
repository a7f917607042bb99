"""CSV import and export of the channel's master data: one use case for
each direction, shared by the API, the CLI and the benchmark.

Each kind is a module with ``COLUMNS``, ``REQUIRED``, ``check`` (validate
every row, plan the writes), ``apply`` (write the plan in bulk) and
``export`` (records in a stable order, re-importable as they are). See
``framework.py`` for the two passes and what makes a file all-or-nothing.
"""
from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import utcnow

from .. import audit, snapshots
from ..errors import InvalidInput, NotFound
from ..models import ImportRun
from . import catalog, coded, network, parties, strategies
from .framework import FileError, ImportReport, Progress, RowError, read_csv, record_run, write_csv

KINDS: dict[str, ModuleType | coded.Kind] = {**coded.KINDS, "parties": parties,
                                             "catalog": catalog, **network.KINDS,
                                             "strategies": strategies}


# What the price path caches each kind feeds (strategies bump per seller themselves).
CACHES = {"regions": (snapshots.TREES,), "customer_types": (snapshots.TREES,),
          "categories": (snapshots.CATALOG,), "units": (snapshots.CATALOG,),
          "catalog": (snapshots.CATALOG,)}


def _kind(kind: str) -> ModuleType | coded.Kind:
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(sorted(KINDS))}", field="kind")
    return KINDS[kind]


def import_csv(session: Session, kind: str, data: bytes | str, *, actor: str,
               restrict_to: str | None = None, progress: Progress | None = None) -> ImportReport:
    """Check every row, then apply all or nothing. A rejected file writes only
    its run record (with every bad row); an applied one is audited.
    ``restrict_to`` limits rows to those a given seller owns (kinds with an
    owner column refuse the others)."""
    module = _kind(kind)
    started = utcnow()
    rows = read_csv(data, module.COLUMNS, module.REQUIRED)
    if progress:
        progress("check", 0, len(rows))
    plan = module.check(session, rows, restrict_to)
    if progress:
        progress("check", len(rows), len(rows))
    created = updated = unchanged = 0
    if not rows.error_count:
        created, updated, unchanged = module.apply(session, plan, progress)
        if created or updated:
            snapshots.bump(session, *CACHES.get(kind, ()))
    report = record_run(session, kind=kind, data=data, actor=actor, rows=rows, created=created,
                        updated=updated, unchanged=unchanged, started_at=started)
    if report.status == "applied":
        audit.record(session, actor=actor, action=f"import.{kind}", subject_type="import",
                     subject=report.import_id,
                     details={"rows": report.rows, "created": created, "updated": updated,
                              "unchanged": unchanged})
    return report


def _report(run: ImportRun) -> ImportReport:
    errors = [RowError(**e) for e in run.errors or []]
    return ImportReport(run.public_id, run.kind, run.status, run.rows, run.created, run.updated,
                        run.unchanged, len(errors), errors)


def get_import(session: Session, import_id: str) -> ImportReport:
    run = session.scalars(select(ImportRun).where(ImportRun.public_id == import_id)).one_or_none()
    if run is None:
        raise NotFound(f"no import {import_id!r}", field="import_id")
    return _report(run)


def list_imports(session: Session, *, kind: str | None = None, after: str | None = None,
                 limit: int = 50) -> tuple[list[ImportReport], str | None]:
    """Newest first; ``after`` is the cursor (the last import id seen)."""
    query = select(ImportRun)
    if kind is not None:
        _kind(kind)
        query = query.where(ImportRun.kind == kind)
    if after is not None:
        query = query.where(ImportRun.public_id < after)
    rows = list(session.scalars(query.order_by(ImportRun.public_id.desc()).limit(limit + 1)))
    reports = [_report(r) for r in rows[:limit]]
    return reports, (reports[-1].import_id if len(rows) > limit else None)


def export_csv(session: Session, kind: str, **filters) -> Iterator[str]:
    """The kind's records as CSV text, in pieces."""
    module = _kind(kind)
    accepted = getattr(module, "EXPORT_FILTERS", ())
    for name, value in filters.items():
        if name not in accepted and value is not None:
            raise InvalidInput(f"{kind} exports take no {name!r} filter", field=name)
    return write_csv(module.COLUMNS, module.export(
        session, **{k: v for k, v in filters.items() if v is not None}))


__all__ = ["KINDS", "FileError", "ImportReport", "RowError", "export_csv", "get_import",
           "import_csv", "list_imports"]
