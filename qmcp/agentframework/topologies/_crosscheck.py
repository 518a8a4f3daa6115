"""Cross-check: a primary answers; checkers validate the answer; consensus decides approval."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..errors import MissingSlotError
from ..models import AgentType, CrossCheckConfig, TopologyType
from ._aggregate import determine_consensus
from ._base import BaseTopology, topology
from ._context import StepContext, StepResult, input_text
from ._plan import AgentCall, ParallelCalls, StepPlan
from ._verdict import VALIDATION_SCHEMA, verdict

__all__ = ["VALIDATION_SCHEMA", "CrossCheckTopology"]


@topology
class CrossCheckTopology(BaseTopology):
    topology_type = TopologyType.CROSSCHECK
    config: CrossCheckConfig
    config_class = CrossCheckConfig

    primary_key: ClassVar[str] = "crosscheck/primary"
    consensus_key: ClassVar[str] = "crosscheck/consensus"
    """Where the checkers' verdicts meet: computed, no step of its own (the DAG's join node)."""

    @staticmethod
    def checkers(slots: Sequence[str]) -> list[str]:
        return [s for s in slots if s.startswith("checker")]

    @staticmethod
    def checker_key(slot: str) -> str:
        return f"crosscheck/checker:{slot}"

    def _method(self) -> str:
        return "unanimous" if self.config.require_unanimous_for_approval else self.config.consensus_method

    def step_plan(self, agents: Mapping[str, AgentType]) -> StepPlan:
        checkers = self.checkers(list(agents))
        method = self._method()
        primary = AgentCall(
            "primary", self.primary_key, f"The primary (agent {agents['primary'].name!r}) answers the task."
        )
        checks = ParallelCalls(
            step="check",
            doc="One checker validates the primary's answer.",
            calls=tuple(AgentCall(slot, self.checker_key(slot)) for slot in checkers),
            join="consensus",
            join_doc=f"Decides approval by {method!r} consensus of the verdicts "
            "(determine_consensus, in the crosscheck's code).",
        )
        return StepPlan(
            f"the primary answers, {len(checkers)} checkers validate in parallel, {method} consensus",
            (primary, checks),
        )

    def validate_team(self, agents: Mapping[str, AgentType]) -> None:
        slots = list(agents)
        self.require(slots, "primary")
        checkers = self.checkers(slots)
        if len(checkers) < self.config.num_checkers:
            raise MissingSlotError(
                f"crosscheck needs {self.config.num_checkers} checker slots (named checker_1, checker_2, ...), "
                f"got {len(checkers)}"
            )

    async def run(self, ctx: StepContext, input_data: dict[str, Any]) -> dict[str, Any]:
        task = input_text(input_data)
        primary = await ctx.invoke("primary", f"Task: {task}\n\nAnswer the task.", key=self.primary_key)
        prompt = (
            f"Task: {task}\n\nProposed answer:\n{primary.text}\n\nCheck the proposed answer for errors and omissions. "
            "Approve it only if it is correct and complete; list the issues you find."
        )
        checkers = self.checkers(list(ctx.agents))
        results = await ctx.gather(
            [
                ctx.invoke(
                    slot,
                    prompt,
                    key=self.checker_key(slot),
                    schema=VALIDATION_SCHEMA,
                    fallback=verdict(None),  # a reply still unreadable after re-asking abstains
                )
                for slot in checkers
            ]
        )
        validations = []
        for slot, result in zip(checkers, results, strict=True):
            if isinstance(result, StepResult):
                data = verdict(result.data, parsed=not result.fallback)
            else:
                data = {**verdict(None), "issues": [f"checker failed: {result}"]}
            validations.append({"checker": slot, **data})
        method = self._method()
        consensus = determine_consensus(
            {"output": primary.text}, validations, method, threshold=self.config.confidence_threshold
        )
        return consensus | {"primary_agent": primary.agent_name}
