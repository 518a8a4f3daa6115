"""Pipeline: stages in order, each seeing the task and the previous stage's output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import MissingSlotError, StepFailedError
from ..models import AgentType, PipelineConfig, TopologyType
from ._base import BaseTopology, topology
from ._context import StepContext, input_text
from ._plan import AgentCall, StepPlan

__all__ = ["PipelineTopology"]


@topology
class PipelineTopology(BaseTopology):
    topology_type = TopologyType.PIPELINE
    config: PipelineConfig
    config_class = PipelineConfig

    def stages(self, slots: Sequence[str]) -> list[str]:
        return list(self.config.stages) or list(slots)

    @staticmethod
    def stage_key(index: int, stage: str) -> str:
        """The step key of stage `index` (from 0), slot `stage`."""
        return f"pipeline/{index}:{stage}"

    def step_plan(self, agents: Mapping[str, AgentType]) -> StepPlan:
        stages = self.stages(list(agents))
        return StepPlan(
            " -> ".join(stages),
            tuple(
                AgentCall(
                    stage,
                    self.stage_key(index, stage),
                    f"Stage {index + 1} of {len(stages)}: agent {agents[stage].name!r} in slot {stage!r}.",
                )
                for index, stage in enumerate(stages)
            ),
        )

    def validate_team(self, agents: Mapping[str, AgentType]) -> None:
        slots = list(agents)
        stages = self.stages(slots)
        if not stages:
            raise MissingSlotError("a pipeline needs at least one stage agent")
        missing = [s for s in stages if s not in agents]  # the mapping's lookup: a list's was O(stages²)
        if missing:
            raise MissingSlotError(f"pipeline stages without an agent: {', '.join(missing)}")

    async def run(self, ctx: StepContext, input_data: dict[str, Any]) -> dict[str, Any]:
        task = input_text(input_data)
        stages = self.stages(list(ctx.agents))
        outputs: list[dict[str, Any]] = []
        previous: str | None = None
        for index, stage in enumerate(stages):
            prompt = self._prompt(
                task, stage, index, len(stages), outputs[-1]["stage"] if outputs else None, previous
            )
            result = await self._run_stage(ctx, stage, self.stage_key(index, stage), prompt)
            previous = result.text
            outputs.append({"stage": stage, "agent": result.agent_name, "output": result.text})
        return {"output": previous, "final_stage": stages[-1], "stages": outputs}

    async def _run_stage(self, ctx: StepContext, stage: str, key: str, prompt: str) -> Any:
        retries = self.config.max_stage_retries if self.config.retry_failed_stages else 0
        durable = stage in self.config.checkpoint_after
        for attempt in range(retries + 1):
            try:
                return await ctx.invoke(stage, prompt, key=key, durable=durable)
            except StepFailedError:
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")

    def _prompt(
        self, task: str, stage: str, index: int, total: int, prev_stage: str | None, previous: str | None
    ) -> str:
        parts = []
        if self.config.pass_original_input or previous is None:
            parts.append(f"Task: {task}")
        if previous is not None:
            parts.append(f"Output of the previous stage ({prev_stage}):\n{previous}")
        parts.append(
            f"You are stage {index + 1} of {total} ({stage}). Do your part of the work and reply with your result."
        )
        return "\n\n".join(parts)
