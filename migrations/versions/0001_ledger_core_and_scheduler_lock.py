"""ledger core and scheduler lock

The tables of the ledger, and the rules the database itself enforces: the
journal (entries and postings) is append-only, and on PostgreSQL a deferred
constraint trigger refuses at COMMIT any entry whose postings do not balance
per currency (as django-hordak does), whatever code wrote them.

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 17:50:11.511973
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


PG_FUNCTIONS = [
    """
    CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the journal is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'restrict_violation';
    END $$
    """,
    """
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
    """,
]
PG_TRIGGERS = [
    f"""
    CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()
    """
    for table in ("ledger_entry", "ledger_posting")
] + [
    f"""
    CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()
    """
    for table in ("ledger_entry", "ledger_posting")
] + [
    """
    CREATE CONSTRAINT TRIGGER ledger_posting_balanced AFTER INSERT ON ledger_posting
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_balanced()
    """
]
SQLITE_TRIGGERS = [
    f"""
    CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table}
    BEGIN SELECT RAISE(ABORT, 'the journal is append-only: {op} on {table} is refused'); END
    """
    for table in ("ledger_entry", "ledger_posting")
    for op in ("UPDATE", "DELETE")
]


def upgrade() -> None:
    op.create_table('ledger_account',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('public_id', sa.String(length=40), nullable=False),
    sa.Column('code', sa.String(length=200), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('normal_side', sa.String(length=6), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('owner_party_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('min_balance_minor', sa.BigInteger(), nullable=True),
    sa.Column('max_balance_minor', sa.BigInteger(), nullable=True),
    sa.Column('balance_shards', sa.SmallInteger(), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("normal_side IN ('debit','credit')", name=op.f('ck_ledger_account_normal_side')),
    sa.CheckConstraint("status IN ('open','frozen','closed')", name=op.f('ck_ledger_account_status')),
    sa.CheckConstraint("type IN ('asset','liability','equity','revenue','expense')", name=op.f('ck_ledger_account_type')),
    sa.CheckConstraint('balance_shards BETWEEN 1 AND 64', name=op.f('ck_ledger_account_balance_shards')),
    sa.CheckConstraint('length(currency) = 3', name=op.f('ck_ledger_account_currency')),
    sa.CheckConstraint('min_balance_minor IS NULL OR max_balance_minor IS NULL OR min_balance_minor <= max_balance_minor', name=op.f('ck_ledger_account_bounds')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_account')),
    sa.UniqueConstraint('code', name=op.f('uq_ledger_account_code')),
    sa.UniqueConstraint('public_id', name=op.f('uq_ledger_account_public_id'))
    )
    with op.batch_alter_table('ledger_account', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ledger_account_owner_party_id'), ['owner_party_id'], unique=False)

    op.create_table('ledger_entry',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('effective_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('posted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('request_hash', sa.String(length=64), nullable=True),
    sa.Column('pending_id', sa.Uuid(), nullable=True),
    sa.Column('reverses_id', sa.Uuid(), nullable=True),
    sa.CheckConstraint("(kind = 'reversal') = (reverses_id IS NOT NULL)", name=op.f('ck_ledger_entry_reversal_link')),
    sa.CheckConstraint("(kind IN ('post_pending','void_pending')) = (pending_id IS NOT NULL)", name=op.f('ck_ledger_entry_pending_link')),
    sa.CheckConstraint("expires_at IS NULL OR kind = 'pending'", name=op.f('ck_ledger_entry_expiry')),
    sa.CheckConstraint("kind IN ('standard','pending','post_pending','void_pending','reversal')", name=op.f('ck_ledger_entry_kind')),
    sa.ForeignKeyConstraint(['pending_id'], ['ledger_entry.id'], name=op.f('fk_ledger_entry_pending_id_ledger_entry')),
    sa.ForeignKeyConstraint(['reverses_id'], ['ledger_entry.id'], name=op.f('fk_ledger_entry_reverses_id_ledger_entry')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_entry'))
    )
    with op.batch_alter_table('ledger_entry', schema=None) as batch_op:
        for column in ('idempotency_key', 'pending_id', 'reverses_id'):
            batch_op.create_index(f'uq_ledger_entry_{column}', [column], unique=True,
                                  postgresql_where=sa.text(f'{column} IS NOT NULL'),
                                  sqlite_where=sa.text(f'{column} IS NOT NULL'))
        batch_op.create_index('ix_ledger_entry_open_pending', ['expires_at'], unique=False, postgresql_where=sa.text("kind = 'pending'"), sqlite_where=sa.text("kind = 'pending'"))

    op.create_table('scheduler_lock',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_scheduler_lock'))
    )
    op.create_table('ledger_balance',
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('shard', sa.SmallInteger(), nullable=False),
    sa.Column('posted_debits_minor', sa.BigInteger(), nullable=False),
    sa.Column('posted_credits_minor', sa.BigInteger(), nullable=False),
    sa.Column('pending_debits_minor', sa.BigInteger(), nullable=False),
    sa.Column('pending_credits_minor', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('posted_debits_minor >= 0 AND posted_credits_minor >= 0 AND pending_debits_minor >= 0 AND pending_credits_minor >= 0', name=op.f('ck_ledger_balance_non_negative')),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_account.id'], name=op.f('fk_ledger_balance_account_id_ledger_account')),
    sa.PrimaryKeyConstraint('account_id', 'shard', name=op.f('pk_ledger_balance'))
    )
    op.create_table('ledger_posting',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('entry_id', sa.Uuid(), nullable=False),
    sa.Column('line', sa.SmallInteger(), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('shard', sa.SmallInteger(), nullable=False),
    sa.Column('side', sa.String(length=6), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('pending', sa.Boolean(), nullable=False),
    sa.Column('balance_after_minor', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('posted_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("side IN ('debit','credit')", name=op.f('ck_ledger_posting_side')),
    sa.CheckConstraint('amount_minor > 0', name=op.f('ck_ledger_posting_amount_positive')),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_account.id'], name=op.f('fk_ledger_posting_account_id_ledger_account')),
    sa.ForeignKeyConstraint(['entry_id'], ['ledger_entry.id'], name=op.f('fk_ledger_posting_entry_id_ledger_entry')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_posting'))
    )
    with op.batch_alter_table('ledger_posting', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_posting_account_time', ['account_id', 'shard', 'posted_at', 'version'], unique=False)
        batch_op.create_index('ix_ledger_posting_entry', ['entry_id'], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        for statement in PG_FUNCTIONS + PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER ledger_posting_balanced ON ledger_posting")
        for table in ("ledger_entry", "ledger_posting"):
            op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION ledger_check_entry_balanced()")
        op.execute("DROP FUNCTION ledger_refuse_change()")
    else:
        for table in ("ledger_entry", "ledger_posting"):
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER {table}_no_{action}")
    with op.batch_alter_table('ledger_posting', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_posting_entry')
        batch_op.drop_index('ix_ledger_posting_account_time')

    op.drop_table('ledger_posting')
    op.drop_table('ledger_balance')
    op.drop_table('scheduler_lock')
    with op.batch_alter_table('ledger_entry', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_entry_open_pending', postgresql_where=sa.text("kind = 'pending'"), sqlite_where=sa.text("kind = 'pending'"))
        for column in ('idempotency_key', 'pending_id', 'reverses_id'):
            batch_op.drop_index(f'uq_ledger_entry_{column}')

    op.drop_table('ledger_entry')
    with op.batch_alter_table('ledger_account', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_account_owner_party_id'))

    op.drop_table('ledger_account')
