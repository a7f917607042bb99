"""Pure rules of double entry: request validation, balance arithmetic and
bound checks. No database here, so each rule is tested by the thousand.

Balances are always read on the account's *normal side*: a debit-normal
account's balance is debits − credits, a credit-normal one's credits − debits.
The bounds (``min_balance_minor``, ``max_balance_minor``) apply to that
normal-side balance, including what pending entries have reserved:

* the minimum holds for the worst case — posted balance minus every pending
  outflow (what a pending entry may still take away);
* the maximum holds for the worst case the other way — posted balance plus
  every pending inflow.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from .errors import InsufficientFunds, InvalidEntry, LimitExceeded, UnbalancedEntry
from .values import EntryRequest, PostingLine, Side

CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
MAX_AMOUNT_MINOR = 2**62  # keeps every sum inside a signed 64-bit column
MAX_POSTINGS = 1000


@dataclass(frozen=True)
class Totals:
    """Debits and credits of an account (all shards), posted and pending."""

    posted_debits: int = 0
    posted_credits: int = 0
    pending_debits: int = 0
    pending_credits: int = 0

    def __add__(self, other: "Totals") -> "Totals":
        return Totals(
            self.posted_debits + other.posted_debits,
            self.posted_credits + other.posted_credits,
            self.pending_debits + other.pending_debits,
            self.pending_credits + other.pending_credits,
        )


# Side is a str enum, so these compare plain strings and enum members alike
# (and skip constructing an enum per call on the hot path).


def signed(normal_side: Side | str, side: Side | str, amount: int) -> int:
    """The effect of one posting on a normal-side balance."""
    return amount if side == normal_side else -amount


def posted_balance(normal_side: Side | str, debits: int, credits: int) -> int:
    return debits - credits if normal_side == "debit" else credits - debits


def pending_inflow_outflow(normal_side: Side | str, totals: Totals) -> tuple[int, int]:
    if normal_side == "debit":
        return totals.pending_debits, totals.pending_credits
    return totals.pending_credits, totals.pending_debits


def available_balance(normal_side: Side | str, totals: Totals) -> int:
    """Posted balance less what pending entries may still take out."""
    _, outflow = pending_inflow_outflow(normal_side, totals)
    return posted_balance(normal_side, totals.posted_debits, totals.posted_credits) - outflow


def pending_balance(normal_side: Side | str, totals: Totals) -> int:
    """Posted balance as it will be once every pending entry is posted."""
    inflow, outflow = pending_inflow_outflow(normal_side, totals)
    return (
        posted_balance(normal_side, totals.posted_debits, totals.posted_credits)
        + inflow
        - outflow
    )


def check_bounds(
    account_code: str,
    normal_side: Side | str,
    min_balance: int | None,
    max_balance: int | None,
    before: Totals,
    after: Totals,
) -> None:
    """Raise when ``after`` breaks a bound that ``before`` did not already break
    in the same direction. Postings that move a balance away from a bound are
    always allowed, so an account that was put outside its bounds by a limit
    change can still be brought back."""
    worst_low_after = available_balance(normal_side, after)
    if min_balance is not None and worst_low_after < min_balance:
        if worst_low_after < available_balance(normal_side, before):
            raise InsufficientFunds(
                f"account {account_code} would fall to {worst_low_after}, "
                f"below its minimum {min_balance}",
                account=account_code,
                available_minor=available_balance(normal_side, before),
                min_balance_minor=min_balance,
            )
    inflow, _ = pending_inflow_outflow(normal_side, after)
    worst_high_after = posted_balance(normal_side, after.posted_debits, after.posted_credits) + inflow
    if max_balance is not None and worst_high_after > max_balance:
        inflow_b, _ = pending_inflow_outflow(normal_side, before)
        worst_high_before = (
            posted_balance(normal_side, before.posted_debits, before.posted_credits) + inflow_b
        )
        if worst_high_after > worst_high_before:
            raise LimitExceeded(
                f"account {account_code} would rise to {worst_high_after}, "
                f"above its maximum {max_balance}",
                account=account_code,
                max_balance_minor=max_balance,
                balance_minor=worst_high_before,
            )


def moves_toward_bound(
    normal_side: Side | str, min_balance: int | None, max_balance: int | None, side: Side | str
) -> bool:
    """Whether a posting on ``side`` could break one of the account's bounds."""
    grows = side == normal_side
    return (grows and max_balance is not None) or (not grows and min_balance is not None)


