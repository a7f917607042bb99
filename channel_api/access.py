"""Who may do what through the channel API: the caller behind an API key,
and the pure authorization rules every endpoint applies.

* A ``storefront`` key acts as its party buying: its own profile, the
  sellers it may buy from, their catalogs and its prices.
* A ``manage`` key acts as its party selling or administering. The brand's
  manage key administers the whole network (master data, catalog, coverage,
  sale permissions, keys); a distributor's manage key manages what is its
  own: its strategies, its coverage and its buyers (relationships where it
  sells).
* A ``finance`` key acts for its party's finance team: it confirms or
  rejects the offline money paid to that party as seller (remittances,
  deposits, order transfers, credit repayments) and grants rebates on its
  sales. The brand's finance key (and, as before, its manage key) does so
  for every seller.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import AccessDenied

SCOPES = ("storefront", "manage", "finance")


@dataclass(frozen=True)
class Caller:
    key_id: str
    api_key_pk: int
    party_id: int
    party_code: str
    role: str
    scopes: frozenset[str]

    @property
    def is_brand(self) -> bool:
        return self.role == "brand"


def require_scope(caller: Caller, scope: str) -> None:
    if scope not in caller.scopes:
        raise AccessDenied(f"this key lacks the {scope!r} scope", scope=scope)


def require_brand_manager(caller: Caller) -> None:
    """Network administration: only the brand's manage key."""
    require_scope(caller, "manage")
    if not caller.is_brand:
        raise AccessDenied("only the brand's manage key may do this")


def require_self_or_brand(caller: Caller, party_code: str) -> None:
    """Acting as a given seller/party: itself, or the brand on its behalf."""
    if caller.party_code != party_code and not (caller.is_brand and "manage" in caller.scopes):
        raise AccessDenied("this key belongs to another party", party=party_code)


def require_manager_of(caller: Caller, seller_code: str) -> None:
    """Managing what a seller owns (its strategies, coverage, buyers)."""
    require_scope(caller, "manage")
    require_self_or_brand(caller, seller_code)


def require_brand_finance(caller: Caller) -> None:
    """Finance across every seller (money in suspense): the brand's finance
    or manage key."""
    if not (caller.is_brand and ({"finance", "manage"} & caller.scopes)):
        raise AccessDenied("only the brand's finance may do this")


def require_finance_of(caller: Caller, seller_code: str) -> None:
    """Confirming money paid to ``seller_code``: its finance key, or the
    brand's finance or manage key."""
    if caller.is_brand and ({"finance", "manage"} & caller.scopes):
        return
    require_scope(caller, "finance")
    if caller.party_code != seller_code:
        raise AccessDenied("this finance key belongs to another seller", party=seller_code)
