"""Every channel endpoint, tried with a foreign key.

Two keys attack the data of distributor D1 and its stores S1 and S2: store
S3's storefront key, and distributor D2's manage key. Each endpoint is
classified below; the table must cover every channel endpoint, so a new one
cannot be added without saying who may use it.

* ``denied``: 403, whatever the body.
* ``own``: allowed, but the answer holds nothing of D1, S1 or S2.
* ``shared``: reference data every key may read (regions, categories...).
* ``refused``: a 4xx (403, 404 or 422): the caller acts only for itself and
  the network does not let it (placing an order with a seller it does not
  buy from).
"""
from __future__ import annotations

import pytest

import channel_api as ca
from channel_api import (
    bulk,
    business_calendar,
    catalog,
    clearing_rules,
    funding,
    gateway_payments,
    keys,
    network,
    orders,
    outbox,
    prices,
    remittances,
    returns,
    tags,
    webhooks,
)
from tests.channel_fixtures import build_network, client, engine  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def world(engine):
    from service.db import make_session_factory

    factory = make_session_factory(engine)
    net = build_network(factory, "authz")
    c, u = net.codes, net.u
    with factory() as s, s.begin():
        ca.create_group(s, f"{u}-grp", "Group")
        catalog.create_category(s, f"{u}-cat", "Cat")
        catalog.create_unit(s, f"{u}-unit", "Unit")
        catalog.create_product(s, f"{u}-prd", "Product", category=f"{u}-cat")
        catalog.create_sku(s, f"{u}-sku", "SKU", product=f"{u}-prd", unit=f"{u}-unit", list_price_minor=100)
        network.set_sale_permission(s, c["d1"], product_scope={"all": True}, regions=[], actor="t")
        prices.create_strategy(s, code=f"{u}-d1-strategy", owner=c["d1"], name="D1's", rule="percent",
                               product_scope={"all": True},
                               tiers=[{"sku": None, "min_qty": 1, "percent_bp": 9000}], actor="t")
        tags.create_dynamic_tag(s, f"{u}-dyn", "Dyn", {"all": [
            {"field": "quality_customer", "op": "eq", "value": True}]}, actor="t")
        net.extra = {
            "s1_key": [k.key_id for k in keys.list_api_keys(s, party=c["s1"])][0],
            "rel": network.list_relationships(s, seller=c["d1"], buyer=c["s1"])[0][0].public_id,
            "import": bulk.import_csv(s, "groups", f"code,name\n{u}-grp2,G2\n", actor="t").import_id,
            "order": orders.place_order(s, buyer=c["s1"], seller=c["d1"], actor="t",
                                        lines=[{"sku": f"{u}-sku", "quantity": 2}]).public_id,
        }
        clearing_rules.create_rule(s, code=f"{u}-rule", name="R", sellers=[c["d1"]], actor="t",
                                   legs=[{"recipient": "seller", "basis": "remainder",
                                          "timing": {"kind": "immediate"}}])
        net.extra["webhook"] = webhooks.register(
            s, party=c["d1"], url="https://d1.example/hooks", actor="t").webhook.public_id
        net.extra["event"] = outbox.record(
            s, type="order.placed", subject_type="order", subject=net.extra["order"],
            parties=[c["s1"], c["d1"]], payload={"order": net.extra["order"]}).id
        paid = orders.place_order(s, buyer=c["s1"], seller=c["d1"], actor="t",
                                  lines=[{"sku": f"{u}-sku", "quantity": 2}]).public_id
        funding.confirm_deposit(s, buyer=c["s1"], seller=c["d1"], amount_minor=1_000,
                                bank_reference=f"{u}-dep", actor="t")
        funding.pay_with_prepaid(s, paid, actor="t")
        net.extra["return"] = returns.request_return(
            s, paid, lines=[{"line_no": 1, "quantity": 1}], reason="r", actor="t").public_id
        net.extra["payment"] = gateway_payments.start_deposit_payment(
            s, buyer=c["s1"], seller=c["d1"], amount_minor=100, gateway="sandbox").public_id
        net.extra["remittance"] = remittances.file_remittance(
            s, buyer=c["s1"], seller=c["d1"], purpose="deposit", amount_minor=5,
            payer_account="1234", bank_reference_=f"{u}-rmt", proof=b"%PDF-1.4",
            proof_content_type="application/pdf", actor="t").public_id
        net.extra["payout"], net.extra["batch"] = _d1_payout_and_batch(s, c["d1"])
        net.extra["split"] = _d1_split_instruction(s, c["d1"], c["brand"])
    return net


