"""Topology types as text: `topologies.topology_type` was a database enum of the built-in types,
stored by member name (`PIPELINE`); it becomes VARCHAR(64) holding the type's name (`pipeline`), so
a registered `@topology` type can be stored too.

PostgreSQL converts the column in place and drops the `topologytype` enum. SQLite cannot change a
column's type: the table is copied (Alembic's batch mode), with foreign keys off for the copy and
checked after (`store/_migrate.py`).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_NAMES = {  # member name (0001) -> type name, as TopologyType had them
    "PIPELINE": "pipeline",
    "ENSEMBLE": "ensemble",
    "DEBATE": "debate",
    "CROSSCHECK": "crosscheck",
    "CHAIN_OF_COMMAND": "chain",
    "DELEGATION": "delegation",
    "COMPOUND": "compound",
}
_ENUM = sa.Enum(*_NAMES, name="topologytype")
_UPDATE = sa.text("UPDATE topologies SET topology_type = :new WHERE topology_type = :old")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE topologies ALTER COLUMN topology_type TYPE VARCHAR(64) USING topology_type::text"
        )
        op.execute("DROP TYPE IF EXISTS topologytype")
    else:
        with op.batch_alter_table("topologies") as batch:
            batch.alter_column(
                "topology_type", existing_type=_ENUM, type_=sa.String(64), existing_nullable=False
            )
    for old, new in _NAMES.items():
        bind.execute(_UPDATE, {"old": old, "new": new})


def downgrade() -> None:
    bind = op.get_bind()
    unknown = (
        bind.execute(
            sa.text(
                "SELECT DISTINCT topology_type FROM topologies WHERE topology_type NOT IN :names"
            ).bindparams(sa.bindparam("names", expanding=True)),
            {"names": list(_NAMES.values())},
        )
        .scalars()
        .all()
    )
    if unknown:
        raise RuntimeError(
            f"topologies of types revision 0001 cannot store: {', '.join(unknown)}; delete them first"
        )
    for old, new in _NAMES.items():
        bind.execute(_UPDATE, {"old": new, "new": old})
    if bind.dialect.name == "postgresql":
        _ENUM.create(bind)
        op.execute(
            "ALTER TABLE topologies ALTER COLUMN topology_type TYPE topologytype USING topology_type::topologytype"
        )
    else:
        with op.batch_alter_table("topologies") as batch:
            batch.alter_column(
                "topology_type", existing_type=sa.String(64), type_=_ENUM, existing_nullable=False
            )
