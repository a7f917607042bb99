"""Clearing an order's cash (issue 6, first part): when cash for an order
arrives in its escrow (the cash parts of its plan once it is paid: prepaid,
offline transfer, gateway; a credit repayment as it arrives), the clearing
rule chosen for the order and the method (``clearing_rules``) splits it
into legs, and each leg moves from the escrow to its recipient:

* a party: Dr ``order:O:escrow`` / Cr ``party:X:pending``, released to
  ``party:X:wallet`` when its timing fires (at once, on delivery, or T+N
  business days after delivery or payment, by the business calendar);
* the platform: Dr ``order:O:escrow`` / Cr ``platform:revenue``.

Each leg is a ``ClearingShare`` row: the inter-party document (who is owed
how much, for which order, by which rule). Rebate and credit value are never
cleared: only cash. With no rule for an order (or a leg whose recipient
cannot be named), nothing is cleared and the cash stays in the escrow.

A refund claws back, before the refund takes cash out of the escrow, what
the escrow lacks: from the cleared legs in proportion to what each still
holds; from pending first, then the wallet. A wallet that has paid out
cannot give back: the refund is refused with ``clawback_blocked``, naming
each party short and by how much, until finance approves an advance of the
difference (``clawback_advances``) and the refund is retried.

Cash a gateway collected with the seller as payee (``Payment.payee_account``)
never comes to the custody account: its legs are cleared the same way (the
obligation is recorded: escrow to pending and revenue, documents written)
but marked ``carried_by = gateway:G``. The release job leaves them alone;
split instructions to the gateway carry them (``split_instructions``). A
refund that needs cash back from such a leg a split paid to its receiver
asks the gateway for split returns and is refused with
``split_return_pending`` until they bring the money back to pending
(``split_returns``); one that needs it from a leg an instruction took up
and has not carried out, or that a finish released to the payee, is
refused with ``clawback_blocked``, for finance.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, time, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import ledger
from clearing.models import ClearingRule, ClearingShare
from clearing.split import Timing
from ledger import EntryRequest, PostingLine, as_utc, new_uuid7, prepared, utcnow
from ledger.models import JournalEntry
from payments.models import Payment, PaymentRefund

from . import business_calendar, clearing_rules, refunds
from .books import (BRAND_SHARDS, PLATFORM_REVENUE, ensure, ensure_platform_revenue,
                    escrow_account, pending_account, wallet_account)
from .errors import ChannelError, InvalidInput
from .models import Order, OrderEvent, Party

BUSINESS_TZ = ZoneInfo("Asia/Shanghai")
log = logging.getLogger(__name__)


class ClawbackBlocked(ChannelError):
    """A refund needs cash back from a recipient's wallet that no longer has
    it; finance must decide (``details`` names the party and the amount)."""

    code = "clawback_blocked"
    http_status = 409


_ANY_RULE = select(ClearingRule.id).limit(1)  # built once: every paid order asks


def clear_cash(session: Session, order: Order, *, amount_minor: int, method: str,
               cause: str, now: datetime | None = None, tz: ZoneInfo = BUSINESS_TZ,
               any_rule: bool | None = None) -> int:
    """Clear ``amount_minor`` of cash that arrived for ``order`` by
    ``method``; once per ``cause``. Returns how much was cleared (0: no rule,
    or a recipient that cannot be named: the cash stays in the escrow).
    ``any_rule``: whether any clearing rule exists, when the caller has
    asked already (None: asked here)."""
    if amount_minor <= 0 or any_rule is False:
        return 0
    if any_rule is None and not prepared.rows(session.connection(), "cl_any_clearing_rule",
                                              _ANY_RULE, {}):
        return 0  # no rules at all: the common case of a network not clearing yet
    if session.scalar(select(JournalEntry.id).where(
            JournalEntry.idempotency_key == f"clear:{cause}").limit(1)) is not None:
        return 0   # cleared before (the journal's key is indexed; the documents' cause is not)
    now = now or utcnow()
    try:
        preview = clearing_rules.explain_for_order(session, order.public_id, method, at=now,
                                                   cash_minor=amount_minor)
    except InvalidInput as why:  # no trade mode or method for it: the cash waits in escrow
        log.warning("order %s not cleared: %s", order.public_id, why,
                    extra={"order": order.public_id})
        return 0
    legs = [(part, share) for part in preview.parts if part.rule and not part.problem
            for share in part.shares if share.amount_minor]
    if not legs or any(share.party is None for _, share in legs) or \
            any(part.rule is None or part.problem for part in preview.parts):
        return 0
    ccy, escrow = order.currency, escrow_account(order.public_id)
    postings, rows, calendar = [], [], _calendar(session)
    carried_by, carrier_payment = _carrier(session, order, cause)
    for part, share in legs:
        if share.party == clearing_rules.PLATFORM:
            account = ensure_platform_revenue(session, ccy)
        else:
            account = pending_account(share.party)
            _open_party_accounts(session, share.party, ccy)
        postings.append(PostingLine(account, "credit", share.amount_minor, ccy))
        rows.append(ClearingShare(
            public_id=f"doc_{new_uuid7().hex}", order_ref=order.public_id,
            seller=preview.seller, buyer=preview.buyer, cause=cause, payment_method=method,
            rule_code=part.rule, rule_version=part.rule_version, leg_index=share.leg_index,
            basis=share.basis, recipient=share.party, amount_minor=share.amount_minor,
            clawed_minor=0, currency=ccy, timing_kind=share.timing.kind,
            timing_days=share.timing.days, timing_anchor=share.timing.anchor,
            state="pending", release_at=_release_at(calendar, share.timing, now, None, tz),
            cleared_at=now, carried_by=carried_by, carrier_payment=carrier_payment))
    # One debit of the escrow for the cash cleared, a credit per leg.
    postings.insert(0, PostingLine(escrow, "debit", sum(row.amount_minor for row in rows), ccy))
    result = ledger.post_entries(session, [EntryRequest(
        code="order.clear", description=f"clearing of {order.public_id} ({method})",
        idempotency_key=f"clear:{cause}", metadata={"order": order.public_id, "cause": cause},
        postings=postings)], atomic=True)[0]
    if result.replayed:   # a concurrent transaction cleared this cause first: its documents stand
        return 0
    entry = result.entry
    for row in rows:
        row.entry_id = entry.id
        if row.recipient == clearing_rules.PLATFORM:  # revenue: nothing to release
            row.state, row.released_at = "released", now
    session.add_all(rows)
    session.flush()
    release_due(session, now=now, order=order.public_id, tz=tz)
    return sum(row.amount_minor for row in rows)


def _carrier(session: Session, order: Order, cause: str) -> tuple[str | None, str | None]:
    """Who carries the legs of this cash: ``("gateway:G", payment)`` for an
    order's gateway part collected with the seller as payee at G (the money
    is at G, in the seller's name); ``(None, None)``: the custody account."""
    if cause != f"{order.public_id}:gateway":
        return None, None
    row = session.execute(select(Payment.gateway, Payment.public_id).where(
        Payment.reference == order.public_id, Payment.purpose == "order",
        Payment.state == "succeeded", Payment.payee_account.is_not(None)).limit(1)).first()
    return (f"gateway:{row.gateway}", row.public_id) if row is not None else (None, None)


