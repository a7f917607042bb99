"""split instructions

Parties' accounts at gateways, payments collected with the seller as payee,
clearing legs carried by a gateway, and the split instructions (with their
receivers and events) that carry them (issue 6, "Who moves the money").

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28 09:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('party_gateway_account',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('public_id', sa.String(length=40), nullable=False),
    sa.Column('party', sa.String(length=64), nullable=False),
    sa.Column('gateway', sa.String(length=16), nullable=False),
    sa.Column('account', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=80), nullable=False),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('active','retired')", name=op.f('ck_party_gateway_account_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_party_gateway_account')),
    sa.UniqueConstraint('public_id', name=op.f('uq_party_gateway_account_public_id'))
    )
    with op.batch_alter_table('party_gateway_account', schema=None) as batch_op:
        batch_op.create_index('uq_party_gateway_account_active', ['party', 'gateway'], unique=True, postgresql_where=sa.text("status = 'active'"), sqlite_where=sa.text("status = 'active'"))

    op.create_table('split_instruction',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('public_id', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('gateway', sa.String(length=16), nullable=False),
    sa.Column('payment', sa.String(length=40), nullable=False),
    sa.Column('transaction_id', sa.String(length=80), nullable=False),
    sa.Column('order_ref', sa.String(length=40), nullable=False),
    sa.Column('payee', sa.String(length=64), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('last_error', sa.String(length=300), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('gateway_order_id', sa.String(length=80), nullable=True),
    sa.Column('fee_minor', sa.BigInteger(), nullable=True),
    sa.Column('fee_source', sa.String(length=8), nullable=True),
    sa.Column('cap_minor', sa.BigInteger(), nullable=True),
    sa.Column('retry_of', sa.String(length=40), nullable=True),
    sa.Column('retried_by', sa.String(length=40), nullable=True),
    sa.Column('created_by', sa.String(length=80), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('split','finish')", name=op.f('ck_split_instruction_kind')),
    sa.CheckConstraint("state IN ('created','blocked','refused','processing','succeeded','failed','retried')", name=op.f('ck_split_instruction_state')),
    sa.CheckConstraint('amount_minor >= 0', name=op.f('ck_split_instruction_amount')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_split_instruction')),
    sa.UniqueConstraint('public_id', name=op.f('uq_split_instruction_public_id'))
    )
    with op.batch_alter_table('split_instruction', schema=None) as batch_op:
        batch_op.create_index('ix_split_instruction_payee', ['payee', 'id'], unique=False)
        batch_op.create_index('ix_split_instruction_payment', ['payment', 'id'], unique=False)
        batch_op.create_index('ix_split_instruction_state', ['state', 'id'], unique=False)

    op.create_table('split_receiver',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('public_id', sa.String(length=40), nullable=False),
    sa.Column('instruction_id', BIG_ID, nullable=False),
    sa.Column('party', sa.String(length=64), nullable=False),
    sa.Column('account', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=20), nullable=True),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('result', sa.String(length=8), nullable=False),
    sa.Column('fail_reason', sa.String(length=200), nullable=True),
    sa.Column('shares', sa.JSON(), nullable=False),
    sa.Column('entry_id', sa.String(length=40), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("result IN ('pending','success','closed')", name=op.f('ck_split_receiver_result')),
    sa.CheckConstraint('amount_minor > 0', name=op.f('ck_split_receiver_amount_positive')),
    sa.ForeignKeyConstraint(['instruction_id'], ['split_instruction.id'], name=op.f('fk_split_receiver_instruction_id_split_instruction')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_split_receiver')),
    sa.UniqueConstraint('public_id', name=op.f('uq_split_receiver_public_id'))
    )
    with op.batch_alter_table('split_receiver', schema=None) as batch_op:
        batch_op.create_index('ix_split_receiver_instruction', ['instruction_id', 'id'], unique=False)
        batch_op.create_index('ix_split_receiver_party', ['party', 'id'], unique=False)

    op.create_table('split_instruction_event',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('instruction_id', BIG_ID, nullable=False),
    sa.Column('from_state', sa.String(length=12), nullable=True),
    sa.Column('to_state', sa.String(length=12), nullable=False),
    sa.Column('actor', sa.String(length=80), nullable=False),
    sa.Column('note', sa.String(length=500), nullable=False),
    sa.Column('entry_id', sa.String(length=40), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['instruction_id'], ['split_instruction.id'], name=op.f('fk_split_instruction_event_instruction_id_split_instruction')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_split_instruction_event'))
    )
    with op.batch_alter_table('split_instruction_event', schema=None) as batch_op:
        batch_op.create_index('ix_split_instruction_event_instruction', ['instruction_id', 'id'], unique=False)

    with op.batch_alter_table('clearing_share', schema=None) as batch_op:
        batch_op.add_column(sa.Column('carried_by', sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column('carrier_payment', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('split_instruction', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('carried_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('carry_entry_id', sa.String(length=40), nullable=True))
        batch_op.create_index('ix_clearing_share_carrier', ['carrier_payment'], unique=False)
        batch_op.create_index('ix_clearing_share_carry', ['carried_by', 'carried_at'], unique=False)

    with op.batch_alter_table('payment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('payee_account', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('payee_account_kind', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('fee_minor', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('payment', schema=None) as batch_op:
        batch_op.drop_column('fee_minor')
        batch_op.drop_column('payee_account_kind')
        batch_op.drop_column('payee_account')

    with op.batch_alter_table('clearing_share', schema=None) as batch_op:
        batch_op.drop_index('ix_clearing_share_carry')
        batch_op.drop_index('ix_clearing_share_carrier')
        batch_op.drop_column('carry_entry_id')
        batch_op.drop_column('carried_at')
        batch_op.drop_column('split_instruction')
        batch_op.drop_column('carrier_payment')
        batch_op.drop_column('carried_by')

    with op.batch_alter_table('split_instruction_event', schema=None) as batch_op:
        batch_op.drop_index('ix_split_instruction_event_instruction')
    op.drop_table('split_instruction_event')

    with op.batch_alter_table('split_receiver', schema=None) as batch_op:
        batch_op.drop_index('ix_split_receiver_party')
        batch_op.drop_index('ix_split_receiver_instruction')
    op.drop_table('split_receiver')

    with op.batch_alter_table('split_instruction', schema=None) as batch_op:
        batch_op.drop_index('ix_split_instruction_state')
        batch_op.drop_index('ix_split_instruction_payment')
        batch_op.drop_index('ix_split_instruction_payee')
    op.drop_table('split_instruction')

    with op.batch_alter_table('party_gateway_account', schema=None) as batch_op:
        batch_op.drop_index('uq_party_gateway_account_active')
    op.drop_table('party_gateway_account')
