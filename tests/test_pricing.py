"""Price resolution (channel_api/pricing.py): the written rule, by named
cases and by property. Pure: no database."""
from __future__ import annotations

import functools
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channel_api.pricing import (
    INELIGIBLE_REASONS,
    RANK_CRITERIA,
    Candidate,
    PricedSku,
    PriceLine,
    Strategy,
    StrategyRuleError,
    Tier,
    check_tier,
    choose_tier,
    ineligibility,
    price_list,
    resolve,
    validate_strategy,
)
from channel_api.scopes import BuyerFacts, CustomerScope, ProductScope

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)
SELLER = "BRAND"

CHIPS = PricedSku("CHIP-1", 1000, "CNY", ("food", "snacks", "chips"))
BUYER = BuyerFacts("STORE-1", region_path=("CN", "CN-ZJ", "CN-ZJ-HZ"),
                   customer_type_path=("retail", "supermarket"), grade="A",
                   groups=frozenset({"G1"}), tags=frozenset({"vip"}))


def strat(code: str, *tiers: Tier, rule: str = "percent", priority: int = 0,
          owner: str = SELLER, currency: str = "CNY", status: str = "active",
          product: ProductScope = ProductScope.everything(),
          customer: CustomerScope = CustomerScope(),
          valid_from: datetime = T0 - 10 * DAY, valid_to: datetime | None = None,
          version: int = 1) -> Strategy:
    if not tiers:
        tiers = (Tier(None, 1, percent_bp=9000),) if rule == "percent" else (Tier("CHIP-1", 1, 800),)
    return Strategy(code, owner, priority, rule, currency, product, customer,
                    valid_from, valid_to, status, tuple(tiers), version)


def pct(bp: int, sku: str | None = None, min_qty: int = 1) -> Tier:
    return Tier(sku, min_qty, percent_bp=bp)


def fixed(price: int, sku: str = "CHIP-1", min_qty: int = 1) -> Tier:
    return Tier(sku, min_qty, price_minor=price)


def cats(*codes: str) -> ProductScope:
    return ProductScope(categories=frozenset(codes))


def skus(*codes: str) -> ProductScope:
    return ProductScope(skus=frozenset(codes))


# -- ranking: each criterion decides on its own -------------------------------------

RANKING_CASES = [
    # name, strategies, winner, unit price, decided_by
    ("priority beats everything after it",
     [strat("HI", pct(9500), priority=2),
      strat("LO", fixed(100), rule="fixed", priority=1, product=skus("CHIP-1"),
            customer=CustomerScope(parties=frozenset({"STORE-1"})), valid_from=T0 - DAY)],
     "HI", 950, "priority"),
    ("named SKU beats a category",
     [strat("CAT", pct(5000), product=cats("chips")),
      strat("SKU", pct(9000), product=skus("CHIP-1"))],
     "SKU", 900, "product_specificity"),
    ("deeper category beats a shallower one",
     [strat("FOOD", pct(5000), product=cats("food")),
      strat("SNACKS", pct(9000), product=cats("snacks"))],
     "SNACKS", 900, "product_specificity"),
    ("a category beats all",
     [strat("ALL", pct(5000)), strat("FOOD", pct(9000), product=cats("food"))],
     "FOOD", 900, "product_specificity"),
    ("a scope naming the buyer beats more restricted dimensions",
     [strat("REGION", pct(5000), customer=CustomerScope(regions=frozenset({"CN-ZJ"}),
                                                        grades=frozenset({"A"}),
                                                        tags=frozenset({"vip"}))),
      strat("NAMED", pct(9000), customer=CustomerScope(parties=frozenset({"STORE-1"})))],
     "NAMED", 900, "customer_specificity"),
    ("more restricted dimensions beat fewer",
     [strat("ONE", pct(5000), customer=CustomerScope(regions=frozenset({"CN"}))),
      strat("TWO", pct(9000), customer=CustomerScope(regions=frozenset({"CN"}),
                                                     groups=frozenset({"G1"})))],
     "TWO", 900, "customer_specificity"),
    ("later valid_from beats earlier",
     [strat("OLD", pct(5000), valid_from=T0 - 5 * DAY),
      strat("NEW", pct(9000), valid_from=T0 - DAY)],
     "NEW", 900, "valid_from"),
    ("lower price beats higher",
     [strat("A-DEAR", pct(9000)), strat("B-CHEAP", pct(8000))],
     "B-CHEAP", 800, "price"),
    ("code ascending decides the rest",
     [strat("B", pct(9000)), strat("A", pct(9000))],
     "A", 900, "code"),
    ("fixed and percent rank by price alike",
     [strat("PCT", pct(8500)), strat("FIX", fixed(849), rule="fixed")],
     "FIX", 849, "price"),
    ("a single eligible strategy has no runner-up",
     [strat("ONLY", pct(9000)), strat("GONE", pct(1000), status="inactive")],
     "ONLY", 900, None),
]


