"""Ensemble: every member answers the same task independently; answers are aggregated."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import MissingSlotError, RunError
from ..models import AgentType, EnsembleConfig, TopologyType
from ._aggregate import aggregate_results, synthesis_prompt
from ._base import BaseTopology, topology
from ._context import StepContext, StepResult, input_text

__all__ = ["AGGREGATOR_SLOT", "EnsembleTopology"]

AGGREGATOR_SLOT = "aggregator"


@topology
class EnsembleTopology(BaseTopology):
    topology_type = TopologyType.ENSEMBLE
    config: EnsembleConfig
    config_class = EnsembleConfig

    @staticmethod
    def members(slots: Sequence[str]) -> list[str]:
        return [s for s in slots if s != AGGREGATOR_SLOT]

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
        results = await ctx.gather(
            [ctx.invoke(slot, prompt, key=f"ensemble/member:{slot}") for slot in members]
        )
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
        output = aggregate_results(
            [(r.agent_name, r.text) for _, r in answered], self.config.aggregation_method
        )
        for member, (slot, _) in zip(output["members"], answered, strict=True):
            member["slot"] = slot
        if self.config.aggregation_method == "synthesis":
            synthesis = await ctx.invoke(
                AGGREGATOR_SLOT, synthesis_prompt(task, output["members"]), key="ensemble/aggregate"
            )
            output["answer"] = synthesis.text
            output["aggregator"] = synthesis.agent_name
        output["failed"] = failed
        return output
