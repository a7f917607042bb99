"""Channel API: returns after payment and remittances (issue 4).

The buyer requests a return of its order and may withdraw it; the seller's
managers approve (the refund is posted at once) or reject. The buyer files
its offline transfers with proof; the seller's finance confirms them (the
money is posted) or rejects them.
"""
from __future__ import annotations

from flask import Response

from channel_api import AccessDenied, access, orders, remittances, returns
from service.api_payments import send_refunds_after_this_request
from service.channel_edge import ChannelBlueprint, actor, caller, mutation
from service.request_db import db_session
from service.schemas_returns import (
    RemittanceDecisionIn,
    RemittanceIn,
    RemittanceListArgs,
    RemittanceOut,
    RemittancePage,
    ReturnDecisionIn,
    ReturnIn,
    ReturnList,
    ReturnListArgs,
    ReturnOut,
)

blp = ChannelBlueprint("channel_returns", __name__, url_prefix="/v1",
                       description="Returns after payment; remittances filed by buyers.")


def _buyer_of(order_code: str) -> None:
    who = caller()
    access.require_scope(who, "storefront")
    if orders.get_order(db_session(), order_code).buyer_code != who.party_code:
        raise AccessDenied("only the buyer may do this")


def _sees_order(order_code: str) -> None:
    order, who = orders.get_order(db_session(), order_code), caller()
    if who.party_code == order.buyer_code:
        return
    access.require_manager_of(who, order.seller_code)


@blp.route("/orders/<order_id>/returns", methods=["POST"])
@mutation
@blp.arguments(ReturnIn)
@blp.response(201, ReturnOut)
def request_return(body, order_id: str):
    """Ask to return some quantity of your order's lines (paid, shipped or
    delivered, before completion); the amount is computed by the server."""
    _buyer_of(order_id)
    return returns.request_return(db_session(), order_id, actor=actor(), **body)


@blp.route("/orders/<order_id>/returns", methods=["GET"])
@blp.response(200, ReturnList)
def order_returns(order_id: str):
    _sees_order(order_id)
    return {"items": returns.list_returns(db_session(), order=order_id)}


@blp.route("/sellers/<seller>/returns", methods=["GET"])
@blp.arguments(ReturnListArgs, location="query", as_kwargs=True)
@blp.response(200, ReturnList)
def seller_returns(seller: str, limit: int, state: str | None = None):
    """Returns of the seller's orders (``state=requested``: awaiting decision)."""
    access.require_manager_of(caller(), seller)
    return {"items": returns.list_returns(db_session(), seller=seller, state=state, limit=limit)}


@blp.route("/returns/<return_id>", methods=["GET"])
@blp.response(200, ReturnOut)
def get_return(return_id: str):
    found = returns.get_return(db_session(), return_id)
    _sees_order(found.order)
    return found


@blp.route("/returns/<return_id>/approve", methods=["POST"])
@mutation
@blp.arguments(ReturnDecisionIn)
@blp.response(200, ReturnOut)
def approve_return(body, return_id: str):
    """The seller approves: the refund goes back to each funding source."""
    found = returns.get_return(db_session(), return_id)
    access.require_manager_of(caller(), found.seller)
    send_refunds_after_this_request()
    return returns.approve_return(db_session(), return_id, actor=actor(), note=body["note"])


@blp.route("/returns/<return_id>/reject", methods=["POST"])
@mutation
@blp.arguments(ReturnDecisionIn)
@blp.response(200, ReturnOut)
def reject_return(body, return_id: str):
    found = returns.get_return(db_session(), return_id)
    access.require_manager_of(caller(), found.seller)
    return returns.reject_return(db_session(), return_id, actor=actor(), note=body["note"])


@blp.route("/returns/<return_id>/withdraw", methods=["POST"])
@mutation
@blp.response(200, ReturnOut)
def withdraw_return(return_id: str):
    _buyer_of(returns.get_return(db_session(), return_id).order)
    return returns.withdraw_return(db_session(), return_id, actor=actor())


@blp.route("/remittances", methods=["POST"])
@mutation
@blp.arguments(RemittanceIn)
@blp.response(201, RemittanceOut)
def file_remittance(body):
    """File a bank transfer you made to a seller (for an order, a deposit or
    a credit repayment), with a receipt if you have one. Nothing is credited
    until the seller's finance confirms it against its statement."""
    who = caller()
    access.require_scope(who, "storefront")
    reference = body.pop("bank_reference")
    proof = body.pop("proof_base64")
    return remittances.file_remittance(db_session(), buyer=who.party_code, actor=actor(),
                                       bank_reference_=reference, proof=proof, **body)


@blp.route("/remittances", methods=["GET"])
@blp.arguments(RemittanceListArgs, location="query", as_kwargs=True)
@blp.response(200, RemittancePage)
def list_remittances(role: str, limit: int, after: str | None = None, state: str | None = None):
    """Your remittances as buyer, or (finance and managers) those paid to you."""
    who = caller()
    if role == "seller":
        access.require_finance_of(who, who.party_code) if "finance" in who.scopes else \
            access.require_manager_of(who, who.party_code)
    items, cursor = remittances.list_remittances(db_session(), **{role: who.party_code},
                                                 state=state, after=after, limit=limit)
    return {"items": items, "next_cursor": cursor}


def _sees_remittance(found) -> None:
    who = caller()
    if who.party_code == found.buyer:
        return
    if "finance" in who.scopes or (who.is_brand and "manage" in who.scopes):
        access.require_finance_of(who, found.seller)
        return
    access.require_manager_of(who, found.seller)


@blp.route("/remittances/<remittance_id>", methods=["GET"])
@blp.response(200, RemittanceOut)
def get_remittance(remittance_id: str):
    found = remittances.get_remittance(db_session(), remittance_id)
    _sees_remittance(found)
    return found


@blp.route("/remittances/<remittance_id>/proof", methods=["GET"])
@blp.response(200)
def remittance_proof(remittance_id: str):
    """The receipt as it was filed."""
    _sees_remittance(remittances.get_remittance(db_session(), remittance_id))
    content, content_type = remittances.remittance_proof(db_session(), remittance_id)
    return Response(content, mimetype=content_type,
                    headers={"Cache-Control": "private, no-store",
                             "X-Content-Type-Options": "nosniff"})


@blp.route("/remittances/<remittance_id>/confirm", methods=["POST"])
@mutation
@blp.arguments(RemittanceDecisionIn)
@blp.response(200, RemittanceOut)
def confirm_remittance(body, remittance_id: str):
    """The seller's finance confirms: the money is posted."""
    access.require_finance_of(caller(),
                              remittances.get_remittance(db_session(), remittance_id).seller)
    return remittances.confirm_remittance(db_session(), remittance_id, actor=actor(),
                                          note=body["note"])


@blp.route("/remittances/<remittance_id>/reject", methods=["POST"])
@mutation
@blp.arguments(RemittanceDecisionIn)
@blp.response(200, RemittanceOut)
def reject_remittance(body, remittance_id: str):
    access.require_finance_of(caller(),
                              remittances.get_remittance(db_session(), remittance_id).seller)
    return remittances.reject_remittance(db_session(), remittance_id, actor=actor(),
                                         note=body["note"])
