"""Price resolution: which price strategy prices a SKU for a buyer, and why.

Pure values and functions: no database, no web framework. The database layer
maps its rows to ``Strategy``/``Tier`` (SKU codes, not row ids) and its SKUs
to ``PricedSku`` (``values.SkuFacts`` has the same four attributes and can be
passed as it is); the use cases, the CSV import and the price list endpoint
all call the functions here, so there is exactly one rule.

Strategies and tiers
--------------------

A strategy belongs to a seller (its ``owner``), has a ``status`` (``active``
or ``inactive``), an integer ``priority``, a ``rule`` (``fixed`` or
``percent``), a ``currency``, a product scope and a customer scope
(``scopes.py``), a validity window ``[valid_from, valid_to)`` (``valid_to``
None = open-ended) and tiers. A ``fixed`` tier names a SKU and gives its unit
price in minor units from ``min_qty`` pieces; a ``percent`` tier gives a
percentage of the SKU's list price in basis points (9000 = 90%) from
``min_qty`` pieces, for one SKU or (``sku`` None) for every SKU in scope.

Resolution rule
---------------

``resolve(strategies, buyer, sku, quantity, at, seller=...)``:

1. **Eligibility.** A strategy is eligible when all of these hold (checked in
   this order; the first that fails is the candidate's ``reason``):

   ========================  ================================================
   ``inactive``              its status is ``active``
   ``other_owner``           its owner is the seller
   ``not_yet_valid``         ``valid_from <= at``
   ``expired``               ``at < valid_to`` (always true when open-ended)
   ``customer_scope``        its customer scope matches the buyer
   ``product_scope``         its product scope covers the SKU
   ``currency``              its currency is the currency of the SKU's list price
   ``no_tier_for_quantity``  a tier applies (below)
   ========================  ================================================

   **Tier choice** within one strategy: among the tiers naming this SKU with
   ``min_qty <= quantity``, the one with the greatest ``min_qty``; only when
   no tier naming the SKU applies, the SKU-less tier with the greatest
   ``min_qty <= quantity``. So a SKU's own tier beats a SKU-less tier of the
   same strategy even when the SKU-less tier has a higher ``min_qty``.

2. **Price** a strategy gives: a fixed tier's ``price_minor``; a percent
   tier's ``floor(list_price_minor * percent_bp / 10000)`` in integer
   arithmetic (rounded down to the fen, as every split in the ledger is).
   That is the unit price; the line total is unit price × quantity.

3. **Ranking** of the eligible strategies, the first difference decides:

   1. higher ``priority``;
   2. more specific product scope for this SKU (``ProductScope.specificity``:
      the SKU named outright > a deeper category > a shallower category >
      "all");
   3. more specific customer scope (``CustomerScope.specificity``: names the
      buyer outright, then the number of restricted dimensions);
   4. later ``valid_from`` (the newer strategy);
   5. lower unit price (the buyer's favour);
   6. strategy ``code`` ascending (codes are unique, so this always decides).

   The first is the winner; ``Resolution.decided_by`` names the criterion
   that separated it from the runner-up (``priority``,
   ``product_specificity``, ``customer_specificity``, ``valid_from``,
   ``price``, ``code``), None when there was no runner-up.

4. **Fallback.** No eligible strategy: the SKU's list price, source
   ``list_price``. ``resolve`` never raises for a valid input.

The explanation (``Resolution.candidates``) lists every strategy given: the
winner first, the other eligible ones in rank order, then the ineligible ones
by code with their reason. The result does not depend on the order of the
strategies given.

``price_list`` applies the same rule for quantity 1 to many SKUs at once,
without explanations (it pre-filters the strategies once per call and
indexes them by SKU, category and tier), and always agrees with ``resolve``.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from .scopes import ALL_SPECIFICITY, SKU_SPECIFICITY, BuyerFacts, CustomerScope, ProductScope

STRATEGY_STATUSES = ("active", "inactive")
STRATEGY_RULES = ("fixed", "percent")
FIXED, PERCENT = STRATEGY_RULES

SOURCE_STRATEGY = "strategy"
SOURCE_LIST_PRICE = "list_price"

# Ineligibility reasons, in the order they are checked.
INELIGIBLE_REASONS = ("inactive", "other_owner", "not_yet_valid", "expired",
                      "customer_scope", "product_scope", "currency", "no_tier_for_quantity")
# Ranking criteria, most significant first (Resolution.decided_by is one of them).
RANK_CRITERIA = ("priority", "product_specificity", "customer_specificity",
                 "valid_from", "price", "code")

BP_PER_UNIT = 10_000          # basis points in 100%
MAX_PERCENT_BP = 100_000      # up to 1000% of list price
MAX_PRICE_MINOR = 2**63 - 1   # the column is a signed 64-bit integer
MAX_INT32 = 2**31 - 1         # priority, min_qty and percent_bp columns
MAX_CODE_LENGTH = 64
_CURRENCY = re.compile(r"[A-Z]{3}")


class StrategyRuleError(ValueError):
    """A strategy that breaks a pricing rule; ``field`` names what is wrong
    (``rule``, ``tiers``, ``tiers[2].percent_bp``, ...)."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


