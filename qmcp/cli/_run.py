"""Running a topology from the CLI: a runner from the registry, the progress display, Ctrl-C, the result.

`run`, `executions resume` and `demo` all go through `execute`, which calls the runner's own
`run`/`resume`: the CLI never re-implements execution.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.markup import escape

from ._output import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_PAUSED,
    answer_text,
    count,
    format_cost,
    format_duration,
    format_tokens,
    print_json,
    stderr,
    stdout,
)
from ._progress import DisplayMode, RunDisplay
from ._state import CliState, open_database, run_async

if TYPE_CHECKING:
    from qmcp.agentframework.runners import BaseRunner, RunConfig, RunResult

__all__ = [
    "Launch",
    "RunOutcome",
    "RunRequest",
    "execute",
    "exit_code",
    "print_outcome",
    "run_config",
    "slot_models",
]


@dataclass(frozen=True)
class RunRequest:
    """What to run and how to show it."""

    topology_name: str
    slots: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """Slot → (agent name, model), for the display."""
    runner_type: str = "local"
    config: Mapping[str, Any] = field(default_factory=dict)
    """`RunConfig` values given on the command line: all of a new run's; on resume, only the changes."""
    runner_options: Mapping[str, Any] = field(default_factory=dict)
    """Constructor options of the runner (on resume, those the execution ran with)."""
    execution_id: uuid.UUID | None = None
    """Known when resuming (a new run's start records its own on the `Launch`)."""
    stream: bool = False
    """Show the running step's text as the model writes it (`--stream`)."""


@dataclass(frozen=True)
class RunOutcome:
    result: RunResult
    steps: int


def slot_models(
    agents: Mapping[str, Any], override: str | None, *, ambient: bool = True
) -> dict[str, tuple[str, str]]:
    """Slot → (agent name, the model it will call) for agents given as `AgentType`s or definitions.

    `ambient`: QMCP_MODEL_OVERRIDE applies (a new run; a resume keeps the override it ran with).
    """
    from qmcp.agentframework.llm import effective_model, run_override
    from qmcp.agentframework.models import AgentConfig

    override = run_override(override) if ambient else override
    models: dict[str, tuple[str, str]] = {}
    for slot, agent in agents.items():
        definition = agent if isinstance(agent, Mapping) else agent.definition()
        config = definition.get("config") or {}
        # Unvalidated: this only names the model; the run validates the whole config.
        own = AgentConfig.model_construct(model=config.get("model"))
        models[slot] = (definition["name"], effective_model(own, override).model)
    return models


def run_config(state: CliState, **values: Any) -> RunConfig:
    """A `RunConfig` whose log level follows --verbose/--quiet, else QMCP_LOG_LEVEL (WARNING by default).

    `RunConfig`'s default log level is INFO, which would mix log lines into the CLI's output. Logging
    is (re)configured here, as the process's owner, so log lines go to the current stderr.
    """
    from qmcp.agentframework.runners import OWNED_PROCESS_FREEZE, RunConfig
    from qmcp.config import settings
    from qmcp.observability import configure_logging

    current = settings()
    level = "INFO" if state.verbose else "ERROR" if state.quiet else current.log_level
    configure_logging(level, current.log_format)
    return RunConfig(log_level=level, freeze_heap_above=OWNED_PROCESS_FREEZE, **values)


@dataclass
class Launch:
    """What `execute` hands a command's start: the runner to make (its type, config and constructor
    arguments), and where the start records the execution it created, so Ctrl-C can name it."""

    runner_type: str
    config: RunConfig
    kwargs: dict[str, Any]
    execution_id: uuid.UUID | None = None

    def runner(self) -> BaseRunner:
        from qmcp.agentframework.runners import RunnerRegistry

        return RunnerRegistry.create(self.runner_type, self.config, **self.kwargs)

    async def start_stored(self, state: CliState, topology: str, input_data: dict[str, Any]) -> RunResult:
        """Run a stored topology through the application layer as the operator: the execution is
        created (and its id known) before the first step."""
        from qmcp.agentframework.store import Owner
        from qmcp.app import Caller, Door, start_run
        from qmcp.app import RunRequest as Run

        values = self.config.model_dump(exclude_unset=True) | {
            k: v for k, v in self.kwargs.items() if k not in ("db_url", "on_event", "stream")
        }
        extra = {k: v for k, v in self.kwargs.items() if k in ("on_event", "stream")}
        async with open_database(state) as db:
            handle = await start_run(
                db,
                Run(topology, input_data, self.runner_type, values),
                Caller.operator(Door.CLI),
                owner=Owner.this_process(),
                **extra,
            )
            self.execution_id = handle.execution_id
            return await handle.result(db)