def _d1_split_instruction(s, d1: str, brand: str) -> str:
    """A failed split instruction of a payment collected with D1 as payee
    (written directly: the split use cases have their own tests)."""
    from clearing.split_models import SplitInstruction, SplitReceiver
    from ledger import new_uuid7, utcnow

    now = utcnow()
    row = SplitInstruction(public_id=f"spi_{new_uuid7().hex}", kind="split", gateway="sandbox",
                           payment="pay_authz", transaction_id="sbx_pay_authz",
                           order_ref="ord_authz", payee=d1, currency="CNY", amount_minor=75,
                           state="failed", reason="closed", attempts=1, created_by="t",
                           created_at=now, updated_at=now)
    s.add(row)
    s.flush()
    s.add(SplitReceiver(public_id=f"spr_{new_uuid7().hex}", instruction_id=row.id, party=brand,
                        account="brand-acct", kind="account", amount_minor=75, result="closed",
                        fail_reason="closed", shares=[], updated_at=now))
    return row.public_id


def _d1_payout_and_batch(s, d1: str) -> tuple[str, str]:
    """A payout of D1's (its wallet funded by hand) and a settlement batch of its."""
    from datetime import timedelta

    import ledger
    from channel_api import books, payouts, settlements

    books.ensure(s, books.wallet_account(d1), "wallet", "liability", "CNY", owner=d1,
                 min_balance=0)
    books.ensure(s, books.CUSTODY, "custody", "asset", "CNY")
    ledger.post_entry(s, ledger.EntryRequest(code="test.fund", postings=[
        ledger.PostingLine(books.CUSTODY, "debit", 500, "CNY"),
        ledger.PostingLine(books.wallet_account(d1), "credit", 500, "CNY")]))
    payouts.register_bank_account(s, d1, holder_name="D1", account_number="62220212345678",
                                  bank_code="102100099996", bank_name="Bank", actor="t")
    payout = payouts.request_payout(s, d1, 100, request_key="authz", actor="t",
                                    approval_threshold_minor=50)
    day = ledger.utcnow().astimezone(settlements.BUSINESS_TZ).date()
    settlements.settle(s, day, now=settlements.day_bounds(day)[1] + timedelta(minutes=1))
    batch = settlements.list_batches(s, party=d1)[0][0].public_id
    return payout.public_id, batch