# -- values ---------------------------------------------------------------------

@dataclass(frozen=True)
class Tier:
    """``sku`` None = every SKU in the strategy's scope (percent only).
    Exactly one of ``price_minor`` (fixed) and ``percent_bp`` (percent)."""

    sku: str | None
    min_qty: int
    price_minor: int | None = None
    percent_bp: int | None = None


@dataclass(frozen=True)
class Strategy:
    code: str
    owner: str
    priority: int
    rule: str
    currency: str
    product_scope: ProductScope
    customer_scope: CustomerScope
    valid_from: datetime
    valid_to: datetime | None
    status: str
    tiers: tuple[Tier, ...]
    version: int = 1


@dataclass(frozen=True)
class PricedSku:
    """What pricing needs of a SKU; ``category_path`` is its category and the
    category's ancestors, root first."""

    code: str
    list_price_minor: int
    currency: str
    category_path: tuple[str, ...]


class SkuLike(Protocol):
    """``PricedSku`` or anything with the same attributes (``SkuFacts``)."""

    code: str
    list_price_minor: int
    currency: str
    category_path: tuple[str, ...]


@dataclass(frozen=True)
class Candidate:
    """One strategy's part in a resolution. Eligible: ``rank`` (1 = winner),
    the tier used, the unit price it gives and its specificities. Ineligible:
    ``reason`` (one of ``INELIGIBLE_REASONS``) and the rest None."""

    code: str
    version: int
    eligible: bool
    reason: str | None = None
    rank: int | None = None
    unit_price_minor: int | None = None
    tier: Tier | None = None
    product_specificity: int | None = None
    customer_specificity: tuple[int, int] | None = None


@dataclass(frozen=True)
class Resolution:
    sku: str
    quantity: int
    unit_price_minor: int
    line_total_minor: int
    currency: str
    list_price_minor: int
    source: str                      # "strategy" | "list_price"
    strategy_code: str | None
    strategy_version: int | None
    tier: Tier | None
    decided_by: str | None           # one of RANK_CRITERIA, None without a runner-up
    candidates: tuple[Candidate, ...]


class PriceLine(NamedTuple):
    """One line of a price list (quantity 1). A NamedTuple rather than a
    frozen dataclass: it is as immutable and about three times cheaper to
    build, which matters for 5,000-line lists."""

    sku: str
    unit_price_minor: int
    currency: str
    source: str
    strategy_code: str | None
    strategy_version: int | None
    list_price_minor: int


# -- validation -----------------------------------------------------------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _aware(value: Any) -> bool:
    return isinstance(value, datetime) and value.tzinfo is not None and value.utcoffset() is not None


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_CODE_LENGTH:
        raise StrategyRuleError(f"{field} must be a code of 1 to {MAX_CODE_LENGTH} characters", field)
    return value


