"""`qmcp agents topologies ...`: create, list, show and run topologies; list their types."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from ._output import count, format_duration, format_when, print_json, print_table, stdout
from ._run import RunRequest, execute, exit_code, print_outcome, slot_models
from ._state import CliState, FormatOption, cli_state, open_database, run_async

if TYPE_CHECKING:
    from qmcp.agentframework.models import AgentType, Execution, Topology
    from qmcp.app import TopologyDefined

__all__ = ["topologies_app"]

topologies_app = typer.Typer(
    no_args_is_help=True, help="Topologies: agents in slots, run as a pipeline, ensemble, debate, ..."
)

RUNNERS = ("local", "async", "metaflow")


def _complete_type(incomplete: str) -> list[str]:
    from qmcp.agentframework.topologies import TopologyRegistry

    return [name for name in TopologyRegistry.list() if name.startswith(incomplete)]


def _complete_runner(incomplete: str) -> list[str]:
    return [name for name in RUNNERS if name.startswith(incomplete)]


def parse_json_object(text: str, option: str, stored_as: str | None = None) -> dict[str, Any]:
    """`text` as a JSON object, or a one-line error naming `option` (too deep: `stored_as`, the field
    the value is stored as, in the sentence every door gives)."""
    from qmcp.agentframework.errors import UserInputError
    from qmcp.agentframework.models import JSON_TOO_DEEP, MAX_JSON_DEPTH

    from ._documents import check_json_bounds

    # 2 million values are not decoded first, nor 1,000 levels (the decoder's recursion would give out):
    # what is deeper than the store keeps is refused before
    too_deep = None if stored_as is None else f"{stored_as} {JSON_TOO_DEEP}"
    check_json_bounds(option, text, max_depth=MAX_JSON_DEPTH, too_deep=too_deep)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserInputError(
            f"{option} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    if not isinstance(value, dict):
        raise UserInputError(f'{option} must be a JSON object, like \'{{"prompt": "..."}}\'')
    return value


def read_input(input_json: str | None, input_file: str | None) -> dict[str, Any]:
    """The run's input from `--input-json TEXT` or `--input-file PATH|-` (exactly one of them)."""
    import sys

    from qmcp.agentframework.errors import UserInputError

    if (input_json is None) == (input_file is None):
        raise UserInputError(
            'give the input with --input-json \'{"prompt": "..."}\' or --input-file PATH (- for stdin), one of them'
        )
    if input_json is not None:
        return parse_json_object(input_json, "--input-json", "input_data")
    assert input_file is not None
    from ._documents import MAX_FILE_BYTES, too_large

    label = "stdin" if input_file == "-" else input_file
    try:  # at most one byte past the bound is read: the file may be endless
        if input_file == "-":
            data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        else:
            with Path(input_file).open("rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise too_large(f"--input-file {label}")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise UserInputError(f"--input-file {input_file}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise UserInputError(f"--input-file {input_file}: cannot read it: {reason}") from None
    return parse_json_object(text, f"--input-file {label}", "input_data")


def topology_document(topology: Topology, agents: dict[str, AgentType]) -> dict[str, Any]:
    return {
        **topology.definition(),
        "agents": {slot: agent.name for slot, agent in agents.items()},
        "created_at": topology.created_at,
        "updated_at": topology.updated_at,
    }


@topologies_app.command("list")
def list_topologies(ctx: typer.Context, output_format: FormatOption = None) -> None:
    """List topologies."""
    state = cli_state(ctx)

    async def fetch() -> list[tuple[Topology, int]]:
        async with open_database(state) as db:
            return await db.list_topologies()

    topologies = run_async(fetch())
    if state.json_output(output_format):
        print_json([{**t.definition(), "slots": n, "created_at": t.created_at} for t, n in topologies])
        return
    print_table(
        None,
        ["Name", "Type", "Slots", "Description"],
        [(t.name, t.topology_type, n, t.description) for t, n in topologies],
        empty="no topologies; create one with: qmcp agents topologies create NAME TYPE --agent SLOT=AGENT",
    )


@topologies_app.command("types")
def list_types(ctx: typer.Context, output_format: FormatOption = None) -> None:
    """List the topology types: the built-ins and those the modules in QMCP_IMPORTS register."""
    from qmcp.agentframework.topologies import BaseTopology, TopologyRegistry

    state = cli_state(ctx)
    rows = []
    for name in TopologyRegistry.list():
        topology_class = TopologyRegistry.get(name)
        planned = topology_class.step_plan is not BaseTopology.step_plan
        rows.append(
            {
                "name": name,
                "class": f"{topology_class.__module__}:{topology_class.__qualname__}",
                "config": list(topology_class.config_class.model_fields),
                "metaflow": "a step per agent call" if planned else "one step",
            }
        )
    if state.json_output(output_format):
        print_json(rows)
        return
    print_table(
        None,
        ["Type", "Config", "On Metaflow", "Class"],
        [(r["name"], ", ".join(r["config"]) or "-", r["metaflow"], r["class"]) for r in rows],
    )


@topologies_app.command("show")
def show_topology(
    ctx: typer.Context,
    name: str,
    output_format: FormatOption = None,
    mermaid: Annotated[
        bool, typer.Option("--mermaid", help="Print the topology's graph as a Mermaid flowchart instead.")
    ] = False,
) -> None:
    """Show a topology: its config, its agents by slot and its latest executions."""
    state = cli_state(ctx)
    if mermaid:
        sys.stdout.write(run_async(_mermaid(state, name)))
        return

    async def fetch() -> tuple[Topology, dict[str, AgentType], list[Execution]]:
        async with open_database(state) as db:
            topology, agents = await db.get_topology(name)
            return topology, agents, await db.list_executions(topology_name=name, limit=5)

    topology, agents, executions = run_async(fetch())
    if state.json_output(output_format):
        document = topology_document(topology, agents)
        document["agents"] = {slot: agent.definition() for slot, agent in agents.items()}
        print_json(
            document
            | {
                "recent_executions": [
                    e.model_dump(include={"id", "status", "created_at"}) for e in executions
                ]
            }
        )
        return
    print_table(
        f"topology {topology.name}",
        ["Field", "Value"],
        [
            ("type", topology.topology_type),
            ("description", topology.description or "-"),
            *((f"config.{key}", json.dumps(value)) for key, value in topology.config.items()),
            ("created", format_when(topology.created_at)),
        ],
    )
    models = slot_models(agents, state.model)
    print_table(
        "slots",
        ["Slot", "Agent", "Role", "Model"],
        [(slot, agent.name, agent.role, models[slot][1]) for slot, agent in agents.items()],
        empty="no agents",
    )
    print_table(
        "latest executions",
        ["Execution", "Status", "Started", "Duration"],
        [(e.id, e.status, format_when(e.started_at), format_duration(e.duration_ms)) for e in executions],
        empty=f"no executions yet; run it with: qmcp agents topologies run {name} --input-json '{{...}}'",
    )


async def _mermaid(state: CliState, name: str) -> str:
    from qmcp.agentframework.runners import collect_teams
    from qmcp.agentframework.topologies import topology_dag

    async with open_database(state) as db:
        topology, agents = await db.get_topology(name)
        return topology_dag(topology, agents, await collect_teams(db, topology)).mermaid()


@topologies_app.command("delete")
def delete_topology(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="The topologies to delete.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Delete even if executions ran it; they keep their snapshot of the team."
        ),
    ] = False,
    output_format: FormatOption = None,
) -> None:
    """Delete topologies (their agents stay); refused while executions reference one, unless --force."""
    from qmcp import app as operations

    state = cli_state(ctx)

    async def delete() -> None:
        async with open_database(state) as db:
            caller = operations.Caller.operator(operations.Door.CLI)
            await operations.delete_topologies(db, names, caller, force=force)

    run_async(delete())
    if state.json_output(output_format):
        print_json({"deleted": names})
        return
    stdout().print(f"deleted topology [bold]{escape(', '.join(names))}[/bold]")


