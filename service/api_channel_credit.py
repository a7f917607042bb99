"""Channel API: credit administration by the seller's managers (defaults
per grade, the credit-check policy, temporary increases) and the approval
of orders the policy held (issue 4)."""
from __future__ import annotations

from channel_api import access, credit, funding, orders
from service.channel_edge import ChannelBlueprint, actor, caller, mutation
from service.request_db import db_session
from service.schemas_channel import OrderOut
from service.schemas_credit import (
    CreditDefaultIn,
    CreditDefaultList,
    CreditDefaultOut,
    CreditPolicyIn,
    CreditPolicyList,
    CreditPolicyOut,
    DecisionIn,
    HoldArgs,
    HoldList,
    IncreaseIn,
    IncreaseList,
    IncreaseOut,
)

blp = ChannelBlueprint("channel_credit", __name__, url_prefix="/v1",
                       description="Credit: grade defaults, policies, increases, held orders.")


@blp.route("/parties/<seller>/credit-defaults/<grade>", methods=["PUT"])
@mutation
@blp.arguments(CreditDefaultIn)
@blp.response(200, CreditDefaultOut)
def set_credit_default(body, seller: str, grade: str):
    """The line every buyer of a grade gets from this seller, unless one is
    set for the buyer by hand."""
    access.require_manager_of(caller(), seller)
    return credit.set_credit_default(db_session(), seller=seller, grade=grade, actor=actor(),
                                     **body)


@blp.route("/parties/<seller>/credit-defaults", methods=["GET"])
@blp.response(200, CreditDefaultList)
def credit_defaults(seller: str):
    access.require_manager_of(caller(), seller)
    return {"items": credit.credit_defaults(db_session(), seller)}


@blp.route("/parties/<seller>/credit-policies", methods=["PUT"])
@mutation
@blp.arguments(CreditPolicyIn)
@blp.response(200, CreditPolicyOut)
def set_credit_policy(body, seller: str):
    """Block, or hold for approval, an order whose credit part is over the
    limit, on an expired line, or with debts overdue beyond N days; and when
    the freeze job freezes a line. Per grade, or for every grade."""
    access.require_manager_of(caller(), seller)
    return credit.set_credit_policy(db_session(), seller=seller, actor=actor(), **body)


@blp.route("/parties/<seller>/credit-policies", methods=["GET"])
@blp.response(200, CreditPolicyList)
def credit_policies(seller: str):
    access.require_manager_of(caller(), seller)
    return {"items": credit.credit_policies(db_session(), seller)}


@blp.route("/parties/<seller>/credit-lines/<buyer>/increases", methods=["POST"])
@mutation
@blp.arguments(IncreaseIn)
@blp.response(201, IncreaseOut)
def grant_increase(body, seller: str, buyer: str):
    """A temporary increase of the buyer's limit, until ``valid_to``."""
    access.require_manager_of(caller(), seller)
    return credit.grant_increase(db_session(), seller=seller, buyer=buyer, actor=actor(), **body)


@blp.route("/parties/<seller>/credit-lines/<buyer>/increases", methods=["GET"])
@blp.response(200, IncreaseList)
def increases(seller: str, buyer: str):
    access.require_manager_of(caller(), seller)
    return {"items": credit.increases(db_session(), seller=seller, buyer=buyer)}


@blp.route("/sellers/<seller>/held-orders", methods=["GET"])
@blp.arguments(HoldArgs, location="query", as_kwargs=True)
@blp.response(200, HoldList)
def held_orders(seller: str, state: str, limit: int):
    """Orders the seller's credit policy held, with why, oldest first."""
    access.require_manager_of(caller(), seller)
    return {"items": funding.held_orders(db_session(), seller=seller, state=state, limit=limit)}


@blp.route("/orders/<order_id>/approve", methods=["POST"])
@mutation
@blp.arguments(DecisionIn)
@blp.response(200, OrderOut)
def approve_held_order(body, order_id: str):
    """Approve a held order: its plan is reserved now (over the limit, with
    a temporary increase of the shortfall for this order)."""
    access.require_manager_of(caller(), orders.get_order(db_session(), order_id).seller_code)
    return funding.approve_held_order(db_session(), order_id, actor=actor(), note=body["note"])


@blp.route("/orders/<order_id>/reject", methods=["POST"])
@mutation
@blp.arguments(DecisionIn)
@blp.response(200, OrderOut)
def reject_held_order(body, order_id: str):
    """Reject a held order: it is cancelled."""
    access.require_manager_of(caller(), orders.get_order(db_session(), order_id).seller_code)
    return funding.reject_held_order(db_session(), order_id, actor=actor(), note=body["note"])
