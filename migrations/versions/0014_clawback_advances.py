"""clawback advances

Clawbacks a wallet could not give back, advanced by the platform on a
finance decision and recovered from the wallet later (issue 6).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 02:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('clawback_advance',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('public_id', sa.String(length=40), nullable=False),
    sa.Column('request_key', sa.String(length=120), nullable=False),
    sa.Column('party', sa.String(length=64), nullable=False),
    sa.Column('order_ref', sa.String(length=40), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('recovered_minor', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('approved_by', sa.String(length=80), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recovered_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('amount_minor > 0 AND recovered_minor >= 0 AND recovered_minor <= amount_minor', name=op.f('ck_clawback_advance_amounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clawback_advance')),
    sa.UniqueConstraint('public_id', name=op.f('uq_clawback_advance_public_id')),
    sa.UniqueConstraint('request_key', name=op.f('uq_clawback_advance_request_key'))
    )
    op.create_index('ix_clawback_advance_open', 'clawback_advance', ['party', 'recovered_minor', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_clawback_advance_open', table_name='clawback_advance')
    op.drop_table('clawback_advance')
