"""Remittances filed by buyers, confirmed or rejected by finance (issue 4)."""
from __future__ import annotations

import pytest

import ledger
from channel_api import credit, funding, orders, remittances
from channel_api.errors import InvalidInput, RemittanceExists
from channel_api.order_states import IllegalTransition
from tests.test_channel_funding import build

PNG = b"\x89PNG\r\n\x1a\n" + b"receipt" * 10


@pytest.fixture
def shop(session):
    build(session)
    return session


def file(shop, **kw):
    args = dict(buyer="S", seller="D", purpose="deposit", amount_minor=5_000,
                payer_account="6222 0000 1111", bank_reference_="BK-1", actor="store")
    return remittances.file_remittance(shop, **(args | kw))


def test_a_filed_deposit_moves_no_money_until_finance_confirms_it(shop):
    filed = file(shop, proof=PNG, proof_content_type="image/png", payer_name="S Ltd")
    assert (filed.state, filed.has_proof) == ("filed", True)
    assert funding.balances(shop, buyer="S", seller="D").prepaid.posted_minor == 0
    assert remittances.remittance_proof(shop, filed.public_id) == (PNG, "image/png")
    with pytest.raises(RemittanceExists):
        file(shop)  # the same reference while it is live
    confirmed = remittances.confirm_remittance(shop, filed.public_id, actor="finance")
    assert (confirmed.state, confirmed.decided_by) == ("confirmed", "finance")
    assert funding.balances(shop, buyer="S", seller="D").prepaid.posted_minor == 5_000
    with pytest.raises(IllegalTransition):
        remittances.confirm_remittance(shop, filed.public_id, actor="finance")
    assert ledger.check_ledger(shop) == []


def test_a_rejected_remittance_can_be_filed_again_corrected(shop):
    first = file(shop, amount_minor=4_000)
    with pytest.raises(InvalidInput):
        remittances.reject_remittance(shop, first.public_id, actor="finance", note=" ")
    rejected = remittances.reject_remittance(shop, first.public_id, actor="finance",
                                             note="statement shows 5,000")
    assert rejected.state == "rejected"
    again = file(shop, amount_minor=5_000)
    remittances.confirm_remittance(shop, again.public_id, actor="finance")
    assert funding.balances(shop, buyer="S", seller="D").prepaid.posted_minor == 5_000
    items, _ = remittances.list_remittances(shop, seller="D")
    assert [(r.amount_minor, r.state) for r in items] == [(4_000, "rejected"),
                                                           (5_000, "confirmed")]


def test_a_remittance_pays_an_order_s_offline_part_or_a_credit_debt(shop):
    order = orders.place_order(shop, buyer="S", seller="D", actor="store",
                               lines=[{"sku": "g1", "quantity": 2}]).public_id
    funding.set_payment_plan(shop, order, [{"method": "offline", "amount_minor": 2_000}],
                             actor="store")
    with pytest.raises(InvalidInput) as wrong:
        file(shop, purpose="order", order=order, amount_minor=1_999, bank_reference_="BK-O")
    assert wrong.value.details["expected_minor"] == 2_000
    filed = file(shop, purpose="order", order=order, amount_minor=2_000, bank_reference_="BK-O")
    assert orders.get_order(shop, order).state == "awaiting_payment"
    remittances.confirm_remittance(shop, filed.public_id, actor="finance")
    assert orders.get_order(shop, order).state == "paid"

    credit.set_credit_line(shop, seller="D", buyer="S", limit_minor=5_000, actor="dist")
    second = orders.place_order(shop, buyer="S", seller="D", actor="store",
                                lines=[{"sku": "g1", "quantity": 3}]).public_id
    funding.set_payment_plan(shop, second, [{"method": "credit", "amount_minor": 3_000}],
                             actor="store")
    repay = file(shop, purpose="repayment", amount_minor=1_000, bank_reference_="BK-R")
    remittances.confirm_remittance(shop, repay.public_id, actor="finance")
    assert credit.credit_aging(shop, buyer="S", seller="D").outstanding_minor == 2_000


@pytest.mark.parametrize("kw, field", [
    (dict(purpose="gift"), "purpose"),
    (dict(amount_minor=0), "amount_minor"),
    (dict(amount_minor=10.5), "amount_minor"),
    (dict(payer_account="x"), "payer_account"),
    (dict(bank_reference_="has space"), "bank_reference"),
    (dict(proof=b"x", proof_content_type="text/html"), "proof_content_type"),
    (dict(proof=b"x" * (5 * 1024 * 1024 + 1), proof_content_type="image/png"), "proof"),
    (dict(purpose="order"), "order"),
    (dict(buyer="X"), "seller"),
])
def test_bad_remittances_are_refused_naming_the_field_and_nothing_is_filed(shop, kw, field):
    with pytest.raises(InvalidInput) as bad:
        file(shop, **kw)
    assert bad.value.details["field"] == field
    assert remittances.list_remittances(shop, seller="D")[0] == []
