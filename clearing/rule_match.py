"""Which clearing rule splits an order's cash, and why.

Pure values and functions: standard library only, no database, no web. The
database layer maps its clearing rule rows to ``ClearingRuleSpec`` (party and
category codes, not row ids) and an order to ``RuleFacts``; clearing and the
finance "why this split" view both call the functions here, so there is
exactly one rule.

Trade modes
-----------

F = brand, B = distributor, b = store, C = consumer. ``trade_mode`` maps an
order's seller and buyer roles (``channel_api`` parties: brand, distributor,
store) and whether the seller's stock came through a linked upstream order
(``channel_api.orders.link_orders``) to its mode:

=================  ===================  =========================
seller             buyer                mode
=================  ===================  =========================
brand              distributor          ``F2B``
brand              store                ``F2b``
distributor        store, no link       ``B2b``
distributor        store, linked        ``F2B2b`` (the brand's goods, through the distributor)
distributor        distributor          ``B2B`` (a link changes nothing: there is no F2B2B)
=================  ===================  =========================

A brand has no upstream order, so a brand seller with a link is refused, as
is every other pair (a store never sells). ``F2B2b2C`` is a mode a rule may
name for sales to consumers, which no party role produces yet.

Selection rule
--------------

``choose(rules, facts)``:

1. **Eligibility.** A rule is eligible when all of these hold (checked in
   this order; the first that fails is its ``reason`` in ``explain``):

   ==================  =====================================================
   ``inactive``        its status is ``active``
   ``not_yet_valid``   ``valid_from <= at``
   ``expired``         ``at < valid_to`` (always true when ``valid_to`` is None)
   ``trade_mode``      ``trade_modes`` is None or holds the order's mode
   ``category``        ``categories`` is None or holds a code on the
                       order's category path (root to leaf)
   ``seller``          ``sellers`` is None or holds the seller
   ``buyer``           ``buyers`` is None or holds the buyer
   ``payment_method``  ``payment_methods`` is None or holds the method
   ==================  =====================================================

   None means "any"; an empty set matches nothing (``validate_rule`` refuses
   one, since it can only be a mistake).

2. **Ranking** of the eligible rules, the first difference decides:

   1. higher ``priority``;
   2. more specific: first the number of criteria that are not None, then
      the depth of the deepest category of the rule on the order's path
      (1 = root; 0 when the rule has no category criterion), so a rule for
      "chips" beats one for "snacks" with the same number of criteria;
   3. later ``valid_from`` (the newer rule);
   4. ``code`` ascending (codes are unique, so this always decides).

   The first is chosen; none eligible gives None (the caller decides what
   clearing without a rule means: usually "hold in escrow and alert").

``explain(rules, facts)`` lists every rule given, eligible ones first in rank
order (``rank`` 1 is the chosen one, with ``decided_by`` naming the criterion
that separated it from the runner-up), then the ineligible ones by code with
their reason. Neither result depends on the order of the rules given.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .split import Leg, RuleError, validate_legs

TRADE_MODES: tuple[str, ...] = ("F2B", "F2b", "B2b", "F2B2b", "F2B2b2C", "B2B")
RULE_STATUSES: tuple[str, ...] = ("active", "inactive")
PARTY_ROLES: tuple[str, ...] = ("brand", "distributor", "store")

# Ineligibility reasons, in the order they are checked.
INELIGIBLE_REASONS: tuple[str, ...] = ("inactive", "not_yet_valid", "expired", "trade_mode",
                                       "category", "seller", "buyer", "payment_method")
# Ranking criteria, most significant first (RuleCandidate.decided_by is one of them).
RANK_CRITERIA: tuple[str, ...] = ("priority", "specificity", "valid_from", "code")

MAX_CODE_LENGTH = 64
_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # party, category and rule codes


# -- values ---------------------------------------------------------------------

@dataclass(frozen=True)
class RuleFacts:
    """What rule selection needs of the cash being cleared. ``category_path``
    is the order's category and its ancestors, root first; ``at`` (with a
    time zone) is the time the rule must be valid at, usually the payment."""

    trade_mode: str
    category_path: tuple[str, ...]
    seller: str
    buyer: str
    payment_method: str
    at: datetime


@dataclass(frozen=True)
class ClearingRuleSpec:
    """A clearing rule. Each criterion is a set of codes, None = any.
    Valid over ``[valid_from, valid_to)``, ``valid_to`` None = open-ended."""

    code: str
    priority: int
    trade_modes: frozenset[str] | None
    categories: frozenset[str] | None
    sellers: frozenset[str] | None
    buyers: frozenset[str] | None
    payment_methods: frozenset[str] | None
    valid_from: datetime
    valid_to: datetime | None
    legs: tuple[Leg, ...]
    status: str


@dataclass(frozen=True)
class RuleCandidate:
    """One rule's part in a selection. Eligible: ``rank`` (1 = chosen), its
    ``specificity`` (criteria count, category depth) and the category that
    matched; ``decided_by`` on rank 1 only, None without a runner-up.
    Ineligible: ``reason`` (one of ``INELIGIBLE_REASONS``)."""

    code: str
    eligible: bool
    reason: str | None = None
    rank: int | None = None
    specificity: tuple[int, int] | None = None
    matched_category: str | None = None
    decided_by: str | None = None
    rule: ClearingRuleSpec | None = field(default=None, repr=False, compare=False)


# -- trade modes ----------------------------------------------------------------

_MODES = {("brand", "distributor"): "F2B", ("brand", "store"): "F2b",
          ("distributor", "distributor"): "B2B"}


def trade_mode(seller_role: str, buyer_role: str, has_upstream_link: bool) -> str:
    """The order's trade mode (module docstring: the table). Raises
    ValueError for a pair of roles no mode describes."""
    if seller_role not in PARTY_ROLES or buyer_role not in PARTY_ROLES:
        raise ValueError(f"roles must be among {', '.join(PARTY_ROLES)}")
    if not isinstance(has_upstream_link, bool):
        raise ValueError("has_upstream_link must be True or False")
    if seller_role == "brand" and has_upstream_link:
        raise ValueError("a brand sells its own goods: it has no upstream order")
    if (seller_role, buyer_role) == ("distributor", "store"):
        return "F2B2b" if has_upstream_link else "B2b"
    mode = _MODES.get((seller_role, buyer_role))
    if mode is None:
        raise ValueError(f"no trade mode for a {seller_role} selling to a {buyer_role}")
    return mode


# -- validation -----------------------------------------------------------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _aware(value: Any) -> bool:
    return isinstance(value, datetime) and value.tzinfo is not None and value.utcoffset() is not None


def _codes(value: Any, name: str, allowed: tuple[str, ...] | None = None) -> None:
    if value is None:
        return
    if not isinstance(value, frozenset) or not value:
        raise RuleError(f"{name} must be None (any) or a non-empty frozenset of codes", name)
    for code in sorted(value, key=str):
        if allowed is not None:
            if code not in allowed:
                raise RuleError(f"{name}: {code!r} is not one of {', '.join(allowed)}", name)
        elif not isinstance(code, str) or not _CODE.fullmatch(code):
            raise RuleError(f"{name}: {code!r} is not a code of 1-64 characters of "
                            "A-Z a-z 0-9 _ . : -", name)


def validate_rule(rule: Any) -> None:
    """Raise ``RuleError`` (``field``: ``code``, ``trade_modes``,
    ``legs[2].value``, ...) unless ``rule`` is a rule that can be saved."""
    if not isinstance(rule, ClearingRuleSpec):
        raise RuleError("rule must be a ClearingRuleSpec", "rule")
    if not isinstance(rule.code, str) or not _CODE.fullmatch(rule.code):
        raise RuleError(f"code must be 1-{MAX_CODE_LENGTH} characters of A-Z a-z 0-9 _ . : -",
                        "code")
    if not _is_int(rule.priority) or not -2**31 <= rule.priority < 2**31:
        raise RuleError("priority must be a whole number (32-bit)", "priority")
    _codes(rule.trade_modes, "trade_modes", TRADE_MODES)
    _codes(rule.categories, "categories")
    _codes(rule.sellers, "sellers")
    _codes(rule.buyers, "buyers")
    _codes(rule.payment_methods, "payment_methods")
    if not _aware(rule.valid_from):
        raise RuleError("valid_from must be a date-time with a time zone", "valid_from")
    if rule.valid_to is not None:
        if not _aware(rule.valid_to):
            raise RuleError("valid_to must be None or a date-time with a time zone", "valid_to")
        if rule.valid_to <= rule.valid_from:
            raise RuleError("valid_to must be after valid_from", "valid_to")
    if rule.status not in RULE_STATUSES:
        raise RuleError(f"status must be one of {', '.join(RULE_STATUSES)}", "status")
    if not isinstance(rule.legs, tuple):
        raise RuleError("legs must be a tuple of legs", "legs")
    validate_legs(rule.legs)


def _check_facts(facts: Any) -> None:
    if not isinstance(facts, RuleFacts):
        raise ValueError("facts must be RuleFacts")
    if not _aware(facts.at):
        raise ValueError("facts.at must be a date-time with a time zone")
    if not isinstance(facts.category_path, tuple):
        raise ValueError("facts.category_path must be a tuple of codes, root first")


# -- selection ------------------------------------------------------------------

def _deepest_match(categories: frozenset[str], path: tuple[str, ...]) -> tuple[int, str] | None:
    """(depth, code) of the deepest code of ``categories`` on ``path``."""
    for depth in range(len(path), 0, -1):
        if path[depth - 1] in categories:
            return depth, path[depth - 1]
    return None


def _evaluate(rule: ClearingRuleSpec, facts: RuleFacts
              ) -> tuple[str | None, tuple[int, int] | None, str | None]:
    """(reason, specificity, matched category); reason None = eligible."""
    if rule.status != "active":
        return "inactive", None, None
    if facts.at < rule.valid_from:
        return "not_yet_valid", None, None
    if rule.valid_to is not None and facts.at >= rule.valid_to:
        return "expired", None, None
    if rule.trade_modes is not None and facts.trade_mode not in rule.trade_modes:
        return "trade_mode", None, None
    depth, matched = 0, None
    if rule.categories is not None:
        found = _deepest_match(rule.categories, facts.category_path)
        if found is None:
            return "category", None, None
        depth, matched = found
    for reason, allowed, value in (("seller", rule.sellers, facts.seller),
                                   ("buyer", rule.buyers, facts.buyer),
                                   ("payment_method", rule.payment_methods, facts.payment_method)):
        if allowed is not None and value not in allowed:
            return reason, None, None
    criteria = sum(c is not None for c in (rule.trade_modes, rule.categories, rule.sellers,
                                           rule.buyers, rule.payment_methods))
    return None, (criteria, depth), matched


def _criteria(rule: ClearingRuleSpec, specificity: tuple[int, int]) -> tuple[Any, ...]:
    """Values in ``RANK_CRITERIA`` order."""
    return (rule.priority, specificity, rule.valid_from, rule.code)


def _ranked(rules: Iterable[ClearingRuleSpec], facts: RuleFacts
            ) -> tuple[list[tuple[ClearingRuleSpec, tuple[int, int], str | None]],
                       list[RuleCandidate]]:
    _check_facts(facts)
    eligible = []
    ineligible = []
    for rule in rules:
        reason, specificity, matched = _evaluate(rule, facts)
        if reason is None:
            assert specificity is not None
            eligible.append((rule, specificity, matched))
        else:
            ineligible.append(RuleCandidate(rule.code, False, reason, rule=rule))
    # Both sorts are stable, so this is the lexicographic order of the
    # ranking: code ascending last, the others higher-is-better.
    eligible.sort(key=lambda e: e[0].code)
    eligible.sort(key=lambda e: (e[0].priority, e[1], e[0].valid_from), reverse=True)
    ineligible.sort(key=lambda c: (c.code, c.reason or ""))
    return eligible, ineligible


def choose(rules: Iterable[ClearingRuleSpec], facts: RuleFacts) -> ClearingRuleSpec | None:
    """The clearing rule for ``facts`` (module docstring: the rule), None when
    no rule is eligible. Raises ValueError only for bad facts (``at``
    without a time zone)."""
    eligible, _ = _ranked(rules, facts)
    return eligible[0][0] if eligible else None


def deciding_criterion(winner: tuple[Any, ...], runner_up: tuple[Any, ...]) -> str:
    """The first of ``RANK_CRITERIA`` on which two candidates differ."""
    for name, a, b in zip(RANK_CRITERIA, winner, runner_up):
        if a != b:
            return name
    return "code"


def explain(rules: Iterable[ClearingRuleSpec], facts: RuleFacts) -> list[RuleCandidate]:
    """Every rule given with its part in the choice (module docstring)."""
    eligible, ineligible = _ranked(rules, facts)
    decided_by = None
    if len(eligible) > 1:
        (first, first_spec, _), (second, second_spec, _) = eligible[0], eligible[1]
        decided_by = deciding_criterion(_criteria(first, first_spec),
                                        _criteria(second, second_spec))
    ranked = [RuleCandidate(rule.code, True, None, rank, specificity, matched,
                            decided_by if rank == 1 else None, rule)
              for rank, (rule, specificity, matched) in enumerate(eligible, start=1)]
    return ranked + ineligible
