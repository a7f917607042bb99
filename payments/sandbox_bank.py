"""A simulated custody bank for payouts, entirely in-process (no network).

The demo and the tests need a bank that takes instructions, pays some and
fails others, and reports back through the same channels a real one uses: a
signed callback and an ISO 20022 status file. So ``SimulatedBank`` is a
``PayoutBank`` like any real adapter, and everything above the interface
runs unchanged against it.

How it behaves:

* ``submit`` checks each instruction (``check_instruction``) and refuses a
  bad one outright; it keeps the accepted ones with their submission time.
  A reference it already knows is answered with its first answer, whatever
  the resubmission says: it is never paid twice. (A refused instruction is
  not kept: the same bad instruction is refused again the same way.)
* Instructions submitted at least ``settle_after`` ago (by the injected
  ``clock``) become ``confirmed``, or ``failed`` for a payee account in
  ``fail_accounts`` (account -> ISO reason code, e.g. "AC04") or ending in
  "0000" ("AC01", invalid account number: the demo's way to show a
  failure). ``query`` sees that as soon as the time has come; ``settle()``
  returns each change once, to be sent as a callback or a status file.
* It is memory of one process: the instance that took an instruction is
  the only one that can settle it or answer a query about it.
* Callbacks are JSON ``{"notifications": [{"reference", "status",
  "bank_reference", "reason", "occurred_at", "amount_minor"}]}`` signed with
  ``payments.signing`` in the header ``Bank-Signature`` over the raw body,
  refused beyond ``tolerance_s`` (five minutes) either way.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

from payments import iso20022, signing
from payments.gateway import Acknowledgement, CallbackRejected, CallbackRequest
from payments.payout_bank import (
    InvalidInstruction,
    PayoutInstruction,
    PayoutOutcome,
    SubmitResult,
    check_instruction,
)

__all__ = ["SIGNATURE_HEADER", "SimulatedBank", "REASONS"]

SIGNATURE_HEADER = "Bank-Signature"
INVALID_ACCOUNT_SUFFIX = "0000"
INVALID_ACCOUNT_CODE = "AC01"

# ISO 20022 external status reason codes the simulator explains in words, so
# a finance clerk reading a failed payout sees more than four letters.
REASONS = {
    "AC01": "incorrect account number",
    "AC04": "closed account number",
    "AC06": "blocked account",
    "AG01": "transaction forbidden on this account",
    "AM04": "insufficient funds",
    "BE01": "payee name does not match the account",
    "FF01": "invalid file format",
}
_NOTICE_STATUSES = ("accepted", "confirmed", "failed")


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _dumps(payload: Mapping[str, Any]) -> bytes:
    """Compact, key-sorted JSON: the same payload always signs the same."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def explain(code: str) -> str:
    """ "AC04" -> "AC04: closed account number" (the form iso20022 writes as
    Rsn/Cd + AddtlInf and reads back the same)."""
    return f"{code}: {REASONS[code]}" if code in REASONS else code


@dataclass
class _Order:
    instruction: PayoutInstruction
    submitted_at: datetime
    result: SubmitResult
    outcome: PayoutOutcome