def normalize_lines(lines: Iterable[PostingLine]) -> list[PostingLine]:
    """Validate posting lines; returns them with ``side`` as a :class:`Side`."""
    out = []
    for index, line in enumerate(lines):
        field = f"postings[{index}]"
        if not isinstance(line.account, str) or not line.account:
            raise InvalidEntry(f"{field}.account must be a non-empty code", field=f"{field}.account")
        try:
            side = line.side if isinstance(line.side, Side) else Side(line.side)
        except ValueError:
            raise InvalidEntry(
                f"{field}.side must be 'debit' or 'credit', not {line.side!r}", field=f"{field}.side"
            ) from None
        amount = line.amount_minor
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise InvalidEntry(
                f"{field}.amount_minor must be an integer number of minor units",
                field=f"{field}.amount_minor",
            )
        if amount <= 0 or amount > MAX_AMOUNT_MINOR:
            raise InvalidEntry(
                f"{field}.amount_minor must be positive and at most {MAX_AMOUNT_MINOR}",
                field=f"{field}.amount_minor",
            )
        if not isinstance(line.currency, str) or not CURRENCY_RE.match(line.currency):
            raise InvalidEntry(
                f"{field}.currency must be an ISO 4217 code like 'CNY'", field=f"{field}.currency"
            )
        out.append(PostingLine(line.account, side, amount, line.currency))
    return out


def check_balanced(lines: Iterable[PostingLine]) -> None:
    per_currency: dict[str, int] = defaultdict(int)
    for line in lines:
        per_currency[line.currency] += line.amount_minor if line.side == "debit" else -line.amount_minor
    off = {currency: diff for currency, diff in per_currency.items() if diff}
    if off:
        raise UnbalancedEntry(
            "debits and credits differ: "
            + ", ".join(f"{c} debits exceed credits by {d}" for c, d in sorted(off.items())),
            difference_minor=off,
        )


def validate_request(request: EntryRequest) -> list[PostingLine]:
    """Everything that can be said of a request on its own. (That an expiry
    lies in the future is checked when the entry is written, after the
    idempotency lookup, so a retry after the expiry still gets its first answer.)"""
    if not isinstance(request.code, str) or not request.code or len(request.code) > 64:
        raise InvalidEntry("code must be 1 to 64 characters saying why", field="code")
    if request.idempotency_key is not None and (
        not isinstance(request.idempotency_key, str) or not 0 < len(request.idempotency_key) <= 200
    ):
        raise InvalidEntry("idempotency_key must be 1 to 200 characters", field="idempotency_key")
    lines = normalize_lines(request.postings)
    if len(lines) < 2:
        raise InvalidEntry("an entry needs at least two postings", field="postings")
    if len(lines) > MAX_POSTINGS:
        raise InvalidEntry(f"an entry takes at most {MAX_POSTINGS} postings", field="postings")
    check_balanced(lines)
    if request.expires_at is not None:
        if not request.pending:
            raise InvalidEntry("only a pending entry can expire", field="expires_at")
        if request.expires_at.tzinfo is None:
            raise InvalidEntry("expires_at must carry a timezone", field="expires_at")
    if request.effective_at is not None and request.effective_at.tzinfo is None:
        raise InvalidEntry("effective_at must carry a timezone", field="effective_at")
    return lines


def request_hash(kind: str, request: EntryRequest, lines: list[PostingLine], link: str | None) -> str:
    """A fingerprint of what a request asks for, to tell a replay from a conflict."""
    content = {
        "kind": kind,
        "code": request.code,
        "description": request.description,
        "postings": [[l.account, Side(l.side).value, l.amount_minor, l.currency] for l in lines],
        "metadata": request.metadata or {},
        "expires_at": request.expires_at.isoformat() if request.expires_at else None,
        "effective_at": request.effective_at.isoformat() if request.effective_at else None,
        "link": link,
    }
    return hashlib.sha256(
        json.dumps(content, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()
