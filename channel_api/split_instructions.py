"""Split instructions to gateways (issue 6, "Who moves the money"): a split of
money a gateway collected with the seller as payee is carried out by an
instruction to that gateway's split product (WeChat Pay profit sharing,
Alipay trade settle, the sandbox's splits), never by the platform paying
the receivers out of a pool of its own.

Who is paid as payee
--------------------
A party registers its account at a gateway (``register_gateway_account``:
a WeChat Pay ``MERCHANT_ID``/``PERSONAL_OPENID``, an Alipay
``userId``/``loginName``, with the ``app_auth_token`` of the seller's
authorisation for a ``userId`` that is to collect, a sandbox ``account``).
An order paid through gateway G whose seller has an active account at G
that is a merchant able to collect there (``sub_merchants``: WeChat Pay
``MERCHANT_ID``, an authorised Alipay ``userId``, a sandbox account) is
collected with the seller as payee, in the seller's own name at G
(``gateway_payments``: ``Payment.payee_account`` and
``Payment.sub_merchant``), and its capture posts Dr
``gateway:G:payee_held`` / Cr ``order:O:escrow``. Every instruction and
query about such a payment names its sub-merchant (the payer of the
split). Any registered account, a ``PERSONAL_OPENID`` or an Alipay
``loginName`` too, receives splits. Clearing
is unchanged (escrow to ``party:X:pending`` and ``platform:revenue``, one
document per leg) except that the legs are marked ``carried_by =
gateway:G``: the release job never moves them to a wallet, since their money is
not in custody.

The jobs
--------
``send_splits`` (``plan_splits`` then ``send_planned``; the scheduler runs
the two in two transactions, so an instruction's ``out_order_no`` is
committed before anything is sent and a crash only ever resends the same
id, which the gateway deduplicates):

* picks carried legs that are due (their timing fired, dated from delivery
  by ``clearings.date_waiting`` exactly as the release job dates them), not
  yet taken up by an instruction, and groups them per payment into one
  ``split`` instruction whose receivers are the recipients other than the
  payee, one receiver per party (the sum of its legs). Each needs an
  account registered at G (the platform too, as party ``platform``); if one
  has none, or two share an account, or the split would be over the
  gateway's cap, the instruction is ``blocked`` with the reason and never
  sent (raised for finance, ``GET /v1/split-instructions?attention=true``);
* checks the cap with ``payments.split.check_caps``, cumulatively per
  payment: what earlier instructions paid (success) or may still pay
  (pending in an instruction created or processing) counts. The fee is the
  one the gateway's daily bill gave for the payment (``Payment.fee_minor``,
  recorded by ``gateway_bills``) or, before the bill, a conservative
  estimate, ``FEE_ESTIMATE_BP`` (1 %) of the payment rounded *up* to the fen:
  above WeChat Pay's and Alipay's standard 0.6 %, so the cap we check is
  never above the gateway's;
* once every non-payee leg of a payment is carried and every one of the
  payee's own legs is due, plans a ``finish`` instruction that releases the
  rest to the payee (WeChat Pay unfreeze, Alipay ``royalty_finish``). A
  payee the rule gives nothing (no leg, or a leg of 0 fen, which clearing
  never writes) or whose legs refunds took entirely still gets one finish,
  once a split was carried out for the payment and every other leg is
  carried: it takes up no leg, has no receiver and an amount of 0, and
  releases whatever the gateway still holds (what its fee or rounding
  left); planned once per payment (a blocked, refused or failed one waits
  for finance's retry, itself a finish of no legs), never while a refund is
  unwinding a split of it;
* sends what is ``created``; a gateway that cannot be reached leaves it
  ``created`` (sent again, same id); a signed refusal makes it ``refused``.

``poll_splits`` queries what is ``processing``.

Outcomes, each posted once (the entry's key is the receiver's id):

* a receiver ``success``: Dr ``party:X:pending`` / Cr ``gateway:G:payee_held``
  (``split.paid``); the platform's leg: Dr ``platform:gateway:G`` / Cr
  ``gateway:G:payee_held`` (its revenue was booked at clearing, the money
  is now in its own account at G). Its legs are marked carried;
* a receiver ``closed``: nothing is posted, the legs stay owed, the
  instruction ends ``failed`` with the vendor's reason; finance retries it
  (``retry_instruction``: a *new* instruction, a new ``out_order_no``);
* a finish done: Dr ``party:SELLER:pending`` / Cr ``gateway:G:payee_held``
  for the payee's own legs (``split.finish``); a finish of a payee without
  legs posts nothing (it has no receiver): the instruction only ends
  ``succeeded``, once, as any instruction does.

The gateway's fee on a payee-collected payment is the payee's own cost
under its contract with the gateway, taken from its remainder there: the
payee's legs are posted in full at finish (the platform's obligation to it
is discharged; it received them less its own fee), and the fee is never an
expense of ours (``gateway_bills`` posts nothing for these payments).

Unwinding a split for a refund (WeChat Pay return orders; the sandbox's
split returns): ``split_returns``. A refund that needs cash back from legs a
split paid to receivers records a split return per receiver and is refused
with ``split_return_pending`` until they succeed; no finish is planned for
the payment meanwhile (it would release the returned money to the payee).
Alipay has no return call (it unwinds only through the buyer's refund): its
returns fail, for finance. A refund that needs cash back from a leg an
instruction took up and has not carried out yet, or from the payee's own
legs a finish released, is still refused by ``clearings`` with
``clawback_blocked``, for finance.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

import ledger
from clearing.models import ClearingShare
from clearing.split_models import (
    PartyGatewayAccount,
    SplitInstruction,
    SplitInstructionEvent,
    SplitReceiver,
)
from clearing.split_states import ATTENTION, LIVE, STATES, next_state
from ledger import EntryRequest, PostingLine, as_utc, new_uuid7, utcnow
from payments.gateway import GatewayError
from payments.models import Payment
from payments.split import (
    FinishRequest,
    GatewayRefused,
    SplitGateway,
    SplitRefused,
    SplitRequest,
    SplitResult,
    check_caps,
    split_cap,
)
from payments.split import SplitReceiver as ReceiverSpec

from . import audit, clearings, pages, split_returns, sub_merchants
from .books import ensure, payee_held_account, pending_account, platform_gateway_account
from .clearing_rules import PLATFORM
from .errors import InvalidInput, NotFound
from .parties import party_row

log = logging.getLogger(__name__)

# The account kinds each gateway's split product takes.
SPLIT_GATEWAYS: dict[str, tuple[str, ...]] = {
    "wechatpay": ("MERCHANT_ID", "PERSONAL_OPENID"),
    "alipay": ("userId", "loginName"),
    "sandbox": ("account",),
}
# The fee assumed for the cap before the gateway's bill says it: 1 %, rounded up.
FEE_ESTIMATE_BP = 100
JOB_SEND = "job:send_splits"
JOB_POLL = "job:poll_splits"
_ACCOUNT = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")


class SplitInstructionNotFound(NotFound):
    code = "split_instruction_not_found"


# -- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayAccountView:
    public_id: str
    party: str
    gateway: str
    account: str
    kind: str
    status: str
    actor: str
    created_at: datetime
    retired_at: datetime | None
    # Whether the platform holds the merchant's authorisation at the
    # gateway (Alipay's app_auth_token; the token itself is never shown).
    authorized: bool = False
    # Whether the account can collect the party's sales as payee.
    payee: bool = False


@dataclass(frozen=True)
class ReceiverView:
    party: str
    account: str | None
    kind: str | None
    amount_minor: int
    result: str
    fail_reason: str | None
    entry_id: str | None
    documents: tuple[str, ...]


@dataclass(frozen=True)
class InstructionView:
    public_id: str             # also the out_order_no the gateway knows it by
    kind: str
    gateway: str
    payment: str
    transaction_id: str
    order: str
    payee: str
    currency: str
    amount_minor: int
    state: str
    reason: str | None
    last_error: str | None
    attempts: int
    gateway_order_id: str | None
    fee_minor: int | None
    fee_source: str | None
    cap_minor: int | None
    retry_of: str | None
    retried_by: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    receivers: tuple[ReceiverView, ...]

    @property
    def out_order_no(self) -> str:
        return self.public_id


@dataclass(frozen=True)
class EventView:
    from_state: str | None
    to_state: str
    actor: str
    note: str
    entry_id: str | None
    at: datetime


def _account_view(session: Session, row: PartyGatewayAccount) -> GatewayAccountView:
    authorized = row.gateway in sub_merchants.AUTHORIZED and \
        sub_merchants.authorization(session, row.gateway, row.account) is not None
    return GatewayAccountView(row.public_id, row.party, row.gateway, row.account, row.kind,
                              row.status, row.actor, as_utc(row.created_at),
                              as_utc(row.retired_at) if row.retired_at else None,
                              authorized=authorized,
                              payee=sub_merchants.can_collect(session, row.gateway, row.account,
                                                              row.kind, authorized))


def _receiver_view(row: SplitReceiver) -> ReceiverView:
    return ReceiverView(row.party, row.account, row.kind, row.amount_minor, row.result,
                        row.fail_reason, row.entry_id, tuple(row.shares))


def _views(session: Session, rows: Sequence[SplitInstruction]) -> list[InstructionView]:
    """Views of instructions with their receivers, in one more query."""
    receivers: dict[int, list[ReceiverView]] = {}
    if rows:
        for r in session.scalars(select(SplitReceiver).where(
                SplitReceiver.instruction_id.in_([row.id for row in rows]))
                .order_by(SplitReceiver.id)):
            receivers.setdefault(r.instruction_id, []).append(_receiver_view(r))
    return [InstructionView(
        row.public_id, row.kind, row.gateway, row.payment, row.transaction_id, row.order_ref,
        row.payee, row.currency, row.amount_minor, row.state, row.reason, row.last_error,
        row.attempts, row.gateway_order_id, row.fee_minor, row.fee_source, row.cap_minor,
        row.retry_of, row.retried_by, row.created_by, as_utc(row.created_at),
        as_utc(row.updated_at), tuple(receivers.get(row.id, ()))) for row in rows]


# -- accounts at gateways ------------------------------------------------------------------------


def register_gateway_account(session: Session, party: str, *, gateway: Any, account: Any,
                             kind: Any, actor: str, app_auth_token: Any = None,
                             now: datetime | None = None) -> GatewayAccountView:
    """``party``'s account at ``gateway`` from now on (``party`` may be
    ``platform``, for the platform's own split legs); the previous one is
    retired. Registering the same account again changes nothing (but a new
    ``app_auth_token``, which replaces the one kept). From now on the
    party's split legs are paid into this account and, when it is a
    merchant that can collect there (``sub_merchants``; the answer's
    ``payee``), its sales paid through the gateway are collected in its
    name. ``app_auth_token`` (Alipay ``userId`` only): the token the
    seller's authorisation of the platform's app gave; kept for the
    gateway, never shown (audit rows name it masked)."""
    if party != PLATFORM:
        party = party_row(session, party).code
    if gateway not in SPLIT_GATEWAYS:
        raise InvalidInput(f"gateway must be one of {', '.join(SPLIT_GATEWAYS)}", field="gateway")
    if kind not in SPLIT_GATEWAYS[gateway]:
        raise InvalidInput(f"{gateway} accounts are of kind "
                           f"{' or '.join(SPLIT_GATEWAYS[gateway])}", field="kind")
    if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
        raise InvalidInput("account must be 1-64 letters, digits or _ . @ + -", field="account")
    token = sub_merchants.check_token(gateway, kind, app_auth_token)
    now = now or utcnow()
    current = session.scalars(select(PartyGatewayAccount).where(
        PartyGatewayAccount.party == party, PartyGatewayAccount.gateway == gateway,
        PartyGatewayAccount.status == "active").with_for_update()).one_or_none()
    authorized = token is not None and sub_merchants.authorize(session, gateway, account, token,
                                                               actor=actor, now=now)
    if current is not None and (current.account, current.kind) == (account, kind):
        if authorized:
            audit.record(session, actor=actor, action="gateway_account.authorized",
                         subject_type="party", subject=party,
                         details={"gateway_account": current.public_id, "gateway": gateway,
                                  "account": account, "app_auth_token": sub_merchants.mask(token)})
        return _account_view(session, current)
    if current is not None:
        current.status, current.retired_at = "retired", now
        session.flush()
    row = PartyGatewayAccount(public_id=f"pga_{new_uuid7().hex}", party=party, gateway=gateway,
                              account=account, kind=kind, status="active", created_at=now,
                              actor=actor)
    session.add(row)
    session.flush()
    details = {"gateway_account": row.public_id, "gateway": gateway, "account": account,
               "kind": kind, "retired": current.public_id if current else None}
    if token is not None:
        details["app_auth_token"] = sub_merchants.mask(token)
    audit.record(session, actor=actor, action="gateway_account.registered", subject_type="party",
                 subject=party, details=details)
    return _account_view(session, row)


def gateway_accounts(session: Session, party: str) -> list[GatewayAccountView]:
    """A party's accounts at gateways, the active ones first, newest first."""
    rows = session.scalars(select(PartyGatewayAccount).where(PartyGatewayAccount.party == party)
                           .order_by(PartyGatewayAccount.status, PartyGatewayAccount.id.desc()))
    return [_account_view(session, r) for r in rows]