class SimulatedBank:
    """``PayoutBank`` held in memory. ``secret`` signs its callbacks;
    ``secret`` and ``previous_secrets`` verify them."""

    def __init__(
        self,
        secret: bytes,
        *,
        name: str = "sandbox-bank",
        clock: Callable[[], datetime] = _utc_now,
        settle_after: timedelta = timedelta(seconds=0),
        fail_accounts: Mapping[str, str] | None = None,
        previous_secrets: Sequence[bytes] = (),
        tolerance_s: int = 300,
    ) -> None:
        if not secret:
            raise ValueError("the simulated bank needs a non-empty secret")
        self.name = name
        self._secret = secret
        self._secrets = [secret, *previous_secrets]
        self._clock = clock
        self._settle_after = settle_after
        self._fail_accounts = dict(fail_accounts or {})
        self._tolerance_s = tolerance_s
        self._orders: dict[str, _Order] = {}     # by reference, in submission order
        self._unreported: list[PayoutOutcome] = []   # settled, not yet returned by settle()
        self._serial = 0
        self._lock = threading.Lock()            # one bank may serve several request threads

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the clock must return timezone-aware datetimes")
        return now

    def _next_serial(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{self._serial:012d}"

    # -- instructions ----------------------------------------------------------------

    def submit(self, instructions: Sequence[PayoutInstruction]) -> list[SubmitResult]:
        results: list[SubmitResult] = []
        with self._lock:
            now = self._now()
            for instruction in instructions:
                reference = instruction.reference
                known = self._orders.get(reference) if isinstance(reference, str) else None
                if known is not None:
                    results.append(known.result)      # idempotent: the first answer, no second payment
                    continue
                try:
                    check_instruction(instruction)
                except InvalidInstruction as exc:
                    results.append(SubmitResult(reference, False, None, str(exc)))
                    continue
                bank_reference = self._next_serial("SB")
                result = SubmitResult(reference, True, bank_reference, None)
                outcome = PayoutOutcome(reference, "accepted", bank_reference, None, now,
                                        instruction.amount_minor)
                self._orders[reference] = _Order(instruction, now, result, outcome)
                results.append(result)
        return results

    def settle(self) -> list[PayoutOutcome]:
        """Pay (or fail) what has waited ``settle_after``; every outcome that
        changed since the last ``settle()``, once, in the order it changed
        (submission order within one moment)."""
        with self._lock:
            self._advance(self._now())
            changed, self._unreported = self._unreported, []
        return changed

    def _advance(self, now: datetime) -> None:
        """Time passing is what settles an instruction, as at a real bank; so
        ``query`` sees it too, even where nobody calls ``settle()``."""
        for order in self._orders.values():
            if order.outcome.status != "accepted" or now - order.submitted_at < self._settle_after:
                continue
            code = self._failure_code(order.instruction.payee_account)
            order.outcome = replace(
                order.outcome,
                status="failed" if code else "confirmed",
                reason=explain(code) if code else None,
                occurred_at=now,
            )
            self._unreported.append(order.outcome)

    def _failure_code(self, account: str) -> str | None:
        if account in self._fail_accounts:
            return self._fail_accounts[account]
        if account.endswith(INVALID_ACCOUNT_SUFFIX):
            return INVALID_ACCOUNT_CODE
        return None

    def query(self, reference: str) -> PayoutOutcome:
        with self._lock:
            self._advance(self._now())
            order = self._orders.get(reference)
            if order is None:
                return PayoutOutcome(reference, "unknown", None, None, None, None)
            return order.outcome

    # -- callbacks ---------------------------------------------------------------------

    def callback_for(self, outcomes: Iterable[PayoutOutcome]) -> CallbackRequest:
        """The signed notice the bank would POST about ``outcomes``, as it
        reaches us (``received_at`` = now)."""
        notifications = []
        for o in outcomes:
            if o.status not in _NOTICE_STATUSES:
                raise ValueError(f"{o.reference}: a notice cannot say {o.status!r}")
            notifications.append({
                "reference": o.reference,
                "status": o.status,
                "bank_reference": o.bank_reference,
                "reason": o.reason,
                "occurred_at": o.occurred_at.isoformat() if o.occurred_at else None,
                "amount_minor": o.amount_minor,
            })
        body = _dumps({"notifications": notifications})
        now = self._now()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signing.sign(self._secret, int(now.timestamp()), body),
        }
        return CallbackRequest(headers=headers, body=body, received_at=now)

    def verify_callback(self, request: CallbackRequest) -> list[PayoutOutcome]:
        signing.verify(
            request.header(SIGNATURE_HEADER), request.body, self._secrets, request.received_at, self._tolerance_s
        )
        try:
            payload = json.loads(request.body)
        except ValueError as exc:
            raise CallbackRejected("malformed", "callback body is not JSON") from exc
        notices = payload.get("notifications") if isinstance(payload, dict) else None
        if not isinstance(notices, list) or not notices:
            raise CallbackRejected("malformed", "callback needs a non-empty notifications list")
        return [_notice(n, index) for index, n in enumerate(notices)]

    def acknowledge(self, accepted: bool, message: str = "") -> Acknowledgement:
        # Anything but 200 + SUCCESS makes the bank notify again later.
        if accepted:
            return Acknowledgement(200, _dumps({"code": "SUCCESS"}), "application/json")
        body = _dumps({"code": "FAIL", "message": message or "rejected"})
        return Acknowledgement(400, body, "application/json")

    # -- status files --------------------------------------------------------------------

    def status_file(self, outcomes: Iterable[PayoutOutcome], original_message_id: str) -> bytes:
        """A pain.002 about ``outcomes`` of the payout file ``original_message_id``
        (one currency per file, as payout files are)."""
        outcomes = list(outcomes)
        with self._lock:
            currencies = {
                self._orders[o.reference].instruction.currency for o in outcomes if o.reference in self._orders
            }
            message_id = self._next_serial("SBSR")
        if len(currencies) > 1:
            raise ValueError(f"one status file per currency, not {sorted(currencies)}")
        return iso20022.status_report(
            outcomes,
            message_id=message_id,
            created_at=self._now(),
            original_message_id=original_message_id,
            currency=currencies.pop() if currencies else "CNY",
        )

    def parse_status_file(self, data: bytes) -> list[PayoutOutcome]:
        return iso20022.parse_status_report(data)


def _notice(notice: object, index: int) -> PayoutOutcome:
    """One notification, every field checked (a JSON 1.0 or true is no amount)."""
    where = f"notifications[{index}]"

    def bad(why: str) -> CallbackRejected:
        return CallbackRejected("malformed", f"{where}: {why}")

    if not isinstance(notice, dict):
        raise bad("is not an object")
    reference = notice.get("reference")
    if not isinstance(reference, str) or not reference:
        raise bad("lacks reference")
    status = notice.get("status")
    if status not in _NOTICE_STATUSES:
        raise bad(f"unknown status {status!r}")
    for key in ("bank_reference", "reason"):
        if notice.get(key) is not None and not isinstance(notice[key], str):
            raise bad(f"{key} is not a string")
    amount = notice.get("amount_minor")
    if amount is not None and (type(amount) is not int or amount < 0):
        raise bad("amount_minor is not a non-negative integer")
    occurred_at = None
    if notice.get("occurred_at") is not None:
        try:
            occurred_at = datetime.fromisoformat(notice["occurred_at"])
        except (TypeError, ValueError):
            raise bad("occurred_at is not ISO 8601") from None
        if occurred_at.tzinfo is None:
            raise bad("occurred_at has no timezone")
    return PayoutOutcome(
        reference=reference,
        status=status,
        bank_reference=notice.get("bank_reference"),
        reason=notice.get("reason"),
        occurred_at=occurred_at,
        amount_minor=amount,
    )