def _open_party_accounts(session: Session, party: str, currency: str) -> None:
    """A party's pending and wallet accounts; the brand's take a leg of
    almost every order, so they are opened with several balance shards."""
    row = session.scalars(select(Party).where(Party.code == party)).one()
    shards = BRAND_SHARDS if row.role == "brand" else 1
    ensure(session, pending_account(party), f"Pending for {party}", "liability", currency,
           owner=party, min_balance=0, shards=shards)
    ensure(session, wallet_account(party), f"Wallet of {party}", "liability", currency,
           owner=party, min_balance=0, shards=shards)


def _calendar(session: Session) -> Callable[[], business_calendar.BusinessCalendar]:
    """The business calendar, read once per use case and only if a T+N leg
    needs it."""
    loaded: list = []

    def get():
        if not loaded:
            loaded.append(business_calendar.calendar(session))
        return loaded[0]
    return get


def _release_at(calendar: Callable[[], business_calendar.BusinessCalendar], timing,
                now: datetime, delivered: datetime | None, tz: ZoneInfo) -> datetime | None:
    """When a leg may move to the wallet; None: on a delivery to come."""
    if timing.kind == "immediate":
        return now
    anchor = delivered if timing.kind == "on_delivery" or timing.anchor == "delivery" \
        else now
    if anchor is None:
        return None
    if timing.kind == "on_delivery":
        return anchor
    day = calendar().add_business_days(anchor.astimezone(tz).date(), timing.days)
    # In UTC: SQLite keeps a datetime's clock time and drops its offset.
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(timezone.utc)