def payee_account_for(session: Session, party: str, gateway: str) -> PartyGatewayAccount | None:
    """The party's active account at ``gateway``, if it has one (whether it
    can collect as payee or only receive splits: ``collecting_account``)."""
    if gateway not in SPLIT_GATEWAYS:
        return None
    return session.scalars(select(PartyGatewayAccount).where(
        PartyGatewayAccount.party == party, PartyGatewayAccount.gateway == gateway,
        PartyGatewayAccount.status == "active")).one_or_none()


def collecting_account(session: Session, party: str, gateway: str) -> PartyGatewayAccount | None:
    """The party's active account at ``gateway`` if it is a merchant that can
    collect the party's sales in its own name there (``sub_merchants``);
    None otherwise (a ``PERSONAL_OPENID``, an Alipay ``loginName`` or
    ``userId`` without the seller's authorisation: splits only)."""
    account = payee_account_for(session, party, gateway)
    if account is None or not sub_merchants.can_collect(session, gateway, account.account,
                                                        account.kind):
        return None
    return account


# -- planning ------------------------------------------------------------------------------------


def _adapter(adapters: Mapping[str, Any], gateway: str) -> SplitGateway | None:
    adapter = adapters.get(gateway)
    return adapter if isinstance(adapter, SplitGateway) else None


