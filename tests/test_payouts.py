"""Payouts (issue 6): a wallet paid out to the party's bank account through
the custody bank (the simulated bank behind the same interface as a real
one): reserved, approved above the threshold, sent, confirmed or failed
(the money back in the wallet), by the bank's callback, its status file or
polling; the ledger invariant and the cash invariant after each."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import defusedxml.ElementTree as ET
import pytest

import ledger
from channel_api import cash, clearings, funding, orders, parties, payouts
from channel_api.errors import BankAccountMissing, InvalidInput, PayoutRefused
from clearing.payout_states import IllegalPayoutTransition
from ledger import utcnow
from payments.gateway import CallbackRejected
from payments.payout_bank import PayoutOutcome
from payments.sandbox_bank import SimulatedBank
from tests.channel_fixtures import engine  # noqa: F401  (a database of its own: exact sums)
from tests.test_channel_clearings import pay, posted, shop  # noqa: F401  (fixture)

SECRET = b"bank-secret-for-tests-0123456789"
THRESHOLD = 40_000
PAIN001 = "{urn:iso:std:iso:20022:tech:xsd:pain.001.001.03}"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def bank(clock):
    return SimulatedBank(SECRET, clock=clock, settle_after=timedelta(minutes=5))


@pytest.fixture
def paid(shop):
    """D's wallet holds 92,000 (its leg of a released 1,000.00 order)."""
    s = shop
    funding.confirm_deposit(s, buyer="S", seller="D", amount_minor=100_000,
                            bank_reference="DEP", actor="t")
    order = pay(s)
    orders.ship_order(s, order, actor="dist")
    orders.confirm_receipt(s, order, actor="store")
    clearings.release_due(s, now=utcnow() + timedelta(minutes=1))
    assert posted(s, "party:D:wallet") == 92_000
    return s


def register(s, party="D", number="6222021234567890", **extra):
    fields = {"holder_name": "D Trading Co. & Sons", "account_number": number,
              "bank_code": "102100099996", "bank_name": "ICBC Hangzhou", **extra}
    return payouts.register_bank_account(s, party, actor="d-finance", **fields)


def request(s, amount, key="k1", party="D", actor="d-finance"):
    return payouts.request_payout(s, party, amount, request_key=key, actor=actor,
                                  approval_threshold_minor=THRESHOLD)


def available(s, code):
    return ledger.get_account(s, code).available_minor


def holds(s):
    assert cash.check_cash(s).holds
    assert ledger.check_ledger(s) == []


def test_a_payout_is_reserved_then_sent_then_confirmed_by_polling(paid, bank, clock):
    s = paid
    register(s)
    custody = posted(s, "custody:bank")
    payout = request(s, 30_000)
    assert (payout.state, payout.needs_approval, payout.payee_account_masked) == (
        "approved", False, "************7890")
    # Reserved: still posted in the wallet, no longer available.
    assert (posted(s, "party:D:wallet"), available(s, "party:D:wallet")) == (92_000, 62_000)
    holds(s)

    assert payouts.send_payouts(s, bank) == {"sent": 1}
    assert payouts.get_payout(s, payout.public_id).state == "sent"
    assert posted(s, "party:D:wallet") == 62_000
    assert posted(s, "payouts:in_flight") == 30_000
    holds(s)

    assert payouts.poll_sent(s, bank).applied == 0      # the bank has not settled yet
    clock.now += timedelta(minutes=6)
    summary = payouts.poll_sent(s, bank)
    assert (summary.applied, summary.conflicts) == (1, [])
    done = payouts.get_payout(s, payout.public_id)
    assert done.state == "confirmed" and done.bank_reference
    assert posted(s, "payouts:in_flight") == 0
    assert posted(s, "custody:bank") == custody - 30_000
    assert [e.to_state for e in payouts.payout_events(s, payout.public_id)] == [
        "approved", "sent", "confirmed"]
    assert payouts.poll_sent(s, bank).applied == 0      # nothing left in flight
    holds(s)


