"""Immutable values the channel use cases return (ORM rows stay inside)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class RegionView:
    public_id: str
    code: str
    name: str
    level: str
    parent_code: str | None


@dataclass(frozen=True)
class CustomerTypeView:
    public_id: str
    code: str
    name: str
    parent_code: str | None


@dataclass(frozen=True)
class GradeView:
    public_id: str
    code: str
    name: str
    rank: int


@dataclass(frozen=True)
class GroupView:
    public_id: str
    code: str
    name: str


@dataclass(frozen=True)
class PartyView:
    public_id: str
    code: str
    name: str
    role: str
    status: str
    region_code: str
    customer_type_code: str
    grade_code: str | None
    owner_name: str
    contact_phone: str
    address: str
    quality_customer: bool
    created_at: datetime
    groups: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


# -- catalog (catalog.py) -------------------------------------------------------


# -- network: relationships, coverage, sale permissions, audit (network.py) ------


# -- pricing (pricing.py, prices.py) ----------------------------------------------


# -- dynamic tags and purchase habits (tags.py, habits.py) ------------------------