def check_tier(rule: str, tier: Any, field: str = "tier") -> Tier:
    """One tier on its own (the CSV import checks tier rows with it);
    ``validate_strategy`` adds the checks across tiers."""
    if rule not in STRATEGY_RULES:
        raise StrategyRuleError("rule must be 'fixed' or 'percent'", "rule")
    if not isinstance(tier, Tier):
        raise StrategyRuleError(f"{field} must be a Tier", field)
    if tier.sku is not None:
        _text(tier.sku, f"{field}.sku")
    if not _is_int(tier.min_qty) or not 1 <= tier.min_qty <= MAX_INT32:
        raise StrategyRuleError(f"{field}.min_qty must be a whole number of at least 1",
                                f"{field}.min_qty")
    if rule == FIXED:
        if tier.sku is None:
            raise StrategyRuleError(f"{field}: a fixed price names its SKU", f"{field}.sku")
        if tier.percent_bp is not None:
            raise StrategyRuleError(f"{field}: a fixed price has no percent_bp", f"{field}.percent_bp")
        if not _is_int(tier.price_minor) or not 0 <= tier.price_minor <= MAX_PRICE_MINOR:
            raise StrategyRuleError(f"{field}.price_minor must be a non-negative integer of minor units",
                                    f"{field}.price_minor")
    else:
        if tier.price_minor is not None:
            raise StrategyRuleError(f"{field}: a percent tier has no price_minor",
                                    f"{field}.price_minor")
        if not _is_int(tier.percent_bp) or not 0 < tier.percent_bp <= MAX_PERCENT_BP:
            raise StrategyRuleError(
                f"{field}.percent_bp must be a whole number of basis points above 0 and "
                f"at most {MAX_PERCENT_BP} (1000%)", f"{field}.percent_bp")
    return tier


def validate_strategy(strategy: Any, *,
                      category_path_of: Callable[[str], tuple[str, ...] | None] | None = None
                      ) -> Strategy:
    """Check a strategy against the pricing rules; return it unchanged or raise
    ``StrategyRuleError`` naming the first field at fault.

    Every tier's SKU must be covered by the product scope. With
    ``category_path_of`` (SKU code → its category path root first, None for
    an unknown SKU; a mapping's ``.get`` will do) that is checked fully.
    Without it, only what the scope alone decides is checked (scope "all", or
    the SKU named in it: covered; a scope without categories that does not
    name the SKU: not covered); a SKU that only a category could cover is
    left to the caller (the database layer, which knows the tree).

    Not checked here: that the owner, categories and SKUs exist, and that
    the code is free (the database layer does that).
    """
    if not isinstance(strategy, Strategy):
        raise StrategyRuleError("a Strategy is required", "strategy")
    s = strategy
    _text(s.code, "code")
    _text(s.owner, "owner")
    if s.status not in STRATEGY_STATUSES:
        raise StrategyRuleError("status must be 'active' or 'inactive'", "status")
    if not _is_int(s.priority) or not -MAX_INT32 <= s.priority <= MAX_INT32:
        raise StrategyRuleError("priority must be a whole number", "priority")
    if s.rule not in STRATEGY_RULES:
        raise StrategyRuleError("rule must be 'fixed' or 'percent'", "rule")
    if not isinstance(s.currency, str) or not _CURRENCY.fullmatch(s.currency):
        raise StrategyRuleError("currency must be 3 upper-case letters (ISO 4217)", "currency")
    if not isinstance(s.product_scope, ProductScope):
        raise StrategyRuleError("product_scope must be a ProductScope", "product_scope")
    if s.product_scope.is_empty:
        raise StrategyRuleError("product_scope covers nothing", "product_scope")
    if not isinstance(s.customer_scope, CustomerScope):
        raise StrategyRuleError("customer_scope must be a CustomerScope", "customer_scope")
    if not _aware(s.valid_from):
        raise StrategyRuleError("valid_from must be a date-time with a time zone", "valid_from")
    if s.valid_to is not None:
        if not _aware(s.valid_to):
            raise StrategyRuleError("valid_to must be a date-time with a time zone", "valid_to")
        if s.valid_to <= s.valid_from:
            raise StrategyRuleError("valid_to must be later than valid_from", "valid_to")
    if not _is_int(s.version) or not 1 <= s.version <= MAX_INT32:
        raise StrategyRuleError("version must be a whole number of at least 1", "version")
    if not isinstance(s.tiers, tuple) or not s.tiers:
        raise StrategyRuleError("a strategy needs at least one tier", "tiers")
    seen: set[tuple[str | None, int]] = set()
    for index, tier in enumerate(s.tiers):
        field = f"tiers[{index}]"
        check_tier(s.rule, tier, field)
        if (tier.sku, tier.min_qty) in seen:
            what = f"SKU {tier.sku}" if tier.sku is not None else "every SKU"
            raise StrategyRuleError(f"{field}: a second tier for {what} from {tier.min_qty}", field)
        seen.add((tier.sku, tier.min_qty))
        if tier.sku is not None:
            _check_covered(s.product_scope, tier.sku, category_path_of, f"{field}.sku")
    return s


