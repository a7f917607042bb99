"""Channel API over HTTP: catalog, relationships, sale permissions and
coverage, each with who may and who may not."""
from __future__ import annotations

import pytest

import channel_api as ca
from tests.channel_fixtures import build_network, client, engine  # noqa: F401  (fixtures)


@pytest.fixture
def net(session_factory, unique):
    return build_network(session_factory, unique)


@pytest.fixture
def goods(client, net):
    """A category tree, a unit, a product and two SKUs, made through the API."""
    u, brand = net.u, net.auth("brand")
    calls = [("/v1/categories", {"code": f"{u}-drinks", "name": "Drinks"}),
             ("/v1/categories", {"code": f"{u}-tea", "name": "Tea", "parent": f"{u}-drinks"}),
             ("/v1/units", {"code": f"{u}-case", "name": "Case"}),
             ("/v1/products", {"code": f"{u}-green", "name": "Green tea", "category": f"{u}-tea"}),
             ("/v1/skus", {"code": f"{u}-green-500", "name": "Green tea 500ml x24",
                           "product": f"{u}-green", "unit": f"{u}-case", "list_price_minor": 4800}),
             ("/v1/skus", {"code": f"{u}-green-1l", "name": "Green tea 1l x12",
                           "product": f"{u}-green", "unit": f"{u}-case", "list_price_minor": 5600})]
    for path, body in calls:
        response = client.post(path, headers=brand, json=body)
        assert response.status_code == 201, (path, response.json)
    return u


def test_the_brand_builds_the_catalog_and_others_cannot(client, net, goods):
    u = goods
    for who in ("d1", "s1"):
        refused = client.post("/v1/units", headers=net.auth(who), json={"code": f"{u}-x", "name": "X"})
        assert refused.status_code == 403
        assert client.patch(f"/v1/skus/{u}-green-500", headers=net.auth(who),
                            json={"list_price_minor": 1}).status_code == 403
    skus = client.get(f"/v1/skus?category={u}-drinks", headers=net.auth("d1")).json["items"]
    assert [s["code"] for s in skus] == [f"{u}-green-1l", f"{u}-green-500"]
    assert client.get("/v1/skus", headers=net.auth("s1")).status_code == 403
    changed = client.patch(f"/v1/skus/{u}-green-500", headers=net.auth("brand"),
                           json={"list_price_minor": 4900})
    assert changed.status_code == 200 and changed.json["list_price_minor"] == 4900


def test_a_price_must_be_integer_minor_units(client, net, goods):
    body = {"code": f"{goods}-bad", "name": "Bad", "product": f"{goods}-green", "unit": f"{goods}-case"}
    for price in (48.5, "48.50", -1, True):
        response = client.post("/v1/skus", headers=net.auth("brand"), json={**body, "list_price_minor": price})
        assert response.status_code == 422, price
        assert response.json["errors"][0]["field"] == "list_price_minor"


def test_sellers_manage_their_own_relationships_only(client, net, goods):
    c = net.codes
    made = client.post("/v1/relationships", headers=net.auth("d1"),
                       json={"seller": c["d1"], "buyer": c["s3"],
                             "product_scope": {"categories": [f"{goods}-tea"]}})
    assert made.status_code == 201, made.json
    rel_id = made.json["public_id"]
    assert client.post("/v1/relationships", headers=net.auth("d1"),
                       json={"seller": c["d2"], "buyer": c["s1"]}).status_code == 403
    assert client.post("/v1/relationships", headers=net.auth("s1"),
                       json={"seller": c["s1"], "buyer": c["s2"]}).status_code == 403

    sellers = client.get("/v1/sellers", headers=net.auth("s3")).json["items"]
    assert sorted(r["seller_code"] for r in sellers) == sorted([c["d1"], c["d2"]])
    assert client.get(f"/v1/relationships/{rel_id}", headers=net.auth("s3")).status_code == 200
    assert client.get(f"/v1/relationships/{rel_id}", headers=net.auth("s1")).status_code == 403
    assert client.get(f"/v1/relationships/{rel_id}", headers=net.auth("d2")).status_code == 403

    assert client.patch(f"/v1/relationships/{rel_id}", headers=net.auth("d2"),
                        json={"status": "suspended"}).status_code == 403
    suspended = client.patch(f"/v1/relationships/{rel_id}", headers=net.auth("d1"),
                             json={"status": "suspended"})
    assert suspended.status_code == 200 and suspended.json["status"] == "suspended"

    mine = client.get("/v1/relationships", headers=net.auth("d1")).json["items"]
    assert {r["buyer_code"] for r in mine} == {c["s1"], c["s2"], c["s3"]}
    assert client.get(f"/v1/relationships?seller={c['d2']}", headers=net.auth("d1")).status_code == 403


