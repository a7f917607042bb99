"""Payments through gateways (issue 5): the storefront starts a payment
(an order's gateway part, a deposit, a credit repayment) and is given where
to pay; gateways post their callbacks to ``/callbacks/<gateway>`` (no API
key: the gateway's own signature is checked); the sandbox has a small
checkout page so a newcomer can pay end to end in the demo."""
from __future__ import annotations

from html import escape

from flask import Blueprint, Response, abort, after_this_request, current_app, request, url_for

from channel_api import (
    AccessDenied,
    access,
    cash,
    gateway_bills,
    gateway_payments,
    gateway_refunds,
    orders,
    sub_merchants,
)
from channel_api.errors import GatewayCannotCollect, GatewayDown, InvalidInput
from ledger import utcnow
from payments.gateway import (
    CallbackRequest,
    GatewayError,
    GatewayUnavailable,
    PaymentRequest,
    SubMerchantUnsupported,
)
from payments.sandbox_vendor import SandboxError
from service import callbacks
from service.channel_edge import ChannelBlueprint, actor, caller, mutation
from service.request_db import EXTENSION_KEY, db_session
from service.schemas_payments import (
    BillArgs,
    BillReportOut,
    CashPositionOut,
    ExceptionList,
    ExceptionOut,
    PaymentIn,
    PaymentOut,
    RefundOut,
    ResolveIn,
    SuspenseRefundIn,
)

GATEWAYS_KEY = "channel_ledger.gateways"
APPLIER_KEY = "channel_ledger.callback_applier"

blp = ChannelBlueprint("channel_payments", __name__, url_prefix="/v1",
                       description="Payments through gateways; money in suspense.")
callbacks_blp = Blueprint("gateway_callbacks", __name__)


def _gateways():
    return current_app.extensions[GATEWAYS_KEY]


def _adapter(name: str):
    adapter = _gateways().get(name)
    if adapter is None:
        abort(404, description=f"gateway {name!r} is not enabled here")
    return adapter


@blp.route("/payments", methods=["POST"])
@mutation
@blp.arguments(PaymentIn)
@blp.response(201, PaymentOut)
def start_payment(body):
    """Pay through a gateway: an order's gateway part (the plan has one), or
    a deposit or credit repayment at a seller. The answer's ``pay_url`` is
    where the payer pays; the money is posted when the gateway's verified
    callback arrives. Asking again for an order returns its open payment.
    An order whose seller collects as payee is created at the gateway in the
    seller's own merchant; a gateway configured so that it cannot (WeChat
    Pay as a direct merchant, an Alipay seller without its authorisation)
    refuses it with 409 ``sub_merchant_unsupported`` and nothing is kept."""
    who = caller()
    access.require_scope(who, "storefront")
    adapter = _adapter(body["gateway"])
    session = db_session()
    if body["purpose"] == "order":
        if orders.get_order(session, body["order"]).buyer_code != who.party_code:
            raise AccessDenied("only the buyer pays its order")
        payment = gateway_payments.start_order_payment(session, body["order"],
                                                       gateway=body["gateway"])
    else:
        payment = gateway_payments.start_deposit_payment(
            session, buyer=who.party_code, seller=body["seller"],
            amount_minor=body["amount_minor"], gateway=body["gateway"],
            purpose=body["purpose"])
    if payment.state != "created":
        return payment
    try:
        created = adapter.create_payment(PaymentRequest(
            out_trade_no=payment.public_id, amount_minor=payment.amount_minor,
            currency=payment.currency, description=f"{payment.purpose} {payment.order or ''}",
            notify_url=url_for("gateway_callbacks.callback", gateway=payment.gateway,
                               _external=True),
            expires_at=payment.expires_at,
            **sub_merchants.request_fields(
                sub_merchants.named(session, payment.gateway, payment.sub_merchant))))
    except SubMerchantUnsupported as refused:
        raise GatewayCannotCollect(
            f"{payment.gateway} here cannot collect in the name of {payment.payee}'s merchant "
            f"{payment.sub_merchant}: {refused}", gateway=payment.gateway,
            sub_merchant=payment.sub_merchant) from None
    except GatewayUnavailable:
        raise GatewayDown(f"{payment.gateway} did not accept the payment; "
                                           "try again", gateway=payment.gateway) from None
    return gateway_payments.payment_sent(
        session, payment.public_id, created,
        notify_url=url_for("gateway_callbacks.callback", gateway=payment.gateway,
                           _external=True))


def send_refunds_after_this_request() -> None:
    """Refunds a use case decided go to their gateway once its transaction
    has committed (the response is not held up by a failure: a job sends
    what is left)."""
    app = current_app._get_current_object()

    @after_this_request
    def _send(response):
        if response.status_code < 400:
            try:
                callbacks.send_refunds(app.extensions[EXTENSION_KEY],
                                       app.extensions[GATEWAYS_KEY].adapters)
            except Exception:  # noqa: BLE001 - the job sends it later
                app.logger.exception("sending refunds after the request failed")
        return response


@blp.route("/payments/<payment_id>", methods=["GET"])
@blp.response(200, PaymentOut)
def get_payment(payment_id: str):
    payment = gateway_payments.get_payment(db_session(), payment_id)
    who = caller()
    if who.party_code != payment.payer:
        access.require_manager_of(who, payment.payee)
    return payment


@blp.route("/payment-exceptions", methods=["GET"])
@blp.response(200, ExceptionList)
def payment_exceptions():
    """Money that arrived and could not be applied, waiting in suspense for
    finance (the brand's finance)."""
    access.require_brand_finance(caller())
    return {"items": gateway_payments.payment_exceptions(db_session())}


