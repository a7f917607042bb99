"""suspense refunds

Money in suspense (a payment exception's) may be refunded to its payer
through the gateway that collected it: such a refund names its exception
instead of a payment (exactly one of the two), and keeps the notify URL it
is sent with (issue 5).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 02:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
ONE_SUBJECT = ("(payment_id IS NULL AND exception_id IS NOT NULL) OR "
               "(payment_id IS NOT NULL AND exception_id IS NULL)")


def upgrade() -> None:
    with op.batch_alter_table('payment_refund', schema=None) as batch_op:
        batch_op.add_column(sa.Column('exception_id', BIG_ID, nullable=True))
        batch_op.add_column(sa.Column('notify_url', sa.String(length=500), nullable=True))
        batch_op.alter_column('payment_id', existing_type=BIG_ID, nullable=True)
        batch_op.create_foreign_key(
            op.f('fk_payment_refund_exception_id_payment_exception'), 'payment_exception',
            ['exception_id'], ['id'])
        batch_op.create_check_constraint(op.f('ck_payment_refund_one_subject'), ONE_SUBJECT)
        batch_op.create_index('ix_payment_refund_exception', ['exception_id'], unique=False)


def downgrade() -> None:
    # Refunds of money in suspense have no payment: they cannot survive the
    # old schema, so downgrading refuses while any exists.
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT count(*) FROM payment_refund WHERE payment_id IS NULL")).scalar():
        raise RuntimeError("refunds of money in suspense exist; they would be lost by a downgrade")
    with op.batch_alter_table('payment_refund', schema=None) as batch_op:
        batch_op.drop_index('ix_payment_refund_exception')
        batch_op.drop_constraint(op.f('ck_payment_refund_one_subject'), type_='check')
        batch_op.drop_constraint(op.f('fk_payment_refund_exception_id_payment_exception'),
                                 type_='foreignkey')
        batch_op.alter_column('payment_id', existing_type=BIG_ID, nullable=False)
        batch_op.drop_column('notify_url')
        batch_op.drop_column('exception_id')
