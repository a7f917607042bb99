"""CSV of the small coded tables: regions, customer types and categories
(trees: a row's parent is an existing code or one on an earlier line), and
grades, groups and units (flat). Keyed by ``code``; a node's parent never
changes once set (so no cycle can form), as in the use cases.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from ledger import new_uuid7

from .. import parties as rules
from ..models import Category, CustomerType, Grade, PartyGroup, Region, Unit
from .framework import Progress, Rows, integer


@dataclass(frozen=True)
class Table:
    model: type
    prefix: str
    columns: tuple[str, ...]
    tree: bool = False


TABLES = {
    "regions": Table(Region, "reg_", ("code", "name", "parent", "level"), tree=True),
    "customer_types": Table(CustomerType, "ctype_", ("code", "name", "parent"), tree=True),
    "categories": Table(Category, "cat_", ("code", "name", "parent", "sort"), tree=True),
    "grades": Table(Grade, "grade_", ("code", "name", "rank")),
    "groups": Table(PartyGroup, "grp_", ("code", "name")),
    "units": Table(Unit, "unit_", ("code", "name")),
}


class Kind:
    """One coded table as an import/export kind (see ``bulk/__init__``)."""

    REQUIRED = ("code", "name")
    EXPORT_FILTERS: tuple[str, ...] = ()

    def __init__(self, table: Table):
        self.table = table
        self.COLUMNS = table.columns

    def _values(self, rows: Rows, line: int, row: dict[str, str]) -> dict:
        values = {"name": rows.check(line, rules._name, row.get("name", ""))}
        if "level" in self.COLUMNS:
            values["level"] = rows.check(line, rules._text, row.get("level", ""), "level", 32)
        for number in ("sort", "rank"):
            if number in self.COLUMNS:
                values[number] = rows.check(line, integer, row.get(number) or "0", number) or 0
        return values

    def check(self, session: Session, rows: Rows, restrict_to: str | None = None) -> dict:
        model = self.table.model
        stored = {r.code: r for r in session.execute(select(model)).scalars()}
        code_of = {r.id: r.code for r in stored.values()}
        seen: dict[str, int] = {}
        planned = []
        for line, row in rows.records:
            code = rows.check(line, rules._code, row.get("code", ""))
            if code in seen:
                rows.error(line, "code", f"code {code!r} is also on line {seen[code]}")
            values = self._values(rows, line, row)
            parent = row.get("parent", "") or None
            if self.table.tree:
                if parent is not None and parent not in stored and parent not in seen:
                    rows.error(line, "parent", f"no {self.table.columns[0]} parent {parent!r} "
                                               "stored or on an earlier line")
                current = stored.get(code)
                if current is not None and code_of.get(current.parent_id) != parent:
                    rows.error(line, "parent", "a node's parent cannot change")
            if code is not None:
                seen.setdefault(code, line)
            planned.append({"code": code, "parent": parent, "values": values})
        return {"planned": planned}

    def apply(self, session: Session, plan: dict, progress: Progress | None) -> tuple[int, int, int]:
        model = self.table.model
        ids = dict(session.execute(select(model.code, model.id)).all())
        stored = {r.code: r for r in session.execute(select(model)).scalars()}
        created = updated = unchanged = 0
        # Row by row within a tree level is fine: these tables hold thousands at most.
        for item in plan["planned"]:
            row = stored.get(item["code"])
            if row is None:
                values = dict(item["values"])
                if self.table.tree:
                    values["parent_id"] = ids[item["parent"]] if item["parent"] else None
                new_id = session.execute(insert(model).values(
                    public_id=self.table.prefix + new_uuid7().hex, code=item["code"],
                    **values).returning(model.id)).scalar_one()
                ids[item["code"]] = new_id
                created += 1
            elif any(getattr(row, k) != v for k, v in item["values"].items()):
                session.execute(update(model).where(model.id == row.id).values(**item["values"]))
                updated += 1
            else:
                unchanged += 1
        if progress:
            progress(self.table.model.__tablename__, len(plan["planned"]), len(plan["planned"]))
        return created, updated, unchanged

    def export(self, session: Session):
        model = self.table.model
        rows = list(session.execute(select(model).order_by(model.id)).scalars())
        codes = {r.id: r.code for r in rows}
        for r in rows:  # id order puts parents first: they are created first
            record = {"code": r.code, "name": r.name}
            if self.table.tree:
                record["parent"] = codes.get(r.parent_id, "")
            for extra in ("level", "sort", "rank"):
                if extra in self.COLUMNS:
                    record[extra] = getattr(r, extra)
            yield record


KINDS = {name: Kind(table) for name, table in TABLES.items()}
