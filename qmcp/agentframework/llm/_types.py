"""What the model layer hands around — messages, replies, tools — without importing pydantic-ai.

Topology and mixin code name these types at import time; pydantic-ai itself loads only when a
step calls a provider's model or gives a model tools (the offline models answer plain calls in
these types: `_native.py`), so a process that only replays stored steps (a Metaflow join,
`qmcp executions show`) or runs offline models never pays its import.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from ..models import Usage

if TYPE_CHECKING:
    from pydantic_ai.tools import ToolDefinition

__all__ = ["ChatMessage", "ModelReply", "ToolCallHook", "ToolSpec"]


class ChatMessage(TypedDict):
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class ModelReply:
    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    tool_calls: tuple[dict[str, Any], ...] = ()
    attempts: int = 1

    @property
    def usage(self) -> Usage:
        """What the call used: one request per attempt, with the tokens and cost of the one that answered."""
        return Usage(self.attempts, self.input_tokens, self.output_tokens, self.cost_usd)


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: its pydantic-ai definition and the coroutine that runs it."""

    definition: ToolDefinition
    call: Callable[[dict[str, Any]], Awaitable[Any]]


ToolCallHook = Callable[[str, dict[str, Any]], Awaitable[None]]
"""Called before each tool call with (tool name, arguments); raising `PermissionError` denies it."""