@topologies_app.command("create")
def create_topology(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Lowercase letters, digits, '_' or '-'.")],
    topology_type: Annotated[
        str,
        typer.Argument(
            metavar="TYPE",
            help="pipeline, ensemble, debate, crosscheck, ... (all: qmcp agents topologies types)",
            autocompletion=_complete_type,
        ),
    ],
    agent: Annotated[
        list[str] | None,
        typer.Option(
            "--agent", "-a", metavar="SLOT=AGENT", help="Put an agent in a slot; repeat for each slot."
        ),
    ] = None,
    config_json: Annotated[
        str | None, typer.Option("--config-json", help="The type's config, e.g. '{\"max_rounds\": 2}'.")
    ] = None,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    output_format: FormatOption = None,
) -> None:
    """Create a topology from stored agents."""
    from qmcp import app as operations

    state = cli_state(ctx)
    spec = operations.TopologySpec(
        name=name,
        type=topology_type,
        description=description,
        config=parse_json_object(config_json, "--config-json") if config_json is not None else {},
        agents=_parse_slots(agent or []),
    )

    async def create() -> TopologyDefined:
        async with open_database(state) as db:
            return await operations.create_topology(db, spec, operations.Caller.operator(operations.Door.CLI))

    defined = run_async(create())
    stored, agents = defined.topology, defined.agents
    if state.json_output(output_format):
        print_json(topology_document(stored, agents))
        return
    run = state.command("agents", "topologies", "run", stored.name, "--input-json", '{"prompt": "..."}')
    stdout().print(
        f"created topology [bold]{stored.name}[/bold] ({stored.topology_type}, {count(len(agents), 'slot')}); "
        f"run it with: {escape(run)}",
        soft_wrap=True,
    )


