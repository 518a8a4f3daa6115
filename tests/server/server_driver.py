"""`qmcp` with test doubles registered, for the server tests: the real CLI, the real server.

* `scripted:slow` answers like `test` after DRIVER_LATENCY seconds (default 0) and appends one line
  per finished call to DRIVER_CALL_LOG, so tests can count what was paid for across processes.
* `scripted:stream` streams a reply of DRIVER_WORDS words (default 12), one word every DRIVER_CHUNK_DELAY
  seconds (default 0.05), for the console's streaming tests.
* Python tools for tool_use and `/v1/tools`: `add_numbers(a, b)` and `explode()` (always fails).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models.function import AgentInfo, FunctionModel

from qmcp.agentframework.llm import ScriptedModel, make_test_model, register_model
from qmcp.agentframework.mixins import register_tool


def _slow(role: str) -> FunctionModel:
    answer = make_test_model(role).function
    assert answer is not None

    async def reply(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await asyncio.sleep(float(os.environ.get("DRIVER_LATENCY", "0")))
        response = answer(messages, info)
        assert isinstance(response, ModelResponse)
        log = os.environ.get("DRIVER_CALL_LOG")
        if log:
            with open(log, "a") as calls:
                calls.write(f"{role}\n")
        return response

    return FunctionModel(reply, model_name="scripted:slow")


def add_numbers(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def explode() -> str:
    """Always fails."""
    raise RuntimeError("the tool broke")


if os.environ.get("QMCP_TEST_SPAN_LOG"):  # an OpenTelemetry SDK writing every span to that file
    sys.path.insert(0, str(Path(__file__).parents[1] / "metaflow"))
    import mf_tracing  # noqa: F401

register_model("scripted:slow", _slow)
register_model(
    "scripted:stream",
    ScriptedModel(
        replies=lambda prompt, index: " ".join(
            f"word{n}" for n in range(int(os.environ.get("DRIVER_WORDS", "12")))
        ),
        chunk_delay=float(os.environ.get("DRIVER_CHUNK_DELAY", "0.05")),
        name="scripted:stream",
    ).model,
)
register_tool("add_numbers", add_numbers)
register_tool("explode", explode)

from qmcp.cli import main  # noqa: E402

sys.argv[0] = "qmcp"
main()
