"""channel master data

The first slice of the channel network (issue 3): regions and customer
types (trees), grades, parties (brand, distributors, stores), groups with
their members, and manual tags. Rows of ``channel_api.models``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 19:41:30.960682
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('channel_customer_type',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('public_id', sa.String(length=40), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('parent_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.ForeignKeyConstraint(['parent_id'], ['channel_customer_type.id'], name=op.f('fk_channel_customer_type_parent_id_channel_customer_type')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_customer_type')),
    sa.UniqueConstraint('code', name=op.f('uq_channel_customer_type_code')),
    sa.UniqueConstraint('public_id', name=op.f('uq_channel_customer_type_public_id'))
    )
    with op.batch_alter_table('channel_customer_type', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_channel_customer_type_parent_id'), ['parent_id'], unique=False)

    op.create_table('channel_grade',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('public_id', sa.String(length=40), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_grade')),
    sa.UniqueConstraint('code', name=op.f('uq_channel_grade_code')),
    sa.UniqueConstraint('public_id', name=op.f('uq_channel_grade_public_id'))
    )
    op.create_table('channel_party_group',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('public_id', sa.String(length=40), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_party_group')),
    sa.UniqueConstraint('code', name=op.f('uq_channel_party_group_code')),
    sa.UniqueConstraint('public_id', name=op.f('uq_channel_party_group_public_id'))
    )
    op.create_table('channel_region',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('public_id', sa.String(length=40), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('parent_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('level', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['channel_region.id'], name=op.f('fk_channel_region_parent_id_channel_region')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_region')),
    sa.UniqueConstraint('code', name=op.f('uq_channel_region_code')),
    sa.UniqueConstraint('public_id', name=op.f('uq_channel_region_public_id'))
    )
    with op.batch_alter_table('channel_region', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_channel_region_parent_id'), ['parent_id'], unique=False)

    op.create_table('channel_party',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('public_id', sa.String(length=40), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('region_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_type_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('grade_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('owner_name', sa.String(length=200), nullable=False),
    sa.Column('contact_phone', sa.String(length=32), nullable=False),
    sa.Column('address', sa.String(length=500), nullable=False),
    sa.Column('quality_customer', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.CheckConstraint("role IN ('brand','distributor','store')", name=op.f('ck_channel_party_role')),
    sa.CheckConstraint("status IN ('active','frozen')", name=op.f('ck_channel_party_status')),
    sa.ForeignKeyConstraint(['customer_type_id'], ['channel_customer_type.id'], name=op.f('fk_channel_party_customer_type_id_channel_customer_type')),
    sa.ForeignKeyConstraint(['grade_id'], ['channel_grade.id'], name=op.f('fk_channel_party_grade_id_channel_grade')),
    sa.ForeignKeyConstraint(['region_id'], ['channel_region.id'], name=op.f('fk_channel_party_region_id_channel_region')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_party')),
    sa.UniqueConstraint('code', name=op.f('uq_channel_party_code')),
    sa.UniqueConstraint('public_id', name=op.f('uq_channel_party_public_id'))
    )
    with op.batch_alter_table('channel_party', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_channel_party_customer_type_id'), ['customer_type_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_channel_party_grade_id'), ['grade_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_channel_party_region_id'), ['region_id'], unique=False)

    op.create_table('channel_party_group_member',
    sa.Column('group_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('party_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['channel_party_group.id'], name=op.f('fk_channel_party_group_member_group_id_channel_party_group')),
    sa.ForeignKeyConstraint(['party_id'], ['channel_party.id'], name=op.f('fk_channel_party_group_member_party_id_channel_party')),
    sa.PrimaryKeyConstraint('group_id', 'party_id', name=op.f('pk_channel_party_group_member'))
    )
    with op.batch_alter_table('channel_party_group_member', schema=None) as batch_op:
        batch_op.create_index('ix_channel_party_group_member_party', ['party_id'], unique=False)

    op.create_table('channel_party_tag',
    sa.Column('party_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tag', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['party_id'], ['channel_party.id'], name=op.f('fk_channel_party_tag_party_id_channel_party')),
    sa.PrimaryKeyConstraint('party_id', 'tag', name=op.f('pk_channel_party_tag'))
    )
    with op.batch_alter_table('channel_party_tag', schema=None) as batch_op:
        batch_op.create_index('ix_channel_party_tag_tag', ['tag', 'party_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('channel_party_tag', schema=None) as batch_op:
        batch_op.drop_index('ix_channel_party_tag_tag')

    op.drop_table('channel_party_tag')
    with op.batch_alter_table('channel_party_group_member', schema=None) as batch_op:
        batch_op.drop_index('ix_channel_party_group_member_party')

    op.drop_table('channel_party_group_member')
    with op.batch_alter_table('channel_party', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_channel_party_region_id'))
        batch_op.drop_index(batch_op.f('ix_channel_party_grade_id'))
        batch_op.drop_index(batch_op.f('ix_channel_party_customer_type_id'))

    op.drop_table('channel_party')
    with op.batch_alter_table('channel_region', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_channel_region_parent_id'))

    op.drop_table('channel_region')
    op.drop_table('channel_party_group')
    op.drop_table('channel_grade')
    with op.batch_alter_table('channel_customer_type', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_channel_customer_type_parent_id'))

    op.drop_table('channel_customer_type')
