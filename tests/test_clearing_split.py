"""Clearing split (clearing/split.py): the remainder rule by worked examples
and by property, the leg checks, and unwind. Pure: no database."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from clearing.split import (
    BP_PER_UNIT,
    IMMEDIATE,
    ON_DELIVERY,
    Leg,
    RuleError,
    Share,
    SplitError,
    Timing,
    is_recipient,
    split,
    unwind,
    validate_legs,
)

T1 = Timing("t_plus", 1)
T7_PAID = Timing("t_plus", 7, "payment")


def rest(recipient: str = "seller", timing: Timing = ON_DELIVERY) -> Leg:
    return Leg(recipient, "remainder", 0, timing)


def pct(recipient: str, bp: int, timing: Timing = IMMEDIATE) -> Leg:
    return Leg(recipient, "percent", bp, timing)


def amounts(shares: list[Share]) -> list[int]:
    return [s.amount_minor for s in shares]


# -- worked examples ----------------------------------------------------------------

F2B2B_LEGS = (rest("seller", T1), pct("brand", 750), pct("platform", 50))


def test_f2b2b_store_pays_1000_yuan():
    """The store pays 1,000.00: the distributor (seller) keeps 92% as the
    remainder, the brand gets 7.5%, the platform 0.5%."""
    shares = split(100_000, F2B2B_LEGS, order_total_minor=100_000, units=10)
    assert shares == [
        Share("seller", 92_000, T1, 0, "remainder"),
        Share("brand", 7_500, IMMEDIATE, 1, "percent"),
        Share("platform", 500, IMMEDIATE, 2, "percent"),
    ]


def test_rounding_goes_to_the_remainder_leg():
    # 7.5% of 999.99 is 74.99925 and 0.5% is 4.99995: both round down.
    shares = split(99_999, F2B2B_LEGS, order_total_minor=99_999, units=1)
    assert amounts(shares) == [99_999 - 7_499 - 499, 7_499, 499]
    assert sum(amounts(shares)) == 99_999


def test_per_unit_and_per_order_legs():
    """12 cases at 0.80 a case to the brand, a 5.00 handling fee to the
    platform per order, 1% to the platform, the rest to the seller."""
    legs = [Leg("brand", "per_unit", 80, IMMEDIATE),
            Leg("platform", "per_order", 500, IMMEDIATE),
            pct("platform", 100, T1),
            rest()]
    shares = split(30_000, legs, order_total_minor=30_000, units=12)
    assert amounts(shares) == [960, 500, 300, 30_000 - 960 - 500 - 300]
    assert [s.leg_index for s in shares] == [0, 1, 2, 3]


def test_partial_cash_prorates_fixed_legs_not_percents():
    """A credit repayment of 1/3 of a 300.00 order: each fixed leg takes a
    third of its amount (rounded down), the percent leg its percent of the
    cash."""
    legs = [Leg("brand", "per_unit", 100, IMMEDIATE),   # 7 units: 7.00 for the order
            Leg("platform", "per_order", 1_000, IMMEDIATE),  # 10.00 for the order
            pct("party:AGENT-1", 200),
            rest()]
    shares = split(10_000, legs, order_total_minor=30_000, units=7)
    # 700 / 3 = 233.33 -> 233; 1000 / 3 = 333.33 -> 333; 2% of 10000 = 200
    assert amounts(shares) == [233, 333, 200, 10_000 - 233 - 333 - 200]


def test_clearing_in_parts_never_pays_a_fixed_leg_more_than_its_amount():
    legs = [Leg("platform", "per_order", 1_000, IMMEDIATE), rest()]
    parts = [split(cash, legs, order_total_minor=30_000, units=1)[0].amount_minor
             for cash in (10_000, 10_000, 9_999)]
    assert parts == [333, 333, 333]
    assert sum(parts) <= 1_000


def test_zero_cash_keeps_every_leg_with_zero():
    legs = [Leg("brand", "per_order", 500, IMMEDIATE), pct("platform", 50), rest()]
    shares = split(0, legs, order_total_minor=10_000, units=1)
    assert amounts(shares) == [0, 0, 0]
    assert [s.recipient for s in shares] == ["brand", "platform", "seller"]


def test_fixed_legs_larger_than_the_cash_name_the_shortfall():
    legs = [Leg("brand", "per_unit", 600, IMMEDIATE), pct("platform", 1000), rest()]
    with pytest.raises(SplitError, match="short by 300") as caught:
        split(5_000, legs, order_total_minor=5_000, units=8)  # 4800 + 500 > 5000
    assert caught.value.shortfall_minor == 300


def test_cash_above_the_order_total_is_refused():
    with pytest.raises(SplitError, match="exceeds the order total"):
        split(10_001, F2B2B_LEGS, order_total_minor=10_000, units=1)


@pytest.mark.parametrize("kwargs", [
    dict(cash_minor=-1, order_total_minor=10, units=1),
    dict(cash_minor=1, order_total_minor=10, units=-1),
    dict(cash_minor=True, order_total_minor=10, units=1),
    dict(cash_minor=1.0, order_total_minor=10, units=1),
    dict(cash_minor=1, order_total_minor=-5, units=1),
])
def test_bad_arguments_are_refused(kwargs):
    cash = kwargs.pop("cash_minor")
    with pytest.raises(ValueError):
        split(cash, F2B2B_LEGS, **kwargs)


def test_split_refuses_invalid_legs():
    with pytest.raises(RuleError):
        split(100, [pct("brand", 100)], order_total_minor=100, units=1)


# -- leg checks -----------------------------------------------------------------------

@pytest.mark.parametrize("legs, field, message", [
    ([], "legs", "exactly one remainder"),
    ([pct("brand", 100)], "legs", "exactly one remainder"),
    ([rest("seller"), rest("brand")], "legs[1].basis", "second remainder"),
    ([rest(), pct("brand", 9_000), pct("platform", 1_000)], "legs", "10000 basis points"),
    ([rest(), pct("brand", 10_000)], "legs", "below 10000"),
    ([rest(), pct("brand", 10_001)], "legs[1].value", "0 to 10000"),
    ([rest(), pct("brand", -1)], "legs[1].value", "0 to 10000"),
    ([rest(), Leg("brand", "per_unit", -1, IMMEDIATE)], "legs[1].value", "fixed amount"),
    ([rest(), Leg("brand", "per_order", -5, IMMEDIATE)], "legs[1].value", "fixed amount"),
    ([rest(), pct("brand", True)], "legs[1].value", "whole number"),
    ([rest(), Leg("brand", "per_order", 2.5, IMMEDIATE)], "legs[1].value", "whole number"),
    ([rest(), Leg("brand", "per_order", "5", IMMEDIATE)], "legs[1].value", "whole number"),
    ([Leg("seller", "remainder", 1, IMMEDIATE)], "legs[0].value", "value 0"),
    ([Leg("seller", "remainder", False, IMMEDIATE)], "legs[0].value", "whole number"),
    ([rest(), Leg("brand", "share", 5, IMMEDIATE)], "legs[1].basis", "basis"),
    ([rest(), pct("distributor", 5)], "legs[1].recipient", "recipient"),
    ([rest(), pct("party:", 5)], "legs[1].recipient", "recipient"),
    ([rest(), pct("party:A B", 5)], "legs[1].recipient", "recipient"),
    ([rest(), pct("party:" + "x" * 65, 5)], "legs[1].recipient", "recipient"),
    ([rest(), pct("brand", 5), pct("brand", 7)], "legs[2].recipient", "same recipient and timing"),
    ([rest("seller", T1), pct("seller", 5, T1)], "legs[1].recipient", "same recipient"),
    ([rest(), pct("brand", 5, Timing("t_plus", 0))], "legs[1].timing.days", "at least 1"),
    ([rest(), pct("brand", 5, Timing("t_plus", 366))], "legs[1].timing.days", "0 to 365"),
    ([rest(), pct("brand", 5, Timing("t_plus", -1))], "legs[1].timing.days", "0 to 365"),
    ([rest(), pct("brand", 5, Timing("t_plus", True))], "legs[1].timing.days", "0 to 365"),
    ([rest(), pct("brand", 5, Timing("immediate", 3))], "legs[1].timing.days", "only a t_plus"),
    ([rest(), pct("brand", 5, Timing("immediate", 0, "payment"))], "legs[1].timing.anchor",
     "only a t_plus"),
    ([rest(), pct("brand", 5, Timing("t_plus", 3, "shipment"))], "legs[1].timing.anchor",
     "anchor"),
    ([rest(), pct("brand", 5, Timing("weekly"))], "legs[1].timing.kind", "kind"),
    ([rest(), pct("brand", 5, "immediate")], "legs[1].timing", "Timing"),
    ([rest(), ("brand", "percent", 5, IMMEDIATE)], "legs[1]", "must be a Leg"),
    ("not legs", "legs", "list"),
])
def test_refused_legs(legs, field, message):
    with pytest.raises(RuleError, match=message) as caught:
        validate_legs(legs)
    assert caught.value.field == field


@pytest.mark.parametrize("legs", [
    [rest()],
    [rest(), pct("brand", 9_999)],
    [rest(), pct("brand", 0)],
    [rest("seller", IMMEDIATE), pct("seller", 100, T1), pct("seller", 100, T7_PAID),
     pct("seller", 100, Timing("t_plus", 1, "payment"))],
    [rest("buyer_upstream"), pct("party:ACME_01.x:y-z", 100),
     Leg("platform", "per_unit", 0, Timing("t_plus", 365))],
    (rest(), Leg("brand", "per_order", 2**63 - 1, IMMEDIATE)),
])
def test_accepted_legs(legs):
    validate_legs(legs)  # raises on failure


def test_recipient_syntax():
    assert is_recipient("party:D-01")
    assert not is_recipient("party:")
    assert not is_recipient("Seller")
    assert not is_recipient(None)


# -- unwind ----------------------------------------------------------------------------

def test_unwind_a_full_refund_returns_every_share():
    shares = split(100_000, F2B2B_LEGS, order_total_minor=100_000, units=10)
    assert unwind(100_000, shares) == shares


def test_unwind_half_in_proportion():
    shares = split(100_000, F2B2B_LEGS, order_total_minor=100_000, units=10)
    back = unwind(50_000, shares)
    assert amounts(back) == [46_000, 3_750, 250]
    assert [(b.recipient, b.timing, b.leg_index, b.basis) for b in back] == \
        [(s.recipient, s.timing, s.leg_index, s.basis) for s in shares]


def test_unwind_rounding_goes_to_the_remainder_leg():
    shares = split(100_000, F2B2B_LEGS, order_total_minor=100_000, units=10)
    # 333 * 0.92 = 306.36, * 0.075 = 24.975, * 0.005 = 1.665 -> floors 306/24/1, 2 fen left
    assert amounts(unwind(333, shares)) == [308, 24, 1]


def test_unwind_when_the_remainder_leg_got_nothing_the_largest_leg_takes_the_rest():
    shares = [Share("seller", 0, IMMEDIATE, 0, "remainder"),
              Share("brand", 700, IMMEDIATE, 1, "per_order"),
              Share("platform", 300, IMMEDIATE, 2, "per_order")]
    # 7 * 0.7 = 4.9 -> 4, 7 * 0.3 = 2.1 -> 2, 1 fen left
    assert amounts(unwind(7, shares)) == [0, 5, 2]


def test_unwind_never_claws_back_more_than_the_remainder_leg_received():
    # Floors 0/0/0 leave 2 fen, more than the remainder leg's 1: the other goes
    # to the largest leg with something left (the first of equals).
    shares = [Share("seller", 1, IMMEDIATE, 0, "remainder"),
              Share("brand", 1, IMMEDIATE, 1, "percent"),
              Share("platform", 1, IMMEDIATE, 2, "percent")]
    assert amounts(unwind(2, shares)) == [1, 1, 0]


def test_unwind_shares_without_basis_use_the_largest_leg():
    shares = [Share("a", 1, IMMEDIATE, 0), Share("b", 2, IMMEDIATE, 1)]
    assert amounts(unwind(1, shares)) == [0, 1]  # floors 0/0, the larger takes 1


def test_unwind_more_than_cleared_is_refused():
    shares = split(1_000, F2B2B_LEGS, order_total_minor=1_000, units=1)
    with pytest.raises(SplitError, match="exceeds the 1000 cleared") as caught:
        unwind(1_001, shares)
    assert caught.value.shortfall_minor == 1


def test_unwind_nothing():
    shares = split(0, F2B2B_LEGS, order_total_minor=1_000, units=1)
    assert amounts(unwind(0, shares)) == [0, 0, 0]
    with pytest.raises(SplitError):
        unwind(1, shares)


@pytest.mark.parametrize("refund, shares", [
    (-1, [Share("seller", 10, IMMEDIATE, 0, "remainder")]),
    (True, [Share("seller", 10, IMMEDIATE, 0, "remainder")]),
    (1, [Share("seller", -10, IMMEDIATE, 0, "remainder")]),
    (1, [("seller", 10)]),
])
def test_unwind_bad_arguments(refund, shares):
    with pytest.raises(ValueError):
        unwind(refund, shares)


# -- properties ----------------------------------------------------------------------

RECIPIENTS = ("seller", "brand", "buyer_upstream", "platform", "party:D1", "party:X-2.b")
TIMINGS = (IMMEDIATE, ON_DELIVERY, T1, T7_PAID, Timing("t_plus", 365, "delivery"))


@st.composite
def valid_legs(draw) -> list[Leg]:
    """Any valid rule: unique recipient+timing pairs, one remainder leg
    anywhere, percents summing below 100%."""
    keys = draw(st.lists(st.tuples(st.sampled_from(RECIPIENTS), st.sampled_from(TIMINGS)),
                         min_size=1, max_size=8, unique=True))
    budget = BP_PER_UNIT - 1
    legs = []
    for recipient, timing in keys[1:]:
        basis = draw(st.sampled_from(("percent", "per_unit", "per_order")))
        if basis == "percent":
            value = draw(st.integers(0, budget))
            budget -= value
        else:
            value = draw(st.integers(0, 10**9))
        legs.append(Leg(recipient, basis, value, timing))
    at = draw(st.integers(0, len(legs)))
    legs.insert(at, Leg(keys[0][0], "remainder", 0, keys[0][1]))
    return legs


def _fixed(leg: Leg, units: int) -> int:
    return leg.value * units if leg.basis == "per_unit" else leg.value


def _fixed_total(legs: list[Leg], units: int) -> int:
    return sum(_fixed(l, units) for l in legs if l.basis in ("per_unit", "per_order"))


def _fitting_total(legs: list[Leg], cash: int, units: int, extra: int) -> int:
    """An order total the rule fits: the fixed legs are at most what the
    percent legs leave of it."""
    percent = sum(l.value for l in legs if l.basis == "percent")
    least = -(-_fixed_total(legs, units) * BP_PER_UNIT // (BP_PER_UNIT - percent))  # ceil
    return max(cash, least) + extra


def _check_shares(shares: list[Share], legs: list[Leg], cash: int, total: int, units: int):
    assert sum(amounts(shares)) == cash
    assert all(s.amount_minor >= 0 for s in shares)
    assert [(s.recipient, s.timing, s.leg_index, s.basis) for s in shares] == \
        [(l.recipient, l.timing, i, l.basis) for i, l in enumerate(legs)]
    for share, leg in zip(shares, legs):
        if leg.basis == "percent":  # exact = cash * bp / 10000; share in (exact - 1, exact]
            assert share.amount_minor * BP_PER_UNIT <= cash * leg.value
            assert cash * leg.value < (share.amount_minor + 1) * BP_PER_UNIT
        elif leg.basis != "remainder":
            fixed = _fixed(leg, units)
            if cash == total:
                assert share.amount_minor == fixed
            else:  # exact = fixed * cash / total; share in (exact - 1, exact]
                assert share.amount_minor * total <= fixed * cash
                assert fixed * cash < (share.amount_minor + 1) * total


@settings(max_examples=400)
@given(legs=valid_legs(), cash=st.integers(0, 10**12), extra=st.integers(0, 10**12),
       units=st.integers(0, 10**4))
def test_any_split_adds_up_or_names_its_shortfall(legs, cash, extra, units):
    total = cash + extra
    try:
        shares = split(cash, legs, order_total_minor=total, units=units)
    except SplitError as error:
        taken = 0
        for leg in legs:
            if leg.basis == "percent":
                taken += cash * leg.value // BP_PER_UNIT
            elif leg.basis != "remainder":
                taken += _fixed(leg, units) * cash // total if cash < total else _fixed(leg, units)
        assert error.shortfall_minor == taken - cash
        assert error.shortfall_minor > 0
        return
    _check_shares(shares, legs, cash, total, units)


@settings(max_examples=400)
@given(legs=valid_legs(), cash=st.integers(0, 10**12), extra=st.integers(0, 10**12),
       units=st.integers(0, 10**4))
def test_a_rule_that_fits_the_order_total_always_splits(legs, cash, extra, units):
    """When the fixed legs fit what the percents leave of the order total,
    every part of the order's cash splits (prorating keeps them fitting)."""
    total = _fitting_total(legs, cash, units, extra)
    shares = split(cash, legs, order_total_minor=total, units=units)
    _check_shares(shares, legs, cash, total, units)


