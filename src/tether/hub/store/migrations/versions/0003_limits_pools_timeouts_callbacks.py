"""limits, pools, run timeouts and DAG callbacks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pool = op.create_table(
        "pool",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_pool")),
    )
    op.bulk_insert(
        pool,
        [
            {
                "name": "default_pool",
                "slots": -1,
                "description": "Tasks that name no pool; unlimited unless set",
            }
        ],
    )
    op.create_table(
        "callback_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("bundle_sha", sa.String(length=64), nullable=False),
        sa.Column("fileloc", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_request")),
    )
    with op.batch_alter_table("dag", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("max_active_runs", sa.Integer(), nullable=False, server_default="16")
        )
        batch_op.add_column(
            sa.Column("max_active_tasks", sa.Integer(), nullable=False, server_default="16")
        )
    with op.batch_alter_table("dag_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("timeout_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_dag_run_timeout_at"), ["timeout_at"], unique=False)
    with op.batch_alter_table("task_instance", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("pool", sa.String(length=256), nullable=False, server_default="default_pool")
        )


def downgrade() -> None:
    with op.batch_alter_table("task_instance", schema=None) as batch_op:
        batch_op.drop_column("pool")
    with op.batch_alter_table("dag_run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dag_run_timeout_at"))
        batch_op.drop_column("timeout_at")
    with op.batch_alter_table("dag", schema=None) as batch_op:
        batch_op.drop_column("max_active_tasks")
        batch_op.drop_column("max_active_runs")
    op.drop_table("pool")
    op.drop_table("callback_request")
