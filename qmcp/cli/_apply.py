"""`qmcp apply -f FILE`: create or update the agents and topologies a YAML/JSON file declares.

A team file is code: its agents can name tools, MCP server commands, output models, endpoints
and keys, which run or are sent when the agents run. `apply` stores the definitions either way,
but lists those executable items and asks whether to trust them (`--trust` says yes without
asking). Without an answer — stdin is not a terminal, or the file comes from stdin — they are
stored untrusted: runs refuse them until `qmcp trust agent NAME`, and apply says so.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from ._output import print_json, stderr, stdout
from ._state import CliState, FormatOption, cli_state, open_database, run_async

if TYPE_CHECKING:
    from qmcp.agentframework.runners import Untrusted
    from qmcp.app import Applied, Change, TeamDocument, TrustDecision

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
    trust: Annotated[
        bool,
        typer.Option(
            "--trust",
            help="Trust the code the file's agents name (tools, MCP commands, models, endpoints) without asking.",
        ),
    ] = False,
    output_format: FormatOption = None,
) -> None:
    """Create or update agents and topologies from a file; applying it again changes nothing.

    The file is validated as a whole first: each problem is reported with the path of its
    field, and nothing is written unless all of it is valid. Agents that name code to run
    (tools, MCP server commands, ...) are listed and must be trusted before they can run.
    """
    from ._documents import parse_document

    state = cli_state(ctx)
    label = "<stdin>" if file == "-" else file
    # parsed before the framework is imported: a hostile file is refused in milliseconds
    document = parse_document(label, _read(file), is_json=file.lower().endswith(".json"))
    from ._teamfile import validate_team

    team = validate_team(label, document)
    decision: TrustDecision = None  # no answer possible: stored untrusted
    if trust:
        decision = "qmcp apply --trust"
    elif file != "-" and sys.stdin.isatty():
        decision = partial(_ask, label)
    applied = run_async(_apply(state, team, decision))
    for note in applied.notes:
        stderr().print(f"note: {escape(note)}", soft_wrap=True)
    changes, trusted, untrusted = applied.changes, applied.trusted, applied.untrusted
    if state.json_output(output_format):
        print_json(
            {
                "file": label,
                "changed": applied.changed,
                "results": [{"kind": c.kind, "name": c.name, "action": c.action} for c in changes],
                "trusted": [_entry(state, e) for e in trusted],
                "untrusted": [_entry(state, e) for e in untrusted],
            }
        )
        return
    _print_changes(label, changes)
    console = stdout()
    for entry in trusted:
        console.print(
            f"agent [bold]{entry.agent.name}[/bold] [green]trusted[/green] to run: {escape('; '.join(entry.items))}",
            soft_wrap=True,
        )
    for entry in untrusted:
        command = state.command("trust", "agent", entry.agent.name)
        console.print(
            f"agent [bold]{entry.agent.name}[/bold] [yellow]stored untrusted[/yellow]: runs refuse it until "
            f"you review what it runs ({escape('; '.join(entry.items))}) and trust it with: {escape(command)}",
            soft_wrap=True,
        )


def _ask(label: str, pending: list[Untrusted]) -> str | None:
    """Ask whether to trust the pending agents: the `via` of their records, or None to store them untrusted."""
    from qmcp.agentframework.runners import trusted_by

    console = stderr()
    console.print(
        f"{escape(label)} names code that runs on this machine, or receives data, when its agents run:"
    )
    for entry in pending:
        console.print(f"  agent [bold]{entry.agent.name}[/bold]")
        for item in entry.items:
            console.print(f"    - {escape(item)}")
    if typer.confirm(f"Trust these agents to run all of it (recorded as user {trusted_by()})?", err=True):
        return "qmcp apply (confirmed)"
    return None


def _entry(state: CliState, entry: Untrusted) -> dict[str, Any]:
    return {
        "agent": entry.agent.name,
        "sha256": entry.digest,
        "items": entry.items,
        "trust_command": state.command("trust", "agent", entry.agent.name),
    }


def _print_changes(label: str, changes: list[Change]) -> None:
    console = stdout()
    for change in changes:
        style = "dim" if change.action == "unchanged" else "green"
        console.print(f"{change.kind} [bold]{change.name}[/bold] [{style}]{change.action}[/{style}]")
    if not any(c.action != "unchanged" for c in changes):
        console.print(f"{label}: no changes, {len(changes)} object(s) already up to date")
        return
    counts = {
        action: sum(c.action == action for c in changes) for action in ("created", "updated", "unchanged")
    }
    console.print(f"{label}: " + ", ".join(f"{n} {action}" for action, n in counts.items()))


def _read(file: str) -> str:
    """The file's text, reading at most one byte past the size bound (a file may be endless)."""
    from qmcp.agentframework.errors import UserInputError

    from ._documents import MAX_FILE_BYTES, too_large

    try:
        if file == "-":
            data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        else:
            with Path(file).open("rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise too_large("<stdin>" if file == "-" else file)
        return data.decode("utf-8")
    except FileNotFoundError:
        raise UserInputError(f"{file}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"{file}: cannot read it: {getattr(error, 'strerror', None) or error}") from None


async def _apply(state: CliState, team: TeamDocument, decision: TrustDecision) -> Applied:
    from qmcp import app as operations

    async with open_database(state) as db:
        return await operations.apply_team(
            db, team, operations.Caller.operator(operations.Door.CLI), trust=decision
        )
