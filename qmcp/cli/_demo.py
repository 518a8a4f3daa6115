"""`qmcp demo`: store a small team and run it on the embedded model, no API key or network needed.

One topology on one short, checkable question: `demo_ensemble`, three agents answer on their own and
the most confident answer is kept. SmolLM2-135M answers a plain question presentably; handed a
pipeline stage's brief ("You are stage 1 of 3 ...") it talks about itself, so the demo asks plainly.
Replies are capped at 48 tokens so the demo finishes in seconds on two CPU cores. Each step's answer is shown as it completes.

The run is stopped after its first step, as a crash would stop it: the run's task is
cancelled in-process, which leaves the execution `cancelled` with its finished step stored, exactly
what `executions resume` picks up after a crash. The demo resumes it and shows the finished step
replayed from the database, and the tokens paid again for it, measured from the resumed run's own
events (0 when durable replay works).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from ._output import EXIT_FAILED, count, excerpt, format_duration, format_tokens, print_json, stdout
from ._run import Launch, RunOutcome, RunRequest, execute, exit_code, print_outcome, slot_models
from ._state import CliState, FormatOption, cli_state, open_database, run_async

if TYPE_CHECKING:
    from qmcp.agentframework.runners import RunResult
    from qmcp.agentframework.topologies import StepEvent

__all__ = ["DEMO_PROMPT", "DEMO_TEAMS", "demo"]

DEMO_MODEL = "local:smollm2"
DEMO_PROMPT = "What is the capital of France?"


def _agent(name: str, role: str, description: str, instructions: str) -> dict[str, Any]:
    return {
        "name": name,
        "role": role,
        "description": description,
        "config": {
            "model": DEMO_MODEL,
            "temperature": 0.0,
            "max_tokens": 48,
            # SmolLM2-135M answers a plain question in one sentence well enough; a persona or a
            # longer brief makes it talk about itself
            "system_prompt": f"{instructions} Answer in one short sentence.",
        },
    }


DEMO_TEAMS: list[tuple[dict[str, Any], dict[str, dict[str, Any]]]] = [
    (
        {
            "name": "demo_ensemble",
            "description": "Three agents answer on their own; the most confident answer is kept.",
            "topology_type": "ensemble",
            "config": {"aggregation_method": "best_of"},
        },
        {
            "engineer": _agent("demo_engineer", "specialist", "a specialist", "Be concrete."),
            "skeptic": _agent("demo_skeptic", "critic", "a skeptical reviewer", "Be exact."),
            "manager": _agent("demo_manager", "planner", "a pragmatic team lead", "Be brief."),
        },
    ),
]

_NEXT_STEPS = """
[bold]Next[/bold]
  inspect a run step by step   {show}
  see it in the browser        {serve}   then open http://127.0.0.1:3333/executions/{execution}
  run a topology yourself      qmcp agents topologies run demo_ensemble --input-json '{{"prompt": "..."}}'
  use a hosted or local model  ANTHROPIC_API_KEY=... qmcp --model anthropic:claude-sonnet-4-20250514 demo
                               OPENAI_API_KEY=... qmcp --model openai:gpt-4.1 demo
                               qmcp --model ollama:llama3.2 demo   (with Ollama running)
"""


CRASH_AFTER = 1
"""Steps that finish before the demo stops its run, as a crash would."""


@dataclass
class _Steps:
    """What the demo shows of each step as it finishes, and counts for the resume's summary."""

    show: bool
    completed: dict[str, int] = field(default_factory=dict)
    """Step key → tokens paid for it, in this run."""
    replayed: list[str] = field(default_factory=list)

    def __call__(self, event: StepEvent) -> None:
        if event.kind == "completed":
            self.completed[event.key] = event.usage.input_tokens + event.usage.output_tokens
            mark, note = "[green]✓[/green]", ""
        elif event.kind == "replayed":
            self.replayed.append(event.key)
            mark, note = "[cyan]↺[/cyan]", " [dim](replayed from the database)[/dim]"
        else:
            return
        if self.show:
            text = escape(excerpt(" ".join(event.text.split()), 90))
            stdout().print(f"  {mark} {escape(event.key)}{note}: {text}", soft_wrap=True, highlight=False)


def _watched(
    start: Callable[[Launch], Coroutine[Any, Any, RunResult]], steps: _Steps
) -> Callable[[Launch], Coroutine[Any, Any, RunResult]]:
    """`start` with `steps` told of every step event too."""

    def watched(launch: Launch) -> Coroutine[Any, Any, RunResult]:
        display = launch.kwargs["on_event"]

        def both(event: StepEvent) -> None:
            display(event)
            steps(event)

        launch.kwargs["on_event"] = both
        return start(launch)

    return watched


class _Stopped(Exception):
    """The demo stopped its run mid-way, as a crash would."""


def _crashing(
    topology: dict[str, Any], agents: dict[str, dict[str, Any]], prompt: str, after: int
) -> Callable[[Launch], Coroutine[Any, Any, RunResult]]:
    """Run the topology, cancelling its task once `after` steps have finished: the runner records
    the execution as cancelled, its finished steps kept, and `_Stopped` is raised."""

    async def start(launch: Launch) -> RunResult:
        import asyncio  # here, not at the top: `qmcp --help` imports this module and no event loop

        display = launch.kwargs["on_event"]
        finished = 0
        run: asyncio.Task[RunResult] | None = None

        def on_event(event: StepEvent) -> None:
            nonlocal finished
            display(event)
            if event.kind == "completed":
                finished += 1
                if finished >= after and run is not None:
                    run.cancel()  # lands at the run's next await: the finished step is already stored

        launch.kwargs["on_event"] = on_event
        run = asyncio.ensure_future(launch.runner().run(topology, agents, {"prompt": prompt}))
        try:
            return await run
        except asyncio.CancelledError:
            if not run.cancelled():
                raise
            raise _Stopped from None

    return start


