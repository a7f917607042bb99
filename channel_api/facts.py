"""What scopes test about a buyer (``scopes.BuyerFacts``), read from the
database: its region and customer-type paths, grade, groups and tags.

The price path reads the buyer's grade, groups and tags together with the
cache tokens it needs in one statement (``labels_and_tokens``) and takes the
tree paths from the cached trees (``snapshots``)."""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, literal, select, union_all
from sqlalchemy.orm import Session

from ledger import prepared

from .models import (
    CacheVersion,
    CustomerType,
    Grade,
    Party,
    PartyGroup,
    PartyGroupMember,
    PartyTag,
    Region,
)
from .scopes import BuyerFacts
from .trees import path_of


# Built once: on the price path, building a statement costs as much as running it.
_LABELS = union_all(
    select(literal("grade").label("kind"), Grade.code.label("key"), literal("").label("value"))
    .where(Grade.id == bindparam("grade_id")),
    select(literal("group"), PartyGroup.code, literal(""))
    .join(PartyGroupMember, PartyGroupMember.group_id == PartyGroup.id)
    .where(PartyGroupMember.party_id == bindparam("party_id")),
    select(literal("tag"), PartyTag.tag, literal("")).where(PartyTag.party_id == bindparam("party_id")),
    select(literal("token"), CacheVersion.name, CacheVersion.token)
    .where(CacheVersion.name.in_(bindparam("names", expanding=True))),
)


def labels_and_tokens(session: Session, party, token_names: Sequence[str] = ()
                      ) -> tuple[str | None, frozenset[str], frozenset[str], dict[str, str | None]]:
    """(grade, groups, tags, {cache name: token}) in one round trip. ``party``
    is a ``Party`` or a row with its columns."""
    found: dict[str, set[str]] = {"grade": set(), "group": set(), "tag": set()}
    tokens: dict[str, str | None] = {name: None for name in token_names}
    rows = prepared.rows(session.connection(), "cl_labels", _LABELS, {
        "grade_id": party.grade_id, "party_id": party.id, "names": list(token_names) or [""]})
    for kind, key, value in rows:
        if kind == "token":
            if key in tokens:
                tokens[key] = value
        else:
            found[kind].add(key)
    return (next(iter(found["grade"]), None), frozenset(found["group"]), frozenset(found["tag"]),
            tokens)


def buyer_facts(session: Session, party, *,
                region_paths: dict[int, tuple[str, ...]] | None = None,
                customer_type_paths: dict[int, tuple[str, ...]] | None = None,
                labels: tuple[str | None, frozenset[str], frozenset[str]] | None = None
                ) -> BuyerFacts:
    """The buyer's facts; paths and labels already at hand are used, the rest
    is read."""
    grade, groups, tags = labels if labels is not None else labels_and_tokens(session, party)[:3]
    region_path = (region_paths or {}).get(party.region_id) or path_of(session, Region,
                                                                        party.region_id)
    type_path = (customer_type_paths or {}).get(party.customer_type_id) or path_of(
        session, CustomerType, party.customer_type_id)
    return BuyerFacts(code=party.code, region_path=region_path, customer_type_path=type_path,
                      grade=grade, groups=groups, tags=tags)
