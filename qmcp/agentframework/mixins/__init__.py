"""Capabilities that hook into agent steps: tool use (incl. MCP), memory, reasoning, structured
output and human in the loop. Agents enable them by name in `AgentConfig.capabilities`;
`@mixin` registers your own (options: `docs/mixins.md`)."""

from ._base import BaseMixin, MixinContext, MixinInfo, MixinRegistry, NoOptions, RunResources, mixin
from ._human import HumanInLoopMixin
from ._memory import MemoryMixin
from ._reasoning import REASONING_STYLES, ReasoningMixin
from ._structured_output import StructuredOutputMixin
from ._tool_use import ToolUseMixin, python_tool, register_tool, registered_tools, unregister_tool

__all__ = [
    "REASONING_STYLES",
    "BaseMixin",
    "HumanInLoopMixin",
    "MemoryMixin",
    "MixinContext",
    "MixinInfo",
    "MixinRegistry",
    "NoOptions",
    "ReasoningMixin",
    "RunResources",
    "StructuredOutputMixin",
    "ToolUseMixin",
    "mixin",
    "python_tool",
    "register_tool",
    "registered_tools",
    "unregister_tool",
]
