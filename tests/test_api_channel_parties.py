"""Channel API over HTTP: API keys and who may do what, the caller's party,
master data, parties, Idempotency-Key replays, the audit trail."""
from __future__ import annotations

import json

import pytest

import channel_api as ca
from tests.channel_fixtures import build_network, client, engine  # noqa: F401  (fixtures)

PROBLEM = "application/problem+json"


@pytest.fixture
def net(session_factory, unique):
    return build_network(session_factory, unique)


def store_body(net, code, **extra):
    return {"code": code, "name": "New store", "role": "store", "region": net.codes["hz"],
            "customer_type": net.codes["grocery"], **extra}


# --- authentication -------------------------------------------------------------

@pytest.mark.parametrize("header", [None, "Bearer nonsense", "Bearer key_0.wrong", "Basic abc"])
def test_a_missing_or_bad_key_is_refused_with_401(client, net, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/v1/me", headers=headers)
    assert response.status_code == 401
    assert response.mimetype == PROBLEM
    assert response.json["code"] == "authentication_failed"


def test_a_right_key_id_with_a_wrong_secret_is_refused(client, net):
    key_id = net.tokens["s1"].split(".")[0]
    response = client.get("/v1/me", headers={"Authorization": f"Bearer {key_id}.not-the-secret"})
    assert response.status_code == 401


def test_each_key_sees_its_own_party(client, net):
    for who in ("brand", "d1", "s1"):
        response = client.get("/v1/me", headers=net.auth(who))
        assert response.status_code == 200, response.json
        assert response.json["code"] == net.codes[who]


def test_a_frozen_party_s_key_stops_working(client, net, session_factory):
    with session_factory() as s, s.begin():
        ca.update_party(s, net.codes["s2"], status="frozen")
    assert client.get("/v1/me", headers=net.auth("s2")).status_code == 401


def test_a_revoked_key_stops_working_and_the_revocation_is_audited(client, net):
    issued = client.post("/v1/api-keys", headers=net.auth("brand"),
                         json={"party": net.codes["s3"], "scopes": ["storefront"]})
    assert issued.status_code == 201, issued.json
    token, key_id = issued.json["token"], issued.json["key"]["key_id"]
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).json["code"] == net.codes["s3"]

    # Another distributor cannot revoke it; the brand can.
    assert client.delete(f"/v1/api-keys/{key_id}", headers=net.auth("d1")).status_code == 403
    revoked = client.delete(f"/v1/api-keys/{key_id}", headers=net.auth("brand"))
    assert revoked.status_code == 200 and revoked.json["revoked_at"]
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401

    audit = client.get(f"/v1/audit?subject={net.codes['s3']}", headers=net.auth("brand")).json
    actions = [item["action"] for item in audit["items"] if item["details"].get("key_id") == key_id]
    assert actions == ["api_key.revoke", "api_key.create"]


def test_a_store_key_cannot_get_the_manage_scope(client, net):
    response = client.post("/v1/api-keys", headers=net.auth("brand"),
                           json={"party": net.codes["s1"], "scopes": ["manage"]})
    assert response.status_code == 422
    assert response.json["errors"][0]["field"] == "scopes"


def test_only_the_brand_issues_keys_and_others_list_only_their_own(client, net):
    assert client.post("/v1/api-keys", headers=net.auth("d1"),
                       json={"party": net.codes["s1"], "scopes": ["storefront"]}).status_code == 403
    mine = client.get("/v1/api-keys", headers=net.auth("d1")).json["items"]
    assert {k["party_code"] for k in mine} == {net.codes["d1"]}
    assert client.get("/v1/api-keys", headers=net.auth("s1")).status_code == 403


# --- master data and parties -------------------------------------------------------

