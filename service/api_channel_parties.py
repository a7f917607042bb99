"""Channel API: the caller's own party, the network's master data (regions,
customer types, grades, groups, parties, tags), API keys and the audit trail.

Who may do what is decided by ``channel_api.access`` (see its docstring);
each view checks first, then calls one use case.
"""
from __future__ import annotations

from flask_smorest import abort

import channel_api as ca
from channel_api import access, audit, keys
from service.channel_edge import ChannelBlueprint, actor, caller, mutation, require_party_visible
from service.request_db import db_session
from service.schemas_channel import (
    ApiKeyIn,
    ApiKeyList,
    AuditArgs,
    AuditPage,
    CustomerTypeIn,
    CustomerTypeList,
    CustomerTypeOut,
    GradeIn,
    GradeList,
    GradeOut,
    GroupIn,
    GroupList,
    GroupOut,
    IssuedKeyOut,
    ApiKeyOut,
    PartyIn,
    PartyListArgs,
    PartyOut,
    PartyPage,
    PartyPatch,
    RegionIn,
    RegionList,
    RegionOut,
)

blp = ChannelBlueprint(
    "channel_parties", __name__, url_prefix="/v1",
    description="The channel network: the caller's party, master data, parties, API keys, audit.",
)
QUERY = {"location": "query"}


@blp.route("/me", methods=["GET"])
@blp.response(200, PartyOut)
def me():
    """The party the API key belongs to."""
    return ca.get_party(db_session(), caller().party_code)


# --- master data ----------------------------------------------------------------

@blp.route("/regions", methods=["GET"])
@blp.response(200, RegionList)
def list_regions():
    """Every region, parents before children."""
    return {"items": ca.list_regions(db_session())}


@blp.route("/regions", methods=["POST"])
@mutation
@blp.arguments(RegionIn)
@blp.response(201, RegionOut)
def create_region(body):
    """Add a region under a parent (brand managers)."""
    access.require_brand_manager(caller())
    return ca.create_region(db_session(), body["code"], body["name"],
                            parent=body["parent"], level=body["level"])


@blp.route("/customer-types", methods=["GET"])
@blp.response(200, CustomerTypeList)
def list_customer_types():
    return {"items": ca.list_customer_types(db_session())}


@blp.route("/customer-types", methods=["POST"])
@mutation
@blp.arguments(CustomerTypeIn)
@blp.response(201, CustomerTypeOut)
def create_customer_type(body):
    access.require_brand_manager(caller())
    return ca.create_customer_type(db_session(), body["code"], body["name"], parent=body["parent"])


@blp.route("/grades", methods=["GET"])
@blp.response(200, GradeList)
def list_grades():
    return {"items": ca.list_grades(db_session())}


@blp.route("/grades", methods=["POST"])
@mutation
@blp.arguments(GradeIn)
@blp.response(201, GradeOut)
def create_grade(body):
    access.require_brand_manager(caller())
    return ca.create_grade(db_session(), body["code"], body["name"], rank=body["rank"])


@blp.route("/groups", methods=["GET"])
@blp.response(200, GroupList)
def list_groups():
    access.require_scope(caller(), "manage")
    return {"items": ca.list_groups(db_session())}


@blp.route("/groups", methods=["POST"])
@mutation
@blp.arguments(GroupIn)
@blp.response(201, GroupOut)
def create_group(body):
    access.require_brand_manager(caller())
    return ca.create_group(db_session(), body["code"], body["name"])


# --- parties --------------------------------------------------------------------

@blp.route("/parties", methods=["GET"])
@blp.arguments(PartyListArgs, **QUERY, as_kwargs=True)
@blp.response(200, PartyPage)
def list_parties(**filters):
    """Parties in code order. A distributor's manager sees only its buyers."""
    who = caller()
    access.require_scope(who, "manage")
    if not who.is_brand:
        if filters.get("buyer_of", who.party_code) != who.party_code:
            raise ca.AccessDenied("you may list only your own buyers", field="buyer_of")
        filters["buyer_of"] = who.party_code
    items, next_cursor = ca.list_parties(db_session(), **filters)
    return {"items": items, "next_cursor": next_cursor}


