"""`qmcp executions fork` and `qmcp executions diff`, and how a fork's lineage reads in `show` and
`list --tree`. Thin over `qmcp.app.fork_execution`, `lineage` and `diff_executions`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._output import excerpt, format_cost, format_tokens, print_json, print_table, stdout
from ._run import Launch, RunRequest, execute, exit_code, print_outcome, slot_models
from ._state import FormatOption, cli_state, open_database, run_async
from ._topologies import parse_json_object

if TYPE_CHECKING:
    from qmcp.agentframework.models import Execution
    from qmcp.agentframework.runners import RunResult
    from qmcp.app import ExecutionDiff, Lineage

__all__ = ["diff_command", "fork_command", "lineage_rows", "tree_order"]

_ID_HELP = "The execution id, or enough of its start to name one."


def _pairs(values: Sequence[str], option: str, what: str) -> dict[str, str]:
    """`NAME=VALUE` options as a dict (the value may hold `=`), or a one-line error naming `option`."""
    from qmcp.agentframework.errors import UserInputError

    pairs: dict[str, str] = {}
    for value in values:
        name, equals, rest = value.partition("=")
        if not equals or not name:
            raise UserInputError(f"{option} {value!r}: expected {what}")
        pairs[name] = rest
    return pairs


def fork_command(
    ctx: typer.Context,
    execution_id: Annotated[str, typer.Argument(metavar="ID", help=_ID_HELP)],
    at: Annotated[
        str,
        typer.Option(
            "--at",
            metavar="STEP_KEY",
            help="The step to run again from (see: qmcp executions show ID); the steps that started "
            "before it are reused as recorded, not paid again.",
        ),
    ],
    model: Annotated[
        str | None, typer.Option("--model", help="Run the fork's steps on this model (every agent).")
    ] = None,
    agent: Annotated[
        list[str] | None,
        typer.Option(
            "--agent",
            metavar="SLOT=AGENT",
            help="Put this stored (trusted) agent in SLOT from the fork step on; repeatable.",
        ),
    ] = None,
    input_json: Annotated[
        str | None,
        typer.Option(
            "--input-json", help="A new input, a JSON object (reused steps still replay as recorded)."
        ),
    ] = None,
    set_output: Annotated[
        list[str] | None,
        typer.Option(
            "--set-output",
            metavar="STEP_KEY=TEXT",
            help="Replace the recorded reply of a reused step (or of --at itself) before going on; repeatable.",
        ),
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream", help="Show the running step's text as the model writes it.")
    ] = False,
    output_format: FormatOption = None,
) -> None:
    """Fork an execution at a step: reuse the steps before it, run it and the rest again here.

    The fork is a new execution of the same team; reused steps are marked
    inherited, not paid again. --model, --agent, --input-json and --set-output
    change what runs."""
    from qmcp.app import ForkRequest

    state = cli_state(ctx)
    model = model or state.model
    request = ForkRequest(
        execution_id,
        at,
        model,
        _pairs(agent or [], "--agent", "SLOT=AGENT"),
        parse_json_object(input_json, "--input-json", "input_data") if input_json is not None else None,
        _pairs(set_output or [], "--set-output", "STEP_KEY=TEXT"),
    )

    async def fetch() -> tuple[Execution, dict[str, Any]]:
        async with open_database(state, read_only=True) as db:
            parent = await db.find_execution(execution_id)
            agents = dict(parent.agents_snapshot)
            for slot, name in request.agents.items():
                if slot in agents:  # a wrong slot is refused by the fork itself
                    agents[slot] = (await db.get_agent(name)).definition()
            return parent, agents

    parent, agents = run_async(fetch())

    async def start(launch: Launch) -> RunResult:
        from qmcp.agentframework.store import Owner
        from qmcp.app import Caller, Door, fork_execution

        extra = {k: v for k, v in launch.kwargs.items() if k in ("on_event", "stream")}
        async with open_database(state) as db:
            handle = await fork_execution(
                db,
                request,
                Caller.operator(Door.CLI),
                owner=Owner.this_process(),
                config=launch.config,
                **extra,
            )
            launch.execution_id = handle.execution_id
            return await handle.result(db)

    json_output = state.json_output(output_format)
    outcome = execute(
        state,
        RunRequest(
            topology_name=parent.topology_name,
            slots=slot_models(agents, model or parent.run_config.get("model_override"), ambient=False),
            runner_type=parent.runner_type,
            stream=stream,
        ),
        start,
        json_output=json_output,
    )
    if json_output:  # the run's result, and the lineage a script needs without another command
        print_json(outcome.result.model_dump(mode="json") | {"parent_id": str(parent.id), "fork_key": at})
    else:
        print_outcome(state, outcome, json_output=json_output)
        stdout().print(f"  forked from {parent.id} at {at}", soft_wrap=True, markup=False, highlight=False)
    if code := exit_code(outcome.result):
        raise typer.Exit(code)


def diff_command(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(metavar="A", help=_ID_HELP)],
    b: Annotated[str, typer.Argument(metavar="B", help=_ID_HELP)],
    output_format: FormatOption = None,
) -> None:
    """Compare two executions step by step: changed replies, tokens and cost.

    A run and its fork, say: each step's reply on both sides, and what each execution paid."""
    from qmcp.app import diff_executions

    state = cli_state(ctx)

    async def fetch() -> ExecutionDiff:
        async with open_database(state, read_only=True) as db:
            return await diff_executions(db, a, b)

    diff = run_async(fetch())
    if state.json_output(output_format):
        print_json(diff.model_dump(mode="json"))
        return
    rows = []
    for step in diff.steps:
        rows.append(
            (
                step.key,
                "changed" if step.reply_changed else "same",
                _reply(step.a),
                _reply(step.b),
                _tokens(step.a),
                _tokens(step.b),
                format_cost(step.a.cost_usd) if step.a else "",
                format_cost(step.b.cost_usd) if step.b else "",
            )
        )
    print_table(
        f"A {diff.a.id} · B {diff.b.id}",
        ["Step", "Reply", "A reply", "B reply", "A tokens", "B tokens", "A cost", "B cost"],
        rows,
        empty="neither execution recorded a step",
    )
    for label, totals in (("A", diff.a_totals), ("B", diff.b_totals)):
        stdout().print(
            f"{label} paid {totals.requests} calls · "
            f"{format_tokens(totals.input_tokens, totals.output_tokens)} tokens · {format_cost(totals.cost_usd)}",
            soft_wrap=True,
        )
    stdout().print(f"{diff.changed} of {len(diff.steps)} steps' replies differ", soft_wrap=True)


