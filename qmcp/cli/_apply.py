"""`qmcp apply -f FILE`: create or update the agents and topologies a YAML/JSON file declares."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ._output import print_json, stdout
from ._state import CliState, FormatOption, cli_state, open_database

if TYPE_CHECKING:
    from ._teamfile import Change, TeamFile

__all__ = ["apply"]


def apply(
    ctx: typer.Context,
    file: Annotated[
        str,
        typer.Option(
            "--file",
            "-f",
            metavar="FILE",
            help="A YAML or JSON file declaring agents and topologies; - for stdin.",
        ),
    ],
    output_format: FormatOption = None,
) -> None:
    """Create or update agents and topologies from a file; applying it again changes nothing.

    The file is validated as a whole first: each problem is reported with the path of its
    field, and nothing is written unless all of it is valid.
    """
    from ._teamfile import load_team

    state = cli_state(ctx)
    text = _read(file)
    label = "<stdin>" if file == "-" else file
    team = load_team(label, text, is_json=file.lower().endswith(".json"))
    changes = asyncio.run(_apply(state, team))
    changed = [c for c in changes if c.action != "unchanged"]
    if state.json_output(output_format):
        print_json(
            {
                "file": label,
                "changed": bool(changed),
                "results": [{"kind": c.kind, "name": c.name, "action": c.action} for c in changes],
            }
        )
        return
    console = stdout()
    for change in changes:
        style = "dim" if change.action == "unchanged" else "green"
        console.print(f"{change.kind} [bold]{change.name}[/bold] [{style}]{change.action}[/{style}]")
    if not changed:
        console.print(f"{label}: no changes, {len(changes)} object(s) already up to date")
        return
    counts = {
        action: sum(c.action == action for c in changes) for action in ("created", "updated", "unchanged")
    }
    console.print(f"{label}: " + ", ".join(f"{n} {action}" for action, n in counts.items()))


def _read(file: str) -> str:
    from qmcp.agentframework.errors import UserInputError

    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"{file}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"{file}: cannot read it: {getattr(error, 'strerror', None) or error}") from None


async def _apply(state: CliState, team: TeamFile) -> list[Change]:
    from ._teamfile import apply_team

    async with open_database(state) as db:
        return await apply_team(db, team)