def requests(net):
    """endpoint -> (method, path, json body, {attacker: expectation})."""
    c, u, x = net.codes, net.u, net.extra
    both = lambda e: {"s3": e, "d2": e}  # noqa: E731
    store_denied = lambda e: {"s3": "denied", "d2": e}  # noqa: E731
    party = {"code": f"{u}-new", "name": "N", "role": "store", "region": c["hz"], "customer_type": c["grocery"]}
    strategy = {"code": f"{u}-evil", "owner": c["d1"], "name": "E", "rule": "percent",
                "product_scope": {"all": True}, "tiers": [{"sku": None, "min_qty": 1, "percent_bp": 1}]}
    return {
        "channel_parties.me": ("GET", "/v1/me", None, both("own")),
        "channel_parties.list_regions": ("GET", "/v1/regions", None, both("shared")),
        "channel_parties.create_region": ("POST", "/v1/regions", {"code": f"{u}-r", "name": "R"}, both("denied")),
        "channel_parties.list_customer_types": ("GET", "/v1/customer-types", None, both("shared")),
        "channel_parties.create_customer_type": ("POST", "/v1/customer-types", {"code": f"{u}-t", "name": "T"}, both("denied")),
        "channel_parties.list_grades": ("GET", "/v1/grades", None, both("shared")),
        "channel_parties.create_grade": ("POST", "/v1/grades", {"code": f"{u}-g", "name": "G"}, both("denied")),
        "channel_parties.list_groups": ("GET", "/v1/groups", None, store_denied("shared")),
        "channel_parties.create_group": ("POST", "/v1/groups", {"code": f"{u}-g", "name": "G"}, both("denied")),
        "channel_parties.list_parties": ("GET", "/v1/parties", None, store_denied("own")),
        "channel_parties.create_party": ("POST", "/v1/parties", party, both("denied")),
        "channel_parties.get_party": ("GET", f"/v1/parties/{c['s1']}", None, both("denied")),
        "channel_parties.update_party": ("PATCH", f"/v1/parties/{c['s1']}", {"name": "pwned"}, both("denied")),
        "channel_parties.add_to_group": ("PUT", f"/v1/parties/{c['s1']}/groups/{u}-grp", None, both("denied")),
        "channel_parties.remove_from_group": ("DELETE", f"/v1/parties/{c['s1']}/groups/{u}-grp", None, both("denied")),
        "channel_parties.tag_party": ("PUT", f"/v1/parties/{c['s1']}/tags/x", None, both("denied")),
        "channel_parties.untag_party": ("DELETE", f"/v1/parties/{c['s1']}/tags/x", None, both("denied")),
        "channel_parties.list_api_keys": ("GET", "/v1/api-keys", None, store_denied("own")),
        "channel_parties.create_api_key": ("POST", "/v1/api-keys", {"party": c["s1"], "scopes": ["storefront"]}, both("denied")),
        "channel_parties.revoke_api_key": ("DELETE", f"/v1/api-keys/{x['s1_key']}", None, both("denied")),
        "channel_parties.list_audit": ("GET", "/v1/audit", None, both("denied")),
        "channel_network.list_categories": ("GET", "/v1/categories", None, both("shared")),
        "channel_network.create_category": ("POST", "/v1/categories", {"code": f"{u}-c", "name": "C"}, both("denied")),
        "channel_network.list_units": ("GET", "/v1/units", None, both("shared")),
        "channel_network.create_unit": ("POST", "/v1/units", {"code": f"{u}-u", "name": "U"}, both("denied")),
        "channel_network.list_products": ("GET", "/v1/products", None, store_denied("shared")),
        "channel_network.create_product": ("POST", "/v1/products", {"code": f"{u}-p", "name": "P", "category": f"{u}-cat"}, both("denied")),
        "channel_network.get_product": ("GET", f"/v1/products/{u}-prd", None, store_denied("shared")),
        "channel_network.update_product": ("PATCH", f"/v1/products/{u}-prd", {"name": "x"}, both("denied")),
        "channel_network.list_skus": ("GET", "/v1/skus", None, store_denied("shared")),
        "channel_network.create_sku": ("POST", "/v1/skus", {"code": f"{u}-s", "name": "S", "product": f"{u}-prd", "unit": f"{u}-unit", "list_price_minor": 1}, both("denied")),
        "channel_network.get_sku": ("GET", f"/v1/skus/{u}-sku", None, store_denied("shared")),
        "channel_network.update_sku": ("PATCH", f"/v1/skus/{u}-sku", {"list_price_minor": 1}, both("denied")),
        "channel_network.list_relationships": ("GET", "/v1/relationships", None, both("own")),
        "channel_network.list_my_sellers": ("GET", "/v1/sellers", None, both("own")),
        "channel_network.create_relationship": ("POST", "/v1/relationships", {"seller": c["d1"], "buyer": c["s3"]}, both("denied")),
        "channel_network.get_relationship": ("GET", f"/v1/relationships/{x['rel']}", None, both("denied")),
        "channel_network.update_relationship": ("PATCH", f"/v1/relationships/{x['rel']}", {"status": "ended"}, both("denied")),
        "channel_network.get_sale_permission": ("GET", f"/v1/parties/{c['d1']}/sale-permission", None, both("denied")),
        "channel_network.set_sale_permission": ("PUT", f"/v1/parties/{c['d1']}/sale-permission", {"product_scope": {"all": True}}, both("denied")),
        "channel_network.assign_coverage": ("POST", "/v1/coverage/assign", {"distributor": c["d1"], "stores": [c["s3"]]}, both("denied")),
        "channel_network.unassign_coverage": ("POST", "/v1/coverage/unassign", {"distributor": c["d1"], "stores": [c["s1"]]}, both("denied")),
        "channel_network.list_coverage": ("GET", f"/v1/coverage?distributor={c['d1']}", None, both("denied")),
        "channel_pricing.list_strategies": ("GET", "/v1/price-strategies", None, store_denied("own")),
        "channel_pricing.create_strategy": ("POST", "/v1/price-strategies", strategy, both("denied")),
        "channel_pricing.get_strategy": ("GET", f"/v1/price-strategies/{u}-d1-strategy", None, both("denied")),
        "channel_pricing.update_strategy": ("PATCH", f"/v1/price-strategies/{u}-d1-strategy", {"priority": 9}, both("denied")),
        "channel_pricing.price_list": ("GET", f"/v1/sellers/{c['d1']}/price-list?buyer={c['s1']}", None, both("denied")),
        "channel_pricing.price": ("GET", f"/v1/sellers/{c['d1']}/prices/{u}-sku?buyer={c['s1']}", None, both("denied")),
        "channel_pricing.list_dynamic_tags": ("GET", "/v1/dynamic-tags", None, both("denied")),
        "channel_pricing.create_dynamic_tag": ("POST", "/v1/dynamic-tags", {"code": f"{u}-d", "name": "D", "rule": {"all": []}}, both("denied")),
        "channel_pricing.get_dynamic_tag": ("GET", f"/v1/dynamic-tags/{u}-dyn", None, both("denied")),
        "channel_pricing.update_dynamic_tag": ("PATCH", f"/v1/dynamic-tags/{u}-dyn", {"name": "x"}, both("denied")),
        "channel_pricing.recompute_dynamic_tag": ("POST", f"/v1/dynamic-tags/{u}-dyn/recompute", None, both("denied")),
        "channel_pricing.get_purchase_habits": ("GET", f"/v1/parties/{c['s1']}/purchase-habits", None, both("denied")),
        "channel_bulk.import_file": ("POST", "/v1/imports/parties", None, both("denied")),
        "channel_bulk.list_imports": ("GET", "/v1/imports", None, both("denied")),
        "channel_bulk.get_import": ("GET", f"/v1/imports/id/{x['import']}", None, both("denied")),
        "channel_bulk.export_file": ("GET", f"/v1/exports/relationships.csv?seller={c['d1']}", None, both("denied")),
        "channel_orders.place_order": ("POST", "/v1/orders", {"seller": c["d1"], "lines": [{"sku": f"{u}-sku", "quantity": 1}]}, both("refused")),
        "channel_orders.list_orders": ("GET", "/v1/orders", None, both("own")),
        "channel_orders.get_order": ("GET", f"/v1/orders/{x['order']}", None, both("denied")),
        "channel_orders.order_events": ("GET", f"/v1/orders/{x['order']}/events", None, both("denied")),
        "channel_orders.cancel_order": ("POST", f"/v1/orders/{x['order']}/cancel", {}, both("denied")),
        "channel_orders.downstream_orders": ("GET", f"/v1/orders/{x['order']}/downstream", None, both("denied")),
        "channel_orders.ship_order": ("POST", f"/v1/orders/{x['order']}/ship", {}, both("denied")),
        "channel_orders.confirm_receipt": ("POST", f"/v1/orders/{x['order']}/confirm-receipt", None, both("denied")),
        "channel_orders.pay_with_prepaid": ("POST", f"/v1/orders/{x['order']}/pay/prepaid", None, both("denied")),
        "channel_orders.set_payment_plan": ("POST", f"/v1/orders/{x['order']}/plan", {"parts": [{"method": "offline", "amount_minor": 1}]}, both("denied")),
        "channel_orders.confirm_order_transfer": ("POST", f"/v1/orders/{x['order']}/transfers", {"amount_minor": 1, "bank_reference": "X"}, both("denied")),
        "channel_orders.grant_rebate": ("POST", "/v1/rebates", {"buyer": c["s1"], "seller": c["d1"], "amount_minor": 1, "reference": "R", "reason": "r"}, both("denied")),
        "channel_orders.set_rebate_rule": ("PUT", f"/v1/parties/{c['d1']}/rebate-rule", {"max_percent_bp": 10000}, both("denied")),
        "channel_orders.set_credit_line": ("PUT", f"/v1/parties/{c['d1']}/credit-lines/{c['s1']}", {"limit_minor": 10**9}, both("denied")),
        "channel_orders.credit_aging": ("GET", f"/v1/sellers/{c['d1']}/credit/aging?buyer={c['s1']}", None, both("denied")),
        "channel_orders.repay_credit": ("POST", "/v1/credit-repayments", {"buyer": c["s1"], "seller": c["d1"], "amount_minor": 1, "bank_reference": "X"}, both("denied")),
        "channel_orders.balances": ("GET", f"/v1/sellers/{c['d1']}/balances?buyer={c['s1']}", None, both("denied")),
        "channel_orders.confirm_deposit": ("POST", "/v1/deposits", {"buyer": c["s3"], "seller": c["d2"], "amount_minor": 100, "bank_reference": "X1"}, both("denied")),
        "channel_credit.set_credit_default": ("PUT", f"/v1/parties/{c['d1']}/credit-defaults/{u}-g", {"limit_minor": 10**9}, both("denied")),
        "channel_credit.credit_defaults": ("GET", f"/v1/parties/{c['d1']}/credit-defaults", None, both("denied")),
        "channel_credit.set_credit_policy": ("PUT", f"/v1/parties/{c['d1']}/credit-policies", {"on_limit": "hold"}, both("denied")),
        "channel_credit.credit_policies": ("GET", f"/v1/parties/{c['d1']}/credit-policies", None, both("denied")),
        "channel_credit.grant_increase": ("POST", f"/v1/parties/{c['d1']}/credit-lines/{c['s1']}/increases", {"amount_minor": 10**9, "valid_to": "2099-01-01T00:00:00Z", "reason": "x"}, both("denied")),
        "channel_credit.increases": ("GET", f"/v1/parties/{c['d1']}/credit-lines/{c['s1']}/increases", None, both("denied")),
        "channel_credit.held_orders": ("GET", f"/v1/sellers/{c['d1']}/held-orders", None, both("denied")),
        "channel_credit.approve_held_order": ("POST", f"/v1/orders/{x['order']}/approve", {}, both("denied")),
        "channel_credit.reject_held_order": ("POST", f"/v1/orders/{x['order']}/reject", {}, both("denied")),
        "channel_returns.request_return": ("POST", f"/v1/orders/{x['order']}/returns", {"lines": [{"line_no": 1, "quantity": 1}], "reason": "x"}, both("denied")),
        "channel_returns.order_returns": ("GET", f"/v1/orders/{x['order']}/returns", None, both("denied")),
        "channel_returns.seller_returns": ("GET", f"/v1/sellers/{c['d1']}/returns", None, both("denied")),
        "channel_returns.get_return": ("GET", f"/v1/returns/{x['return']}", None, both("denied")),
        "channel_returns.approve_return": ("POST", f"/v1/returns/{x['return']}/approve", {}, both("denied")),
        "channel_returns.reject_return": ("POST", f"/v1/returns/{x['return']}/reject", {"note": "x"}, both("denied")),
        "channel_returns.withdraw_return": ("POST", f"/v1/returns/{x['return']}/withdraw", None, both("denied")),
        "channel_returns.file_remittance": ("POST", "/v1/remittances", {"seller": c["d1"], "purpose": "deposit", "amount_minor": 1, "payer_account": "1234", "bank_reference": "AT-1"}, both("refused")),
        "channel_returns.list_remittances": ("GET", "/v1/remittances", None, both("own")),
        "channel_returns.get_remittance": ("GET", f"/v1/remittances/{x['remittance']}", None, both("denied")),
        "channel_returns.remittance_proof": ("GET", f"/v1/remittances/{x['remittance']}/proof", None, both("denied")),
        "channel_returns.confirm_remittance": ("POST", f"/v1/remittances/{x['remittance']}/confirm", {}, both("denied")),
        "channel_returns.reject_remittance": ("POST", f"/v1/remittances/{x['remittance']}/reject", {"note": "x"}, both("denied")),
        "channel_payments.start_payment": ("POST", "/v1/payments", {"gateway": "sandbox", "order": x["order"]}, both("denied")),
        "channel_payments.get_payment": ("GET", f"/v1/payments/{x['payment']}", None, both("denied")),
        "channel_payments.resolve_to_deposit": ("POST", "/v1/payment-exceptions/exc_x/to-deposit", {"buyer": c["s1"], "seller": c["d1"], "note": "x"}, both("denied")),
        "channel_payments.refund_exception": ("POST", "/v1/payment-exceptions/exc_x/refund", {"note": "x"}, both("denied")),
        "channel_payments.post_bill": ("POST", "/v1/gateway-bills/sandbox?day=2026-01-01", None, both("denied")),
        "channel_payments.cash_position": ("GET", "/v1/cash-position", None, both("denied")),
        "channel_payments.payment_exceptions": ("GET", "/v1/payment-exceptions", None, both("denied")),
        "channel_events.list_events": ("GET", "/v1/events", None, both("own")),
        "channel_events.get_event": ("GET", f"/v1/events/{x['event']}", None, both("denied")),
        "channel_events.replay_event": ("POST", f"/v1/events/{x['event']}/replay", None, both("denied")),
        "channel_events.create_webhook": ("POST", "/v1/webhooks", {"url": "https://evil.example/h", "party": c["d1"]}, both("refused")),
        "channel_events.list_webhooks": ("GET", "/v1/webhooks", None, both("own")),
        "channel_events.disable_webhook": ("DELETE", f"/v1/webhooks/{x['webhook']}", None, both("denied")),
        "channel_clearing.create_rule": ("POST", "/v1/clearing-rules", {"code": f"{u}-evil-rule", "name": "E", "legs": [{"recipient": "seller", "basis": "remainder", "timing": {"kind": "immediate"}}]}, both("denied")),
        "channel_clearing.list_rules": ("GET", "/v1/clearing-rules", None, both("denied")),
        "channel_clearing.get_rule": ("GET", f"/v1/clearing-rules/{u}-rule", None, both("denied")),
        "channel_clearing.update_rule": ("PUT", f"/v1/clearing-rules/{u}-rule", {"priority": 99}, both("denied")),
        "channel_clearing.clearing_preview": ("GET", f"/v1/orders/{x['order']}/clearing-preview?payment_method=prepaid", None, both("denied")),
        "channel_clearing.set_business_calendar": ("PUT", "/v1/business-calendar", None, both("denied")),
        "channel_clearing.documents": ("GET", f"/v1/parties/{c['d1']}/documents", None, both("denied")),
        "channel_clearing.business_calendar": ("GET", "/v1/business-calendar", None, both("denied")),
        "channel_payouts.register_bank_account": ("POST", f"/v1/parties/{c['d1']}/bank-accounts", {"holder_name": "E", "account_number": "66666666", "bank_code": "1", "bank_name": "E"}, both("denied")),
        "channel_payouts.bank_accounts": ("GET", f"/v1/parties/{c['d1']}/bank-accounts", None, both("denied")),
        "channel_payouts.request_payout": ("POST", "/v1/payouts", {"party": c["d1"], "amount_minor": 1}, both("denied")),
        "channel_payouts.list_payouts": ("GET", "/v1/payouts", None, both("own")),
        "channel_payouts.get_payout": ("GET", f"/v1/payouts/{x['payout']}", None, both("denied")),
        "channel_payouts.payout_events": ("GET", f"/v1/payouts/{x['payout']}/events", None, both("denied")),
        "channel_payouts.approve_payout": ("POST", f"/v1/payouts/{x['payout']}/approve", {}, both("denied")),
        "channel_payouts.reject_payout": ("POST", f"/v1/payouts/{x['payout']}/reject", {"note": "x"}, both("denied")),
        "channel_payouts.cancel_payout": ("POST", f"/v1/payouts/{x['payout']}/cancel", {}, both("denied")),
        "channel_payouts.export_payout_file": ("POST", "/v1/payout-files", None, both("denied")),
        "channel_payouts.download_payout_file": ("GET", "/v1/payout-files/pf_x", None, both("denied")),
        "channel_payouts.upload_status_file": ("POST", "/v1/payout-status-files", None, both("denied")),
        "channel_payouts.list_batches": ("GET", "/v1/settlement-batches", None, both("own")),
        "channel_payouts.get_batch": ("GET", f"/v1/settlement-batches/{x['batch']}", None, both("denied")),
        "channel_payouts.run_settlement": ("POST", "/v1/settlement-runs?day=2026-01-01", None, both("denied")),
        "channel_payouts.allocate_interest": ("POST", "/v1/interest-allocations", {"amount_minor": 1, "period_end": "2026-01-01", "bank_reference": "evil", "platform_share_bp": 10000}, both("denied")),
        "channel_payouts.list_interest_allocations": ("GET", "/v1/interest-allocations", None, both("denied")),
        "channel_payouts.advance_clawback": ("POST", "/v1/clawback-advances", {"order": x["order"], "party": c["d1"], "amount_minor": 1, "reason": "evil"}, both("denied")),
        "channel_payouts.list_clawback_advances": ("GET", "/v1/clawback-advances", None, both("own")),
        "channel_payouts.get_clawback_advance": ("GET", "/v1/clawback-advances/cba_unknown", None, both("refused")),
        "channel_splits.register_gateway_account": ("POST", f"/v1/parties/{c['d1']}/gateway-accounts", {"gateway": "sandbox", "account": "evil", "kind": "account"}, both("denied")),
        "channel_splits.gateway_accounts": ("GET", f"/v1/parties/{c['d1']}/gateway-accounts", None, both("denied")),
        "channel_splits.list_split_instructions": ("GET", "/v1/split-instructions", None, both("own")),
        "channel_splits.get_split_instruction": ("GET", f"/v1/split-instructions/{x['split']}", None, both("denied")),
        "channel_splits.retry_split_instruction": ("POST", f"/v1/split-instructions/{x['split']}/retry", {}, both("denied")),
        "channel_splits.list_split_returns": ("GET", "/v1/split-returns", None, both("denied")),
        "channel_splits.retry_split_return": ("POST", "/v1/split-returns/sprt_unknown/retry", {}, both("denied")),
        "channel_orders.link_downstream": ("POST", f"/v1/orders/{x['order']}/downstream", {"downstream": x["order"]}, both("denied")),
    }


