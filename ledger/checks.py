"""The ledger's invariant check. Each check is a function returning a list of
findings (beancount's ``validate`` style), so one run reports everything that
is wrong, not just the first thing. ``channel-ledger check`` runs them all.
"""
from __future__ import annotations

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session, aliased

from . import rules
from .ids import entry_public_id
from .models import Account, Balance, JournalEntry, Posting
from .values import EntryKind, Finding

_debit = case((Posting.side == "debit", Posting.amount_minor), else_=0)
_credit = case((Posting.side == "credit", Posting.amount_minor), else_=0)


def check_entries_balance(session: Session) -> list[Finding]:
    rows = session.execute(
        select(Posting.entry_id, Posting.currency, func.sum(_debit), func.sum(_credit))
        .group_by(Posting.entry_id, Posting.currency)
        .having(func.sum(_debit) != func.sum(_credit))
    )
    return [
        Finding("entry_balances", entry_public_id(entry_id),
                f"{currency} debits {debits} != credits {credits}")
        for entry_id, currency, debits, credits in rows
    ]


def check_posting_counts(session: Session) -> list[Finding]:
    counts = (
        select(Posting.entry_id, func.count().label("n")).group_by(Posting.entry_id).subquery()
    )
    rows = session.execute(
        select(JournalEntry.id, JournalEntry.kind, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.entry_id == JournalEntry.id)
        .where(JournalEntry.kind != EntryKind.VOID_PENDING.value)
        .where(func.coalesce(counts.c.n, 0) < 2)
    )
    return [
        Finding("entry_postings", entry_public_id(entry_id), f"{kind} entry has {n} postings")
        for entry_id, kind, n in rows
    ]


def check_posting_currency(session: Session) -> list[Finding]:
    rows = session.execute(
        select(Posting.entry_id, Posting.line, Posting.currency, Account.code, Account.currency)
        .join(Account, Account.id == Posting.account_id)
        .where(Posting.currency != Account.currency)
    )
    return [
        Finding("posting_currency", f"{entry_public_id(e)}#{line}",
                f"posting in {pc} on account {code} in {ac}")
        for e, line, pc, code, ac in rows
    ]


def check_cached_balances(session: Session) -> list[Finding]:
    """Each shard's cached debits and credits equal the sum of its postings;
    pending columns equal the postings of pending entries not yet resolved."""
    resolved = select(JournalEntry.pending_id).where(JournalEntry.pending_id.is_not(None))
    open_pending = and_(Posting.pending.is_(True), Posting.entry_id.not_in(resolved))
    posted = Posting.pending.is_(False)
    sums = (
        select(
            Posting.account_id,
            Posting.shard,
            func.sum(case((and_(posted, Posting.side == "debit"), Posting.amount_minor), else_=0)).label("pd"),
            func.sum(case((and_(posted, Posting.side == "credit"), Posting.amount_minor), else_=0)).label("pc"),
            func.sum(case((and_(open_pending, Posting.side == "debit"), Posting.amount_minor), else_=0)).label("qd"),
            func.sum(case((and_(open_pending, Posting.side == "credit"), Posting.amount_minor), else_=0)).label("qc"),
        )
        .group_by(Posting.account_id, Posting.shard)
        .subquery()
    )
    rows = session.execute(
        select(Account.code, Balance, sums.c.pd, sums.c.pc, sums.c.qd, sums.c.qc)
        .join(Account, Account.id == Balance.account_id)
        .outerjoin(sums, and_(sums.c.account_id == Balance.account_id, sums.c.shard == Balance.shard))
    )
    findings = []
    for code, bal, pd, pc, qd, qc in rows:
        expected = (int(pd or 0), int(pc or 0), int(qd or 0), int(qc or 0))
        cached = (bal.posted_debits_minor, bal.posted_credits_minor,
                  bal.pending_debits_minor, bal.pending_credits_minor)
        if expected != cached:
            findings.append(Finding(
                "cached_balance", f"{code}#{bal.shard}",
                f"cached (posted Dr, Cr, pending Dr, Cr) {cached} != postings {expected}"))
    return findings


