"""Dynamic tags: a tag put on every party that matches a rule over its master
data and purchase habits, and taken off when it no longer matches.

The rule language (JSON)::

    {"all": [{"field": "role", "op": "eq", "value": "store"},
             {"field": "days_since_last_order", "op": "lt", "value": 30}]}

A party matches when every condition holds. Fields, their values and ops:

===========================  ==========================  ======================
field                        value                       ops
===========================  ==========================  ======================
role                         brand, distributor, store   eq ne in
status                       active, frozen              eq ne in
quality_customer             true / false                eq ne
region                       region code (its subtree)   eq in
customer_type                type code (its subtree)     eq in
grade                        grade code                  eq ne in
group                        group code (membership)     eq ne in
order_count                  integer >= 0                eq ne gt ge lt le
total_minor                  integer >= 0 (minor units)  eq ne gt ge lt le
average_order_minor          integer >= 0 (minor units)  eq ne gt ge lt le
days_since_last_order        integer >= 0                eq ne gt ge lt le
===========================  ==========================  ======================

``in`` takes a non-empty list. A party without a grade matches ``grade ne
X`` and no ``eq``/``in``. A party with no orders has ``order_count`` and
``total_minor`` 0, and matches no ``average_order_minor`` or
``days_since_last_order`` condition. ``days_since_last_order`` counts whole
days (floored) from the last order to the time of the recompute.

Evaluation (:func:`evaluate`) is a pure function over :class:`PartyFacts`.
``recompute_dynamic_tag`` loads the facts of every party in chunks of
``CHUNK_SIZE`` with a fixed number of queries per chunk, and writes the
changed tag rows in bulk; it only ever adds or removes ``source='dynamic'``
rows, never a manual tag. Use cases take a session and only flush.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from ledger import as_utc, new_uuid7, utcnow

from . import audit
from .errors import DynamicTagExists, DynamicTagNotFound, InvalidInput
from .models import (
    PARTY_ROLES,
    PARTY_STATUSES,
    CustomerType,
    DynamicTag,
    Grade,
    Party,
    PartyGroup,
    PartyGroupMember,
    PartyTag,
    PurchaseHabit,
    Region,
)
from .trees import paths
from .values import DynamicTagView, RecomputeResult

DYNAMIC_TAG_PREFIX = "dtag_"
CHUNK_SIZE = 5000
MAX_CONDITIONS = 50
MAX_IN_VALUES = 1000
MAX_NUMBER = 2**62

_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_KEEP: Any = object()
Progress = Callable[[int, int], None]

_NO_GROUPS: frozenset[str] = frozenset()
_EQ = ("eq", "ne")
_ORDER = ("eq", "ne", "gt", "ge", "lt", "le")


@dataclass(frozen=True)
class _Field:
    kind: str  # "choice", "bool", "tree", "code", "set", "int"
    ops: tuple[str, ...]
    choices: tuple[str, ...] = ()


FIELDS: dict[str, _Field] = {
    "role": _Field("choice", ("eq", "ne", "in"), PARTY_ROLES),
    "status": _Field("choice", ("eq", "ne", "in"), PARTY_STATUSES),
    "quality_customer": _Field("bool", _EQ),
    "region": _Field("tree", ("eq", "in")),
    "customer_type": _Field("tree", ("eq", "in")),
    "grade": _Field("code", ("eq", "ne", "in")),
    "group": _Field("set", ("eq", "ne", "in")),
    "order_count": _Field("int", _ORDER),
    "total_minor": _Field("int", _ORDER),
    "average_order_minor": _Field("int", _ORDER),
    "days_since_last_order": _Field("int", _ORDER),
}
# Which codes a rule's value names, for the existence check on create/update.
_CODE_TABLES = {"region": Region, "customer_type": CustomerType, "grade": Grade,
                "group": PartyGroup}


@dataclass(frozen=True)
class PartyFacts:
    """What a rule can see of one party (plain values, no database)."""

    code: str
    role: str
    status: str
    quality_customer: bool
    region_path: tuple[str, ...]         # root-first region codes, the party's own last
    customer_type_path: tuple[str, ...]  # likewise
    grade: str | None
    groups: frozenset[str]
    order_count: int = 0
    total_minor: int = 0
    average_order_minor: int | None = None  # None without orders
    last_order_at: datetime | None = None   # None without orders


# -- the rule: validation (pure) -------------------------------------------------

def _bad(path: str, message: str) -> InvalidInput:
    return InvalidInput(f"{path}: {message}", field=path)


def _scalar(spec: _Field, value: Any, path: str) -> Any:
    if spec.kind == "choice":
        if value not in spec.choices:
            raise _bad(path, f"must be one of {', '.join(spec.choices)}")
    elif spec.kind == "bool":
        if not isinstance(value, bool):
            raise _bad(path, "must be true or false")
    elif spec.kind == "int":
        if (not isinstance(value, int) or isinstance(value, bool)
                or not 0 <= value <= MAX_NUMBER):
            raise _bad(path, "must be a whole number >= 0")
    elif not isinstance(value, str) or not _CODE.fullmatch(value):
        raise _bad(path, "must be a code of 1-64 characters of A-Z a-z 0-9 _ . : -")
    return value


def validate_rule(rule: Any) -> dict[str, Any]:
    """Check a rule; return its normalized copy (what is stored). Raises
    ``InvalidInput`` whose ``field`` is the path of the first fault, such as
    ``rule.all.1.op``."""
    if not isinstance(rule, dict):
        raise _bad("rule", 'must be an object {"all": [condition, ...]}')
    extra = sorted(set(rule) - {"all"})
    if extra:
        raise _bad("rule", f"unknown key {extra[0]!r}; a rule has only \"all\"")
    conditions = rule.get("all")
    if not isinstance(conditions, list) or not 1 <= len(conditions) <= MAX_CONDITIONS:
        raise _bad("rule.all", f"must be a list of 1 to {MAX_CONDITIONS} conditions")
    normalized = []
    for index, condition in enumerate(conditions):
        path = f"rule.all.{index}"
        if not isinstance(condition, dict):
            raise _bad(path, 'must be an object {"field": ..., "op": ..., "value": ...}')
        extra = sorted(set(condition) - {"field", "op", "value"})
        if extra:
            raise _bad(path, f"unknown key {extra[0]!r}")
        field = condition.get("field")
        if field not in FIELDS:
            raise _bad(f"{path}.field", f"must be one of {', '.join(FIELDS)}")
        spec = FIELDS[field]
        op = condition.get("op")
        if op not in spec.ops:
            raise _bad(f"{path}.op", f"{field} allows only {', '.join(spec.ops)}")
        if "value" not in condition:
            raise _bad(f"{path}.value", "is missing")
        value = condition["value"]
        if op == "in":
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN_VALUES:
                raise _bad(f"{path}.value", f"must be a list of 1 to {MAX_IN_VALUES} values")
            value = [_scalar(spec, item, f"{path}.value.{n}") for n, item in enumerate(value)]
        else:
            value = _scalar(spec, value, f"{path}.value")
        normalized.append({"field": field, "op": op, "value": value})
    return {"all": normalized}


# -- the rule: evaluation (pure) -------------------------------------------------

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
}


def days_since(last_order_at: datetime, at: datetime) -> int:
    """Whole days from ``last_order_at`` to ``at``, floored, never negative."""
    return max(0, (at - last_order_at).days)


def _condition(condition: dict[str, Any]) -> Callable[[PartyFacts, datetime], bool]:
    field, op, value = condition["field"], condition["op"], condition["value"]
    kind = FIELDS[field].kind
    if kind == "tree":
        wanted = frozenset(value) if op == "in" else frozenset((value,))
        attr = "region_path" if field == "region" else "customer_type_path"
        return lambda f, at: not wanted.isdisjoint(getattr(f, attr))
    if kind == "set":  # group membership
        if op == "ne":
            return lambda f, at: value not in f.groups
        wanted = frozenset(value) if op == "in" else frozenset((value,))
        return lambda f, at: not wanted.isdisjoint(f.groups)
    if op == "in":
        wanted = frozenset(value)
        return lambda f, at: getattr(f, field) in wanted
    compare = _COMPARE[op]
    if field == "days_since_last_order":
        return lambda f, at: (f.last_order_at is not None
                              and compare(days_since(f.last_order_at, at), value))
    if field == "average_order_minor":
        return lambda f, at: f.average_order_minor is not None and compare(
            f.average_order_minor, value)
    if field == "grade":
        # No grade: "ne X" holds, "eq X" does not (None == X is False anyway).
        return lambda f, at: compare(f.grade, value)
    return lambda f, at: compare(getattr(f, field), value)


def compile_rule(rule: dict[str, Any]) -> Callable[[PartyFacts, datetime], bool]:
    """A predicate ``(facts, at) -> bool`` for a valid rule (validated here)."""
    tests = [_condition(c) for c in validate_rule(rule)["all"]]
    return lambda facts, at: all(test(facts, at) for test in tests)


def evaluate(rule: dict[str, Any], facts: PartyFacts, at: datetime) -> bool:
    """Whether the party with ``facts`` matches ``rule`` at time ``at``."""
    return compile_rule(rule)(facts, at)


# -- use cases ---------------------------------------------------------------------

def _code(value: Any) -> str:
    if not isinstance(value, str) or not _CODE.fullmatch(value):
        raise InvalidInput("code must be 1-64 characters of A-Z a-z 0-9 _ . : -", field="code")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > 200:
        raise InvalidInput("name must be 1-200 characters", field="name")
    return value.strip()


def _aware(value: datetime | None) -> datetime:
    if value is None:
        return utcnow()
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidInput("at must be a timezone-aware datetime", field="at")
    return as_utc(value)


def _check_codes_exist(session: Session, rule: dict[str, Any]) -> None:
    """A rule naming a region, type, grade or group that does not exist would
    silently match nothing: refuse it, naming the value's path."""
    for index, condition in enumerate(rule["all"]):
        model = _CODE_TABLES.get(condition["field"])
        if model is None:
            continue
        values = condition["value"] if condition["op"] == "in" else [condition["value"]]
        known = set(session.scalars(select(model.code).where(model.code.in_(set(values)))))
        for n, value in enumerate(values):
            if value not in known:
                path = (f"rule.all.{index}.value.{n}" if condition["op"] == "in"
                        else f"rule.all.{index}.value")
                raise _bad(path, f"no {condition['field'].replace('_', ' ')} {value!r}")