def _parse_slots(pairs: list[str]) -> dict[str, str]:
    from qmcp.agentframework.errors import UserInputError

    slots: dict[str, str] = {}
    for pair in pairs:
        slot, sep, agent_name = pair.partition("=")
        slot, agent_name = slot.strip(), agent_name.strip()
        if not sep or not slot or not agent_name:
            raise UserInputError(f"--agent expects SLOT=AGENT, got {pair!r}")
        if slot in slots:
            raise UserInputError(f"slot {slot!r} is given twice")
        slots[slot] = agent_name
    return slots


@topologies_app.command("run")
def run_topology(
    ctx: typer.Context,
    name: str,
    input_json: Annotated[
        str | None,
        typer.Option("--input-json", help='The input, a JSON object, e.g. \'{"prompt": "..."}\'.'),
    ] = None,
    input_file: Annotated[
        str | None,
        typer.Option(
            "--input-file",
            metavar="PATH|-",
            help="Read the input JSON object from a file, or from stdin with -, for inputs too large to pass as an argument.",
        ),
    ] = None,
    runner: Annotated[
        str, typer.Option("--runner", help="local, async or metaflow.", autocompletion=_complete_runner)
    ] = "local",
    max_concurrent: Annotated[
        int | None, typer.Option("--max-concurrent", min=1, help="Most model calls at once (async runner).")
    ] = None,
    max_cost: Annotated[
        float | None,
        typer.Option(
            "--max-cost", min=0, metavar="USD", help="Stop before the run spends more (US dollars)."
        ),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", min=1, help="Stop before the run uses more tokens (in + out)."),
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream", help="Show the running step's text as the model writes it.")
    ] = False,
    output_format: FormatOption = None,
) -> None:
    """Run a topology, showing each step as it happens; Ctrl-C cancels and prints how to resume.

    Exit status: 0 completed, 1 failed or cancelled, 3 paused for a person's answer (a human gate:
    `qmcp executions respond` answers it and the run goes on), 130 interrupted.
    """
    state = cli_state(ctx)
    input_data = read_input(input_json, input_file)
    _topology, agents = run_async(_trusted_topology(state, name))
    request = RunRequest(
        topology_name=name,
        slots=slot_models(agents, state.model),
        runner_type=runner,
        config={
            "model_override": state.model,
            "max_concurrent": max_concurrent,
            "max_cost_usd": max_cost,
            "max_tokens": max_tokens,
        },
        stream=stream,
    )
    json_output = state.json_output(output_format)
    outcome = execute(
        state, request, lambda launch: launch.start_stored(state, name, input_data), json_output=json_output
    )
    print_outcome(state, outcome, json_output=json_output)
    if code := exit_code(outcome.result):
        raise typer.Exit(code)


async def _trusted_topology(state: CliState, name: str) -> tuple[Topology, dict[str, AgentType]]:
    """A stored topology whose agents may run: their executable items must be trusted (a run, or a
    flow file written from them, would run that code)."""
    from qmcp.agentframework.runners import require_trusted

    async with open_database(state) as db:
        topology, agents = await db.get_topology(name)
        await require_trusted(db, agents, topology=name)
        return topology, agents


@topologies_app.command("export")
def export_topology(
    ctx: typer.Context,
    name: str,
    metaflow: Annotated[
        Path, typer.Option("--metaflow", metavar="DIR", help="Write a Metaflow flow file into DIR.")
    ],
    output_format: FormatOption = None,
) -> None:
    """Write a stored topology as a Metaflow flow (python FILE run --input-json '{...}')."""
    from qmcp.agentframework.runners import export_flow

    state = cli_state(ctx)
    topology, agents = run_async(_trusted_topology(state, name))
    path = export_flow(topology, agents, metaflow)
    if state.json_output(output_format):
        print_json({"topology": name, "flow": str(path)})
        return
    stdout().print(f"wrote {path}; run it with: python {path} run --input-json '{{...}}'", soft_wrap=True)
