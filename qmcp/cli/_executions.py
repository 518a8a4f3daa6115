"""`qmcp executions ...`: list, inspect, resume, cancel and prune executions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._forks import diff_command, fork_command, lineage_rows, tree_order
from ._output import (
    answer_text,
    excerpt,
    format_cost,
    format_duration,
    format_tokens,
    format_when,
    print_json,
    print_table,
    stderr,
    stdout,
)
from ._prune import prune
from ._replay import add_replay_commands
from ._run import RunRequest, execute, exit_code, print_outcome, run_config, slot_models
from ._state import FormatOption, cli_state, open_database, run_async

if TYPE_CHECKING:
    from qmcp.agentframework.models import Execution, ExecutionStep
    from qmcp.agentframework.store import Database
    from qmcp.app import Lineage

__all__ = ["executions_app"]

executions_app = typer.Typer(
    no_args_is_help=True,
    help="Executions: every run, its steps, tokens and cost; resume, cancel or prune them.",
)


def _complete_status(incomplete: str) -> list[str]:
    from qmcp.agentframework.models import ExecutionStatus

    return [s.value for s in ExecutionStatus if s.value.startswith(incomplete)]


@executions_app.command("list")
def list_executions(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only executions in this status.", autocompletion=_complete_status),
    ] = None,
    topology: Annotated[str | None, typer.Option("--topology", help="Only runs of this topology.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 20,
    ids: Annotated[
        bool, typer.Option("--ids", help="Print only the ids, one a line (for scripts: ID=$(...)).")
    ] = False,
    tree: Annotated[
        bool, typer.Option("--tree", help="Draw each fork under the execution it was forked from.")
    ] = False,
    output_format: FormatOption = None,
) -> None:
    """List executions, newest first."""
    from qmcp.app import ExecutionQuery
    from qmcp.app import list_executions as query_executions

    state = cli_state(ctx)
    query = ExecutionQuery(status.strip().lower() if status is not None else None, topology, limit)

    async def fetch() -> list[Execution]:
        async with open_database(state, read_only=True) as db:
            return (await query_executions(db, query)).executions

    executions = run_async(fetch())
    if ids:
        for execution in executions:
            typer.echo(str(execution.id))
        return
    if state.json_output(output_format):
        print_json([_summary(e) for e in executions])
        return
    drawn = tree_order(executions) if tree else [(0, e) for e in executions]
    print_table(
        None,
        ["Execution", "Topology", "Status", "Runner", "Started", "Duration", "Tokens", "Cost"],
        [
            (
                f"{'  ' * (depth - 1)}└ {e.id}" if depth else e.id,
                e.topology_name,
                e.status,
                e.runner_type,
                format_when(e.started_at),
                format_duration(e.duration_ms),
                format_tokens(e.input_tokens, e.output_tokens),
                format_cost(e.cost_usd),
            )
            for depth, e in drawn
        ],
        empty="no executions; run a topology with: qmcp agents topologies run NAME --input-json '{...}'",
    )
    for execution in executions:
        if str(execution.status) == "interrupted":
            stdout().print(
                f"{execution.id} was interrupted (its process is gone); resume it with: "
                f"{state.command('executions', 'resume', str(execution.id))}",
                soft_wrap=True,
            )


def _summary(execution: Execution) -> dict[str, Any]:
    return execution.model_dump(
        mode="json",
        exclude={"input_data", "output_data", "topology_snapshot", "agents_snapshot", "run_config"},
    )


@executions_app.command("show")
def show_execution(
    ctx: typer.Context,
    execution_id: Annotated[
        str, typer.Argument(metavar="ID", help="The execution id, or enough of its start to name one.")
    ],
    output_format: FormatOption = None,
    svg: Annotated[
        Path | None,
        typer.Option(
            "--svg",
            metavar="FILE",
            help="Also write the execution's diagram, steps coloured by status, as SVG to FILE.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Show an execution: status, timing, and every step with its model, tokens, cost and latency."""
    state = cli_state(ctx)
    if svg is not None and not (svg.parent.resolve().is_dir()):
        from qmcp.agentframework.errors import UserInputError

        raise UserInputError(f"--svg: the directory of {svg} does not exist")

    async def fetch() -> tuple[Execution, Sequence[ExecutionStep], Lineage]:
        from qmcp.app import lineage

        async with open_database(state, read_only=True) as db:
            execution = await db.find_execution(execution_id)
            return execution, await db.list_steps(execution.id), await lineage(db, execution.id)

    execution, steps, family = run_async(fetch())
    if svg is not None:
        _write_svg(svg, execution, steps)
    if state.json_output(output_format):
        print_json(
            execution.model_dump(mode="json")
            | {"steps": [s.model_dump(mode="json") for s in steps]}
            | {"lineage": family.model_dump(mode="json", include={"ancestors", "forks"})}
        )
        return
    rows: list[tuple[str, Any]] = [
        ("topology", f"{execution.topology_name} ({execution.topology_type})"),
        ("status", execution.status),
        ("runner", f"{execution.runner_type} · attempt {execution.attempts}"),
        ("started", format_when(execution.started_at)),
        ("completed", format_when(execution.completed_at)),
        ("duration", format_duration(execution.duration_ms)),
        ("tokens", format_tokens(execution.input_tokens, execution.output_tokens)),
        ("cost", format_cost(execution.cost_usd)),
        ("input", excerpt(json.dumps(execution.input_data, ensure_ascii=False), 120)),
    ]
    if execution.owner_token is not None:
        rows.append(
            (
                "owner",
                f"pid {execution.owner_pid} on {execution.owner_host}, lease until "
                f"{format_when(execution.lease_until)}",
            )
        )
    if execution.run_config.get("model_override"):
        rows.append(("model", f"{execution.run_config['model_override']} (every agent)"))
    budget = [
        text
        for text, present in (
            (f"{format_cost(execution.run_config.get('max_cost_usd') or 0)}", "max_cost_usd"),
            (f"{execution.run_config.get('max_tokens') or 0:,} tokens", "max_tokens"),
        )
        if execution.run_config.get(present) is not None
    ]
    if budget:
        rows.append(("budget", " · ".join(budget)))
    if execution.error:
        rows.append(("error", execution.error))
    rows += lineage_rows(family)
    print_table(f"execution {execution.id}", ["Field", "Value"], rows)
    if len(execution.history) > 1:
        print_table(
            "attempts",
            ["Attempt", "Started", "By", "Runner", "Changes"],
            [
                (
                    entry.get("attempt"),
                    format_when(_parse_when(entry.get("at"))),
                    entry.get("by", "") + (" (forced)" if entry.get("forced") else ""),
                    entry.get("runner", ""),
                    "; ".join(f"{k}: {v[0]} → {v[1]}" for k, v in (entry.get("changes") or {}).items())
                    + (f" took over from {entry['took_over_from']}" if entry.get("took_over_from") else ""),
                )
                for entry in execution.history
            ],
        )
    print_table(
        "steps",
        ["Key", "Slot", "Agent", "Model", "Status", "Tokens", "Cost", "Latency", "Output"],
        [
            (
                s.key,
                s.slot,
                s.agent_name,
                s.model,
                (s.status if s.attempts <= 1 else f"{s.status} ({s.attempts} attempts)")
                + (" (inherited)" if s.inherited else "")
                + (" (edited)" if (s.output or {}).get("edited") else ""),
                format_tokens(s.input_tokens, s.output_tokens),
                format_cost(s.cost_usd),
                format_duration(s.latency_ms),
                excerpt(s.error if s.error and not s.response else s.response, 60),
            )
            for s in steps
        ],
        empty="no steps recorded",
    )
    calls = [(s.key, call) for s in steps for call in (s.output or {}).get("tool_calls") or []]
    if calls:
        print_table(
            "tool calls",
            ["Step", "Tool", "Arguments", "Result"],
            [
                (
                    key,
                    call.get("tool"),
                    excerpt(json.dumps(call.get("args"), ensure_ascii=False), 60),
                    excerpt(
                        f"error: {call['error']}"
                        if call.get("error")
                        else json.dumps(call.get("result"), ensure_ascii=False),
                        60,
                    ),
                )
                for key, call in calls
            ],
        )
    answer = answer_text(execution.output_data)
    if answer:
        stdout().print("[bold]output[/bold]")
        stdout().print(answer, markup=False)
    if execution.status.is_resumable and str(execution.status) not in ("running", "paused"):
        stdout().print(
            f"resume it with: {state.command('executions', 'resume', str(execution.id))}", soft_wrap=True
        )