def _view(row: DynamicTag) -> DynamicTagView:
    return DynamicTagView(row.public_id, row.code, row.name, copy.deepcopy(row.rule),
                          as_utc(row.created_at),
                          as_utc(row.computed_at) if row.computed_at is not None else None,
                          row.member_count)


def _row(session: Session, code: str, *, lock: bool = False) -> DynamicTag:
    query = select(DynamicTag).where(DynamicTag.code == code)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    row = session.scalars(query).one_or_none()
    if row is None:
        raise DynamicTagNotFound(f"no dynamic tag {code!r}", field="code", code=code)
    return row


def is_dynamic_tag(session: Session, tag: str) -> bool:
    """Whether ``tag`` is the code of a dynamic tag (manual tagging with it is refused)."""
    return session.scalar(select(DynamicTag.id).where(DynamicTag.code == tag)) is not None


def create_dynamic_tag(session: Session, code: str, name: str, rule: dict[str, Any], *,
                       actor: str) -> DynamicTagView:
    """A dynamic tag; no party carries it until the first recompute. The same
    code with the same name and rule returns the existing tag; with another
    name or rule it is ``DynamicTagExists``. A code already used as a manual
    tag on some party is refused (``InvalidInput``, field ``code``)."""
    code, name, rule = _code(code), _name(name), validate_rule(rule)
    existing = session.scalars(select(DynamicTag).where(DynamicTag.code == code)).one_or_none()
    if existing is not None:
        if (existing.name, existing.rule) != (name, rule):
            raise DynamicTagExists(f"dynamic tag {code!r} exists with another name or rule",
                                   field="code")
        return _view(existing)
    _check_codes_exist(session, rule)
    in_use = session.scalar(select(PartyTag.party_id).where(
        PartyTag.tag == code, PartyTag.source == "manual").limit(1))
    if in_use is not None:
        raise InvalidInput(f"{code!r} is in use as a manual tag; choose another code",
                           field="code")
    row = DynamicTag(public_id=DYNAMIC_TAG_PREFIX + new_uuid7().hex, code=code, name=name,
                     rule=rule, created_at=utcnow(), computed_at=None, member_count=0)
    session.add(row)
    session.flush()
    audit.record(session, actor=actor, action="dynamic_tag.create", subject_type="dynamic_tag",
                 subject=code, details={"name": name, "rule": rule})
    return _view(row)