def release_due(session: Session, *, now: datetime | None = None, order: str | None = None,
                tz: ZoneInfo = BUSINESS_TZ, limit: int = 1000) -> int:
    """The release job (and each clearing, for its own order): legs whose
    time has come move from pending to the wallet; legs waiting for a
    delivery that has happened get their date first. Legs a gateway carries
    (``carried_by``) are dated but never released here: their cash is not
    in custody (``split_instructions`` carries them). Returns legs released."""
    now = now or utcnow()
    date_waiting(session, order=order, tz=tz, limit=limit)
    due = select(ClearingShare).where(ClearingShare.state == "pending",
                                      ClearingShare.release_at <= now,
                                      ClearingShare.carried_by.is_(None))
    if order is not None:
        due = due.where(ClearingShare.order_ref == order)
    released = 0
    # Locked (skipping rows a refund's clawback holds: released next time),
    # so a clawback committing meanwhile cannot be released over.
    for row in session.scalars(due.order_by(ClearingShare.id).limit(limit)
                               .with_for_update(skip_locked=True)):
        amount = row.amount_minor - row.clawed_minor
        if amount:
            row.release_entry_id = ledger.post_entry(session, EntryRequest(
                code="clearing.release", idempotency_key=f"{row.public_id}:release",
                metadata={"order": row.order_ref, "document": row.public_id},
                postings=[PostingLine(pending_account(row.recipient), "debit", amount,
                                      row.currency),
                          PostingLine(wallet_account(row.recipient), "credit", amount,
                                      row.currency)])).id
        row.state, row.released_at = "released", now
        released += 1
    session.flush()
    return released


def date_waiting(session: Session, *, order: str | None = None, tz: ZoneInfo = BUSINESS_TZ,
                 limit: int = 1000) -> int:
    """Legs waiting for a delivery that has happened get their release date
    (custody and gateway-carried legs alike). Returns how many were dated."""
    # Only legs of delivered orders: legs still waiting for their delivery
    # must not fill the page and keep dated legs behind them from the job.
    delivered_orders = (select(Order.public_id).join(OrderEvent, OrderEvent.order_id == Order.id)
                        .where(OrderEvent.to_state == "delivered"))
    waiting = select(ClearingShare).where(ClearingShare.state == "pending",
                                          ClearingShare.release_at.is_(None),
                                          ClearingShare.order_ref.in_(delivered_orders))
    if order is not None:
        waiting = waiting.where(ClearingShare.order_ref == order)
    rows = list(session.scalars(waiting.order_by(ClearingShare.id).limit(limit)))
    delivered = _delivered_at(session, {row.order_ref for row in rows})
    calendar = _calendar(session)
    dated = 0
    for row in rows:
        if row.order_ref in delivered:
            row.release_at = _release_at(calendar, Timing(row.timing_kind, row.timing_days,
                                                          row.timing_anchor),
                                         as_utc(row.cleared_at), delivered[row.order_ref], tz)
            dated += 1
    session.flush()
    return dated


def _delivered_at(session: Session, orders: set[str]) -> dict[str, datetime]:
    """When each of these orders was delivered (those that were), in one query."""
    if not orders:
        return {}
    rows = session.execute(select(Order.public_id, func.min(OrderEvent.at))
                           .join(Order, Order.id == OrderEvent.order_id)
                           .where(Order.public_id.in_(orders), OrderEvent.to_state == "delivered")
                           .group_by(Order.public_id)).all()
    return {public_id: as_utc(at) for public_id, at in rows}


def claw_back(session: Session, order: Order, amount_minor: int, *, reason: str) -> int:
    """Bring ``amount_minor`` back into the order's escrow from its cleared
    legs, in proportion to what each still holds (pending first, then the
    wallet). Returns how much was clawed back."""
    if amount_minor <= 0:
        return 0
    rows = list(session.scalars(select(ClearingShare).where(
        ClearingShare.order_ref == order.public_id,
        ClearingShare.clawed_minor < ClearingShare.amount_minor)
        .order_by(ClearingShare.id).with_for_update()))
    room = {str(r.id): r.amount_minor - r.clawed_minor for r in rows}
    if amount_minor > sum(room.values()):
        raise ClawbackBlocked("the order's cleared legs hold less than the refund needs",
                              order=order.public_id, needed_minor=amount_minor)
    takes = refunds.allocate(amount_minor, room)
    _check_not_carried(order, rows, takes, session=session, reason=reason)
    ccy, escrow = order.currency, escrow_account(order.public_id)
    _check_wallets(session, order, rows, takes)
    postings = []
    for row in rows:
        take = takes.get(str(row.id), 0)
        if not take:
            continue
        if row.recipient == clearing_rules.PLATFORM:
            source = PLATFORM_REVENUE
        elif row.state == "pending":
            source = pending_account(row.recipient)
        else:
            source = wallet_account(row.recipient)
        postings += [PostingLine(source, "debit", take, ccy),
                     PostingLine(escrow, "credit", take, ccy)]
        row.clawed_minor += take
    done = sum(r.clawed_minor for r in rows)
    try:
        ledger.post_entry(session, EntryRequest(
            code="clearing.clawback", description=reason[:200],
            idempotency_key=f"clawback:{order.public_id}:{done}",
            metadata={"order": order.public_id, "amount_minor": amount_minor},
            postings=postings))
    except ledger.InsufficientFunds as short:
        raise ClawbackBlocked("a recipient's wallet no longer holds what the refund needs "
                              "back; finance must approve the refund another way",
                              order=order.public_id, **short.details) from None
    session.flush()
    return amount_minor


