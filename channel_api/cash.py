"""The cash invariant (docs/accounting.md, rule 6), checkable at any time:

    cash assets (custody cash, gateway receivables, money gateways hold in
    payees' names for splitting, the platform's own money at gateways)
      = cash liabilities (wallets, pending, prepaid deposits, order escrows,
        suspense, payouts in flight)
      + the platform's own result (revenue - gateway fees - what it advanced
        to parties for clawbacks and has not recovered yet)

and each pair of claim accounts nets to zero: per seller, what its buyers
owe on credit (``credit:*@S``) equals its ``credit_issued``, and its buyers'
rebate credit (``rebate:*@S``) equals its ``rebates_granted``.

The accounts are recognised by the names ``books.py`` gives them; balances
are posted, on each account's normal side, per currency. A daily job runs
the check and logs an error for every difference (``check_cash_invariant``
in the scheduler); ``channel-ledger check`` runs it too.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from ledger.models import Account, Balance

# (class, exact code or LIKE pattern)
# Money at a gateway counts as cash too: its receivable (collected for the
# custody account), what it holds frozen in a payee's name for splitting
# (``payee_held``), and the platform's own split legs paid to it there.
CASH_ASSETS = ("custody:bank", "gateway:%:receivable", "gateway:%:payee_held",
               "platform:gateway:%")
CASH_LIABILITIES = ("payouts:in_flight", "suspense", "prepaid:%", "order:%:escrow",
                    "party:%:pending", "party:%:wallet")
REVENUE = ("platform:revenue",)
FEES = ("gateway:%:fees",)
# A clawback a wallet could not give back, advanced by the platform: money the
# platform put into the party's wallet from its own result (clawback_advances.py).
ADVANCES = ("party:%:clawback_due",)


@dataclass(frozen=True)
class CashPosition:
    currency: str
    assets_minor: int
    liabilities_minor: int
    result_minor: int

    @property
    def difference_minor(self) -> int:
        """Zero when the invariant holds."""
        return self.assets_minor - self.liabilities_minor - self.result_minor


@dataclass(frozen=True)
class ClaimMismatch:
    seller: str
    kind: str               # credit or rebate
    currency: str
    buyers_minor: int       # the sum of credit:*@S (or rebate:*@S)
    memo_minor: int         # party:S:credit_issued (or rebates_granted)


def _normal_balance():
    debits = func.sum(Balance.posted_debits_minor)
    credits = func.sum(Balance.posted_credits_minor)
    return case((Account.normal_side == "debit", debits - credits), else_=credits - debits)


def _matching(patterns: tuple[str, ...]):
    return or_(*(Account.code.like(p) if "%" in p else Account.code == p for p in patterns))


def _sums(session: Session, patterns: tuple[str, ...]) -> dict[str, int]:
    rows = session.execute(
        select(Account.currency, _normal_balance())
        .join(Balance, Balance.account_id == Account.id)
        .where(_matching(patterns)).group_by(Account.currency, Account.normal_side)).all()
    out: dict[str, int] = defaultdict(int)
    for currency, amount in rows:
        out[currency] += int(amount or 0)
    return out


def cash_positions(session: Session) -> list[CashPosition]:
    """The invariant's two sides, per currency."""
    assets, liabilities = _sums(session, CASH_ASSETS), _sums(session, CASH_LIABILITIES)
    revenue, fees = _sums(session, REVENUE), _sums(session, FEES)
    advances = _sums(session, ADVANCES)
    currencies = sorted(set(assets) | set(liabilities) | set(revenue) | set(fees) | set(advances))
    return [CashPosition(c, assets.get(c, 0), liabilities.get(c, 0),
                         revenue.get(c, 0) - fees.get(c, 0) - advances.get(c, 0))
            for c in currencies]


def claim_mismatches(session: Session) -> list[ClaimMismatch]:
    """Sellers whose buyers' claim accounts and their own memo account differ."""
    rows = session.execute(
        select(Account.code, Account.currency, _normal_balance())
        .join(Balance, Balance.account_id == Account.id)
        .where(_matching(("credit:%@%", "rebate:%@%", "party:%:credit_issued",
                          "party:%:rebates_granted")))
        .group_by(Account.code, Account.currency, Account.normal_side)).all()
    buyers: dict[tuple[str, str, str], int] = defaultdict(int)
    memos: dict[tuple[str, str, str], int] = defaultdict(int)
    for code, currency, amount in rows:
        amount = int(amount or 0)
        if code.startswith(("credit:", "rebate:")):
            kind, seller = code.split(":", 1)[0], code.rsplit("@", 1)[1]
            buyers[(seller, kind, currency)] += amount
        else:
            _, seller, memo = code.split(":")
            kind = "credit" if memo == "credit_issued" else "rebate"
            memos[(seller, kind, currency)] += amount
    return [ClaimMismatch(seller, kind, currency, buyers.get(key, 0), memos.get(key, 0))
            for key in sorted(set(buyers) | set(memos))
            for seller, kind, currency in [key]
            if buyers.get(key, 0) != memos.get(key, 0)]


@dataclass(frozen=True)
class CashCheck:
    positions: tuple[CashPosition, ...]
    claims: tuple[ClaimMismatch, ...]

    @property
    def holds(self) -> bool:
        return not self.claims and all(p.difference_minor == 0 for p in self.positions)


def check_cash(session: Session) -> CashCheck:
    return CashCheck(tuple(cash_positions(session)), tuple(claim_mismatches(session)))
