"""CSV of parties: one row per party, keyed by ``code``.

``groups`` and ``tags`` are optional columns of ``|``-separated codes; when a
column is present, the party's group memberships (or manual tags) become
exactly what it lists; when absent, they are left alone. Dynamic tags are
never touched by an import.
"""
from __future__ import annotations

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from ledger import new_uuid7, utcnow

from .. import parties as rules
from ..models import (
    PARTY_ROLES,
    PARTY_STATUSES,
    CustomerType,
    Grade,
    Party,
    PartyGroup,
    PartyGroupMember,
    PartyTag,
    Region,
)
from .framework import CHUNK, Progress, Rows, boolean, chunks, codes, codes_text

COLUMNS = ("code", "name", "role", "region", "customer_type", "grade", "owner_name",
           "contact_phone", "address", "quality_customer", "status", "groups", "tags")
REQUIRED = ("code", "name", "role", "region", "customer_type")
EXPORT_FILTERS = ("role",)
FIELDS = ("name", "role", "status", "region_id", "customer_type_id", "grade_id", "owner_name",
          "contact_phone", "address", "quality_customer")


def _lookup(session: Session, model) -> dict[str, int]:
    return dict(session.execute(select(model.code, model.id)).all())


def _existing(session: Session, party_codes: list[str]) -> dict[str, dict]:
    found: dict[str, dict] = {}
    columns = [Party.id, Party.code, *(getattr(Party, f) for f in FIELDS)]
    for part in chunks(party_codes):
        for row in session.execute(select(*columns).where(Party.code.in_(part))):
            found[row.code] = dict(row._mapping)
    return found


def check(session: Session, rows: Rows, restrict_to: str | None = None) -> dict:
    header = rows.header
    regions, types = _lookup(session, Region), _lookup(session, CustomerType)
    grades, groups = _lookup(session, Grade), _lookup(session, PartyGroup)
    planned: list[dict] = []
    seen: dict[str, int] = {}
    for line, row in rows.records:
        code = rows.check(line, rules._code, row.get("code", ""))
        if code is not None:
            if code in seen:
                rows.error(line, "code", f"code {code!r} is also on line {seen[code]}")
            seen.setdefault(code, line)
        values = {
            "name": rows.check(line, rules._name, row.get("name", "")),
            "role": rows.check(line, rules._choice, row.get("role", ""), "role", PARTY_ROLES),
            "status": rows.check(line, rules._choice, row.get("status") or "active", "status",
                                 PARTY_STATUSES),
            "owner_name": rows.check(line, rules._text, row.get("owner_name", ""), "owner_name", 200),
            "contact_phone": rows.check(line, rules._phone, row.get("contact_phone", "")),
            "address": rows.check(line, rules._text, row.get("address", ""), "address", 500),
            "quality_customer": rows.check(line, boolean, row.get("quality_customer", ""),
                                           "quality_customer"),
            "region_id": regions.get(row.get("region", "")),
            "customer_type_id": types.get(row.get("customer_type", "")),
            "grade_id": grades.get(row.get("grade", "")) if row.get("grade") else None,
        }
        if values["region_id"] is None:
            rows.error(line, "region", f"no region with code {row.get('region', '')!r}")
        if values["customer_type_id"] is None:
            rows.error(line, "customer_type",
                       f"no customer type with code {row.get('customer_type', '')!r}")
        if row.get("grade") and values["grade_id"] is None:
            rows.error(line, "grade", f"no grade with code {row['grade']!r}")
        group_ids = None
        if "groups" in header:
            listed = codes(row.get("groups", ""))
            unknown = [g for g in listed if g not in groups]
            if unknown:
                rows.error(line, "groups", f"no group with code {', '.join(unknown)}")
            group_ids = {groups[g] for g in listed if g in groups}
        tags = None
        if "tags" in header:
            tags = set()
            for tag in codes(row.get("tags", "")):
                checked = rows.check(line, rules._name, tag, "tags", 64)
                if checked:
                    tags.add(checked)
        planned.append({"code": code, "values": values, "groups": group_ids, "tags": tags})
    return {"planned": planned}


def apply(session: Session, plan: dict, progress: Progress | None) -> tuple[int, int, int]:
    planned = plan["planned"]
    existing = _existing(session, [p["code"] for p in planned])
    now = utcnow()
    inserts, updates, unchanged = [], [], 0
    for item in planned:
        current = existing.get(item["code"])
        if current is None:
            inserts.append({"public_id": "pty_" + new_uuid7().hex, "code": item["code"],
                            "created_at": now, "meta": {}, **item["values"]})
        elif any(current[f] != item["values"][f] for f in FIELDS):
            updates.append({"id": current["id"], **item["values"]})
        else:
            unchanged += 1
    total = len(planned)
    done = 0
    for part in chunks(inserts):
        session.execute(insert(Party), list(part))
        done += len(part)
        if progress:
            progress("parties", done, total)
    for part in chunks(updates):
        session.execute(update(Party), list(part))
        done += len(part)
        if progress:
            progress("parties", done, total)
    ids = {code: row["id"] for code, row in existing.items()}
    if inserts:
        ids.update(_ids(session, [row["code"] for row in inserts]))
    changed = _sync_groups(session, planned, ids) | _sync_tags(session, planned, ids)
    # An existing party whose only change is its groups or tags counts as updated.
    existing_ids = {row["id"] for row in existing.values()}
    extra = len((changed & existing_ids) - {u["id"] for u in updates})
    return len(inserts), len(updates) + extra, unchanged - extra