def test_brand_managers_create_master_data_and_others_are_refused(client, net):
    u = net.u
    for path, body in (("/v1/regions", {"code": f"{u}-nb", "name": "Ningbo", "parent": net.codes["zj"]}),
                       ("/v1/customer-types", {"code": f"{u}-kiosk", "name": "Kiosk"}),
                       ("/v1/grades", {"code": f"{u}-gold", "name": "Gold", "rank": 3}),
                       ("/v1/groups", {"code": f"{u}-vip", "name": "VIP"})):
        for who in ("d1", "s1"):
            refused = client.post(path, headers=net.auth(who), json=body)
            assert refused.status_code == 403, (path, who)
            assert refused.json["code"] == "access_denied"
        created = client.post(path, headers=net.auth("brand"), json=body)
        assert created.status_code == 201, created.json
        assert created.json["code"] == body["code"]
        listed = client.get(path, headers=net.auth("brand")).json["items"]
        assert body["code"] in {item["code"] for item in listed}
    regions = {r["code"]: r for r in client.get("/v1/regions", headers=net.auth("s1")).json["items"]}
    assert regions[f"{u}-nb"]["parent_code"] == net.codes["zj"]


def test_parties_are_created_listed_with_subtree_filters_and_patched(client, net):
    brand = net.auth("brand")
    created = client.post("/v1/parties", headers=brand, json=store_body(net, f"{net.u}-s9"))
    assert created.status_code == 201, created.json
    assert created.json["public_id"].startswith("pty_")

    page = client.get(f"/v1/parties?region={net.codes['zj']}&role=store&limit=2", headers=brand).json
    first = [p["code"] for p in page["items"]]
    assert first == sorted([net.codes["s1"], net.codes["s2"], f"{net.u}-s9"])[:2]
    rest = client.get(f"/v1/parties?region={net.codes['zj']}&role=store&after={page['next_cursor']}",
                      headers=brand).json
    assert [p["code"] for p in rest["items"]] == [f"{net.u}-s9"] and rest["next_cursor"] is None

    patched = client.patch(f"/v1/parties/{net.u}-s9", headers=brand,
                           json={"quality_customer": True, "region": net.codes["sh"]})
    assert patched.status_code == 200, patched.json
    assert patched.json["quality_customer"] is True
    assert patched.json["region_code"] == net.codes["sh"]
    assert client.patch(f"/v1/parties/{net.u}-s9", headers=brand, json={}).status_code == 422


def test_bad_party_input_names_the_field_and_writes_nothing(client, net, session_factory):
    brand = net.auth("brand")
    unknown_region = client.post("/v1/parties", headers=brand,
                                 json=store_body(net, f"{net.u}-bad", region="nowhere"))
    assert unknown_region.status_code == 404
    assert unknown_region.json["errors"][0]["field"] == "region"
    typo = client.post("/v1/parties", headers=brand, json=store_body(net, f"{net.u}-bad", colour="red"))
    assert typo.status_code == 422
    assert typo.json["errors"][0]["field"] == "colour"
    bad_phone = client.post("/v1/parties", headers=brand,
                            json=store_body(net, f"{net.u}-bad", contact_phone="call me"))
    assert bad_phone.status_code == 422
    assert bad_phone.json["errors"][0]["field"] == "contact_phone"
    with session_factory() as s:
        with pytest.raises(ca.PartyNotFound):
            ca.get_party(s, f"{net.u}-bad")


def test_a_distributor_sees_only_its_buyers(client, net):
    d1 = net.auth("d1")
    listed = client.get("/v1/parties", headers=d1).json["items"]
    assert {p["code"] for p in listed} == {net.codes["s1"], net.codes["s2"]}
    assert client.get(f"/v1/parties?buyer_of={net.codes['d2']}", headers=d1).status_code == 403
    assert client.get(f"/v1/parties/{net.codes['s1']}", headers=d1).status_code == 200
    assert client.get(f"/v1/parties/{net.codes['s3']}", headers=d1).status_code == 403
    assert client.patch(f"/v1/parties/{net.codes['s1']}", headers=d1,
                        json={"name": "mine now"}).status_code == 403


