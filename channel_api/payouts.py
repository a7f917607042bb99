"""Payouts (issue 6): money leaving a party's wallet for its registered bank
account, carried out by an instruction to the bank that holds the custody
account (``payments.payout_bank``), never from a pool of the platform's own.

The ledger follows docs/accounting.md:

* request: the amount is **reserved** in the wallet (a pending entry Dr
  ``party:P:wallet`` / Cr ``payouts:in_flight``), so it cannot be spent or
  paid out twice while it waits for approval or for the bank;
* the bank accepts the instruction (or it leaves in a payout file): the
  reservation is posted (``payout.send``), the money is in flight;
* the bank confirms: Dr ``payouts:in_flight`` / Cr ``custody:bank``
  (``payout.confirm``); it fails: the send entry is reversed, linked to it
  (``payout.fail``: Dr ``payouts:in_flight`` / Cr the wallet), the money
  is back;
* rejected by finance, cancelled by the party, or refused by the bank before
  anything left: the reservation is voided.

Amounts at or above the approval threshold wait for a second person (the
brand's finance, never the requester). Outcomes arrive by the bank's signed
callback, its status file (pain.002) or the polling job; each is applied
once, whichever comes first, and a contradicting one is reported, never
applied.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import ledger
from clearing.payout_states import STATES, initial_state, next_state
from clearing.settlement_models import PartyBankAccount, Payout, PayoutEvent, PayoutFile
from ledger import EntryRequest, PostingLine, as_utc, new_uuid7, utcnow
from payments import iso20022
from payments.payout_bank import (PayoutBank, PayoutInstruction, PayoutOutcome, SubmitResult,
                                  check_instruction)

from . import audit, clawback_advances, outbox, pages
from .books import CUSTODY, PAYOUTS_IN_FLIGHT, ensure, positive_amount, wallet_account
from .errors import BankAccountMissing, InvalidInput, PayoutNotFound, PayoutRefused
from .parties import party_row

log = logging.getLogger(__name__)
_CURRENCY = re.compile(r"[A-Z]{3}")
_BANK_CODE = re.compile(r"[0-9A-Za-z]{1,20}")
_ACCOUNT_NUMBER = re.compile(r"[0-9]{8,34}")


@dataclass(frozen=True)
class BankAccountView:
    public_id: str
    party: str
    holder_name: str
    account_number_masked: str
    bank_code: str
    bank_name: str
    currency: str
    status: str
    sweep_above_minor: int | None
    registered_by: str
    registered_at: datetime


@dataclass(frozen=True)
class PayoutView:
    public_id: str
    party: str
    amount_minor: int
    currency: str
    state: str
    needs_approval: bool
    source: str
    bank_account: str
    payee_name: str
    payee_account_masked: str
    bank: str | None
    bank_reference: str | None
    file: str | None
    failure_reason: str | None
    remark: str
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    updated_at: datetime


@dataclass(frozen=True)
class PayoutEventView:
    from_state: str | None
    to_state: str
    actor: str
    note: str
    entry_id: str | None
    at: datetime


@dataclass(frozen=True)
class OutcomeSummary:
    """What a batch of bank outcomes did: ``applied`` moved a payout to its
    final state; ``duplicates`` were already applied; ``waiting`` name
    payouts not sent yet (applied once they are); ``unknown`` references
    are not ours; ``conflicts`` contradict a final state (finance looks).
    The polling job adds what it did about payouts in flight that the bank
    does not know: ``resent`` (sent again, same reference) and ``stuck``
    (sent ``MAX_SENDS`` times already: finance looks)."""

    applied: int
    duplicates: int
    waiting: int
    unknown: list[str]
    conflicts: list[str]
    resent: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)


def _mask(number: str) -> str:
    return "*" * max(len(number) - 4, 0) + number[-4:]


def _account_view(row: PartyBankAccount) -> BankAccountView:
    return BankAccountView(row.public_id, row.party, row.holder_name, _mask(row.account_number),
                           row.bank_code, row.bank_name, row.currency, row.status,
                           row.sweep_above_minor, row.registered_by, as_utc(row.registered_at))


def _view(row: Payout) -> PayoutView:
    return PayoutView(row.public_id, row.party, row.amount_minor, row.currency, row.state,
                      row.needs_approval, row.source, row.bank_account_id, row.payee_name,
                      _mask(row.payee_account), row.bank, row.bank_reference, row.file_id,
                      row.failure_reason, row.remark, row.requested_by, as_utc(row.requested_at),
                      row.decided_by, as_utc(row.updated_at))


def _text(value: Any, field: str, longest: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > longest:
        raise InvalidInput(f"{field} must be 1-{longest} characters", field=field)
    return value.strip()


def _currency(value: Any) -> str:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise InvalidInput("currency must be an ISO 4217 code such as CNY", field="currency")
    return value


# -- bank accounts ------------------------------------------------------------------


def register_bank_account(session: Session, party: str, *, holder_name: Any, account_number: Any,
                          bank_code: Any, bank_name: Any, currency: Any = "CNY",
                          sweep_above_minor: Any = None, actor: str,
                          now: datetime | None = None) -> BankAccountView:
    """The account ``party``'s payouts go to from now on (the previous one in
    that currency is retired; payouts already requested keep theirs)."""
    row = party_row(session, party)
    holder = _text(holder_name, "holder_name", 70)
    if not isinstance(account_number, str) or not _ACCOUNT_NUMBER.fullmatch(account_number):
        raise InvalidInput("account_number must be 8-34 digits", field="account_number")
    if not isinstance(bank_code, str) or not _BANK_CODE.fullmatch(bank_code):
        raise InvalidInput("bank_code must be 1-20 letters or digits (a CNAPS code or a BIC)",
                           field="bank_code")
    name = _text(bank_name, "bank_name", 100)
    ccy = _currency(currency)
    if sweep_above_minor is not None and (
            not isinstance(sweep_above_minor, int) or isinstance(sweep_above_minor, bool)
            or not 0 <= sweep_above_minor <= 10**15):
        raise InvalidInput("sweep_above_minor must be a whole number of minor units, 0 or more",
                           field="sweep_above_minor")
    now = now or utcnow()
    for old in session.scalars(select(PartyBankAccount).where(
            PartyBankAccount.party == row.code, PartyBankAccount.currency == ccy,
            PartyBankAccount.status == "active").with_for_update()):
        old.status, old.retired_at = "retired", now
    session.flush()
    account = PartyBankAccount(
        public_id=f"bac_{new_uuid7().hex}", party=row.code, holder_name=holder,
        account_number=account_number, bank_code=bank_code, bank_name=name, currency=ccy,
        status="active", sweep_above_minor=sweep_above_minor, registered_by=actor,
        registered_at=now)
    session.add(account)
    session.flush()
    audit.record(session, actor=actor, action="bank_account.registered", subject_type="party",
                 subject=row.code, details={"bank_account": account.public_id,
                                            "account": _mask(account_number),
                                            "bank_code": bank_code, "currency": ccy,
                                            "sweep_above_minor": sweep_above_minor})
    return _account_view(account)


def bank_accounts(session: Session, party: str) -> list[BankAccountView]:
    code = party_row(session, party).code
    return [_account_view(r) for r in session.scalars(
        select(PartyBankAccount).where(PartyBankAccount.party == code)
        .order_by(PartyBankAccount.id.desc()))]


def _active_account(session: Session, party: str, currency: str) -> PartyBankAccount:
    account = session.scalars(select(PartyBankAccount).where(
        PartyBankAccount.party == party, PartyBankAccount.currency == currency,
        PartyBankAccount.status == "active")).one_or_none()
    if account is None:
        raise BankAccountMissing(f"{party} has no registered bank account in {currency}",
                                 party=party, currency=currency)
    return account


# -- requesting and deciding --------------------------------------------------------


def _record(session: Session, row: Payout, from_state: str | None, actor: str, note: str = "",
            entry_id: str | None = None, now: datetime | None = None) -> None:
    now = now or utcnow()
    session.add(PayoutEvent(payout_id=row.id, from_state=from_state, to_state=row.state,
                            actor=actor[:80], note=note[:200], entry_id=entry_id, at=now))
    row.updated_at = now
    outbox.record(session, type=f"payout.{row.state}", subject_type="payout",
                  subject=row.public_id, parties=[row.party],
                  payload={"payout": row.public_id, "state": row.state,
                           "amount_minor": row.amount_minor, "currency": row.currency,
                           "failure_reason": row.failure_reason})


def request_payout(session: Session, party: str, amount_minor: Any, *, request_key: str,
                   actor: str, approval_threshold_minor: int, currency: Any = "CNY",
                   remark: Any = "", source: str = "party",
                   now: datetime | None = None) -> PayoutView:
    """Reserve ``amount_minor`` of ``party``'s wallet for a payout to its
    registered account. The same ``request_key`` again returns the same
    payout (and is refused for another amount)."""
    amount = positive_amount(amount_minor)
    ccy = _currency(currency)
    if not isinstance(remark, str) or len(remark) > 140:
        raise InvalidInput("remark must be at most 140 characters", field="remark")
    row = party_row(session, party)
    earlier = session.scalars(select(Payout).where(Payout.party == row.code,
                                                   Payout.request_key == request_key)).one_or_none()
    if earlier is not None:
        if (earlier.amount_minor, earlier.currency) != (amount, ccy):
            raise PayoutRefused("this request key was used for another payout",
                                field="request_key", payout=earlier.public_id)
        return _view(earlier)
    if row.status != "active":
        raise PayoutRefused(f"{row.code} is {row.status}; it cannot be paid out", party=row.code)
    account = _active_account(session, row.code, ccy)
    # What the party owes back for clawbacks the platform advanced comes out
    # of the wallet first: a payout never takes money owed back.
    clawback_advances.recover(session, party=row.code, actor=actor)
    now = now or utcnow()
    ensure(session, PAYOUTS_IN_FLIGHT, "Payouts in flight", "liability", ccy)
    public_id = f"po_{new_uuid7().hex}"
    try:
        reserve = ledger.post_entry(session, EntryRequest(
            code="payout.reserve", description=f"payout {public_id} to {_mask(account.account_number)}",
            idempotency_key=f"{public_id}:reserve", pending=True,
            metadata={"payout": public_id, "party": row.code},
            postings=[PostingLine(wallet_account(row.code), "debit", amount, ccy),
                      PostingLine(PAYOUTS_IN_FLIGHT, "credit", amount, ccy)]))
    except ledger.AccountNotFound:
        raise PayoutRefused(f"{row.code} has no wallet yet: nothing was cleared to it",
                            party=row.code) from None
    except ledger.InsufficientFunds as short:
        raise PayoutRefused(f"{row.code}'s wallet does not hold {amount} {ccy} to pay out",
                            party=row.code, **short.details) from None
    state = initial_state(amount, approval_threshold_minor)
    payout = Payout(
        public_id=public_id, party=row.code, request_key=request_key[:120], source=source,
        amount_minor=amount, currency=ccy, bank_account_id=account.public_id,
        payee_name=account.holder_name, payee_account=account.account_number,
        payee_bank_code=account.bank_code, payee_bank_name=account.bank_name, remark=remark,
        state=state, needs_approval=state == "awaiting_approval", reserve_entry_id=reserve.id,
        requested_by=actor, requested_at=now, updated_at=now, attempts=0)
    session.add(payout)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:  # the same key raced us in: the reservation goes with this rollback
        raise PayoutRefused("this request key is being used by a concurrent request",
                            field="request_key") from None
    _record(session, payout, None, actor, "requested", reserve.id, now)
    return _view(payout)


def _locked(session: Session, payout_id: str) -> Payout:
    row = session.scalars(select(Payout).where(Payout.public_id == payout_id)
                          .with_for_update()).one_or_none()
    if row is None:
        raise PayoutNotFound(f"no payout {payout_id!r}", field="payout")
    return row


def approve_payout(session: Session, payout_id: str, *, actor: str, note: str = "") -> PayoutView:
    """Four eyes: whoever requested a payout cannot approve it."""
    row = _locked(session, payout_id)
    target = next_state(row.state, "approve")
    if actor == row.requested_by:
        raise PayoutRefused("a payout is approved by someone other than who requested it",
                            payout=payout_id)
    before, row.state, row.decided_by = row.state, target, actor
    _record(session, row, before, actor, note or "approved")
    audit.record(session, actor=actor, action="payout.approved", subject_type="payout",
                 subject=row.public_id, details={"amount_minor": row.amount_minor})
    return _view(row)


def _void(session: Session, row: Payout, action: str, actor: str, note: str) -> PayoutView:
    target = next_state(row.state, action)
    entry = ledger.void_pending(session, row.reserve_entry_id, code=f"payout.{action}",
                                idempotency_key=f"{row.public_id}:{action}", reason=note[:200])
    before, row.state = row.state, target
    if action in ("reject", "refuse"):
        row.failure_reason = note[:200]
    if action == "reject":
        row.decided_by = actor
    _record(session, row, before, actor, note, entry.id)
    return _view(row)


def reject_payout(session: Session, payout_id: str, *, actor: str, note: Any) -> PayoutView:
    reason = _text(note, "note", 200)
    view = _void(session, _locked(session, payout_id), "reject", actor, reason)
    audit.record(session, actor=actor, action="payout.rejected", subject_type="payout",
                 subject=payout_id, details={"note": reason})
    return view


def cancel_payout(session: Session, payout_id: str, *, actor: str, note: str = "") -> PayoutView:
    """The party takes back a payout not yet sent."""
    return _void(session, _locked(session, payout_id), "cancel", actor, note or "cancelled")


# -- sending -------------------------------------------------------------------------


def _instruction(row: Payout) -> PayoutInstruction:
    return PayoutInstruction(reference=row.public_id, amount_minor=row.amount_minor,
                             currency=row.currency, payee_name=row.payee_name,
                             payee_account=row.payee_account, payee_bank_code=row.payee_bank_code,
                             payee_bank_name=row.payee_bank_name, remark=row.remark)


def _approved(session: Session, limit: int, currency: str | None = None) -> list[Payout]:
    query = select(Payout).where(Payout.state == "approved")
    if currency is not None:
        query = query.where(Payout.currency == currency)
    return list(session.scalars(query.order_by(Payout.id).limit(limit)
                                .with_for_update(skip_locked=True)))


def _mark_sent(session: Session, row: Payout, *, bank: str, actor: str,
               bank_reference: str | None = None, file_id: str | None = None) -> None:
    entry = ledger.post_pending(session, row.reserve_entry_id, code="payout.send",
                                idempotency_key=f"{row.public_id}:send",
                                description=f"payout {row.public_id} sent")
    before = row.state
    row.state, row.bank, row.bank_reference, row.file_id = \
        next_state(row.state, "send"), bank, bank_reference, file_id
    row.send_entry_id = entry.id
    _record(session, row, before, actor, f"sent via {bank}", entry.id)


def send_payouts(session: Session, bank: PayoutBank, *, limit: int = 500,
                 actor: str = "job:send_payouts") -> Counter:
    """The sending job: approved payouts go to ``bank`` as instructions.
    Submitting again after a crash is safe: the bank answers a known
    reference with its first answer (``payments.payout_bank``)."""
    rows = _approved(session, limit)
    outcome: Counter = Counter()
    for row, result in _submit(bank, rows):
        if result.accepted:
            _mark_sent(session, row, bank=bank.name, actor=actor,
                       bank_reference=result.bank_reference)
            outcome["sent"] += 1
        else:
            _void(session, row, "refuse", actor, result.reason or "refused by the bank")
            outcome["refused"] += 1
    session.flush()
    return outcome


def _submit(bank: PayoutBank, rows: list[Payout]) -> list[tuple[Payout, SubmitResult]]:
    """Send ``rows`` to ``bank`` as instructions (a sending each); each row
    with the bank's answer about it."""
    if not rows:
        return []
    for row in rows:
        row.attempts += 1
    results = bank.submit([_instruction(r) for r in rows])
    for row, result in zip(rows, results, strict=True):
        if result.reference != row.public_id:
            raise RuntimeError(f"bank {bank.name} answered {result.reference} for {row.public_id}")
    return list(zip(rows, results))


