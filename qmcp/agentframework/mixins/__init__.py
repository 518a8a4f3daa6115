"""Capabilities that hook into agent steps: tool use (incl. MCP), memory, reasoning, structured
output and human in the loop. Agents enable them through `AgentConfig.capabilities`."""

from ._base import BaseMixin, MixinContext, MixinInfo, MixinRegistry, RunResources, mixin
from ._human import HumanInLoopMixin

__all__ = [
    "BaseMixin",
    "HumanInLoopMixin",
    "MixinContext",
    "MixinInfo",
    "MixinRegistry",
    "RunResources",
    "mixin",
]
