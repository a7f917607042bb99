"""The rules the database enforces by itself, whatever code writes to it.

Raw SQL against the migrated schema: the journal (``ledger_entry``,
``ledger_posting``) is append-only (triggers on both backends, and TRUNCATE is
refused on PostgreSQL), a posting's amount is positive (CHECK), and on
PostgreSQL a deferred constraint trigger refuses at COMMIT an entry whose
postings do not balance per currency.

The rows attacked are entries written through the ledger API and committed.
One test commits a hand-written entry, which leaves postings the balance rows
do not know about; so this module works on a database of its own (like the
API and CLI tests) and the shared one stays healthy for ``check_ledger``.
"""
from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from ledger import EntryRequest, PostingLine, open_account, post_entry
from tests.isolated_db import isolated_engine

CNY = "CNY"


@pytest.fixture(scope="module")
def engine(backend, tmp_path_factory):
    with isolated_engine(backend, tmp_path_factory.mktemp("db")) as engine:
        yield engine


@pytest.fixture
def journal(session_factory, unique):
    """Two accounts and one committed entry (code ``<unique>:sale``) moving 1,000 between them."""
    cash, wallet = f"{unique}:cash", f"{unique}:wallet"
    with session_factory() as s, s.begin():
        open_account(s, cash, "Cash", "asset", CNY)
        open_account(s, wallet, "Wallet", "liability", CNY, min_balance_minor=0)
        usd = open_account(s, f"{unique}:usd", "USD cash", "asset", "USD")
        post_entry(s, EntryRequest(f"{unique}:sale", [
            PostingLine(cash, "debit", 1_000, CNY), PostingLine(wallet, "credit", 1_000, CNY)]))
    return {"code": f"{unique}:sale", "cash": cash, "wallet": wallet, "usd": usd.code, "unique": unique}


def _postings_of(engine, entry_code):
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT p.line, p.side, p.amount_minor, p.currency FROM ledger_posting p "
            "JOIN ledger_entry e ON e.id = p.entry_id WHERE e.code = :code ORDER BY p.line"
        ), {"code": entry_code}).all()
        conn.rollback()
    return [tuple(r) for r in rows]


def _entry_rows(engine, entry_code):
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT kind, description FROM ledger_entry WHERE code = :code"), {"code": entry_code}).all()
        conn.rollback()
    return [tuple(r) for r in rows]


_ATTACKS = {
    "update a posting's amount": (
        "UPDATE ledger_posting SET amount_minor = amount_minor + 1 "
        "WHERE entry_id IN (SELECT id FROM ledger_entry WHERE code = :code)"),
    "update a posting's side": (
        "UPDATE ledger_posting SET side = 'credit' "
        "WHERE entry_id IN (SELECT id FROM ledger_entry WHERE code = :code) AND side = 'debit'"),
    "delete a posting": (
        "DELETE FROM ledger_posting "
        "WHERE entry_id IN (SELECT id FROM ledger_entry WHERE code = :code)"),
    "update an entry": "UPDATE ledger_entry SET description = 'rewritten' WHERE code = :code",
    "delete an entry": "DELETE FROM ledger_entry WHERE code = :code",
}


@pytest.mark.parametrize("attack", list(_ATTACKS))
def test_a_committed_journal_row_can_be_neither_updated_nor_deleted(engine, journal, attack):
    before_postings = _postings_of(engine, journal["code"])
    before_entry = _entry_rows(engine, journal["code"])
    assert len(before_postings) == 2 and len(before_entry) == 1

    with engine.connect() as conn:
        with pytest.raises(DBAPIError) as refused:
            conn.execute(text(_ATTACKS[attack]), {"code": journal["code"]})
        conn.rollback()

    assert "append-only" in str(refused.value.orig)
    assert _postings_of(engine, journal["code"]) == before_postings
    assert _entry_rows(engine, journal["code"]) == before_entry