def export_payout_file(session: Session, *, actor: str, debtor_name: str, debtor_account: str,
                       debtor_bank_code: str, execution_date: date, currency: str = "CNY",
                       limit: int = 5000, now: datetime | None = None) -> PayoutFile | None:
    """For a bank that takes files: approved payouts in one ISO 20022
    pain.001 file, kept for download; they are sent from now on. None when
    nothing is approved."""
    rows = _approved(session, limit, currency)
    if not rows:
        return None
    now = now or utcnow()
    public_id = f"pf_{new_uuid7().hex}"  # 35 characters: ISO 20022 MsgId is Max35Text
    instructions = [_instruction(r) for r in rows]
    for instruction in instructions:
        check_instruction(instruction)
    content = iso20022.payout_file(instructions, message_id=public_id, created_at=now,
                                   debtor_name=debtor_name, debtor_account=debtor_account,
                                   debtor_bank_code=debtor_bank_code,
                                   execution_date=execution_date)
    row = PayoutFile(public_id=public_id, currency=currency, count=len(rows),
                     total_minor=sum(r.amount_minor for r in rows), content=content,
                     created_by=actor, created_at=now)
    session.add(row)
    for payout in rows:
        _mark_sent(session, payout, bank="file", actor=actor, file_id=public_id)
    audit.record(session, actor=actor, action="payout_file.exported", subject_type="payout_file",
                 subject=public_id, details={"count": row.count, "total_minor": row.total_minor})
    session.flush()
    return row


