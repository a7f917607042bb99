"""Scopes: which products and which buyers a permission or a price strategy
covers. Pure values and functions (no database), shared by supply
relationships (purchase permission), sale permissions, price strategies and
the CSV files that carry them.

* A **product scope** is "all", or a set of category codes (each covering its
  whole subtree) and SKU codes. An empty scope covers nothing.
* A **customer scope** restricts buyers along six dimensions: named parties,
  regions (subtrees), customer types (subtrees), grades, groups and tags. An
  empty dimension does not restrict; a buyer must match every restricted
  dimension (AND across dimensions, OR within one).

Both are stored as JSON (``to_json``/``from_json``) with sorted lists, so the
same scope always serialises to the same text (CSV exports, idempotent
re-imports and request fingerprints rely on it).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Product-scope specificity, used by price resolution: a SKU named outright
# beats any category, a deeper category beats a shallower one, "all" is last.
SKU_SPECIFICITY = 1000
ALL_SPECIFICITY = 0

CUSTOMER_DIMENSIONS = ("parties", "regions", "customer_types", "grades", "groups", "tags")


class ScopeError(ValueError):
    """A scope document that is not well formed; ``field`` names the key."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def _codes(value: Any, field: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = [part.strip() for part in value.split("|") if part.strip()]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
            isinstance(v, str) and v for v in value):
        raise ScopeError(f"{field} must be a list of codes", field)
    return frozenset(value)


@dataclass(frozen=True)
class ProductScope:
    all: bool = False
    categories: frozenset[str] = frozenset()
    skus: frozenset[str] = frozenset()

    @classmethod
    def everything(cls) -> ProductScope:
        return cls(all=True)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None, field: str = "product_scope") -> ProductScope:
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping):
            raise ScopeError(f"{field} must be an object", field)
        unknown = set(doc) - {"all", "categories", "skus"}
        if unknown:
            raise ScopeError(f"{field} has unknown keys: {', '.join(sorted(unknown))}", field)
        everything = doc.get("all", False)
        if not isinstance(everything, bool):
            raise ScopeError(f"{field}.all must be true or false", f"{field}.all")
        scope = cls(all=everything,
                    categories=_codes(doc.get("categories"), f"{field}.categories"),
                    skus=_codes(doc.get("skus"), f"{field}.skus"))
        if scope.all and (scope.categories or scope.skus):
            raise ScopeError(f"{field}: 'all' excludes categories and skus", field)
        return scope

    def to_json(self) -> dict[str, Any]:
        if self.all:
            return {"all": True}
        return {"categories": sorted(self.categories), "skus": sorted(self.skus)}

    @property
    def is_empty(self) -> bool:
        return not (self.all or self.categories or self.skus)

    def covers(self, sku: str, category_path: tuple[str, ...]) -> bool:
        """``category_path`` is the SKU's category and its ancestors, root first."""
        return self.specificity(sku, category_path) is not None

    def specificity(self, sku: str, category_path: tuple[str, ...]) -> int | None:
        """None when not covered; otherwise how specifically (higher = narrower)."""
        if sku in self.skus:
            return SKU_SPECIFICITY
        for depth in range(len(category_path), 0, -1):  # deepest first
            if category_path[depth - 1] in self.categories:
                return depth
        return ALL_SPECIFICITY if self.all else None

    def referenced(self) -> tuple[frozenset[str], frozenset[str]]:
        """(category codes, SKU codes) the scope names, for existence checks."""
        return self.categories, self.skus


@dataclass(frozen=True)
class BuyerFacts:
    """What customer scopes test about a buyer; paths are root first."""

    code: str
    region_path: tuple[str, ...] = ()
    customer_type_path: tuple[str, ...] = ()
    grade: str | None = None
    groups: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CustomerScope:
    parties: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    customer_types: frozenset[str] = frozenset()
    grades: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None,
                  field: str = "customer_scope") -> CustomerScope:
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping):
            raise ScopeError(f"{field} must be an object", field)
        unknown = set(doc) - set(CUSTOMER_DIMENSIONS)
        if unknown:
            raise ScopeError(f"{field} has unknown keys: {', '.join(sorted(unknown))}", field)
        return cls(**{dim: _codes(doc.get(dim), f"{field}.{dim}") for dim in CUSTOMER_DIMENSIONS})

    def to_json(self) -> dict[str, list[str]]:
        return {dim: sorted(getattr(self, dim)) for dim in CUSTOMER_DIMENSIONS
                if getattr(self, dim)}

    @property
    def restricted(self) -> tuple[str, ...]:
        return tuple(dim for dim in CUSTOMER_DIMENSIONS if getattr(self, dim))

    def matches(self, buyer: BuyerFacts) -> bool:
        if self.parties and buyer.code not in self.parties:
            return False
        if self.regions and self.regions.isdisjoint(buyer.region_path):
            return False
        if self.customer_types and self.customer_types.isdisjoint(buyer.customer_type_path):
            return False
        if self.grades and buyer.grade not in self.grades:
            return False
        if self.groups and self.groups.isdisjoint(buyer.groups):
            return False
        if self.tags and self.tags.isdisjoint(buyer.tags):
            return False
        return True

    def specificity(self) -> tuple[int, int]:
        """(names the buyer outright, number of restricted dimensions)."""
        return (1 if self.parties else 0, len(self.restricted))


@dataclass(frozen=True)
class RegionScope:
    """Regions a seller may sell in (each covering its subtree); empty = anywhere."""

    regions: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_json(cls, value: Iterable[str] | None, field: str = "regions") -> RegionScope:
        return cls(_codes(list(value) if value is not None and not isinstance(value, str)
                          else value, field))

    def to_json(self) -> list[str]:
        return sorted(self.regions)

    def covers(self, region_path: tuple[str, ...]) -> bool:
        return not self.regions or not self.regions.isdisjoint(region_path)
