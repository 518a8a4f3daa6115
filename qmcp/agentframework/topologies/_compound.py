"""Compound: stored topologies composed by name — sequential, parallel or conditional.

Sub-topologies run through their own topology code in a child context whose step keys nest
under `compound/{i}:{name}/`, so a compound killed in its second sub-topology resumes there.
The runner resolves the whole composition (rejecting cycles) before anything runs and keeps a
snapshot of it on the execution (`ctx.teams`), so resume runs exactly the same teams.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidConfigError
from ..flowcall import output_text
from ..models import AgentType, CompoundCondition, CompoundConfig, Topology, TopologyType
from ._base import BaseTopology, TopologyRegistry, topology
from ._context import StepContext, input_text

__all__ = ["CompoundTopology", "referenced_topologies"]


def referenced_topologies(config: CompoundConfig) -> list[str]:
    """Every topology name a compound config can run, in order, without duplicates."""
    names = [*config.sub_topologies, *(c.then for c in config.conditions)]
    if config.default:
        names.append(config.default)
    return list(dict.fromkeys(names))


def _matches(condition: CompoundCondition, output: Any) -> bool:
    if condition.field is not None:
        return isinstance(output, dict) and output.get(condition.field) == condition.equals
    if condition.contains is not None:
        return condition.contains.lower() in output_text(output).lower()
    return True


@topology
class CompoundTopology(BaseTopology):
    topology_type = TopologyType.COMPOUND
    config: CompoundConfig
    config_class = CompoundConfig
    shape_note = "its conditions and sub-topologies decide what runs"

    @staticmethod
    def sub_key(index: int, name: str) -> str:
        """The prefix of the step keys of sub-topology `name` run at position `index`."""
        return f"compound/{index}:{name}"

    def validate_team(self, agents: Mapping[str, AgentType]) -> None:
        if not self.config.sub_topologies:
            raise InvalidConfigError("a compound topology needs at least one name in sub_topologies")
        if self.config.mode == "conditional" and not (self.config.conditions or self.config.default):
            raise InvalidConfigError(
                "a conditional compound needs conditions (or a default) to choose the next topology"
            )

    async def run(self, ctx: StepContext, input_data: dict[str, Any]) -> dict[str, Any]:
        names = self.config.sub_topologies
        if self.config.mode == "parallel":
            outputs = await ctx.gather(
                [self._run_sub(ctx, i, name, input_data) for i, name in enumerate(names)]
            )
            results = dict(zip(names, outputs, strict=True))
            return {
                "mode": "parallel",
                "results": results,
                "output": "\n\n".join(f"[{n}] {output_text(o)}" for n, o in results.items()),
            }
        if self.config.mode == "sequential":
            steps = []
            current = input_data
            for index, name in enumerate(names):
                output = await self._run_sub(ctx, index, name, current)
                steps.append({"topology": name, "output": output})
                current = {"prompt": output_text(output), "task": input_text(input_data)}
            return {"mode": "sequential", "results": steps, "output": output_text(steps[-1]["output"])}
        first = await self._run_sub(ctx, 0, names[0], input_data)
        path = [{"topology": names[0], "output": first}]
        chosen = next((c.then for c in self.config.conditions if _matches(c, first)), self.config.default)
        if chosen is not None:
            follow = {"prompt": output_text(first), "task": input_text(input_data)}
            path.append({"topology": chosen, "output": await self._run_sub(ctx, 1, chosen, follow)})
        return {
            "mode": "conditional",
            "results": path,
            "chosen": chosen,
            "output": output_text(path[-1]["output"]),
        }

    async def _run_sub(
        self, ctx: StepContext, index: int, name: str, input_data: dict[str, Any]
    ) -> dict[str, Any]:
        team = ctx.teams.get(name)
        if team is None:
            raise InvalidConfigError(f"sub-topology {name!r} was not resolved for this run")
        sub = Topology.model_validate(team["topology"])
        agents = {slot: AgentType.model_validate(data) for slot, data in team["agents"].items()}
        implementation = TopologyRegistry.create(sub.topology_type, sub.config)
        implementation.validate_team(agents)
        return await implementation.run(ctx.child(self.sub_key(index, name), agents=agents), input_data)
