"""Which recorded steps a fork inherits from its parent, and the human edits made to them.

A fork re-runs its parent from one step (`at`) on. The parent's steps that started before that step
cannot depend on it (a step that started earlier never waits for a later one), so their recorded
rows are copied into the fork, marked `inherited`: they replay as they were, and the fork pays
nothing for them (no usage rows are written for them). The order is the one the steps started in
(`started_at`, then the row id for steps that started together). The execution service writes the
copies in the same transaction as the fork's execution row (`ExecutionService.create`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidConfigError, NotFoundError, did_you_mean
from ..models import ExecutionStep, StepStatus, utcnow

__all__ = ["fork_steps"]

_SHOWN_KEYS = 12


def fork_steps(
    parent: Sequence[ExecutionStep],
    at: str,
    execution_id: uuid.UUID,
    *,
    set_output: Mapping[str, str] | None = None,
) -> list[ExecutionStep]:
    """The rows a fork of the execution whose steps are `parent` starts with, for the fork `execution_id`.

    `at` must be a step recorded on the parent (completed or failed): it and every step started after
    it run again. `set_output` replaces the reply of an inherited step, or of `at` itself (which is then
    kept, edited, and the fork goes on after it). A step that recorded structured data takes the text
    as that data, so it must be JSON. Raises a one-line `UserInputError` before anything is written.
    """
    ordered = sorted(parent, key=lambda step: (step.started_at, step.id or 0))
    position = next((index for index, step in enumerate(ordered) if step.key == at), None)
    if position is None:
        raise NotFoundError(f"no step {at!r} in this execution; {_known(at, ordered)}")
    edits = dict(set_output or {})
    kept = [step for step in ordered[:position] if step.status == StepStatus.COMPLETED]
    if at in edits:
        kept.append(ordered[position])
    editable = {step.key for step in kept}
    settable = [*(step for step in kept if step.key != at), ordered[position]]  # what an edit may name
    for key in edits:
        if key not in editable:
            later = any(step.key == key for step in ordered[position:])
            why = (
                f"step {key!r} runs again in this fork (it started after {at!r}), so its reply cannot be set"
                if later
                else f"no step {key!r} to set the reply of: it must be {at!r} or a completed step before it; "
                f"{_known(key, settable)}"
            )
            raise InvalidConfigError(f"set_output: {why}")
    return [_inherited(step, execution_id, edits.get(step.key)) for step in kept]


def _inherited(step: ExecutionStep, execution_id: uuid.UUID, text: str | None) -> ExecutionStep:
    """A copy of `step` for the fork, with `text` as its reply when a human edited it."""
    output = dict(step.output) if step.output is not None else None
    response, status, error, completed = step.response, step.status, step.error, step.completed_at
    if text is not None:
        output = output or {}
        if output.get("data") is not None:
            output["data"] = _data(step.key, text)
            output["fallback"] = False
        output["edited"] = True
        response, status, error = text, StepStatus.COMPLETED, None
        completed = completed or utcnow()  # a failed step, completed by the edit
    return ExecutionStep(
        execution_id=execution_id,
        key=step.key,
        slot=step.slot,
        agent_name=step.agent_name,
        model=step.model,
        status=status,
        request=step.request,
        response=response,
        output=output,
        input_tokens=step.input_tokens,
        output_tokens=step.output_tokens,
        cost_usd=step.cost_usd,
        latency_ms=step.latency_ms,
        attempts=step.attempts,
        error=error,
        started_at=step.started_at,
        completed_at=completed,
        inherited=True,
    )


def _data(key: str, text: str) -> dict[str, Any]:
    """The edited reply of a step that recorded structured data, as that data (a JSON object)."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise InvalidConfigError(
            f"set_output: step {key!r} recorded structured data, so its new reply must be a JSON object ({error})"
        ) from None
    if not isinstance(data, dict):
        raise InvalidConfigError(
            f"set_output: step {key!r} recorded structured data, so its new reply must be a JSON object, "
            f"not {type(data).__name__}"
        )
    return data


def _known(key: str, steps: Sequence[ExecutionStep]) -> str:
    keys = [step.key for step in steps]
    if not keys:
        return "it has none"
    shown = ", ".join(keys[:_SHOWN_KEYS]) + (
        f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    )
    return f"{did_you_mean(key, keys)}steps are: {shown}"