def _reply(side: Any) -> str:
    if side is None:
        return "(not run)"
    marks = [mark for mark, on in (("inherited", side.inherited), ("edited", side.edited)) if on]
    return excerpt(side.response, 40) + (f" ({', '.join(marks)})" if marks else "")


def _tokens(side: Any) -> str:
    return format_tokens(side.input_tokens, side.output_tokens) if side is not None else ""


def lineage_rows(lineage: Lineage) -> list[tuple[str, str]]:
    """The rows `executions show` adds for a fork and for an execution that was forked."""
    rows: list[tuple[str, str]] = []
    if lineage.ancestors:
        parent = lineage.ancestors[0]
        rows.append(("forked from", f"{parent.id} at {lineage.execution.fork_key}"))
        if len(lineage.ancestors) > 1:
            rows.append(("lineage", " ← ".join(a.id[:8] for a in lineage.ancestors)))
    for fork in lineage.forks:
        rows.append(("fork", f"{fork.id} at {fork.fork_key} ({fork.status})"))
    return rows


def tree_order(executions: Sequence[Execution]) -> list[tuple[int, Execution]]:
    """`executions` (newest first) with each fork under its parent (depth, execution), as
    `list --tree` draws them; a fork whose parent is not among them starts a tree of its own."""
    present = {e.id for e in executions}
    children: dict[Any, list[Execution]] = {}
    for execution in executions:
        parent = execution.parent_id if execution.parent_id in present else None
        children.setdefault(parent, []).append(execution)
    ordered: list[tuple[int, Execution]] = []

    def visit(execution: Execution, depth: int) -> None:
        ordered.append((depth, execution))
        for child in reversed(children.get(execution.id, [])):  # oldest fork first
            visit(child, depth + 1)

    for root in children.get(None, []):
        visit(root, 0)
    return ordered
