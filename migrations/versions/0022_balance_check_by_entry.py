"""the journal's statement trigger sums each new entry's postings by index

PostgreSQL only. The balance check of 0018/0020 summed the postings of the
statement's entries with ``WHERE entry_id IN (SELECT DISTINCT entry_id FROM
new_postings)``. A transition table has no statistics, so the planner
guessed 200 entries and, for a batch (2,500 entries, 10,000 postings),
chose a merge join that read the whole ``ix_ledger_posting_entry`` index:
884 ms per batch once the journal held 4 million postings (25 ms with the
look-ups below), a cost that grew with the journal, not the batch, and
that dominated batch clearing's database time at a million orders.

Each entry's postings are now read by a lateral look-up on that index
(``OFFSET 0`` keeps the planner from turning it back into a join), so the
check costs the same however large the journal grows. What it checks is
unchanged: every posting of every entry the statement touched, earlier
ones included, must balance per currency.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-04 15:35:00.000000
"""
from alembic import op


revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None

# The function as 0020 wrote it, with the balance check as ``{balance}``.
_FUNCTION = """
CREATE OR REPLACE FUNCTION ledger_check_statement_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.entry_id INTO bad
      FROM (SELECT DISTINCT entry_id FROM new_postings) AS n
     WHERE NOT EXISTS (SELECT 1 FROM ledger_entry e WHERE e.id = n.entry_id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a posting names entry %, which does not exist', bad.entry_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT n.account_id INTO bad
      FROM (SELECT DISTINCT account_id FROM new_postings) AS n
     WHERE NOT EXISTS (SELECT 1 FROM ledger_account a WHERE a.id = n.account_id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a posting names account %, which does not exist', bad.account_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
{balance}
    IF FOUND THEN
        RAISE EXCEPTION 'unbalanced entry %: % debits exceed credits by %',
            bad.entry_id, bad.currency, bad.diff
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$
"""
_BY_ENTRY = """
    SELECT n.entry_id, p.currency,
           sum(CASE WHEN p.side = 'debit' THEN p.amount_minor ELSE -p.amount_minor END) AS diff
      INTO bad
      FROM (SELECT DISTINCT entry_id FROM new_postings) AS n
     CROSS JOIN LATERAL (SELECT p.currency, p.side, p.amount_minor FROM ledger_posting p
                          WHERE p.entry_id = n.entry_id OFFSET 0) AS p
     GROUP BY n.entry_id, p.currency
    HAVING sum(CASE WHEN p.side = 'debit' THEN p.amount_minor ELSE -p.amount_minor END) <> 0
     LIMIT 1;"""
_IN_SUBQUERY = """
    SELECT p.entry_id, p.currency,
           sum(CASE WHEN p.side = 'debit' THEN p.amount_minor ELSE -p.amount_minor END) AS diff
      INTO bad
      FROM ledger_posting p
     WHERE p.entry_id IN (SELECT DISTINCT entry_id FROM new_postings)
     GROUP BY p.entry_id, p.currency
    HAVING sum(CASE WHEN p.side = 'debit' THEN p.amount_minor ELSE -p.amount_minor END) <> 0
     LIMIT 1;"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FUNCTION.format(balance=_BY_ENTRY))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FUNCTION.format(balance=_IN_SUBQUERY))