def _check_covered(scope: ProductScope, sku: str,
                   category_path_of: Callable[[str], tuple[str, ...] | None] | None,
                   field: str) -> None:
    if category_path_of is not None:
        path = category_path_of(sku)
        if path is None:
            raise StrategyRuleError(f"unknown SKU {sku}", field)
        if not scope.covers(sku, tuple(path)):
            raise StrategyRuleError(f"SKU {sku} is outside the strategy's product scope", field)
    elif not (scope.all or sku in scope.skus) and not scope.categories:
        raise StrategyRuleError(f"SKU {sku} is outside the strategy's product scope", field)


def _check_call(at: Any, seller: Any) -> None:
    if not _aware(at):
        raise ValueError("at must be a date-time with a time zone")
    if not isinstance(seller, str):
        raise ValueError("seller must be a party code")


# -- resolution -----------------------------------------------------------------

def choose_tier(strategy: Strategy, sku_code: str, quantity: int) -> Tier | None:
    """The tier of ``strategy`` that prices ``quantity`` of ``sku_code``: the
    SKU's own tier with the greatest ``min_qty <= quantity``, else the
    SKU-less one with the greatest ``min_qty <= quantity``, else None. Among
    duplicate tiers (an invalid strategy) the first listed is taken."""
    own: Tier | None = None
    generic: Tier | None = None
    for tier in strategy.tiers:
        if tier.min_qty > quantity:
            continue
        if tier.sku == sku_code:
            if own is None or tier.min_qty > own.min_qty:
                own = tier
        elif tier.sku is None:
            if generic is None or tier.min_qty > generic.min_qty:
                generic = tier
    return own if own is not None else generic


def tier_price(rule: str, tier: Tier, list_price_minor: int) -> int:
    """Unit price a tier gives: the fixed price, or the percentage of the list
    price rounded down to the minor unit (integer arithmetic only)."""
    if rule == FIXED:
        return tier.price_minor  # type: ignore[return-value]
    return list_price_minor * tier.percent_bp // BP_PER_UNIT  # type: ignore[operator]


def ineligibility(strategy: Strategy, buyer: BuyerFacts, sku: SkuLike, quantity: int,
                  at: datetime, *, seller: str) -> str | None:
    """The first reason (``INELIGIBLE_REASONS``) the strategy cannot price
    this line, None when it is eligible."""
    return _evaluate(strategy, buyer, sku, quantity, at, seller)[0]


def _evaluate(s: Strategy, buyer: BuyerFacts, sku: SkuLike, quantity: int, at: datetime,
              seller: str) -> tuple[str | None, int | None, Tier | None]:
    """(reason, product specificity, tier); reason None = eligible."""
    if s.status != "active":
        return "inactive", None, None
    if s.owner != seller:
        return "other_owner", None, None
    if at < s.valid_from:
        return "not_yet_valid", None, None
    if s.valid_to is not None and at >= s.valid_to:
        return "expired", None, None
    if not s.customer_scope.matches(buyer):
        return "customer_scope", None, None
    spec = s.product_scope.specificity(sku.code, tuple(sku.category_path))
    if spec is None:
        return "product_scope", None, None
    if s.currency != sku.currency:
        return "currency", None, None
    tier = choose_tier(s, sku.code, quantity)
    if tier is None:
        return "no_tier_for_quantity", None, None
    return None, spec, tier


@dataclass(frozen=True)
class _Eligible:
    strategy: Strategy
    tier: Tier
    price: int
    product_specificity: int
    customer_specificity: tuple[int, int]

    def criteria(self) -> tuple[Any, ...]:
        """Values in ``RANK_CRITERIA`` order (for ``decided_by``)."""
        s = self.strategy
        return (s.priority, self.product_specificity, self.customer_specificity,
                s.valid_from, self.price, s.code)


def _rank(eligible: Iterable[_Eligible]) -> list[_Eligible]:
    # lower is better
    ordered = sorted(eligible, key=lambda e: (e.price, e.strategy.code, e.strategy.version))
    ordered.sort(key=lambda e: (e.strategy.priority, e.product_specificity,  # higher is better
                                e.customer_specificity, e.strategy.valid_from), reverse=True)
    return ordered  # both sorts are stable, so this is the lexicographic order