def payout_file(session: Session, file_id: str) -> PayoutFile:
    row = session.scalars(select(PayoutFile).where(PayoutFile.public_id == file_id)).one_or_none()
    if row is None:
        raise PayoutNotFound(f"no payout file {file_id!r}", field="file")
    return row


# -- outcomes --------------------------------------------------------------------------


def apply_outcomes(session: Session, outcomes: Sequence[PayoutOutcome], *,
                   actor: str) -> OutcomeSummary:
    """Confirmations and failures from the bank (callback, status file or
    polling), each applied once. ``accepted`` and ``unknown`` outcomes move
    nothing."""
    applied = duplicates = waiting = 0
    unknown: list[str] = []
    conflicts: list[str] = []
    for outcome in outcomes:
        if outcome.status not in ("confirmed", "failed"):
            continue
        row = session.scalars(select(Payout).where(Payout.public_id == outcome.reference)
                              .with_for_update()).one_or_none()
        if row is None:
            unknown.append(outcome.reference)
            continue
        action = "confirm" if outcome.status == "confirmed" else "fail"
        if row.state == outcome.status:
            duplicates += 1
            continue
        if row.state in ("awaiting_approval", "approved"):
            waiting += 1     # the bank answered before our send committed; resend, then apply
            continue
        if row.state != "sent" or (outcome.amount_minor is not None
                                   and outcome.amount_minor != row.amount_minor):
            log.error("payout %s: bank says %s (%s) but it is %s for %s", row.public_id,
                      outcome.status, outcome.amount_minor, row.state, row.amount_minor,
                      extra={"payout": row.public_id})
            conflicts.append(row.public_id)
            continue
        _settle(session, row, action, outcome, actor)
        applied += 1
    session.flush()
    return OutcomeSummary(applied, duplicates, waiting, unknown, conflicts)