@pytest.mark.postgres_only
@pytest.mark.parametrize("tables", ["ledger_posting", "ledger_entry, ledger_posting"])
def test_truncating_the_journal_is_refused(engine, journal, tables):
    before = _postings_of(engine, journal["code"])
    with engine.connect() as conn:
        with pytest.raises(DBAPIError) as refused:
            conn.exec_driver_sql(f"TRUNCATE {tables}")
        conn.rollback()
    assert "append-only" in str(refused.value.orig)
    assert "TRUNCATE" in str(refused.value.orig)
    assert _postings_of(engine, journal["code"]) == before


_COPY_LINE_0 = (
    "INSERT INTO ledger_posting (entry_id, line, account_id, shard, side, amount_minor, currency, "
    "pending, balance_after_minor, version, posted_at) "
    "SELECT entry_id, :line, account_id, shard, COALESCE(:side, side), :amount, currency, pending, "
    "balance_after_minor, version, posted_at FROM ledger_posting "
    "WHERE entry_id = (SELECT id FROM ledger_entry WHERE code = :code) AND line = 0"
)


def _copy_line_0(conn, code, line, amount, side=None):
    """Insert a copy of the entry's first posting with another line number and amount."""
    return conn.execute(text(_COPY_LINE_0), {"line": line, "amount": amount, "side": side, "code": code})


_COPY_TWO_LINES_0 = (
    "INSERT INTO ledger_posting (entry_id, line, account_id, shard, side, amount_minor, currency, "
    "pending, balance_after_minor, version, posted_at) "
    "SELECT entry_id, v.line, account_id, shard, v.side, v.amount, currency, pending, "
    "balance_after_minor, version, posted_at FROM ledger_posting "
    "CROSS JOIN (VALUES (:line_a, :side_a, :amount), (:line_b, :side_b, :amount)) "
    "AS v(line, side, amount) "
    "WHERE entry_id = (SELECT id FROM ledger_entry WHERE code = :code) AND ledger_posting.line = 0"
)


@pytest.mark.postgres_only
def test_an_extra_posting_that_unbalances_a_committed_entry_is_refused(engine, journal):
    before = _postings_of(engine, journal["code"])
    with engine.connect() as conn:
        # Checked at the end of the INSERT statement (migration 0018).
        with pytest.raises(IntegrityError) as refused:
            _copy_line_0(conn, journal["code"], 7, 5)
        conn.rollback()
    message = str(refused.value.orig)
    assert "unbalanced entry" in message and "CNY" in message
    assert _postings_of(engine, journal["code"]) == before


@pytest.mark.postgres_only
def test_extra_postings_that_keep_a_committed_entry_balanced_are_accepted_in_one_statement(
        engine, journal):
    """The trigger judges the balance, not the act of adding: a debit and a
    credit of the same amount added together leave the entry balanced."""
    with engine.connect() as conn:
        inserted = conn.execute(text(_COPY_TWO_LINES_0), {
            "code": journal["code"], "amount": 5, "line_a": 8, "side_a": "debit",
            "line_b": 9, "side_b": "credit"})
        assert inserted.rowcount == 2
        conn.commit()
    assert [(line, side, amount) for line, side, amount, _ in _postings_of(engine, journal["code"])][-2:] == [
        (8, "debit", 5), (9, "credit", 5)]


@pytest.mark.postgres_only
def test_a_balanced_pair_split_over_two_statements_is_refused_at_the_first(engine, journal):
    """An entry's postings balance in the statement that inserts them (the
    ledger writes an entry in one statement); half a pair is refused."""
    before = _postings_of(engine, journal["code"])
    with engine.connect() as conn:
        with pytest.raises(IntegrityError) as refused:
            _copy_line_0(conn, journal["code"], 8, 5)
        conn.rollback()
    assert "unbalanced entry" in str(refused.value.orig)
    assert _postings_of(engine, journal["code"]) == before


