"""Channel API: the catalog, supply relationships, sale permissions and
coverage.

The brand's managers administer the catalog and the whole network; a
distributor's managers manage what it sells (its relationships as seller,
its coverage) and read the catalog; a store's key sees the relationships in
which it buys (``/v1/sellers``).
"""
from __future__ import annotations

from flask_smorest import abort

from channel_api import AccessDenied, access, catalog, network
from service.channel_edge import ChannelBlueprint, actor, caller, mutation
from service.request_db import db_session
from service.schemas_channel import (
    CategoryIn,
    CategoryList,
    CategoryOut,
    CoverageIn,
    CoverageListArgs,
    CoverageOut,
    ProductIn,
    ProductListArgs,
    ProductOut,
    ProductPage,
    ProductPatch,
    RelationshipIn,
    RelationshipListArgs,
    RelationshipOut,
    RelationshipPage,
    RelationshipPatch,
    SalePermissionIn,
    SalePermissionOut,
    SkuIn,
    SkuListArgs,
    SkuOut,
    SkuPage,
    SkuPatch,
    UnitIn,
    UnitList,
    UnitOut,
)

blp = ChannelBlueprint(
    "channel_network", __name__, url_prefix="/v1",
    description="Catalog, supply relationships, sale permissions and coverage.",
)
QUERY = {"location": "query", "as_kwargs": True}


def _need_changes(body: dict) -> None:
    if not body:
        abort(422, errors={"json": {"_schema": ["Give at least one field to change."]}})


# --- catalog --------------------------------------------------------------------------

@blp.route("/categories", methods=["GET"])
@blp.response(200, CategoryList)
def list_categories():
    """The category tree, parents before children."""
    return {"items": catalog.list_categories(db_session())}


@blp.route("/categories", methods=["POST"])
@mutation
@blp.arguments(CategoryIn)
@blp.response(201, CategoryOut)
def create_category(body):
    access.require_brand_manager(caller())
    return catalog.create_category(db_session(), body["code"], body["name"],
                                   parent=body["parent"], sort=body["sort"])


@blp.route("/units", methods=["GET"])
@blp.response(200, UnitList)
def list_units():
    return {"items": catalog.list_units(db_session())}


@blp.route("/units", methods=["POST"])
@mutation
@blp.arguments(UnitIn)
@blp.response(201, UnitOut)
def create_unit(body):
    access.require_brand_manager(caller())
    return catalog.create_unit(db_session(), body["code"], body["name"])


@blp.route("/products", methods=["GET"])
@blp.arguments(ProductListArgs, **QUERY)
@blp.response(200, ProductPage)
def list_products(**filters):
    access.require_scope(caller(), "manage")
    items, next_cursor = catalog.list_products(db_session(), **filters)
    return {"items": items, "next_cursor": next_cursor}


@blp.route("/products", methods=["POST"])
@mutation
@blp.arguments(ProductIn)
@blp.response(201, ProductOut)
def create_product(body):
    access.require_brand_manager(caller())
    return catalog.create_product(db_session(), body.pop("code"), body.pop("name"), **body)


@blp.route("/products/<code>", methods=["GET"])
@blp.response(200, ProductOut)
def get_product(code: str):
    access.require_scope(caller(), "manage")
    return catalog.get_product(db_session(), code)


@blp.route("/products/<code>", methods=["PATCH"])
@mutation
@blp.arguments(ProductPatch)
@blp.response(200, ProductOut)
def update_product(body, code: str):
    access.require_brand_manager(caller())
    _need_changes(body)
    return catalog.update_product(db_session(), code, **body)


@blp.route("/skus", methods=["GET"])
@blp.arguments(SkuListArgs, **QUERY)
@blp.response(200, SkuPage)
def list_skus(**filters):
    access.require_scope(caller(), "manage")
    items, next_cursor = catalog.list_skus(db_session(), **filters)
    return {"items": items, "next_cursor": next_cursor}


@blp.route("/skus", methods=["POST"])
@mutation
@blp.arguments(SkuIn)
@blp.response(201, SkuOut)
def create_sku(body):
    """Add a SKU with the brand's list price (integer minor units)."""
    access.require_brand_manager(caller())
    return catalog.create_sku(db_session(), body.pop("code"), body.pop("name"), **body)


@blp.route("/skus/<code>", methods=["GET"])
@blp.response(200, SkuOut)
def get_sku(code: str):
    access.require_scope(caller(), "manage")
    return catalog.get_sku(db_session(), code)


@blp.route("/skus/<code>", methods=["PATCH"])
@mutation
@blp.arguments(SkuPatch)
@blp.response(200, SkuOut)
def update_sku(body, code: str):
    """Change a SKU; a new list price applies to prices resolved from now on."""
    access.require_brand_manager(caller())
    _need_changes(body)
    return catalog.update_sku(db_session(), code, **body)


# --- relationships ------------------------------------------------------------------------