def deciding_criterion(winner: tuple[Any, ...], runner_up: tuple[Any, ...]) -> str:
    """The first of ``RANK_CRITERIA`` on which two candidates' criteria differ."""
    for name, a, b in zip(RANK_CRITERIA, winner, runner_up):
        if a != b:
            return name
    return "code"


def resolve(strategies: Iterable[Strategy], buyer: BuyerFacts, sku: SkuLike, quantity: int,
            at: datetime, *, seller: str) -> Resolution:
    """The unit price of ``quantity`` of ``sku`` for ``buyer`` bought from
    ``seller`` at ``at``, with the explanation (module docstring: the rule).
    Raises ValueError only for a bad call: quantity not a whole number >= 1,
    ``at`` without a time zone."""
    if not _is_int(quantity) or quantity < 1:
        raise ValueError("quantity must be a whole number of at least 1")
    _check_call(at, seller)
    eligible: list[_Eligible] = []
    ineligible: list[Candidate] = []
    for s in strategies:
        reason, spec, tier = _evaluate(s, buyer, sku, quantity, at, seller)
        if reason is None:
            assert tier is not None and spec is not None
            eligible.append(_Eligible(s, tier, tier_price(s.rule, tier, sku.list_price_minor),
                                      spec, s.customer_scope.specificity()))
        else:
            ineligible.append(Candidate(s.code, s.version, False, reason))
    ranked = _rank(eligible)
    ineligible.sort(key=lambda c: (c.code, c.version, c.reason))
    candidates = tuple(
        Candidate(e.strategy.code, e.strategy.version, True, None, position, e.price, e.tier,
                  e.product_specificity, e.customer_specificity)
        for position, e in enumerate(ranked, start=1)) + tuple(ineligible)
    if not ranked:
        price = sku.list_price_minor
        return Resolution(sku.code, quantity, price, price * quantity, sku.currency, price,
                          SOURCE_LIST_PRICE, None, None, None, None, candidates)
    win = ranked[0]
    decided_by = (deciding_criterion(win.criteria(), ranked[1].criteria())
                  if len(ranked) > 1 else None)
    return Resolution(sku.code, quantity, win.price, win.price * quantity, sku.currency,
                      sku.list_price_minor, SOURCE_STRATEGY, win.strategy.code,
                      win.strategy.version, win.tier, decided_by, candidates)


# -- price list (quantity 1, many SKUs) --------------------------------------------

class _Entry:
    """A pre-filtered strategy in a price list index. ``static`` is the part
    of the rank key that does not depend on the SKU, ``order`` its position by
    code (the last tie-breaker, as a number so that higher is better)."""

    __slots__ = ("strategy", "rule", "static", "order", "own_tiers", "generic_tier")

    def __init__(self, strategy: Strategy, order: int):
        self.strategy = strategy
        self.rule = strategy.rule
        self.static = (strategy.priority, strategy.customer_scope.specificity(), strategy.valid_from)
        self.order = -order
        own: dict[str, Tier] = {}
        generic: Tier | None = None
        for tier in strategy.tiers:  # for quantity 1 only min_qty 1 tiers apply
            if tier.min_qty != 1:
                continue
            if tier.sku is None:
                if generic is None:
                    generic = tier
            elif tier.sku not in own:
                own[tier.sku] = tier
        self.own_tiers = own
        self.generic_tier = generic


