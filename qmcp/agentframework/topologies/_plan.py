"""The step structure a topology declares, so that a Metaflow flow is derived from it, not re-spelled.

A topology whose agent calls are known before it runs (which slots, in which order, under which
step keys) returns a `StepPlan` from `BaseTopology.step_plan`. Its keys come from the same key
builders its `run()` uses (`PipelineTopology.stage_key`, `EnsembleTopology.member_key`, ...), so a
key changed there changes both the durable steps and the flow's steps. A topology that decides at
run time what it calls returns None, and its flow runs it in one step.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AgentCall", "ParallelCalls", "StepPlan"]


@dataclass(frozen=True)
class AgentCall:
    """One agent call that gets a flow step of its own."""

    slot: str
    key: str
    """The step key the topology's `run()` gives this call."""
    doc: str = ""
    """What the step does, for a reader of the flow."""
    step: str | None = None
    """The flow step's name [default: the slot]; made unique and valid by the flow generator."""


@dataclass(frozen=True)
class ParallelCalls:
    """Calls that run side by side (a Metaflow `foreach`), then a join that runs the rest of the
    topology's code, which makes the `join_owns` calls itself. Always the last stage of a plan."""

    step: str
    """The name of the step that makes one of the calls."""
    doc: str
    calls: tuple[AgentCall, ...]
    join: str
    """The name of the join step."""
    join_doc: str
    join_owns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.calls:
            raise ValueError(
                f"ParallelCalls {self.step!r} needs at least one call (a foreach over nothing fails)"
            )


@dataclass(frozen=True)
class StepPlan:
    """A topology's agent calls in order: sequential `AgentCall`s, optionally ending in `ParallelCalls`."""

    summary: str
    """One line saying the shape, e.g. `parse -> write`."""
    stages: tuple[AgentCall | ParallelCalls, ...]

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a step plan needs at least one stage")
        if any(isinstance(stage, ParallelCalls) for stage in self.stages[:-1]):
            raise ValueError(
                "ParallelCalls must be the last stage of a step plan: its join runs the topology to its end"
            )

    def keys(self) -> list[str]:
        """Every step key of the plan, in order (a join's own calls last)."""
        keys: list[str] = []
        for stage in self.stages:
            if isinstance(stage, AgentCall):
                keys.append(stage.key)
            else:
                keys += [call.key for call in stage.calls] + list(stage.join_owns)
        return keys