async def _request_id(db: Database, given: str) -> str:
    """`given` when it is a human request's id; else the one pending request of the execution it names."""
    from qmcp.agentframework.errors import NotFoundError, UserInputError

    try:
        return (await db.get_human_request(given)).id
    except NotFoundError:
        pass
    try:
        execution = await db.find_execution(given)
    except NotFoundError:
        raise NotFoundError(
            f"{given!r} is neither a human request id nor an execution id; "
            "a paused run prints the command that answers it"
        ) from None
    pending = await db.list_human_requests(execution_id=execution.id, status="pending")
    if len(pending) != 1:
        raise UserInputError(
            f"execution {execution.id} waits on {len(pending)} human requests; "
            + ("name one: " + ", ".join(r.id for r in pending) if pending else "nothing to answer")
        )
    return pending[0].id


def _write_svg(path: Path, execution: Execution, steps: Sequence[ExecutionStep]) -> None:
    """The diagram, written whole or not at all (through a file beside it, then renamed)."""
    import os
    import tempfile

    from qmcp.agentframework.topologies import execution_diagram

    dag, statuses = execution_diagram(execution, steps)
    text = dag.svg(
        statuses, title=f"execution {execution.id} of {execution.topology_name}: {execution.status}"
    )
    handle, partial = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise
    stderr().print(f"diagram written to {path}", markup=False, highlight=False)


