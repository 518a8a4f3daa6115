"""A user's extensions, as a plugin module: the `relay` topology type and the `shout` mixin.

Imported by the tests directly, and by CLI and Metaflow subprocesses through QMCP_IMPORTS.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from qmcp.agentframework.mixins import BaseMixin, MixinContext, mixin
from qmcp.agentframework.models import AgentType, TopologyConfig
from qmcp.agentframework.topologies import BaseTopology, StepContext, input_text, topology


class RelayConfig(TopologyConfig):
    rounds: int = Field(default=2, ge=1, le=10)


@topology
class RelayTopology(BaseTopology):
    """Two agents take turns, each answering the other's last reply."""

    topology_type = "relay"
    config_class = RelayConfig
    config: RelayConfig

    def validate_team(self, agents: Mapping[str, AgentType]) -> None:
        self.require(list(agents), "first", "second")

    async def run(self, ctx: StepContext, input_data: dict[str, Any]) -> dict[str, Any]:
        text = input_text(input_data)
        turns = []
        for number in range(self.config.rounds):
            for slot in ("first", "second"):
                result = await ctx.invoke(slot, f"Carry on from: {text}", key=f"relay/{number}:{slot}")
                text = result.text
                turns.append({"slot": slot, "agent": result.agent_name, "text": text})
        return {"output": text, "turns": turns}


@mixin
class ShoutMixin(BaseMixin):
    """Upper-cases the reply."""

    name = "shout"
    description = "Upper-cases the agent's reply"

    async def after_response(self, ctx: MixinContext) -> None:
        ctx.reply = (ctx.reply or "").upper()
