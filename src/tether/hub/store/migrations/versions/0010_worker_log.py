"""worker_log_line: each worker's own log, shipped over the worker API

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_log_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=250), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["worker"],
            ["worker.name"],
            name=op.f("fk_worker_log_line_worker_worker"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_log_line")),
    )
    with op.batch_alter_table("worker_log_line", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_worker_log_line_worker_id"), ["worker", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("worker_log_line", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_worker_log_line_worker_id"))
    op.drop_table("worker_log_line")