def _room(leg: ClearingShare) -> int:
    return leg.amount_minor - leg.clawed_minor


def _fee(payment: Payment) -> tuple[int, str]:
    """The fee the cap is checked with: the bill's, else the estimate
    (rounded up, so the cap is rounded the safe way)."""
    if payment.fee_minor is not None:
        return payment.fee_minor, "bill"
    return -(-payment.amount_minor * FEE_ESTIMATE_BP // 10_000), "estimate"


def _already_split(session: Session, payment: str, exclude: int) -> int:
    """What the payment's earlier split instructions paid away or may still
    pay (pending in one created or processing)."""
    total = session.scalar(select(func.coalesce(func.sum(SplitReceiver.amount_minor), 0))
                           .join(SplitInstruction,
                                 SplitInstruction.id == SplitReceiver.instruction_id)
                           .where(SplitInstruction.payment == payment,
                                  SplitInstruction.kind == "split",
                                  SplitInstruction.id != exclude,
                                  or_(SplitReceiver.result == "success",
                                      (SplitReceiver.result == "pending")
                                      & SplitInstruction.state.in_(sorted(LIVE)))))
    return int(total or 0)


def _event(session: Session, row: SplitInstruction, before: str | None, actor: str, note: str,
           entry_id: str | None = None, details: dict[str, Any] | None = None) -> None:
    session.add(SplitInstructionEvent(instruction_id=row.id, from_state=before,
                                      to_state=row.state, actor=actor[:80], note=note[:500],
                                      entry_id=entry_id, at=utcnow(), details=details or {}))


def _move(session: Session, row: SplitInstruction, action: str, actor: str, note: str, *,
          reason: str | None = None, details: dict[str, Any] | None = None) -> None:
    """The one way an instruction changes state (``clearing.split_states``),
    recorded as an event; a state that needs finance is logged as an error."""
    before = row.state
    row.state, row.updated_at = next_state(before, action), utcnow()
    if reason is not None:
        row.reason = reason[:500]
    _event(session, row, before, actor, note, details=details)
    if row.state in ATTENTION:
        log.error("split instruction %s of payment %s is %s: %s", row.public_id, row.payment,
                  row.state, row.reason, extra={"instruction": row.public_id,
                                                "payment": row.payment, "state": row.state})


def _plan(session: Session, payment: Payment, kind: str, legs: Sequence[ClearingShare], *,
          ratio, actor: str, now: datetime, retry_of: str | None = None) -> SplitInstruction:
    """One instruction for ``legs`` of ``payment``: its receivers (one per
    party), the legs taken up by it, the cap checked for a split; blocked
    with the reason when it cannot be sent."""
    row = SplitInstruction(
        public_id=f"spi_{new_uuid7().hex}", kind=kind, gateway=payment.gateway,
        payment=payment.public_id, transaction_id=payment.transaction_id,
        order_ref=payment.reference, payee=payment.payee, currency=payment.currency,
        amount_minor=0, state="created", attempts=0, retry_of=retry_of, created_by=actor,
        created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    by_party: dict[str, list[ClearingShare]] = {}
    for leg in sorted(legs, key=lambda leg: leg.id):
        by_party.setdefault(leg.recipient, []).append(leg)
        leg.split_instruction = row.public_id
    problems: list[str] = []
    receivers: list[SplitReceiver] = []
    for party, mine in by_party.items():
        if kind == "finish":
            account, account_kind = payment.payee_account, payment.payee_account_kind
        else:
            registered = payee_account_for(session, party, payment.gateway)
            account, account_kind = ((registered.account, registered.kind) if registered
                                     else (None, None))
        if account is None:
            problems.append(f"{party} has no account registered at {payment.gateway}")
        receivers.append(SplitReceiver(
            public_id=f"spr_{new_uuid7().hex}", instruction_id=row.id, party=party,
            account=account, kind=account_kind, amount_minor=sum(_room(leg) for leg in mine),
            result="pending", shares=[leg.public_id for leg in mine], updated_at=now))
    accounts = Counter((r.kind, r.account) for r in receivers if r.account)
    problems += [f"{', '.join(r.party for r in receivers if (r.kind, r.account) == key)} "
                 f"share the account {key[1]}" for key, n in accounts.items() if n > 1]
    row.amount_minor = sum(r.amount_minor for r in receivers)
    session.add_all(receivers)
    session.flush()
    if kind == "split" and not problems:
        problems += _over_cap(session, row, payment, receivers, ratio)
    _event(session, row, None, actor, f"{kind} of {row.amount_minor} {row.currency} planned"
           + (f" (retry of {retry_of})" if retry_of else ""))
    if problems:
        _move(session, row, "block", actor, "not sent: " + "; ".join(problems),
              reason="; ".join(problems))
    return row


def _over_cap(session: Session, row: SplitInstruction, payment: Payment,
              receivers: Sequence[SplitReceiver], ratio) -> list[str]:
    """Why the split would be over the gateway's cap, cumulatively for the
    payment (``payments.split.check_caps``), or nothing."""
    paid = payment.amount_minor - payment.refunded_minor
    fee, source = _fee(payment)
    fee = min(fee, paid)
    row.fee_minor, row.fee_source, row.cap_minor = fee, source, split_cap(paid, fee, ratio)
    specs = [ReceiverSpec(r.account, r.kind, r.amount_minor, _description(row))
             for r in receivers]
    try:
        check_caps(paid, fee, specs, ratio,
                   already_split_minor=_already_split(session, payment.public_id, row.id))
    except SplitRefused as refused:
        return [f"{refused.code}: {refused}"]
    return []


def _description(row: SplitInstruction) -> str:
    if row.kind == "finish":
        return f"release the rest of order {row.order_ref}"
    return f"split of order {row.order_ref}"


def plan_splits(session: Session, adapters: Mapping[str, Any], *, now: datetime | None = None,
                tz: ZoneInfo = clearings.BUSINESS_TZ, limit: int = 500,
                actor: str = JOB_SEND) -> Counter:
    """The first step of the send job: due carried legs become split
    instructions (one per payment), and payments whose other legs are all
    carried get their finish. Safe to rerun: a leg taken up by an
    instruction is never planned again."""
    now = as_utc(now) if now is not None else utcnow()
    outcome: Counter = Counter()
    clearings.date_waiting(session, tz=tz, limit=limit)
    # The payee's own legs wait for the finish, not for a split.
    due = list(session.scalars(select(ClearingShare).join(
        Payment, Payment.public_id == ClearingShare.carrier_payment).where(
        ClearingShare.carried_by.is_not(None), ClearingShare.carried_at.is_(None),
        ClearingShare.split_instruction.is_(None), ClearingShare.release_at <= now,
        ClearingShare.clawed_minor < ClearingShare.amount_minor,
        ClearingShare.recipient != Payment.payee)
        .order_by(ClearingShare.id).limit(limit).with_for_update(skip_locked=True,
                                                                  of=ClearingShare)))
    payments = _payments(session, {leg.carrier_payment for leg in due})
    by_payment: dict[str, list[ClearingShare]] = {}
    for leg in due:
        by_payment.setdefault(leg.carrier_payment, []).append(leg)
    for public_id, legs in by_payment.items():
        payment = payments[public_id]
        adapter = _adapter(adapters, payment.gateway)
        if adapter is None:
            log.warning("payment %s: gateway %s has no split product enabled here; its legs "
                        "wait", public_id, payment.gateway, extra={"payment": public_id})
            outcome["no_gateway"] += 1
            continue
        row = _plan(session, payment, "split", legs, ratio=adapter.max_split_ratio, actor=actor,
                    now=now)
        outcome["blocked" if row.state == "blocked" else "planned"] += 1
    outcome["finishes"] += _plan_finishes(session, now=now, actor=actor, limit=limit)
    session.flush()
    return outcome


def _payments(session: Session, public_ids: set[str | None]) -> dict[str, Payment]:
    ids = sorted(p for p in public_ids if p)
    if not ids:
        return {}
    return {p.public_id: p for p in session.scalars(select(Payment).where(
        Payment.public_id.in_(ids)))}


def _plan_finishes(session: Session, *, now: datetime, actor: str, limit: int) -> int:
    """A finish for each payment whose non-payee legs are all carried and
    whose payee's own legs are all due (their timing protects the buyer as
    it does in custody); and, once, for each payment whose payee has no leg
    left (the rule gave it nothing, or refunds took all it had) and whose
    other legs are all carried: that finish releases what the gateway still
    holds (what a fee or rounding left) and posts nothing. Not while a
    refund is unwinding a split of the payment."""
    other = aliased(ClearingShare)
    still_owed = select(other.id).where(
        other.carrier_payment == ClearingShare.carrier_payment, other.recipient != Payment.payee,
        other.carried_at.is_(None), other.clawed_minor < other.amount_minor).exists()
    candidates = set(session.scalars(
        select(ClearingShare.carrier_payment).join(
            Payment, Payment.public_id == ClearingShare.carrier_payment)
        .where(ClearingShare.carried_by.is_not(None), ClearingShare.carried_at.is_(None),
               ClearingShare.split_instruction.is_(None),
               ClearingShare.recipient == Payment.payee, ClearingShare.release_at <= now,
               ClearingShare.clawed_minor < ClearingShare.amount_minor, ~still_owed)
        .distinct().limit(limit)))
    candidates |= _payee_without_legs(session, limit=limit)
    payments, planned = _payments(session, candidates), 0
    held_back = split_returns.unsettled(session, sorted(payments))
    for public_id in sorted(payments):
        if public_id in held_back:      # a refund is unwinding a split of it: not the rest yet
            continue
        payment = payments[public_id]
        legs = [leg for leg in session.scalars(select(ClearingShare).where(
            ClearingShare.carrier_payment == public_id).order_by(ClearingShare.id)
            .with_for_update()) if _room(leg) > 0]
        mine = [leg for leg in legs if leg.recipient == payment.payee]
        others = [leg for leg in legs if leg.recipient != payment.payee]
        if any(leg.carried_at is None for leg in others):
            continue
        if mine:
            if any(leg.split_instruction is not None or leg.release_at is None
                   or as_utc(leg.release_at) > now for leg in mine):
                continue
        elif not others or _has_finish(session, public_id):
            # Nothing was split (a refund took it all), or its finish is planned already
            # (read after the legs' locks: a concurrent run's finish is seen).
            continue
        _plan(session, payment, "finish", mine, ratio=None, actor=actor, now=now)
        planned += 1
    return planned


def _payee_without_legs(session: Session, *, limit: int) -> set[str]:
    """Payments a split was carried out for, with no finish yet, whose
    payee has no leg left and whose other legs are all carried (so that
    payments still waiting for a leg never fill the page):
    ``_plan_finishes`` checks them again under the legs' locks."""
    finish, leg = aliased(SplitInstruction), aliased(ClearingShare)
    left = select(leg.id).where(leg.carrier_payment == SplitInstruction.payment,
                                leg.clawed_minor < leg.amount_minor)
    return set(session.scalars(
        select(SplitInstruction.payment).where(
            SplitInstruction.kind == "split", SplitInstruction.state == "succeeded",
            ~select(finish.id).where(finish.payment == SplitInstruction.payment,
                                     finish.kind == "finish").exists(),
            ~left.where(leg.recipient == SplitInstruction.payee).exists(),
            ~left.where(leg.carried_at.is_(None)).exists())
        .distinct().limit(limit)))


def _has_finish(session: Session, payment: str) -> bool:
    """Whether any finish was ever planned for the payment (a blocked,
    refused or failed one waits for finance's retry, never a second plan)."""
    return session.scalar(select(SplitInstruction.id).where(
        SplitInstruction.payment == payment, SplitInstruction.kind == "finish").limit(1)) \
        is not None


# -- sending and outcomes ------------------------------------------------------------------------


def _sub_merchant(session: Session, payments: Mapping[str, Payment],
                  row: SplitInstruction) -> sub_merchants.SubMerchant | None:
    payment = payments.get(row.payment)
    return sub_merchants.of_payment(session, payment) if payment is not None else None


def _receivers(session: Session, row: SplitInstruction) -> list[SplitReceiver]:
    return list(session.scalars(select(SplitReceiver).where(
        SplitReceiver.instruction_id == row.id).order_by(SplitReceiver.id)))


def _refusal(refused: SplitRefused) -> str:
    if isinstance(refused, GatewayRefused):
        return f"{refused.vendor_code}: {refused.vendor_message}"
    return f"{refused.code}: {refused}"


def send_planned(session: Session, adapters: Mapping[str, Any], *, limit: int = 200,
                 actor: str = JOB_SEND, now: datetime | None = None) -> Counter:
    """The second step of the send job: created instructions go to their
    gateway, each under its own ``out_order_no`` (sending again after an
    outage is safe: the gateway answers a known id with its first answer)."""
    outcome: Counter = Counter()
    rows = list(session.scalars(select(SplitInstruction).where(
        SplitInstruction.state == "created").order_by(SplitInstruction.id).limit(limit)
        .with_for_update(skip_locked=True)))
    payments = _payments(session, {row.payment for row in rows})
    for row in rows:
        adapter = _adapter(adapters, row.gateway)
        if adapter is None:
            outcome["no_gateway"] += 1
            continue
        row.attempts += 1
        receivers = _receivers(session, row)
        # The payment's sub-merchant pays the split (the one it was collected for).
        payer = sub_merchants.request_fields(_sub_merchant(session, payments, row))
        try:
            if row.kind == "split":
                result = adapter.split(SplitRequest(row.public_id, row.transaction_id, tuple(
                    ReceiverSpec(r.account, r.kind, r.amount_minor, _description(row))
                    for r in receivers), **payer))
            else:
                result = adapter.finish(FinishRequest(row.public_id, row.transaction_id,
                                                      _description(row), **payer))
        except SplitRefused as refused:     # the gateway's signed no (or a local one)
            reason = _refusal(refused)
            _move(session, row, "refuse", actor, f"refused by {row.gateway}: {reason}",
                  reason=reason)
            outcome["refused"] += 1
            continue
        except GatewayError as down:        # no answer to trust: the same id again later
            row.last_error, row.updated_at = str(down)[:300], utcnow()
            log.warning("split instruction %s not sent: %s", row.public_id, down,
                        extra={"instruction": row.public_id})
            outcome["unavailable"] += 1
            continue
        row.gateway_order_id, row.last_error = result.gateway_order_id, None
        _move(session, row, "send", actor, f"accepted by {row.gateway}",
              details={"gateway_state": result.state})
        _apply(session, row, receivers, result, actor=actor, now=now)
        outcome["sent"] += 1
    session.flush()
    return outcome


def send_splits(session: Session, adapters: Mapping[str, Any], *, now: datetime | None = None,
                tz: ZoneInfo = clearings.BUSINESS_TZ, limit: int = 500,
                actor: str = JOB_SEND) -> Counter:
    """Plan and send in the caller's transaction (the scheduler's job runs
    the two steps in two transactions, see the module docstring)."""
    outcome = plan_splits(session, adapters, now=now, tz=tz, limit=limit, actor=actor)
    outcome.update(send_planned(session, adapters, limit=limit, actor=actor, now=now))
    return outcome


def poll_splits(session: Session, adapters: Mapping[str, Any], *, limit: int = 200,
                actor: str = JOB_POLL, now: datetime | None = None) -> Counter:
    """The polling job: ask the gateway about instructions it is carrying
    out and apply what it says (each receiver's outcome posted once)."""
    outcome: Counter = Counter()
    rows = list(session.scalars(select(SplitInstruction).where(
        SplitInstruction.state == "processing").order_by(SplitInstruction.id).limit(limit)
        .with_for_update(skip_locked=True)))
    payments = _payments(session, {row.payment for row in rows})
    for row in rows:
        adapter = _adapter(adapters, row.gateway)
        if adapter is None:
            outcome["no_gateway"] += 1
            continue
        receivers = _receivers(session, row)
        payer = sub_merchants.request_fields(_sub_merchant(session, payments, row))
        try:
            result = adapter.query_split(row.public_id, row.transaction_id, **payer)
        except GatewayRefused as unknown:   # the gateway does not know it: never carried out
            reason = f"the gateway does not know this instruction ({_refusal(unknown)})"
            for receiver in receivers:
                if receiver.result == "pending":
                    receiver.result, receiver.fail_reason = "closed", reason[:200]
            _move(session, row, "fail", actor, reason, reason=reason)
            outcome["failed"] += 1
            continue
        except GatewayError:
            outcome["unavailable"] += 1
            continue
        before = row.state
        _apply(session, row, receivers, result, actor=actor, now=now)
        outcome[row.state if row.state != before else "processing"] += 1
    session.flush()
    return outcome


def _apply(session: Session, row: SplitInstruction, receivers: Sequence[SplitReceiver],
           result: SplitResult, *, actor: str, now: datetime | None) -> None:
    """The gateway's answer about ``row``: each receiver's success posted
    once, each closed receiver kept with the vendor's reason; the
    instruction ends when the gateway is done with every receiver."""
    if result.out_order_no != row.public_id:
        raise RuntimeError(f"{row.gateway} answered about {result.out_order_no}, "
                           f"not {row.public_id}")
    now = as_utc(now) if now is not None else utcnow()
    if row.kind == "finish":
        if result.state == "finished":
            for receiver in receivers:
                if receiver.result == "pending":
                    _carry(session, row, receiver, actor=actor, now=now)
        elif result.state == "failed":
            for receiver in receivers:
                receiver.result, receiver.fail_reason = "closed", "the gateway did not release"
    else:
        answers = {r.account: r for r in result.receivers}
        for receiver in receivers:
            if receiver.result != "pending":
                continue
            answer = answers.get(receiver.account)
            if answer is None:
                if result.state != "processing":
                    receiver.result, receiver.fail_reason = "closed", "not in the gateway's answer"
            elif answer.result == "success" and answer.amount_minor != receiver.amount_minor:
                row.reason = (f"{row.gateway} reports {receiver.account} paid "
                              f"{answer.amount_minor}, not {receiver.amount_minor}: finance "
                              "must look")[:500]
                log.error("split instruction %s: %s", row.public_id, row.reason,
                          extra={"instruction": row.public_id})
            elif answer.result == "success":
                _carry(session, row, receiver, actor=actor, now=now)
            elif answer.result == "closed":
                receiver.result = "closed"
                receiver.fail_reason = (answer.fail_reason or "closed by the gateway")[:200]
                receiver.updated_at = now
    if result.state == "processing" or any(r.result == "pending" for r in receivers):
        return
    closed = [r for r in receivers if r.result == "closed"]
    if not closed and result.state != "failed":
        _move(session, row, "succeed", actor, f"carried out by {row.gateway}")
        return
    reason = "; ".join(f"{r.party} ({r.account}): {r.fail_reason}" for r in closed) or \
        f"{row.gateway} failed it"
    _move(session, row, "fail", actor, f"not paid: {reason}", reason=reason)


def _carry(session: Session, row: SplitInstruction, receiver: SplitReceiver, *, actor: str,
           now: datetime) -> None:
    """Post a receiver's success once (keyed by the receiver) and mark its
    legs carried."""
    held = payee_held_account(row.gateway)
    if receiver.party == PLATFORM:
        debit = platform_gateway_account(row.gateway)
        ensure(session, debit, f"Platform's money at {row.gateway}", "asset", row.currency)
    else:
        debit = pending_account(receiver.party)
    entry = ledger.post_entry(session, EntryRequest(
        code="split.paid" if row.kind == "split" else "split.finish",
        description=f"{_description(row)}: {receiver.party} via {row.gateway}",
        idempotency_key=f"{receiver.public_id}:paid",
        metadata={"instruction": row.public_id, "payment": row.payment, "order": row.order_ref,
                  "party": receiver.party, "gateway": row.gateway,
                  "documents": list(receiver.shares)},
        postings=[PostingLine(debit, "debit", receiver.amount_minor, row.currency),
                  PostingLine(held, "credit", receiver.amount_minor, row.currency)]))
    receiver.result, receiver.entry_id, receiver.updated_at = "success", entry.id, now
    for leg in session.scalars(select(ClearingShare).where(
            ClearingShare.public_id.in_(list(receiver.shares))).with_for_update()):
        leg.carried_at, leg.carry_entry_id = now, entry.id
        if leg.state == "pending":
            leg.state, leg.released_at = "released", now
    _event(session, row, row.state, actor,
           f"{receiver.party} paid {receiver.amount_minor} at {row.gateway}", entry.id)


# -- finance -------------------------------------------------------------------------------------


def _locked(session: Session, instruction: str) -> SplitInstruction:
    row = session.scalars(select(SplitInstruction).where(
        SplitInstruction.public_id == instruction).with_for_update()).one_or_none()
    if row is None:
        raise SplitInstructionNotFound(f"no split instruction {instruction!r}",
                                       field="instruction")
    return row


def retry_instruction(session: Session, instruction: str, adapters: Mapping[str, Any], *,
                      actor: str, note: str = "",
                      now: datetime | None = None) -> InstructionView:
    """Finance retries a blocked, refused or failed instruction: a *new*
    instruction (a new ``out_order_no``) takes up the legs it still owes,
    with accounts and the cap checked again (register the missing account
    first); the old one is ``retried``, once. The send job sends it."""
    row = _locked(session, instruction)
    next_state(row.state, "retry")          # names the illegal move before anything changes
    if note is not None and (not isinstance(note, str) or len(note) > 200):
        raise InvalidInput("note must be at most 200 characters", field="note")
    legs = [leg for leg in session.scalars(select(ClearingShare).where(
        ClearingShare.split_instruction == row.public_id, ClearingShare.carried_at.is_(None))
        .order_by(ClearingShare.id).with_for_update()) if _room(leg) > 0]
    # A finish of a payee without legs took none up: its retry is again a finish of none.
    payee_without_legs = row.kind == "finish" and session.scalar(
        select(ClearingShare.id).where(ClearingShare.split_instruction == row.public_id)
        .limit(1)) is None
    if not legs and not payee_without_legs:
        raise InvalidInput("nothing this instruction took up is still owed",
                           field="instruction")
    ratio = None
    if row.kind == "split":
        adapter = _adapter(adapters, row.gateway)
        if adapter is None:
            raise InvalidInput(f"gateway {row.gateway} has no split product enabled here",
                               field="instruction")
        ratio = adapter.max_split_ratio
    payment = session.scalars(select(Payment).where(Payment.public_id == row.payment)).one()
    for leg in legs:
        leg.split_instruction = None
    now = as_utc(now) if now is not None else utcnow()
    new = _plan(session, payment, row.kind, legs, ratio=ratio, actor=actor, now=now,
                retry_of=row.public_id)
    row.retried_by = new.public_id
    _move(session, row, "retry", actor, (note or "").strip() or f"retried as {new.public_id}")
    audit.record(session, actor=actor, action="split_instruction.retried",
                 subject_type="split_instruction", subject=row.public_id,
                 details={"new": new.public_id, "state": new.state,
                          "amount_minor": new.amount_minor})
    session.flush()
    return _views(session, [new])[0]


# -- reading -------------------------------------------------------------------------------------


def get_instruction(session: Session, instruction: str) -> InstructionView:
    row = session.scalars(select(SplitInstruction).where(
        SplitInstruction.public_id == instruction)).one_or_none()
    if row is None:
        raise SplitInstructionNotFound(f"no split instruction {instruction!r}",
                                       field="instruction")
    return _views(session, [row])[0]


def instruction_events(session: Session, instruction: str) -> list[EventView]:
    row = session.scalars(select(SplitInstruction).where(
        SplitInstruction.public_id == instruction)).one_or_none()
    if row is None:
        raise SplitInstructionNotFound(f"no split instruction {instruction!r}",
                                       field="instruction")
    return [EventView(e.from_state, e.to_state, e.actor, e.note, e.entry_id, as_utc(e.at))
            for e in session.scalars(select(SplitInstructionEvent).where(
                SplitInstructionEvent.instruction_id == row.id)
                .order_by(SplitInstructionEvent.id))]


def involves(view: InstructionView, party: str) -> bool:
    """The payee's and every receiver's instruction."""
    return view.payee == party or any(r.party == party for r in view.receivers)


def list_instructions(session: Session, *, party: str | None = None, state: str | None = None,
                      attention: bool = False, gateway: str | None = None,
                      order: str | None = None, payment: str | None = None,
                      after: str | None = None,
                      limit: int = 100) -> tuple[list[InstructionView], str | None]:
    """Newest first; ``party``: those it is payee or a receiver of;
    ``attention``: those waiting for finance (blocked, refused, failed);
    ``after`` is the cursor (the last instruction id seen)."""
    query = select(SplitInstruction)
    if party is not None:
        query = query.where(or_(SplitInstruction.payee == party, SplitInstruction.id.in_(
            select(SplitReceiver.instruction_id).where(SplitReceiver.party == party))))
    if state is not None:
        if state not in STATES:
            raise InvalidInput(f"unknown split instruction state {state!r}", field="state")
        query = query.where(SplitInstruction.state == state)
    if attention:
        query = query.where(SplitInstruction.state.in_(sorted(ATTENTION)))
    for column, value in ((SplitInstruction.gateway, gateway),
                          (SplitInstruction.order_ref, order),
                          (SplitInstruction.payment, payment)):
        if value is not None:
            query = query.where(column == value)
    rows, cursor = pages.page(session, query, SplitInstruction, after=after, limit=limit,
                              noun="an instruction")
    return _views(session, rows), cursor
