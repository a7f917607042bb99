"""Use cases of the channel network's master data: regions, customer types,
grades, groups, parties and their manual tags.

Every function takes a session and only flushes; the caller owns the
transaction (``with session.begin():``). Creating a record whose code exists
with identical attributes returns the existing one (safe to retry); with
different attributes it is refused (``*_exists``). Trees (regions, customer
types) are built top-down: a node's parent must exist when it is created and
never changes afterwards, so no cycle can form. Filtering parties by a tree
node includes its whole subtree (a recursive CTE, on SQLite and PostgreSQL).
"""
from __future__ import annotations

import re
from typing import Any

from sqlalchemy import bindparam, literal_column, select, union_all
from sqlalchemy.orm import Session

from ledger import as_utc, new_uuid7, utcnow

from .errors import (
    InvalidInput,
    CustomerTypeExists,
    CustomerTypeNotFound,
    GradeExists,
    GradeNotFound,
    GroupExists,
    GroupNotFound,
    InvalidParty,
    PartyExists,
    PartyNotFound,
    RegionExists,
    RegionNotFound,
)
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
    Region,
    SupplyRelationship,
)
from . import snapshots
from .trees import subtree_ids
from .values import CustomerTypeView, GradeView, GroupView, PartyView, RegionView

REGION_PREFIX = "reg_"
CUSTOMER_TYPE_PREFIX = "ctype_"
GRADE_PREFIX = "grade_"
PARTY_PREFIX = "pty_"
GROUP_PREFIX = "grp_"

MAX_LIST_LIMIT = 500
_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_PHONE = re.compile(r"[0-9+-]{0,32}")
_KEEP: Any = object()  # "leave unchanged" in update_party


def _public_id(prefix: str) -> str:
    return prefix + new_uuid7().hex


# -- validation ---------------------------------------------------------------

def _code(value: Any, field: str = "code") -> str:
    if not isinstance(value, str) or not _CODE.fullmatch(value):
        raise InvalidParty(f"{field} must be 1-64 characters of A-Z a-z 0-9 _ . : -",
                           field=field)
    return value


def _name(value: Any, field: str = "name", max_length: int = 200) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidParty(f"{field} must not be empty", field=field)
    value = value.strip()
    if len(value) > max_length:
        raise InvalidParty(f"{field} is longer than {max_length} characters", field=field)
    return value


def _text(value: Any, field: str, max_length: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value.strip()) > max_length:
        raise InvalidParty(f"{field} must be text of at most {max_length} characters",
                           field=field)
    return value.strip()


