"""a posting's entry and account checked once per statement

PostgreSQL only. The foreign keys of ``ledger_posting`` (to
``ledger_entry`` and ``ledger_account``) ran two row-level triggers per
posting, each a look-up that also locks the parent row (``FOR KEY
SHARE``): a batch of 2,500 clearings (10,000 postings) spent about 120 ms of
its 300 ms journal write there. They are replaced by a check in the
statement-level trigger of 0018, which already reads the statement's
postings: once per INSERT, every entry and account the new postings name
must exist, or the statement is refused (``foreign_key_violation``).

The row locks guarded against the parent being deleted meanwhile; neither
can be: the journal is append-only (0001), and accounts are now refused
deletion and truncation too (they are closed, never removed). SQLite keeps
its foreign keys (the ORM models still declare them; the schema test and
autogenerate skip these two on PostgreSQL: ``ledger.models.
POSTGRESQL_TRIGGER_CHECKED_FKS``).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 12:10:00.000000
"""
from alembic import op


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

_FKS = (("fk_ledger_posting_entry_id_ledger_entry", "entry_id", "ledger_entry"),
        ("fk_ledger_posting_account_id_ledger_account", "account_id", "ledger_account"))

# The trigger function, as 0018 wrote it (the downgrade's) and with the
# references checked first (the upgrade's).
_FUNCTION = """
CREATE OR REPLACE FUNCTION ledger_check_statement_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
{checks}
    RETURN NULL;
END $$
"""
_REFERENCES = """
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
    END IF;"""
_BALANCE = """
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
    END IF;"""
_CHECK_STATEMENT = _FUNCTION.format(checks=_REFERENCES + _BALANCE)
_CHECK_BALANCE_ONLY = _FUNCTION.format(checks=_BALANCE)

_REFUSE_ACCOUNT_REMOVAL = """
CREATE FUNCTION ledger_refuse_account_removal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger accounts are closed, never removed: % on % is refused',
        TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_CHECK_STATEMENT)
    for name, _, _ in _FKS:
        op.drop_constraint(name, "ledger_posting", type_="foreignkey")
    op.execute(_REFUSE_ACCOUNT_REMOVAL)
    op.execute("CREATE TRIGGER ledger_account_no_delete BEFORE DELETE ON ledger_account "
               "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_account_removal()")
    op.execute("CREATE TRIGGER ledger_account_no_truncate BEFORE TRUNCATE ON ledger_account "
               "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_account_removal()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER ledger_account_no_truncate ON ledger_account")
    op.execute("DROP TRIGGER ledger_account_no_delete ON ledger_account")
    op.execute("DROP FUNCTION ledger_refuse_account_removal()")
    for name, column, parent in _FKS:
        op.create_foreign_key(name, "ledger_posting", parent, [column], ["id"])
    op.execute(_CHECK_BALANCE_ONLY)