def _insert_raw_entry(conn, code: str) -> None:
    conn.execute(text(
        "INSERT INTO ledger_entry (id, kind, code, description, effective_at, posted_at, expires_at, "
        "metadata, idempotency_key, request_hash, pending_id, reverses_id) VALUES "
        "(gen_random_uuid(), 'standard', :code, 'by hand', now(), now(), NULL, '{}', NULL, NULL, NULL, NULL)"
    ), {"code": code})


def _insert_raw_postings(conn, entry_code, lines) -> None:
    """The entry's postings, (account code, side, amount, currency) each, in one statement."""
    values, params = [], {"entry": entry_code}
    for n, (account, side, amount, currency) in enumerate(lines):
        values.append(
            f"((SELECT id FROM ledger_entry WHERE code = :entry), {n}, "
            f"(SELECT id FROM ledger_account WHERE code = :account{n}), 0, :side{n}, :amount{n}, "
            f":currency{n}, false, 0, 1, now())")
        params.update({f"account{n}": account, f"side{n}": side, f"amount{n}": amount,
                       f"currency{n}": currency})
    conn.execute(text(
        "INSERT INTO ledger_posting (entry_id, line, account_id, shard, side, amount_minor, currency, "
        "pending, balance_after_minor, version, posted_at) VALUES " + ", ".join(values)), params)


@pytest.mark.postgres_only
def test_a_balanced_pair_for_a_new_entry_commits(engine, journal):
    code = f"{journal['unique']}:by-hand"
    with engine.connect() as conn:
        _insert_raw_entry(conn, code)
        _insert_raw_postings(conn, code, [(journal["cash"], "debit", 250, CNY),
                                          (journal["wallet"], "credit", 250, CNY)])
        conn.commit()
    assert _postings_of(engine, code) == [(0, "debit", 250, CNY), (1, "credit", 250, CNY)]


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    "lines",
    [
        [("cash", "debit", 250, CNY)],
        [("cash", "debit", 250, CNY), ("wallet", "credit", 249, CNY)],
        # Balanced in total but not per currency.
        [("cash", "debit", 250, CNY), ("usd", "credit", 250, "USD")],
    ],
    ids=["one-sided", "off-by-one", "mixed-currency"],
)
def test_a_new_entry_whose_postings_do_not_balance_per_currency_is_refused(engine, journal, lines):
    code = f"{journal['unique']}:bad"
    with engine.connect() as conn:
        _insert_raw_entry(conn, code)
        with pytest.raises(IntegrityError) as refused:
            _insert_raw_postings(conn, code, [(journal[account], side, amount, currency)
                                              for account, side, amount, currency in lines])
        conn.rollback()
    assert "unbalanced entry" in str(refused.value.orig)
    assert _entry_rows(engine, code) == []
    assert _postings_of(engine, code) == []


@pytest.mark.postgres_only
def test_postings_sent_by_copy_are_checked_as_an_insert_is(engine, journal):
    """Large batches write the journal with COPY (``ledger.writer``): the
    statement trigger refuses an unbalanced entry sent that way too."""
    from datetime import datetime, timezone

    import psycopg2

    from ledger.writer import copy_rows

    code = f"{journal['unique']}:copied"
    with engine.connect() as conn:
        _insert_raw_entry(conn, code)
        entry_id, = conn.execute(text("SELECT id FROM ledger_entry WHERE code = :c"), {"c": code}).one()
        account_id, = conn.execute(text("SELECT id FROM ledger_account WHERE code = :c"),
                                   {"c": journal["cash"]}).one()
        kinds = {"entry_id": "text", "line": "integer", "account_id": "bigint", "shard": "integer",
                 "side": "text", "amount_minor": "bigint", "currency": "text",
                 "pending": "boolean", "balance_after_minor": "bigint", "version": "bigint",
                 "posted_at": "timestamptz"}
        with pytest.raises(psycopg2.IntegrityError) as refused:
            copy_rows(conn, "ledger_posting", kinds, [dict(
                entry_id=entry_id, line=0, account_id=account_id, shard=0, side="debit",
                amount_minor=250, currency=CNY, pending=False, balance_after_minor=0, version=1,
                posted_at=datetime.now(timezone.utc))])
        conn.rollback()
    assert "unbalanced entry" in str(refused.value)
    assert _entry_rows(engine, code) == []


