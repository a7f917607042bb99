"""The ledger accounts the channel's money lives in (docs/accounting.md),
opened on first use, and the checks every money input goes through."""
from __future__ import annotations

import re
from typing import Any

from sqlalchemy.orm import Session

import ledger

from .errors import InvalidInput

CUSTODY = "custody:bank"
SUSPENSE = "suspense"
PAYOUTS_IN_FLIGHT = "payouts:in_flight"  # sent to the bank, not yet confirmed  # money not yet explained, until finance resolves it
_REFERENCE = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")


def prepaid_account(buyer: str, seller: str) -> str:
    return f"prepaid:{buyer}@{seller}"


def rebate_account(buyer: str, seller: str) -> str:
    return f"rebate:{buyer}@{seller}"


def rebates_granted_account(seller: str) -> str:
    return f"party:{seller}:rebates_granted"


def credit_account(buyer: str, seller: str) -> str:
    return f"credit:{buyer}@{seller}"


def credit_issued_account(seller: str) -> str:
    return f"party:{seller}:credit_issued"


def escrow_account(order: str) -> str:
    return f"order:{order}:escrow"


def receivable_account(gateway: str) -> str:
    return f"gateway:{gateway}:receivable"


# Every payment through a gateway debits its receivable, so the batches of
# callbacks applied at once by several processes would queue on one balance
# row: it is opened with several shards (no bounds: each write takes one).
# An account opened earlier keeps its count.
RECEIVABLE_SHARDS = 8


def ensure_receivable(session: Session, gateway: str, currency: str) -> str:
    code = receivable_account(gateway)
    ensure(session, code, f"Receivable from {gateway}", "asset", currency,
           shards=RECEIVABLE_SHARDS)
    return code


def fees_account(gateway: str) -> str:
    return f"gateway:{gateway}:fees"


def payee_held_account(gateway: str) -> str:
    """An asset: money a gateway collected with a seller as payee and holds
    frozen in the payee's name until split instructions carry it away."""
    return f"gateway:{gateway}:payee_held"


def platform_gateway_account(gateway: str) -> str:
    """An asset: the platform's own money at a gateway (its split legs of
    payee-collected payments, paid into its account there)."""
    return f"platform:gateway:{gateway}"


def pending_account(party: str) -> str:
    return f"party:{party}:pending"


def wallet_account(party: str) -> str:
    return f"party:{party}:wallet"


PLATFORM_REVENUE = "platform:revenue"
# Every clearing credits the platform's leg here, so concurrent clearings
# (orders paid at once, parallel batch workers) would all queue on one
# balance row: it is opened with several shards (it has no bounds, so each
# posting takes one shard). An account opened earlier keeps its count.
PLATFORM_REVENUE_SHARDS = 8
# The brand takes a leg of almost every clearing: its pending account and
# wallet are opened with this many shards (other parties' with one).
BRAND_SHARDS = 8


def ensure(session: Session, code: str, name: str, type_: str, currency: str, *,
           owner: str | None = None, min_balance: int | None = None, shards: int = 1) -> None:
    """Accounts are opened on first use (docs/accounting.md); an existing one
    is used as it is, whatever name it was opened with."""
    ensure_all(session, [(code, name, type_, currency, owner, min_balance)], shards=shards)


def ensure_all(session: Session, specs: list[tuple[str, str, str, str, str | None, int | None]],
               *, shards: int = 1) -> None:
    """``ensure`` for several accounts: (code, name, type, currency, owner,
    min_balance) each. One statement when they are all open, two when some
    are not (``ledger.ensure_accounts``: a concurrent opener of the same
    account is waited for, then its account used)."""
    ledger.ensure_accounts(session, [
        ledger.AccountSpec(code, name, type_, currency, owner_party_id=owner,
                           min_balance_minor=min_balance, balance_shards=shards)
        for code, name, type_, currency, owner, min_balance in specs])


def ensure_platform_revenue(session: Session, currency: str) -> str:
    ensure(session, PLATFORM_REVENUE, "Platform revenue", "revenue", currency,
           shards=PLATFORM_REVENUE_SHARDS)
    return PLATFORM_REVENUE


def prepaid_spec(buyer: str, seller: str, currency: str) -> tuple[str, str, str, str, str, int]:
    """What ``ensure_all`` opens for ``buyer``'s deposit at ``seller``."""
    return (prepaid_account(buyer, seller), f"Prepaid deposit of {buyer} at {seller}",
            "liability", currency, buyer, 0)


def ensure_prepaid(session: Session, buyer: str, seller: str, currency: str) -> str:
    ensure_all(session, [prepaid_spec(buyer, seller, currency)])
    return prepaid_account(buyer, seller)


def positive_amount(value: Any, field: str = "amount_minor") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 10**15:
        raise InvalidInput(f"{field} must be a positive whole number of minor units", field=field)
    return value


def bank_reference(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _REFERENCE.fullmatch(value):
        raise InvalidInput(f"{field} must be 1-64 letters, digits or _ . : / -", field=field)
    return value
