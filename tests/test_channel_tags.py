"""Purchase habits and dynamic tags (issue 3): habits kept from orders, the
rule language, its pure evaluator, the recompute, the CLI command and the
scheduler job, on SQLite and PostgreSQL.

The module commits (the concurrency, CLI and scheduler tests), so it runs on
a database of its own; a recompute sees every party in it, so each test's
rules are narrowed to its own region (``unique`` codes).
"""
from __future__ import annotations

import logging
import re
import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event, select

import channel_api as ch
from channel_api import audit, habits, tags
from channel_api.errors import DynamicTagExists, DynamicTagNotFound, InvalidInput, PartyNotFound
from channel_api.models import PartyTag
from channel_api.tags import PartyFacts
from service import cli as cli_module
from service import scheduler
from service.cli import Runtime, cli
from service.settings import Settings
from tests.isolated_db import isolated_engine

T0 = datetime(2030, 3, 1, 8, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def engine(backend, tmp_path_factory):
    """This module commits: it gets a database of its own (see tests/isolated_db.py)."""
    with isolated_engine(backend, tmp_path_factory.mktemp("db")) as engine:
        yield engine


def build_net(session, u):
    """province zj > city hz > district xh, and province js; customer types
    retail > conv; a grade, a group."""
    ch.create_region(session, f"{u}-zj", "Zhejiang", level="province")
    ch.create_region(session, f"{u}-hz", "Hangzhou", parent=f"{u}-zj", level="city")
    ch.create_region(session, f"{u}-xh", "Xihu", parent=f"{u}-hz", level="district")
    ch.create_region(session, f"{u}-js", "Jiangsu", level="province")
    ch.create_customer_type(session, f"{u}-retail", "Retail")
    ch.create_customer_type(session, f"{u}-conv", "Convenience", parent=f"{u}-retail")
    ch.create_customer_type(session, f"{u}-dist", "Distributor")
    ch.create_grade(session, f"{u}-gold", "Gold", rank=1)
    ch.create_group(session, f"{u}-vip", "VIP")
    return u


@pytest.fixture
def net(session, unique):
    return build_net(session, unique)


def store(session, u, suffix, **overrides):
    args = dict(code=f"{u}-{suffix}", name=f"Store {suffix}", role="store", region=f"{u}-xh",
                customer_type=f"{u}-conv")
    args.update(overrides)
    return ch.create_party(session, **args)


def buy(session, buyer, placed_at, total, currency="CNY", categories=None):
    return habits.record_purchase(session, buyer=buyer, placed_at=placed_at, total_minor=total,
                                  currency=currency, category_totals=categories)


def in_region(u, region="zj"):
    return {"field": "region", "op": "eq", "value": f"{u}-{region}"}


def tagged(session, code):
    """{party code: source} of the rows carrying tag ``code``."""
    from channel_api.models import Party
    return dict(session.execute(
        select(Party.code, PartyTag.source).join(Party, Party.id == PartyTag.party_id)
        .where(PartyTag.tag == code)).all())


# -- purchase habits ------------------------------------------------------------------

def test_a_buyer_without_orders_has_no_habits(session, net):
    store(session, net, "s1")
    assert habits.get_habit(session, f"{net}-s1") is None
    with pytest.raises(PartyNotFound):
        habits.get_habit(session, f"{net}-nobody")
    with pytest.raises(PartyNotFound):
        buy(session, f"{net}-nobody", T0, 100)


def test_the_first_order_starts_the_habits(session, net):
    store(session, net, "s1")

    view = buy(session, f"{net}-s1", T0, 12_345, categories={"drinks": 10_000, "snacks": 2_345})

    assert (view.party_code, view.currency, view.order_count, view.total_minor) == (
        f"{net}-s1", "CNY", 1, 12_345)
    assert view.average_order_minor == 12_345
    assert view.first_order_at == view.last_order_at == T0
    assert view.orders_per_month is None  # one order: no rate yet
    assert view.top_categories == (("drinks", 10_000), ("snacks", 2_345))
    assert habits.get_habit(session, f"{net}-s1") == view


def test_orders_arriving_out_of_order_keep_first_and_last_right(session, net):
    store(session, net, "s1")
    buyer = f"{net}-s1"

    buy(session, buyer, T0 + timedelta(days=10), 100, categories={"a": 100})
    buy(session, buyer, T0, 101, categories={"a": 1, "b": 100})
    view = buy(session, buyer, T0 + timedelta(days=5), 102)

    assert view.order_count == 3 and view.total_minor == 303
    assert view.first_order_at == T0 and view.last_order_at == T0 + timedelta(days=10)
    assert view.average_order_minor == 101
    # Two intervals over ten days: 6 orders per 30 days.
    assert view.orders_per_month == Decimal("6.00")
    assert view.category_totals == {"a": 101, "b": 100}
    assert view.last_order_at.tzinfo is not None


def test_the_average_is_the_floor_in_minor_units(session, net):
    store(session, net, "s1")
    buy(session, f"{net}-s1", T0, 100)
    view = buy(session, f"{net}-s1", T0 + timedelta(hours=1), 101)
    assert view.average_order_minor == 100  # 201 / 2, floored
    assert isinstance(view.average_order_minor, int)


@pytest.mark.parametrize("count, span, expected", [
    (2, timedelta(days=30), Decimal("1.00")),
    (2, timedelta(days=7), Decimal("4.29")),     # 30/7 = 4.2857…
    (3, timedelta(days=45), Decimal("1.33")),
    (2, timedelta(days=60), Decimal("0.50")),
    (5, timedelta(days=8), Decimal("15.00")),
    (2, timedelta(0), None),
    (1, timedelta(days=3), None),
])
def test_orders_per_month_is_exact_decimal(count, span, expected):
    assert habits.orders_per_month(count, T0, T0 + span) == expected


def test_days_since_last_order_counts_whole_days(session, net):
    store(session, net, "s1")
    view = buy(session, f"{net}-s1", T0, 100)
    assert view.days_since_last_order(T0 + timedelta(days=29, hours=23)) == 29
    assert view.days_since_last_order(T0 + timedelta(days=30)) == 30
    assert view.days_since_last_order(T0 - timedelta(hours=1)) == 0


def test_an_order_in_another_currency_is_refused_and_changes_nothing(session, net):
    store(session, net, "s1")
    before = buy(session, f"{net}-s1", T0, 500)

    with pytest.raises(InvalidInput) as caught:
        buy(session, f"{net}-s1", T0 + timedelta(days=1), 700, currency="USD")

    assert caught.value.details["field"] == "currency"
    assert habits.get_habit(session, f"{net}-s1") == before


@pytest.mark.parametrize("changes, field", [
    ({"placed_at": datetime(2030, 1, 1)}, "placed_at"),          # naive
    ({"placed_at": "2030-01-01T00:00:00Z"}, "placed_at"),
    ({"total": -1}, "total_minor"),
    ({"total": 1.5}, "total_minor"),
    ({"total": True}, "total_minor"),
    ({"currency": "cny"}, "currency"),
    ({"currency": "CN"}, "currency"),
    ({"categories": {"drinks": -5}}, "category_totals.drinks"),
    ({"categories": {"bad code!": 5}}, "category_totals"),
    ({"categories": ["drinks"]}, "category_totals"),
])
def test_bad_purchase_input_is_refused_naming_the_field(session, net, changes, field):
    store(session, net, "s1")
    args = {"placed_at": T0, "total": 100, "currency": "CNY", "categories": None, **changes}
    with pytest.raises(InvalidInput) as caught:
        buy(session, f"{net}-s1", args["placed_at"], args["total"], args["currency"],
            args["categories"])
    assert caught.value.details["field"] == field
    assert habits.get_habit(session, f"{net}-s1") is None


def test_top_categories_are_five_by_amount_then_code(session, net):
    store(session, net, "s1")
    buy(session, f"{net}-s1", T0, 1000,
        categories={"f": 100, "e": 300, "d": 300, "c": 50, "b": 500, "a": 50})
    view = buy(session, f"{net}-s1", T0 + timedelta(days=1), 100, categories={"c": 60})

    assert view.top_categories == (("b", 500), ("d", 300), ("e", 300), ("c", 110), ("f", 100))


@pytest.mark.postgres_only
def test_concurrent_first_orders_of_one_buyer_lose_no_update(session_factory, unique):
    with session_factory() as s, s.begin():
        build_net(s, unique)
        store(s, unique, "s1")
    buyer, workers = f"{unique}-s1", 8
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def order(n: int) -> None:
        try:
            barrier.wait(timeout=10)
            with session_factory() as s, s.begin():
                buy(s, buyer, T0 + timedelta(days=n), 100 + n, categories={"drinks": n})
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=order, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    with session_factory() as s:
        view = habits.get_habit(s, buyer)
    assert view.order_count == 8
    assert view.total_minor == sum(100 + n for n in range(workers))
    assert view.category_totals == {"drinks": sum(range(workers))}
    assert (view.first_order_at, view.last_order_at) == (T0, T0 + timedelta(days=7))


# -- the rule language ------------------------------------------------------------------

ROLE_IS_STORE = {"field": "role", "op": "eq", "value": "store"}


@pytest.mark.parametrize("rule, path", [
    ("store", "rule"),
    ({}, "rule.all"),
    ({"all": []}, "rule.all"),
    ({"all": ROLE_IS_STORE}, "rule.all"),
    ({"all": [ROLE_IS_STORE], "any": []}, "rule"),
    ({"all": [7]}, "rule.all.0"),
    ({"all": [{**ROLE_IS_STORE, "extra": 1}]}, "rule.all.0"),
    ({"all": [{"field": "colour", "op": "eq", "value": "red"}]}, "rule.all.0.field"),
    ({"all": [ROLE_IS_STORE, {"field": "region", "op": "ne", "value": "r"}]}, "rule.all.1.op"),
    ({"all": [ROLE_IS_STORE, {"field": "region", "op": "gt", "value": "r"}]}, "rule.all.1.op"),
    ({"all": [{"field": "order_count", "op": "in", "value": [1]}]}, "rule.all.0.op"),
    ({"all": [{"field": "quality_customer", "op": "gt", "value": True}]}, "rule.all.0.op"),
    ({"all": [{"field": "role", "op": "like", "value": "s%"}]}, "rule.all.0.op"),
    ({"all": [{"field": "role", "op": "eq"}]}, "rule.all.0.value"),
    ({"all": [{"field": "role", "op": "eq", "value": "king"}]}, "rule.all.0.value"),
    ({"all": [{"field": "role", "op": "in", "value": []}]}, "rule.all.0.value"),
    ({"all": [{"field": "role", "op": "in", "value": "store"}]}, "rule.all.0.value"),
    ({"all": [{"field": "role", "op": "in", "value": ["store", "king"]}]}, "rule.all.0.value.1"),
    ({"all": [{"field": "quality_customer", "op": "eq", "value": 1}]}, "rule.all.0.value"),
    ({"all": [{"field": "order_count", "op": "ge", "value": True}]}, "rule.all.0.value"),
    ({"all": [{"field": "order_count", "op": "ge", "value": -1}]}, "rule.all.0.value"),
    ({"all": [{"field": "total_minor", "op": "ge", "value": 1.5}]}, "rule.all.0.value"),
    ({"all": [{"field": "days_since_last_order", "op": "lt", "value": "30"}]},
     "rule.all.0.value"),
    ({"all": [{"field": "region", "op": "eq", "value": ""}]}, "rule.all.0.value"),
    ({"all": [ROLE_IS_STORE] * 51}, "rule.all"),
])
def test_an_invalid_rule_is_refused_naming_the_path(rule, path):
    with pytest.raises(InvalidInput) as caught:
        tags.validate_rule(rule)
    assert caught.value.details["field"] == path
    assert caught.value.message.startswith(path)


def test_validate_rule_returns_a_normalized_copy_and_changes_nothing():
    rule = {"all": [{"value": ["store", "distributor"], "op": "in", "field": "role"},
                    {"field": "average_order_minor", "op": "gt", "value": 10_000}]}
    snapshot = repr(rule)

    normalized = tags.validate_rule(rule)

    assert normalized == rule and normalized is not rule
    assert repr(rule) == snapshot


# -- the evaluator (pure) -------------------------------------------------------------------

AT = datetime(2030, 6, 1, tzinfo=timezone.utc)
BASE = PartyFacts(code="s1", role="store", status="active", quality_customer=True,
                  region_path=("zj", "hz", "xh"), customer_type_path=("retail", "conv"),
                  grade="gold", groups=frozenset({"vip", "north"}), order_count=4,
                  total_minor=50_000, average_order_minor=12_500,
                  last_order_at=AT - timedelta(days=10, hours=3))
NO_ORDERS = PartyFacts(code="s2", role="store", status="active", quality_customer=False,
                       region_path=("js",), customer_type_path=("retail",), grade=None,
                       groups=frozenset())


def cond(field, op, value):
    return {"all": [{"field": field, "op": op, "value": value}]}


@pytest.mark.parametrize("rule, facts, expected", [
    (cond("role", "eq", "store"), BASE, True),
    (cond("role", "ne", "store"), BASE, False),
    (cond("role", "in", ["brand", "distributor"]), BASE, False),
    (cond("status", "eq", "frozen"), BASE, False),
    (cond("quality_customer", "eq", True), BASE, True),
    (cond("quality_customer", "ne", True), NO_ORDERS, True),
    (cond("region", "eq", "zj"), BASE, True),     # the province covers its districts
    (cond("region", "eq", "hz"), BASE, True),
    (cond("region", "eq", "xh"), BASE, True),
    (cond("region", "eq", "js"), BASE, False),
    (cond("region", "in", ["js", "hz"]), BASE, True),
    (cond("customer_type", "eq", "retail"), BASE, True),
    (cond("customer_type", "eq", "conv"), NO_ORDERS, False),
    (cond("grade", "eq", "gold"), BASE, True),
    (cond("grade", "eq", "gold"), NO_ORDERS, False),
    (cond("grade", "ne", "gold"), NO_ORDERS, True),  # no grade is "not gold"
    (cond("grade", "in", ["gold", "silver"]), NO_ORDERS, False),
    (cond("group", "eq", "vip"), BASE, True),
    (cond("group", "ne", "vip"), BASE, False),
    (cond("group", "ne", "vip"), NO_ORDERS, True),
    (cond("group", "in", ["x", "north"]), BASE, True),
    (cond("order_count", "ge", 4), BASE, True),
    (cond("order_count", "gt", 4), BASE, False),
    (cond("order_count", "eq", 0), NO_ORDERS, True),
    (cond("order_count", "lt", 1), NO_ORDERS, True),
    (cond("total_minor", "le", 50_000), BASE, True),
    (cond("total_minor", "lt", 1), NO_ORDERS, True),
    (cond("average_order_minor", "gt", 10_000), BASE, True),
    (cond("average_order_minor", "gt", 12_500), BASE, False),
    (cond("average_order_minor", "lt", 10_000), NO_ORDERS, False),  # no orders, no average
    (cond("average_order_minor", "ge", 0), NO_ORDERS, False),
    (cond("days_since_last_order", "lt", 30), BASE, True),   # 10 days and 3 hours: 10
    (cond("days_since_last_order", "eq", 10), BASE, True),
    (cond("days_since_last_order", "le", 9), BASE, False),
    (cond("days_since_last_order", "lt", 30), NO_ORDERS, False),  # never ordered
    (cond("days_since_last_order", "ge", 0), NO_ORDERS, False),
    (cond("days_since_last_order", "gt", 365), NO_ORDERS, False),
    ({"all": [cond("role", "eq", "store")["all"][0],
              cond("quality_customer", "eq", True)["all"][0],
              cond("region", "eq", "hz")["all"][0]]}, BASE, True),
    ({"all": [cond("role", "eq", "store")["all"][0],
              cond("quality_customer", "eq", True)["all"][0]]}, NO_ORDERS, False),
])
def test_the_evaluator_over_a_table_of_cases(rule, facts, expected):
    assert tags.evaluate(rule, facts, AT) is expected


facts_strategy = st.builds(
    PartyFacts, code=st.just("p"), role=st.sampled_from(["brand", "distributor", "store"]),
    status=st.sampled_from(["active", "frozen"]), quality_customer=st.booleans(),
    region_path=st.just(("r",)), customer_type_path=st.just(("t",)), grade=st.none(),
    groups=st.just(frozenset()), order_count=st.integers(1, 1000),
    total_minor=st.integers(0, 10**12), average_order_minor=st.integers(0, 10**9),
    last_order_at=st.datetimes(min_value=datetime(2029, 1, 1), max_value=datetime(2030, 6, 1),
                               timezones=st.just(timezone.utc)))


@given(facts=facts_strategy, threshold=st.integers(0, 10**12),
       field=st.sampled_from(["order_count", "total_minor", "average_order_minor"]))
def test_numeric_conditions_agree_with_python_comparisons(facts, threshold, field):
    value = getattr(facts, field)
    for op, expected in [("eq", value == threshold), ("ne", value != threshold),
                         ("gt", value > threshold), ("ge", value >= threshold),
                         ("lt", value < threshold), ("le", value <= threshold)]:
        assert tags.evaluate(cond(field, op, threshold), facts, AT) is expected


@given(facts=facts_strategy, days=st.integers(0, 600))
def test_ordered_within_n_days_means_less_than_n_whole_days_ago(facts, days):
    recent = tags.evaluate(cond("days_since_last_order", "lt", days), facts, AT)
    assert recent is (AT - facts.last_order_at < timedelta(days=days))


@given(facts=facts_strategy, a=st.sampled_from(["store", "brand"]), b=st.booleans())
def test_all_is_the_conjunction_of_its_conditions(facts, a, b):
    first, second = cond("role", "eq", a), cond("quality_customer", "eq", b)
    both = {"all": first["all"] + second["all"]}
    assert tags.evaluate(both, facts, AT) is (
        tags.evaluate(first, facts, AT) and tags.evaluate(second, facts, AT))


# -- dynamic tags: create, update, read ---------------------------------------------------------

def test_creating_the_same_dynamic_tag_twice_returns_it_and_another_rule_conflicts(session, net):
    rule = {"all": [in_region(net), ROLE_IS_STORE]}
    made = tags.create_dynamic_tag(session, f"{net}-t", "Stores in ZJ", rule, actor="ops")
    again = tags.create_dynamic_tag(session, f"{net}-t", "Stores in ZJ", rule, actor="ops")

    assert again == made and made.public_id.startswith("dtag_")
    assert (made.computed_at, made.member_count, made.rule) == (None, 0, rule)
    with pytest.raises(DynamicTagExists) as caught:
        tags.create_dynamic_tag(session, f"{net}-t", "Stores in ZJ", {"all": [in_region(net)]},
                                actor="ops")
    assert caught.value.details["field"] == "code"
    assert tags.get_dynamic_tag(session, f"{net}-t") == made
    assert made in tags.list_dynamic_tags(session)
    with pytest.raises(DynamicTagNotFound):
        tags.get_dynamic_tag(session, f"{net}-missing")


def test_a_code_in_use_as_a_manual_tag_cannot_become_a_dynamic_tag(session, net):
    store(session, net, "s1")
    ch.tag_party(session, f"{net}-s1", f"{net}-key-account")

    with pytest.raises(InvalidInput) as caught:
        tags.create_dynamic_tag(session, f"{net}-key-account", "Key accounts",
                                {"all": [in_region(net)]}, actor="ops")

    assert caught.value.details["field"] == "code"
    assert tags.is_dynamic_tag(session, f"{net}-key-account") is False


def test_a_rule_naming_an_unknown_code_is_refused(session, net):
    rule = {"all": [ROLE_IS_STORE, {"field": "group", "op": "in",
                                    "value": [f"{net}-vip", f"{net}-nope"]}]}
    with pytest.raises(InvalidInput) as caught:
        tags.create_dynamic_tag(session, f"{net}-t", "T", rule, actor="ops")
    assert caught.value.details["field"] == "rule.all.1.value.1"
    with pytest.raises(InvalidInput) as caught:
        tags.create_dynamic_tag(session, f"{net}-t", "T",
                                {"all": [in_region(net, "mars")]}, actor="ops")
    assert caught.value.details["field"] == "rule.all.0.value"


def test_bad_codes_and_names_are_refused(session, net):
    for code, name, field in [("has space", "N", "code"), ("", "N", "code"),
                              (f"{net}-t", "  ", "name")]:
        with pytest.raises(InvalidInput) as caught:
            tags.create_dynamic_tag(session, code, name, {"all": [in_region(net)]}, actor="ops")
        assert caught.value.details["field"] == field


def test_update_changes_name_and_rule_and_is_audited(session, net):
    tags.create_dynamic_tag(session, f"{net}-t", "T", {"all": [in_region(net)]}, actor="ops")
    new_rule = {"all": [in_region(net, "js")]}

    view = tags.update_dynamic_tag(session, f"{net}-t", name="Jiangsu", rule=new_rule,
                                   actor="ops")

    assert (view.name, view.rule) == ("Jiangsu", new_rule)
    with pytest.raises(InvalidInput) as caught:
        tags.update_dynamic_tag(session, f"{net}-t", rule={"all": []}, actor="ops")
    assert caught.value.details["field"] == "rule.all"
    with pytest.raises(DynamicTagNotFound):
        tags.update_dynamic_tag(session, f"{net}-nope", name="x", actor="ops")
    actions = [a.action for a in audit.list_audit(session, subject=f"{net}-t")[0]]
    assert actions == ["dynamic_tag.update", "dynamic_tag.create"]


# -- recompute -------------------------------------------------------------------------

def test_recompute_tags_matches_and_untags_parties_that_stop_matching(session, net):
    u = net
    store(session, u, "s1", quality_customer=True)
    store(session, u, "s2", quality_customer=False)
    store(session, u, "s3", quality_customer=True, region=f"{u}-js")
    code = f"{u}-quality-zj"
    tags.create_dynamic_tag(session, code, "Quality customers in ZJ", {"all": [
        in_region(u), {"field": "quality_customer", "op": "eq", "value": True}]}, actor="ops")

    first = tags.recompute_dynamic_tag(session, code, at=AT)

    assert (first.matched, first.added, first.removed) == (1, 1, 0)
    assert tagged(session, code) == {f"{u}-s1": "dynamic"}
    assert code in ch.get_party(session, f"{u}-s1").tags
    assert (first.tag.member_count, first.tag.computed_at) == (1, AT)

    ch.update_party(session, f"{u}-s1", quality_customer=False)
    ch.update_party(session, f"{u}-s2", quality_customer=True)
    second = tags.recompute_dynamic_tag(session, code, at=AT)

    assert (second.matched, second.added, second.removed) == (1, 1, 1)
    assert tagged(session, code) == {f"{u}-s2": "dynamic"}

    third = tags.recompute_dynamic_tag(session, code, at=AT)
    assert (third.matched, third.added, third.removed) == (1, 0, 0)  # idempotent
    assert tagged(session, code) == {f"{u}-s2": "dynamic"}

    records = audit.list_audit(session, subject=code, action="dynamic_tag.recompute")[0]
    assert [(r.details["matched"], r.details["added"], r.details["removed"]) for r in records] == [
        (1, 0, 0), (1, 1, 1), (1, 1, 0)]
    assert records[0].actor == "system"


def test_recompute_never_touches_manual_tags(session, net):
    u = net
    code = f"{u}-stores"
    for n in (1, 2, 3):
        store(session, u, f"s{n}")
    ch.create_party(session, code=f"{u}-d1", name="Dist", role="distributor", region=f"{u}-hz",
                    customer_type=f"{u}-dist")
    ch.tag_party(session, f"{u}-s1", "key-account")
    tags.create_dynamic_tag(session, code, "Stores", {"all": [in_region(u), ROLE_IS_STORE]},
                            actor="ops")
    # Rows of the same text put by hand (before the manual-tag check existed):
    # one on a party that matches, one on a party that does not.
    from channel_api.parties import party_row
    for party in (f"{u}-s2", f"{u}-d1"):
        session.add(PartyTag(party_id=party_row(session, party).id, tag=code, source="manual"))
    session.flush()

    result = tags.recompute_dynamic_tag(session, code, at=AT)
    again = tags.recompute_dynamic_tag(session, code, at=AT)

    assert (result.matched, result.added, result.removed) == (3, 2, 0)
    assert (again.added, again.removed) == (0, 0)
    assert tagged(session, code) == {f"{u}-s1": "dynamic", f"{u}-s2": "manual",
                                     f"{u}-s3": "dynamic", f"{u}-d1": "manual"}
    assert tagged(session, "key-account")[f"{u}-s1"] == "manual"

    tags.update_dynamic_tag(session, code, rule={"all": [in_region(u, "js")]}, actor="ops")
    emptied = tags.recompute_dynamic_tag(session, code, at=AT)
    assert (emptied.matched, emptied.removed) == (0, 2)
    assert tagged(session, code) == {f"{u}-s2": "manual", f"{u}-d1": "manual"}


def test_ordered_in_the_last_30_days(session, net):
    u = net
    for n in (1, 2, 3):
        store(session, u, f"s{n}")
    buy(session, f"{u}-s1", AT - timedelta(days=10), 100)
    buy(session, f"{u}-s2", AT - timedelta(days=40), 100)
    buy(session, f"{u}-s2", AT - timedelta(days=30), 100)  # exactly 30 days: not "in the last 30"
    code = f"{u}-recent"
    tags.create_dynamic_tag(session, code, "Ordered in the last 30 days", {"all": [
        in_region(u), {"field": "days_since_last_order", "op": "lt", "value": 30}]}, actor="ops")

    now = tags.recompute_dynamic_tag(session, code, at=AT)
    assert (now.matched, now.added) == (1, 1)
    assert set(tagged(session, code)) == {f"{u}-s1"}

    later = tags.recompute_dynamic_tag(session, code, at=AT + timedelta(days=25))
    assert (later.matched, later.added, later.removed) == (0, 0, 1)
    assert tagged(session, code) == {}

    buy(session, f"{u}-s3", AT + timedelta(days=24), 100)
    latest = tags.recompute_dynamic_tag(session, code, at=AT + timedelta(days=25))
    assert set(tagged(session, code)) == {f"{u}-s3"} and latest.added == 1


def test_average_order_above_x(session, net):
    u = net
    for n in (1, 2, 3):
        store(session, u, f"s{n}")
    buy(session, f"{u}-s1", AT - timedelta(days=3), 15_000)
    buy(session, f"{u}-s1", AT - timedelta(days=2), 9_001)   # average 12,000
    buy(session, f"{u}-s2", AT - timedelta(days=2), 10_000)  # exactly 10,000: not above
    code = f"{u}-big-basket"
    tags.create_dynamic_tag(session, code, "Average order above 100 yuan", {"all": [
        in_region(u), {"field": "average_order_minor", "op": "gt", "value": 10_000}]},
        actor="ops")

    result = tags.recompute_dynamic_tag(session, code, at=AT)

    assert result.matched == 1 and set(tagged(session, code)) == {f"{u}-s1"}


def test_region_subtree_customer_type_grade_and_group(session, net):
    u = net
    store(session, u, "xh1")                                   # zj > hz > xh
    store(session, u, "hz1", region=f"{u}-hz", grade=f"{u}-gold")
    store(session, u, "js1", region=f"{u}-js", grade=f"{u}-gold")
    ch.create_party(session, code=f"{u}-d1", name="Dist", role="distributor", region=f"{u}-zj",
                    customer_type=f"{u}-dist")
    ch.add_to_group(session, f"{u}-js1", f"{u}-vip")
    ch.add_to_group(session, f"{u}-xh1", f"{u}-vip")
    cases = [
        ({"all": [in_region(u, "hz")]}, {"xh1", "hz1"}),
        ({"all": [in_region(u, "zj")]}, {"xh1", "hz1", "d1"}),
        ({"all": [{"field": "region", "op": "in", "value": [f"{u}-xh", f"{u}-js"]}]},
         {"xh1", "js1"}),
        ({"all": [{"field": "customer_type", "op": "eq", "value": f"{u}-retail"}]},
         {"xh1", "hz1", "js1"}),
        ({"all": [{"field": "grade", "op": "eq", "value": f"{u}-gold"}]}, {"hz1", "js1"}),
        ({"all": [{"field": "group", "op": "eq", "value": f"{u}-vip"}, in_region(u)]}, {"xh1"}),
        ({"all": [{"field": "group", "op": "ne", "value": f"{u}-vip"},
                  {"field": "customer_type", "op": "in",
                   "value": [f"{u}-retail", f"{u}-dist"]}]}, {"hz1", "d1"}),
    ]
    for n, (rule, expected) in enumerate(cases):
        code = f"{u}-case{n}"
        tags.create_dynamic_tag(session, code, f"case {n}", rule, actor="ops")
        result = tags.recompute_dynamic_tag(session, code, at=AT)
        assert set(tagged(session, code)) == {f"{u}-{s}" for s in expected}, rule
        assert result.matched == len(expected)


def test_recompute_reports_progress_every_chunk(session, net):
    u = net
    for n in range(5):
        store(session, u, f"s{n}")
    code = f"{u}-zj"
    tags.create_dynamic_tag(session, code, "ZJ", {"all": [in_region(u)]}, actor="ops")
    calls = []

    result = tags.recompute_dynamic_tag(session, code, at=AT, chunk_size=2,
                                        progress=lambda done, total: calls.append((done, total)))

    assert result.matched == 5
    total = calls[-1][1]
    assert calls[-1][0] == total >= 5
    assert [done for done, _ in calls] == sorted({min(2 * k, total)
                                                  for k in range(1, (total + 1) // 2 + 1)})


def test_recompute_needs_a_fixed_number_of_queries_whatever_the_party_count(session, net, engine):
    u = net
    code = f"{u}-zj-vip"
    tags.create_dynamic_tag(session, code, "VIPs in ZJ", {"all": [
        in_region(u), {"field": "group", "op": "ne", "value": f"{u}-vip"},
        {"field": "grade", "op": "ne", "value": f"{u}-gold"},
        {"field": "customer_type", "op": "eq", "value": f"{u}-retail"},
        {"field": "days_since_last_order", "op": "lt", "value": 30}]}, actor="ops")

    def statements(parties: int) -> tuple[int, int]:
        for n in range(parties):
            store(session, u, f"p{parties}-{n}")
            buy(session, f"{u}-p{parties}-{n}", AT - timedelta(days=1), 100)
        session.flush()
        seen = []
        listener = lambda *args: seen.append(args[2])  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            result = tags.recompute_dynamic_tag(session, code, at=AT, chunk_size=100_000)
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        return len(seen), result.added

    few, added_few = statements(3)
    many, added_many = statements(60)

    assert (added_few, added_many) == (3, 60)
    # The tag row, a count, the two trees, the grades, then per chunk: parties
    # with their habits, group memberships, existing tag rows, and one insert;
    # then the tag update and the audit row.
    assert few == many <= 12


def test_recompute_of_an_unknown_tag_or_naive_time_is_refused(session, net):
    with pytest.raises(DynamicTagNotFound):
        tags.recompute_dynamic_tag(session, f"{net}-nope")
    tags.create_dynamic_tag(session, f"{net}-t", "T", {"all": [in_region(net)]}, actor="ops")
    with pytest.raises(InvalidInput) as caught:
        tags.recompute_dynamic_tag(session, f"{net}-t", at=datetime(2030, 1, 1))
    assert caught.value.details["field"] == "at"


def test_recompute_all_covers_every_dynamic_tag(session, net):
    u = net
    store(session, u, "s1")
    tags.create_dynamic_tag(session, f"{u}-a", "A", {"all": [in_region(u)]}, actor="ops")
    tags.create_dynamic_tag(session, f"{u}-b", "B", {"all": [in_region(u, "js")]}, actor="ops")
    seen = set()

    results = tags.recompute_all(session, at=AT, progress=lambda c, d, t: seen.add(c))

    by_code = {r.tag.code: r for r in results}
    assert by_code[f"{u}-a"].matched == 1 and by_code[f"{u}-b"].matched == 0
    assert {f"{u}-a", f"{u}-b"} <= seen
    assert [r.tag.code for r in results] == sorted(by_code)


# -- the CLI command and the scheduler job -------------------------------------------------------

@pytest.fixture
def committed_tag(session_factory, unique):
    """A committed network with two stores in ZJ and a tag over them."""
    code = f"{unique}-zj"
    with session_factory() as s, s.begin():
        build_net(s, unique)
        store(s, unique, "s1")
        store(s, unique, "s2")
        tags.create_dynamic_tag(s, code, "ZJ", {"all": [in_region(unique)]}, actor="test")
    return code


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_cli_recompute_tags_prints_progress_and_a_summary(engine, committed_tag, session_factory,
                                                          monkeypatch, capsys, restore_logging):
    monkeypatch.setenv("CL_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("CL_LOG_FORMAT", "text")
    monkeypatch.setattr("sys.argv", ["channel-ledger", "recompute-tags", "--tag", committed_tag])

    with pytest.raises(SystemExit) as exit_:
        cli_module.main()

    assert exit_.value.code == 0
    out, err = capsys.readouterr()
    assert re.search(rf"^{re.escape(committed_tag)}: (\d+)/\1 parties evaluated$", err, re.M)
    assert out.splitlines() == [f"{committed_tag}: 2 matched, 2 added, 0 removed",
                                "recomputed 1 dynamic tag(s)"]
    with session_factory() as s:
        assert len(tagged(s, committed_tag)) == 2
        record = audit.list_audit(s, subject=committed_tag, action="dynamic_tag.recompute")[0][0]
        assert record.actor == "cli"


def test_cli_recompute_tags_without_a_tag_does_them_all(engine, committed_tag):
    from click.testing import CliRunner

    runtime = Runtime(Settings(database_url=engine.url.render_as_string(hide_password=False),
                               log_format="text"), engine=engine)
    result = CliRunner().invoke(cli, ["recompute-tags"], obj=runtime, catch_exceptions=False)

    assert result.exit_code == 0, result.output
    assert f"{committed_tag}: 2 matched, " in result.stdout
    assert re.search(r"^recomputed \d+ dynamic tag\(s\)$", result.stdout, re.M)
    assert f"{committed_tag}: " in result.stderr

    missing = CliRunner().invoke(cli, ["recompute-tags", "--tag", "no-such-tag"], obj=runtime)
    assert missing.exit_code == 1
    assert "no dynamic tag 'no-such-tag'" in missing.stderr


def test_the_scheduler_job_recomputes_every_tag_in_its_own_transaction(committed_tag,
                                                                       session_factory):
    results = scheduler.recompute_dynamic_tags(session_factory)
    again = scheduler.recompute_dynamic_tags(session_factory)

    mine = {r.tag.code: r for r in results}[committed_tag]
    assert (mine.matched, mine.added, mine.removed) == (2, 2, 0)
    assert all((r.added, r.removed) == (0, 0) for r in again)
    with session_factory() as s:
        assert tags.get_dynamic_tag(s, committed_tag).member_count == 2
        assert audit.list_audit(s, subject=committed_tag,
                                action="dynamic_tag.recompute")[0][0].actor == "scheduler"


def test_the_scheduler_runs_the_recompute_daily_at_two_in_the_business_timezone(session_factory):
    settings = Settings(timezone="Asia/Shanghai")
    lease = scheduler.Lease(session_factory, ttl_seconds=30)

    jobs = {job.id: job for job in
            scheduler.build_scheduler(settings, session_factory, lease).get_jobs()}

    trigger = jobs["recompute_dynamic_tags"].trigger
    fields = {f.name: str(f) for f in trigger.fields}
    assert (fields["hour"], fields["minute"], fields["day"]) == ("2", "0", "*")
    assert str(trigger.timezone) == "Asia/Shanghai"
    shanghai_now = datetime(2030, 3, 1, 12, 0, tzinfo=settings.tz)
    assert trigger.get_next_fire_time(None, shanghai_now) == datetime(
        2030, 3, 2, 2, 0, tzinfo=settings.tz)


def test_manual_tagging_refuses_a_dynamic_tag_s_code(session):
    import channel_api as ch
    from channel_api import tags

    ch.create_region(session, "RX", "Region")
    ch.create_customer_type(session, "TX", "Type")
    ch.create_party(session, code="PX", name="PX", role="store", region="RX", customer_type="TX")
    tags.create_dynamic_tag(session, "dyn-q", "Quality", {"all": [
        {"field": "quality_customer", "op": "eq", "value": True}]}, actor="test")
    for change in (ch.tag_party, ch.untag_party):
        with pytest.raises(ch.InvalidParty) as error:
            change(session, "PX", "dyn-q")
        assert error.value.details["field"] == "tag"