def test_a_relationship_refuses_bad_scopes_and_pairs(client, net, goods):
    c, brand = net.codes, net.auth("brand")
    unknown = client.post("/v1/relationships", headers=brand,
                          json={"seller": c["d1"], "buyer": c["s3"],
                                "product_scope": {"skus": ["no-such-sku"]}})
    assert unknown.status_code == 404
    assert unknown.json["errors"][0]["field"] == "product_scope.skus"
    store_sells = client.post("/v1/relationships", headers=brand, json={"seller": c["s1"], "buyer": c["s2"]})
    assert store_sells.status_code == 422 and store_sells.json["errors"][0]["field"] == "seller"


def test_sale_permissions_are_set_by_the_brand_and_read_by_the_seller(client, net, goods):
    c = net.codes
    body = {"product_scope": {"categories": [f"{goods}-drinks"]}, "regions": [c["zj"]]}
    assert client.put(f"/v1/parties/{c['d1']}/sale-permission", headers=net.auth("d1"),
                      json=body).status_code == 403
    put = client.put(f"/v1/parties/{c['d1']}/sale-permission", headers=net.auth("brand"), json=body)
    assert put.status_code == 200, put.json
    got = client.get(f"/v1/parties/{c['d1']}/sale-permission", headers=net.auth("d1"))
    assert got.json["regions"] == [c["zj"]]
    assert client.get(f"/v1/parties/{c['d1']}/sale-permission", headers=net.auth("d2")).status_code == 403
    missing = client.get(f"/v1/parties/{c['d2']}/sale-permission", headers=net.auth("d2"))
    assert missing.status_code == 404


def test_coverage_by_region_through_the_api_is_audited(client, net, session_factory):
    c = net.codes
    with session_factory() as s, s.begin():
        ca.create_party(s, code=f"{net.u}-s4", name="S4", role="store", region=c["hz"],
                        customer_type=c["grocery"])
    assert client.post("/v1/coverage/assign", headers=net.auth("d2"),
                       json={"distributor": c["d1"], "region": c["zj"]}).status_code == 403
    assigned = client.post("/v1/coverage/assign", headers=net.auth("d1"),
                           json={"distributor": c["d1"], "region": c["zj"]})
    assert assigned.status_code == 200, assigned.json
    assert (assigned.json["matched"], assigned.json["created"], assigned.json["unchanged"]) == (3, 1, 2)
    listed = client.get(f"/v1/coverage?distributor={c['d1']}", headers=net.auth("d1")).json["items"]
    assert [r["buyer_code"] for r in listed] == [f"{net.u}-s4"]

    ended = client.post("/v1/coverage/unassign", headers=net.auth("d1"),
                        json={"distributor": c["d1"], "stores": [f"{net.u}-s4"]})
    assert ended.json["ended"] == 1
    no_selector = client.post("/v1/coverage/assign", headers=net.auth("d1"), json={"distributor": c["d1"]})
    assert no_selector.status_code == 422

    audit = client.get(f"/v1/audit?subject={c['d1']}", headers=net.auth("brand")).json["items"]
    assert [a["action"] for a in audit][:2] == ["coverage.unassign", "coverage.assign"]
    assert audit[1]["details"]["created"] == 1 and audit[1]["actor"].startswith("api:key_")
