"""callback claims without a savepoint

``payment_callback_claim``: one row per gateway transaction outcome (the
inbox's dedupe key), naming the callback that applied it. Claims are
inserted with ``ON CONFLICT DO NOTHING``, many in one statement, so a batch
of callbacks is claimed at once and a duplicate loses without an error.
Existing claims (``payment_callback.dedupe_key``) are copied in.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-04 17:10:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('payment_callback_claim',
    sa.Column('dedupe_key', sa.String(length=200), nullable=False),
    sa.Column('callback_id', BIG_ID, nullable=False),
    sa.ForeignKeyConstraint(['callback_id'], ['payment_callback.id'],
                            name=op.f('fk_payment_callback_claim_callback_id_payment_callback')),
    sa.PrimaryKeyConstraint('dedupe_key', name=op.f('pk_payment_callback_claim'))
    )
    op.execute("INSERT INTO payment_callback_claim (dedupe_key, callback_id) "
               "SELECT dedupe_key, id FROM payment_callback WHERE dedupe_key IS NOT NULL")


def downgrade() -> None:
    op.drop_table('payment_callback_claim')
