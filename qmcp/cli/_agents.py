"""`qmcp agents ...`: create, list, show and delete agents; list mixins."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._output import format_when, print_json, print_table, stderr, stdout
from ._state import FormatOption, cli_state, open_database, run_async
from ._topologies import topologies_app

if TYPE_CHECKING:
    from qmcp.agentframework.models import AgentRole, AgentType
    from qmcp.agentframework.store import Database
    from qmcp.app import AgentDefined

__all__ = ["agents_app"]

agents_app = typer.Typer(
    no_args_is_help=True, help="Agents: a name, a role and a model config. Topologies live under here too."
)
agents_app.add_typer(topologies_app, name="topologies")


def _complete_role(incomplete: str) -> list[str]:
    from qmcp.agentframework.models import AgentRole

    return [role.value for role in AgentRole if role.value.startswith(incomplete)]


def parse_role(value: str) -> AgentRole:
    """The role named `value`, or a one-line error listing the roles."""
    from qmcp.app import agent_role

    return agent_role(value)


def agent_document(agent: AgentType) -> dict[str, Any]:
    """An agent as JSON: its definition plus bookkeeping."""
    return {**agent.definition(), "created_at": agent.created_at, "updated_at": agent.updated_at}


def _model_of(config: Mapping[str, Any]) -> str:
    """The agent's model, or the default model it will get (`QMCP_DEFAULT_MODEL`)."""
    from qmcp.config import settings

    return str(config.get("model") or f"{settings().default_model} (default)")


@agents_app.command("list")
def list_agents(
    ctx: typer.Context,
    role: Annotated[
        str | None, typer.Option("--role", help="Only agents of this role.", autocompletion=_complete_role)
    ] = None,
    output_format: FormatOption = None,
) -> None:
    """List agents."""
    state = cli_state(ctx)
    wanted = parse_role(role) if role is not None else None

    async def fetch() -> list[AgentType]:
        async with open_database(state) as db:
            return await db.list_agents(role=wanted)

    agents = run_async(fetch())
    if state.json_output(output_format):
        print_json([agent_document(agent) for agent in agents])
        return
    print_table(
        None,
        ["Name", "Role", "Model", "Description"],
        [(a.name, a.role, _model_of(a.config), a.description) for a in agents],
        empty="no agents; create one with: qmcp agents create NAME ROLE",
    )


