"""split returns

Returns of (part of) a receiver's split to the payee at the gateway (WeChat
Pay's profit-sharing return orders), recorded when a refund needs cash back
from clearing legs a split instruction already paid (issue 6, unwinding).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 02:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('split_return',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('public_id', sa.String(length=40), nullable=False),
    sa.Column('instruction_id', BIG_ID, nullable=False),
    sa.Column('receiver_id', BIG_ID, nullable=False),
    sa.Column('gateway', sa.String(length=16), nullable=False),
    sa.Column('payment', sa.String(length=40), nullable=False),
    sa.Column('order_ref', sa.String(length=40), nullable=False),
    sa.Column('party', sa.String(length=64), nullable=False),
    sa.Column('account', sa.String(length=64), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('legs', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('cause', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('last_error', sa.String(length=300), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('entry_id', sa.String(length=40), nullable=True),
    sa.Column('retry_of', sa.String(length=40), nullable=True),
    sa.Column('retried_by', sa.String(length=40), nullable=True),
    sa.Column('created_by', sa.String(length=80), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('requested','processing','succeeded','failed','retried')", name=op.f('ck_split_return_state')),
    sa.CheckConstraint('amount_minor > 0', name=op.f('ck_split_return_amount_positive')),
    sa.ForeignKeyConstraint(['instruction_id'], ['split_instruction.id'], name=op.f('fk_split_return_instruction_id_split_instruction')),
    sa.ForeignKeyConstraint(['receiver_id'], ['split_receiver.id'], name=op.f('fk_split_return_receiver_id_split_receiver')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_split_return')),
    sa.UniqueConstraint('public_id', name=op.f('uq_split_return_public_id'))
    )
    with op.batch_alter_table('split_return', schema=None) as batch_op:
        batch_op.create_index('ix_split_return_order', ['order_ref', 'id'], unique=False)
        batch_op.create_index('ix_split_return_receiver', ['receiver_id', 'id'], unique=False)
        batch_op.create_index('ix_split_return_state', ['state', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('split_return', schema=None) as batch_op:
        batch_op.drop_index('ix_split_return_state')
        batch_op.drop_index('ix_split_return_receiver')
        batch_op.drop_index('ix_split_return_order')
    op.drop_table('split_return')