def update_dynamic_tag(session: Session, code: str, *, name: str = _KEEP,
                       rule: dict[str, Any] = _KEEP, actor: str) -> DynamicTagView:
    """Change the name and/or the rule; parties are re-tagged by the next
    recompute (call ``recompute_dynamic_tag`` to apply it now)."""
    row = _row(session, code)
    changes: dict[str, Any] = {}
    if name is not _KEEP:
        changes["name"] = _name(name)
    if rule is not _KEEP:
        changes["rule"] = validate_rule(rule)
        _check_codes_exist(session, changes["rule"])
    changes = {k: v for k, v in changes.items() if getattr(row, k) != v}
    if changes:
        for key, value in changes.items():
            setattr(row, key, value)
        session.flush()
        audit.record(session, actor=actor, action="dynamic_tag.update",
                     subject_type="dynamic_tag", subject=row.code, details=changes)
    return _view(row)


def get_dynamic_tag(session: Session, code: str) -> DynamicTagView:
    return _view(_row(session, code))


def list_dynamic_tags(session: Session) -> list[DynamicTagView]:
    """Every dynamic tag, by code (there are few)."""
    return [_view(r) for r in session.scalars(select(DynamicTag).order_by(DynamicTag.code))]


# -- recompute -------------------------------------------------------------------------

