"""What scopes test about a buyer (``scopes.BuyerFacts``), read from the
database: its region and customer-type paths, grade, groups and tags."""
from __future__ import annotations

from sqlalchemy import literal, select, union_all
from sqlalchemy.orm import Session

from .models import CustomerType, Grade, Party, PartyGroup, PartyGroupMember, PartyTag, Region
from .scopes import BuyerFacts
from .trees import path_of


def buyer_facts(session: Session, party: Party) -> BuyerFacts:
    # Grade, groups and tags in one round trip: this runs on every price request.
    labelled = union_all(
        select(literal("grade").label("kind"), Grade.code.label("value"))
        .where(Grade.id == party.grade_id),
        select(literal("group"), PartyGroup.code)
        .join(PartyGroupMember, PartyGroupMember.group_id == PartyGroup.id)
        .where(PartyGroupMember.party_id == party.id),
        select(literal("tag"), PartyTag.tag).where(PartyTag.party_id == party.id))
    found: dict[str, set[str]] = {"grade": set(), "group": set(), "tag": set()}
    for kind, value in session.execute(labelled):
        found[kind].add(value)
    grade = next(iter(found["grade"]), None)
    groups, tags = frozenset(found["group"]), frozenset(found["tag"])
    return BuyerFacts(
        code=party.code,
        region_path=path_of(session, Region, party.region_id),
        customer_type_path=path_of(session, CustomerType, party.customer_type_id),
        grade=grade, groups=groups, tags=tags,
    )