def test_a_failed_payout_returns_the_money_to_the_wallet(paid, bank, clock):
    s = paid
    register(s, number="6222021234560000")              # the simulated bank fails it (AC01)
    payout = request(s, 20_000)
    payouts.send_payouts(s, bank)
    clock.now += timedelta(minutes=6)
    assert payouts.poll_sent(s, bank).applied == 1
    failed = payouts.get_payout(s, payout.public_id)
    assert failed.state == "failed" and "AC01" in failed.failure_reason
    assert (posted(s, "party:D:wallet"), available(s, "party:D:wallet")) == (92_000, 92_000)
    assert posted(s, "payouts:in_flight") == 0
    codes = [ledger.get_entry(s, e.entry_id).code
             for e in payouts.payout_events(s, payout.public_id) if e.entry_id]
    assert codes == ["payout.reserve", "payout.send", "payout.fail"]
    holds(s)


def test_at_or_above_the_threshold_a_second_person_approves(paid, bank):
    s = paid
    register(s)
    big = request(s, THRESHOLD)
    assert (big.state, big.needs_approval) == ("awaiting_approval", True)
    assert payouts.send_payouts(s, bank) == {}          # not sent while it waits
    with pytest.raises(PayoutRefused):
        payouts.approve_payout(s, big.public_id, actor="d-finance")   # the requester
    approved = payouts.approve_payout(s, big.public_id, actor="brand-finance")
    assert (approved.state, approved.decided_by) == ("approved", "brand-finance")

    other = request(s, THRESHOLD, key="k2")
    rejected = payouts.reject_payout(s, other.public_id, actor="brand-finance",
                                     note="not this week")
    assert (rejected.state, rejected.failure_reason) == ("rejected", "not this week")
    assert available(s, "party:D:wallet") == 92_000 - THRESHOLD   # only the approved one held
    with pytest.raises(IllegalPayoutTransition) as illegal:
        payouts.approve_payout(s, other.public_id, actor="brand-finance")
    assert illegal.value.code == "illegal_transition" and illegal.value.details["allowed"] == []
    holds(s)


def test_a_party_cancels_before_sending_but_not_after(paid, bank):
    s = paid
    register(s)
    first, second = request(s, 1_000, key="a"), request(s, 2_000, key="b")
    assert payouts.cancel_payout(s, first.public_id, actor="d-finance").state == "cancelled"
    payouts.send_payouts(s, bank)
    with pytest.raises(IllegalPayoutTransition):
        payouts.cancel_payout(s, second.public_id, actor="d-finance")
    assert posted(s, "party:D:wallet") == 90_000 and available(s, "party:D:wallet") == 90_000
    holds(s)


def test_bad_requests_are_refused_and_write_nothing(paid):
    s = paid
    with pytest.raises(BankAccountMissing):
        request(s, 1_000)
    register(s)
    for amount in (0, -5, 12.5, "100", True):
        with pytest.raises(InvalidInput) as bad:
            request(s, amount)
        assert bad.value.details["field"] == "amount_minor"
    with pytest.raises(PayoutRefused) as short:
        request(s, 92_001)
    assert "does not hold" in short.value.message
    register(s, party="S")
    with pytest.raises(PayoutRefused) as no_wallet:
        request(s, 1_000, party="S")                    # S has no wallet: nothing cleared to it
    assert "no wallet" in no_wallet.value.message
    first = request(s, 1_000, key="same")
    assert request(s, 1_000, key="same").public_id == first.public_id   # idempotent
    with pytest.raises(PayoutRefused) as reused:
        request(s, 2_000, key="same")
    assert reused.value.details["field"] == "request_key"
    parties.update_party(s, "D", status="frozen")
    with pytest.raises(PayoutRefused) as frozen:
        request(s, 1_000, key="frozen")
    assert "frozen" in frozen.value.message
    assert payouts.list_payouts(s, party="D")[0] == [payouts.get_payout(s, first.public_id)]
    assert available(s, "party:D:wallet") == 91_000
    for field, value in (("account_number", "12ab"), ("bank_code", ""),
                         ("holder_name", " "), ("currency", "yuan")):
        with pytest.raises(InvalidInput) as bad:
            register(s, **{"number" if field == "account_number" else field: value})
        assert bad.value.details["field"] == field
    holds(s)


