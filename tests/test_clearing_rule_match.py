"""Clearing rule selection (clearing/rule_match.py): eligibility criterion by
criterion, the ranking, validity edges, the explanation, trade modes and
rule checks. Pure: no database."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearing.rule_match import (
    INELIGIBLE_REASONS,
    TRADE_MODES,
    ClearingRuleSpec,
    RuleCandidate,
    RuleFacts,
    choose,
    explain,
    trade_mode,
    validate_rule,
)
from clearing.split import IMMEDIATE, ON_DELIVERY, Leg, RuleError

T0 = datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=8)))
DAY = timedelta(days=1)
LEGS = (Leg("seller", "remainder", 0, ON_DELIVERY), Leg("brand", "percent", 750, IMMEDIATE),
        Leg("platform", "percent", 50, IMMEDIATE))

FACTS = RuleFacts(trade_mode="F2B2b", category_path=("food", "snacks", "chips"),
                  seller="DIST-1", buyer="STORE-1", payment_method="prepaid", at=T0)


def rule(code: str, *, priority: int = 0, trade_modes=None, categories=None, sellers=None,
         buyers=None, payment_methods=None, valid_from: datetime = T0 - 30 * DAY,
         valid_to: datetime | None = None, status: str = "active") -> ClearingRuleSpec:
    def s(v):
        return frozenset(v) if v is not None else None
    return ClearingRuleSpec(code, priority, s(trade_modes), s(categories), s(sellers), s(buyers),
                            s(payment_methods), valid_from, valid_to, LEGS, status)


def reasons(rules, facts=FACTS) -> dict[str, str | None]:
    return {c.code: c.reason for c in explain(rules, facts)}


def ranked(rules, facts=FACTS) -> list[RuleCandidate]:
    return explain(rules, facts)


def chosen(rules, facts=FACTS) -> str | None:
    found = choose(rules, facts)
    return found.code if found is not None else None


# -- eligibility ----------------------------------------------------------------------

@pytest.mark.parametrize("criterion, match, miss, reason", [
    ("trade_modes", {"F2B2b", "F2b"}, {"F2B"}, "trade_mode"),
    ("categories", {"snacks"}, {"drinks"}, "category"),
    ("categories", {"chips"}, {"crisps"}, "category"),
    ("categories", {"food"}, {"food-x"}, "category"),
    ("sellers", {"DIST-1", "DIST-2"}, {"DIST-2"}, "seller"),
    ("buyers", {"STORE-1"}, {"STORE-9"}, "buyer"),
    ("payment_methods", {"prepaid", "credit"}, {"credit"}, "payment_method"),
])
def test_each_criterion_matches_or_names_itself(criterion, match, miss, reason):
    ok = rule("OK", **{criterion: match})
    no = rule("NO", **{criterion: miss})
    assert reasons([ok, no]) == {"OK": None, "NO": reason}
    assert chosen([no, ok]) == "OK"
    assert chosen([no]) is None


def test_seller_and_buyer_are_not_interchangeable():
    # the buyer's code in the sellers criterion does not match
    assert reasons([rule("R", sellers={"STORE-1"})]) == {"R": "seller"}
    assert reasons([rule("R", buyers={"DIST-1"})]) == {"R": "buyer"}


def test_an_empty_criterion_matches_nothing():
    assert reasons([rule("R", sellers=set())]) == {"R": "seller"}


def test_a_category_matches_anywhere_on_the_path_but_not_below_the_leaf():
    facts = replace(FACTS, category_path=("food", "snacks"))
    assert reasons([rule("LEAF", categories={"chips"}), rule("MID", categories={"snacks"})],
                   facts) == {"MID": None, "LEAF": "category"}
    assert reasons([rule("R", categories={"food"})], replace(FACTS, category_path=())) == \
        {"R": "category"}


def test_the_first_failing_criterion_is_the_reason():
    r = rule("R", status="inactive", valid_from=T0 + DAY, trade_modes={"F2B"},
             payment_methods={"credit"})
    assert reasons([r]) == {"R": "inactive"}
    assert reasons([replace(r, status="active")]) == {"R": "not_yet_valid"}
    assert reasons([replace(r, status="active", valid_from=T0 - DAY)]) == {"R": "trade_mode"}
    assert reasons([rule("R", sellers={"X"}, buyers={"Y"}, payment_methods={"Z"})]) == \
        {"R": "seller"}
    assert reasons([rule("R", buyers={"Y"}, payment_methods={"Z"})]) == {"R": "buyer"}


@pytest.mark.parametrize("valid_from, valid_to, reason", [
    (T0, None, None),                       # valid_from is included
    (T0 + timedelta(microseconds=1), None, "not_yet_valid"),
    (T0 - DAY, T0, "expired"),              # valid_to is excluded
    (T0 - DAY, T0 + timedelta(microseconds=1), None),
    (T0 - DAY, None, None),                 # open-ended
    (T0 - 2 * DAY, T0 - DAY, "expired"),
])
def test_validity_edges(valid_from, valid_to, reason):
    assert reasons([rule("R", valid_from=valid_from, valid_to=valid_to)]) == {"R": reason}


def test_validity_compares_instants_across_time_zones():
    # 04:00 UTC is 12:00 at +08:00: the same instant as T0, so valid from then
    r = rule("R", valid_from=datetime(2026, 3, 1, 4, tzinfo=timezone.utc))
    assert reasons([r]) == {"R": None}
    assert reasons([r], replace(FACTS, at=T0 - timedelta(seconds=1))) == {"R": "not_yet_valid"}


@pytest.mark.parametrize("status", ["inactive", "draft", "ACTIVE"])
def test_only_active_rules_are_eligible(status):
    assert reasons([rule("R", status=status)]) == {"R": "inactive"}


# -- ranking ---------------------------------------------------------------------------

def test_higher_priority_wins_over_specificity():
    general = rule("GENERAL", priority=10)
    specific = rule("SPECIFIC", sellers={"DIST-1"}, buyers={"STORE-1"}, categories={"chips"})
    assert chosen([specific, general]) == "GENERAL"
    assert ranked([specific, general])[0].decided_by == "priority"


def test_more_criteria_is_more_specific():
    one = rule("A-ONE", trade_modes={"F2B2b"})
    two = rule("Z-TWO", trade_modes={"F2B2b"}, payment_methods={"prepaid"})
    assert chosen([one, two]) == "Z-TWO"
    assert ranked([one, two])[0].specificity == (2, 0)
    assert ranked([one, two])[0].decided_by == "specificity"


def test_a_deeper_category_is_more_specific():
    shallow = rule("A-FOOD", categories={"food"})
    mid = rule("B-SNACKS", categories={"snacks"})
    deep = rule("C-CHIPS", categories={"chips"})
    got = ranked([shallow, deep, mid])
    assert [(c.code, c.rank, c.specificity, c.matched_category) for c in got] == [
        ("C-CHIPS", 1, (1, 3), "chips"),
        ("B-SNACKS", 2, (1, 2), "snacks"),
        ("A-FOOD", 3, (1, 1), "food"),
    ]


def test_a_rule_naming_several_categories_counts_its_deepest_match():
    both = rule("A-BOTH", categories={"food", "chips"})
    snacks = rule("B-SNACKS", categories={"snacks"})
    assert chosen([snacks, both]) == "A-BOTH"
    assert ranked([snacks, both])[0].matched_category == "chips"


def test_the_criteria_count_outranks_category_depth():
    deep = rule("DEEP", categories={"chips"})
    two = rule("TWO", categories={"food"}, sellers={"DIST-1"})
    assert chosen([deep, two]) == "TWO"


def test_later_valid_from_breaks_a_tie():
    old = rule("A-OLD", valid_from=T0 - 60 * DAY)
    new = rule("B-NEW", valid_from=T0 - 5 * DAY)
    assert chosen([old, new]) == "B-NEW"
    assert ranked([old, new])[0].decided_by == "valid_from"


def test_code_ascending_decides_last():
    assert chosen([rule("B"), rule("A"), rule("C")]) == "A"
    assert ranked([rule("B"), rule("A")])[0].decided_by == "code"


def test_no_eligible_rule_gives_none():
    assert chosen([]) is None
    assert chosen([rule("R", status="inactive")]) is None
    assert ranked([]) == []


def test_explain_lists_every_rule_winner_first_then_ineligible_by_code():
    rules = [rule("Z-EXPIRED", valid_to=T0 - DAY), rule("B"), rule("A-OFF", status="inactive"),
             rule("C", priority=5), rule("M-SELLER", sellers={"X"})]
    got = ranked(rules)
    assert got == [
        RuleCandidate("C", True, None, 1, (0, 0), None, "priority"),
        RuleCandidate("B", True, None, 2, (0, 0), None, None),
        RuleCandidate("A-OFF", False, "inactive"),
        RuleCandidate("M-SELLER", False, "seller"),
        RuleCandidate("Z-EXPIRED", False, "expired"),
    ]
    assert got[0].rule is rules[3]
    assert {c.reason for c in got if c.reason} <= set(INELIGIBLE_REASONS)


def test_a_single_eligible_rule_has_no_deciding_criterion():
    assert ranked([rule("R"), rule("S", status="inactive")])[0].decided_by is None


RULES_POOL = [
    rule("P1", priority=1), rule("P1-SELLER", priority=1, sellers={"DIST-1"}),
    rule("CAT", categories={"snacks", "chips"}), rule("MODE", trade_modes={"F2B2b"}),
    rule("NEW", valid_from=T0 - DAY), rule("OFF", priority=9, status="inactive"),
    rule("LATER", priority=9, valid_from=T0 + DAY), rule("PAY", payment_methods={"credit"}),
]


@given(st.permutations(RULES_POOL))
def test_the_choice_and_explanation_do_not_depend_on_the_order_given(rules):
    assert chosen(rules) == "P1-SELLER"
    assert ranked(rules) == ranked(RULES_POOL)


def test_bad_facts_are_refused():
    with pytest.raises(ValueError, match="time zone"):
        choose([rule("R")], replace(FACTS, at=datetime(2026, 3, 1)))
    with pytest.raises(ValueError, match="category_path"):
        explain([rule("R")], replace(FACTS, category_path=["food"]))


# -- trade modes ---------------------------------------------------------------------

@pytest.mark.parametrize("seller, buyer, linked, mode", [
    ("brand", "distributor", False, "F2B"),
    ("brand", "store", False, "F2b"),
    ("distributor", "store", False, "B2b"),
    ("distributor", "store", True, "F2B2b"),
    ("distributor", "distributor", False, "B2B"),
    ("distributor", "distributor", True, "B2B"),
])
def test_trade_mode(seller, buyer, linked, mode):
    assert trade_mode(seller, buyer, linked) == mode
    assert mode in TRADE_MODES


@pytest.mark.parametrize("seller, buyer, linked, message", [
    ("brand", "distributor", True, "no upstream"),
    ("brand", "store", True, "no upstream"),
    ("store", "store", False, "no trade mode"),
    ("store", "distributor", False, "no trade mode"),
    ("distributor", "brand", False, "no trade mode"),
    ("brand", "brand", False, "no trade mode"),
    ("brand", "consumer", False, "roles"),
    ("distributor", "store", 1, "True or False"),
])
def test_trade_mode_refuses(seller, buyer, linked, message):
    with pytest.raises(ValueError, match=message):
        trade_mode(seller, buyer, linked)


def test_trade_modes_listed():
    assert TRADE_MODES == ("F2B", "F2b", "B2b", "F2B2b", "F2B2b2C", "B2B")


# -- rule checks -----------------------------------------------------------------------

def test_a_valid_rule_passes():
    validate_rule(rule("R-1", trade_modes={"F2B2b", "F2B2b2C"}, categories={"snacks"},
                       sellers={"DIST-1"}, buyers={"STORE-1"}, payment_methods={"prepaid"},
                       valid_to=T0 + DAY))


@pytest.mark.parametrize("changes, field", [
    (dict(code=""), "code"),
    (dict(code="has space"), "code"),
    (dict(priority=True), "priority"),
    (dict(priority=2**31), "priority"),
    (dict(trade_modes=frozenset({"F2C"})), "trade_modes"),
    (dict(trade_modes=frozenset()), "trade_modes"),
    (dict(categories={"snacks"}), "categories"),           # a set, not a frozenset
    (dict(sellers=frozenset({""})), "sellers"),
    (dict(buyers=frozenset({1})), "buyers"),
    (dict(payment_methods=frozenset({"a b"})), "payment_methods"),
    (dict(valid_from=datetime(2026, 1, 1)), "valid_from"),
    (dict(valid_to=T0 - 30 * DAY), "valid_to"),              # == valid_from
    (dict(valid_to=datetime(2027, 1, 1)), "valid_to"),
    (dict(status="draft"), "status"),
    (dict(legs=list(LEGS)), "legs"),
    (dict(legs=LEGS[1:]), "legs"),
    (dict(legs=LEGS + (Leg("brand", "percent", 9_500, ON_DELIVERY),)), "legs"),
    (dict(legs=(LEGS[0], Leg("brand", "percent", -1, IMMEDIATE))), "legs[1].value"),
])
def test_refused_rules(changes, field):
    with pytest.raises(RuleError) as caught:
        validate_rule(replace(rule("R"), **changes))
    assert caught.value.field == field