def _fields(rule: dict[str, Any]) -> set[str]:
    return {c["field"] for c in rule["all"]}


def _facts_chunks(session: Session, needed: set[str],
                  chunk_size: int) -> Iterable[list[tuple[int, PartyFacts]]]:
    """Every party's (id, facts), in id order, ``chunk_size`` at a time:
    trees and grades once, then per chunk one query for parties and habits
    and (only if the rule looks at groups) one for group memberships."""
    region_paths = paths(session, Region) if "region" in needed else {}
    type_paths = paths(session, CustomerType) if "customer_type" in needed else {}
    grades = (dict(session.execute(select(Grade.id, Grade.code)).all())
              if "grade" in needed else {})
    with_groups = "group" in needed
    columns = [Party.id, Party.code, Party.role, Party.status, Party.quality_customer,
               Party.region_id, Party.customer_type_id, Party.grade_id,
               PurchaseHabit.order_count, PurchaseHabit.total_minor,
               PurchaseHabit.last_order_at]
    after = None
    while True:
        query = (select(*columns)
                 .outerjoin(PurchaseHabit, PurchaseHabit.party_id == Party.id)
                 .order_by(Party.id).limit(chunk_size))
        if after is not None:
            query = query.where(Party.id > after)
        rows = session.execute(query).all()
        if not rows:
            return
        groups: dict[int, set[str]] = {}
        if with_groups:
            for party_id, group_code in session.execute(
                    select(PartyGroupMember.party_id, PartyGroup.code)
                    .join(PartyGroup, PartyGroup.id == PartyGroupMember.group_id)
                    .where(PartyGroupMember.party_id > (after if after is not None else -1),
                           PartyGroupMember.party_id <= rows[-1][0])):
                groups.setdefault(party_id, set()).add(group_code)
        chunk = []
        for (party_id, code, role, status, quality, region_id, type_id, grade_id,
             count, total, last_order_at) in rows:
            count, total = count or 0, total or 0
            chunk.append((party_id, PartyFacts(
                code=code, role=role, status=status, quality_customer=bool(quality),
                region_path=region_paths.get(region_id, ()),
                customer_type_path=type_paths.get(type_id, ()),
                grade=grades.get(grade_id) if grade_id is not None else None,
                groups=frozenset(groups[party_id]) if party_id in groups else _NO_GROUPS,
                order_count=count, total_minor=total,
                average_order_minor=total // count if count > 0 else None,
                last_order_at=as_utc(last_order_at) if last_order_at is not None else None,
            )))
        yield chunk
        if len(rows) < chunk_size:
            return
        after = rows[-1][0]