def test_a_store_sees_only_itself(client, net):
    s1 = net.auth("s1")
    assert client.get(f"/v1/parties/{net.codes['s1']}", headers=s1).status_code == 200
    for other in ("s2", "s3", "d1", "brand"):
        response = client.get(f"/v1/parties/{net.codes[other]}", headers=s1)
        assert response.status_code == 403, other
    assert client.get("/v1/parties", headers=s1).status_code == 403
    assert client.put(f"/v1/parties/{net.codes['s2']}/tags/x", headers=s1).status_code == 403


def test_groups_and_tags_through_the_api(client, net):
    brand = net.auth("brand")
    client.post("/v1/groups", headers=brand, json={"code": f"{net.u}-key", "name": "Key accounts"})
    joined = client.put(f"/v1/parties/{net.codes['s1']}/groups/{net.u}-key", headers=brand)
    assert joined.status_code == 200 and joined.json["groups"] == [f"{net.u}-key"]
    tagged = client.put(f"/v1/parties/{net.codes['s1']}/tags/night-shop", headers=brand)
    assert tagged.json["tags"] == ["night-shop"]
    by_tag = client.get("/v1/parties?tag=night-shop", headers=brand).json["items"]
    assert net.codes["s1"] in {p["code"] for p in by_tag}
    left = client.delete(f"/v1/parties/{net.codes['s1']}/groups/{net.u}-key", headers=brand)
    assert left.json["groups"] == []


# --- Idempotency-Key -----------------------------------------------------------------

def test_a_retried_mutation_replays_the_first_answer(client, net, session_factory):
    brand = {**net.auth("brand"), "Idempotency-Key": f"{net.u}-create-s7"}
    body = store_body(net, f"{net.u}-s7")
    first = client.post("/v1/parties", headers=brand, json=body)
    assert first.status_code == 201
    # The party changes in between; a replay still answers what the first call did.
    with session_factory() as s, s.begin():
        ca.update_party(s, f"{net.u}-s7", name="Renamed")
    again = client.post("/v1/parties", headers=brand, json=body)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert json.loads(again.data) == json.loads(first.data)
    assert again.json["name"] == "New store"


def test_reusing_a_key_for_another_request_is_a_409_and_writes_nothing(client, net, session_factory):
    brand = {**net.auth("brand"), "Idempotency-Key": f"{net.u}-k"}
    assert client.post("/v1/parties", headers=brand, json=store_body(net, f"{net.u}-s5")).status_code == 201
    reused = client.post("/v1/parties", headers=brand, json=store_body(net, f"{net.u}-s6"))
    assert reused.status_code == 409
    assert reused.json["code"] == "idempotency_key_reused"
    with session_factory() as s:
        with pytest.raises(ca.PartyNotFound):
            ca.get_party(s, f"{net.u}-s6")


def test_a_failed_mutation_stores_no_answer_so_a_fixed_retry_runs(client, net):
    brand = {**net.auth("brand"), "Idempotency-Key": f"{net.u}-retry"}
    bad = store_body(net, f"{net.u}-s8", region="nowhere")
    assert client.post("/v1/parties", headers=brand, json=bad).status_code == 404
    # Same key, corrected body: a different request, but the failed one left no answer.
    good = client.post("/v1/parties", headers=brand, json=store_body(net, f"{net.u}-s8"))
    assert good.status_code == 201


def test_idempotency_keys_belong_to_one_api_key(client, net):
    key = f"{net.u}-shared"
    body = {"code": f"{net.u}-g1", "name": "G"}
    assert client.post("/v1/groups", headers={**net.auth("brand"), "Idempotency-Key": key},
                       json=body).status_code == 201
    # Another key using the same Idempotency-Key is not a replay of the brand's call.
    refused = client.post("/v1/groups", headers={**net.auth("d1"), "Idempotency-Key": key}, json=body)
    assert refused.status_code == 403


def test_the_openapi_document_declares_the_key_and_the_idempotency_header(client):
    spec = client.get("/v1/openapi.json").json
    assert spec["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    post = spec["paths"]["/v1/parties"]["post"]
    assert post["security"] == [{"ApiKey": []}]
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])
    assert "security" not in spec["paths"]["/v1/accounts"]["get"]