def execute(
    state: CliState,
    request: RunRequest,
    start: Callable[[Launch], Coroutine[Any, Any, RunResult]],
    *,
    json_output: bool,
) -> RunOutcome:
    """Run `start(launch)` with the live display; on Ctrl-C, say how to resume and exit 130."""
    mode = DisplayMode.choose(json_output=json_output, quiet=state.quiet)
    display = RunDisplay(mode, request.topology_name, request.slots, stream=request.stream)
    config = run_config(state, **{k: v for k, v in request.config.items() if v is not None})
    streaming = {"stream": True} if request.stream and mode is not DisplayMode.SILENT else {}
    launch = Launch(
        request.runner_type,
        config,
        {"db_url": state.db_url, "on_event": display, **request.runner_options, **streaming},
        request.execution_id,
    )
    try:
        with display:
            result = run_async(start(launch))
    except KeyboardInterrupt:
        # asyncio.run cancelled the run on SIGINT; the runner has marked the execution cancelled.
        _interrupted(state, launch.execution_id)
    return RunOutcome(result, display.steps_done)


def _interrupted(state: CliState, execution_id: uuid.UUID | None) -> NoReturn:
    console = stderr()
    if execution_id is None:
        console.print("interrupted before the execution started; nothing to resume")
    else:
        console.print(f"interrupted: execution {execution_id} cancelled, its completed steps are kept")
        console.print(f"resume it with: {state.command('executions', 'resume', str(execution_id))}")
    raise typer.Exit(EXIT_INTERRUPTED)


def exit_code(result: RunResult) -> int:
    """0 when the run completed, 3 when it waits for a person's answer, 1 when it failed or was
    cancelled, and when this process stopped its attempt (its execution was taken over: the result
    has an error)."""
    if str(result.status) == "completed" and result.error is None:
        return 0
    if str(result.status) == "paused":
        return EXIT_PAUSED
    return EXIT_FAILED


def print_outcome(state: CliState, outcome: RunOutcome, *, json_output: bool) -> None:
    """The result as one JSON document, or a summary line, the execution id and the answer."""
    result = outcome.result
    if json_output:
        print_json(result.model_dump(mode="json"))
        return
    console = stdout()
    status = str(result.status)
    code = exit_code(result)
    mark = (
        "[green]✓[/green]" if code == 0 else "[yellow]⏸[/yellow]" if code == EXIT_PAUSED else "[red]✗[/red]"
    )
    duration = format_duration(result.duration_ms)
    parts = [
        f"{mark} [bold]{escape(result.topology_name)}[/bold] {status} in {duration}",
        *([count(outcome.steps, "step")] if outcome.steps else []),
        f"{format_tokens(result.input_tokens, result.output_tokens)} tokens",
        format_cost(result.cost_usd),
    ]
    console.print(" · ".join(parts), soft_wrap=True)
    console.print(f"  execution {result.execution_id}", soft_wrap=True)
    if status == "completed" and result.error is None:
        answer = answer_text(result.output)
        if answer:
            console.print(answer, markup=False, highlight=False)
        return
    resume = state.command("executions", "resume", str(result.execution_id))
    if status == "paused":
        console.print(escape(result.error or "waiting for a person's answer"), soft_wrap=True)
        if result.human_request_id:
            answer = state.command("executions", "respond", result.human_request_id, "approve")
            console.print(f"answer it (this resumes the run) with: {answer}", soft_wrap=True)
        else:
            console.print(f"once answered, resume it with: {resume}", soft_wrap=True)
        return
    if result.error:
        stderr().print(f"[bold red]error:[/] {escape(result.error)}")
    if result.permanent:  # resuming as it is would fail the same way
        stderr().print(f"this failure is permanent: fix its cause, then resume it with: {resume}")
    else:
        stderr().print(f"resume it with: {resume}")