def test_every_channel_endpoint_is_classified(client, world):
    endpoints = {rule.endpoint for rule in client.application.url_map.iter_rules()
                 if rule.endpoint.startswith("channel_")}
    assert endpoints == set(requests(world))


@pytest.mark.parametrize("attacker", ["s3", "d2"])
def test_a_foreign_key_never_reads_or_changes_another_party_s_data(client, world, attacker):
    c = world.codes
    foreign = [c["d1"], c["s1"], c["s2"], world.extra["s1_key"], world.extra["rel"], f"{world.u}-d1-strategy"]
    failures = []
    for endpoint, (method, path, body, expectations) in requests(world).items():
        expected = expectations[attacker]
        kwargs = {"json": body} if body is not None else {}
        if endpoint == "channel_bulk.import_file":
            kwargs = {"data": "code,name,role,region,customer_type\n", "content_type": "text/csv"}
        response = client.open(path, method=method, headers=world.auth(attacker), **kwargs)
        text = response.get_data(as_text=True)
        if expected == "denied":
            ok = response.status_code == 403 and response.json["code"] == "access_denied"
        elif expected == "refused":
            ok = response.status_code in (403, 404, 422)
        elif expected == "own":
            ok = response.status_code == 200 and not any(marker in text for marker in foreign)
        else:
            ok = response.status_code == 200
        if not ok:
            failures.append((endpoint, expected, response.status_code, text[:200]))
    assert failures == []

    # And nothing was changed by the attempts.
    from service.db import make_session_factory

    with make_session_factory(client.application.extensions["channel_ledger.engine"])() as s:
        assert ca.get_party(s, c["s1"]).name == "S1"
        assert prices.get_strategy(s, f"{world.u}-d1-strategy").priority == 0
        assert network.get_relationship(s, world.extra["rel"]).status == "active"
        assert keys.get_api_key(s, world.extra["s1_key"]).revoked_at is None
        assert orders.get_order(s, world.extra["order"]).state == "placed"
        assert [o.public_id for o in orders.list_orders(s, seller=c["d1"])[0]][-1] == \
            world.extra["order"]
        assert returns.get_return(s, world.extra["return"]).state == "requested"
        assert webhooks.get_endpoint(s, world.extra["webhook"]).status == "active"
        assert [(d.state, d.attempts) for d in outbox.deliveries(
            s, world.extra["event"], party=c["d1"])] == [("pending", 0)]
        assert remittances.get_remittance(s, world.extra["remittance"]).state == "filed"
        assert clearing_rules.get_rule(s, f"{world.u}-rule").version == 1
        assert business_calendar.list_calendar(s) == []
        from channel_api import payouts

        assert payouts.get_payout(s, world.extra["payout"]).state == "awaiting_approval"
        assert len(payouts.bank_accounts(s, c["d1"])) == 1
        from channel_api import split_instructions

        assert split_instructions.get_instruction(s, world.extra["split"]).state == "failed"
        assert split_instructions.gateway_accounts(s, c["d1"]) == []
