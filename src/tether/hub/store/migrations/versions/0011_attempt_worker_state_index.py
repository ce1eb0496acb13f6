"""task_attempt (worker_name, state): every heartbeat looks up its worker's running attempts

Without it, a heartbeat's reconcile and its directives each read the whole
table (every attempt ever made, until ``db clean``).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_task_attempt_worker_name_state"), "task_attempt", ["worker_name", "state"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_task_attempt_worker_name_state"), table_name="task_attempt")
