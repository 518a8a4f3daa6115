"""`qmcp db ...`: the database's schema revision, and upgrading it (Alembic migrations shipped with qmcp).

A database is upgraded on its first use anyway; with `QMCP_AUTO_MIGRATE=0` it is refused until
`qmcp db upgrade` runs, so an operator chooses when (after a backup, before starting the servers).
"""

from __future__ import annotations

import typer

from ._output import print_json, stdout
from ._state import FormatOption, cli_state, run_async

__all__ = ["db_app"]

db_app = typer.Typer(no_args_is_help=True, help="The database's schema: its revision, and upgrading it.")


@db_app.command("upgrade")
def upgrade(ctx: typer.Context, output_format: FormatOption = None) -> None:
    """Upgrade the database to this qmcp's schema (a new database gets every table)."""
    from qmcp.agentframework.store import migrate
    from qmcp.redaction import mask_url

    state = cli_state(ctx)
    before, after = run_async(migrate(state.db_url))
    if state.json_output(output_format):
        print_json({"database": mask_url(state.db_url), "from": before, "to": after})
    elif before == after:
        stdout().print(f"{mask_url(state.db_url)} is at schema revision {after}: nothing to do")
    else:
        stdout().print(
            f"upgraded {mask_url(state.db_url)} from schema revision {before or 'none'} to {after}"
        )


@db_app.command("current")
def current(ctx: typer.Context, output_format: FormatOption = None) -> None:
    """Show the database's schema revision and this qmcp's."""
    from qmcp.agentframework.store import SCHEMA_HEAD, schema_revision
    from qmcp.redaction import mask_url

    state = cli_state(ctx)
    revision = run_async(schema_revision(state.db_url))
    if state.json_output(output_format):
        print_json({"database": mask_url(state.db_url), "revision": revision, "head": SCHEMA_HEAD})
        return
    status = "up to date" if revision == SCHEMA_HEAD else f"behind: run {state.command('db', 'upgrade')}"
    stdout().print(
        f"{mask_url(state.db_url)}: schema revision {revision or 'none'} ({status}); this qmcp: {SCHEMA_HEAD}"
    )