@settings(max_examples=400)
@given(legs=valid_legs(), cash=st.integers(0, 10**12), extra=st.integers(0, 10**6),
       units=st.integers(0, 10**4), data=st.data())
def test_any_unwind_adds_up_and_stays_within_each_share(legs, cash, extra, units, data):
    total = _fitting_total(legs, cash, units, extra)
    shares = split(cash, legs, order_total_minor=total, units=units)
    refund = data.draw(st.integers(0, cash))
    back = unwind(refund, shares)
    assert sum(amounts(back)) == refund
    for b, s in zip(back, shares):
        assert 0 <= b.amount_minor <= s.amount_minor
        assert (b.recipient, b.timing, b.leg_index, b.basis) == \
            (s.recipient, s.timing, s.leg_index, s.basis)
        if cash:  # in proportion: never less than the floor of its part
            assert b.amount_minor >= refund * s.amount_minor // cash
    # a second refund of everything left claws back exactly what each still holds
    left = [Share(s.recipient, s.amount_minor - b.amount_minor, s.timing, s.leg_index, s.basis)
            for s, b in zip(shares, back)]
    assert amounts(unwind(cash - refund, left)) == amounts(left)


@given(shares=st.lists(st.integers(0, 10**9), min_size=1, max_size=8),
       remainder_at=st.integers(0, 7), data=st.data())
