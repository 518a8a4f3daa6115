"""`qmcp` itself, with one scripted model registered: `scripted:cli`, which logs every call to a file.

The ownership tests run every command through this driver, so that several processes share a model
whose calls can be counted: each call appends a `start` and (unless cancelled) a `done` line to
DRIVER_CALL_LOG with the agent and the pid. DRIVER_LATENCY (seconds per call), DRIVER_FAIL_AGENT
(that agent's calls fail with a 401) and DRIVER_REPLY_BYTES (pad replies) shape it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys

from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from qmcp.agentframework.llm import register_model
from qmcp.agentframework.llm._offline import _raise_failure, prompt_text, system_text

MODEL = "scripted:cli"


def _log(kind: str, agent: str) -> None:
    path = os.environ.get("DRIVER_CALL_LOG")
    if path:
        with open(path, "a") as log:  # one short line per write: appends do not interleave
            log.write(json.dumps({"kind": kind, "agent": agent, "pid": os.getpid()}) + "\n")


async def _respond(messages: list[ModelMessage], _info: AgentInfo) -> ModelResponse:
    found = re.search(r"You are (\S+),", system_text(messages))
    agent = found.group(1) if found else "?"
    _log("start", agent)
    await asyncio.sleep(float(os.environ.get("DRIVER_LATENCY", "0")))
    if agent == os.environ.get("DRIVER_FAIL_AGENT"):
        _raise_failure("auth", MODEL)
    _log("done", agent)
    padding = "x" * int(os.environ.get("DRIVER_REPLY_BYTES", "0"))
    return ModelResponse(
        parts=[TextPart(f"{agent} by {os.getpid()}: {prompt_text(messages)[-30:]}{padding}")]
    )


register_model(MODEL, FunctionModel(_respond, model_name=MODEL))

from qmcp.cli import main  # noqa: E402  (after the model is registered, as a plugin would be)

sys.argv[0] = "qmcp"
main()
