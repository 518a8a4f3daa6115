"""Ensemble: every member answers the same task independently; answers are aggregated."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..errors import MissingSlotError, RunError
from ..models import AgentType, EnsembleConfig, TopologyType
from ._aggregate import combine_members, read_members, synthesis_prompt
from ._base import BaseTopology, topology
from ._context import StepContext, StepResult, input_text
from ._plan import AgentCall, ParallelCalls, StepPlan

__all__ = ["AGGREGATOR_SLOT", "EnsembleTopology"]

AGGREGATOR_SLOT = "aggregator"


@topology
class EnsembleTopology(BaseTopology):
    topology_type = TopologyType.ENSEMBLE
    config: EnsembleConfig
    config_class = EnsembleConfig

    aggregate_key: ClassVar[str] = "ensemble/aggregate"
    """The step key of the aggregator's call (`synthesis`)."""

    @staticmethod
    def members(slots: Sequence[str]) -> list[str]:
        return [s for s in slots if s != AGGREGATOR_SLOT]

    @staticmethod
    def member_key(slot: str) -> str:
        return f"ensemble/member:{slot}"

    def step_plan(self, agents: Mapping[str, AgentType]) -> StepPlan:
        members = self.members(list(agents))
        method = self.config.aggregation_method
        synthesis = method == "synthesis"
        join_doc = (
            f"Aggregates the answers by synthesis: agent {agents[AGGREGATOR_SLOT].name!r} writes the answer."
            if synthesis
            else f"Aggregates the answers by {method!r} (aggregate_results, in the ensemble's code)."
        )
        members_stage = ParallelCalls(
            step="member",
            doc="One member answers the task on its own.",
            calls=tuple(AgentCall(slot, self.member_key(slot)) for slot in members),
            join="aggregate",
            join_doc=join_doc,
            join_owns=(self.aggregate_key,) if synthesis else (),
        )
        return StepPlan(f"{len(members)} members in parallel, aggregated by {method!r}", (members_stage,))

    def validate_team(self, agents: Mapping[str, AgentType]) -> None:
        slots = list(agents)
        members = self.members(slots)
        if len(members) < self.config.min_agents:
            raise MissingSlotError(
                f"an ensemble needs at least {self.config.min_agents} member agent(s) besides 'aggregator', got {len(members)}"
            )
        if self.config.aggregation_method == "synthesis" and AGGREGATOR_SLOT not in slots:
            raise MissingSlotError("aggregation_method 'synthesis' needs an agent in slot 'aggregator'")

    async def run(self, ctx: StepContext, input_data: dict[str, Any]) -> dict[str, Any]:
        task = input_text(input_data)
        members = self.members(list(ctx.agents))
        prompt = (
            f"Task: {task}\n\nAnswer the task on your own. End with a line 'Confidence: X' where X, between 0 and 1, "
            "is how sure you are."
        )
        results = await ctx.gather([ctx.invoke(slot, prompt, key=self.member_key(slot)) for slot in members])
        answered = [(slot, r) for slot, r in zip(members, results, strict=True) if isinstance(r, StepResult)]
        failed = [
            {"slot": slot, "error": str(r)}
            for slot, r in zip(members, results, strict=True)
            if isinstance(r, Exception)
        ]
        if len(failed) / len(members) > self.config.failure_threshold or not answered:
            raise RunError(
                f"{len(failed)} of {len(members)} ensemble members failed, more than failure_threshold "
                f"{self.config.failure_threshold}: {failed[0]['error']}"
            )
        answers = read_members([(r.agent_name, r.text) for _, r in answered])
        for answer, (slot, _) in zip(answers, answered, strict=True):
            answer["slot"] = slot
        if self.config.aggregation_method == "synthesis":  # the aggregator agent writes the answer
            output: dict[str, Any] = {"method": "synthesis", "members": answers, "answer": None}
            synthesis = await ctx.invoke(
                AGGREGATOR_SLOT, synthesis_prompt(task, output["members"]), key=self.aggregate_key
            )
            output["answer"] = synthesis.text
            output["aggregator"] = synthesis.agent_name
        else:
            output = combine_members(answers, self.config.aggregation_method)
        output["failed"] = failed
        return output
