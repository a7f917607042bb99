"""Channel API: price strategies, a buyer's price list, one SKU's price with
"why this price", dynamic tags and purchase habits.

A buyer asks for its own prices with its storefront key. A seller's
managers (and the brand's) may ask on behalf of one of the seller's buyers
(``?buyer=``), to see what that buyer sees.
"""
from __future__ import annotations

from flask_smorest import abort

from channel_api import AccessDenied, access, habits, prices, tags
from service.channel_edge import (
    ChannelBlueprint,
    actor,
    buyer_seen_by_caller,
    caller,
    mutation,
    require_party_visible,
)
from service.request_db import db_session
from service.schemas_channel import (
    DynamicTagIn,
    DynamicTagList,
    DynamicTagOut,
    DynamicTagPatch,
    HabitOut,
    PriceArgs,
    PriceListArgs,
    PriceListOut,
    PriceQuoteOut,
    RecomputeOut,
    StrategyIn,
    StrategyListArgs,
    StrategyOut,
    StrategyPage,
    StrategyPatch,
)

blp = ChannelBlueprint(
    "channel_pricing", __name__, url_prefix="/v1",
    description="Price strategies, price lists, prices with explanations, dynamic tags, habits.",
)
QUERY = {"location": "query", "as_kwargs": True}


# --- strategies ------------------------------------------------------------------------

@blp.route("/price-strategies", methods=["GET"])
@blp.arguments(StrategyListArgs, **QUERY)
@blp.response(200, StrategyPage)
def list_strategies(**filters):
    """The brand's managers see every seller's; a distributor's, its own."""
    who = caller()
    access.require_scope(who, "manage")
    if not who.is_brand:
        if filters.get("owner", who.party_code) != who.party_code:
            raise AccessDenied("you may list only your own strategies", field="owner")
        filters["owner"] = who.party_code
    items, next_cursor = prices.list_strategies(db_session(), **filters)
    return {"items": items, "next_cursor": next_cursor}


@blp.route("/price-strategies", methods=["POST"])
@mutation
@blp.arguments(StrategyIn)
@blp.response(201, StrategyOut)
def create_strategy(body):
    """A seller's price strategy (its managers, or the brand's)."""
    access.require_manager_of(caller(), body["owner"])
    return prices.create_strategy(db_session(), actor=actor(), **body)


@blp.route("/price-strategies/<code>", methods=["GET"])
@blp.response(200, StrategyOut)
def get_strategy(code: str):
    strategy = prices.get_strategy(db_session(), code)
    access.require_manager_of(caller(), strategy.owner_code)
    return strategy


@blp.route("/price-strategies/<code>", methods=["PATCH"])
@mutation
@blp.arguments(StrategyPatch)
@blp.response(200, StrategyOut)
def update_strategy(body, code: str):
    """Change a strategy (its version goes up); orders keep the prices they froze."""
    if not body:
        abort(422, errors={"json": {"_schema": ["Give at least one field to change."]}})
    strategy = prices.get_strategy(db_session(), code)
    access.require_manager_of(caller(), strategy.owner_code)
    return prices.update_strategy(db_session(), code, actor=actor(), **body)


# --- prices -------------------------------------------------------------------------------

@blp.route("/sellers/<seller>/price-list", methods=["GET"])
@blp.arguments(PriceListArgs, **QUERY)
@blp.response(200, PriceListOut)
def price_list(seller: str, buyer: str | None = None, **kwargs):
    """Every SKU the buyer may buy from the seller, with its unit price."""
    buyer = buyer_seen_by_caller(seller, buyer)
    return prices.price_list(db_session(), seller=seller, buyer=buyer, **kwargs)


@blp.route("/sellers/<seller>/prices/<sku>", methods=["GET"])
@blp.arguments(PriceArgs, **QUERY)
@blp.response(200, PriceQuoteOut)
def price(seller: str, sku: str, buyer: str | None = None, **kwargs):
    """One SKU's price for a quantity, and why: the winning strategy, the
    ones it beat, and those that could not apply."""
    buyer = buyer_seen_by_caller(seller, buyer)
    return prices.price_for(db_session(), seller=seller, buyer=buyer, sku=sku, **kwargs)


# --- dynamic tags and habits -------------------------------------------------------------

@blp.route("/dynamic-tags", methods=["GET"])
@blp.response(200, DynamicTagList)
def list_dynamic_tags():
    access.require_brand_manager(caller())
    return {"items": tags.list_dynamic_tags(db_session())}


@blp.route("/dynamic-tags", methods=["POST"])
@mutation
@blp.arguments(DynamicTagIn)
@blp.response(201, DynamicTagOut)
def create_dynamic_tag(body):
    """A tag computed from a rule over master data and purchase habits."""
    access.require_brand_manager(caller())
    return tags.create_dynamic_tag(db_session(), body["code"], body["name"], body["rule"],
                                   actor=actor())


@blp.route("/dynamic-tags/<code>", methods=["GET"])
@blp.response(200, DynamicTagOut)
def get_dynamic_tag(code: str):
    access.require_brand_manager(caller())
    return tags.get_dynamic_tag(db_session(), code)


@blp.route("/dynamic-tags/<code>", methods=["PATCH"])
@mutation
@blp.arguments(DynamicTagPatch)
@blp.response(200, DynamicTagOut)
def update_dynamic_tag(body, code: str):
    access.require_brand_manager(caller())
    if not body:
        abort(422, errors={"json": {"_schema": ["Give at least one field to change."]}})
    return tags.update_dynamic_tag(db_session(), code, actor=actor(), **body)


@blp.route("/dynamic-tags/<code>/recompute", methods=["POST"])
@mutation
@blp.response(200, RecomputeOut)
def recompute_dynamic_tag(code: str):
    """Re-evaluate the rule over every party now (the daily job does it too)."""
    access.require_brand_manager(caller())
    return tags.recompute_dynamic_tag(db_session(), code, actor=actor())


@blp.route("/parties/<code>/purchase-habits", methods=["GET"])
@blp.response(200, HabitOut)
def get_purchase_habits(code: str):
    """A buyer's purchase facts, kept current as orders arrive (404 before any)."""
    require_party_visible(code)
    habit = habits.get_habit(db_session(), code)
    if habit is None:
        abort(404, message=f"{code} has no orders yet")
    return habit
