"""`qmcp executions replay` and `export-fixture`: replay tests and recorded fixtures (`qmcp.testing`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ._state import cli_state, run_async

__all__ = ["add_replay_commands"]


def replay_execution(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(
            metavar="ID_OR_FILE",
            help="An execution id (or enough of its start), or a fixture file from export-fixture.",
        ),
    ],
) -> None:
    """Run today's topology code against a recorded run, calling no model: exit 0 if every step
    (key, slot, prompt) and the output are as recorded, else 1 naming the first difference."""
    from qmcp.testing import replay_async

    state = cli_state(ctx)
    result = run_async(replay_async(source, db_url=state.db_url))
    typer.echo(str(result))


def export_fixture(
    ctx: typer.Context,
    execution_id: Annotated[
        str, typer.Argument(metavar="ID", help="The execution id, or enough of its start to name one.")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", dir_okay=False, help="Write to FILE \\[default: stdout]."
        ),
    ] = None,
) -> None:
    """Write an execution's recorded steps as a JSON fixture, for replay tests and
    `--model recorded:FILE` runs that need no provider."""
    import json

    from qmcp.testing import export_fixture_async, save_fixture

    state = cli_state(ctx)
    document = run_async(export_fixture_async(execution_id, db_url=state.db_url))
    if output is None:
        sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n")
        return
    save_fixture(document, output)
    typer.echo(f"wrote {len(document['steps'])} steps to {output}", err=True)


def add_replay_commands(app: typer.Typer) -> None:
    """Add `replay` and `export-fixture` to the `qmcp executions` group."""
    app.command("replay")(replay_execution)
    app.command("export-fixture")(export_fixture)
