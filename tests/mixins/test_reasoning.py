"""reasoning: the style's instruction reaches the model; the stored step keeps reasoning and answer apart."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from qmcp.agentframework.mixins import REASONING_STYLES, ReasoningMixin
from qmcp.agentframework.models import ExecutionStatus


def thinker(agent, model: str = "test", **options):
    return agent("thinker", model=model, capabilities=["reasoning"], mixins={"reasoning": options})


async def test_reasoning_is_stored_apart_from_the_answer(sqlite_url, agent, scripted, run_one):
    model, script = scripted(
        replies=["Reasoning:\n1. Lisbon is cheaper.\n2. Berlin is closer.\nAnswer: Lisbon, for the budget."]
    )
    result, (step,) = await run_one(
        sqlite_url, thinker(agent, model, style="pros_and_cons"), "Lisbon or Berlin?"
    )
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert result.output["output"] == step.response == "Lisbon, for the budget."
    assert step.output["mixins"]["reasoning"] == {
        "style": "pros_and_cons",
        "reasoning": "1. Lisbon is cheaper.\n2. Berlin is closer.",
    }
    assert REASONING_STYLES["pros_and_cons"] in script.calls[0].system
    assert step.request["system"] == script.calls[0].system


@pytest.mark.parametrize("style", sorted(REASONING_STYLES))
async def test_each_style_asks_for_reasoning_then_answer(agent, hook_context, style):
    ctx = hook_context(thinker(agent, style=style), system="You are a thinker.")
    await ReasoningMixin().before_model(ctx)
    assert ctx.system.startswith("You are a thinker.\n\n" + REASONING_STYLES[style])
    assert "'Reasoning:'" in ctx.system and "'Answer:'" in ctx.system


@pytest.mark.parametrize(
    ("reply", "reasoning", "answer"),
    [
        ("Just the answer.", "", "Just the answer."),
        ("**Reasoning:** it is even\n**Answer:** 42", "it is even", "42"),
        ("Let me think.\nFinal answer: yes", "Let me think.", "yes"),
        ("## Answer: 7", "", "7"),
        (
            "Reasoning: a draft\nAnswer: first\ncritique\nAnswer: second",
            "a draft\nAnswer: first\ncritique",
            "second",
        ),
        ("Reasoning: no conclusion\nAnswer:", "", "Reasoning: no conclusion\nAnswer:"),
        ("", "", ""),
    ],
)
async def test_splitting_is_tolerant(agent, hook_context, reply, reasoning, answer):
    ctx = hook_context(thinker(agent), reply=reply)
    await ReasoningMixin().after_response(ctx)
    assert (ctx.extras["reasoning"], ctx.reply) == ({"style": "step_by_step", "reasoning": reasoning}, answer)


def test_an_unknown_style_fails_when_the_agent_is_defined_naming_the_styles(agent):
    with pytest.raises(
        ValidationError, match=r"mixins.reasoning.style: unknown style 'socratic'; choose one of: step_"
    ):
        thinker(agent, style="socratic")
