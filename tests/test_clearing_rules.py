"""Clearing rules and the business calendar in the database
(channel_api/clearing_rules.py): rules checked field by field, created
idempotently, updated with versions and audited; the rule an order gets by
its trade mode and categories, and its split with recipients resolved to
parties (the worked example of an F2B2b order); the calendar's CSV.

The pure rules (split, selection, calendar) have their own tests
(test_clearing_split.py, test_clearing_rule_match.py, test_clearing_calendar.py);
these check what the database adds: codes that must exist, the order's facts,
storage."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

import channel_api as ca
from channel_api import catalog, network, orders
from channel_api.business_calendar import calendar, calendar_csv, list_calendar, set_calendar
from channel_api.clearing_rules import (
    ClearingRuleExists,
    ClearingRuleNotFound,
    ClearingRuleVersionConflict,
    create_rule,
    explain_for_order,
    get_rule,
    list_rules,
    update_rule,
)
from channel_api.errors import InvalidInput
from channel_api.models import AuditRecord
from clearing.split import IMMEDIATE, ON_DELIVERY, Leg, Timing
from ledger import utcnow

A = "test"
EARLIER = utcnow() - timedelta(days=1)
NOW_ISH = {"kind": "immediate"}

# The worked example's rule: the distributor selling keeps the remainder
# (92%), the brand 7.5%, the platform 0.5%.
F2B2B_LEGS = [
    {"recipient": "seller", "basis": "remainder", "timing": {"kind": "t_plus", "days": 3}},
    {"recipient": "brand", "basis": "percent", "value": 750, "timing": {"kind": "on_delivery"}},
    {"recipient": "platform", "basis": "percent", "value": 50, "timing": NOW_ISH},
]
SIMPLE_LEGS = [{"recipient": "seller", "basis": "remainder", "timing": NOW_ISH}]


@pytest.fixture
def net(session):
    """B (brand) sells to D and D2; D sells to S and to D2 (a second-level
    distributor), D2 to S2; a second brand, B2, supplies no one. Food >
    snacks > chips, and drinks; crisps 100.00 a case, cola 25.00."""
    s = session
    ca.create_region(s, "CN", "China")
    ca.create_customer_type(s, "t", "T")
    for code, role in (("B", "brand"), ("B2", "brand"), ("D", "distributor"), ("D2", "distributor"),
                       ("S", "store"), ("S2", "store"), ("LOGI", "distributor")):
        ca.create_party(s, code=code, name=code, role=role, region="CN", customer_type="t")
    catalog.create_category(s, "food", "Food")
    catalog.create_category(s, "snacks", "Snacks", parent="food")
    catalog.create_category(s, "chips", "Chips", parent="snacks")
    catalog.create_category(s, "drinks", "Drinks")
    catalog.create_unit(s, "case", "Case")
    catalog.create_product(s, "crisps", "Crisps", category="chips")
    catalog.create_product(s, "cola", "Cola", category="drinks")
    catalog.create_sku(s, "crisps-1", "Crisps", product="crisps", unit="case",
                       list_price_minor=10_000)
    catalog.create_sku(s, "cola-1", "Cola", product="cola", unit="case", list_price_minor=2_500)
    for seller in ("D", "D2"):
        network.set_sale_permission(s, seller, product_scope={"all": True}, regions=[], actor=A)
    for seller, buyer in (("B", "D"), ("D", "S"), ("B", "D2"), ("D", "D2"), ("D2", "S2")):
        network.create_relationship(s, seller=seller, buyer=buyer, actor=A, valid_from=EARLIER)
    return s


def place(s, buyer: str, seller: str, **quantities: int) -> str:
    lines = [{"sku": sku.replace("_", "-"), "quantity": q} for sku, q in quantities.items()]
    return orders.place_order(s, buyer=buyer, seller=seller, lines=lines, actor=A).public_id


def linked(s, seller: str, buyer: str, upstream_seller: str, **quantities: int) -> str:
    """An order of ``buyer`` from ``seller``, served by the seller's own
    order from ``upstream_seller`` (sell-through: F2B2b)."""
    up = place(s, seller, upstream_seller, **quantities)
    down = place(s, buyer, seller, **quantities)
    orders.link_orders(s, upstream=up, downstream=down, actor=A)
    return down


def rule(s, code: str, legs=None, **criteria):
    criteria.setdefault("valid_from", EARLIER)
    return create_rule(s, code=code, name=code.upper(), legs=legs or SIMPLE_LEGS, actor=A,
                       **criteria)


def audits(s, code: str) -> list[AuditRecord]:
    return list(s.scalars(select(AuditRecord).where(AuditRecord.subject_type == "clearing_rule",
                                                    AuditRecord.subject == code)
                          .order_by(AuditRecord.id)))


# -- creating and reading ---------------------------------------------------------------

def test_a_rule_is_stored_with_its_legs_in_one_shape_and_read_back(net):
    made = rule(net, "f2b2b-snacks", F2B2B_LEGS, priority=5, trade_modes=["F2B2b"],
                categories=["snacks"], sellers=["D2", "D"], payment_methods=["prepaid"])
    assert (made.version, made.status, made.priority, made.actor) == (1, "active", 5, A)
    assert made.sellers == ("D", "D2") and made.buyers is None and made.categories == ("snacks",)
    assert made.legs == (Leg("seller", "remainder", 0, Timing("t_plus", 3, "delivery")),
                         Leg("brand", "percent", 750, ON_DELIVERY),
                         Leg("platform", "percent", 50, IMMEDIATE))
    assert get_rule(net, "f2b2b-snacks") == made
    rule(net, "a-first")
    page, cursor = list_rules(net, limit=1)
    assert [r.code for r in page] == ["a-first"] and cursor == "a-first"
    rest, end = list_rules(net, after=cursor)
    assert [r.code for r in rest] == ["f2b2b-snacks"] and end is None
    with pytest.raises(ClearingRuleNotFound):
        get_rule(net, "nope")


def _legs_with(**second) -> list[dict]:
    leg = {"recipient": "brand", "basis": "percent", "value": 750, "timing": NOW_ISH}
    leg.update(second)
    return [SIMPLE_LEGS[0], {k: v for k, v in leg.items() if v is not None}]


@pytest.mark.parametrize("changes, field", [
    ({"legs": _legs_with(value=10_001)}, "legs[1].value"),
    ({"legs": _legs_with(value=1.5)}, "legs[1].value"),
    ({"legs": _legs_with(value=True)}, "legs[1].value"),
    ({"legs": _legs_with(value=None)}, "legs[1].value"),          # a percent needs its value
    ({"legs": _legs_with(basis="per_liter")}, "legs[1].basis"),
    ({"legs": _legs_with(amount=5)}, "legs[1].amount"),
    ({"legs": _legs_with(recipient="someone")}, "legs[1].recipient"),
    ({"legs": _legs_with(recipient="party:GHOST")}, "legs[1].recipient"),
    ({"legs": _legs_with(timing={"kind": "t_plus", "days": 0})}, "legs[1].timing.days"),
    ({"legs": _legs_with(timing={"kind": "later"})}, "legs[1].timing.kind"),
    ({"legs": _legs_with(timing={"kind": "immediate", "hours": 2})}, "legs[1].timing.hours"),
    ({"legs": _legs_with(recipient="seller")}, "legs[1].recipient"),  # same recipient, timing
    ({"legs": _legs_with(basis="remainder", value=0)}, "legs[1].basis"),  # a second remainder
    ({"legs": [_legs_with()[1]]}, "legs"),                        # no remainder leg
    ({"legs": []}, "legs"),
    ({"trade_modes": ["F2X"]}, "trade_modes"),
    ({"categories": []}, "categories"),
    ({"categories": ["ghost-category"]}, "categories"),
    ({"sellers": ["S"]}, "sellers"),                              # a store sells nothing
    ({"buyers": ["GHOST"]}, "buyers"),
    ({"buyers": [1]}, "buyers[0]"),
    ({"payment_methods": ["rebate"]}, "payment_methods"),         # not cash
    ({"valid_to": EARLIER - timedelta(days=1)}, "valid_to"),
    ({"valid_from": EARLIER.replace(tzinfo=None)}, "valid_from"),
    ({"priority": 2**40}, "priority"),
    ({"status": "paused"}, "status"),
    ({"code": "bad code!"}, "code"),
    ({"name": " "}, "name"),
])
def test_a_bad_rule_is_refused_naming_the_field_and_nothing_is_written(net, changes, field):
    args = {"code": "r1", "name": "R1", "legs": SIMPLE_LEGS, "valid_from": EARLIER, **changes}
    with pytest.raises(InvalidInput) as refused:
        create_rule(net, actor=A, **args)
    assert refused.value.details["field"] == field
    assert list_rules(net)[0] == [] and audits(net, "r1") == []


def test_creating_the_same_rule_again_returns_it_and_other_content_is_refused(net):
    first = create_rule(net, code="r1", name="R1", legs=F2B2B_LEGS, trade_modes=["F2B2b"],
                        actor=A)  # valid from now
    again = create_rule(net, code="r1", name="R1", legs=F2B2B_LEGS, trade_modes=["F2B2b"],
                        actor="someone-else")
    assert again == first and again.version == 1
    with pytest.raises(ClearingRuleExists) as exists:
        create_rule(net, code="r1", name="R1", legs=F2B2B_LEGS, trade_modes=["F2B"], actor=A)
    assert exists.value.http_status == 409 and exists.value.details["field"] == "code"
    assert [a.action for a in audits(net, "r1")] == ["clearing_rule.create"]


def test_an_update_bumps_the_version_and_audits_before_and_after(net):
    rule(net, "r1", F2B2B_LEGS, sellers=["D"])
    legs = [dict(F2B2B_LEGS[0]), dict(F2B2B_LEGS[1], value=800), dict(F2B2B_LEGS[2])]
    changed = update_rule(net, "r1", legs=legs, sellers=None, version=1, actor="finance")
    assert (changed.version, changed.sellers, changed.legs[1].value) == (2, None, 800)
    assert (changed.actor, changed.name, changed.trade_modes) == ("finance", "R1", None)
    update = audits(net, "r1")[-1]
    assert update.action == "clearing_rule.update" and update.details["version"] == 2
    assert update.details["changed"] == ["legs", "sellers"]
    assert update.details["before"]["legs"][1]["value"] == 750
    assert update.details["after"]["legs"][1]["value"] == 800
    assert update.details["before"]["sellers"] == ["D"]
    assert update.details["after"]["sellers"] is None

    same = update_rule(net, "r1", legs=legs, name="R1", actor="finance")
    assert same.version == 2 and len(audits(net, "r1")) == 2
    with pytest.raises(ClearingRuleVersionConflict):
        update_rule(net, "r1", priority=9, version=1, actor="finance")
    with pytest.raises(InvalidInput) as refused:
        update_rule(net, "r1", legs=[F2B2B_LEGS[1]], actor="finance")
    assert refused.value.details["field"] == "legs"
    assert get_rule(net, "r1") == changed
    with pytest.raises(ClearingRuleNotFound):
        update_rule(net, "nope", priority=1, actor=A)


# -- an order's rule and split ------------------------------------------------------------

def test_an_f2b2b_order_with_an_upstream_link_and_a_b2b_order_get_their_own_rules(net):
    rule(net, "f2b2b", F2B2B_LEGS, trade_modes=["F2B2b"])
    rule(net, "b2b", trade_modes=["B2b"])
    sell_through = linked(net, "D", "S", "B", crisps_1=10)
    own_stock = place(net, "S", "D", crisps_1=10)

    through = explain_for_order(net, sell_through, "prepaid")
    assert (through.trade_mode, [p.rule for p in through.parts]) == ("F2B2b", ["f2b2b"])
    candidates = through.parts[0].explanations[0].candidates
    assert [(c.code, c.eligible, c.reason) for c in candidates] == [
        ("f2b2b", True, None), ("b2b", False, "trade_mode")]
    direct = explain_for_order(net, own_stock, "prepaid")
    assert (direct.trade_mode, [p.rule for p in direct.parts]) == ("B2b", ["b2b"])


def test_worked_example_an_f2b2b_order_of_1000_paid_by_a_store(net):
    """A store pays 1,000.00 for an order its distributor D serves from
    stock bought from the brand: D keeps 92% (the remainder), the brand gets
    7.5%, the platform 0.5%, in fen, each share named by party."""
    rule(net, "f2b2b", F2B2B_LEGS, trade_modes=["F2B2b"], categories=["snacks"],
         payment_methods=["prepaid", "wechatpay"])
    order = linked(net, "D", "S", "B", crisps_1=10)
    preview = explain_for_order(net, order, "prepaid")
    assert (preview.total_minor, preview.units, preview.currency) == (100_000, 10, "CNY")
    (part,) = preview.parts
    assert (part.rule, part.rule_version, part.cash_minor, part.problem) == ("f2b2b", 1, 100_000,
                                                                             None)
    assert [(s.recipient, s.party, s.amount_minor, s.timing.kind) for s in part.shares] == [
        ("seller", "D", 92_000, "t_plus"), ("brand", "B", 7_500, "on_delivery"),
        ("platform", "platform", 500, "immediate")]
    assert sum(s.amount_minor for s in part.shares) == preview.total_minor
    (explanation,) = part.explanations
    assert explanation.category_path == ("food", "snacks", "chips")
    assert explanation.candidates[0].matched_category == "snacks"

    by_card = explain_for_order(net, order, "alipay")
    assert by_card.parts[0].rule is None and by_card.parts[0].shares == ()
    assert by_card.parts[0].explanations[0].candidates[0].reason == "payment_method"
    with pytest.raises(InvalidInput) as refused:
        explain_for_order(net, order, "rebate")
    assert refused.value.details["field"] == "payment_method"


def test_buyer_upstream_is_the_upstream_order_s_seller_else_the_seller_s_one_supplier(net):
    legs = [{"recipient": "seller", "basis": "remainder", "timing": NOW_ISH},
            {"recipient": "buyer_upstream", "basis": "percent", "value": 300, "timing": NOW_ISH},
            {"recipient": "party:LOGI", "basis": "per_unit", "value": 150, "timing": NOW_ISH}]
    rule(net, "upstream", legs)
    # D2 buys from B and from D: the link says whose goods these were.
    through_d = linked(net, "D2", "S2", "D", crisps_1=4)
    shares = explain_for_order(net, through_d, "offline").parts[0].shares
    assert [(s.party, s.amount_minor) for s in shares] == [("D2", 38_200), ("D", 1_200),
                                                           ("LOGI", 600)]
    # Without a link: D buys from the brand only.
    direct = place(net, "S", "D", crisps_1=4)
    shares = explain_for_order(net, direct, "offline").parts[0].shares
    assert [s.party for s in shares] == ["D", "B", "LOGI"]
    # Without a link, D2's two suppliers leave it unresolved (clearing must refuse it).
    unlinked = place(net, "S2", "D2", crisps_1=4)
    shares = explain_for_order(net, unlinked, "offline").parts[0].shares
    assert shares[1].party is None and "several" in shares[1].unresolved
    assert shares[1].amount_minor == 1_200


def test_the_brand_is_the_seller_or_the_one_brand_up_the_seller_s_supply_chain(net):
    rule(net, "fee", [SIMPLE_LEGS[0], {"recipient": "brand", "basis": "percent", "value": 100,
                                       "timing": NOW_ISH}])
    from_brand = place(net, "D", "B", crisps_1=1)
    preview = explain_for_order(net, from_brand, "offline")
    assert preview.trade_mode == "F2B"
    assert [s.party for s in preview.parts[0].shares] == ["B", "B"]
    # D2 buys from B and from D; two levels up there is still only B (B2 is
    # in the network but not in this chain).
    second_level = place(net, "S2", "D2", crisps_1=1)
    shares = explain_for_order(net, second_level, "offline").parts[0].shares
    assert [(s.party, s.amount_minor) for s in shares] == [("D2", 9_900), ("B", 100)]


def test_lines_of_categories_with_different_rules_are_split_by_each_rule(net):
    per_order = [SIMPLE_LEGS[0], {"recipient": "platform", "basis": "per_order", "value": 99,
                                  "timing": NOW_ISH}]
    rule(net, "snacks", F2B2B_LEGS, categories=["snacks"])
    rule(net, "drinks", per_order, categories=["drinks"])
    order = place(net, "S", "D", cola_1=3, crisps_1=2)  # 75.00 of cola, 200.00 of crisps
    preview = explain_for_order(net, order, "prepaid")
    assert [(p.rule, p.lines, p.cash_minor, p.units) for p in preview.parts] == [
        ("drinks", (1,), 7_500, 3), ("snacks", (2,), 20_000, 2)]
    drinks, snacks = preview.parts
    assert [s.amount_minor for s in drinks.shares] == [7_401, 99]
    assert [s.amount_minor for s in snacks.shares] == [18_400, 1_500, 100]
    assert sum(s.amount_minor for p in preview.parts for s in p.shares) == preview.total_minor
    assert drinks.explanations[0].candidates[1].reason == "category"


def test_the_more_specific_rule_wins_and_the_explanation_says_why(net):
    rule(net, "any")
    rule(net, "chips", F2B2B_LEGS, categories=["chips"])
    rule(net, "snacks", F2B2B_LEGS, categories=["snacks"])
    rule(net, "off", status="inactive", priority=100)
    order = place(net, "S", "D", crisps_1=1)
    (part,) = explain_for_order(net, order, "prepaid").parts
    ranked = [(c.code, c.rank, c.category_depth, c.reason) for c in
              part.explanations[0].candidates]
    assert ranked == [("chips", 1, 3, None), ("snacks", 2, 2, None), ("any", 3, 0, None),
                      ("off", None, None, "inactive")]
    assert part.explanations[0].candidates[0].decided_by == "specificity"


def test_an_order_without_a_rule_shows_why_and_splits_nothing(net):
    rule(net, "later", valid_from=utcnow() + timedelta(days=30))
    order = place(net, "S", "D", crisps_1=1)
    (part,) = explain_for_order(net, order, "prepaid").parts
    assert (part.rule, part.shares, part.problem) == (None, (), "no clearing rule applies")
    assert part.explanations[0].candidates[0].reason == "not_yet_valid"


def test_fixed_legs_larger_than_the_cash_are_reported_not_split(net):
    rule(net, "greedy", [SIMPLE_LEGS[0], {"recipient": "platform", "basis": "per_order",
                                          "value": 20_000, "timing": NOW_ISH}])
    order = place(net, "S", "D", crisps_1=1)  # 100.00
    (part,) = explain_for_order(net, order, "prepaid").parts
    assert part.rule == "greedy" and part.shares == () and "short by 10000" in part.problem


# -- the business calendar --------------------------------------------------------------------

CALENDAR = """\ufeffdate,kind,note
# National Day 2026 (test data shaped like it)
2026-10-01,holiday,National Day
2026-10-02,holiday,"National Day, day 2"
2026-10-05,holiday
2026-10-10,workday,make-up day
"""


def test_the_calendar_csv_round_trips_and_drives_t_plus_n(session):
    change = set_calendar(session, CALENDAR, A)
    assert (change.holidays, change.workdays, change.added, change.removed) == (3, 1, 4, 0)
    days = list_calendar(session, year=2026)
    assert [(d.day.isoformat(), d.kind, d.note) for d in days] == [
        ("2026-10-01", "holiday", "National Day"), ("2026-10-02", "holiday", "National Day, day 2"),
        ("2026-10-05", "holiday", ""), ("2026-10-10", "workday", "make-up day")]
    assert list_calendar(session, year=2025) == []
    exported = calendar_csv(session)
    again = set_calendar(session, exported, A)
    assert (again.added, again.removed, again.changed) == (0, 0, 0)
    assert calendar_csv(session) == exported

    stored = calendar(session)
    assert not stored.is_business_day(date(2026, 10, 2)) and stored.is_business_day(
        date(2026, 10, 10))
    # T+2 from Wednesday 09-30: 10-01 and 10-02 are holidays, then a weekend, then the
    # 10-05 holiday: T+1 is Tuesday 10-06, T+2 Wednesday 10-07.
    assert stored.add_business_days(date(2026, 9, 30), 2) == date(2026, 10, 7)

    smaller = set_calendar(session, "2026-10-01,holiday,Renamed\n", A)
    assert (smaller.added, smaller.removed, smaller.changed) == (0, 3, 1)
    assert [(d.day, d.note) for d in list_calendar(session)] == [(date(2026, 10, 1), "Renamed")]
    with pytest.raises(InvalidInput):
        set_calendar(session, "\ufeff \n", A)  # an empty upload wipes nothing
    assert len(list_calendar(session)) == 1
    cleared = set_calendar(session, "date,kind\n", A)
    assert (cleared.removed, list_calendar(session)) == (1, [])
    actions = list(session.scalars(select(AuditRecord.action).where(
        AuditRecord.subject_type == "business_calendar")))
    assert actions == ["business_calendar.set"] * 3  # not the no-op


@pytest.mark.parametrize("text, line", [
    ("date,kind\n2026-10-01,holiday\n2026-13-01,holiday\n", 3),
    ("2026-10-01,vacation\n", 1),
    ("2026-10-01,holiday\n2026-10-01,workday,twice\n", 2),
    ("2026-10-07,workday,a Wednesday\n", 1),
    ("2026-10-01\n", 1),
    ("2026-10-01,holiday," + "x" * 201 + "\n", 1),
    ("2026-10-01,holiday\ndate,kind,note\n", 2),
])
def test_a_bad_calendar_line_is_named_and_nothing_changes(session, text, line):
    set_calendar(session, CALENDAR, A)
    with pytest.raises(InvalidInput) as refused:
        set_calendar(session, text, A)
    assert refused.value.details == {"field": "csv", "line": line}
    assert len(list_calendar(session)) == 4
