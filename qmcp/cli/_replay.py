"""`qmcp executions replay` and `export-fixture`: replay tests and recorded fixtures (`qmcp.testing`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._output import print_json
from ._state import FormatOption, cli_state, run_async

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
    output_format: FormatOption = None,
) -> None:
    """Run today's topology code against a recorded run, calling no model: exit 0 if every step
    (key, slot, prompt) and the output are as recorded, else 1 naming the first difference."""
    import dataclasses

    from qmcp.testing import replay_async

    state = cli_state(ctx)
    result = run_async(replay_async(source, db_url=state.db_url))
    if state.json_output(output_format):
        print_json(dataclasses.asdict(result) | {"identical": True})
        return
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
    from qmcp.testing import export_fixture_async, save_fixture

    state = cli_state(ctx)
    if output is not None and not output.parent.resolve().is_dir():
        from qmcp.agentframework.errors import UserInputError

        raise UserInputError(f"--output: the directory of {output} does not exist")
    document = run_async(export_fixture_async(execution_id, db_url=state.db_url))
    if output is None:
        print_json(document)
        return
    save_fixture(document, output)
    typer.echo(f"wrote {len(document['steps'])} steps to {output}", err=True)


def add_replay_commands(app: typer.Typer) -> None:
    """Add `replay` and `export-fixture` to the `qmcp executions` group."""
    app.command("replay")(replay_execution)
    app.command("export-fixture")(export_fixture)
