"""The human request a paused execution waits for: `executions.human_request_id`.

A run that pauses at a human gate reports the request to answer (`RunResult.human_request_id`),
also when its execution is read back later.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("executions", sa.Column("human_request_id", sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("human_request_id")
