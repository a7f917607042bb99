"""Unwinding gateway splits for a refund (issue 6, "with return-orders to
unwind"): when a refund of a payee-collected order needs cash back from
clearing legs a split instruction already paid to a receiver (the leg is
*carried*: its money is in the receiver's account at the gateway, not in
pending), the receiver must first give it back to the payee at the gateway
(WeChat Pay ``/v3/profitsharing/return-orders``, the sandbox's
``/split-returns``).

What a refund does
------------------
``clearings.claw_back`` shares the amount among the order's legs as always
(``refunds.allocate``, in proportion to what each still holds) and asks
``check_carried`` about the carried legs that must give something:

* a leg taken up by an instruction not yet carried out (created, blocked,
  processing...) or released to the payee by a *finish*: refused with
  ``clawback_blocked`` as before (the money is in flight, or in the payee's
  own balance: finance handles it);
* a leg a split paid: what a succeeded return already brought back to
  pending and no clawback took yet is taken from pending; for the rest, one
  ``split_return`` per receiver (instruction and party) is recorded for the
  legs' shares of the refund (less what returns still under way will bring
  back), and the refund is refused with ``split_return_pending`` (409),
  ``details.split_returns`` naming every return it waits for. Retry the
  refund once they succeeded: the allocation is the same, and the clawback
  now finds the money in pending.

The refused refund's transaction is rolled back, so the returns it asks for
are recorded in a transaction of their own once the refund's ends (a hook on
the session, ``after_transaction_end``); their ``out_return_no`` is fixed
then and named in the error. Asking again while they are under way records
nothing new.

The job
-------
``send_split_returns`` (every minute) sends ``requested`` returns through the
adapter's ``return_split`` (same ``out_return_no`` after an outage: the
gateway deduplicates) and polls ``processing`` ones with ``query_return``.
A return of a payment collected for a sub-merchant (the seller's own
merchant, ``sub_merchants``) names it, and so does its query: the money goes
back to that merchant. A gateway whose ``return_split`` raises
``NotImplementedError`` (Alipay: a
split is unwound only through the buyer's refund with its royalty
parameters) or refuses it, or a return the gateway failed, ends ``failed``
with the reason, raised for finance (``GET /v1/split-returns?attention=true``)
who retries it (a new return, a new ``out_return_no``) or handles the refund
another way.

Postings, each once (keyed by the return):

* a party's return succeeded: Dr ``gateway:G:payee_held`` / Cr
  ``party:X:pending`` (``split.returned``): the money is back in the
  payee's funds at G and the leg's obligation is restored in pending; the
  leg goes back to state ``pending`` (it is never released to a wallet:
  ``carried_by`` keeps the release job away), so the refund's clawback
  takes it from pending into the escrow;
* the platform's: Dr ``gateway:G:payee_held`` / Cr ``platform:gateway:G``
  (its revenue is clawed back by the refund as for any platform leg).

How much of a carried leg pending holds is derived, never stored twice:
what its succeeded returns brought back, less what clawbacks took from it
since it was carried (``clawed_minor`` now less ``clawed_before`` of its
first return: nothing can be clawed from a carried leg before a return).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence

from sqlalchemy import event, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

import ledger
from clearing.models import ClearingShare
from clearing.split_models import SplitInstruction, SplitReceiver, SplitReturn
from clearing.split_states import (
    RETURN_ATTENTION,
    RETURN_LIVE,
    RETURN_STATES,
    next_return_state,
)
from ledger import EntryRequest, PostingLine, as_utc, new_uuid7, utcnow
from payments.gateway import GatewayError
from payments.models import Payment
from payments.split import GatewayRefused, ReturnRequest, ReturnResult, SplitGateway, SplitRefused

from . import audit, pages, sub_merchants
from .books import ensure, payee_held_account, pending_account, platform_gateway_account
from .clearing_rules import PLATFORM
from .errors import ChannelError, InvalidInput, NotFound

log = logging.getLogger(__name__)

JOB = "job:send_split_returns"
_PLANNED = "split_returns.planned"


class SplitReturnPending(ChannelError):
    """A refund waits for receivers to give their splits back at the
    gateway (``details["split_returns"]`` names the returns); retry it once
    they succeeded (a failed one: finance retries it first)."""

    code = "split_return_pending"
    http_status = 409


class SplitReturnNotFound(NotFound):
    code = "split_return_not_found"


@dataclass(frozen=True)
class SplitReturnView:
    public_id: str              # also the out_return_no the gateway knows it by
    instruction: str            # the out_order_no of the split being returned
    gateway: str
    payment: str
    order: str
    party: str
    account: str
    currency: str
    amount_minor: int
    documents: tuple[str, ...]
    state: str
    cause: str
    reason: str | None
    last_error: str | None
    attempts: int
    entry_id: str | None
    retry_of: str | None
    retried_by: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime

    @property
    def out_return_no(self) -> str:
        return self.public_id


def _views(session: Session, rows: Sequence[SplitReturn]) -> list[SplitReturnView]:
    names: dict[int, str] = {}
    ids = sorted({r.instruction_id for r in rows})
    if ids:
        names = dict(session.execute(select(SplitInstruction.id, SplitInstruction.public_id)
                                     .where(SplitInstruction.id.in_(ids))).all())
    return [SplitReturnView(
        r.public_id, names[r.instruction_id], r.gateway, r.payment, r.order_ref, r.party,
        r.account, r.currency, r.amount_minor, tuple(leg["document"] for leg in r.legs),
        r.state, r.cause, r.reason, r.last_error, r.attempts, r.entry_id, r.retry_of,
        r.retried_by, r.created_by, as_utc(r.created_at), as_utc(r.updated_at)) for r in rows]


def _named(row: SplitReturn | dict[str, Any]) -> dict[str, Any]:
    get = row.get if isinstance(row, dict) else (lambda k: getattr(row, k))
    return {"split_return": get("public_id"), "party": get("party"),
            "amount_minor": get("amount_minor"), "state": get("state")}


# -- what a refund asks for ------------------------------------------------------------------------


def check_carried(session: Session, order_ref: str, rows: Sequence[ClearingShare],
                  takes: Mapping[str, int], *, reason: str) -> list[str]:
    """For ``clearings.claw_back``: the carried legs of ``rows`` that must
    give ``takes[str(leg.id)]``. Returns the legs that cannot be unwound by a
    return (taken up but not carried out, or released by a finish): the
    caller refuses with ``clawback_blocked``. Raises ``SplitReturnPending``
    when returns are needed (recording the new ones once the caller's
    transaction ends). Returns ``[]`` when every carried leg's share is
    back in pending."""
    carried = [row for row in rows if takes.get(str(row.id)) and row.carried_by is not None
               and (row.carried_at is not None or row.split_instruction is not None)]
    if not carried:
        return []
    instructions = {i.public_id: i for i in session.scalars(select(SplitInstruction).where(
        SplitInstruction.public_id.in_(sorted({r.split_instruction for r in carried
                                               if r.split_instruction}))))}
    unreturnable = sorted(r.public_id for r in carried if r.carried_at is None
                          or r.split_instruction not in instructions
                          or instructions[r.split_instruction].kind != "split")
    if unreturnable:
        return unreturnable
    history = list(session.scalars(select(SplitReturn).where(
        SplitReturn.order_ref == order_ref).order_by(SplitReturn.id)))
    waiting: dict[str, SplitReturn] = {}
    planned: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for leg in carried:
        mine = [(r, item) for r in history for item in r.legs
                if item["document"] == leg.public_id]
        baseline = min((item["clawed_before"] for _, item in mine), default=leg.clawed_minor)
        returned = sum(item["amount_minor"] for r, item in mine if r.state == "succeeded")
        short = takes[str(leg.id)] - (returned - (leg.clawed_minor - baseline))
        if short <= 0:
            continue
        live = sum(item["amount_minor"] for r, item in mine if r.state in RETURN_LIVE)
        open_ = [r for r, _ in mine if r.state in RETURN_LIVE | RETURN_ATTENTION]
        waiting.update({r.public_id: r for r in open_})
        if any(r.state in RETURN_ATTENTION for r in open_) or short <= live:
            continue
        instruction = instructions[leg.split_instruction]
        planned.setdefault((instruction.id, leg.recipient), []).append(
            {"document": leg.public_id, "amount_minor": short - live,
             "clawed_before": leg.clawed_minor, "live_seen": live})
    if not waiting and not planned:
        return []
    new = _plan(session, order_ref, planned, cause=reason)
    named = [_named(r) for r in sorted(waiting.values(), key=lambda r: r.id)] + \
        [_named(p) for p in new]
    failed = [n["split_return"] for n in named if n["state"] in RETURN_ATTENTION]
    listing = ", ".join(f"{n['split_return']} ({n['party']}, {n['amount_minor']}, {n['state']})"
                        for n in named)
    raise SplitReturnPending(
        "the refund needs cash back from split receivers a gateway already paid; it waits for "
        f"their split returns: {listing}; retry the refund once they succeeded"
        + (f" (failed, for finance to retry: {', '.join(failed)})" if failed else ""),
        order=order_ref, split_returns=named)


def _plan(session: Session, order_ref: str,
          planned: Mapping[tuple[int, str], list[dict[str, Any]]], *,
          cause: str) -> list[dict[str, Any]]:
    """The returns to record once the caller's transaction ends (it is
    about to be rolled back by the refusal), with their ids fixed now."""
    if not planned:
        return []
    out = []
    for (instruction_id, party), legs in sorted(planned.items()):
        receiver = next((r for r in session.scalars(select(SplitReceiver).where(
            SplitReceiver.instruction_id == instruction_id, SplitReceiver.party == party,
            SplitReceiver.result == "success"))
            if {leg["document"] for leg in legs} <= set(r.shares)), None)
        if receiver is None:        # cannot happen for a carried leg of a split
            raise RuntimeError(f"no paid receiver of instruction {instruction_id} for {party}")
        out.append({"public_id": f"sprt_{new_uuid7().hex}", "order_ref": order_ref,
                    "instruction_id": instruction_id, "receiver_id": receiver.id,
                    "party": party, "amount_minor": sum(leg["amount_minor"] for leg in legs),
                    "legs": legs, "state": "requested", "cause": cause[:200]})
    session.info.setdefault(_PLANNED, []).extend(out)
    if not event.contains(session, "after_transaction_end", _after_end):
        event.listen(session, "after_transaction_end", _after_end)
    return out


def _after_end(session: Session, transaction) -> None:
    """The refund's transaction ended (rolled back by the refusal, or
    committed by a caller that kept going): record what it asked for in a
    transaction of its own."""
    if transaction.parent is not None or transaction.nested:
        return
    planned = session.info.pop(_PLANNED, None)
    if not planned:
        return
    bind = session.get_bind()
    options = {"join_transaction_mode": "create_savepoint"} if isinstance(bind, Connection) \
        else {}
    try:
        with Session(bind=bind, **options) as own, own.begin():
            record(own, planned)
    except Exception:  # noqa: BLE001 - the refund is refused anyway; asking again re-plans
        log.exception("split returns for order %s not recorded", planned[0]["order_ref"],
                      extra={"order": planned[0]["order_ref"]})


def record(session: Session, planned: Sequence[Mapping[str, Any]], *,
           actor: str = "refund") -> list[SplitReturnView]:
    """Record planned returns (``_plan``), each once; a return another
    attempt recorded meanwhile for the same legs is not asked again."""
    now, rows = utcnow(), []
    for plan in planned:
        receiver = session.scalars(select(SplitReceiver).where(
            SplitReceiver.id == plan["receiver_id"]).with_for_update()).one()
        if session.scalar(select(SplitReturn.id).where(
                SplitReturn.public_id == plan["public_id"])) is not None:
            continue
        others = list(session.scalars(select(SplitReturn).where(
            SplitReturn.receiver_id == receiver.id, SplitReturn.state.in_(sorted(RETURN_LIVE)))))
        legs = []
        for leg in plan["legs"]:
            live = sum(item["amount_minor"] for r in others for item in r.legs
                       if item["document"] == leg["document"])
            amount = leg["amount_minor"] - max(0, live - leg["live_seen"])
            if amount > 0:
                legs.append({"document": leg["document"], "amount_minor": amount,
                             "clawed_before": leg["clawed_before"]})
        if not legs:
            continue
        instruction = session.get(SplitInstruction, plan["instruction_id"])
        row = SplitReturn(
            public_id=plan["public_id"], instruction_id=instruction.id, receiver_id=receiver.id,
            gateway=instruction.gateway, payment=instruction.payment,
            order_ref=instruction.order_ref, party=receiver.party, account=receiver.account,
            currency=instruction.currency, amount_minor=sum(leg["amount_minor"] for leg in legs),
            legs=legs, state="requested", cause=plan["cause"], attempts=0, created_by=actor,
            created_at=now, updated_at=now)
        session.add(row)
        session.flush()
        audit.record(session, actor=actor, action="split_return.requested",
                     subject_type="split_instruction", subject=instruction.public_id,
                     details={"split_return": row.public_id, "party": row.party,
                              "amount_minor": row.amount_minor, "cause": row.cause})
        rows.append(row)
    return _views(session, rows)


def unsettled(session: Session, payments: Sequence[str]) -> set[str]:
    """The payments (public ids) whose split returns a refund has not
    finished with: one still under way or failed, or one that brought money
    back that the refund's clawback has not taken yet. A finish of such a
    payment would release that money to the payee: it waits."""
    if not payments:
        return set()
    rows = list(session.scalars(select(SplitReturn).where(
        SplitReturn.payment.in_(sorted(set(payments)))).order_by(SplitReturn.id)))
    out = {r.payment for r in rows if r.state in RETURN_LIVE | RETURN_ATTENTION}
    documents = sorted({leg["document"] for r in rows if r.payment not in out
                        and r.state == "succeeded" for leg in r.legs})
    if not documents:
        return out
    clawed = dict(session.execute(select(ClearingShare.public_id, ClearingShare.clawed_minor)
                                  .where(ClearingShare.public_id.in_(documents))).all())
    for document in documents:
        mine = [(r, leg) for r in rows for leg in r.legs if leg["document"] == document]
        baseline = min(leg["clawed_before"] for _, leg in mine)
        returned = sum(leg["amount_minor"] for r, leg in mine if r.state == "succeeded")
        if returned - (clawed[document] - baseline) > 0:
            out.add(mine[0][0].payment)
    return out


# -- the job ---------------------------------------------------------------------------------------


def _adapter(adapters: Mapping[str, Any], gateway: str) -> SplitGateway | None:
    adapter = adapters.get(gateway)
    return adapter if isinstance(adapter, SplitGateway) else None


def _move(row: SplitReturn, action: str, *, reason: str | None = None) -> None:
    row.state, row.updated_at = next_return_state(row.state, action), utcnow()
    if reason is not None:
        row.reason = reason[:500]
    if row.state in RETURN_ATTENTION:
        log.error("split return %s of order %s failed: %s", row.public_id, row.order_ref,
                  row.reason, extra={"split_return": row.public_id, "order": row.order_ref})


def _refusal(refused: SplitRefused) -> str:
    if isinstance(refused, GatewayRefused):
        return f"{refused.vendor_code}: {refused.vendor_message}"
    return f"{refused.code}: {refused}"


def send_split_returns(session: Session, adapters: Mapping[str, Any], *, limit: int = 200,
                       now: datetime | None = None) -> Counter:
    """The job: requested returns go to their gateway (each under its own
    ``out_return_no``), processing ones are asked about; each success is
    posted once."""
    outcome: Counter = Counter()
    rows = list(session.scalars(select(SplitReturn).where(
        SplitReturn.state.in_(["requested", "processing"])).order_by(SplitReturn.id)
        .limit(limit).with_for_update(skip_locked=True)))
    names = dict(session.execute(select(SplitInstruction.id, SplitInstruction.public_id).where(
        SplitInstruction.id.in_(sorted({r.instruction_id for r in rows})))).all()) if rows else {}
    payments = {p.public_id: p for p in session.scalars(select(Payment).where(
        Payment.public_id.in_(sorted({r.payment for r in rows}))))} if rows else {}
    for row in rows:
        adapter = _adapter(adapters, row.gateway)
        if adapter is None:
            outcome["no_gateway"] += 1
            continue
        out_order_no = names[row.instruction_id]
        payment = payments.get(row.payment)
        payee = sub_merchants.request_fields(
            sub_merchants.of_payment(session, payment) if payment is not None else None)
        try:
            if row.state == "requested":
                row.attempts += 1
                result = adapter.return_split(ReturnRequest(
                    row.public_id, out_order_no, row.account, row.amount_minor,
                    f"return for the refund of order {row.order_ref}"[:80], **payee))
            else:
                result = adapter.query_return(row.public_id, out_order_no, **payee)
        except NotImplementedError as why:
            _move(row, "fail", reason=f"{row.gateway} cannot return a split on its own: {why}; "
                                      "finance must unwind it with the buyer's refund")
            outcome["failed"] += 1
            continue
        except SplitRefused as refused:     # a signed no (or, polling: an unknown return)
            _move(row, "fail", reason=f"refused by {row.gateway}: {_refusal(refused)}")
            outcome["failed"] += 1
            continue
        except GatewayError as down:        # no answer to trust: the same id again later
            row.last_error, row.updated_at = str(down)[:300], utcnow()
            outcome["unavailable"] += 1
            continue
        outcome[_apply(session, row, result, now=now)] += 1
    session.flush()
    return outcome


def _apply(session: Session, row: SplitReturn, result: ReturnResult, *,
           now: datetime | None) -> str:
    if result.out_return_no != row.public_id:
        raise RuntimeError(f"{row.gateway} answered about {result.out_return_no}, "
                           f"not {row.public_id}")
    row.last_error = None
    if row.state == "requested":
        _move(row, "send")
    if result.state == "success":
        _post(session, row, now=as_utc(now) if now is not None else utcnow())
        _move(row, "succeed")
        return "succeeded"
    if result.state == "failed":
        _move(row, "fail", reason=f"{row.gateway} failed it: "
                                  f"{result.fail_reason or 'no reason given'}")
        return "failed"
    return "processing"


def _post(session: Session, row: SplitReturn, *, now: datetime) -> None:
    """The receiver's money is back in the payee's funds at the gateway;
    the legs' obligation is restored (once, keyed by the return)."""
    held = payee_held_account(row.gateway)
    if row.party == PLATFORM:
        credit = platform_gateway_account(row.gateway)
        ensure(session, credit, f"Platform's money at {row.gateway}", "asset", row.currency)
    else:
        credit = pending_account(row.party)
    entry = ledger.post_entry(session, EntryRequest(
        code="split.returned",
        description=f"split of order {row.order_ref} returned by {row.party} via {row.gateway}",
        idempotency_key=f"{row.public_id}:returned",
        metadata={"split_return": row.public_id, "payment": row.payment, "order": row.order_ref,
                  "party": row.party, "gateway": row.gateway,
                  "documents": [leg["document"] for leg in row.legs]},
        postings=[PostingLine(held, "debit", row.amount_minor, row.currency),
                  PostingLine(credit, "credit", row.amount_minor, row.currency)]))
    row.entry_id = entry.id
    if row.party != PLATFORM:   # the clawback takes it from pending (never released: carried)
        for leg in session.scalars(select(ClearingShare).where(ClearingShare.public_id.in_(
                [leg["document"] for leg in row.legs])).with_for_update()):
            leg.state = "pending"