def test_a_new_bank_account_retires_the_old_and_payouts_keep_theirs(paid):
    s = paid
    register(s, number="6222021111111111")
    payout = request(s, 1_000)
    register(s, number="6222022222222222")
    accounts = payouts.bank_accounts(s, "D")
    assert [(a.account_number_masked[-4:], a.status) for a in accounts] == [
        ("2222", "active"), ("1111", "retired")]
    assert payouts.get_payout(s, payout.public_id).payee_account_masked.endswith("1111")


def test_the_banks_callback_applies_each_outcome_once_and_a_forgery_nothing(paid, bank, clock):
    s = paid
    register(s)
    payout = request(s, 5_000)
    payouts.send_payouts(s, bank)
    clock.now += timedelta(minutes=6)
    outcomes = bank.settle()
    callback = bank.callback_for(outcomes)
    verified = bank.verify_callback(callback)
    assert payouts.apply_outcomes(s, verified, actor="bank").applied == 1
    again = payouts.apply_outcomes(s, bank.verify_callback(callback), actor="bank")
    assert (again.applied, again.duplicates) == (0, 1)
    assert payouts.get_payout(s, payout.public_id).state == "confirmed"
    forged = type(callback)(headers=callback.headers,
                            body=callback.body.replace(b"confirmed", b"failed"),
                            received_at=callback.received_at)
    with pytest.raises(CallbackRejected):
        bank.verify_callback(forged)
    unknown = payouts.apply_outcomes(s, [type(verified[0])(
        reference="po_nope", status="confirmed", bank_reference="x", reason=None,
        occurred_at=None, amount_minor=1)], actor="bank")
    assert unknown.unknown == ["po_nope"]
    holds(s)


def test_a_payout_file_goes_to_the_bank_and_its_status_report_settles_it(paid, bank, clock):
    s = paid
    register(s)
    register(s, party="S", number="6222023333330000")   # S has no wallet: no payout for S
    one, two = request(s, 4_000, key="f1"), request(s, 6_000, key="f2")
    exported = payouts.export_payout_file(
        s, actor="brand-finance", debtor_name="Custody", debtor_account="6222000000000000001",
        debtor_bank_code="102100099996", execution_date=date(2026, 11, 30))
    assert (exported.count, exported.total_minor) == (2, 10_000)
    root = ET.fromstring(exported.content)
    refs = [e.text for e in root.iter(f"{PAIN001}EndToEndId")]
    assert refs == [one.public_id, two.public_id]
    assert root.find(f".//{PAIN001}CtrlSum").text == "100.00"
    assert {payouts.get_payout(s, p.public_id).state for p in (one, two)} == {"sent"}
    assert payouts.export_payout_file(
        s, actor="brand-finance", debtor_name="Custody", debtor_account="6222000000000000001",
        debtor_bank_code="102100099996", execution_date=date(2026, 11, 30)) is None
    assert payouts.payout_file(s, exported.public_id).content == exported.content

    # The bank's pain.002: one settled, one rejected.
    report = bank.status_file([
        PayoutOutcome(one.public_id, "confirmed", "B-1", None, clock.now, 4_000),
        PayoutOutcome(two.public_id, "failed", None, "AC04", clock.now, 6_000)],
        exported.public_id)
    summary = payouts.apply_outcomes(s, bank.parse_status_file(report), actor="brand-finance")
    assert (summary.applied, summary.duplicates) == (2, 0)
    assert payouts.apply_outcomes(s, bank.parse_status_file(report), actor="x").duplicates == 2
    assert posted(s, "party:D:wallet") == 92_000 - 4_000
    assert payouts.get_payout(s, two.public_id).state == "failed"
    holds(s)


def test_an_outcome_that_contradicts_a_final_state_is_reported_not_applied(paid, bank, clock):
    s = paid
    register(s)
    payout = request(s, 3_000)
    payouts.send_payouts(s, bank)
    clock.now += timedelta(minutes=6)
    payouts.poll_sent(s, bank)
    late = payouts.apply_outcomes(s, [PayoutOutcome(payout.public_id, "failed", None, "AC04",
                                                    clock.now, 3_000)], actor="bank")
    assert (late.applied, late.conflicts) == (0, [payout.public_id])
    assert payouts.get_payout(s, payout.public_id).state == "confirmed"
    holds(s)


