"""What scopes test about a buyer (``scopes.BuyerFacts``), read from the
database: its region and customer-type paths, grade, groups and tags."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import CustomerType, Grade, Party, PartyGroup, PartyGroupMember, PartyTag, Region
from .scopes import BuyerFacts
from .trees import path_of


def buyer_facts(session: Session, party: Party) -> BuyerFacts:
    grade = (session.scalar(select(Grade.code).where(Grade.id == party.grade_id))
             if party.grade_id is not None else None)
    groups = frozenset(session.scalars(
        select(PartyGroup.code).join(PartyGroupMember, PartyGroupMember.group_id == PartyGroup.id)
        .where(PartyGroupMember.party_id == party.id)))
    tags = frozenset(session.scalars(select(PartyTag.tag).where(PartyTag.party_id == party.id)))
    return BuyerFacts(
        code=party.code,
        region_path=path_of(session, Region, party.region_id),
        customer_type_path=path_of(session, CustomerType, party.customer_type_id),
        grade=grade, groups=groups, tags=tags,
    )