def check_running_balances(session: Session) -> list[Finding]:
    """The last posting of each shard carries the shard's current posted balance."""
    latest = (
        select(Posting.account_id, Posting.shard, func.max(Posting.version).label("v"))
        .group_by(Posting.account_id, Posting.shard)
        .subquery()
    )
    last = aliased(Posting)
    rows = session.execute(
        select(Account.code, Account.normal_side, Balance, last.balance_after_minor, last.version)
        .join(Account, Account.id == Balance.account_id)
        .join(latest, and_(latest.c.account_id == Balance.account_id, latest.c.shard == Balance.shard))
        .join(last, and_(last.account_id == latest.c.account_id, last.shard == latest.c.shard,
                         last.version == latest.c.v))
    )
    findings = []
    for code, normal_side, bal, balance_after, version in rows:
        current = rules.posted_balance(normal_side, bal.posted_debits_minor, bal.posted_credits_minor)
        if balance_after != current:
            findings.append(Finding("running_balance", f"{code}#{bal.shard}",
                                    f"last posting says {balance_after}, balance is {current}"))
        if version > bal.version:
            findings.append(Finding("version", f"{code}#{bal.shard}",
                                    f"posting version {version} ahead of shard version {bal.version}"))
    return findings


def check_bounds(session: Session) -> list[Finding]:
    rows = session.execute(
        select(
            Account.code, Account.normal_side, Account.min_balance_minor, Account.max_balance_minor,
            func.sum(Balance.posted_debits_minor), func.sum(Balance.posted_credits_minor),
            func.sum(Balance.pending_debits_minor), func.sum(Balance.pending_credits_minor),
        )
        .join(Balance, Balance.account_id == Account.id)
        .where((Account.min_balance_minor.is_not(None)) | (Account.max_balance_minor.is_not(None)))
        .group_by(Account.id)
    )
    findings = []
    for code, side, low, high, pd, pc, qd, qc in rows:
        pd, pc, qd, qc = int(pd), int(pc), int(qd), int(qc)
        totals = rules.Totals(pd, pc, qd, qc)
        available = rules.available_balance(side, totals)
        inflow, _ = rules.pending_inflow_outflow(side, totals)
        highest = rules.posted_balance(side, pd, pc) + inflow
        if low is not None and available < low:
            findings.append(Finding("bound", code, f"available {available} below minimum {low}"))
        if high is not None and highest > high:
            findings.append(Finding("bound", code, f"balance with pending {highest} above maximum {high}"))
    return findings


def check_reversals(session: Session) -> list[Finding]:
    """A reversal mirrors its original line by line (same account and amount,
    opposite side), with as many lines. Two set-based queries, whatever the
    number of reversals."""
    original = aliased(Posting)
    mine = aliased(Posting)
    unmatched = (
        select(JournalEntry.id, JournalEntry.reverses_id)
        .join(mine, mine.entry_id == JournalEntry.id)
        .outerjoin(original, and_(
            original.entry_id == JournalEntry.reverses_id,
            original.line == mine.line,
            original.account_id == mine.account_id,
            original.amount_minor == mine.amount_minor,
            original.side != mine.side,
        ))
        .where(JournalEntry.kind == EntryKind.REVERSAL.value, original.id.is_(None))
    )
    counts = select(Posting.entry_id, func.count().label("n")).group_by(Posting.entry_id).subquery()
    mine_n, theirs_n = aliased(counts), aliased(counts)
    miscounted = (
        select(JournalEntry.id, JournalEntry.reverses_id)
        .outerjoin(mine_n, mine_n.c.entry_id == JournalEntry.id)
        .outerjoin(theirs_n, theirs_n.c.entry_id == JournalEntry.reverses_id)
        .where(JournalEntry.kind == EntryKind.REVERSAL.value,
               func.coalesce(mine_n.c.n, 0) != func.coalesce(theirs_n.c.n, 0))
    )
    bad = {tuple(row) for row in session.execute(unmatched)} | {
        tuple(row) for row in session.execute(miscounted)}
    return [
        Finding("reversal", entry_public_id(entry_id), f"does not mirror {entry_public_id(reverses_id)}")
        for entry_id, reverses_id in sorted(bad, key=lambda r: str(r[0]))
    ]


CHECKS = (
    check_entries_balance,
    check_posting_counts,
    check_posting_currency,
    check_cached_balances,
    check_running_balances,
    check_bounds,
    check_reversals,
)


def check_ledger(session: Session) -> list[Finding]:
    """Run every check and return every finding; an empty list means healthy."""
    findings: list[Finding] = []
    for check in CHECKS:
        findings.extend(check(session))
    return findings


def ledger_counts(session: Session) -> tuple[int, int]:
    """How many entries and postings there are (for the check's summary line)."""
    return (session.scalar(select(func.count()).select_from(JournalEntry)),
            session.scalar(select(func.count()).select_from(Posting)))