# -- finance ---------------------------------------------------------------------------------------


def retry_return(session: Session, split_return: str, *, actor: str,
                 note: str = "") -> SplitReturnView:
    """Finance retries a failed return: a *new* return (a new
    ``out_return_no``) for the same receiver and legs; the old one is
    ``retried``, once. The job sends it."""
    row = session.scalars(select(SplitReturn).where(
        SplitReturn.public_id == split_return).with_for_update()).one_or_none()
    if row is None:
        raise SplitReturnNotFound(f"no split return {split_return!r}", field="split_return")
    next_return_state(row.state, "retry")
    if not isinstance(note, str) or len(note) > 200:
        raise InvalidInput("note must be at most 200 characters", field="note")
    now = utcnow()
    new = SplitReturn(
        public_id=f"sprt_{new_uuid7().hex}", instruction_id=row.instruction_id,
        receiver_id=row.receiver_id, gateway=row.gateway, payment=row.payment,
        order_ref=row.order_ref, party=row.party, account=row.account, currency=row.currency,
        amount_minor=row.amount_minor, legs=[dict(leg) for leg in row.legs], state="requested",
        cause=row.cause, attempts=0, retry_of=row.public_id, created_by=actor,
        created_at=now, updated_at=now)
    session.add(new)
    row.retried_by = new.public_id
    _move(row, "retry")
    session.flush()
    audit.record(session, actor=actor, action="split_return.retried",
                 subject_type="split_return", subject=row.public_id,
                 details={"new": new.public_id, "note": note.strip()})
    return _views(session, [new])[0]


def get_return(session: Session, split_return: str) -> SplitReturnView:
    row = session.scalars(select(SplitReturn).where(
        SplitReturn.public_id == split_return)).one_or_none()
    if row is None:
        raise SplitReturnNotFound(f"no split return {split_return!r}", field="split_return")
    return _views(session, [row])[0]


def list_returns(session: Session, *, party: str | None = None, state: str | None = None,
                 attention: bool = False, order: str | None = None, after: str | None = None,
                 limit: int = 100) -> tuple[list[SplitReturnView], str | None]:
    """Newest first; ``attention``: failed ones, waiting for finance;
    ``after`` is the cursor (the last return id seen)."""
    query = select(SplitReturn)
    if state is not None:
        if state not in RETURN_STATES:
            raise InvalidInput(f"unknown split return state {state!r}", field="state")
        query = query.where(SplitReturn.state == state)
    if attention:
        query = query.where(SplitReturn.state.in_(sorted(RETURN_ATTENTION)))
    for column, value in ((SplitReturn.party, party), (SplitReturn.order_ref, order)):
        if value is not None:
            query = query.where(column == value)
    rows, cursor = pages.page(session, query, SplitReturn, after=after, limit=limit,
                              noun="a split return")
    return _views(session, rows), cursor
