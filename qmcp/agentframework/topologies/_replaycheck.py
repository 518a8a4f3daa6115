"""Replay tests: topology code run against a recorded execution, every step checked, no model called.

`qmcp.testing.replay` gives a `StepContext` a `ReplayCheck`. Each `ctx.invoke` must then find its
key in the recording, asked of the same slot and agent with the same prompt (the prompt the
topology code gave, schema instruction included; not what mixins added); anything else is a
`NonDeterminismError` naming the step and what differs. No mixin hook runs, no model is called and
nothing is written: the recorded reply is the step's result, as on a resume. After the run,
`unasked()` names the recorded steps the code never asked for. A fork's inherited steps are checked by
key and slot only (their agent and prompt are the parent's, which the parent's replay checks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import NonDeterminismError
from ..store import StepRecord

__all__ = ["ReplayCheck", "prompt_difference", "recorded_prompt"]

_SHOWN = 3
"""Recorded keys named in an error (the next ones not replayed yet)."""


@dataclass
class ReplayCheck:
    """The recording a replay checks against, and the keys the code asked for, in order."""

    recorded: Mapping[str, StepRecord]
    asked: list[str] = field(default_factory=list)

    def verify(self, key: str, slot: str, agent_name: str, prompt: str) -> StepRecord:
        """The recorded step `key`, if the code asks it as recorded; else `NonDeterminismError`."""
        recorded = self.recorded.get(key)
        if recorded is None:
            waiting = self.unasked()[:_SHOWN]
            also = f"; recorded steps not replayed yet: {', '.join(waiting)}" if waiting else ""
            raise NonDeterminismError(
                f"step {key!r} (slot {slot!r}) is not in the recording: the code now makes a call "
                f"the recorded run did not make{also}"
            )
        # A fork may put another agent in a slot: the steps it inherited keep the one they ran with.
        if recorded.slot != slot or (recorded.agent_name != agent_name and not recorded.inherited):
            raise NonDeterminismError(
                f"step {key!r} was recorded for slot {recorded.slot!r} (agent {recorded.agent_name!r}) "
                f"but the code now asks it of slot {slot!r} (agent {agent_name!r})"
            )
        # A step a fork inherited was asked by its parent, perhaps on another input (a fork may change
        # it and still reuse the steps before its fork point): only the parent's replay checks its prompt.
        was = None if recorded.inherited else recorded_prompt(recorded)
        if was is not None and was != prompt:
            raise NonDeterminismError(
                f"step {key!r} (slot {slot!r}) asks another prompt than the recording: "
                f"{prompt_difference(was, prompt)}"
            )
        self.asked.append(key)
        return recorded

    def unasked(self) -> list[str]:
        """Recorded steps the code has not asked for, in the recording's order."""
        asked = set(self.asked)
        return [key for key in self.recorded if key not in asked]


def recorded_prompt(record: StepRecord) -> str | None:
    """The prompt the topology code gave the step, from its recorded request (None: not recorded).

    A step records the messages sent; when a mixin changed the first one, it also records the
    code's own prompt as `prompt` (`StepContext`)."""
    request: Mapping[str, Any] = record.request or {}
    prompt = request.get("prompt")
    if isinstance(prompt, str):
        return prompt
    messages = request.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[0], Mapping):
        content = messages[0].get("content")
        return content if isinstance(content, str) else None
    return None


def prompt_difference(was: str, now: str, width: int = 48) -> str:
    """Where two prompts part, on one line: the character and a window of each around it."""
    at = next((i for i, (a, b) in enumerate(zip(was, now, strict=False)) if a != b), min(len(was), len(now)))
    start = max(0, at - width // 4)

    def window(text: str) -> str:
        piece = text[start : start + width]
        return ("…" if start else "") + repr(piece)[1:-1] + ("…" if start + width < len(text) else "")

    return (
        f"they differ from character {at} (recorded {len(was)} characters, now {len(now)}): "
        f"recorded «{window(was)}», now «{window(now)}»"
    )
