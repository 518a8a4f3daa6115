"""Alembic's environment for qmcp's tables: run by `store/_migrate.py` on a connection it opened.

qmcp runs its migrations itself (`qmcp db upgrade`, or on first use of a database), inside one
transaction it holds: the connection comes in `config.attributes["connection"]`.
"""

from alembic import context

from qmcp.agentframework.models import metadata
from qmcp.agentframework.store import SCHEMA_VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("qmcp's migrations run through `qmcp db upgrade`, not the alembic command")
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=SCHEMA_VERSION_TABLE,
    render_as_batch=True,  # SQLite alters a table by copying it
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