def _settle(session: Session, row: Payout, action: str, outcome: PayoutOutcome,
            actor: str) -> None:
    """Confirmed: the money left the custody account. Failed: the send
    entry is reversed (linked to it), the money is back in the wallet."""
    description = f"payout {row.public_id} {outcome.status} by the bank"
    if action == "confirm":
        ensure(session, CUSTODY, "Custody account at the bank", "asset", row.currency)
        entry = ledger.post_entry(session, EntryRequest(
            code="payout.confirm", idempotency_key=f"{row.public_id}:confirm",
            description=description,
            metadata={"payout": row.public_id, "bank_reference": outcome.bank_reference},
            postings=[PostingLine(PAYOUTS_IN_FLIGHT, "debit", row.amount_minor, row.currency),
                      PostingLine(CUSTODY, "credit", row.amount_minor, row.currency)]))
    else:
        entry = ledger.reverse_entry(session, row.send_entry_id, code="payout.fail",
                                     idempotency_key=f"{row.public_id}:fail",
                                     description=description)
    before = row.state
    row.state = next_state(row.state, action)
    row.bank_reference = outcome.bank_reference or row.bank_reference
    if action == "fail":
        row.failure_reason = (outcome.reason or "failed at the bank")[:200]
    _record(session, row, before, actor, outcome.reason or outcome.status, entry.id)


