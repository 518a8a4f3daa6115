"""What every step attempt paid: `step_usage`, one row per paid step attempt, kept even when its step
row was not (a displaced owner's), so an execution's totals can be the sum of what was paid.

An execution made before it gets one row holding its stored totals (no step key, no owner), so its
totals stay what they were and still equal the sum of its rows.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    usage = op.create_table(
        "step_usage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("execution_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=1000), nullable=True),
        sa.Column("agent_name", sa.String(length=64), nullable=True),
        sa.Column("model", sa.String(length=300), nullable=True),
        sa.Column("owner_token", sa.String(length=100), nullable=True),
        sa.Column("displaced", sa.Boolean(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="step_usage_pkey"),
        sa.ForeignKeyConstraint(["execution_id"], ["executions.id"], name="step_usage_execution_id_fkey"),
    )
    op.create_index("ix_step_usage_execution_id", "step_usage", ["execution_id"])
    executions = sa.table(
        "executions",
        sa.column("id", sa.Uuid()),
        sa.column("requests", sa.Integer()),
        sa.column("input_tokens", sa.Integer()),
        sa.column("output_tokens", sa.Integer()),
        sa.column("cost_usd", sa.Float()),
        sa.column("started_at", sa.DateTime(timezone=True)),
        sa.column("completed_at", sa.DateTime(timezone=True)),
    )
    e = executions.c
    op.execute(
        usage.insert().from_select(
            [
                "execution_id",
                "displaced",
                "requests",
                "input_tokens",
                "output_tokens",
                "cost_usd",
                "recorded_at",
            ],
            sa.select(
                e.id,
                sa.false(),
                e.requests,
                e.input_tokens,
                e.output_tokens,
                e.cost_usd,
                sa.func.coalesce(e.completed_at, e.started_at),
            ).where(sa.or_(e.requests > 0, e.input_tokens > 0, e.output_tokens > 0, e.cost_usd > 0)),
        )
    )


def downgrade() -> None:
    op.drop_index("ix_step_usage_execution_id", table_name="step_usage")
    op.drop_table("step_usage")