class _Index:
    """The strategies of one currency, indexed for quantity-1 pricing:

    * ``own[sku]``: strategies with a quantity-1 tier naming that SKU (the
      SKU's own tier wins over a SKU-less one, so these are checked first);
    * ``by_sku[sku]`` / ``by_category[cat]`` / ``everything``: strategies with
      a SKU-less quantity-1 tier whose product scope names the SKU / the
      category / is "all", each list sorted by the static rank key, best
      first. Within one list the product specificity is the same, so only the
      leading group of equal static keys can hold the list's best.
    """

    def __init__(self, entries: list[_Entry]):
        self.own: dict[str, list[_Entry]] = {}
        self.by_sku: dict[str, list[_Entry]] = {}
        self.by_category: dict[str, list[_Entry]] = {}
        self.everything: list[_Entry] = []
        self._by_path: dict[tuple[str, ...], tuple[tuple[int, list[_Entry]], ...]] = {}
        for entry in entries:
            for code in entry.own_tiers:
                self.own.setdefault(code, []).append(entry)
            if entry.generic_tier is None:
                continue
            scope = entry.strategy.product_scope
            if scope.all:
                self.everything.append(entry)
            for code in scope.skus:
                self.by_sku.setdefault(code, []).append(entry)
            for code in scope.categories:
                self.by_category.setdefault(code, []).append(entry)
        for bucket in (self.everything, *self.by_sku.values(), *self.by_category.values()):
            bucket.sort(key=lambda e: (e.static, e.order), reverse=True)

    def _path_buckets(self, path: tuple[str, ...]) -> tuple[tuple[int, list[_Entry]], ...]:
        """(product specificity, list) for a category path: its categories
        deepest first, then "all"; cached, since SKUs share few paths."""
        found = self._by_path.get(path)
        if found is None:
            pairs = [(depth, self.by_category[path[depth - 1]])
                     for depth in range(len(path), 0, -1) if path[depth - 1] in self.by_category]
            if self.everything:
                pairs.append((ALL_SPECIFICITY, self.everything))
            found = self._by_path[path] = tuple(pairs)
        return found

    def best(self, sku: SkuLike) -> tuple[_Entry, Tier, int] | None:
        """The winning strategy for quantity 1 of ``sku``, its tier and price."""
        code = sku.code
        path = tuple(sku.category_path)
        list_price = sku.list_price_minor
        best_key: tuple[Any, ...] | None = None
        best: tuple[_Entry, Tier, int] | None = None
        for entry in self.own.get(code, ()):
            spec = entry.strategy.product_scope.specificity(code, path)
            if spec is None:  # a tier outside the scope (an invalid strategy) never applies
                continue
            tier = entry.own_tiers[code]
            price = (tier.price_minor if entry.rule == FIXED
                     else list_price * tier.percent_bp // BP_PER_UNIT)
            static = entry.static
            key = (static[0], spec, static[1], static[2], -price, entry.order)
            if best_key is None or key > best_key:
                best_key, best = key, (entry, tier, price)
        buckets = self._path_buckets(path)
        named = self.by_sku.get(code)
        if named:
            buckets = ((SKU_SPECIFICITY, named), *buckets)
        for spec, bucket in buckets:
            lead = None
            for entry in bucket:
                if code in entry.own_tiers:  # its own tier, checked above, wins
                    continue
                static = entry.static
                if lead is None:
                    lead = static
                    if best_key is not None and (static[0], spec) < best_key[:2]:
                        break  # this whole list ranks below the best so far
                elif static != lead:
                    break  # only the leading group of equal static keys can win
                tier = entry.generic_tier
                price = (tier.price_minor if entry.rule == FIXED
                     else list_price * tier.percent_bp // BP_PER_UNIT)
                key = (static[0], spec, static[1], static[2], -price, entry.order)
                if best_key is None or key > best_key:
                    best_key, best = key, (entry, tier, price)
        return best


def price_list(strategies: Iterable[Strategy], buyer: BuyerFacts, skus: Iterable[SkuLike],
               at: datetime, *, seller: str) -> list[PriceLine]:
    """One ``PriceLine`` per SKU (in the order given) for quantity 1: what
    ``resolve(strategies, buyer, sku, 1, at, seller=seller)`` gives, without
    the explanation."""
    _check_call(at, seller)
    kept = [s for s in strategies
            if s.status == "active" and s.owner == seller and s.valid_from <= at
            and (s.valid_to is None or at < s.valid_to) and s.customer_scope.matches(buyer)]
    kept.sort(key=lambda s: (s.code, s.version))
    entries = [_Entry(s, order) for order, s in enumerate(kept)]
    indexes: dict[str, _Index] = {}
    lines: list[PriceLine] = []
    append = lines.append
    for sku in skus:
        currency = sku.currency
        index = indexes.get(currency)
        if index is None:
            index = indexes[currency] = _Index([e for e in entries if e.strategy.currency == currency])
        found = index.best(sku)
        list_price = sku.list_price_minor
        if found is None:
            append(PriceLine(sku.code, list_price, currency, SOURCE_LIST_PRICE, None, None, list_price))
        else:
            s = found[0].strategy
            append(PriceLine(sku.code, found[2], currency, SOURCE_STRATEGY, s.code, s.version,
                             list_price))
    return lines