def test_the_schedule_pays_out_above_the_level_once_a_day(paid):
    s = paid
    register(s, sweep_above_minor=10_000)
    today = date(2026, 11, 27)
    assert payouts.sweep_wallets(s, day=today, approval_threshold_minor=THRESHOLD) == 1
    assert payouts.sweep_wallets(s, day=today, approval_threshold_minor=THRESHOLD) == 0
    [swept], _ = payouts.list_payouts(s, party="D")
    assert (swept.amount_minor, swept.source, swept.state) == (82_000, "schedule",
                                                               "awaiting_approval")
    assert available(s, "party:D:wallet") == 10_000
    holds(s)


def test_a_payout_the_bank_forgot_is_sent_again_and_settles(paid, bank, clock):
    """The bank lost the instruction (a simulated bank restarted, a real one
    that never received it): polling sends it again under the same
    reference, the money staying in flight, and it settles as usual."""
    s = paid
    register(s)
    payout = request(s, 30_000)
    payouts.send_payouts(s, bank)
    restarted = SimulatedBank(SECRET, clock=clock, settle_after=timedelta(minutes=5))
    summary = payouts.poll_sent(s, restarted)
    assert (summary.applied, summary.resent, summary.stuck) == (0, [payout.public_id], [])
    assert restarted.query(payout.public_id).status == "accepted"
    assert payouts.get_payout(s, payout.public_id).state == "sent"
    assert posted(s, "payouts:in_flight") == 30_000
    holds(s)
    # Sent again once only: the bank knows it now.
    assert payouts.poll_sent(s, restarted).resent == []
    clock.now += timedelta(minutes=6)
    assert payouts.poll_sent(s, restarted).applied == 1
    assert payouts.get_payout(s, payout.public_id).state == "confirmed"
    notes = [(e.to_state, e.note) for e in payouts.payout_events(s, payout.public_id)]
    assert notes[2] == ("sent", "the bank did not know it: sent again (sending 2)")
    assert [n[0] for n in notes] == ["approved", "sent", "sent", "confirmed"]
    holds(s)


class RefusingBank(SimulatedBank):
    """Knows nothing and refuses every instruction (an account closed since)."""

    def submit(self, instructions):
        from payments.payout_bank import SubmitResult
        return [SubmitResult(i.reference, False, None, "AC04 closed account number")
                for i in instructions]


def test_a_forgotten_payout_refused_when_sent_again_fails_and_the_money_returns(
        paid, bank, clock):
    s = paid
    register(s)
    payout = request(s, 30_000)
    payouts.send_payouts(s, bank)
    summary = payouts.poll_sent(s, RefusingBank(SECRET, clock=clock))
    assert (summary.applied, summary.resent) == (1, [])
    failed = payouts.get_payout(s, payout.public_id)
    assert failed.state == "failed"
    assert failed.failure_reason == "refused when sent again: AC04 closed account number"
    assert (posted(s, "party:D:wallet"), available(s, "party:D:wallet")) == (92_000, 92_000)
    assert posted(s, "payouts:in_flight") == 0
    holds(s)


class ForgetfulBank(SimulatedBank):
    """Accepts every instruction and forgets it at once."""

    def query(self, reference):
        return PayoutOutcome(reference, "unknown", None, None, None, None)


def test_a_payout_the_bank_never_knows_is_sent_a_few_times_then_left_to_finance(
        paid, clock, caplog):
    s = paid
    register(s)
    forgetful = ForgetfulBank(SECRET, clock=clock)
    payout = request(s, 30_000)
    payouts.send_payouts(s, forgetful)
    resent = [payouts.poll_sent(s, forgetful).resent for _ in range(payouts.MAX_SENDS)]
    assert resent == [[payout.public_id]] * (payouts.MAX_SENDS - 1) + [[]]
    summary = payouts.poll_sent(s, forgetful)
    assert (summary.resent, summary.stuck) == ([], [payout.public_id])
    assert "does not know it after" in caplog.text
    # Never dropped: still in flight, the money reserved for it.
    assert payouts.get_payout(s, payout.public_id).state == "sent"
    assert posted(s, "payouts:in_flight") == 30_000
    holds(s)