@agents_app.command("create")
def create_agent(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Lowercase letters, digits, '_' or '-'.")],
    role: Annotated[str, typer.Argument(help="planner, critic, writer, ...", autocompletion=_complete_role)],
    description: Annotated[str, typer.Option("--description", "-d", help="What this agent does.")] = "",
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="provider:name, e.g. anthropic:claude-sonnet-4-20250514 \\[default: $QMCP_DEFAULT_MODEL]",
        ),
    ] = None,
    system_prompt: Annotated[
        str | None, typer.Option("--system-prompt", help="Instructions for the agent.")
    ] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="0 to 2.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Longest reply, in tokens.")] = None,
    output_format: FormatOption = None,
) -> None:
    """Create an agent."""
    from qmcp import app as operations

    state = cli_state(ctx)
    options = {
        "model": model,
        "system_prompt": system_prompt,
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    spec = operations.AgentSpec(
        name, role, description, {key: value for key, value in options.items() if value is not None}
    )

    async def create() -> AgentDefined:
        async with open_database(state) as db:
            return await operations.create_agent(db, spec, operations.Caller.operator(operations.Door.CLI))

    defined = run_async(create())
    _print_notes(defined)
    stored = defined.agent
    if state.json_output(output_format):
        print_json(agent_document(stored))
        return
    stdout().print(f"created agent [bold]{stored.name}[/bold] ({stored.role}, {_model_of(stored.config)})")


def _print_notes(defined: AgentDefined) -> None:
    from rich.markup import escape

    for note in defined.notes:
        stderr().print(f"note: {escape(note)}", soft_wrap=True)


@agents_app.command("update")
def update_agent(
    ctx: typer.Context,
    name: str,
    role: Annotated[
        str | None, typer.Option("--role", help="A new role.", autocompletion=_complete_role)
    ] = None,
    description: Annotated[
        str | None, typer.Option("--description", "-d", help="What this agent does.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="provider:name, e.g. openai:gpt-4.1.")
    ] = None,
    system_prompt: Annotated[
        str | None, typer.Option("--system-prompt", help="Instructions for the agent.")
    ] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="0 to 2.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Longest reply, in tokens.")] = None,
    output_format: FormatOption = None,
) -> None:
    """Change an agent's role, description or model settings; the rest of its config stays.

    Topologies that use it run the new definition from their next run on; an agent that names
    code to run needs trust again once its definition changed.
    """
    from qmcp import app as operations
    from qmcp.agentframework.errors import UserInputError

    state = cli_state(ctx)
    changes = {
        "model": model,
        "system_prompt": system_prompt,
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    changes = {key: value for key, value in changes.items() if value is not None}
    if not changes and role is None and description is None:
        raise UserInputError(
            "nothing to change: give --model, --role, --description, --system-prompt, --temperature or --max-tokens"
        )
    request = operations.AgentChanges(name, role, description, changes)

    async def update() -> AgentDefined:
        async with open_database(state) as db:
            return await operations.update_agent(db, request, operations.Caller.operator(operations.Door.CLI))

    defined = run_async(update())
    _print_notes(defined)
    stored, changed = defined.agent, defined.action != "unchanged"
    if state.json_output(output_format):
        print_json(agent_document(stored) | {"changed": changed})
        return
    what = "updated" if changed else "unchanged"
    stdout().print(f"{what} agent [bold]{stored.name}[/bold] ({stored.role}, {_model_of(stored.config)})")


@agents_app.command("show")
def show_agent(ctx: typer.Context, name: str, output_format: FormatOption = None) -> None:
    """Show one agent and its config."""
    state = cli_state(ctx)

    async def fetch() -> tuple[AgentType, dict[str, Any]]:
        async with open_database(state) as db:
            agent = await db.get_agent(name)
            return agent, await _trust_status(db, agent)

    agent, trust = run_async(fetch())
    if state.json_output(output_format):
        print_json(agent_document(agent) | {"trust": trust})
        return
    config = {key: value for key, value in agent.config.items() if value not in (None, [], {})}
    if not trust["items"]:
        status = "nothing to trust: it names no tools, commands, models, endpoints or keys"
    elif trust["trusted"]:
        status = f"trusted by {trust['trusted_by']} ({trust['via']}, {format_when(trust['trusted_at'])})"
    else:
        trust_it = state.command("trust", "agent", agent.name, "--digest", trust["digest"])
        status = f"not trusted; runs refuse it until: {trust_it}"
    rows = [
        ("name", agent.name),
        ("role", agent.role),
        ("description", agent.description or "-"),
        ("model", _model_of(agent.config)),
        *((f"config.{key}", value) for key, value in config.items() if key != "model"),
        *(("runs", item) for item in trust["items"]),
        ("digest", trust["digest"]),
        ("trust", status),
        ("created", format_when(agent.created_at)),
        ("updated", format_when(agent.updated_at)),
    ]
    print_table(f"agent {agent.name}", ["Field", "Value"], rows)


async def _trust_status(db: Database, agent: AgentType) -> dict[str, Any]:
    """What the agent runs (its executable items), its digest and the trust record in force of its
    current definition."""
    from qmcp.agentframework.runners import SHORT_DIGEST, definition_digest, executable_items
    from qmcp.agentframework.store import trust_history

    items = executable_items(agent)
    digest = definition_digest(agent)
    records = await trust_history(db, agent.name)
    record = next((r for r in records if r.sha256 == digest and r.revoked_at is None), None)
    status: dict[str, Any] = {
        "items": items,
        "sha256": digest,
        "digest": digest[:SHORT_DIGEST],
        "trusted": record is not None or not items,
    }
    if record is not None:
        status |= {"trusted_by": record.trusted_by, "via": record.via, "trusted_at": record.trusted_at}
    return status


@agents_app.command("delete")
def delete_agent(ctx: typer.Context, name: str, output_format: FormatOption = None) -> None:
    """Delete an agent that no topology uses."""
    from qmcp import app as operations

    state = cli_state(ctx)

    async def delete() -> None:
        async with open_database(state) as db:
            await operations.delete_agent(db, name, operations.Caller.operator(operations.Door.CLI))

    run_async(delete())
    if state.json_output(output_format):
        print_json({"deleted": name})
        return
    stdout().print(f"deleted agent [bold]{name}[/bold]")


@agents_app.command("mixins")
def list_mixins(ctx: typer.Context, output_format: FormatOption = None) -> None:
    """List the mixins (capabilities) agents can enable through config.capabilities."""
    state = cli_state(ctx)
    rows = _mixins()
    if state.json_output(output_format):
        print_json(rows)
        return
    print_table(
        None,
        ["Name", "Version", "Description", "Depends on"],
        [
            (
                row["name"],
                row.get("version") or "-",
                row.get("description") or "",
                ", ".join(row.get("dependencies") or []),
            )
            for row in rows
        ],
    )


def _mixins() -> list[dict[str, Any]]:
    """The registered mixins: the built-ins and those the modules in QMCP_IMPORTS add."""
    from qmcp.agentframework.mixins import MixinRegistry

    return [
        {
            "name": info.name,
            "version": info.version,
            "description": info.description,
            "dependencies": list(info.dependencies),
        }
        for info in MixinRegistry.list_all()
    ]