def _ids(session: Session, party_codes: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in chunks(party_codes):
        out.update(session.execute(select(Party.code, Party.id).where(Party.code.in_(part))).all())
    return out


def _sync_groups(session: Session, planned: list[dict], ids: dict[str, int]) -> set[int]:
    """Make memberships what the file lists; the ids of parties that changed."""
    wanted = {ids[p["code"]]: p["groups"] for p in planned if p["groups"] is not None}
    if not wanted:
        return set()
    current: dict[int, set[int]] = {party_id: set() for party_id in wanted}
    for part in chunks(list(wanted)):
        for group_id, party_id in session.execute(
                select(PartyGroupMember.group_id, PartyGroupMember.party_id)
                .where(PartyGroupMember.party_id.in_(part))):
            current[party_id].add(group_id)
    adds = [{"group_id": g, "party_id": p} for p, gs in wanted.items() for g in gs - current[p]]
    removes = [(g, p) for p, gs in wanted.items() for g in current[p] - gs]
    for part in chunks(adds, CHUNK):
        session.execute(insert(PartyGroupMember), list(part))
    for group_id, party_id in removes:
        session.execute(delete(PartyGroupMember).where(
            PartyGroupMember.group_id == group_id, PartyGroupMember.party_id == party_id))
    return {a["party_id"] for a in adds} | {p for _, p in removes}


def _sync_tags(session: Session, planned: list[dict], ids: dict[str, int]) -> set[int]:
    """Make manual tags what the file lists; the ids of parties that changed."""
    wanted = {ids[p["code"]]: p["tags"] for p in planned if p["tags"] is not None}
    if not wanted:
        return set()
    current: dict[int, set[str]] = {party_id: set() for party_id in wanted}
    for part in chunks(list(wanted)):
        for party_id, tag in session.execute(
                select(PartyTag.party_id, PartyTag.tag)
                .where(PartyTag.party_id.in_(part), PartyTag.source == "manual")):
            current[party_id].add(tag)
    adds = [{"party_id": p, "tag": t, "source": "manual"}
            for p, ts in wanted.items() for t in ts - current[p]]
    removes = [(p, t) for p, ts in wanted.items() for t in current[p] - ts]
    for part in chunks(adds, CHUNK):
        session.execute(insert(PartyTag), list(part))
    for party_id, tag in removes:
        session.execute(delete(PartyTag).where(PartyTag.party_id == party_id, PartyTag.tag == tag,
                                               PartyTag.source == "manual"))
    return {a["party_id"] for a in adds} | {p for p, _ in removes}


def export(session: Session, *, role: str | None = None):
    """Every party (optionally of one role), in code order, as CSV records."""
    regions = {v: k for k, v in _lookup(session, Region).items()}
    types = {v: k for k, v in _lookup(session, CustomerType).items()}
    grades = {v: k for k, v in _lookup(session, Grade).items()}
    group_codes = {v: k for k, v in _lookup(session, PartyGroup).items()}
    query = select(Party).order_by(Party.code)
    if role is not None:
        query = query.where(Party.role == role)
    last = ""
    while True:
        page = list(session.scalars(query.where(Party.code > last).limit(CHUNK)))
        if not page:
            return
        page_ids = [p.id for p in page]
        members: dict[int, list[str]] = {}
        for group_id, party_id in session.execute(
                select(PartyGroupMember.group_id, PartyGroupMember.party_id)
                .where(PartyGroupMember.party_id.in_(page_ids))):
            members.setdefault(party_id, []).append(group_codes[group_id])
        tags: dict[int, list[str]] = {}
        for party_id, tag in session.execute(
                select(PartyTag.party_id, PartyTag.tag)
                .where(PartyTag.party_id.in_(page_ids), PartyTag.source == "manual")):
            tags.setdefault(party_id, []).append(tag)
        for p in page:
            yield {
                "code": p.code, "name": p.name, "role": p.role, "region": regions[p.region_id],
                "customer_type": types[p.customer_type_id],
                "grade": grades.get(p.grade_id, "") if p.grade_id else "",
                "owner_name": p.owner_name, "contact_phone": p.contact_phone,
                "address": p.address, "quality_customer": "true" if p.quality_customer else "false",
                "status": p.status, "groups": codes_text(members.get(p.id, ())),
                "tags": codes_text(tags.get(p.id, ())),
            }
        last = page[-1].code
