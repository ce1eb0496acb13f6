"""assets

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "asset",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uri", sa.String(length=1500), nullable=False),
        sa.Column("name", sa.String(length=1500), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset")),
        sa.UniqueConstraint("uri", name=op.f("uq_asset_uri")),
    )
    op.create_table(
        "asset_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("source_dag_id", sa.String(length=250), nullable=True),
        sa.Column("source_run_id", sa.String(length=250), nullable=True),
        sa.Column("source_task_id", sa.String(length=250), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["asset.id"],
            name=op.f("fk_asset_event_asset_id_asset"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset_event")),
    )
    with op.batch_alter_table("asset_event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_asset_event_asset_id_id"), ["asset_id", "id"], unique=False
        )

    op.create_table(
        "dag_schedule_asset",
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["asset.id"],
            name=op.f("fk_dag_schedule_asset_asset_id_asset"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["dag_id"],
            ["dag.dag_id"],
            name=op.f("fk_dag_schedule_asset_dag_id_dag"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dag_id", "asset_id", name=op.f("pk_dag_schedule_asset")),
    )
    with op.batch_alter_table("dag_schedule_asset", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dag_schedule_asset_asset_id"), ["asset_id"], unique=False
        )

    op.create_table(
        "asset_dag_run_queue",
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("target_dag_id", sa.String(length=250), nullable=False),
        sa.Column("first_event_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["asset.id"],
            name=op.f("fk_asset_dag_run_queue_asset_id_asset"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["first_event_id"],
            ["asset_event.id"],
            name=op.f("fk_asset_dag_run_queue_first_event_id_asset_event"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["target_dag_id"],
            ["dag.dag_id"],
            name=op.f("fk_asset_dag_run_queue_target_dag_id_dag"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("asset_id", "target_dag_id", name=op.f("pk_asset_dag_run_queue")),
    )
    with op.batch_alter_table("asset_dag_run_queue", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_asset_dag_run_queue_target_dag_id"), ["target_dag_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("asset_dag_run_queue", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_asset_dag_run_queue_target_dag_id"))
    op.drop_table("asset_dag_run_queue")
    with op.batch_alter_table("dag_schedule_asset", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dag_schedule_asset_asset_id"))
    op.drop_table("dag_schedule_asset")
    with op.batch_alter_table("asset_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_asset_event_asset_id_id"))
    op.drop_table("asset_event")
    op.drop_table("asset")