def _user() -> str | None:
    """Who answers from this terminal, recorded with the answer."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


@executions_app.command("cost")
def cost(
    ctx: typer.Context,
    execution_id: Annotated[
        str | None,
        typer.Argument(
            metavar="[ID]",
            help="One execution (its id, or enough of its start): what every attempt paid, displaced calls apart.",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", metavar="WHEN", help="Only steps since then: 30m, 24h, 7d, or a date (2026-11-01)."
        ),
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Group by model, topology or agent.")] = None,
    output_format: FormatOption = None,
) -> None:
    """What the runs spent: tokens and cost by model, topology or agent, most expensive first; with
    an ID, what that execution paid, the calls of owners that lost it (displaced) apart."""
    from qmcp.agentframework.store import COST_GROUPS

    state = cli_state(ctx)
    if execution_id is not None:
        if since is not None or by is not None:
            from qmcp.agentframework.errors import UserInputError

            raise UserInputError(
                "--since and --by group the spend of every run; drop them to see one execution's cost"
            )
        _execution_cost(state, execution_id, output_format)
        return
    by = by or "model"
    if by not in COST_GROUPS:
        from qmcp.agentframework.errors import UserInputError

        raise UserInputError(f"--by must be one of: {', '.join(COST_GROUPS)} (got {by!r})")
    start = _parse_since(since) if since is not None else None

    async def fetch() -> Any:
        async with open_database(state, read_only=True) as db:
            return await db.cost_report(since=start, by=by)

    report = run_async(fetch())
    if state.json_output(output_format):
        print_json(report.as_dict())
        return
    lines = [*report.lines, report.total] if report.lines else []
    print_table(
        f"cost by {by}" + (f" since {format_when(start)}" if start else ""),
        [by.capitalize(), "Executions", "Steps", "Tokens", "Cost"],
        [
            (
                line.group,
                line.executions,
                line.steps,
                format_tokens(line.input_tokens, line.output_tokens),
                format_cost(line.cost_usd),
            )
            for line in lines
        ],
        empty="no steps recorded" + (" since then" if start else ""),
    )


def _execution_cost(state: Any, execution_id: str, output_format: Any) -> None:
    from qmcp.app import execution_cost

    async def fetch() -> Any:
        async with open_database(state, read_only=True) as db:
            return await execution_cost(db, execution_id)

    paid = run_async(fetch())
    if state.json_output(output_format):
        print_json(paid.as_dict())
        return
    execution = paid.execution
    print_table(
        f"cost of execution {execution.id} ({execution.topology_name}, {execution.status})",
        ["Calls", "Requests", "Tokens", "Cost"],
        [
            (
                name,
                usage.requests,
                format_tokens(usage.input_tokens, usage.output_tokens),
                format_cost(usage.cost_usd),
            )
            for name, usage in (("kept", paid.kept), ("displaced", paid.displaced), ("total paid", paid.paid))
        ],
    )
    if paid.displaced_calls:
        print_table(
            "displaced calls: paid by an owner that had lost the execution; their results were not kept",
            ["Step", "Agent", "Model", "Owner", "Requests", "Tokens", "Cost"],
            [
                (
                    row.key,
                    row.agent_name,
                    row.model,
                    row.owner_token,
                    row.requests,
                    format_tokens(row.input_tokens, row.output_tokens),
                    format_cost(row.cost_usd),
                )
                for row in paid.displaced_calls
            ],
        )
    if paid.uncounted.has_values():
        stdout().print(
            f"{paid.uncounted.requests} request(s) paid by an attempt that ended without recording its end "
            "are not in the execution's totals yet; they are counted when it is resumed or cancelled: "
            f"{state.command('executions', 'resume', str(execution.id))}",
            soft_wrap=True,
        )


def _parse_since(value: str) -> datetime:
    """`30m`, `24h`, `7d`, `2w` before now, or an ISO date/time (UTC unless it says otherwise)."""
    import re
    from datetime import UTC, timedelta

    from qmcp.agentframework.errors import UserInputError

    text = value.strip().lower()
    relative = re.fullmatch(r"(\d+)\s*([mhdw])", text)
    if relative:
        amount, unit = int(relative[1]), relative[2]
        minutes = {"m": 1, "h": 60, "d": 1440, "w": 10080}[unit] * amount
        return datetime.now(UTC) - timedelta(minutes=minutes)
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise UserInputError(
            f"--since {value!r} is neither a duration (30m, 24h, 7d, 2w) nor a date (2026-11-01)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _parse_when(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


_AGENTS_OWN = "(the agents' own)"
_UNLIMITED = "(unlimited)"


@executions_app.command("resume")
def resume_execution(
    ctx: typer.Context,
    execution_id: Annotated[
        str, typer.Argument(metavar="ID", help="The execution id, or enough of its start to name one.")
    ],
    wait: Annotated[
        bool, typer.Option("--wait", help="If another process runs it, wait for that process to stop.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Take it over from the process running it (recorded).")
    ] = False,
    runner: Annotated[
        str | None,
        typer.Option(
            "--runner", help="Continue on another runner (recorded) \\[default: the one it ran on]."
        ),
    ] = None,
    max_concurrent: Annotated[
        int | None,
        typer.Option("--max-concurrent", min=1, help="Change the async runner's limit (recorded)."),
    ] = None,
    max_cost: Annotated[
        float | None,
        typer.Option(
            "--max-cost",
            min=0,
            metavar="USD",
            help="The execution's budget in US dollars, every attempt included (recorded).",
        ),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            min=1,
            help="The execution's budget in tokens (input plus output, every attempt included; recorded).",
        ),
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream", help="Show the running step's text as the model writes it.")
    ] = False,
    output_format: FormatOption = None,
) -> None:
    """Continue an unfinished execution as the same run: its model, runner and options, its completed
    steps replayed at no cost. Options given here (--model, --runner, --max-concurrent, --max-cost,
    --max-tokens) change the run from here on, and the change is recorded on the execution."""
    state = cli_state(ctx)

    async def fetch() -> Execution:
        async with open_database(state) as db:
            execution = await db.find_execution(execution_id)
            return execution

    execution = run_async(fetch())
    runner_type = runner or execution.runner_type
    stored_model = execution.run_config.get("model_override")
    config: dict[str, Any] = {}
    options = dict(execution.runner_options) if runner_type == execution.runner_type else {}
    if state.model is not None:
        config["model_override"] = state.model
    if max_concurrent is not None:
        config["max_concurrent"] = options["max_concurrent"] = max_concurrent
    if max_cost is not None:
        config["max_cost_usd"] = max_cost
    if max_tokens is not None:
        config["max_tokens"] = max_tokens
    changes = [
        f"{name} {before if before is not None else _UNLIMITED if name.startswith('max ') else _AGENTS_OWN} → {after}"
        for name, before, after in (
            ("model", stored_model, state.model),
            ("runner", execution.runner_type, runner),
            ("max concurrent", execution.runner_options.get("max_concurrent"), max_concurrent),
            ("max cost", execution.run_config.get("max_cost_usd"), max_cost),
            ("max tokens", execution.run_config.get("max_tokens"), max_tokens),
        )
        if after is not None and after != before
    ]
    if changes and execution.status != "completed":
        stderr().print(f"resuming with changed options (recorded on the execution): {'; '.join(changes)}")
    if wait and str(execution.status) == "running" and execution.owner_token:
        stderr().print(
            f"execution {execution.id} is running in pid {execution.owner_pid} on {execution.owner_host}; "
            "waiting for it to stop (Ctrl-C gives up)"
        )
    request = RunRequest(
        topology_name=execution.topology_name,
        slots=slot_models(execution.agents_snapshot, state.model or stored_model, ambient=False),
        runner_type=runner_type,
        config=config,
        runner_options=options,
        execution_id=execution.id,
        stream=stream,
    )
    json_output = state.json_output(output_format)
    outcome = execute(
        state,
        request,
        lambda launch: launch.runner().resume(
            execution.id, wait=wait, force=force, change_runner=runner_type != execution.runner_type
        ),
        json_output=json_output,
    )
    print_outcome(state, outcome, json_output=json_output)
    if code := exit_code(outcome.result):
        raise typer.Exit(code)


@executions_app.command("cancel")
def cancel_execution(
    ctx: typer.Context,
    execution_id: Annotated[
        str, typer.Argument(metavar="ID", help="The execution id, or enough of its start to name one.")
    ],
    output_format: FormatOption = None,
) -> None:
    """Cancel an unfinished execution, from any process; it stays resumable.

    A running execution's process stops its model calls within a heartbeat (half a second by default)
    and keeps its completed steps; this command waits up to 5 s to confirm it.
    """
    from qmcp.agentframework.runners import RunnerRegistry

    state = cli_state(ctx)

    async def cancel() -> tuple[Execution, Any]:
        async with open_database(state) as db:
            execution = await db.find_execution(execution_id)
        runner = RunnerRegistry.for_execution(execution, run_config(state), db_url=state.db_url)
        return execution, await runner.cancel(execution.id)

    before, result = run_async(cancel())
    if state.json_output(output_format):
        print_json(result.model_dump(mode="json"))
        return
    status = str(result.status)
    if before.status.is_terminal:
        stdout().print(f"execution {before.id} is already {before.status}; nothing to cancel")
    elif status == "cancelled":
        stdout().print(
            f"cancelled execution {result.execution_id}; resume it with: "
            f"{state.command('executions', 'resume', str(result.execution_id))}",
            soft_wrap=True,
        )
    elif status == "running":
        stdout().print(
            f"cancel requested: execution {result.execution_id} runs in pid {before.owner_pid} on "
            f"{before.owner_host}, which has not stopped yet; it stops at its next heartbeat",
            soft_wrap=True,
        )
    else:
        stdout().print(f"execution {result.execution_id} ended {status} before the cancel reached it")


@executions_app.command("respond")
def respond(
    ctx: typer.Context,
    request_id: Annotated[
        str,
        typer.Argument(
            metavar="REQUEST",
            help="The human request id, or the id (or start of it) of an execution waiting on one request.",
        ),
    ],
    response: Annotated[str, typer.Argument(help="Your answer: one of the request's options, or free text.")],
    no_resume: Annotated[
        bool, typer.Option("--no-resume", help="Store the answer without resuming.")
    ] = False,
    output_format: FormatOption = None,
) -> None:
    """Answer a paused execution's human request, then resume the execution."""
    state = cli_state(ctx)

    async def answer() -> Execution | None:
        async with open_database(state) as db:
            request, _ = await db.answer_human_request(
                await _request_id(db, request_id), response, responded_by=_user()
            )
            return None if request.execution_id is None else await db.get_execution(request.execution_id)

    execution = run_async(answer())
    json_output = state.json_output(output_format)
    if execution is None:  # a request of the server's clients, not of a run
        if json_output:
            print_json({"request_id": request_id, "response": response})
        else:
            stdout().print(f"answered human request {request_id}", soft_wrap=True)
        return
    if no_resume:
        if json_output:
            print_json({"execution_id": str(execution.id), "request_id": request_id, "response": response})
        else:
            stdout().print(
                f"answered; resume with: {state.command('executions', 'resume', str(execution.id))}",
                soft_wrap=True,
            )
        return
    request = RunRequest(
        topology_name=execution.topology_name,
        slots=slot_models(
            execution.agents_snapshot, execution.run_config.get("model_override"), ambient=False
        ),
        runner_type=execution.runner_type,
        runner_options=execution.runner_options,
        execution_id=execution.id,
    )
    outcome = execute(
        state, request, lambda launch: launch.runner().resume(execution.id), json_output=json_output
    )
    print_outcome(state, outcome, json_output=json_output)
    if code := exit_code(outcome.result):
        raise typer.Exit(code)


executions_app.command("prune")(prune)
executions_app.command("fork")(fork_command)
executions_app.command("diff")(diff_command)
add_replay_commands(executions_app)  # replay, export-fixture (`_replay.py`)