def _phone(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or not _PHONE.fullmatch(value):
        raise InvalidParty("contact_phone may hold only digits, + and -, at most 32",
                           field="contact_phone")
    return value


def _choice(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidParty(f"{field} must be one of {', '.join(allowed)}", field=field)
    return value


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidParty(f"{field} must be true or false", field=field)
    return value


# -- lookups ------------------------------------------------------------------

def _by_code(session: Session, model, code: str, not_found, field: str):
    row = session.scalars(select(model).where(model.code == code)).one_or_none()
    if row is None:
        raise not_found(f"no {field.replace('_', ' ')} with code {code!r}", field=field, code=code)
    return row


def _region(session: Session, code: str, field: str = "region") -> Region:
    return _by_code(session, Region, code, RegionNotFound, field)


def _customer_type(session: Session, code: str, field: str = "customer_type") -> CustomerType:
    return _by_code(session, CustomerType, code, CustomerTypeNotFound, field)


def _grade(session: Session, code: str) -> Grade:
    return _by_code(session, Grade, code, GradeNotFound, "grade")


def _group(session: Session, code: str) -> PartyGroup:
    return _by_code(session, PartyGroup, code, GroupNotFound, "group")


def _party(session: Session, code_or_public_id: str) -> Party:
    if isinstance(code_or_public_id, str) and code_or_public_id:
        if code_or_public_id.startswith(PARTY_PREFIX):
            row = session.scalars(
                select(Party).where(Party.public_id == code_or_public_id)).one_or_none()
            if row is not None:
                return row
        row = session.scalars(select(Party).where(Party.code == code_or_public_id)).one_or_none()
        if row is not None:
            return row
    raise PartyNotFound(f"no party {code_or_public_id!r}", field="party")


def _code_of(session: Session, model, row_id: int | None) -> str | None:
    if row_id is None:
        return None
    return session.scalar(select(model.code).where(model.id == row_id))


# -- regions, customer types, grades, groups -----------------------------------

def _region_view(session: Session, row: Region) -> RegionView:
    return RegionView(row.public_id, row.code, row.name, row.level,
                      _code_of(session, Region, row.parent_id))


def create_region(session: Session, code: str, name: str, *, parent: str | None = None,
                  level: str = "") -> RegionView:
    """A region under ``parent`` (a region code), or a root when None."""
    code, name = _code(code), _name(name)
    level = _text(level, "level", 32)
    parent_id = _region(session, _code(parent, "parent"), "parent").id if parent is not None else None
    existing = session.scalars(select(Region).where(Region.code == code)).one_or_none()
    if existing is not None:
        if (existing.name, existing.parent_id, existing.level) != (name, parent_id, level):
            raise RegionExists(f"region {code!r} exists with other attributes", field="code")
        return _region_view(session, existing)
    row = Region(public_id=_public_id(REGION_PREFIX), code=code, name=name,
                 parent_id=parent_id, level=level)
    session.add(row)
    session.flush()
    snapshots.bump(session, snapshots.TREES)  # price caches reload the trees
    return _region_view(session, row)


def _customer_type_view(session: Session, row: CustomerType) -> CustomerTypeView:
    return CustomerTypeView(row.public_id, row.code, row.name,
                            _code_of(session, CustomerType, row.parent_id))


def create_customer_type(session: Session, code: str, name: str, *,
                         parent: str | None = None) -> CustomerTypeView:
    code, name = _code(code), _name(name)
    parent_id = (_customer_type(session, _code(parent, "parent"), "parent").id
                 if parent is not None else None)
    existing = session.scalars(select(CustomerType).where(CustomerType.code == code)).one_or_none()
    if existing is not None:
        if (existing.name, existing.parent_id) != (name, parent_id):
            raise CustomerTypeExists(f"customer type {code!r} exists with other attributes",
                                     field="code")
        return _customer_type_view(session, existing)
    row = CustomerType(public_id=_public_id(CUSTOMER_TYPE_PREFIX), code=code, name=name,
                       parent_id=parent_id)
    session.add(row)
    session.flush()
    snapshots.bump(session, snapshots.TREES)  # price caches reload the trees
    return _customer_type_view(session, row)


def create_grade(session: Session, code: str, name: str, *, rank: int = 0) -> GradeView:
    code, name = _code(code), _name(name)
    if not isinstance(rank, int) or isinstance(rank, bool) or not -10**6 <= rank <= 10**6:
        raise InvalidParty("rank must be an integer", field="rank")
    existing = session.scalars(select(Grade).where(Grade.code == code)).one_or_none()
    if existing is not None:
        if (existing.name, existing.rank) != (name, rank):
            raise GradeExists(f"grade {code!r} exists with other attributes", field="code")
        row = existing
    else:
        row = Grade(public_id=_public_id(GRADE_PREFIX), code=code, name=name, rank=rank)
        session.add(row)
        session.flush()
    return GradeView(row.public_id, row.code, row.name, row.rank)


def create_group(session: Session, code: str, name: str) -> GroupView:
    code, name = _code(code), _name(name)
    existing = session.scalars(select(PartyGroup).where(PartyGroup.code == code)).one_or_none()
    if existing is not None:
        if existing.name != name:
            raise GroupExists(f"group {code!r} exists with another name", field="code")
        row = existing
    else:
        row = PartyGroup(public_id=_public_id(GROUP_PREFIX), code=code, name=name)
        session.add(row)
        session.flush()
    return GroupView(row.public_id, row.code, row.name)


def list_regions(session: Session) -> list[RegionView]:
    """Every region, parents before children (trees are small)."""
    rows = list(session.scalars(select(Region).order_by(Region.id)))
    codes = {r.id: r.code for r in rows}
    return [RegionView(r.public_id, r.code, r.name, r.level, codes.get(r.parent_id))
            for r in rows]


def list_customer_types(session: Session) -> list[CustomerTypeView]:
    rows = list(session.scalars(select(CustomerType).order_by(CustomerType.id)))
    codes = {r.id: r.code for r in rows}
    return [CustomerTypeView(r.public_id, r.code, r.name, codes.get(r.parent_id)) for r in rows]


def list_grades(session: Session) -> list[GradeView]:
    return [GradeView(r.public_id, r.code, r.name, r.rank)
            for r in session.scalars(select(Grade).order_by(Grade.rank, Grade.code))]


def list_groups(session: Session) -> list[GroupView]:
    return [GroupView(r.public_id, r.code, r.name)
            for r in session.scalars(select(PartyGroup).order_by(PartyGroup.code))]


def is_buyer_of(session: Session, seller: str, buyer: str) -> bool:
    """Whether any relationship (of any status) links seller → buyer."""
    seller_id, buyer_id = _party(session, seller).id, _party(session, buyer).id
    return session.scalar(select(SupplyRelationship.id).where(
        SupplyRelationship.seller_id == seller_id,
        SupplyRelationship.buyer_id == buyer_id)) is not None


def trading_pair(session: Session, buyer: str, seller: str) -> tuple[Party, Party]:
    """The rows of a buyer and a seller that trade (a relationship of any
    status links them), or ``InvalidInput`` naming ``seller``: money is only
    ever held for a buyer at a seller it buys from."""
    b, s = _party(session, buyer), _party(session, seller)
    if not is_buyer_of(session, s.code, b.code):
        raise InvalidInput(f"{b.code} does not buy from {s.code}", field="seller")
    return b, s


def _is_dynamic(session: Session, tag: str) -> bool:
    return session.scalar(select(DynamicTag.id).where(DynamicTag.code == tag)) is not None


def party_row(session: Session, code_or_public_id: str) -> Party:
    """The row behind a code or public id, for the package's other use cases."""
    return _party(session, code_or_public_id)


# -- parties ------------------------------------------------------------------

def _party_views(session: Session, rows: list[Party]) -> list[PartyView]:
    """Views of many parties with a fixed number of queries."""
    if not rows:
        return []
    ids = [r.id for r in rows]
    regions = dict(session.execute(select(Region.id, Region.code).where(
        Region.id.in_({r.region_id for r in rows}))).all())
    types = dict(session.execute(select(CustomerType.id, CustomerType.code).where(
        CustomerType.id.in_({r.customer_type_id for r in rows}))).all())
    grade_ids = {r.grade_id for r in rows if r.grade_id is not None}
    grades = dict(session.execute(select(Grade.id, Grade.code).where(
        Grade.id.in_(grade_ids))).all()) if grade_ids else {}
    groups: dict[int, list[str]] = {}
    for party_id, code in session.execute(
            select(PartyGroupMember.party_id, PartyGroup.code)
            .join(PartyGroup, PartyGroup.id == PartyGroupMember.group_id)
            .where(PartyGroupMember.party_id.in_(ids))):
        groups.setdefault(party_id, []).append(code)
    tags: dict[int, list[str]] = {}
    for party_id, tag in session.execute(
            select(PartyTag.party_id, PartyTag.tag).where(PartyTag.party_id.in_(ids))):
        tags.setdefault(party_id, []).append(tag)
    return [
        _view(r, regions[r.region_id], types[r.customer_type_id],
              grades.get(r.grade_id) if r.grade_id is not None else None,
              groups.get(r.id, ()), tags.get(r.id, ()))
        for r in rows
    ]


def _view(r, region_code: str, customer_type_code: str, grade_code: str | None,
          groups, tags) -> PartyView:
    """A party's view from its row (an ORM row or a Core row with the same
    column names) and the codes it points at."""
    return PartyView(
        public_id=r.public_id, code=r.code, name=r.name, role=r.role, status=r.status,
        region_code=region_code, customer_type_code=customer_type_code, grade_code=grade_code,
        owner_name=r.owner_name, contact_phone=r.contact_phone, address=r.address,
        quality_customer=r.quality_customer, created_at=as_utc(r.created_at),
        groups=tuple(sorted(groups)), tags=tuple(sorted(tags)), metadata=dict(r.meta or {}),
    )


def _party_view(session: Session, row: Party) -> PartyView:
    view = _one_party_view(session, _PARTY_BY_ID, row.id)
    assert view is not None  # the row is in this session's transaction
    return view


def create_party(
    session: Session,
    *,
    code: str,
    name: str,
    role: str,
    region: str,
    customer_type: str,
    grade: str | None = None,
    owner_name: str = "",
    contact_phone: str = "",
    address: str = "",
    quality_customer: bool = False,
    status: str = "active",
    metadata: dict[str, Any] | None = None,
) -> PartyView:
    """A brand, distributor or store. ``region``, ``customer_type`` and
    ``grade`` are codes of existing records."""
    values = {
        "code": _code(code),
        "name": _name(name),
        "role": _choice(role, "role", PARTY_ROLES),
        "status": _choice(status, "status", PARTY_STATUSES),
        "owner_name": _text(owner_name, "owner_name", 200),
        "contact_phone": _phone(contact_phone),
        "address": _text(address, "address", 500),
        "quality_customer": _flag(quality_customer, "quality_customer"),
    }
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidParty("metadata must be an object", field="metadata")
    values["meta"] = dict(metadata or {})
    values["region_id"] = _region(session, _code(region, "region")).id
    values["customer_type_id"] = _customer_type(session, _code(customer_type, "customer_type")).id
    values["grade_id"] = _grade(session, _code(grade, "grade")).id if grade is not None else None

    existing = session.scalars(select(Party).where(Party.code == values["code"])).one_or_none()
    if existing is not None:
        differing = sorted(k for k, v in values.items() if getattr(existing, k) != v)
        if differing:
            raise PartyExists(f"party {values['code']!r} exists with other attributes",
                              field="code", differing=differing)
        return _party_view(session, existing)
    row = Party(public_id=_public_id(PARTY_PREFIX), created_at=utcnow(), **values)
    session.add(row)
    session.flush()
    return _party_view(session, row)


def update_party(
    session: Session,
    party: str,
    *,
    name: str = _KEEP,
    owner_name: str = _KEEP,
    contact_phone: str = _KEEP,
    address: str = _KEEP,
    status: str = _KEEP,
    region: str = _KEEP,
    customer_type: str = _KEEP,
    grade: str | None = _KEEP,
    quality_customer: bool = _KEEP,
) -> PartyView:
    """Change the given attributes (an omitted one is kept; ``grade=None``
    clears the grade). Everything is validated before anything is written."""
    row = _party(session, party)
    changes: dict[str, Any] = {}
    if name is not _KEEP:
        changes["name"] = _name(name)
    if owner_name is not _KEEP:
        changes["owner_name"] = _text(owner_name, "owner_name", 200)
    if contact_phone is not _KEEP:
        changes["contact_phone"] = _phone(contact_phone)
    if address is not _KEEP:
        changes["address"] = _text(address, "address", 500)
    if status is not _KEEP:
        changes["status"] = _choice(status, "status", PARTY_STATUSES)
    if quality_customer is not _KEEP:
        changes["quality_customer"] = _flag(quality_customer, "quality_customer")
    if region is not _KEEP:
        changes["region_id"] = _region(session, _code(region, "region")).id
    if customer_type is not _KEEP:
        changes["customer_type_id"] = _customer_type(
            session, _code(customer_type, "customer_type")).id
    if grade is not _KEEP:
        changes["grade_id"] = _grade(session, _code(grade, "grade")).id if grade is not None else None
    for key, value in changes.items():
        setattr(row, key, value)
    session.flush()
    return _party_view(session, row)


# One party's view in two statements (the party with its region, customer
# type and grade codes; then its groups and tags), built once at import and
# run as Core: ``GET /v1/me`` reads the caller's party on every call, and the
# list's ``_party_views`` (five ORM statements, built per call) cost it more
# CPU than the SQL. Every single-party view (read, create, update) is built
# here; lists by ``_party_views``.
_P, _REGION, _CTYPE, _GRADE = (Party.__table__, Region.__table__, CustomerType.__table__,
                               Grade.__table__)
_ONE_PARTY = (
    select(_P.c.id, _P.c.public_id, _P.c.code, _P.c.name, _P.c.role, _P.c.status,
           _REGION.c.code.label("region_code"), _CTYPE.c.code.label("customer_type_code"),
           _GRADE.c.code.label("grade_code"), _P.c.owner_name, _P.c.contact_phone,
           _P.c.address, _P.c.quality_customer, _P.c.created_at, _P.c["metadata"].label("meta"))
    .join_from(_P, _REGION, _REGION.c.id == _P.c.region_id)
    .join(_CTYPE, _CTYPE.c.id == _P.c.customer_type_id)
    .outerjoin(_GRADE, _GRADE.c.id == _P.c.grade_id)
)
_PARTY_BY_CODE = _ONE_PARTY.where(_P.c.code == bindparam("key"))
_PARTY_BY_PUBLIC_ID = _ONE_PARTY.where(_P.c.public_id == bindparam("key"))
_PARTY_BY_ID = _ONE_PARTY.where(_P.c.id == bindparam("key"))
_MEMBER, _GROUP, _TAG = (PartyGroupMember.__table__, PartyGroup.__table__, PartyTag.__table__)
_GROUPS_AND_TAGS = union_all(
    select(literal_column("'group'").label("kind"), _GROUP.c.code.label("value"))
    .join_from(_MEMBER, _GROUP, _GROUP.c.id == _MEMBER.c.group_id)
    .where(_MEMBER.c.party_id == bindparam("party_id")),
    select(literal_column("'tag'"), _TAG.c.tag).where(_TAG.c.party_id == bindparam("party_id")),
)


def _one_party_view(session: Session, statement, key) -> PartyView | None:
    if session.autoflush:
        session.flush()  # Core statements skip the ORM's autoflush; do it as a query would
    connection = session.connection()
    row = connection.execute(statement, {"key": key}).one_or_none()
    if row is None:
        return None
    labels: dict[str, list[str]] = {"group": [], "tag": []}
    for kind, value in connection.execute(_GROUPS_AND_TAGS, {"party_id": row.id}):
        labels[kind].append(value)
    return _view(row, row.region_code, row.customer_type_code, row.grade_code,
                 labels["group"], labels["tag"])


def get_party(session: Session, code_or_public_id: str) -> PartyView:
    """A party by code or public id (as ``_party`` finds it)."""
    if not isinstance(code_or_public_id, str) or not code_or_public_id:
        raise PartyNotFound(f"no party {code_or_public_id!r}", field="party")
    view = None
    if code_or_public_id.startswith(PARTY_PREFIX):
        view = _one_party_view(session, _PARTY_BY_PUBLIC_ID, code_or_public_id)
    if view is None:
        view = _one_party_view(session, _PARTY_BY_CODE, code_or_public_id)
    if view is None:
        raise PartyNotFound(f"no party {code_or_public_id!r}", field="party")
    return view


def list_parties(
    session: Session,
    *,
    role: str | None = None,
    region: str | None = None,
    customer_type: str | None = None,
    grade: str | None = None,
    group: str | None = None,
    tag: str | None = None,
    status: str | None = None,
    buyer_of: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> tuple[list[PartyView], str | None]:
    """Parties in code order, filtered; ``region`` and ``customer_type``
    include their subtrees; ``buyer_of`` keeps the buyers of one seller (any
    relationship status). ``after`` is the cursor (the last code seen); the
    second value is the next cursor, None on the last page."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidParty(f"limit must be between 1 and {MAX_LIST_LIMIT}", field="limit")
    query = select(Party)
    if role is not None:
        query = query.where(Party.role == _choice(role, "role", PARTY_ROLES))
    if status is not None:
        query = query.where(Party.status == _choice(status, "status", PARTY_STATUSES))
    if region is not None:
        root = _region(session, region).id
        query = query.where(Party.region_id.in_(subtree_ids(Region, root)))
    if customer_type is not None:
        root = _customer_type(session, customer_type).id
        query = query.where(Party.customer_type_id.in_(subtree_ids(CustomerType, root)))
    if grade is not None:
        query = query.where(Party.grade_id == _grade(session, grade).id)
    if group is not None:
        members = select(PartyGroupMember.party_id).where(
            PartyGroupMember.group_id == _group(session, group).id)
        query = query.where(Party.id.in_(members))
    if tag is not None:
        query = query.where(Party.id.in_(select(PartyTag.party_id).where(PartyTag.tag == tag)))
    if buyer_of is not None:
        query = query.where(Party.id.in_(select(SupplyRelationship.buyer_id).where(
            SupplyRelationship.seller_id == _party(session, buyer_of).id)))
    if after:
        query = query.where(Party.code > after)
    rows = list(session.scalars(query.order_by(Party.code).limit(limit + 1)))
    views = _party_views(session, rows[:limit])
    next_cursor = views[-1].code if len(rows) > limit else None
    return views, next_cursor


# -- groups and tags ----------------------------------------------------------

def add_to_group(session: Session, party: str, group: str) -> PartyView:
    """Idempotent: adding a member twice keeps one membership."""
    row, grp = _party(session, party), _group(session, group)
    if session.get(PartyGroupMember, (grp.id, row.id)) is None:
        session.add(PartyGroupMember(group_id=grp.id, party_id=row.id))
        session.flush()
    return _party_view(session, row)


def remove_from_group(session: Session, party: str, group: str) -> PartyView:
    """Idempotent: removing a non-member changes nothing."""
    row, grp = _party(session, party), _group(session, group)
    member = session.get(PartyGroupMember, (grp.id, row.id))
    if member is not None:
        session.delete(member)
        session.flush()
    return _party_view(session, row)


def tag_party(session: Session, party: str, tag: str) -> PartyView:
    """A manual tag (idempotent). A dynamic tag's code is refused: its rule
    alone decides who carries it."""
    tag = _name(tag, "tag", 64)
    if _is_dynamic(session, tag):
        raise InvalidParty(f"{tag!r} is a dynamic tag: its rule decides who carries it",
                           field="tag")
    row = _party(session, party)
    if session.get(PartyTag, (row.id, tag)) is None:
        session.add(PartyTag(party_id=row.id, tag=tag))
        session.flush()
    return _party_view(session, row)


def untag_party(session: Session, party: str, tag: str) -> PartyView:
    """Remove a manual tag (idempotent); dynamic tags are refused, as in tag_party."""
    if _is_dynamic(session, tag):
        raise InvalidParty(f"{tag!r} is a dynamic tag: its rule decides who carries it",
                           field="tag")
    row = _party(session, party)
    existing = session.get(PartyTag, (row.id, tag))
    if existing is not None:
        session.delete(existing)
        session.flush()
    return _party_view(session, row)