def test_unwind_of_arbitrary_shares(shares, remainder_at, data):
    """Shares not from split (a stored document, a partly refunded order)."""
    given_shares = [Share(f"party:P{i}", amount, IMMEDIATE, i,
                          "remainder" if i == remainder_at else "percent")
                    for i, amount in enumerate(shares)]
    refund = data.draw(st.integers(0, sum(shares)))
    back = unwind(refund, given_shares)
    assert sum(amounts(back)) == refund
    assert all(0 <= b <= s for b, s in zip(amounts(back), shares))
    with pytest.raises(SplitError):
        unwind(sum(shares) + 1, given_shares)


@given(legs=valid_legs(), data=st.data())
def test_percent_sums_of_100_or_more_are_refused(legs, data):
    percent = sum(l.value for l in legs if l.basis == "percent")
    value = data.draw(st.integers(BP_PER_UNIT - percent, BP_PER_UNIT))
    with pytest.raises(RuleError, match="below 10000") as caught:
        validate_legs(legs + [pct("party:EXTRA", value)])
    assert caught.value.field == "legs"


@given(legs=valid_legs())
def test_no_remainder_leg_or_two_are_refused(legs):
    validate_legs(legs)
    at = next(i for i, l in enumerate(legs) if l.basis == "remainder")
    with pytest.raises(RuleError) as caught:
        validate_legs(legs[:at] + legs[at + 1:])
    assert caught.value.field == "legs"
    with pytest.raises(RuleError) as caught:
        validate_legs(legs + [rest("party:EXTRA")])
    assert caught.value.field == f"legs[{len(legs)}].basis"


@given(legs=valid_legs(), data=st.data())
def test_negative_and_bool_values_are_refused(legs, data):
    candidates = [i for i, l in enumerate(legs) if l.basis != "remainder"]
    assume(candidates)
    at = data.draw(st.sampled_from(candidates))
    bad = data.draw(st.one_of(st.integers(max_value=-1), st.booleans()))
    changed = list(legs)
    changed[at] = Leg(legs[at].recipient, legs[at].basis, bad, legs[at].timing)
    with pytest.raises(RuleError) as caught:
        validate_legs(changed)
    assert caught.value.field == f"legs[{at}].value"


# -- purity ------------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["split.py", "rule_match.py", "calendar.py"])
def test_pure_modules_import_only_the_standard_library(module):
    source = (Path(__file__).parent.parent / "clearing" / module).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported  # the walk found the imports
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
