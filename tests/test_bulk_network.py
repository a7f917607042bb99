"""CSV import and export of the catalog, relationships, coverage and sale
permissions: the use cases' rules row by row, every bad row reported with
nothing written, idempotent re-import, export round trips, restrict_to,
progress, and a coverage file big enough to need the bulk path."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from channel_api import bulk
from channel_api import catalog as cat
from channel_api import network as net
from channel_api import parties
from channel_api.models import Product, SalePermission, Sku, SupplyRelationship

ACTOR = "ops:alice"


@pytest.fixture
def world(session):
    """Regions cn > zj, js; a brand, two distributors, three stores;
    categories drinks > tea and snacks; units btl and case."""
    parties.create_region(session, "cn", "China")
    parties.create_region(session, "zj", "Zhejiang", parent="cn")
    parties.create_region(session, "js", "Jiangsu", parent="cn")
    parties.create_customer_type(session, "trade", "Trade")
    for code, role in [("brand", "brand"), ("d1", "distributor"), ("d2", "distributor"),
                       ("s1", "store"), ("s2", "store"), ("s3", "store")]:
        parties.create_party(session, code=code, name=code.upper(), role=role, region="zj",
                             customer_type="trade")
    cat.create_category(session, "drinks", "Drinks")
    cat.create_category(session, "tea", "Tea", parent="drinks")
    cat.create_category(session, "snacks", "Snacks")
    cat.create_unit(session, "btl", "Bottle")
    cat.create_unit(session, "case", "Case")
    return session


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def counts(report) -> tuple:
    return report.status, report.created, report.updated, report.unchanged


def where(report) -> set[tuple[int, str]]:
    return {(e.line, e.field) for e in report.errors}


def export(session, kind, **filters) -> str:
    return "".join(bulk.export_csv(session, kind, **filters))


# -- catalog ------------------------------------------------------------------------------

CATALOG = ("product,product_name,category,sku,sku_name,unit,spec,barcode,list_price,currency,"
           "status\n")
GOOD_CATALOG = CATALOG + (
    "p-tea,Green tea,tea,tea-500,Green tea 500ml,btl,500ml,6901,4.50,,\n"
    "p-tea,Green tea,tea,tea-case,Green tea case,case,24x500ml,,96.00,CNY,inactive\n"
    "p-chips,Chips,snacks,chips-1,Chips 70g,btl,,,5,,\n")


@pytest.fixture
def catalog(world):
    report = bulk.import_csv(world, "catalog", GOOD_CATALOG, actor=ACTOR)
    assert counts(report) == ("applied", 3, 0, 0)
    return world


def test_a_catalog_file_creates_products_and_skus_and_reimports_unchanged(world):
    calls = []
    report = bulk.import_csv(world, "catalog", GOOD_CATALOG, actor=ACTOR,
                             progress=lambda *args: calls.append(args))
    assert counts(report) == ("applied", 3, 0, 0)
    assert ("products", 2, 2) in calls and calls[-1] == ("skus", 3, 3)
    tea = cat.get_sku(world, "tea-500")
    assert tea.public_id.startswith(cat.SKU_PREFIX)
    assert (tea.product_code, tea.unit_code, tea.list_price_minor, tea.currency, tea.spec,
            tea.barcode, tea.status) == ("p-tea", "btl", 450, "CNY", "500ml", "6901", "active")
    assert cat.get_sku(world, "tea-case").status == "inactive"
    product = cat.get_product(world, "p-tea")
    assert (product.category_code, product.name, product.status) == ("tea", "Green tea", "active")
    assert product.public_id.startswith(cat.PRODUCT_PREFIX)
    again = bulk.import_csv(world, "catalog", GOOD_CATALOG, actor=ACTOR)
    assert counts(again) == ("applied", 0, 0, 3)


def test_catalog_changes_are_updates_and_move_updated_at_only_when_changed(catalog):
    before = {code: cat.get_sku(catalog, code).updated_at for code in ("tea-500", "chips-1")}
    changed = CATALOG + (
        "p-tea,Green tea (new),drinks,tea-500,Green tea 500ml,btl,500ml,6901,4.80,,\n"
        "p-tea,Green tea (new),drinks,tea-case,Green tea case,case,24x500ml,,96.00,CNY,inactive\n"
        "p-chips,Chips,snacks,chips-1,Chips 70g,btl,,,5.00,,\n"
        "p-nuts,Nuts,snacks,nuts-1,Nuts,btl,,,7.20,,\n")
    report = bulk.import_csv(catalog, "catalog", changed, actor=ACTOR)
    # tea-500 (price), tea-case (first row of p-tea was tea-500: unchanged), nuts-1 new
    assert counts(report) == ("applied", 1, 1, 2)
    product = cat.get_product(catalog, "p-tea")
    assert (product.name, product.category_code) == ("Green tea (new)", "drinks")
    assert cat.get_sku(catalog, "tea-500").list_price_minor == 480
    assert cat.get_sku(catalog, "tea-500").updated_at > before["tea-500"]
    assert cat.get_sku(catalog, "chips-1").updated_at == before["chips-1"]
    renamed = CATALOG + "p-chips,Crisps,snacks,chips-1,Chips 70g,btl,,,5.00,,\n"
    assert counts(bulk.import_csv(catalog, "catalog", renamed, actor=ACTOR)) == (
        "applied", 0, 1, 0)


def test_every_bad_catalog_row_is_reported_and_nothing_is_written(catalog):
    bad = CATALOG + (
        "p-new,New,tea,new-1,New 1,btl,,,1.00,,\n"              # 2: fine
        "p-new,Other name,snacks,new-2,New 2,btl,,,1.00,,\n"    # 3: product disagrees
        "p-x,X,nowhere,x-1,X 1,crate,,,1.005,,\n"               # 4: category, unit, price
        "p-x,X,nowhere,new-1,Again,btl,,,1,XYZ,maybe\n"         # 5: category, sku, currency, status
        "p-chips,Chips,snacks,tea-500,Moved,btl,,,4.50,,\n"     # 6: SKU would move product
        "p-tea,Green tea,tea,tea-case,Case,btl,,,96.00,USD,inactive\n"    # 7: unit, currency
        "bad code!,,tea,,,btl,,,-1,,\n")                         # 8: product, names, sku, price
    before = (count(catalog, Product), count(catalog, Sku))
    report = bulk.import_csv(catalog, "catalog", bad, actor=ACTOR)
    assert report.status == "rejected" and report.created == 0
    assert {(3, "product_name"), (3, "category"), (4, "category"), (4, "unit"),
            (4, "list_price"), (5, "category"), (5, "sku"), (5, "currency"), (5, "status"),
            (6, "product"),
            (7, "unit"), (7, "currency"), (8, "product"), (8, "product_name"), (8, "sku"),
            (8, "sku_name"), (8, "list_price")} == where(report)
    assert (count(catalog, Product), count(catalog, Sku)) == before
    assert cat.get_sku(catalog, "tea-500").product_code == "p-tea"
    refused = bulk.import_csv(catalog, "catalog", GOOD_CATALOG, actor=ACTOR, restrict_to="d1")
    assert where(refused) == {(2, "product"), (3, "product"), (4, "product")}


def test_catalog_export_round_trips(catalog):
    text = export(catalog, "catalog")
    lines = text.splitlines()
    assert lines[0] == ",".join(bulk.KINDS["catalog"].COLUMNS)
    assert [line.split(",")[3] for line in lines[1:]] == ["chips-1", "tea-500", "tea-case"]
    assert lines[2] == ("p-tea,Green tea,tea,tea-500,Green tea 500ml,btl,500ml,6901,4.50,CNY,"
                        "active,active")
    assert counts(bulk.import_csv(catalog, "catalog", text, actor=ACTOR)) == ("applied", 0, 0, 3)


# -- relationships ------------------------------------------------------------------------

RELS = "seller,buyer,status,product_all,product_categories,product_skus,valid_from,valid_to\n"
GOOD_RELS = RELS + (
    "brand,d1,,,,,,\n"
    "brand,d2,active,false,tea,chips-1,2026-01-01T00:00:00+08:00,2027-01-01T00:00:00+08:00\n"
    "d1,s1,suspended,true,,,,\n"
    "d1,s2,,false,,,,\n")


def _rel(session, seller, buyer):
    [found] = [r for r in net.list_relationships(session, seller=seller, limit=500)[0]
               if r.buyer_code == buyer]
    return found


def test_a_relationships_file_creates_manual_relationships_and_reimports_unchanged(catalog):
    calls = []
    report = bulk.import_csv(catalog, "relationships", GOOD_RELS, actor=ACTOR,
                             progress=lambda *args: calls.append(args))
    assert counts(report) == ("applied", 4, 0, 0) and calls[-1] == ("relationships", 4, 4)
    d1 = _rel(catalog, "brand", "d1")
    assert (d1.status, d1.origin, d1.product_scope, d1.valid_to) == (
        "active", "manual", {"all": True}, None)
    assert d1.public_id.startswith(net.RELATIONSHIP_PREFIX)
    assert abs((d1.valid_from - datetime.now(timezone.utc)).total_seconds()) < 60
    d2 = _rel(catalog, "brand", "d2")
    assert d2.product_scope == {"categories": ["tea"], "skus": ["chips-1"]}
    assert d2.valid_from == datetime(2025, 12, 31, 16, tzinfo=timezone.utc)
    assert _rel(catalog, "d1", "s1").status == "suspended"
    assert _rel(catalog, "d1", "s2").product_scope == {"categories": [], "skus": []}
    assert counts(bulk.import_csv(catalog, "relationships", GOOD_RELS, actor=ACTOR)) == (
        "applied", 0, 0, 4)


def test_relationship_rows_update_an_existing_pair_keeping_what_is_left_empty(catalog):
    made = net.create_relationship(catalog, seller="d1", buyer="s1", actor=ACTOR,
                                   valid_from=datetime(2025, 1, 1, tzinfo=timezone.utc))
    report = bulk.import_csv(catalog, "relationships",
                             RELS + "d1,s1,ended,false,snacks,,,2030-01-01T00:00:00Z\n",
                             actor=ACTOR)
    assert counts(report) == ("applied", 0, 1, 0)
    after = _rel(catalog, "d1", "s1")
    assert (after.status, after.product_scope, after.valid_from, after.valid_to) == (
        "ended", {"categories": ["snacks"], "skus": []}, made.valid_from,
        datetime(2030, 1, 1, tzinfo=timezone.utc))
    assert after.updated_at >= made.updated_at and after.origin == "manual"


def test_every_bad_relationship_row_is_reported_and_nothing_is_written(catalog):
    bad = RELS + (
        "brand,d1,,,,,,\n"                                   # 2: fine
        "nobody,d1,,,,,,\n"                                  # 3: unknown seller
        "s1,s2,,,,,,\n"                                      # 4: a store never sells
        "d1,brand,,,,,,\n"                                   # 5: the brand never buys
        "d1,d1,,,,,,\n"                                      # 6: self
        "brand,d1,paused,,,,,\n"                             # 7: duplicate, status
        "d1,s1,,true,tea,,,\n"                               # 8: all excludes lists
        "d1,s2,,false,nope,ghost,,\n"                        # 9: unknown category and SKU
        "d1,s3,,maybe,,,yesterday,2020-01-01T00:00:00\n"     # 10: flag, dates
        "d2,s1,,,,,2026-01-01T00:00:00Z,2025-01-01T00:00:00Z\n"  # 11: ends before start
        "d2,nobody,,,,,,\n")                                 # 12: unknown buyer
    before = count(catalog, SupplyRelationship)
    report = bulk.import_csv(catalog, "relationships", bad, actor=ACTOR)
    assert report.status == "rejected"
    assert where(report) == {
        (3, "seller"), (4, "seller"), (5, "buyer"), (6, "buyer"), (7, "buyer"), (7, "status"),
        (8, "product_all"), (9, "product_categories"), (9, "product_skus"),
        (10, "product_all"), (10, "valid_from"), (10, "valid_to"), (11, "valid_to"),
        (12, "buyer")}
    assert count(catalog, SupplyRelationship) == before


def test_a_seller_imports_only_its_own_relationships(catalog):
    refused = bulk.import_csv(catalog, "relationships", RELS + "d1,s1,,,,,,\nbrand,d2,,,,,,\n",
                              actor=ACTOR, restrict_to="d1")
    assert refused.status == "rejected" and where(refused) == {(3, "seller")}
    assert count(catalog, SupplyRelationship) == 0
    own = bulk.import_csv(catalog, "relationships", RELS + "d1,s1,,,,,,\n", actor=ACTOR,
                          restrict_to="d1")
    assert counts(own) == ("applied", 1, 0, 0)


def test_relationships_export_round_trips_and_filters_by_seller(catalog):
    bulk.import_csv(catalog, "relationships", GOOD_RELS, actor=ACTOR)
    bulk.import_csv(catalog, "coverage", "distributor,store\nd2,s3\n", actor=ACTOR)
    text = export(catalog, "relationships")
    lines = text.splitlines()
    assert lines[0] == RELS.strip() and len(lines) == 5  # coverage is not listed
    assert lines[2] == ("brand,d2,active,false,tea,chips-1,2025-12-31T16:00:00Z,"
                        "2026-12-31T16:00:00Z")
    assert lines[4].startswith("d1,s2,active,false,,,")
    assert counts(bulk.import_csv(catalog, "relationships", text, actor=ACTOR)) == (
        "applied", 0, 0, 4)
    only_d1 = export(catalog, "relationships", seller="d1").splitlines()
    assert [line.split(",")[:2] for line in only_d1[1:]] == [["d1", "s1"], ["d1", "s2"]]


# -- coverage -----------------------------------------------------------------------------

def test_a_coverage_file_creates_ends_and_reactivates(world):
    calls = []
    data = "distributor,store,status\nd1,s1,\nd1,s2,active\nd1,s3,ended\nbrand,s3,\n"
    report = bulk.import_csv(world, "coverage", data, actor=ACTOR,
                             progress=lambda *args: calls.append(args))
    assert counts(report) == ("applied", 3, 0, 1) and calls[-1] == ("coverage", 4, 4)
    s1 = _rel(world, "d1", "s1")
    assert (s1.origin, s1.status, s1.product_scope, s1.valid_to) == (
        "coverage", "active", {"all": True}, None)
    assert [r.buyer_code for r in net.list_relationships(world, seller="d1")[0]] == ["s1", "s2"]
    assert counts(bulk.import_csv(world, "coverage", data, actor=ACTOR)) == ("applied", 0, 0, 4)

    ended = bulk.import_csv(world, "coverage", "distributor,store,status\nd1,s1,ended\n",
                            actor=ACTOR)
    assert counts(ended) == ("applied", 0, 1, 0) and _rel(world, "d1", "s1").status == "ended"
    revived = bulk.import_csv(world, "coverage", "distributor,store\nd1,s1\n", actor=ACTOR)
    assert counts(revived) == ("applied", 0, 1, 0)
    after = _rel(world, "d1", "s1")
    assert after.status == "active" and after.valid_from > s1.valid_from


def test_coverage_leaves_manual_relationships_and_reactivates_ended_ones(world):
    net.create_relationship(world, seller="d1", buyer="s1", actor=ACTOR,
                            product_scope={"categories": ["tea"]})
    ended = net.create_relationship(world, seller="d1", buyer="s2", actor=ACTOR)
    net.update_relationship(world, ended.public_id, status="ended", actor=ACTOR)
    report = bulk.import_csv(world, "coverage", "distributor,store,status\n"
                                                "d1,s1,active\nd1,s3,ended\nd1,s2,active\n",
                             actor=ACTOR)
    assert counts(report) == ("applied", 0, 1, 2)
    manual = _rel(world, "d1", "s1")
    assert (manual.origin, manual.product_scope) == ("manual", {"categories": ["tea"], "skus": []})
    assert (_rel(world, "d1", "s2").origin, _rel(world, "d1", "s2").status) == (
        "coverage", "active")
    untouched = bulk.import_csv(world, "coverage", "distributor,store,status\nd1,s1,ended\n",
                                actor=ACTOR)
    assert counts(untouched) == ("applied", 0, 0, 1) and _rel(world, "d1", "s1").status == "active"


def test_every_bad_coverage_row_is_reported_and_nothing_is_written(world):
    bad = ("distributor,store,status\n"
           "d1,s1,\n"           # 2: fine
           "s1,s2,\n"           # 3: a store never sells
           "d1,d2,\n"           # 4: not a store
           "d1,s1,suspended\n"  # 5: duplicate, status
           "ghost,nobody,\n")   # 6: unknown both
    report = bulk.import_csv(world, "coverage", bad, actor=ACTOR)
    assert report.status == "rejected"
    assert where(report) == {(3, "distributor"), (4, "store"), (5, "store"), (5, "status"),
                             (6, "distributor"), (6, "store")}
    assert count(world, SupplyRelationship) == 0
    refused = bulk.import_csv(world, "coverage", "distributor,store\nd1,s1\nd2,s2\n",
                              actor=ACTOR, restrict_to="d1")
    assert refused.status == "rejected" and where(refused) == {(3, "distributor")}
    assert count(world, SupplyRelationship) == 0


def test_coverage_export_round_trips_and_filters_by_distributor(world):
    bulk.import_csv(world, "coverage", "distributor,store\nd1,s1\nd1,s2\nd2,s3\n", actor=ACTOR)
    bulk.import_csv(world, "coverage", "distributor,store,status\nd1,s2,ended\n", actor=ACTOR)
    net.create_relationship(world, seller="d1", buyer="s3", actor=ACTOR)  # manual: not listed
    text = export(world, "coverage")
    assert text.splitlines() == ["distributor,store,status", "d1,s1,active", "d1,s2,ended",
                                 "d2,s3,active"]
    assert counts(bulk.import_csv(world, "coverage", text, actor=ACTOR)) == ("applied", 0, 0, 3)
    assert export(world, "coverage", seller="d2").splitlines()[1:] == ["d2,s3,active"]
    own = bulk.import_csv(world, "coverage", "distributor,store\nd2,s1\n", actor=ACTOR,
                          restrict_to="d2")
    assert counts(own) == ("applied", 1, 0, 0)


def test_a_large_coverage_file_is_applied_in_bulk(world):
    stores = [f"bulk-{n:05d}" for n in range(3000)]
    header = "code,name,role,region,customer_type\n"
    assert bulk.import_csv(world, "parties", header + "".join(
        f"{code},Store {code},store,zj,trade\n" for code in stores), actor=ACTOR).created == 3000
    data = "distributor,store\n" + "".join(f"d1,{code}\n" for code in stores)
    calls = []
    report = bulk.import_csv(world, "coverage", data, actor=ACTOR,
                             progress=lambda *args: calls.append(args))
    assert counts(report) == ("applied", 3000, 0, 0)
    assert calls[-1] == ("coverage", 3000, 3000)
    assert count(world, SupplyRelationship) == 3000
    assert counts(bulk.import_csv(world, "coverage", data, actor=ACTOR)) == ("applied", 0, 0, 3000)
    ended = "distributor,store,status\n" + "".join(f"d1,{code},ended\n" for code in stores[:1500])
    assert counts(bulk.import_csv(world, "coverage", ended, actor=ACTOR)) == (
        "applied", 0, 1500, 0)
    assert len(export(world, "coverage", seller="d1").splitlines()) == 3001


# -- sale permissions ---------------------------------------------------------------------

PERMS = "party,product_all,product_categories,product_skus,regions\n"


def test_a_sale_permissions_file_sets_and_reimports_unchanged(catalog):
    data = PERMS + "d1,true,,,\nd2,,tea,chips-1,zj|js\n"
    calls = []
    report = bulk.import_csv(catalog, "sale_permissions", data, actor=ACTOR,
                             progress=lambda *args: calls.append(args))
    assert counts(report) == ("applied", 2, 0, 0) and calls[-1] == ("sale_permissions", 2, 2)
    d2 = net.get_sale_permission(catalog, "d2")
    assert (d2.product_scope, d2.regions) == ({"categories": ["tea"], "skus": ["chips-1"]},
                                              ("js", "zj"))
    assert net.get_sale_permission(catalog, "d1").product_scope == {"all": True}
    assert counts(bulk.import_csv(catalog, "sale_permissions", data, actor=ACTOR)) == (
        "applied", 0, 0, 2)
    changed = bulk.import_csv(catalog, "sale_permissions", PERMS + "d1,false,,,\n", actor=ACTOR)
    assert counts(changed) == ("applied", 0, 1, 0)
    assert net.get_sale_permission(catalog, "d1").product_scope == {"categories": [], "skus": []}


def test_every_bad_sale_permission_row_is_reported_and_nothing_is_written(catalog):
    bad = PERMS + ("d1,true,,,\n"          # 2: fine
                   "brand,true,,,\n"       # 3: the brand's is implicit
                   "s1,true,,,\n"          # 4: a store never sells
                   "d1,true,,,\n"          # 5: duplicate
                   "d2,,,,\n"              # 6: nothing said about products
                   "nobody,true,,,mars\n"  # 7: unknown party and region
                   "d2,false,ghost,,\n")   # 8: unknown category (and duplicate of 6)
    report = bulk.import_csv(catalog, "sale_permissions", bad, actor=ACTOR)
    assert report.status == "rejected"
    assert where(report) == {(3, "party"), (4, "party"), (5, "party"), (6, "product_all"),
                             (7, "party"), (7, "regions"), (8, "party"),
                             (8, "product_categories")}
    assert count(catalog, SalePermission) == 0
    refused = bulk.import_csv(catalog, "sale_permissions", PERMS + "d1,true,,,\nd2,true,,,\n",
                              actor=ACTOR, restrict_to="d1")
    assert where(refused) == {(2, "party"), (3, "party")}
    assert count(catalog, SalePermission) == 0


def test_sale_permissions_export_round_trips(catalog):
    bulk.import_csv(catalog, "sale_permissions",
                    PERMS + "d2,false,snacks|tea,,zj\nd1,true,,,\n", actor=ACTOR)
    text = export(catalog, "sale_permissions")
    assert text.splitlines() == [PERMS.strip(), "d1,true,,,", "d2,false,snacks|tea,,zj"]
    assert counts(bulk.import_csv(catalog, "sale_permissions", text, actor=ACTOR)) == (
        "applied", 0, 0, 2)
