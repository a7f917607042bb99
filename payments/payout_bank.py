"""The payout interface (issue 6): what every payout bank adapter offers.

Parties are paid out from their wallet to their registered bank account. The
platform never pays from an account of its own: it sends payout
*instructions* to the bank that holds the supervised custody account, and the
bank reports back what became of each one (a signed callback, a status file,
or an answer to a query). An adapter speaks one bank's protocol and nothing
else; it knows nothing of payouts as rows or of the ledger. The use cases in
``channel_api.payouts`` turn its answers into postings, so the simulated bank
(``payments.sandbox_bank``) is one more adapter behind this interface, never a
shortcut in business logic.

Two promises every adapter keeps, because the ledger depends on them:

* ``submit`` is idempotent by ``reference``: a reference the bank already
  knows is answered with its first answer and never paid twice, so a job that
  crashed between submitting and recording can simply submit again.
* ``SubmitResult.accepted`` only means the bank *took* the instruction. Money
  has moved when an outcome says ``confirmed``; ``failed`` after acceptance
  means it came back (or never left).

Amounts are integers in minor units (fen), as everywhere in the project.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, Sequence, runtime_checkable

from payments.gateway import Acknowledgement, CallbackRequest

__all__ = [
    "InvalidInstruction",
    "OutcomeStatus",
    "PayoutBank",
    "PayoutInstruction",
    "PayoutOutcome",
    "SubmitResult",
    "check_instruction",
]

OutcomeStatus = Literal["accepted", "confirmed", "failed", "unknown"]
OUTCOME_STATUSES: tuple[OutcomeStatus, ...] = ("accepted", "confirmed", "failed", "unknown")

# The limits come from ISO 20022 pain.001 (the strictest format we write):
# EndToEndId is Max35Text, names and remittance text Max140Text, account
# Othr/Id Max34Text, ClrSysMmbId/MmbId Max35Text, and an amount has at most
# 18 digits, two of them after the point.
MAX_REFERENCE = 35
MAX_NAME = 70              # our own rule, narrower than ISO's 140: what bank forms accept
MAX_BANK_CODE = 35
MAX_BANK_NAME = 140
MAX_REMARK = 140
MAX_AMOUNT_MINOR = 10**18 - 1

_REFERENCE = re.compile(r"[!-~]{1,35}")     # printable ASCII, no spaces: it travels in URLs and files
_CURRENCY = re.compile(r"[A-Z]{3}")
_ACCOUNT = re.compile(r"[0-9]{8,34}")       # ASCII digits only: str.isdigit() would take "١٢٣"
# Characters XML 1.0 cannot carry (and line breaks, which a name never has):
# ElementTree would write them as they are and produce a file no bank parses.
_FORBIDDEN_CHARS = re.compile("[\x00-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class PayoutInstruction:
    """Pay ``amount_minor`` to one payee account. ``reference`` is our payout
    id (``po_…``); the bank keys its idempotency on it."""

    reference: str
    amount_minor: int
    currency: str
    payee_name: str
    payee_account: str
    payee_bank_code: str
    payee_bank_name: str
    remark: str = ""


@dataclass(frozen=True)
class SubmitResult:
    """The bank's answer to one instruction: taken (``accepted``) or refused
    outright (nothing will be paid, ``reason`` says why)."""

    reference: str
    accepted: bool
    bank_reference: str | None
    reason: str | None


@dataclass(frozen=True)
class PayoutOutcome:
    """What became of one instruction, as far as the bank has said.
    ``unknown``: the bank has never seen the reference."""

    reference: str
    status: OutcomeStatus
    bank_reference: str | None
    reason: str | None
    occurred_at: datetime | None
    amount_minor: int | None


class InvalidInstruction(ValueError):
    """An instruction no bank should be sent; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


@runtime_checkable
class PayoutBank(Protocol):
    name: str

    def submit(self, instructions: Sequence[PayoutInstruction]) -> list[SubmitResult]:
        """One result per instruction, in the same order. A known reference
        is answered with its first result and is not paid again."""
        ...

    def query(self, reference: str) -> PayoutOutcome:
        """The bank's current word on one reference (``unknown`` if never seen)."""
        ...

    def verify_callback(self, request: CallbackRequest) -> list[PayoutOutcome]:
        """The verified notice's outcomes, or ``CallbackRejected``. No side effect."""
        ...

    def acknowledge(self, accepted: bool, message: str = "") -> Acknowledgement: ...

    def parse_status_file(self, data: bytes) -> list[PayoutOutcome]:
        """The bank's status file as outcomes; raises ``iso20022.StatusFileError``
        (a ``ValueError``) for a file that cannot be trusted whole."""
        ...


def check_text(field: str, value: object, *, max_len: int, required: bool = True) -> str:
    """``value`` as text fit for a bank file, or ``InvalidInstruction``."""
    if not isinstance(value, str):
        raise InvalidInstruction(field, "must be a string")
    if required and not value.strip():
        raise InvalidInstruction(field, "must not be empty")
    if len(value) > max_len:
        raise InvalidInstruction(field, f"must be at most {max_len} characters, not {len(value)}")
    if _FORBIDDEN_CHARS.search(value):
        raise InvalidInstruction(field, "must not contain control characters or line breaks")
    return value


def check_instruction(instruction: PayoutInstruction) -> None:
    """``InvalidInstruction`` (a ``ValueError`` naming the field) for an
    instruction that a bank would refuse or that would make an invalid file.
    Pure, so the API can refuse a bad payout before any money is reserved."""
    i = instruction
    if not isinstance(i.reference, str) or not _REFERENCE.fullmatch(i.reference):
        raise InvalidInstruction("reference", f"must be 1 to {MAX_REFERENCE} printable ASCII characters, no spaces")
    if type(i.amount_minor) is not int:  # not bool, not float, not Decimal
        raise InvalidInstruction("amount_minor", "must be an integer number of minor units")
    if i.amount_minor <= 0:
        raise InvalidInstruction("amount_minor", "must be positive")
    if i.amount_minor > MAX_AMOUNT_MINOR:
        raise InvalidInstruction("amount_minor", "has more than 18 digits")
    if not isinstance(i.currency, str) or not _CURRENCY.fullmatch(i.currency):
        raise InvalidInstruction("currency", "must be three uppercase letters (ISO 4217)")
    check_text("payee_name", i.payee_name, max_len=MAX_NAME)
    if not isinstance(i.payee_account, str) or not _ACCOUNT.fullmatch(i.payee_account):
        raise InvalidInstruction("payee_account", "must be 8 to 34 digits")
    check_text("payee_bank_code", i.payee_bank_code, max_len=MAX_BANK_CODE)
    check_text("payee_bank_name", i.payee_bank_name, max_len=MAX_BANK_NAME, required=False)
    check_text("remark", i.remark, max_len=MAX_REMARK, required=False)
