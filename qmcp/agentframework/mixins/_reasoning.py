"""reasoning: a reasoning style injected into the system prompt, the reasoning split from the answer.

The model is asked to write "Reasoning:" and then "Answer:". Only the answer goes on to the
next agents (`StepResult.text`, the stored response); the reasoning is kept on the step under
`output["mixins"]["reasoning"]` for whoever inspects it. A reply without the markers is taken
whole as the answer, because small models often ignore formats.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._base import BaseMixin, MixinContext, mixin
from ._structured_output import parse_options

__all__ = ["REASONING_STYLES", "ReasoningMixin"]

REASONING_STYLES: dict[str, str] = {
    "step_by_step": "Work through the problem step by step, numbering the steps, before answering.",
    "pros_and_cons": "List the main arguments for and against each option, weigh them, then decide.",
    "first_principles": (
        "Break the problem down to its basic facts and assumptions and reason up from them, "
        "not from analogy or convention."
    ),
    "critique": (
        "Draft an answer, critique the draft for errors, gaps and weak assumptions, then improve it."
    ),
}

_FORMAT = (
    "Write your reasoning after a line starting with 'Reasoning:', then your final answer after a "
    "line starting with 'Answer:'. Only the text after 'Answer:' is passed on."
)
_MARKUP = r"^[ \t>#*_]*"
_ANSWER = re.compile(
    _MARKUP + r"(?:final[ \t]+)?answer[ \t]*[*_]*[ \t]*:[*_]*[ \t]*", re.IGNORECASE | re.MULTILINE
)
_REASONING = re.compile(_MARKUP + r"reasoning[ \t]*[*_]*[ \t]*:[*_]*[ \t]*", re.IGNORECASE | re.MULTILINE)


def split_reasoning(reply: str) -> tuple[str, str]:
    """(reasoning, answer) of a reply; without an "Answer:" marker the whole reply is the answer."""
    markers = list(_ANSWER.finditer(reply))
    if not markers:
        return "", reply.strip()
    last = markers[-1]
    answer = reply[last.end() :].strip()
    if not answer:
        return "", reply.strip()
    reasoning = reply[: last.start()]
    label = _REASONING.search(reasoning)
    if label is not None:
        reasoning = reasoning[label.end() :]
    return reasoning.strip(), answer


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    style: str = Field(
        default="step_by_step", description="step_by_step, pros_and_cons, first_principles or critique."
    )

    @field_validator("style")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in REASONING_STYLES:
            raise ValueError(f"unknown style {value!r}; choose one of: {', '.join(REASONING_STYLES)}")
        return value


@mixin
class ReasoningMixin(BaseMixin):
    """Options: `style`, one of `REASONING_STYLES` (default "step_by_step")."""

    name = "reasoning"
    options_model = _Options
    description = "Reasoning styles (step by step, pros and cons, ...) kept apart from the answer"

    async def before_model(self, ctx: MixinContext) -> None:
        style = parse_options(ctx, self.name, _Options).style
        ctx.system = f"{ctx.system}\n\n{REASONING_STYLES[style]} {_FORMAT}".strip()

    async def after_response(self, ctx: MixinContext) -> None:
        style = parse_options(ctx, self.name, _Options).style
        reasoning, answer = split_reasoning(ctx.reply or "")
        ctx.reply = answer
        ctx.extras[self.name] = {"style": style, "reasoning": reasoning}
