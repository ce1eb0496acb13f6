"""worker credentials and sessions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrolment_token",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("worker_name", sa.String(length=250), nullable=False),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrolment_token")),
    )
    # Workers of the shared-token era hold no credential: they enrol again.
    op.execute("DELETE FROM worker")
    with op.batch_alter_table("worker", schema=None) as batch_op:
        batch_op.add_column(sa.Column("credential_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("allowed_queues", sa.JSON(), nullable=False))
        batch_op.add_column(sa.Column("session_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("maintenance", sa.Boolean(), nullable=False))
        batch_op.add_column(sa.Column("maintenance_comment", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("requested_maintenance", sa.Boolean(), nullable=False))
        batch_op.add_column(sa.Column("requested_comment", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("shutdown_requested", sa.Boolean(), nullable=False))
        batch_op.add_column(sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False))
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.alter_column("first_seen", existing_type=sa.DateTime(timezone=True), nullable=True)
        batch_op.alter_column(
            "last_heartbeat", existing_type=sa.DateTime(timezone=True), nullable=True
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_worker_credential_hash"), ["credential_hash"]
        )


def downgrade() -> None:
    with op.batch_alter_table("worker", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_worker_credential_hash"), type_="unique")
        batch_op.alter_column(
            "last_heartbeat", existing_type=sa.DateTime(timezone=True), nullable=False
        )
        batch_op.alter_column(
            "first_seen", existing_type=sa.DateTime(timezone=True), nullable=False
        )
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("enrolled_at")
        batch_op.drop_column("shutdown_requested")
        batch_op.drop_column("requested_comment")
        batch_op.drop_column("requested_maintenance")
        batch_op.drop_column("maintenance_comment")
        batch_op.drop_column("maintenance")
        batch_op.drop_column("session_id")
        batch_op.drop_column("allowed_queues")
        batch_op.drop_column("credential_hash")

    op.drop_table("enrolment_token")
