"""worker.update_requested: an operator's request that a worker move to the hub's version

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("worker", schema=None) as batch_op:
        batch_op.add_column(sa.Column("update_requested", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("worker", schema=None) as batch_op:
        batch_op.drop_column("update_requested")
