"""The fixed cost of an authenticated channel request, and what keeps it
correct: the key and its party read in one statement, a writing view
continuing the transaction that read began (``request_db.request_transaction``),
and ``GET /v1/me``'s party read as two prebuilt Core statements that answer
exactly as the general party view does."""
from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from sqlalchemy import event

import channel_api as ca
from channel_api import PartyNotFound, keys
from channel_api.parties import _party_views, party_row
from service.app import create_app
from service.db import make_engine, make_session_factory
from service.request_db import request_transaction
from service.settings import Settings
from tests.channel_fixtures import build_network, client, engine  # noqa: F401  (fixtures)


@pytest.fixture
def net(session_factory, unique):
    return build_network(session_factory, unique)


@contextmanager
def watching(engine):
    """Counts, while the block runs: SELECTs sent, pool checkouts, and
    commits and rollbacks of transactions."""
    seen = {"select": 0, "checkout": 0, "commit": 0, "rollback": 0}

    def on_execute(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen["select"] += 1

    def bump(name):
        def listener(*_args):
            seen[name] += 1
        return listener

    listeners = [(engine, "before_cursor_execute", on_execute),
                 (engine.pool, "checkout", bump("checkout")),
                 (engine, "commit", bump("commit")),
                 (engine, "rollback", bump("rollback"))]
    for target, name, fn in listeners:
        event.listen(target, name, fn)
    try:
        yield seen
    finally:
        for target, name, fn in listeners:
            event.remove(target, name, fn)


# --- what a request costs -----------------------------------------------------------

def test_me_reads_key_party_and_labels_in_three_selects_on_one_connection(client, net, engine):
    client.get("/v1/me", headers=net.auth("s1"))  # warm: first use compiles the statements
    with watching(engine) as seen:
        response = client.get("/v1/me", headers=net.auth("s1"))
    assert response.status_code == 200, response.json
    assert response.json["code"] == net.codes["s1"]
    # the key with its party; the caller's party with its codes; its groups and tags
    assert seen["select"] == 3
    # Authentication's transaction is read on, not rolled back for a new one.
    assert seen["checkout"] == 1
    assert seen["commit"] == 0


def test_a_mutation_continues_the_authentication_transaction_and_commits_it_once(
        client, net, engine, session_factory):
    code = f"{net.u}-grp-once"
    with watching(engine) as seen:
        response = client.post("/v1/groups", headers=net.auth("brand"),
                               json={"code": code, "name": "Once"})
    assert response.status_code == 201, response.json
    assert seen["checkout"] == 1
    assert seen["commit"] == 1
    assert seen["rollback"] == 0
    with session_factory() as s:
        assert code in {g.code for g in ca.list_groups(s)}


def test_a_mutation_refused_after_authentication_writes_nothing(client, net, session_factory):
    response = client.post("/v1/parties", headers=net.auth("brand"), json={
        "code": f"{net.u}-never", "name": "Never", "role": "store",
        "region": f"{net.u}-no-such-region", "customer_type": net.codes["grocery"]})
    assert 400 <= response.status_code < 500
    with session_factory() as s, pytest.raises(PartyNotFound):
        ca.get_party(s, f"{net.u}-never")
    # The request's session was left clean: the same client keeps working.
    assert client.get("/v1/me", headers=net.auth("brand")).status_code == 200


def test_a_key_revoked_through_one_app_is_refused_at_once_by_another(client, net, engine):
    # Two apps on two engines: two processes, as two gunicorn workers are.
    other_engine = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        other = create_app(Settings(database_url=engine.url.render_as_string(hide_password=False),
                                    log_format="text", secret_key="k" * 32),
                           engine=other_engine).test_client()
        assert other.get("/v1/me", headers=net.auth("s2")).status_code == 200
        key_id = net.tokens["s2"].split(".")[0]
        revoked = client.delete(f"/v1/api-keys/{key_id}", headers=net.auth("brand"))
        assert revoked.status_code == 200, revoked.json
        assert other.get("/v1/me", headers=net.auth("s2")).status_code == 401
        assert client.get("/v1/me", headers=net.auth("s2")).status_code == 401
    finally:
        other_engine.dispose()


def test_authentication_answers_the_key_s_caller(net, session_factory):
    with session_factory() as s:
        who = keys.authenticate(s, net.tokens["d1"])
        row = party_row(s, net.codes["d1"])
        assert (who.party_code, who.party_id, who.role) == (net.codes["d1"], row.id, "distributor")
        assert who.scopes == frozenset({"manage", "storefront"})
        assert who.key_id == net.tokens["d1"].split(".")[0]
        assert who.api_key_pk == keys._key(s, who.key_id)[0].id


# --- request_transaction --------------------------------------------------------------

def test_request_transaction_continues_a_begun_transaction_and_commits_it(session_factory, unique):
    with session_factory() as s:
        s.connection()  # as authentication's read does
        begun = s.get_transaction()
        with request_transaction(s) as transaction:
            assert transaction is begun
            ca.create_group(s, f"{unique}-g1", "G1")
        assert not s.in_transaction()
    with session_factory() as s:
        assert f"{unique}-g1" in {g.code for g in ca.list_groups(s)}


def test_request_transaction_begins_one_when_none_is_open_and_rolls_back_on_error(
        session_factory, unique):
    with session_factory() as s:
        assert not s.in_transaction()
        with pytest.raises(RuntimeError), request_transaction(s):
            assert s.in_transaction()
            ca.create_group(s, f"{unique}-g2", "G2")
            raise RuntimeError("refused")
        assert not s.in_transaction()
    with session_factory() as s:
        assert f"{unique}-g2" not in {g.code for g in ca.list_groups(s)}


# --- get_party's prebuilt statements ----------------------------------------------------

def test_get_party_answers_as_the_general_party_view(net, session_factory):
    u, c = net.u, net.codes
    with session_factory() as s, s.begin():
        ca.create_grade(s, f"{u}-gold", "Gold", rank=3)
        ca.create_party(s, code=f"{u}-full", name="Full", role="store", region=c["hz"],
                        customer_type=c["grocery"], grade=f"{u}-gold", owner_name="Owner",
                        contact_phone="+86-1", address="Street 1", quality_customer=True,
                        metadata={"shop": {"floors": 2}, "note": "x"})
        for group in ("zz", "aa"):
            ca.create_group(s, f"{u}-{group}", group)
            ca.add_to_group(s, f"{u}-full", f"{u}-{group}")
        for tag in ("vip", "east"):
            ca.tag_party(s, f"{u}-full", tag)
    with session_factory() as s:
        for code in (f"{u}-full", c["s1"]):
            general = _party_views(s, [party_row(s, code)])[0]
            assert ca.get_party(s, code) == general
            assert ca.get_party(s, general.public_id) == general
        full = ca.get_party(s, f"{u}-full")
        assert full.groups == (f"{u}-aa", f"{u}-zz") and full.tags == ("east", "vip")
        assert full.grade_code == f"{u}-gold" and full.quality_customer is True
        assert full.metadata == {"shop": {"floors": 2}, "note": "x"}
        bare = ca.get_party(s, c["s1"])
        assert (bare.grade_code, bare.groups, bare.tags) == (None, (), ())


def test_get_party_finds_a_code_that_looks_like_a_public_id(net, session_factory):
    code = f"pty_{net.u}"
    with session_factory() as s, s.begin():
        ca.create_party(s, code=code, name="Odd", role="store", region=net.codes["hz"],
                        customer_type=net.codes["grocery"])
    with session_factory() as s:
        assert ca.get_party(s, code).code == code


@pytest.mark.parametrize("missing", ["", "pty_0000", "no-such-party"])
def test_get_party_refuses_an_unknown_party(net, session_factory, missing):
    with session_factory() as s, pytest.raises(PartyNotFound):
        ca.get_party(s, f"{missing}{net.u}" if missing else missing)


def test_get_party_sees_the_session_s_unflushed_changes(net, session_factory):
    with session_factory() as s:  # closed without commit: the rename is rolled back
        party_row(s, net.codes["s3"]).name = "Renamed, not yet flushed"
        assert ca.get_party(s, net.codes["s3"]).name == "Renamed, not yet flushed"


# --- argument schemas built once -----------------------------------------------------

def test_a_channel_blueprint_parses_arguments_with_one_schema_instance():
    from marshmallow import Schema, fields

    from service.channel_edge import ChannelBlueprint

    class ThingIn(Schema):
        name = fields.String(required=True)

    blp = ChannelBlueprint("request_cost_things", __name__)
    view = blp.arguments(ThingIn)(lambda body: body)
    # flask-smorest documents (and webargs parses with) what it was given: an
    # instance, not the class webargs would instantiate on every request.
    schema = view._apidoc["arguments"]["parameters"][0]["schema"]
    assert isinstance(schema, ThingIn)


def test_a_shared_argument_schema_keeps_no_state_between_requests(client, net, session_factory):
    u = net.u
    for attempt in range(2):
        refused = client.post("/v1/groups", headers=net.auth("brand"), json={"code": f"{u}-x"})
        assert refused.status_code == 422, refused.json
        assert "name" in json.dumps(refused.json)
        made = client.post("/v1/groups", headers=net.auth("brand"),
                           json={"code": f"{u}-ok{attempt}", "name": f"OK {attempt}"})
        assert made.status_code == 201, made.json
        assert made.json["name"] == f"OK {attempt}"