@pytest.mark.parametrize("amount", [0, -5])
def test_a_posting_of_zero_or_a_negative_amount_is_refused_by_the_check_constraint(engine, journal, amount):
    before = _postings_of(engine, journal["code"])
    with engine.connect() as conn:
        with pytest.raises(IntegrityError) as refused:
            _copy_line_0(conn, journal["code"], 5, amount)
        conn.rollback()
    assert "amount_positive" in str(refused.value.orig)
    assert _postings_of(engine, journal["code"]) == before



_POSTING_FOR = (
    "INSERT INTO ledger_posting (entry_id, line, account_id, shard, side, amount_minor, currency, "
    "pending, balance_after_minor, version, posted_at) "
    "SELECT {entry}, v.line, {account}, 0, v.side, 5, 'CNY', false, 0, 1, CURRENT_TIMESTAMP "
    "FROM (SELECT 20 AS line, 'debit' AS side UNION ALL SELECT 21, 'credit') AS v")


@pytest.mark.parametrize("missing", ["entry", "account"])
def test_a_posting_naming_an_entry_or_account_that_does_not_exist_is_refused(
        engine, journal, missing):
    """A foreign key on SQLite; on PostgreSQL the journal's statement trigger
    checks it once per INSERT (migration 0020)."""
    entry = "(SELECT id FROM ledger_entry WHERE code = :code)"
    account = "(SELECT id FROM ledger_account WHERE code = :cash)"
    if missing == "entry":
        entry = ("X'00000000000000000000000000000000'" if engine.dialect.name == "sqlite"
                 else "gen_random_uuid()")
    else:
        account = "(SELECT max(id) + 1000 FROM ledger_account)"
    before = _postings_of(engine, journal["code"])
    with engine.connect() as conn:
        with pytest.raises(IntegrityError) as refused:
            conn.execute(text(_POSTING_FOR.format(entry=entry, account=account)),
                         {"code": journal["code"], "cash": journal["cash"]})
        conn.rollback()
    message = str(refused.value.orig)
    if engine.dialect.name == "postgresql":
        assert f"names {missing}" in message and "does not exist" in message
    else:
        assert "FOREIGN KEY constraint failed" in message
    assert _postings_of(engine, journal["code"]) == before


@pytest.mark.postgres_only
def test_the_same_pair_naming_existing_rows_is_accepted(engine, journal):
    """The statement above, with both rows existing, commits: the refusal
    was the reference, not the shape of the statement."""
    with engine.connect() as conn:
        inserted = conn.execute(text(_POSTING_FOR.format(
            entry="(SELECT id FROM ledger_entry WHERE code = :code)",
            account="(SELECT id FROM ledger_account WHERE code = :cash)")),
            {"code": journal["code"], "cash": journal["cash"]})
        assert inserted.rowcount == 2
        conn.commit()
    assert [line for line, *_ in _postings_of(engine, journal["code"])][-2:] == [20, 21]


@pytest.mark.postgres_only
@pytest.mark.parametrize("statement", [
    "DELETE FROM ledger_account WHERE code = :code", "TRUNCATE ledger_account CASCADE"])
def test_a_ledger_account_cannot_be_removed(engine, journal, statement):
    with engine.connect() as conn:
        with pytest.raises(DBAPIError) as refused:
            conn.execute(text(statement), {"code": journal["usd"]})
        conn.rollback()
    assert "closed, never removed" in str(refused.value.orig)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ledger_account WHERE code = :code"),
                            {"code": journal["usd"]}).scalar() == 1
