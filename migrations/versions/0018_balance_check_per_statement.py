"""the journal's balance check once per statement

PostgreSQL only. The deferred constraint trigger of 0001 ran once per
posting at COMMIT, each run summing its entry's postings again: a batch of
2,500 clearings (10,000 postings) spent about 100 ms of its commit there.
It is replaced by a statement-level trigger with a transition table: at the
end of every INSERT into ``ledger_posting`` it sums, once, the postings of
every entry the statement touched, and refuses the statement when one of
them does not balance per currency.

The rule is stricter than before: an entry's postings must balance in the
statement that inserts them (the ledger writes an entry and all its
postings in one statement), where before they had until COMMIT. Postings
added later to a committed entry are still refused unless they balance
among themselves, in one statement.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 06:20:00.000000
"""
from alembic import op


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

_CHECK_STATEMENT = """
CREATE FUNCTION ledger_check_statement_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT p.entry_id, p.currency,
           sum(CASE WHEN p.side = 'debit' THEN p.amount_minor ELSE -p.amount_minor END) AS diff
      INTO bad
      FROM ledger_posting p
     WHERE p.entry_id IN (SELECT DISTINCT entry_id FROM new_postings)
     GROUP BY p.entry_id, p.currency
    HAVING sum(CASE WHEN p.side = 'debit' THEN p.amount_minor ELSE -p.amount_minor END) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unbalanced entry %: % debits exceed credits by %',
            bad.entry_id, bad.currency, bad.diff
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$
"""

# As in 0001, for the downgrade.
_CHECK_ENTRY = """
CREATE FUNCTION ledger_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT currency,
           sum(CASE WHEN side = 'debit' THEN amount_minor ELSE -amount_minor END) AS diff
      INTO bad
      FROM ledger_posting
     WHERE entry_id = NEW.entry_id
     GROUP BY currency
    HAVING sum(CASE WHEN side = 'debit' THEN amount_minor ELSE -amount_minor END) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unbalanced entry %: % debits exceed credits by %',
            NEW.entry_id, bad.currency, bad.diff
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER ledger_posting_balanced ON ledger_posting")
    op.execute("DROP FUNCTION ledger_check_entry_balanced()")
    op.execute(_CHECK_STATEMENT)
    op.execute("""
    CREATE TRIGGER ledger_posting_balanced AFTER INSERT ON ledger_posting
        REFERENCING NEW TABLE AS new_postings
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_statement_balanced()
    """)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER ledger_posting_balanced ON ledger_posting")
    op.execute("DROP FUNCTION ledger_check_statement_balanced()")
    op.execute(_CHECK_ENTRY)
    op.execute("""
    CREATE CONSTRAINT TRIGGER ledger_posting_balanced AFTER INSERT ON ledger_posting
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_balanced()
    """)