@pytest.mark.parametrize("strategies, winner, price, decided_by",
                         [case[1:] for case in RANKING_CASES],
                         ids=[case[0] for case in RANKING_CASES])
def test_ranking(strategies, winner, price, decided_by):
    for order in (strategies, strategies[::-1]):
        result = resolve(order, BUYER, CHIPS, 1, T0, seller=SELLER)
        assert (result.strategy_code, result.unit_price_minor, result.decided_by) == (
            winner, price, decided_by)
        assert result.source == "strategy"
        assert result.candidates[0].code == winner and result.candidates[0].rank == 1
        line, = price_list(order, BUYER, [CHIPS], T0, seller=SELLER)
        assert (line.strategy_code, line.unit_price_minor) == (winner, price)


# -- eligibility: each reason ----------------------------------------------------------

INELIGIBLE_CASES = [
    ("inactive", strat("X", status="inactive")),
    ("other_owner", strat("X", owner="DIST-9")),
    ("not_yet_valid", strat("X", valid_from=T0 + timedelta(seconds=1))),
    ("expired", strat("X", valid_from=T0 - DAY, valid_to=T0)),
    ("customer_scope", strat("X", customer=CustomerScope(grades=frozenset({"B"})))),
    ("customer_scope", strat("X", customer=CustomerScope(parties=frozenset({"STORE-2"})))),
    ("product_scope", strat("X", product=cats("drinks"))),
    ("product_scope", strat("X", product=skus("CHIP-2"))),
    ("currency", strat("X", currency="USD")),
    ("no_tier_for_quantity", strat("X", pct(9000, min_qty=2))),
    ("no_tier_for_quantity", strat("X", fixed(500, sku="CHIP-2"), rule="fixed")),
]


@pytest.mark.parametrize("reason, strategy", INELIGIBLE_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(INELIGIBLE_CASES)])
def test_each_ineligibility_reason_falls_back_to_list_price(reason, strategy):
    result = resolve([strategy], BUYER, CHIPS, 1, T0, seller=SELLER)
    assert result.source == "list_price"
    assert (result.unit_price_minor, result.strategy_code, result.strategy_version,
            result.tier, result.decided_by) == (1000, None, None, None, None)
    assert result.candidates == (Candidate("X", 1, False, reason),)
    assert ineligibility(strategy, BUYER, CHIPS, 1, T0, seller=SELLER) == reason
    assert price_list([strategy], BUYER, [CHIPS], T0, seller=SELLER) == [
        PriceLine("CHIP-1", 1000, "CNY", "list_price", None, None, 1000)]


def test_every_reason_has_a_case():
    assert {c[0] for c in INELIGIBLE_CASES} == set(INELIGIBLE_REASONS)


def test_validity_window_is_half_open():
    s = strat("W", valid_from=T0, valid_to=T0 + DAY)
    assert ineligibility(s, BUYER, CHIPS, 1, T0, seller=SELLER) is None
    assert ineligibility(s, BUYER, CHIPS, 1, T0 + DAY - timedelta(microseconds=1), seller=SELLER) is None
    assert ineligibility(s, BUYER, CHIPS, 1, T0 + DAY, seller=SELLER) == "expired"
    # the same moment in another zone is the same moment
    assert ineligibility(s, BUYER, CHIPS, 1, (T0 + DAY).astimezone(timezone(timedelta(hours=8))),
                         seller=SELLER) == "expired"


