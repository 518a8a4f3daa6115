"""The model requests an execution paid for: `executions.requests`, beside its tokens and cost, so an
execution's stored totals are a whole `Usage` (requests, input and output tokens, cost).

Executions made before it count 0 requests (their steps' `attempts` still say how many were made).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("executions", sa.Column("requests", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("requests")
