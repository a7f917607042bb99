"""The double-entry ledger: accounts, journal entries and postings, two-phase
(pending) entries, balances, statements, the trial balance and invariant checks.
It imports nothing of ours; every other package writes money through it."""
from .accounts import (
    AccountSpec,
    ensure_accounts,
    get_account,
    get_accounts,
    list_accounts,
    open_account,
    set_account_bounds,
    set_account_status,
)
from .checks import check_ledger, ledger_counts
from .errors import (
    AccountClosed,
    AccountExists,
    AccountFrozen,
    AccountNotFound,
    AlreadyPosted,
    AlreadyReversed,
    AlreadyVoided,
    CurrencyMismatch,
    DomainError,
    EntryNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAccount,
    InvalidEntry,
    LedgerError,
    LimitExceeded,
    NotPending,
    NotReversible,
    PendingExpired,
    UnbalancedEntry,
)
from .posting import (
    post_entries,
    post_entry,
    post_pending,
    reverse_entry,
    void_expired_pending,
    void_pending,
)
from .ids import new_uuid7
from .locking import preload_accounts
from .timeutil import as_utc, utcnow
from .writer import add_write_listener
from .queries import (
    balance_at,
    balances_before,
    find_entry_by_key,
    get_entry,
    list_entries,
    movements,
    statement,
    trial_balance,
)
from .values import (
    AccountStatus,
    AccountType,
    AccountView,
    EntryKind,
    EntryRequest,
    EntryResult,
    EntryView,
    Finding,
    PostingLine,
    PostingView,
    Side,
    Statement,
    StatementLine,
    TrialBalance,
    TrialBalanceRow,
)

__all__ = [name for name in dir() if not name.startswith("_")]