def test_no_strategies_gives_the_list_price():
    result = resolve([], BUYER, CHIPS, 3, T0, seller=SELLER)
    assert (result.source, result.unit_price_minor, result.line_total_minor, result.candidates) == (
        "list_price", 1000, 3000, ())


# -- tiers and prices ------------------------------------------------------------------

VOLUME = strat("VOL", fixed(900), fixed(800, min_qty=10), fixed(700, min_qty=100), rule="fixed")


@pytest.mark.parametrize("quantity, price", [(1, 900), (9, 900), (10, 800), (11, 800),
                                             (99, 800), (100, 700), (10**6, 700)])
def test_quantity_tiers_apply_from_min_qty(quantity, price):
    result = resolve([VOLUME], BUYER, CHIPS, quantity, T0, seller=SELLER)
    assert result.unit_price_minor == price
    assert result.line_total_minor == price * quantity
    assert result.tier.min_qty <= quantity


@pytest.mark.parametrize("list_price, bp, price", [
    (999, 3333, 332),        # 332.9667 rounds down
    (1, 9999, 0),            # 0.9999 rounds down to nothing
    (1000, 10000, 1000),
    (999, 100000, 9990),     # 1000%
    (0, 9000, 0),
    (12345, 1, 1),           # 1.2345 -> 1
    (2**62, 9999, 2**62 * 9999 // 10000),  # integer arithmetic only
])
def test_percent_rounds_down_to_the_fen(list_price, bp, price):
    sku = replace(CHIPS, list_price_minor=list_price)
    result = resolve([strat("P", pct(bp))], BUYER, sku, 1, T0, seller=SELLER)
    assert result.unit_price_minor == price and type(price) is int
    assert result.list_price_minor == list_price


def test_a_skus_own_tier_beats_a_skuless_one_even_with_a_lower_min_qty():
    s = strat("MIX", pct(9000), pct(8000, min_qty=10), pct(9500, sku="CHIP-1"),
              pct(8500, sku="CHIP-1", min_qty=50))
    prices = {q: resolve([s], BUYER, CHIPS, q, T0, seller=SELLER).unit_price_minor
              for q in (1, 10, 49, 50)}
    assert prices == {1: 950, 10: 950, 49: 950, 50: 850}
    other = replace(CHIPS, code="CHIP-2")
    assert resolve([s], BUYER, other, 10, T0, seller=SELLER).unit_price_minor == 800


def test_skuless_tier_applies_while_the_skus_own_tiers_start_higher():
    s = strat("MIX", pct(9000), pct(8000, sku="CHIP-1", min_qty=5))
    assert choose_tier(s, "CHIP-1", 4) == pct(9000)
    assert choose_tier(s, "CHIP-1", 5) == pct(8000, sku="CHIP-1", min_qty=5)
    assert resolve([s], BUYER, CHIPS, 4, T0, seller=SELLER).unit_price_minor == 900
    assert price_list([s], BUYER, [CHIPS], T0, seller=SELLER)[0].unit_price_minor == 900


def test_tiers_decide_eligibility_per_quantity():
    cheap_in_bulk = strat("BULK", pct(5000, min_qty=10), priority=1)
    everyday = strat("EVERY", pct(9000))
    small = resolve([cheap_in_bulk, everyday], BUYER, CHIPS, 9, T0, seller=SELLER)
    assert small.strategy_code == "EVERY"
    assert small.candidates[1] == Candidate("BULK", 1, False, "no_tier_for_quantity")
    big = resolve([cheap_in_bulk, everyday], BUYER, CHIPS, 10, T0, seller=SELLER)
    assert (big.strategy_code, big.unit_price_minor, big.decided_by) == ("BULK", 500, "priority")


def test_currency_mismatch_is_ineligible_but_the_other_currency_still_prices():
    usd = strat("USD", pct(5000), currency="USD")
    cny = strat("CNY", pct(9000))
    result = resolve([usd, cny], BUYER, CHIPS, 1, T0, seller=SELLER)
    assert result.strategy_code == "CNY" and result.currency == "CNY"
    usd_sku = replace(CHIPS, code="CHIP-US", currency="USD")
    lines = price_list([usd, cny], BUYER, [CHIPS, usd_sku], T0, seller=SELLER)
    assert [(l.sku, l.strategy_code, l.unit_price_minor, l.currency) for l in lines] == [
        ("CHIP-1", "CNY", 900, "CNY"), ("CHIP-US", "USD", 500, "USD")]


def test_the_explanation_lists_winner_losers_then_ineligible_by_code():
    strategies = [strat("Z-OFF", status="inactive"), strat("C", pct(9000)),
                  strat("A-OTHER", owner="DIST"), strat("B", pct(8000), version=4),
                  strat("D", pct(9500), priority=-1)]
    result = resolve(strategies, BUYER, CHIPS, 2, T0, seller=SELLER)
    assert [(c.code, c.eligible, c.rank, c.reason, c.unit_price_minor) for c in result.candidates] == [
        ("B", True, 1, None, 800), ("C", True, 2, None, 900), ("D", True, 3, None, 950),
        ("A-OTHER", False, None, "other_owner", None), ("Z-OFF", False, None, "inactive", None)]
    assert (result.strategy_version, result.decided_by, result.line_total_minor) == (4, "price", 1600)
    assert result.candidates[0].product_specificity == 0
    assert result.candidates[0].customer_specificity == (0, 0)


def test_bad_calls_raise():
    for quantity in (0, -1, 1.0, True, "1"):
        with pytest.raises(ValueError):
            resolve([], BUYER, CHIPS, quantity, T0, seller=SELLER)
    with pytest.raises(ValueError):
        resolve([], BUYER, CHIPS, 1, T0.replace(tzinfo=None), seller=SELLER)
    with pytest.raises(ValueError):
        price_list([], BUYER, [CHIPS], T0.replace(tzinfo=None), seller=SELLER)


# -- validation ------------------------------------------------------------------------

PATHS = {"CHIP-1": ("food", "snacks", "chips"), "COLA-1": ("drinks", "soda")}

INVALID_CASES = [
    # name, strategy, field
    ("rule", strat("X", rule="bogus"), "rule"),
    ("status", strat("X", status="paused"), "status"),
    ("empty code", strat(""), "code"),
    ("currency", strat("X", currency="cny"), "currency"),
    ("priority float", replace(strat("X"), priority=1.0), "priority"),
    ("priority bool", replace(strat("X"), priority=True), "priority"),
    ("no tiers", replace(strat("X"), tiers=()), "tiers"),
    ("tiers not a tuple", replace(strat("X"), tiers=[pct(9000)]), "tiers"),
    ("fixed without sku", strat("X", Tier(None, 1, 500), rule="fixed"), "tiers[0].sku"),
    ("fixed without price", strat("X", Tier("CHIP-1", 1), rule="fixed"), "tiers[0].price_minor"),
    ("fixed price float", strat("X", Tier("CHIP-1", 1, 5.0), rule="fixed"), "tiers[0].price_minor"),
    ("fixed price negative", strat("X", fixed(-1), rule="fixed"), "tiers[0].price_minor"),
    ("fixed with percent", strat("X", Tier("CHIP-1", 1, 500, 9000), rule="fixed"), "tiers[0].percent_bp"),
    ("percent without bp", strat("X", Tier(None, 1)), "tiers[0].percent_bp"),
    ("percent zero", strat("X", pct(0)), "tiers[0].percent_bp"),
    ("percent above 1000%", strat("X", pct(100001)), "tiers[0].percent_bp"),
    ("percent float", strat("X", Tier(None, 1, percent_bp=9000.0)), "tiers[0].percent_bp"),
    ("percent with price", strat("X", Tier(None, 1, 500, 9000)), "tiers[0].price_minor"),
    ("min_qty zero", strat("X", pct(9000), pct(8000, min_qty=0)), "tiers[1].min_qty"),
    ("min_qty bool", strat("X", Tier(None, True, percent_bp=9000)), "tiers[0].min_qty"),
    ("min_qty float", strat("X", Tier(None, 2.0, percent_bp=9000)), "tiers[0].min_qty"),
    ("duplicate tier", strat("X", pct(9000), pct(8000)), "tiers[1]"),
    ("duplicate sku tier", strat("X", fixed(5), fixed(6), rule="fixed"), "tiers[1]"),
    ("valid_to before from", strat("X", valid_from=T0, valid_to=T0), "valid_to"),
    ("naive valid_from", strat("X", valid_from=datetime(2025, 1, 1)), "valid_from"),
    ("empty product scope", strat("X", product=ProductScope()), "product_scope"),
    ("tier sku outside a sku scope", strat("X", fixed(5, "COLA-1"), rule="fixed",
                                           product=skus("CHIP-1")), "tiers[0].sku"),
    ("version zero", strat("X", version=0), "version"),
]


@pytest.mark.parametrize("strategy, field", [c[1:] for c in INVALID_CASES],
                         ids=[c[0] for c in INVALID_CASES])
def test_validation_names_the_field(strategy, field):
    with pytest.raises(StrategyRuleError) as caught:
        validate_strategy(strategy, category_path_of=PATHS.get)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


def test_tier_skus_outside_a_category_scope_need_the_lookup():
    s = strat("X", fixed(5, "COLA-1"), rule="fixed", product=cats("snacks"))
    assert validate_strategy(s) is s  # only a lookup can tell; left to the caller
    with pytest.raises(StrategyRuleError, match="outside") as caught:
        validate_strategy(s, category_path_of=PATHS.get)
    assert caught.value.field == "tiers[0].sku"
    with pytest.raises(StrategyRuleError, match="unknown SKU"):
        validate_strategy(strat("X", fixed(5, "NOPE"), rule="fixed"), category_path_of=PATHS.get)


def test_valid_strategies_pass():
    for s in (VOLUME, strat("P", pct(9000), pct(100000, min_qty=5), pct(1, sku="CHIP-1")),
              strat("F", fixed(0), rule="fixed", product=cats("snacks"), valid_to=T0 + DAY),
              strat("S", pct(9000, sku="CHIP-1"), product=skus("CHIP-1"), status="inactive")):
        assert validate_strategy(s, category_path_of=PATHS.get) is s
    assert check_tier("percent", pct(9000)) == pct(9000)


# -- properties ------------------------------------------------------------------------

CATEGORY_PATHS = [("A",), ("A", "A1"), ("A", "A1", "A1x"), ("A", "A2"), ("B",), ("B", "B1")]
CATEGORIES = sorted({c for path in CATEGORY_PATHS for c in path})
SKU_CODES = [f"S{i}" for i in range(5)]
BUYERS = ["B1", "B2", "B3"]
REGION_PATHS = [("CN",), ("CN", "ZJ"), ("CN", "ZJ", "HZ"), ("CN", "GD")]
MOMENT = st.integers(-1 * 24, 3 * 24).map(lambda h: T0 + timedelta(hours=h))


@st.composite
def skus_(draw):
    return [PricedSku(code, draw(st.integers(0, 5000)), draw(st.sampled_from(["CNY"] * 5 + ["USD"])),
                      draw(st.sampled_from(CATEGORY_PATHS)))
            for code in SKU_CODES]


@st.composite
def buyers(draw):
    return BuyerFacts(draw(st.sampled_from(BUYERS)), region_path=draw(st.sampled_from(REGION_PATHS)),
                      customer_type_path=draw(st.sampled_from([(), ("retail",), ("retail", "mini")])),
                      grade=draw(st.sampled_from([None, "A", "B"])),
                      groups=frozenset(draw(st.sets(st.sampled_from(["G1", "G2"])))),
                      tags=frozenset(draw(st.sets(st.sampled_from(["vip", "new"])))))


CUSTOMER_VALUES = {"parties": BUYERS, "regions": ["CN", "ZJ", "HZ", "GD"],
                   "customer_types": ["retail", "mini"], "grades": ["A", "B"],
                   "groups": ["G1", "G2"], "tags": ["vip", "new"]}


@st.composite
def customer_scopes(draw):
    """Mostly open or one dimension, so that many strategies stay eligible."""
    dims = draw(st.lists(st.sampled_from(sorted(CUSTOMER_VALUES)), unique=True,
                         max_size=draw(st.sampled_from([0, 0, 0, 1, 1, 2]))))
    return CustomerScope(**{dim: draw(st.frozensets(st.sampled_from(CUSTOMER_VALUES[dim]),
                                                    min_size=1, max_size=2)) for dim in dims})


@st.composite
def strategy_lists(draw, sku_paths):
    codes = draw(st.lists(st.text("ABCDEF", min_size=1, max_size=3), unique=True, min_size=2, max_size=10))
    result = []
    for code in codes:
        rule = draw(st.sampled_from(["fixed", "percent"]))
        kind = draw(st.sampled_from(["all", "all", "categories", "categories", "skus"]))
        if kind == "all":
            product = ProductScope.everything()
        elif kind == "categories":
            product = ProductScope(categories=draw(st.frozensets(st.sampled_from(CATEGORIES), min_size=1,
                                                                 max_size=2)))
        else:
            product = ProductScope(skus=draw(st.frozensets(st.sampled_from(SKU_CODES), min_size=1,
                                                           max_size=4)))
        covered = [c for c in SKU_CODES if product.covers(c, sku_paths[c])]
        tier_skus = st.sampled_from(covered) if covered else st.nothing()
        if rule == "fixed":
            keys = draw(st.lists(st.tuples(tier_skus, st.sampled_from([1, 1, 2, 5, 10])),
                                 min_size=1, max_size=12, unique=True)) if covered else []
            if not keys:  # nothing to price: let it cover everything
                product = ProductScope.everything()
                keys = [(draw(st.sampled_from(SKU_CODES)), 1)]
            tiers = tuple(Tier(s, q, price_minor=draw(st.one_of(st.sampled_from([0, 500, 900]),
                                                                      st.integers(0, 6000)))) for s, q in keys)
        else:
            sku_or_none = st.one_of(st.none(), st.none(), tier_skus) if covered else st.none()
            keys = draw(st.lists(st.tuples(sku_or_none, st.sampled_from([1, 1, 2, 5, 10])),
                                 min_size=1, max_size=6, unique=True))
            tiers = tuple(Tier(s, q, percent_bp=draw(st.sampled_from([1, 3333, 5000, 9000, 9999,
                                                                      10000, 12000])))
                          for s, q in keys)
        valid_from = T0 + timedelta(days=draw(st.sampled_from([-6, -5, -4, -4, -3, -2, -1, 0, 1, 2])))
        length = draw(st.sampled_from([None, None, None, 2, 5, 8]))
        result.append(Strategy(
            code, draw(st.sampled_from([SELLER] * 5 + ["DIST"])), draw(st.sampled_from([0, 0, 0, 1, 2])), rule,
            draw(st.sampled_from(["CNY"] * 6 + ["USD"])), product, draw(customer_scopes()),
            valid_from, None if length is None else valid_from + timedelta(days=length),
            draw(st.sampled_from(["active"] * 6 + ["inactive"])), tiers,
            draw(st.integers(1, 3))))
    return result


@st.composite
def worlds(draw):
    sku_list = draw(skus_())
    paths = {s.code: s.category_path for s in sku_list}
    return (draw(strategy_lists(paths)), draw(buyers()), sku_list, draw(MOMENT),
            draw(st.integers(1, 12)))


def reference(strategies, buyer, sku, quantity, at):
    """The rule as written, checked independently: (code, unit price) or None."""
    def applies(s):
        own = [t for t in s.tiers if t.sku == sku.code and t.min_qty <= quantity]
        generic = [t for t in s.tiers if t.sku is None and t.min_qty <= quantity]
        pool = own or generic
        return max(pool, key=lambda t: t.min_qty) if pool else None

    found = []
    for s in strategies:
        in_window = s.valid_from <= at and (s.valid_to is None or at < s.valid_to)
        spec = s.product_scope.specificity(sku.code, sku.category_path)
        tier = applies(s)
        if (s.status == "active" and s.owner == SELLER and in_window and s.customer_scope.matches(buyer)
                and spec is not None and s.currency == sku.currency and tier is not None):
            price = tier.price_minor if s.rule == "fixed" else sku.list_price_minor * tier.percent_bp // 10000
            found.append((s, spec, price))

    def better(a, b):
        (sa, pa, xa), (sb, pb, xb) = a, b
        for va, vb in ((sa.priority, sb.priority), (pa, pb),
                       (sa.customer_scope.specificity(), sb.customer_scope.specificity()),
                       (sa.valid_from, sb.valid_from), (-xa, -xb)):
            if va != vb:
                return -1 if va > vb else 1
        return -1 if sa.code < sb.code else 1

    if not found:
        return None
    s, _, price = sorted(found, key=functools.cmp_to_key(better))[0]
    return s.code, price


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_resolve_follows_the_written_rule(world):
    strategies, buyer, sku_list, at, quantity = world
    for s in strategies:
        validate_strategy(s, category_path_of={k.code: k.category_path for k in sku_list}.get)
    for sku in sku_list:
        result = resolve(strategies, buyer, sku, quantity, at, seller=SELLER)
        expected = reference(strategies, buyer, sku, quantity, at)
        got = None if result.source == "list_price" else (result.strategy_code, result.unit_price_minor)
        assert got == expected
        # prices are integers, never negative; the line total is unit x quantity
        for amount in (result.unit_price_minor, result.line_total_minor, result.list_price_minor):
            assert type(amount) is int and amount >= 0
        assert result.line_total_minor == result.unit_price_minor * quantity
        assert len(result.candidates) == len(strategies)
        eligible = [c for c in result.candidates if c.eligible]
        # list price fallback iff nothing is eligible
        assert (result.source == "list_price") == (not eligible)
        assert [c.rank for c in eligible] == list(range(1, len(eligible) + 1))
        assert all(c.reason in INELIGIBLE_REASONS for c in result.candidates if not c.eligible)
        assert result.decided_by in (None, *RANK_CRITERIA)
        assert (result.decided_by is None) == (len(eligible) < 2)
        if result.source == "list_price":
            assert result.unit_price_minor == sku.list_price_minor
            continue
        # the winner is eligible
        winner = next(s for s in strategies if s.code == result.strategy_code)
        assert winner.status == "active" and winner.owner == SELLER
        assert winner.valid_from <= at and (winner.valid_to is None or at < winner.valid_to)
        assert winner.customer_scope.matches(buyer)
        assert winner.product_scope.covers(sku.code, sku.category_path)
        assert winner.currency == sku.currency
        assert result.tier in winner.tiers and result.tier.min_qty <= quantity
        assert result.tier.sku in (None, sku.code)
        assert result.candidates[0].code == winner.code
        assert result.strategy_version == winner.version


@settings(max_examples=200, deadline=None)
@given(worlds(), st.randoms(use_true_random=False))
def test_order_of_the_strategies_does_not_matter(world, rnd):
    strategies, buyer, sku_list, at, quantity = world
    shuffled = list(strategies)
    rnd.shuffle(shuffled)
    for sku in sku_list:
        assert resolve(shuffled, buyer, sku, quantity, at, seller=SELLER) == resolve(
            strategies, buyer, sku, quantity, at, seller=SELLER)
    assert price_list(shuffled, buyer, sku_list, at, seller=SELLER) == price_list(
        strategies, buyer, sku_list, at, seller=SELLER)


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_price_list_agrees_with_resolve(world):
    strategies, buyer, sku_list, at, _ = world
    lines = price_list(iter(strategies), buyer, iter(sku_list), at, seller=SELLER)
    assert [line.sku for line in lines] == [s.code for s in sku_list]
    for line, sku in zip(lines, sku_list):
        r = resolve(strategies, buyer, sku, 1, at, seller=SELLER)
        assert line == PriceLine(sku.code, r.unit_price_minor, r.currency, r.source,
                                 r.strategy_code, r.strategy_version, r.list_price_minor)
        assert type(line.unit_price_minor) is int and line.unit_price_minor >= 0
