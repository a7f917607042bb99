"""A gateway's daily bill posted to custody and matched against what was
applied (issue 5)."""
from __future__ import annotations

from zoneinfo import ZoneInfo

from sqlalchemy import select

import ledger
from channel_api import funding, gateway_bills, gateway_payments
from ledger import utcnow
from payments.gateway import BillLine, CallbackRequest, PaymentRequest
from payments.sandbox import SandboxGateway
from payments.sandbox_vendor import SandboxVendor
from service import callbacks
from tests.channel_fixtures import engine  # noqa: F401  (this module commits: a database of its own)
from tests.channel_fixtures import store_buying_from_distributor

SH = ZoneInfo("Asia/Shanghai")
SECRET = b"bill-secret-0123456789"


def provider():
    vendor = SandboxVendor(app_id="bill", secret=SECRET, fee_bps=60, bill_tz=SH)
    return SandboxGateway(app_id="bill", secret=SECRET, transport=vendor), vendor


def test_a_daily_bill_settles_the_receivable_into_custody_and_reports_the_differences(
        session_factory, unique):
    u = unique
    with session_factory() as s, s.begin():
        store_buying_from_distributor(s, u)
        payments = [gateway_payments.start_deposit_payment(
            s, buyer=f"{u}S", seller=f"{u}D", amount_minor=amount, gateway="sandbox")
            for amount in (10_000, 25_000, 5_000)]
    adapter, vendor = provider()
    other_adapter, other_vendor = provider()  # a payment the bill will not show
    for payment, (a, v) in zip(payments, [(adapter, vendor)] * 2 + [(other_adapter, other_vendor)]):
        a.create_payment(PaymentRequest(out_trade_no=payment.public_id,
                                        amount_minor=payment.amount_minor, currency="CNY",
                                        description="deposit", notify_url="http://x/cb"))
        headers, body = v.pay(payment.public_id)
        callbacks.receive(session_factory, "sandbox", a,
                          CallbackRequest(headers=headers, body=body, received_at=utcnow()))
    today = utcnow().astimezone(SH).date()
    lines = adapter.parse_bill(vendor.bill(today))
    stranger = BillLine(transaction_id="sbx_pay_stranger", out_trade_no="pay_x", kind="payment",
                        amount_minor=700, fee_minor=4, occurred_at=utcnow())
    with session_factory() as s, s.begin():
        receivable = ledger.get_account(s, "gateway:sandbox:receivable").posted_minor
        custody = _posted(s, "custody:bank")
        report = gateway_bills.post_bill(s, gateway="sandbox", day=today,
                                         lines=[*lines, stranger], actor="finance")
    fees = 10_000 * 60 // 10_000 + 25_000 * 60 // 10_000 + 4
    assert (report.payments_minor, report.fees_minor) == (35_700, fees)
    assert report.net_minor == 35_700 - fees
    kinds = sorted((d.kind, d.transaction_id == "sbx_pay_stranger") for d in report.discrepancies)
    assert kinds == [("missing_from_bill", False), ("unknown_transaction", True)]
    with session_factory() as s:
        assert _posted(s, "custody:bank") - custody == 35_700 - fees
        assert receivable - ledger.get_account(s, "gateway:sandbox:receivable").posted_minor == 35_700
        assert ledger.get_account(s, "gateway:sandbox:fees").posted_minor == fees
        assert funding.balances(s, buyer=f"{u}S", seller=f"{u}D").prepaid.posted_minor == 40_000
        assert ledger.check_ledger(s) == []
    # The same bill again posts nothing more.
    with session_factory() as s, s.begin():
        again = gateway_bills.post_bill(s, gateway="sandbox", day=today,
                                        lines=[*lines, stranger], actor="finance")
    assert again.entry_id == report.entry_id
    with session_factory() as s:
        assert _posted(s, "custody:bank") - custody == 35_700 - fees


def _posted(s, code):
    try:
        return ledger.get_account(s, code).posted_minor
    except ledger.AccountNotFound:
        return 0


def test_a_payment_in_the_first_hours_of_the_business_day_is_on_that_day(session_factory, unique):
    """The business day starts at midnight in Shanghai, 16:00 UTC the day
    before: a payment at 00:30 there belongs to that day, on SQLite too
    (which keeps a datetime's clock time and drops its offset, so the
    day's bounds are compared in UTC)."""
    from datetime import date, datetime, timezone

    from payments.models import Payment

    u = unique
    with session_factory() as s, s.begin():
        store_buying_from_distributor(s, u)
        early, late = (gateway_payments.start_deposit_payment(
            s, buyer=f"{u}S", seller=f"{u}D", amount_minor=100, gateway="sandbox")
            for _ in range(2))
        day = date(2020, 1, 2)  # a day no other test pays on
        for view, at in ((early, datetime(2020, 1, 2, 0, 30, tzinfo=SH)),
                         (late, datetime(2020, 1, 3, 0, 30, tzinfo=SH))):   # the next day's
            row = s.scalars(select(Payment).where(Payment.public_id == view.public_id)).one()
            # Written as the application writes times: in UTC.
            row.state, row.transaction_id = "succeeded", f"{u}-{view.public_id}"
            row.updated_at = at.astimezone(timezone.utc)
    with session_factory() as s:
        missing = [d.transaction_id for d in gateway_bills._match(s, "sandbox", day, [], SH)
                   if d.kind == "missing_from_bill"]
    assert missing == [f"{u}-{early.public_id}"]
