"""`qmcp demo`: store a small team and run it on the embedded model, no API key or network needed.

Two topologies: `demo_ensemble` (three agents answer, a fourth synthesises) and `demo_pipeline`
(plan → critique → revise). Replies are capped at 80 tokens and prompts kept short so the demo
finishes in seconds on two CPU cores with SmolLM2-135M.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from ._output import EXIT_FAILED, count, format_duration, format_tokens, print_json, stdout
from ._run import Launch, RunOutcome, RunRequest, execute, exit_code, print_outcome, slot_models
from ._state import FormatOption, cli_state

if TYPE_CHECKING:
    from qmcp.agentframework.runners import RunResult

__all__ = ["DEMO_PROMPT", "DEMO_TEAMS", "demo"]

DEMO_MODEL = "local:smollm2"
DEMO_PROMPT = "How can a small team make its web service more reliable?"


def _agent(name: str, role: str, description: str, instructions: str) -> dict[str, Any]:
    return {
        "name": name,
        "role": role,
        "description": description,
        "config": {
            "model": DEMO_MODEL,
            "temperature": 0.0,
            "max_tokens": 80,
            "system_prompt": f"You are {name}, {description}. {instructions} "
            "Answer in two or three short sentences.",
        },
    }


DEMO_TEAMS: list[tuple[dict[str, Any], dict[str, dict[str, Any]]]] = [
    (
        {
            "name": "demo_ensemble",
            "description": "Three agents answer on their own; a synthesizer writes one answer from theirs.",
            "topology_type": "ensemble",
            "config": {"aggregation_method": "synthesis"},
        },
        {
            "engineer": _agent("demo_engineer", "specialist", "a site reliability engineer", "Be concrete."),
            "skeptic": _agent("demo_skeptic", "critic", "a skeptical reviewer", "Name the biggest risk."),
            "manager": _agent(
                "demo_manager", "planner", "a pragmatic team lead", "Think about people and process."
            ),
            "aggregator": _agent(
                "demo_synthesizer", "synthesizer", "an editor", "Combine the answers you are given."
            ),
        },
    ),
    (
        {
            "name": "demo_pipeline",
            "description": "A plan, a critique of the plan, and a revised plan.",
            "topology_type": "pipeline",
            "config": {"stages": ["plan", "critique", "revise"]},
        },
        {
            "plan": _agent("demo_planner", "planner", "a planner", "Write a short numbered plan."),
            "critique": _agent(
                "demo_critic", "critic", "a critic", "Point out the weakest step of the plan."
            ),
            "revise": _agent("demo_reviser", "writer", "a writer", "Rewrite the plan fixing the critique."),
        },
    ),
]

_NEXT_STEPS = """
[bold]Next[/bold]
  inspect a run step by step   {show}
  run a topology yourself      qmcp agents topologies run demo_pipeline --input-json '{{"prompt": "..."}}'
  use a hosted or local model  ANTHROPIC_API_KEY=... qmcp --model anthropic:claude-sonnet-4-20250514 demo
                               OPENAI_API_KEY=... qmcp --model openai:gpt-4.1 demo
                               qmcp --model ollama:llama3.2 demo   (with Ollama running)
"""


def _starter(
    topology: dict[str, Any], agents: dict[str, dict[str, Any]], prompt: str
) -> Callable[[Launch], Coroutine[Any, Any, RunResult]]:
    return lambda launch: launch.runner().run(topology, agents, {"prompt": prompt})


def demo(
    ctx: typer.Context,
    prompt: Annotated[
        str, typer.Option("--prompt", "-p", help="The question to give the team.")
    ] = DEMO_PROMPT,
    runner: Annotated[str, typer.Option("--runner", help="local, async or metaflow.")] = "local",
    output_format: FormatOption = None,
) -> None:
    """Run a small team on the embedded model (SmolLM2, in-process): no API key, no network.

    Stores two topologies, demo_ensemble and demo_pipeline (again and again without duplicates),
    runs both with live progress and prints the answers, tokens, time and execution ids.
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
    for topology, agents in DEMO_TEAMS:
        if not json_output:
            console.print(f"\n[bold]{topology['name']}[/bold]: {topology['description']}", soft_wrap=True)
        request = RunRequest(
            topology_name=topology["name"],
            slots=slot_models(agents, state.model),
            runner_type=runner,
            config={"model_override": state.model},
        )
        outcome = execute(state, request, _starter(topology, agents, prompt), json_output=json_output)
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
            }
        )
    else:
        tokens = format_tokens(
            sum(o.result.input_tokens for o in outcomes), sum(o.result.output_tokens for o in outcomes)
        )
        console.print(f"\n{count(len(outcomes), 'run')} · {tokens} tokens · {format_duration(elapsed_ms)}")
        show = state.command("executions", "show", str(outcomes[-1].result.execution_id))
        console.print(_NEXT_STEPS.format(show=show), soft_wrap=True)
    if any(exit_code(o.result) for o in outcomes):
        raise typer.Exit(EXIT_FAILED)