def _latest_execution(state: CliState, topology_name: str) -> uuid.UUID:
    async def find() -> uuid.UUID:
        async with open_database(state, read_only=True) as db:
            (latest,) = await db.list_executions(topology_name=topology_name, limit=1)
            return latest.id

    return run_async(find())


def demo(
    ctx: typer.Context,
    prompt: Annotated[
        str, typer.Option("--prompt", "-p", help="The question to give the team.")
    ] = DEMO_PROMPT,
    runner: Annotated[str, typer.Option("--runner", help="local, async or metaflow.")] = "local",
    output_format: FormatOption = None,
) -> None:
    """Run a small team on the embedded model (SmolLM2, in-process): no API key, no network.

    Stores the topology demo_ensemble (again and again without duplicates) and runs it, showing each
    answer; stops the run after its first step as a crash would, resumes it (the finished step is
    replayed, not paid again) and prints the answer, tokens, time and the commands to look at the run.
    """
    state = cli_state(ctx)
    json_output = state.json_output(output_format)
    console = stdout()
    started = time.perf_counter()
    outcomes: list[RunOutcome] = []
    if not json_output:
        model = next(iter(slot_models(DEMO_TEAMS[0][1], state.model).values()))[1]
        note = " (SmolLM2 135M in-process: no API key, no network)" if model == DEMO_MODEL else ""
        console.print(f"qmcp demo on [bold]{escape(model)}[/bold]{note}", soft_wrap=True)
    resume: dict[str, Any] = {}
    for topology, agents in DEMO_TEAMS:
        if not json_output:
            console.print(f"\n[bold]{topology['name']}[/bold]: {topology['description']}", soft_wrap=True)
        request = RunRequest(
            topology_name=topology["name"],
            slots=slot_models(agents, state.model),
            runner_type=runner,
            config={"model_override": state.model},
        )
        steps = _Steps(show=not json_output)
        outcome, resume = _crash_and_resume(
            state, request, _crashing(topology, agents, prompt, CRASH_AFTER), steps, json_output
        )
        outcomes.append(outcome)
        if not json_output:
            print_outcome(state, outcome, json_output=False)
        if exit_code(outcome.result):
            break
    elapsed_ms = (time.perf_counter() - started) * 1000
    if json_output:
        print_json(
            {
                "prompt": prompt,
                "duration_ms": round(elapsed_ms),
                "runs": [o.result.model_dump(mode="json") for o in outcomes],
                "resume": resume,
            }
        )
    else:
        tokens = format_tokens(
            sum(o.result.input_tokens for o in outcomes), sum(o.result.output_tokens for o in outcomes)
        )
        console.print(f"\n{count(len(outcomes), 'run')} · {tokens} tokens · {format_duration(elapsed_ms)}")
        execution = str(outcomes[-1].result.execution_id)
        show = state.command("executions", "show", execution)
        console.print(
            _NEXT_STEPS.format(show=show, serve=state.command("serve"), execution=execution), soft_wrap=True
        )
    if any(exit_code(o.result) for o in outcomes):
        raise typer.Exit(EXIT_FAILED)


def _crash_and_resume(
    state: CliState,
    request: RunRequest,
    start: Callable[[Launch], Coroutine[Any, Any, RunResult]],
    steps: _Steps,
    json_output: bool,
) -> tuple[RunOutcome, dict[str, Any]]:
    """Run `start` until it stops mid-way, then resume the execution it left: the resumed run's
    outcome, and what the resume replayed and paid again (tokens of steps finished before the stop)."""
    console = stdout()
    try:
        outcome = execute(state, request, _watched(start, steps), json_output=json_output)
    except _Stopped:
        pass
    else:  # finished before it could be stopped (fewer steps than CRASH_AFTER): nothing to resume
        return outcome, {}
    execution_id = _latest_execution(state, request.topology_name)
    finished_before = dict(steps.completed)
    if not json_output:
        console.print(
            f"[yellow]■[/yellow] stopped after {count(len(finished_before), 'step')}, as a crash would: "
            f"execution {execution_id} is cancelled, its finished steps stored. Resuming it:",
            soft_wrap=True,
        )
    again = _Steps(show=not json_output)
    resumed = dataclasses.replace(request, execution_id=execution_id, config={})
    outcome = execute(
        state,
        resumed,
        _watched(lambda launch: launch.runner().resume(execution_id), again),
        json_output=json_output,
    )
    paid_again = sum(tokens for key, tokens in again.completed.items() if key in finished_before)
    summary = {
        "execution_id": str(execution_id),
        "stopped_after": sorted(finished_before),
        "replayed": again.replayed,
        "tokens_paid_again": paid_again,
    }
    if not json_output:
        console.print(
            f"[cyan]↺[/cyan] resumed: {count(len(again.replayed), 'step')} replayed from the database, "
            f"{paid_again:,} tokens paid again; {count(len(again.completed), 'step')} run now",
            soft_wrap=True,
        )
    return outcome, summary
