"""Channel API: orders (first slice of issue 4).

A buyer places orders with its storefront key (it is always the buyer:
``seller`` is in the body, prices are set by the server); the seller's
managers see their sales; the brand's managers see every order. Cancelling
is open to the buyer and the seller's managers. A distributor links its
purchase (upstream) to the sales it serves (downstream).
"""
from __future__ import annotations

from channel_api import AccessDenied, access, credit, funding, orders
from service.api_payments import send_refunds_after_this_request
from service.channel_edge import (
    ChannelBlueprint,
    actor,
    buyer_seen_by_caller,
    caller,
    mutation,
)
from service.request_db import db_session
from service.schemas_channel import (
    AgingArgs,
    BalanceArgs,
    BalancesOut,
    CancelIn,
    CreditAgingOut,
    CreditLineIn,
    CreditedOut,
    DepositIn,
    PlanIn,
    RebateGrantIn,
    RebateRuleIn,
    RebateRuleOut,
    RepaymentIn,
    ShipIn,
    TransferIn,
    OrderEventList,
    OrderIn,
    OrderLinkIn,
    OrderList,
    OrderListArgs,
    OrderOut,
    OrderPage,
)

blp = ChannelBlueprint("channel_orders", __name__, url_prefix="/v1",
                       description="Orders: place, read, list, cancel, events, links.")


def _visible(order) -> None:
    """The buyer, the seller's managers and the brand's managers see an order."""
    who = caller()
    if who.is_brand and "manage" in who.scopes:
        return
    if who.party_code == order.buyer_code:
        return
    if who.party_code == order.seller_code and "manage" in who.scopes:
        return
    raise AccessDenied("this order is not yours")


@blp.route("/orders", methods=["POST"])
@mutation
@blp.arguments(OrderIn)
@blp.response(201, OrderOut)
def place_order(body):
    """Place an order as the key's party; each line is priced by the seller's
    strategies now and frozen. With ``plan``, it is funded in the same call."""
    who = caller()
    access.require_scope(who, "storefront")
    plan = body.pop("plan")
    if plan is not None:
        return funding.place_and_fund(db_session(), buyer=who.party_code, actor=actor(),
                                      parts=plan, **body)
    return orders.place_order(db_session(), buyer=who.party_code, actor=actor(), **body)


@blp.route("/orders", methods=["GET"])
@blp.arguments(OrderListArgs, location="query", as_kwargs=True)
@blp.response(200, OrderPage)
def list_orders(role: str, party: str | None = None, **filters):
    """Your orders as buyer (default) or your sales as seller, newest first."""
    who = caller()
    if party is not None and party != who.party_code:
        access.require_brand_manager(who)
    party = party or who.party_code
    if role == "seller" and party == who.party_code:
        access.require_scope(who, "manage")
    items, next_cursor = orders.list_orders(db_session(), **{role: party}, **filters)
    return {"items": items, "next_cursor": next_cursor}


@blp.route("/orders/<order_id>", methods=["GET"])
@blp.response(200, OrderOut)
def get_order(order_id: str):
    order = orders.get_order(db_session(), order_id)
    _visible(order)
    return order


@blp.route("/orders/<order_id>/events", methods=["GET"])
@blp.response(200, OrderEventList)
def order_events(order_id: str):
    """Every transition of the order, with who made it."""
    _visible(orders.get_order(db_session(), order_id))
    return {"items": orders.order_events(db_session(), order_id)}


@blp.route("/orders/<order_id>/cancel", methods=["POST"])
@mutation
@blp.arguments(CancelIn)
@blp.response(200, OrderOut)
def cancel_order(body, order_id: str):
    """Cancel before shipment (the buyer, or the seller's managers); what was
    paid goes back to its source."""
    _visible(orders.get_order(db_session(), order_id))
    send_refunds_after_this_request()
    return funding.cancel_order(db_session(), order_id, actor=actor(), reason=body["reason"])


@blp.route("/orders/<order_id>/ship", methods=["POST"])
@mutation
@blp.arguments(ShipIn)
@blp.response(200, OrderOut)
def ship_order(body, order_id: str):
    """The seller ships a paid order."""
    access.require_manager_of(caller(), orders.get_order(db_session(), order_id).seller_code)
    return orders.ship_order(db_session(), order_id, actor=actor(), **body)


@blp.route("/orders/<order_id>/confirm-receipt", methods=["POST"])
@mutation
@blp.response(200, OrderOut)
def confirm_receipt(order_id: str):
    """The buyer confirms it received the order (or a job does, after
    CL_AUTO_CONFIRM_DAYS)."""
    who = caller()
    access.require_scope(who, "storefront")
    if orders.get_order(db_session(), order_id).buyer_code != who.party_code:
        raise AccessDenied("only the buyer confirms receipt")
    return orders.confirm_receipt(db_session(), order_id, actor=actor())


@blp.route("/orders/<order_id>/pay/prepaid", methods=["POST"])
@mutation
@blp.response(200, OrderOut)
def pay_with_prepaid(order_id: str):
    """Pay the whole order from your prepaid deposit at its seller."""
    who = caller()
    access.require_scope(who, "storefront")
    if orders.get_order(db_session(), order_id).buyer_code != who.party_code:
        raise AccessDenied("only the buyer pays its order")
    return funding.pay_with_prepaid(db_session(), order_id, actor=actor())