def _check_not_carried(order: Order, rows: list[ClearingShare], takes: dict[str, int], *,
                       session: Session, reason: str) -> None:
    """A leg a gateway carries gives back only what a split return brought
    back to pending (``split_returns``): for the rest of what a split paid
    to a receiver, split returns are asked for and the refund is refused
    with ``split_return_pending`` until they succeed. A leg taken up by an
    instruction not carried out yet, or released to the payee by a finish,
    cannot be unwound that way: refused with ``clawback_blocked``, for
    finance."""
    from . import split_returns   # it builds on this module

    carried = split_returns.check_carried(session, order.public_id, rows, takes, reason=reason)
    if carried:
        raise ClawbackBlocked(
            "the refund needs cash back from clearing legs a gateway split instruction has "
            "taken up and not carried out yet, or released to the payee; a split return cannot "
            "unwind them, finance must handle this refund", order=order.public_id,
            documents=carried)


def _check_wallets(session: Session, order: Order, rows: list[ClearingShare],
                   takes: dict[str, int]) -> None:
    """Refuse, naming every party short and by how much, when released legs
    need more back than their wallets hold (paid out since): finance can then
    advance the difference (``clawback_advances``) and the refund be retried."""
    needed: dict[str, int] = {}
    for row in rows:
        if row.state == "released" and row.recipient != clearing_rules.PLATFORM:
            needed[row.recipient] = needed.get(row.recipient, 0) + takes.get(str(row.id), 0)
    shortfalls = []
    for party, need in sorted(needed.items()):
        try:
            have = ledger.get_account(session, wallet_account(party)).available_minor
        except ledger.AccountNotFound:
            have = 0
        if need > have:
            shortfalls.append({"party": party, "needed_minor": need, "available_minor": have,
                               "short_minor": need - have})
    if shortfalls:
        names = ", ".join(f"{s['party']} is short {s['short_minor']}" for s in shortfalls)
        raise ClawbackBlocked(
            f"the refund needs cash back from wallets that no longer hold it ({names}); "
            "finance can advance it (POST /v1/clawback-advances) and the refund be retried",
            order=order.public_id, shortfalls=shortfalls)


def make_room(session: Session, order: Order, needed_minor: int, *, reason: str) -> None:
    """Before a refund takes ``needed_minor`` from the order's escrow, claw
    back whatever the escrow lacks."""
    try:
        have = ledger.get_account(session, escrow_account(order.public_id)).available_minor
    except ledger.AccountNotFound:
        have = 0
    # Gateway refunds of earlier returns stay in the escrow until the gateway
    # confirms them: that cash is spoken for, not room for this refund.
    have -= int(session.scalar(
        select(func.coalesce(func.sum(PaymentRefund.amount_minor), 0))
        .join(Payment, Payment.id == PaymentRefund.payment_id)
        .where(Payment.reference == order.public_id, Payment.purpose == "order",
               PaymentRefund.state.in_(("requested", "processing")))) or 0)
    if needed_minor > have:
        claw_back(session, order, needed_minor - have, reason=reason)


def documents(session: Session, *, party: str | None = None, order: str | None = None,
              since: datetime | None = None, until: datetime | None = None,
              limit: int = 500) -> list[ClearingShare]:
    """Inter-party documents: a party's (as recipient, seller or buyer) or an
    order's clearing legs, oldest first, in a period."""
    query = select(ClearingShare)
    if party is not None:
        query = query.where((ClearingShare.recipient == party) | (ClearingShare.seller == party)
                            | (ClearingShare.buyer == party))
    if order is not None:
        query = query.where(ClearingShare.order_ref == order)
    if since is not None:
        query = query.where(ClearingShare.cleared_at >= since)
    if until is not None:
        query = query.where(ClearingShare.cleared_at < until)
    return list(session.scalars(query.order_by(ClearingShare.id).limit(limit)))