# How many times a payout is sent to a bank that keeps answering that it
# does not know it, before the job stops and leaves it to finance.
MAX_SENDS = 5


def poll_sent(session: Session, bank: PayoutBank, *, limit: int = 500,
              actor: str = "job:poll_payouts") -> OutcomeSummary:
    """The polling job: ask the bank about payouts it has and that no
    callback settled yet.

    A payout the bank answers it does not know (``unknown``: the
    instruction never reached it, or the bank lost it) is sent again with
    the same reference, which a bank deduplicates, so it is never paid
    twice; the money stays in flight meanwhile. Refused on the second
    sending, it fails and the money returns to the wallet. After
    ``MAX_SENDS`` sendings it is left in flight, reported as ``stuck`` and
    logged as an error for finance: never dropped."""
    rows = list(session.scalars(select(Payout).where(Payout.state == "sent",
                                                     Payout.bank == bank.name)
                                .order_by(Payout.id).limit(limit)))
    outcomes = [bank.query(r.public_id) for r in rows]
    summary = apply_outcomes(session, outcomes, actor=actor)
    lost = [row for row, outcome in zip(rows, outcomes, strict=True)
            if outcome.status == "unknown" and outcome.reference == row.public_id]
    stuck = [r.public_id for r in lost if r.attempts >= MAX_SENDS]
    for public_id in stuck:
        log.error("payout %s: the bank %s does not know it after %d sendings; finance must "
                  "ask the bank", public_id, bank.name, MAX_SENDS, extra={"payout": public_id})
    resent, failed = _send_again(session, bank, [r for r in lost if r.attempts < MAX_SENDS],
                                 actor)
    return replace(summary, applied=summary.applied + failed, resent=resent, stuck=stuck)