@blp.route("/orders/<order_id>/plan", methods=["POST"])
@mutation
@blp.arguments(PlanIn)
@blp.response(200, OrderOut)
def set_payment_plan(body, order_id: str):
    """Fund your order with a mix of prepaid, rebate and an offline transfer,
    adding up to its total: prepaid and rebate are reserved at once; the
    order is paid when the transfer is confirmed (or at once without one)."""
    who = caller()
    access.require_scope(who, "storefront")
    if orders.get_order(db_session(), order_id).buyer_code != who.party_code:
        raise AccessDenied("only the buyer pays its order")
    return funding.set_payment_plan(db_session(), order_id, body["parts"], actor=actor())


@blp.route("/orders/<order_id>/transfers", methods=["POST"])
@mutation
@blp.arguments(TransferIn)
@blp.response(200, OrderOut)
def confirm_order_transfer(body, order_id: str):
    """Finance confirms the offline transfer of an order's plan (the
    seller's finance key, or the brand's)."""
    access.require_finance_of(caller(), orders.get_order(db_session(), order_id).seller_code)
    return funding.confirm_order_transfer(db_session(), order_id, actor=actor(), **body)


@blp.route("/rebates", methods=["POST"])
@mutation
@blp.arguments(RebateGrantIn)
@blp.response(201, CreditedOut)
def grant_rebate(body):
    """Finance grants a buyer rebate credit at a seller by hand (audited)."""
    access.require_finance_of(caller(), body["seller"])
    return funding.grant_rebate(db_session(), actor=actor(), **body)


@blp.route("/parties/<code>/rebate-rule", methods=["PUT"])
@mutation
@blp.arguments(RebateRuleIn)
@blp.response(200, RebateRuleOut)
def set_rebate_rule(body, code: str):
    """How much of an order the seller's buyers may pay with rebate."""
    access.require_manager_of(caller(), code)
    return funding.set_rebate_rule(db_session(), code, actor=actor(), **body)


@blp.route("/parties/<seller>/credit-lines/<buyer>", methods=["PUT"])
@mutation
@blp.arguments(CreditLineIn)
@blp.response(200, BalancesOut)
def set_credit_line(body, seller: str, buyer: str):
    """Grant or change a buyer's credit line (the seller's managers): the
    limit is enforced by the ledger itself."""
    access.require_manager_of(caller(), seller)
    credit.set_credit_line(db_session(), seller=seller, buyer=buyer, actor=actor(), **body)
    return funding.balances(db_session(), buyer=buyer, seller=seller)


@blp.route("/sellers/<seller>/balances", methods=["GET"])
@blp.arguments(BalanceArgs, location="query", as_kwargs=True)
@blp.response(200, BalancesOut)
def balances(seller: str, buyer: str | None = None):
    """Your prepaid deposit and rebate credit at a seller (its managers may
    ask for one of its buyers)."""
    return funding.balances(db_session(), buyer=buyer_seen_by_caller(seller, buyer), seller=seller)


@blp.route("/sellers/<seller>/credit/aging", methods=["GET"])
@blp.arguments(AgingArgs, location="query", as_kwargs=True)
@blp.response(200, CreditAgingOut)
def credit_aging(seller: str, buyer: str | None = None, at=None):
    """What you owe the seller on credit, order by order, by days overdue."""
    return credit.credit_aging(db_session(), buyer=buyer_seen_by_caller(seller, buyer), seller=seller, at=at)


@blp.route("/credit-repayments", methods=["POST"])
@mutation
@blp.arguments(RepaymentIn)
@blp.response(200, CreditAgingOut)
def repay_credit(body):
    """Finance confirms a credit repayment by transfer (the seller's finance
    key, or the brand's): allocated to the oldest due debts first."""
    access.require_finance_of(caller(), body["seller"])
    return credit.repay_credit(db_session(), actor=actor(), **body)


@blp.route("/deposits", methods=["POST"])
@mutation
@blp.arguments(DepositIn)
@blp.response(201, CreditedOut)
def confirm_deposit(body):
    """Finance confirms an offline bank transfer into a prepaid deposit (the
    seller's finance key, or the brand's); a bank reference counts once."""
    access.require_finance_of(caller(), body["seller"])
    return funding.confirm_deposit(db_session(), actor=actor(), **body)


@blp.route("/orders/<order_id>/downstream", methods=["GET"])
@blp.response(200, OrderList)
def downstream_orders(order_id: str):
    """The downstream orders this (upstream) order serves."""
    _visible(orders.get_order(db_session(), order_id))
    return {"items": orders.downstream_orders(db_session(), order_id)}


@blp.route("/orders/<order_id>/downstream", methods=["POST"])
@mutation
@blp.arguments(OrderLinkIn)
@blp.response(200, OrderList)
def link_downstream(body, order_id: str):
    """Link a sale to the purchase that serves it: the caller is the
    distributor that bought upstream and sells downstream."""
    upstream = orders.get_order(db_session(), order_id)
    access.require_manager_of(caller(), upstream.buyer_code)
    orders.link_orders(db_session(), upstream=order_id, downstream=body["downstream"],
                       actor=actor())
    return {"items": orders.downstream_orders(db_session(), order_id)}