# --- CSV imports and exports --------------------------------------------------------

def test_parties_import_through_the_api_reports_bad_rows_then_applies(client, net):
    brand = {**net.auth("brand"), "Content-Type": "text/csv"}
    header = "code,name,role,region,customer_type\n"
    bad = header + f"{net.u}-i1,Store,store,{net.codes['hz']},{net.codes['grocery']}\n" \
                   f"{net.u}-i2,Store,store,nowhere,{net.codes['grocery']}\n"
    rejected = client.post("/v1/imports/parties", headers=brand, data=bad)
    assert rejected.status_code == 422
    assert rejected.json["code"] == "import_rejected"
    assert rejected.json["errors"] == [{"field": "region", "location": "line 3", "line": 3,
                                        "message": "no region with code 'nowhere'"}]
    assert client.get(f"/v1/parties/{net.u}-i1", headers=net.auth("brand")).status_code == 404
    run = client.get(f"/v1/imports/id/{rejected.json['import_id']}", headers=net.auth("brand"))
    assert run.json["status"] == "rejected" and run.json["error_count"] == 1

    good = bad.replace("nowhere", net.codes["hz"])
    applied = client.post("/v1/imports/parties", headers=brand, data=good)
    assert applied.status_code == 201, applied.json
    assert (applied.json["created"], applied.json["status"]) == (2, "applied")
    again = client.post("/v1/imports/parties", headers=brand, data=good)
    assert (again.json["created"], again.json["unchanged"]) == (0, 2)

    exported = client.get("/v1/exports/parties.csv?role=store", headers=net.auth("brand"))
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    text = exported.get_data(as_text=True)
    assert f"{net.u}-i2,Store,store,{net.codes['hz']}" in text
    assert f"{net.codes['d1']}," not in text


def test_only_the_brand_imports_parties(client, net):
    for who in ("d1", "s1"):
        response = client.post("/v1/imports/parties", headers={**net.auth(who), "Content-Type": "text/csv"},
                               data="code,name,role,region,customer_type\n")
        assert response.status_code == 403
        assert client.get("/v1/exports/parties.csv", headers=net.auth(who)).status_code == 403


def test_a_bad_header_or_kind_or_filter_is_a_clear_error(client, net):
    brand = {**net.auth("brand"), "Content-Type": "text/csv"}
    header = client.post("/v1/imports/parties", headers=brand, data="code,colour\n")
    assert header.status_code == 422 and header.json["errors"][0]["field"] == "header"
    kind = client.post("/v1/imports/planets", headers=brand, data="code\n")
    assert kind.status_code == 422 and kind.json["errors"][0]["field"] == "kind"
    bad_filter = client.get("/v1/exports/parties.csv?owner=x", headers=net.auth("brand"))
    assert bad_filter.status_code == 422 and bad_filter.json["errors"][0]["field"] == "owner"


def test_old_idempotency_answers_are_purged_so_the_key_runs_anew(client, net, session_factory):
    from datetime import timedelta

    from channel_api import idempotency
    from ledger import utcnow
    from service.scheduler import purge_idempotency_records

    headers = {**net.auth("brand"), "Idempotency-Key": f"{net.u}-old"}
    assert client.post("/v1/groups", headers=headers, json={"code": f"{net.u}-o", "name": "O"}).status_code == 201
    with session_factory() as s, s.begin():
        assert idempotency.purge(s, now=utcnow() + timedelta(days=6)) == 0
    # A week later the answer is forgotten: the same key with another body now runs.
    with session_factory() as s, s.begin():
        assert idempotency.purge(s, now=utcnow() + timedelta(days=8)) >= 1
    assert purge_idempotency_records(session_factory) == 0
    again = client.post("/v1/groups", headers=headers, json={"code": f"{net.u}-o2", "name": "O2"})
    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