def _send_again(session: Session, bank: PayoutBank, rows: list[Payout],
                actor: str) -> tuple[list[str], int]:
    """Send ``rows`` again; the payouts resent, and how many failed."""
    resent: list[str] = []
    failed = 0
    for row, result in _submit(bank, rows):
        if result.accepted:
            row.bank_reference = result.bank_reference or row.bank_reference
            now = utcnow()
            session.add(PayoutEvent(
                payout_id=row.id, from_state=row.state, to_state=row.state, actor=actor[:80],
                note=f"the bank did not know it: sent again (sending {row.attempts})", at=now))
            row.updated_at = now
            resent.append(row.public_id)
        else:  # the money left the wallet with the first sending: it comes back
            reason = f"refused when sent again: {result.reason or 'no reason given'}"
            _settle(session, row, "fail", PayoutOutcome(row.public_id, "failed", None, reason,
                                                        utcnow(), row.amount_minor), actor)
            failed += 1
    session.flush()
    return resent, failed


# -- schedule ---------------------------------------------------------------------------


def sweep_wallets(session: Session, *, day: date, approval_threshold_minor: int,
                  limit: int = 5000) -> int:
    """The payout schedule: for every account registered with
    ``sweep_above_minor``, pay out what the wallet holds above it, once per
    business day (the day is the request key, so a rerun adds nothing)."""
    clawback_advances.recover(session, limit=limit)     # what is owed back is not swept
    accounts = list(session.scalars(select(PartyBankAccount).where(
        PartyBankAccount.status == "active", PartyBankAccount.sweep_above_minor.is_not(None))
        .order_by(PartyBankAccount.id).limit(limit)))
    wallets = ledger.get_accounts(session, [wallet_account(a.party) for a in accounts])
    requested = 0
    for account in accounts:
        wallet = wallets.get(wallet_account(account.party))
        if wallet is None or wallet.currency != account.currency:
            continue
        amount = wallet.available_minor - account.sweep_above_minor
        if amount <= 0:
            continue
        try:
            with session.begin_nested():
                request_payout(session, account.party, amount, request_key=f"sweep:{day}",
                               actor="job:sweep_wallets", currency=account.currency,
                               approval_threshold_minor=approval_threshold_minor,
                               source="schedule", remark=f"scheduled payout {day}")
            requested += 1
        except PayoutRefused as why:  # a frozen party: skipped, said
            log.warning("scheduled payout of %s skipped: %s", account.party, why)
    return requested


# -- reading ----------------------------------------------------------------------------


def get_payout(session: Session, payout_id: str) -> PayoutView:
    row = session.scalars(select(Payout).where(Payout.public_id == payout_id)).one_or_none()
    if row is None:
        raise PayoutNotFound(f"no payout {payout_id!r}", field="payout")
    return _view(row)


def payout_events(session: Session, payout_id: str) -> list[PayoutEventView]:
    row = session.scalars(select(Payout).where(Payout.public_id == payout_id)).one_or_none()
    if row is None:
        raise PayoutNotFound(f"no payout {payout_id!r}", field="payout")
    return [PayoutEventView(e.from_state, e.to_state, e.actor, e.note, e.entry_id, as_utc(e.at))
            for e in session.scalars(select(PayoutEvent).where(PayoutEvent.payout_id == row.id)
                                     .order_by(PayoutEvent.id))]


def list_payouts(session: Session, *, party: str | None = None, state: str | None = None,
                 after: str | None = None, limit: int = 100) -> tuple[list[PayoutView], str | None]:
    """Newest first; ``after`` is the cursor (the last payout id seen)."""
    query = select(Payout)
    if party is not None:
        query = query.where(Payout.party == party)
    if state is not None:
        if state not in STATES:
            raise InvalidInput(f"unknown payout state {state!r}", field="state")
        query = query.where(Payout.state == state)
    rows, cursor = pages.page(session, query, Payout, after=after, limit=limit,
                              noun="a payout")
    return [_view(r) for r in rows], cursor
