"""`qmcp init [DIR]`: write a starter team file that `qmcp apply` and a run accept as it is.

The file is the shortest useful answer to "what does a team file look like": a pipeline and an
ensemble on the offline `test` model, with comments saying what to change. A test applies and runs it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ._output import print_json, stdout
from ._state import FormatOption, cli_state

__all__ = ["STARTER", "init"]

STARTER = """\
# A qmcp team file: agents, and topologies that put them in slots.
#   qmcp apply -f team.yaml        store (or update) everything below; applying twice changes nothing
#   qmcp agents topologies run draft_and_review --input-json '{"prompt": "Plan a product launch"}'
# Every field: docs/team-files.md; editor completion: qmcp schema team > team.schema.json
# The agents run on `test`, the offline model. Put a real model here, e.g. anthropic:claude-sonnet-4-20250514,
# openai:gpt-4.1, ollama:llama3.2 or local:smollm2 (or run with qmcp --model MODEL ... to try one).

agents:
  - name: planner
    role: planner
    description: Breaks the request into steps
    config:
      model: test
      system_prompt: You plan. Reply with a short numbered list of steps.
      max_tokens: 400
  - name: writer
    role: writer
    description: Turns the plan into a clear answer
    config:
      model: test
      temperature: 0.3
      max_tokens: 600
  - name: analyst
    role: analyst
    description: Answers on its own, for the ensemble
    config:
      model: test
  - name: synthesizer
    role: synthesizer
    description: Merges the ensemble's answers into one
    config:
      model: test

topologies:
  # A pipeline: each stage gets the previous stage's output (stages run in slot order).
  - name: draft_and_review
    type: pipeline
    description: Plan, then write
    agents:
      plan: planner
      write: writer

  # An ensemble: members answer independently; the aggregator merges their answers.
  - name: second_opinions
    type: ensemble
    description: Two independent answers, synthesized
    config:
      aggregation_method: synthesis
      failure_threshold: 0.5
    agents:
      member_1: analyst
      member_2: writer
      aggregator: synthesizer
"""


def init(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="The directory to write team.yaml in.")
    ] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing team.yaml.")] = False,
    output_format: FormatOption = None,
) -> None:
    """Write a starter team file (a pipeline and an ensemble) to apply and run at once."""
    from qmcp.agentframework.errors import UserInputError

    state = cli_state(ctx)
    path = directory / "team.yaml"
    if path.exists() and not force:
        again = shlex.join(
            ["qmcp", "init", *([str(directory)] if path.parent != Path(".") else []), "--force"]
        )
        raise UserInputError(f"{path} already exists; keep it, or overwrite it with: {again}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(STARTER, encoding="utf-8")
    except OSError as error:
        raise UserInputError(f"cannot write {path}: {error.strerror or error}") from None
    if state.json_output(output_format):
        print_json({"file": str(path)})
        return
    stdout().print(
        f"wrote {escape(str(path))}: agents planner, writer, analyst, synthesizer; topologies "
        f"draft_and_review (pipeline) and second_opinions (ensemble)\nnext: qmcp apply -f {escape(str(path))}",
        soft_wrap=True,
    )
