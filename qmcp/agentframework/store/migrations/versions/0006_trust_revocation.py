"""Trust records can be revoked: `trust_records.revoked_at` and `revoked_why`.

A revoked record matches nothing, so content trusted before a change (or before `qmcp untrust`)
is not trusted again when it is stored again. Records made before this revision stay in force;
the next change of their agent's definition revokes them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("trust_records", sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("trust_records", sa.Column("revoked_why", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trust_records") as batch:
        batch.drop_column("revoked_why")
        batch.drop_column("revoked_at")
