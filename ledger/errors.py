"""Named ledger failures.

Every failure the ledger can report is a subclass of :class:`LedgerError`
with a stable machine-readable ``code`` (the API and the admin show it, and
clients branch on it) and an HTTP status hint for the edge. Like
TigerBeetle's result codes, a caller never has to parse a message.
"""
from __future__ import annotations


class DomainError(Exception):
    """Base of every named failure in the domain packages (the ledger's and
    those above it), so the edge maps them all to problem+json one way."""

    code = "domain_error"
    http_status = 422

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class LedgerError(DomainError):
    code = "ledger_error"


class InvalidEntry(LedgerError):
    """The request itself is malformed: bad amount, side, currency, too few postings."""

    code = "invalid_entry"


class UnbalancedEntry(InvalidEntry):
    code = "unbalanced_entry"


class CurrencyMismatch(LedgerError):
    code = "currency_mismatch"


class AccountNotFound(LedgerError):
    code = "account_not_found"
    http_status = 404


class AccountExists(LedgerError):
    code = "account_exists"
    http_status = 409


class AccountFrozen(LedgerError):
    code = "account_frozen"


class AccountClosed(LedgerError):
    code = "account_closed"


class InsufficientFunds(LedgerError):
    """The posting would take the account below its minimum balance."""

    code = "insufficient_funds"


class LimitExceeded(LedgerError):
    """The posting would take the account above its maximum balance (a credit limit)."""

    code = "limit_exceeded"


class IdempotencyConflict(LedgerError):
    """The idempotency key was used before for a different request."""

    code = "idempotency_conflict"
    http_status = 409


class EntryNotFound(LedgerError):
    code = "entry_not_found"
    http_status = 404


class NotPending(LedgerError):
    code = "not_pending"


class PendingExpired(LedgerError):
    code = "pending_expired"


class AlreadyPosted(LedgerError):
    code = "already_posted"
    http_status = 409


class AlreadyVoided(LedgerError):
    code = "already_voided"
    http_status = 409


class AlreadyReversed(LedgerError):
    code = "already_reversed"
    http_status = 409


class NotReversible(LedgerError):
    code = "not_reversible"


class InvalidAccount(LedgerError):
    """Bad attributes when opening or changing an account."""

    code = "invalid_account"
