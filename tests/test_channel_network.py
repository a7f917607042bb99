"""The supply network (issue 3): relationships with purchase permissions,
sale permissions, coverage in bulk, and the assortment a buyer may buy, on
SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, func, insert, select

from channel_api import catalog as cat
from channel_api import network as net
from channel_api import parties
from channel_api.assortment import assortment
from channel_api.audit import list_audit
from channel_api.errors import (
    CategoryNotFound,
    CustomerTypeNotFound,
    InvalidInput,
    NotPurchasable,
    PartyNotFound,
    RegionNotFound,
    RelationshipNotFound,
    SkuNotFound,
)
from channel_api.models import AuditRecord, CustomerType, Party, Region, SupplyRelationship
from ledger import new_uuid7, utcnow

ACTOR = "ops:alice"
NOW = datetime.now(timezone.utc)


@pytest.fixture
def world(session):
    """Regions cn > zj > hz and cn > js; customer types retail > conv and
    retail > super; a brand, two distributors, four stores; a small catalog
    (drinks > tea, snacks)."""
    parties.create_region(session, "cn", "China")
    parties.create_region(session, "zj", "Zhejiang", parent="cn")
    parties.create_region(session, "hz", "Hangzhou", parent="zj")
    parties.create_region(session, "js", "Jiangsu", parent="cn")
    parties.create_customer_type(session, "retail", "Retail")
    parties.create_customer_type(session, "conv", "Convenience", parent="retail")
    parties.create_customer_type(session, "super", "Supermarket", parent="retail")
    parties.create_customer_type(session, "trade", "Trade")
    for code, role, region, ctype in [
            ("brand", "brand", "cn", "trade"), ("d1", "distributor", "zj", "trade"),
            ("d2", "distributor", "js", "trade"), ("s-hz-conv", "store", "hz", "conv"),
            ("s-zj-super", "store", "zj", "super"), ("s-js-conv", "store", "js", "conv"),
            ("s-hz-super", "store", "hz", "super")]:
        parties.create_party(session, code=code, name=code.upper(), role=role, region=region,
                             customer_type=ctype)
    cat.create_category(session, "drinks", "Drinks")
    cat.create_category(session, "tea", "Tea", parent="drinks")
    cat.create_category(session, "snacks", "Snacks")
    cat.create_unit(session, "btl", "Bottle")
    cat.create_product(session, "p-tea", "Tea", category="tea")
    cat.create_product(session, "p-chips", "Chips", category="snacks")
    cat.create_sku(session, "tea-1", "Tea 1", product="p-tea", unit="btl", list_price_minor=300)
    cat.create_sku(session, "chips-1", "Chips 1", product="p-chips", unit="btl",
                   list_price_minor=500)
    return session


def _count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def _audits(session, action=None):
    return list_audit(session, action=action, limit=500)[0]


@pytest.fixture
def statements(session):
    seen: list[str] = []
    bind = session.connection()

    def count(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(bind, "before_cursor_execute", count)
    yield seen
    event.remove(bind, "before_cursor_execute", count)


# -- relationships ------------------------------------------------------------------

def test_a_relationship_is_created_with_defaults_and_audited(world):
    made = net.create_relationship(world, seller="brand", buyer="d1", actor=ACTOR)
    assert made.public_id.startswith("rel_") and len(made.public_id) == 4 + 32
    assert (made.seller_code, made.buyer_code, made.status, made.origin) == (
        "brand", "d1", "active", "manual")
    assert made.product_scope == {"all": True} and made.valid_to is None
    assert abs((made.valid_from - utcnow()).total_seconds()) < 60
    assert net.get_relationship(world, made.public_id) == made
    [row] = _audits(world, "relationship.create")
    assert (row.actor, row.subject_type, row.subject) == (ACTOR, "relationship", made.public_id)
    assert row.details["seller"] == "brand" and row.details["product_scope"] == {"all": True}


def test_creating_the_same_relationship_again_returns_it_without_a_second_audit(world):
    scope = {"categories": ["tea"], "skus": ["chips-1"]}
    until = NOW + timedelta(days=30)
    first = net.create_relationship(world, seller="d1", buyer="s-hz-conv", product_scope=scope,
                                    valid_to=until, actor=ACTOR)
    again = net.create_relationship(world, seller="d1", buyer="s-hz-conv",
                                    product_scope={"skus": ["chips-1"], "categories": ["tea"]},
                                    valid_to=until, actor="ops:bob")
    assert again == first
    assert first.product_scope == {"categories": ["tea"], "skus": ["chips-1"]}
    assert len(_audits(world, "relationship.create")) == 1
    with pytest.raises(InvalidInput) as caught:
        net.create_relationship(world, seller="d1", buyer="s-hz-conv", actor=ACTOR)
    assert caught.value.details == {"field": "buyer", "relationship": first.public_id}
    assert "update_relationship" in caught.value.message


@pytest.mark.parametrize("args, error, field", [
    ({"seller": "s-hz-conv", "buyer": "s-js-conv"}, InvalidInput, "seller"),
    ({"seller": "d1", "buyer": "brand"}, InvalidInput, "buyer"),
    ({"seller": "d1", "buyer": "d1"}, InvalidInput, "buyer"),
    ({"seller": "nobody"}, PartyNotFound, "seller"),
    ({"buyer": "nobody"}, PartyNotFound, "buyer"),
    ({"product_scope": {"categories": ["tea", "nope"]}}, CategoryNotFound,
     "product_scope.categories"),
    ({"product_scope": {"skus": ["nope"]}}, SkuNotFound, "product_scope.skus"),
    ({"product_scope": {"all": "yes"}}, InvalidInput, "product_scope.all"),
    ({"product_scope": {"brands": ["x"]}}, InvalidInput, "product_scope"),
    ({"valid_from": NOW, "valid_to": NOW}, InvalidInput, "valid_to"),
    ({"valid_to": NOW - timedelta(days=1)}, InvalidInput, "valid_to"),
    ({"valid_from": datetime(2030, 1, 1)}, InvalidInput, "valid_from"),
    ({"actor": " "}, InvalidInput, "actor"),
])
def test_a_bad_relationship_names_the_field_and_writes_nothing(world, args, error, field):
    call = {"seller": "d1", "buyer": "s-hz-conv", "actor": ACTOR, **args}
    with pytest.raises(error) as caught:
        net.create_relationship(world, **call)
    assert caught.value.details["field"] == field
    assert _count(world, SupplyRelationship) == 0 and _count(world, AuditRecord) == 0


def test_updating_a_relationship_changes_what_is_given_and_audits_only_changes(world):
    made = net.create_relationship(world, seller="d1", buyer="s-hz-conv", actor=ACTOR)
    same = net.update_relationship(world, made.public_id, status="active",
                                   product_scope={"all": True}, actor=ACTOR)
    assert same == made and _audits(world, "relationship.update") == []
    until = NOW + timedelta(days=7)
    changed = net.update_relationship(world, made.public_id, status="suspended",
                                      product_scope={"categories": ["snacks"]}, valid_to=until,
                                      actor="ops:bob")
    assert (changed.status, changed.product_scope, changed.valid_to) == (
        "suspended", {"categories": ["snacks"], "skus": []}, until)
    assert changed.valid_from == made.valid_from and changed.origin == "manual"
    [row] = _audits(world, "relationship.update")
    assert row.actor == "ops:bob" and row.details == {
        "status": "suspended", "product_scope": {"categories": ["snacks"], "skus": []},
        "valid_to": until.isoformat()}
    assert net.update_relationship(world, made.public_id, valid_to=None,
                                   actor=ACTOR).valid_to is None


def test_a_bad_relationship_update_names_the_field_and_changes_nothing(world):
    made = net.create_relationship(world, seller="d1", buyer="s-hz-conv", actor=ACTOR)
    for kwargs, field in [({"status": "paused"}, "status"),
                          ({"valid_to": made.valid_from - timedelta(seconds=1)}, "valid_to"),
                          ({"valid_from": None}, "valid_from"),
                          ({"status": "ended", "product_scope": {"skus": ["x"]}},
                           "product_scope.skus")]:
        with pytest.raises((InvalidInput, SkuNotFound)) as caught:
            net.update_relationship(world, made.public_id, actor=ACTOR, **kwargs)
        assert caught.value.details["field"] == field
    assert net.get_relationship(world, made.public_id) == made
    assert _audits(world, "relationship.update") == []
    with pytest.raises(RelationshipNotFound) as caught:
        net.update_relationship(world, "rel_nope", status="ended", actor=ACTOR)
    assert caught.value.details["field"] == "relationship"


def test_relationships_filter_by_party_status_and_origin_and_page(world):
    made = [net.create_relationship(world, seller="d1", buyer=b, actor=ACTOR)
            for b in ("s-hz-conv", "s-zj-super", "s-hz-super")]
    net.create_relationship(world, seller="brand", buyer="d1", actor=ACTOR)
    net.update_relationship(world, made[1].public_id, status="ended", actor=ACTOR)
    page, cursor = net.list_relationships(world, seller="d1", limit=2)
    assert [r.buyer_code for r in page] == ["s-hz-conv", "s-zj-super"]
    assert cursor == made[1].public_id
    page, cursor = net.list_relationships(world, seller="d1", after=cursor, limit=2)
    assert [r.buyer_code for r in page] == ["s-hz-super"] and cursor is None
    assert [r.seller_code for r in net.list_relationships(world, buyer="d1")[0]] == ["brand"]
    assert [r.buyer_code for r in net.list_relationships(world, seller="d1",
                                                         status="ended")[0]] == ["s-zj-super"]
    assert net.list_relationships(world, seller="d1", origin="coverage")[0] == []
    with pytest.raises(InvalidInput) as caught:
        net.list_relationships(world, origin="import")
    assert caught.value.details["field"] == "origin"


# -- sale permissions --------------------------------------------------------------

def test_a_distributor_sale_permission_is_set_replaced_and_audited_once_per_change(world):
    assert net.get_sale_permission(world, "d1") is None
    first = net.set_sale_permission(world, "d1", product_scope={"categories": ["drinks"]},
                                    regions=["zj"], actor=ACTOR)
    assert (first.party_code, first.product_scope, first.regions, first.implicit) == (
        "d1", {"categories": ["drinks"], "skus": []}, ("zj",), False)
    assert net.set_sale_permission(world, "d1", product_scope={"categories": ["drinks"]},
                                   regions=["zj"], actor=ACTOR) == first
    second = net.set_sale_permission(world, "d1", product_scope={"all": True}, regions=[],
                                     actor=ACTOR)
    assert net.get_sale_permission(world, "d1") == second and second.regions == ()
    rows = _audits(world, "sale_permission.set")
    assert [(r.subject_type, r.subject, r.details["regions"]) for r in rows] == [
        ("party", "d1", []), ("party", "d1", ["zj"])]


def test_the_brand_sells_everything_implicitly_and_a_store_sells_nothing(world):
    brand = net.get_sale_permission(world, "brand")
    assert (brand.product_scope, brand.regions, brand.implicit) == ({"all": True}, (), True)
    assert net.get_sale_permission(world, "s-hz-conv") is None
    for party in ("brand", "s-hz-conv"):
        with pytest.raises(InvalidInput) as caught:
            net.set_sale_permission(world, party, product_scope={"all": True}, regions=[],
                                    actor=ACTOR)
        assert caught.value.details["field"] == "party"


def test_a_sale_permission_in_unknown_regions_or_categories_is_refused(world):
    with pytest.raises(RegionNotFound) as caught:
        net.set_sale_permission(world, "d1", product_scope={"all": True},
                                regions=["zj", "mars"], actor=ACTOR)
    assert caught.value.details == {"field": "regions", "codes": ["mars"]}
    with pytest.raises(CategoryNotFound):
        net.set_sale_permission(world, "d1", product_scope={"categories": ["x"]}, regions=[],
                                actor=ACTOR)
    with pytest.raises(InvalidInput) as caught:
        net.set_sale_permission(world, "d1", product_scope={"all": True}, regions="zj",
                                actor=ACTOR)
    assert caught.value.details["field"] == "regions"
    with pytest.raises(InvalidInput) as caught:
        net.set_sale_permission(world, "d1", product_scope=None, regions=[], actor=ACTOR)
    assert caught.value.details["field"] == "product_scope"
    assert net.get_sale_permission(world, "d1") is None and _count(world, AuditRecord) == 0


# -- coverage ----------------------------------------------------------------------

def _covered(session, seller="d1", status="active"):
    return sorted(r.buyer_code for r in net.list_coverage(session, seller, status=status,
                                                           limit=500)[0])


def test_coverage_by_region_includes_the_subtree_and_only_stores(world):
    result = net.assign_coverage(world, "d1", region="zj", actor=ACTOR)
    assert result == net.CoverageResult(matched=3, created=3)
    assert _covered(world) == ["s-hz-conv", "s-hz-super", "s-zj-super"]
    rel = net.list_coverage(world, "d1")[0][0]
    assert (rel.origin, rel.product_scope, rel.valid_to) == ("coverage", {"all": True}, None)


def test_coverage_by_customer_type_includes_the_subtree(world):
    assert net.assign_coverage(world, "d2", customer_type="retail", actor=ACTOR).created == 4
    assert net.assign_coverage(world, "d1", customer_type="conv", actor=ACTOR).created == 2
    assert _covered(world, "d1") == ["s-hz-conv", "s-js-conv"]


def test_coverage_selectors_combine_with_and(world):
    result = net.assign_coverage(world, "d1", region="zj", customer_type="super",
                                 stores=["s-hz-super", "s-hz-conv", "s-js-conv", "d2"],
                                 product_scope={"categories": ["drinks"]}, actor=ACTOR)
    assert (result.matched, result.created) == (1, 1)
    [rel] = net.list_coverage(world, "d1")[0]
    assert rel.buyer_code == "s-hz-super"
    assert rel.product_scope == {"categories": ["drinks"], "skus": []}


def test_coverage_by_list_skips_parties_that_are_not_stores(world):
    result = net.assign_coverage(world, "d1", stores=["s-js-conv", "d2", "s-js-conv"],
                                 actor=ACTOR)
    assert (result.matched, result.created) == (1, 1)
    assert _covered(world) == ["s-js-conv"]


@pytest.mark.parametrize("kwargs, error, field", [
    ({}, InvalidInput, "stores"),
    ({"stores": []}, InvalidInput, "stores"),
    ({"stores": ["s-hz-conv", "nobody"]}, PartyNotFound, "stores"),
    ({"stores": ["bad code"]}, InvalidInput, "stores"),
    ({"region": "mars"}, RegionNotFound, "region"),
    ({"customer_type": "alien"}, CustomerTypeNotFound, "customer_type"),
    ({"region": "zj", "product_scope": {"skus": ["nope"]}}, SkuNotFound, "product_scope.skus"),
    ({"region": "zj", "distributor": "s-hz-conv"}, InvalidInput, "distributor"),
    ({"region": "zj", "distributor": "nobody"}, PartyNotFound, "distributor"),
    ({"region": "zj", "actor": ""}, InvalidInput, "actor"),
])
def test_bad_coverage_input_names_the_field_and_writes_nothing(world, kwargs, error, field):
    call = {"distributor": "d1", "actor": ACTOR, **kwargs}
    with pytest.raises(error) as caught:
        net.assign_coverage(world, call.pop("distributor"), **call)
    assert caught.value.details["field"] == field
    assert _count(world, SupplyRelationship) == 0 and _count(world, AuditRecord) == 0


def test_each_coverage_call_writes_one_audit_row_with_selectors_and_counts(world):
    net.assign_coverage(world, "d1", region="hz", stores=["s-hz-conv", "s-js-conv"],
                        actor=ACTOR)
    net.unassign_coverage(world, "d1", region="hz", actor="ops:bob")
    assign, = _audits(world, "coverage.assign")
    assert (assign.actor, assign.subject_type, assign.subject) == (ACTOR, "party", "d1")
    assert assign.details["selectors"] == {"region": "hz", "stores": ["s-hz-conv", "s-js-conv"],
                                           "stores_count": 2}
    assert (assign.details["matched"], assign.details["created"]) == (1, 1)
    assert assign.details["product_scope"] == {"all": True}
    unassign, = _audits(world, "coverage.unassign")
    assert unassign.actor == "ops:bob" and unassign.details["selectors"] == {"region": "hz"}
    assert (unassign.details["matched"], unassign.details["ended"]) == (2, 1)


def test_unassign_ends_coverage_and_assign_reactivates_it(world):
    net.assign_coverage(world, "d1", region="zj", actor=ACTOR)
    result = net.unassign_coverage(world, "d1", region="hz", actor=ACTOR)
    assert result == net.CoverageResult(matched=2, ended=2)
    assert _covered(world) == ["s-zj-super"]
    assert _covered(world, status="ended") == ["s-hz-conv", "s-hz-super"]
    [rel] = [r for r in net.list_coverage(world, "d1")[0] if r.buyer_code == "s-hz-conv"]
    net.update_relationship(world, rel.public_id, status="active", actor=ACTOR)
    net.update_relationship(world, rel.public_id, status="suspended", actor=ACTOR)
    again = net.assign_coverage(world, "d1", region="zj", actor=ACTOR)
    assert again == net.CoverageResult(matched=3, reactivated=2, unchanged=1)
    assert _covered(world) == ["s-hz-conv", "s-hz-super", "s-zj-super"]
    revived = net.get_relationship(world, rel.public_id)
    assert (revived.status, revived.valid_to, revived.public_id) == ("active", None,
                                                                     rel.public_id)
    assert net.unassign_coverage(world, "d1", region="js", actor=ACTOR) == net.CoverageResult(
        matched=1, unchanged=1)


def test_assign_updates_the_scope_of_coverage_but_leaves_manual_relationships(world):
    manual = net.create_relationship(world, seller="d1", buyer="s-hz-conv",
                                     product_scope={"skus": ["tea-1"]}, actor=ACTOR)
    net.assign_coverage(world, "d1", region="hz", actor=ACTOR)
    result = net.assign_coverage(world, "d1", region="hz",
                                 product_scope={"categories": ["snacks"]}, actor=ACTOR)
    assert result == net.CoverageResult(matched=2, updated=1, unchanged=1)
    assert net.get_relationship(world, manual.public_id) == manual
    [covered] = net.list_coverage(world, "d1")[0]
    assert (covered.buyer_code, covered.product_scope) == (
        "s-hz-super", {"categories": ["snacks"], "skus": []})
    assert net.unassign_coverage(world, "d1", region="hz", actor=ACTOR).ended == 1
    assert net.get_relationship(world, manual.public_id).status == "active"


def test_coverage_of_hundreds_of_stores_takes_a_fixed_number_of_statements(world, statements):
    region, ctype = (world.scalar(select(m.id).where(m.code == c))
                     for m, c in ((Region, "hz"), (CustomerType, "conv")))
    world.execute(insert(Party), [dict(
        public_id="pty_" + new_uuid7().hex, code=f"bulk-{n:04d}", name=f"Bulk {n}",
        role="store", status="active", region_id=region, customer_type_id=ctype,
        owner_name="", contact_phone="", address="", quality_customer=False,
        created_at=utcnow(), meta={}) for n in range(300)])
    statements.clear()
    result = net.assign_coverage(world, "d1", region="hz", actor=ACTOR)
    assert (result.matched, result.created) == (302, 302)
    assert len(statements) <= 12
    assert len(_covered(world)) == 302
    by_list = [f"bulk-{n:04d}" for n in range(0, 300, 2)]
    statements.clear()
    assert net.unassign_coverage(world, "d1", stores=by_list, actor=ACTOR).ended == 150
    assert len(statements) <= 12
    statements.clear()
    again = net.assign_coverage(world, "d1", customer_type="retail", actor=ACTOR)
    assert again == net.CoverageResult(matched=304, created=2, reactivated=150, unchanged=152)
    assert len(statements) <= 12
    assert len(_audits(world)) == 3


# -- assortment --------------------------------------------------------------------

TEA, CHIPS = ("tea-1", ("drinks", "tea")), ("chips-1", ("snacks",))


def test_the_brand_sells_what_the_purchase_permission_allows(world):
    made = net.create_relationship(world, seller="brand", buyer="d1",
                                   product_scope={"categories": ["drinks"]}, actor=ACTOR)
    got = assortment(world, seller="brand", buyer="d1")
    assert (got.relationship, got.seller_code, got.buyer_code) == (made.public_id, "brand", "d1")
    assert got.sale_scope is None and len(got.scopes) == 1
    assert got.covers(*TEA) and got.why_not(*TEA) is None
    assert not got.covers(*CHIPS) and got.why_not(*CHIPS) == "outside_purchase_permission"


def test_a_distributor_sells_the_intersection_of_both_permissions(world):
    net.create_relationship(world, seller="d1", buyer="s-hz-conv",
                            product_scope={"skus": ["chips-1", "tea-1"]}, actor=ACTOR)
    got = assortment(world, seller="d1", buyer="s-hz-conv")
    assert got.why_not(*TEA) == got.why_not(*CHIPS) == "outside_sale_permission"
    net.set_sale_permission(world, "d1", product_scope={"categories": ["tea"]},
                            regions=["zj"], actor=ACTOR)
    got = assortment(world, seller="d1", buyer="s-hz-conv")
    assert got.covers(*TEA) and got.why_not(*CHIPS) == "outside_sale_permission"
    assert got.why_not("tea-2", ("drinks",)) == "outside_purchase_permission"


def _refused(session, seller="d1", buyer="s-hz-conv", **kwargs) -> str:
    with pytest.raises(NotPurchasable) as caught:
        assortment(session, seller=seller, buyer=buyer, **kwargs)
    assert caught.value.http_status == 422
    assert (caught.value.details["seller"], caught.value.details["buyer"]) == (seller, buyer)
    return caught.value.details["reason"]


def test_every_reason_nothing_may_be_bought(world):
    assert _refused(world) == "no_relationship"
    assert _refused(world, seller="s-hz-conv", buyer="d1") == "no_relationship"
    rel = net.create_relationship(world, seller="d1", buyer="s-hz-conv",
                                  valid_from=NOW - timedelta(days=1),
                                  valid_to=NOW + timedelta(days=1), actor=ACTOR).public_id
    net.set_sale_permission(world, "d1", product_scope={"all": True}, regions=["js"],
                            actor=ACTOR)
    assert _refused(world) == "outside_sale_region"
    net.set_sale_permission(world, "d1", product_scope={"all": True}, regions=["cn"],
                            actor=ACTOR)
    assert assortment(world, seller="d1", buyer="s-hz-conv").covers(*CHIPS)
    assert _refused(world, at=NOW + timedelta(days=1)) == "relationship_not_valid_at"
    assert _refused(world, at=NOW - timedelta(days=2)) == "relationship_not_valid_at"
    net.update_relationship(world, rel, status="suspended", actor=ACTOR)
    assert _refused(world) == "relationship_inactive"
    parties.update_party(world, "s-hz-conv", status="frozen")
    assert _refused(world) == "buyer_inactive"
    parties.update_party(world, "d1", status="frozen")
    assert _refused(world) == "seller_inactive"


def test_assortment_takes_a_few_queries_and_checks_its_input(world, statements):
    net.create_relationship(world, seller="d1", buyer="s-hz-conv", actor=ACTOR)
    net.set_sale_permission(world, "d1", product_scope={"all": True}, regions=["zj"],
                            actor=ACTOR)
    statements.clear()
    assert assortment(world, seller="d1", buyer="s-hz-conv", at=utcnow()).covers(*TEA)
    assert len(statements) <= 5
    with pytest.raises(InvalidInput) as caught:
        assortment(world, seller="d1", buyer="s-hz-conv", at=datetime(2030, 1, 1))
    assert caught.value.details["field"] == "at"
    with pytest.raises(PartyNotFound) as caught:
        assortment(world, seller="d1", buyer="nobody")
    assert caught.value.details["field"] == "buyer"
