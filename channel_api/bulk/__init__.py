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

from sqlalchemy.orm import Session

from ledger import utcnow

from .. import audit
from ..errors import InvalidInput
from . import parties
from .framework import FileError, ImportReport, Progress, RowError, read_csv, record_run, write_csv

KINDS: dict[str, ModuleType] = {"parties": parties}


def _kind(kind: str) -> ModuleType:
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
    report = record_run(session, kind=kind, data=data, actor=actor, rows=rows, created=created,
                        updated=updated, unchanged=unchanged, started_at=started)
    if report.status == "applied":
        audit.record(session, actor=actor, action=f"import.{kind}", subject_type="import",
                     subject=report.import_id,
                     details={"rows": report.rows, "created": created, "updated": updated,
                              "unchanged": unchanged})
    return report


def export_csv(session: Session, kind: str, **filters) -> Iterator[str]:
    """The kind's records as CSV text, in pieces."""
    module = _kind(kind)
    return write_csv(module.COLUMNS, module.export(session, **filters))


__all__ = ["KINDS", "FileError", "ImportReport", "RowError", "export_csv", "import_csv"]
