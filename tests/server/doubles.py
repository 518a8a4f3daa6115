"""The server tests' doubles, registered in the test process (in-process apps) or in `server_driver.py`.

* `scripted:slow` answers like `test` after `latency` seconds and records each finished call's role in
  `paid`, so tests count what was paid for.
* `scripted:stream` streams a reply of `words` words, one every `chunk_delay` seconds.
* Python tools for tool_use and `/v1/tools`: `add_numbers(a, b)` and `explode()` (always fails).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models.function import AgentInfo, FunctionModel

from qmcp.agentframework.llm import ScriptedModel, make_test_model, register_model, unregister_model
from qmcp.agentframework.mixins import register_tool, unregister_tool


def add_numbers(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def explode() -> str:
    """Always fails."""
    raise RuntimeError("the tool broke")


TOOLS = {"add_numbers": add_numbers, "explode": explode}


@dataclass
class Doubles:
    latency: float = 0.0
    words: int = 12
    chunk_delay: float = 0.05
    paid: list[str] = field(default_factory=list)
    on_paid: Callable[[str], None] | None = None
    """Also told of each paid call (the driver appends it to a file other processes read)."""

    def __post_init__(self) -> None:
        self.stream = ScriptedModel(  # its chunk_delay may be changed once registered
            replies=lambda prompt, index: " ".join(f"word{n}" for n in range(self.words)),
            chunk_delay=self.chunk_delay,
            name="scripted:stream",
        )

    def _slow(self, role: str) -> FunctionModel:
        answer = make_test_model(role).function
        assert answer is not None

        async def reply(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            await asyncio.sleep(self.latency)
            response = answer(messages, info)
            assert isinstance(response, ModelResponse)
            self.paid.append(role)
            if self.on_paid is not None:
                self.on_paid(role)
            return response

        return FunctionModel(reply, model_name="scripted:slow")

    def register(self) -> None:
        register_model("scripted:slow", self._slow)
        register_model("scripted:stream", self.stream.model)
        for name, function in TOOLS.items():
            register_tool(name, function)

    def unregister(self) -> None:
        unregister_model("scripted:slow")
        unregister_model("scripted:stream")
        for name in TOOLS:
            unregister_tool(name)