def _require_party_in(relationship, who) -> None:
    if who.is_brand and "manage" in who.scopes:
        return
    if who.party_code not in (relationship.seller_code, relationship.buyer_code):
        raise AccessDenied("this relationship is not yours")


@blp.route("/relationships", methods=["GET"])
@blp.arguments(RelationshipListArgs, **QUERY)
@blp.response(200, RelationshipPage)
def list_relationships(**filters):
    """The brand's managers see all; a party sees those it sells or buys in
    (name yourself as ``seller`` or ``buyer``; by default, as seller for a
    manage key, as buyer otherwise)."""
    who = caller()
    if not (who.is_brand and "manage" in who.scopes):
        mine = who.party_code
        if mine not in (filters.get("seller"), filters.get("buyer")):
            if filters.get("seller") is not None or filters.get("buyer") is not None:
                raise AccessDenied("you may list only relationships you are part of")
            filters["seller" if "manage" in who.scopes else "buyer"] = mine
        if filters.get("seller") == mine:
            access.require_scope(who, "manage")
    items, next_cursor = network.list_relationships(db_session(), **filters)
    return {"items": items, "next_cursor": next_cursor}


@blp.route("/sellers", methods=["GET"])
@blp.arguments(RelationshipListArgs, **QUERY)
@blp.response(200, RelationshipPage)
def list_my_sellers(**filters):
    """The relationships in which the caller buys: whom it may buy from."""
    who = caller()
    if filters.get("buyer") not in (None, who.party_code):
        raise AccessDenied("you may list only your own sellers", field="buyer")
    filters["buyer"] = who.party_code
    items, next_cursor = network.list_relationships(db_session(), **filters)
    return {"items": items, "next_cursor": next_cursor}


@blp.route("/relationships", methods=["POST"])
@mutation
@blp.arguments(RelationshipIn)
@blp.response(201, RelationshipOut)
def create_relationship(body):
    """Let a buyer buy from a seller (the brand's managers, or the seller's)."""
    access.require_manager_of(caller(), body["seller"])
    return network.create_relationship(db_session(), actor=actor(), **body)


@blp.route("/relationships/<public_id>", methods=["GET"])
@blp.response(200, RelationshipOut)
def get_relationship(public_id: str):
    relationship = network.get_relationship(db_session(), public_id)
    _require_party_in(relationship, caller())
    return relationship


@blp.route("/relationships/<public_id>", methods=["PATCH"])
@mutation
@blp.arguments(RelationshipPatch)
@blp.response(200, RelationshipOut)
def update_relationship(body, public_id: str):
    """Suspend, end or reactivate; change the purchase permission or validity."""
    _need_changes(body)
    relationship = network.get_relationship(db_session(), public_id)
    access.require_manager_of(caller(), relationship.seller_code)
    return network.update_relationship(db_session(), public_id, actor=actor(), **body)


# --- sale permissions and coverage ----------------------------------------------------------

@blp.route("/parties/<code>/sale-permission", methods=["GET"])
@blp.response(200, SalePermissionOut)
def get_sale_permission(code: str):
    """What a seller may sell and where (404 when it may sell nothing)."""
    access.require_manager_of(caller(), code)
    permission = network.get_sale_permission(db_session(), code)
    if permission is None:
        abort(404, message=f"{code} has no sale permission: it may sell nothing")
    return permission


@blp.route("/parties/<code>/sale-permission", methods=["PUT"])
@mutation
@blp.arguments(SalePermissionIn)
@blp.response(200, SalePermissionOut)
def set_sale_permission(body, code: str):
    """Set a distributor's sale permission (the brand's managers)."""
    access.require_brand_manager(caller())
    return network.set_sale_permission(db_session(), code, actor=actor(), **body)


@blp.route("/coverage/assign", methods=["POST"])
@mutation
@blp.arguments(CoverageIn)
@blp.response(200, CoverageOut)
def assign_coverage(body):
    """A distributor supplies every store matching the selectors (AND):
    a list of codes, a region, a customer type (with subtrees)."""
    access.require_manager_of(caller(), body["distributor"])
    return network.assign_coverage(db_session(), body.pop("distributor"), actor=actor(), **body)


@blp.route("/coverage/unassign", methods=["POST"])
@mutation
@blp.arguments(CoverageIn)
@blp.response(200, CoverageOut)
def unassign_coverage(body):
    access.require_manager_of(caller(), body["distributor"])
    if body.pop("product_scope", None) is not None:
        abort(422, errors={"json": {"product_scope": ["Unassigning takes no product_scope."]}})
    return network.unassign_coverage(db_session(), body.pop("distributor"), actor=actor(), **body)


@blp.route("/coverage", methods=["GET"])
@blp.arguments(CoverageListArgs, **QUERY)
@blp.response(200, RelationshipPage)
def list_coverage(distributor: str, **filters):
    access.require_manager_of(caller(), distributor)
    items, next_cursor = network.list_coverage(db_session(), distributor, **filters)
    return {"items": items, "next_cursor": next_cursor}
