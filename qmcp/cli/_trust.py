"""`qmcp trust ...`: allow stored definitions to run the code they name (tools, MCP commands, ...).

Runs refuse an agent whose definition names executable items until its exact content has been
trusted; the refusal names the command here that trusts it. Trusting records who (the OS user),
when and the SHA-256 of the definition, so an edited agent needs trust again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ._output import print_json, stdout
from ._state import FormatOption, cli_state, open_database, run_async

if TYPE_CHECKING:
    from qmcp.agentframework.models import AgentType
    from qmcp.agentframework.store import Database

__all__ = ["trust_app"]

trust_app = typer.Typer(
    no_args_is_help=True,
    help="Trust stored agents to run the code they name (tools, MCP server commands, models, endpoints).",
)


@trust_app.command("agent")
def trust_agent(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="The agents to trust.")],
    output_format: FormatOption = None,
) -> None:
    """Trust agents as they are stored now; review them first with: qmcp agents show NAME."""

    async def collect(db: Database) -> list[AgentType]:
        return [await db.get_agent(name) for name in dict.fromkeys(names)]

    _trust(ctx, collect, output_format)


@trust_app.command("topology")
def trust_topology(
    ctx: typer.Context,
    names: Annotated[
        list[str], typer.Argument(metavar="NAME...", help="The topologies whose agents to trust.")
    ],
    output_format: FormatOption = None,
) -> None:
    """Trust every agent of topologies, and of the sub-topologies a compound runs, as stored now."""

    async def collect(db: Database) -> list[AgentType]:
        from qmcp.agentframework.models import CompoundConfig
        from qmcp.agentframework.topologies import referenced_topologies

        agents: dict[str, AgentType] = {}
        seen: set[str] = set()
        pending = list(dict.fromkeys(names))
        while pending:
            name = pending.pop(0)
            if name in seen:
                continue
            seen.add(name)
            topology, slots = await db.get_topology(name)
            for agent in slots.values():
                agents.setdefault(agent.name, agent)
            config = topology.parsed_config
            if isinstance(config, CompoundConfig):
                pending += referenced_topologies(config)
        return list(agents.values())

    _trust(ctx, collect, output_format)


@trust_app.command("execution")
def trust_execution(
    ctx: typer.Context,
    execution_id: Annotated[str, typer.Argument(metavar="ID", help="The execution id (a UUID).")],
    output_format: FormatOption = None,
) -> None:
    """Trust the agents an execution runs, as its snapshot holds them (for `qmcp executions resume`)."""

    async def collect(db: Database) -> list[AgentType]:
        from qmcp.agentframework.runners import snapshot_agents

        return snapshot_agents(await db.get_execution(execution_id))

    _trust(ctx, collect, output_format)


def _trust(
    ctx: typer.Context, collect: Callable[[Database], Awaitable[list[AgentType]]], output_format: FormatOption
) -> None:
    from qmcp.agentframework.runners import definition_digest, executable_items, trust, trusted_by

    state = cli_state(ctx)

    async def run() -> tuple[Sequence[AgentType], set[str]]:
        async with open_database(state) as db:
            agents = await collect(db)
            newly = await trust(db, agents, via="qmcp trust")
            return agents, {entry.agent.name for entry in newly}

    agents, newly = run_async(run())
    who = trusted_by()
    rows = []
    for agent in agents:
        items = executable_items(agent)
        status = "trusted" if agent.name in newly else "already trusted" if items else "nothing to trust"
        rows.append((agent, items, status))
    if state.json_output(output_format):
        print_json(
            [
                {
                    "agent": agent.name,
                    "status": status,
                    "sha256": definition_digest(agent),
                    "items": items,
                    **({"trusted_by": who} if status == "trusted" else {}),
                }
                for agent, items, status in rows
            ]
        )
        return
    console = stdout()
    for agent, items, status in rows:
        if not items:
            console.print(f"agent [bold]{agent.name}[/bold] runs no code of its own: nothing to trust")
            continue
        mark = (
            f"[green]trusted[/green] as user {who}" if status == "trusted" else "[dim]already trusted[/dim]"
        )
        console.print(
            f"agent [bold]{agent.name}[/bold] {mark} (sha256 {definition_digest(agent)[:12]}) "
            f"to run: {escape('; '.join(items))}",
            soft_wrap=True,
        )