def recompute_dynamic_tag(session: Session, code: str, *, at: datetime | None = None,
                          progress: Progress | None = None, actor: str = "system",
                          chunk_size: int = CHUNK_SIZE) -> RecomputeResult:
    """Evaluate the tag's rule over every party (at time ``at``, default
    now) and bring its ``dynamic`` tag rows in line: add them for new
    matches, remove them from parties that no longer match. Manual tag rows
    are never touched (a party with a manual row of this text keeps it and
    gets no dynamic one). ``progress(done, total)`` is called after every
    chunk. The tag row is locked (PostgreSQL) so two recomputes of one tag
    run one after the other. Sets the tag's ``computed_at`` to ``at`` and
    ``member_count`` to the parties matched; writes an audit record."""
    at = _aware(at)
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise InvalidInput("chunk_size must be a positive whole number", field="chunk_size")
    row = _row(session, code, lock=True)
    rule = validate_rule(row.rule)
    matches = compile_rule(rule)
    total = session.scalar(select(func.count()).select_from(Party)) or 0
    table = PartyTag.__table__
    matched = added = removed = done = 0
    previous_last = -1
    for chunk in _facts_chunks(session, _fields(rule), chunk_size):
        last_id = chunk[-1][0]
        existing = dict(session.execute(
            select(PartyTag.party_id, PartyTag.source).where(
                PartyTag.tag == row.code, PartyTag.party_id > previous_last,
                PartyTag.party_id <= last_id)).all())
        to_add, to_remove = [], []
        for party_id, facts in chunk:
            source = existing.get(party_id)
            if matches(facts, at):
                matched += 1
                if source is None:
                    to_add.append(party_id)
            elif source == "dynamic":
                to_remove.append(party_id)
        if to_add:
            session.execute(insert(table), [
                {"party_id": party_id, "tag": row.code, "source": "dynamic"}
                for party_id in to_add])
        if to_remove:
            session.execute(delete(table).where(
                table.c.tag == row.code, table.c.source == "dynamic",
                table.c.party_id.in_(to_remove)))
        added += len(to_add)
        removed += len(to_remove)
        done += len(chunk)
        previous_last = last_id
        if progress is not None:
            progress(done, max(total, done))
    if done == 0 and progress is not None:
        progress(0, 0)
    row.computed_at = at
    row.member_count = matched
    session.flush()
    audit.record(session, actor=actor, action="dynamic_tag.recompute",
                 subject_type="dynamic_tag", subject=row.code,
                 details={"matched": matched, "added": added, "removed": removed,
                          "parties": done, "at": at.isoformat()})
    return RecomputeResult(_view(row), matched, added, removed)


def recompute_all(session: Session, *, at: datetime | None = None,
                  progress: Callable[[str, int, int], None] | None = None,
                  actor: str = "system", chunk_size: int = CHUNK_SIZE) -> list[RecomputeResult]:
    """Recompute every dynamic tag, by code, in the caller's transaction;
    ``progress(code, done, total)``. (The scheduler job recomputes each tag
    in a transaction of its own instead.)"""
    at = _aware(at)
    results = []
    for code in session.scalars(select(DynamicTag.code).order_by(DynamicTag.code)).all():
        report = (lambda done, total, code=code: progress(code, done, total)) if progress else None
        results.append(recompute_dynamic_tag(session, code, at=at, progress=report,
                                             actor=actor, chunk_size=chunk_size))
    return results
