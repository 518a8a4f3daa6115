"""`qmcp trust ...` and `qmcp untrust ...`: allow stored definitions to run the code they name
(tools, MCP commands, ...), and take that back.

Runs refuse an agent whose definition names executable items until its exact content has been
trusted; the refusal names the command here that trusts it. Trusting prints each agent's items and
short digest, and records who (the OS user), when and the SHA-256 of the definition, so an edited
agent needs trust again. `--digest D` (what `qmcp agents show` printed) trusts only if the stored
content is still what was reviewed. `qmcp untrust` revokes an agent's records, for every content.
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

__all__ = ["trust_app", "untrust_app"]

trust_app = typer.Typer(
    no_args_is_help=True,
    help="Trust stored agents to run the code they name (tools, MCP server commands, models, endpoints).",
)

untrust_app = typer.Typer(
    no_args_is_help=True,
    help="Revoke the trust of stored agents: runs refuse their code until they are trusted again.",
)

DigestOption = Annotated[
    list[str] | None,
    typer.Option(
        "--digest",
        metavar="D",
        help="Trust only if each agent that names code still has one of these digests (the 12 hex "
        "digits qmcp agents show prints); repeat it for several agents.",
    ),
]


@trust_app.command("agent")
def trust_agent(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="The agents to trust.")],
    digest: DigestOption = None,
    output_format: FormatOption = None,
) -> None:
    """Trust agents as they are stored now; review them first with: qmcp agents show NAME."""

    async def collect(db: Database) -> list[AgentType]:
        return [await db.get_agent(name) for name in dict.fromkeys(names)]

    _trust(ctx, collect, digest, output_format)


@trust_app.command("topology")
def trust_topology(
    ctx: typer.Context,
    names: Annotated[
        list[str], typer.Argument(metavar="NAME...", help="The topologies whose agents to trust.")
    ],
    digest: DigestOption = None,
    output_format: FormatOption = None,
) -> None:
    """Trust every agent of topologies, and of the sub-topologies a compound runs, as stored now."""

    async def collect(db: Database) -> list[AgentType]:
        return await _topology_agents(db, names)

    _trust(ctx, collect, digest, output_format)


@trust_app.command("execution")
def trust_execution(
    ctx: typer.Context,
    execution_id: Annotated[str, typer.Argument(metavar="ID", help="The execution id (a UUID).")],
    digest: DigestOption = None,
    output_format: FormatOption = None,
) -> None:
    """Trust the agents an execution runs, as its snapshot holds them (for `qmcp executions resume`)."""

    async def collect(db: Database) -> list[AgentType]:
        from qmcp.agentframework.runners import snapshot_agents

        return snapshot_agents(await db.get_execution(execution_id))

    _trust(ctx, collect, digest, output_format)


async def _topology_agents(db: Database, names: Sequence[str]) -> list[AgentType]:
    """Every agent of the topologies `names` and of the sub-topologies their compounds run, by name."""
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


def _trust(
    ctx: typer.Context,
    collect: Callable[[Database], Awaitable[list[AgentType]]],
    digests: list[str] | None,
    output_format: FormatOption,
) -> None:
    from qmcp.agentframework.runners import (
        SHORT_DIGEST,
        check_reviewed,
        definition_digest,
        executable_items,
        trust,
        trusted_by,
    )

    state = cli_state(ctx)

    async def run() -> tuple[Sequence[AgentType], set[str]]:
        async with open_database(state) as db:
            agents = await collect(db)
            if digests:
                check_reviewed(agents, digests)  # trust records the digests of these very objects
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
                    "digest": definition_digest(agent)[:SHORT_DIGEST],
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
            f"agent [bold]{agent.name}[/bold] {mark} (digest {definition_digest(agent)[:SHORT_DIGEST]}) "
            f"to run: {escape('; '.join(items))}",
            soft_wrap=True,
        )


@untrust_app.command("agent")
def untrust_agent(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="The agents to untrust.")],
    output_format: FormatOption = None,
) -> None:
    """Revoke the trust of agents, for their current content and any earlier one."""

    async def collect(db: Database) -> list[str]:
        return [(await db.get_agent(name)).name for name in dict.fromkeys(names)]

    _untrust(ctx, collect, output_format)


@untrust_app.command("topology")
def untrust_topology(
    ctx: typer.Context,
    names: Annotated[
        list[str], typer.Argument(metavar="NAME...", help="The topologies whose agents to untrust.")
    ],
    output_format: FormatOption = None,
) -> None:
    """Revoke the trust of every agent of topologies, and of the sub-topologies a compound runs."""

    async def collect(db: Database) -> list[str]:
        return [agent.name for agent in await _topology_agents(db, names)]

    _untrust(ctx, collect, output_format)


def _untrust(
    ctx: typer.Context, collect: Callable[[Database], Awaitable[list[str]]], output_format: FormatOption
) -> None:
    from qmcp.agentframework.runners import trusted_by
    from qmcp.agentframework.store import revoke_trust

    state = cli_state(ctx)

    async def run() -> list[tuple[str, int]]:
        async with open_database(state) as db:
            return [
                (name, await revoke_trust(db, [name], f"untrusted by {trusted_by()}"))
                for name in await collect(db)
            ]

    revoked = run_async(run())
    if state.json_output(output_format):
        print_json([{"agent": name, "revoked": count} for name, count in revoked])
        return
    console = stdout()
    for name, count in revoked:
        what = f"revoked {count} trust record(s)" if count else "was not trusted"
        console.print(
            f"agent [bold]{name}[/bold] {what}; runs refuse its code until: "
            f"{escape(state.command('trust', 'agent', name))}",
            soft_wrap=True,
        )
