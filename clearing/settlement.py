"""A party's daily settlement, as a pure calculation over plain values.

The two accounts a party's cleared money lives in, ``party:P:pending`` and
``party:P:wallet``, are summarised for one business day from two sources
that are written independently:

* the opening and closing balances, read from the ledger's running balance
  (``balance_after`` of the last posting before each instant), and
* the day's movements, summed from the amounts of its postings and
  classified by the code of the entry that made them.

``opening + movements = closing`` must hold for each account; the batch
records by how much it does not (``difference_minor``, the sum of both
accounts' absolute differences), so a ledger that lost or doubled a posting
shows up as a settlement that does not tie.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

# Entry codes and the figure of the batch they feed. Amounts are signed on
# the accounts' normal (credit) side: + money in, - money out.
CLEARED = "order.clear"
RELEASED = "clearing.release"
CLAWED_BACK = "clearing.clawback"
PAID_OUT = "payout.send"
PAYOUT_RETURNED = "payout.fail"
INTEREST = "interest.allocate"
KNOWN = (CLEARED, RELEASED, CLAWED_BACK, PAID_OUT, PAYOUT_RETURNED, INTEREST)


@dataclass(frozen=True)
class Movement:
    account: str        # "pending" or "wallet"
    entry_code: str
    net_minor: int      # credits - debits of the day on that account for that code


@dataclass(frozen=True)
class DaySettlement:
    pending_opening_minor: int
    wallet_opening_minor: int
    cleared_minor: int          # into pending
    released_minor: int         # pending -> wallet (out of pending)
    clawed_back_minor: int      # taken back for refunds, from either account
    paid_out_minor: int         # wallet -> payouts in flight
    payout_returned_minor: int  # failed payouts back into the wallet
    interest_minor: int
    other_minor: int
    other_detail: dict[str, int] = field(default_factory=dict)
    pending_closing_minor: int = 0
    wallet_closing_minor: int = 0
    difference_minor: int = 0

    @property
    def balanced(self) -> bool:
        return self.difference_minor == 0


def settle_day(*, pending_opening: int, wallet_opening: int, pending_closing: int,
               wallet_closing: int, movements: list[Movement]) -> DaySettlement:
    """The day's figures and whether they tie to the closing balances."""
    by_code: dict[str, int] = defaultdict(int)
    by_account: dict[str, int] = defaultdict(int)
    for move in movements:
        if move.account not in ("pending", "wallet"):
            raise ValueError(f"unknown account kind {move.account!r}")
        by_code[move.entry_code] += move.net_minor
        by_account[move.account] += move.net_minor
    # A release moves money out of pending and into the wallet: net zero
    # over both; what pending gave is the figure.
    released = -sum(m.net_minor for m in movements
                    if m.entry_code == RELEASED and m.account == "pending")
    other = {code: amount for code, amount in sorted(by_code.items())
             if code not in KNOWN and amount}
    difference = abs(pending_opening + by_account["pending"] - pending_closing) + \
        abs(wallet_opening + by_account["wallet"] - wallet_closing)
    return DaySettlement(
        pending_opening_minor=pending_opening, wallet_opening_minor=wallet_opening,
        cleared_minor=by_code[CLEARED], released_minor=released,
        clawed_back_minor=-by_code[CLAWED_BACK], paid_out_minor=-by_code[PAID_OUT],
        payout_returned_minor=by_code[PAYOUT_RETURNED], interest_minor=by_code[INTEREST],
        other_minor=sum(other.values()), other_detail=other,
        pending_closing_minor=pending_closing, wallet_closing_minor=wallet_closing,
        difference_minor=difference)
