"""partial indexes on clearing documents

Three of ``clearing_share``'s indexes serve lookups of a subset only: legs
due for release (``state = 'pending'``), and legs a gateway carries
(``carried_by`` / ``carrier_payment`` set). As full indexes every document
paid an entry in each, released ones and custody ones included; as partial
indexes a custody leg written at clearing costs two index entries fewer,
and a leg released at once (the platform's) three. The queries that use
them all name the subset (``state = 'pending'``, ``carried_by IS NOT
NULL``, ``carrier_payment = ...``), so the planner still picks them.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 07:10:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None

_PARTIAL = (
    ("ix_clearing_share_due", ["state", "release_at"], "state = 'pending'"),
    ("ix_clearing_share_carry", ["carried_by", "carried_at"], "carried_by IS NOT NULL"),
    ("ix_clearing_share_carrier", ["carrier_payment"], "carrier_payment IS NOT NULL"),
)


def upgrade() -> None:
    for name, columns, where in _PARTIAL:
        op.drop_index(name, table_name="clearing_share")
        op.create_index(name, "clearing_share", columns, unique=False,
                        postgresql_where=sa.text(where), sqlite_where=sa.text(where))


def downgrade() -> None:
    for name, columns, _ in _PARTIAL:
        op.drop_index(name, table_name="clearing_share")
        op.create_index(name, "clearing_share", columns, unique=False)
