"""Forks and evaluations: an execution's parent and fork point, steps inherited from the parent
(`execution_steps.inherited`), the `qmcp eval` run an execution belongs to, and the eval tables.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:  # SQLite adds a foreign key by copying the table
        batch.add_column(sa.Column("parent_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("fork_key", sa.String(length=1000), nullable=True))
        batch.add_column(sa.Column("eval_id", sa.String(length=64), nullable=True))
        batch.create_foreign_key("executions_parent_id_fkey", "executions", ["parent_id"], ["id"])
    op.create_index("ix_executions_parent_id", "executions", ["parent_id"])
    op.create_index("ix_executions_eval_id", "executions", ["eval_id"])
    op.add_column(
        "execution_steps", sa.Column("inherited", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="eval_runs_pkey"),
    )
    op.create_index("ix_eval_runs_status", "eval_runs", ["status"])
    op.create_table(
        "eval_scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("eval_id", sa.String(length=64), nullable=False),
        sa.Column("sample_id", sa.String(length=200), nullable=False),
        sa.Column("variant", sa.String(length=200), nullable=False),
        sa.Column("repeat", sa.Integer(), nullable=False),
        sa.Column("execution_id", sa.Uuid(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("explanation", sa.String(), nullable=True),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="eval_scores_pkey"),
        sa.ForeignKeyConstraint(["eval_id"], ["eval_runs.id"], name="eval_scores_eval_id_fkey"),
        sa.ForeignKeyConstraint(["execution_id"], ["executions.id"], name="eval_scores_execution_id_fkey"),
        sa.UniqueConstraint(
            "eval_id",
            "sample_id",
            "variant",
            "repeat",
            name="eval_scores_eval_id_sample_id_variant_repeat_key",
        ),
    )
    op.create_index("ix_eval_scores_execution_id", "eval_scores", ["execution_id"])


def downgrade() -> None:
    op.drop_index("ix_eval_scores_execution_id", table_name="eval_scores")
    op.drop_table("eval_scores")
    op.drop_index("ix_eval_runs_status", table_name="eval_runs")
    op.drop_table("eval_runs")
    with op.batch_alter_table("execution_steps") as batch:
        batch.drop_column("inherited")
    op.drop_index("ix_executions_eval_id", table_name="executions")
    op.drop_index("ix_executions_parent_id", table_name="executions")
    with op.batch_alter_table("executions") as batch:
        batch.drop_constraint("executions_parent_id_fkey", type_="foreignkey")
        batch.drop_column("eval_id")
        batch.drop_column("fork_key")
        batch.drop_column("parent_id")
