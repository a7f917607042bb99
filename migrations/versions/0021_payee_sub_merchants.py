"""payments collected in the payee's own name

A payment whose seller is paid as payee is collected for the seller's own
merchant at the gateway (WeChat Pay service-provider mode with the seller's
``sub_mchid``; Alipay under the ``app_auth_token`` the seller's
authorisation gave the platform's app; the sandbox's sub-merchant):

* ``payment.sub_merchant``: the merchant every request about the payment
  names (NULL: the adapter's own merchant, as for every payment before);
* ``payment_exception.sub_merchant``: the merchant the gateway said it
  collected money in suspense for (its refund goes back through it);
* ``gateway_merchant_authorization``: a merchant's authorisation of the
  platform at a gateway (Alipay's ``app_auth_token``), one per gateway and
  merchant.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('gateway_merchant_authorization',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('gateway', sa.String(length=16), nullable=False),
    sa.Column('merchant', sa.String(length=64), nullable=False),
    sa.Column('token', sa.String(length=128), nullable=False),
    sa.Column('actor', sa.String(length=80), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gateway_merchant_authorization')),
    sa.UniqueConstraint('gateway', 'merchant', name=op.f('uq_gateway_merchant_authorization_gateway'))
    )
    with op.batch_alter_table('payment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sub_merchant', sa.String(length=64), nullable=True))
    with op.batch_alter_table('payment_exception', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sub_merchant', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('payment_exception', schema=None) as batch_op:
        batch_op.drop_column('sub_merchant')
    with op.batch_alter_table('payment', schema=None) as batch_op:
        batch_op.drop_column('sub_merchant')
    op.drop_table('gateway_merchant_authorization')