@blp.route("/payment-exceptions/<exception_id>/to-deposit", methods=["POST"])
@mutation
@blp.arguments(ResolveIn)
@blp.response(200, ExceptionOut)
def resolve_to_deposit(body, exception_id: str):
    """Finance found whose the money in suspense is: it becomes that buyer's
    deposit at a seller (the brand's finance)."""
    access.require_brand_finance(caller())
    return gateway_payments.resolve_to_deposit(db_session(), exception_id, actor=actor(), **body)


@blp.route("/payment-exceptions/<exception_id>/refund", methods=["POST"])
@mutation
@blp.arguments(SuspenseRefundIn)
@blp.response(202, RefundOut)
def refund_exception(body, exception_id: str):
    """Finance gives the money in suspense back to its payer through the
    gateway that collected it (the brand's finance): a refund of the whole
    amount, sent to the gateway after this call and posted when the gateway
    confirms it; the exception is resolved with it, and open again if the
    gateway refuses the refund."""
    access.require_brand_finance(caller())
    notify_urls = {name: url_for("gateway_callbacks.callback", gateway=name, _external=True)
                   for name in _gateways().adapters}
    refund = gateway_refunds.refund_suspense(db_session(), exception_id, actor=actor(),
                                             notify_urls=notify_urls, **body)
    send_refunds_after_this_request()
    return refund


@blp.route("/gateway-bills/<gateway>", methods=["POST"])
@mutation
@blp.arguments(BillArgs, location="query", as_kwargs=True)
@blp.response(200, BillReportOut)
def post_bill(gateway: str, day, currency: str):
    """Finance posts a gateway's daily bill (the file as the gateway gives
    it, as the request body): the net into custody, the fees, and what does
    not match what was applied here. The same day again posts nothing more."""
    access.require_brand_finance(caller())
    adapter = _adapter(gateway)
    try:
        lines = adapter.parse_bill(request.get_data(cache=True))
    except GatewayError as bad:
        raise InvalidInput(f"the bill cannot be read: {bad}", field="body",
                           **{k: v for k, v in bad.details.items() if k == "line"}) from None
    return gateway_bills.post_bill(db_session(), gateway=gateway, day=day, lines=lines,
                                   currency=currency, actor=actor())


@blp.route("/cash-position", methods=["GET"])
@blp.response(200, CashPositionOut)
def cash_position():
    """The cash invariant, per currency: custody cash and gateway
    receivables against what is held for parties plus the platform's
    result; and any claim pair (credit, rebate) that does not net to zero.
    The brand's finance."""
    access.require_brand_finance(caller())
    result = cash.check_cash(db_session())
    return {"holds": result.holds, "positions": [
        {"currency": p.currency, "assets_minor": p.assets_minor,
         "liabilities_minor": p.liabilities_minor, "result_minor": p.result_minor,
         "difference_minor": p.difference_minor} for p in result.positions],
        "claims": list(result.claims)}


@callbacks_blp.route("/callbacks/<gateway>", methods=["POST"])
def callback(gateway: str):
    """A gateway's notification: stored raw, verified, applied once."""
    adapter = _adapter(gateway)
    received = CallbackRequest(headers=dict(request.headers), body=request.get_data(),
                               received_at=utcnow())
    ack = callbacks.receive(current_app.extensions[EXTENSION_KEY], gateway, adapter, received,
                            current_app.extensions.get(APPLIER_KEY))
    return Response(ack.body, status=ack.status, content_type=ack.content_type)


# -- the sandbox's checkout page (the demo's payer) --------------------------------------------

@callbacks_blp.route("/sandbox/checkout/<out_trade_no>", methods=["GET", "POST"])
def sandbox_checkout(out_trade_no: str):
    """The simulated provider's payment page: pay (or fail) a sandbox
    payment; the provider then calls us back with a signed callback, as a
    real gateway would. Exists only while the sandbox gateway is enabled
    (``CL_SANDBOX_SECRET=off`` in production); like a real provider's page
    it needs no API key, and it moves only simulated money."""
    vendor = _gateways().sandbox_vendor
    if vendor is None:
        abort(404)
    try:
        payment = vendor.get_payment(out_trade_no)
    except Exception:  # noqa: BLE001 - the vendor's "no such payment"
        abort(404)
    message = ""
    if request.method == "POST":
        action = request.form.get("action")
        if action not in ("pay", "fail"):
            abort(400)
        try:
            headers, body = (vendor.pay if action == "pay" else vendor.fail)(out_trade_no)
        except SandboxError as refused:
            message = f"The provider refused: {refused}"
        else:
            ack = callbacks.receive(current_app.extensions[EXTENSION_KEY], "sandbox",
                                    _adapter("sandbox"), CallbackRequest(
                                        headers=headers, body=body, received_at=utcnow()))
            message = f"The provider called back; the service answered {ack.status}."
        payment = vendor.get_payment(out_trade_no)
    amount = f"{payment.amount_minor // 100}.{payment.amount_minor % 100:02d}"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Sandbox checkout</title>
<style>body{{font-family:sans-serif;max-width:32rem;margin:3rem auto}}button{{font-size:1rem;margin-right:1rem}}</style>
</head><body><h1>Sandbox checkout</h1>
<p>Payment <code>{escape(out_trade_no)}</code>: <strong>{escape(payment.currency)} {amount}</strong>,
status <strong>{escape(payment.status)}</strong>.</p>
<p>{escape(message)}</p>
<form method="post"><button name="action" value="pay">Pay</button>
<button name="action" value="fail">Decline</button></form>
<p><small>A simulated payment provider for trying channel-ledger; no money moves.</small></p>
</body></html>"""
    return Response(page, content_type="text/html; charset=utf-8")