@blp.route("/parties", methods=["POST"])
@mutation
@blp.arguments(PartyIn)
@blp.response(201, PartyOut)
def create_party(body):
    """Add a brand, distributor or store (brand managers)."""
    access.require_brand_manager(caller())
    return ca.create_party(db_session(), **body)


@blp.route("/parties/<code>", methods=["GET"])
@blp.response(200, PartyOut)
def get_party(code: str):
    require_party_visible(code)
    return ca.get_party(db_session(), code)


@blp.route("/parties/<code>", methods=["PATCH"])
@mutation
@blp.arguments(PartyPatch)
@blp.response(200, PartyOut)
def update_party(body, code: str):
    access.require_brand_manager(caller())
    if not body:
        abort(422, errors={"json": {"_schema": ["Give at least one field to change."]}})
    return ca.update_party(db_session(), code, **body)


@blp.route("/parties/<code>/groups/<group>", methods=["PUT"])
@mutation
@blp.response(200, PartyOut)
def add_to_group(code: str, group: str):
    access.require_brand_manager(caller())
    return ca.add_to_group(db_session(), code, group)


@blp.route("/parties/<code>/groups/<group>", methods=["DELETE"])
@mutation
@blp.response(200, PartyOut)
def remove_from_group(code: str, group: str):
    access.require_brand_manager(caller())
    return ca.remove_from_group(db_session(), code, group)


@blp.route("/parties/<code>/tags/<tag>", methods=["PUT"])
@mutation
@blp.response(200, PartyOut)
def tag_party(code: str, tag: str):
    """Add a manual tag."""
    access.require_brand_manager(caller())
    return ca.tag_party(db_session(), code, tag)


@blp.route("/parties/<code>/tags/<tag>", methods=["DELETE"])
@mutation
@blp.response(200, PartyOut)
def untag_party(code: str, tag: str):
    access.require_brand_manager(caller())
    return ca.untag_party(db_session(), code, tag)


# --- API keys ---------------------------------------------------------------------

@blp.route("/api-keys", methods=["GET"])
@blp.response(200, ApiKeyList)
def list_api_keys():
    """The brand's managers see every key; other managers their own party's."""
    who = caller()
    access.require_scope(who, "manage")
    party = None if who.is_brand else who.party_code
    return {"items": keys.list_api_keys(db_session(), party=party)}


@blp.route("/api-keys", methods=["POST"])
@mutation
@blp.arguments(ApiKeyIn)
@blp.response(201, IssuedKeyOut)
def create_api_key(body):
    """Issue a key to a party (brand managers). The token is shown only here."""
    access.require_brand_manager(caller())
    return keys.create_api_key(db_session(), party=body["party"], scopes=body["scopes"],
                               name=body["name"], actor=actor())


@blp.route("/api-keys/<key_id>", methods=["DELETE"])
@mutation
@blp.response(200, ApiKeyOut)
def revoke_api_key(key_id: str):
    """Revoke a key: the brand's managers any, other managers their own party's."""
    who = caller()
    access.require_scope(who, "manage")
    key = keys.get_api_key(db_session(), key_id)
    access.require_self_or_brand(who, key.party_code)
    return keys.revoke_api_key(db_session(), key_id, actor=actor())


# --- audit ------------------------------------------------------------------------

@blp.route("/audit", methods=["GET"])
@blp.arguments(AuditArgs, **QUERY, as_kwargs=True)
@blp.response(200, AuditPage)
def list_audit(**filters):
    """Changes to coverage, permissions, strategies, tags and keys, newest first."""
    access.require_brand_manager(caller())
    items, next_cursor = audit.list_audit(db_session(), **filters)
    return {"items": items, "next_cursor": next_cursor}
