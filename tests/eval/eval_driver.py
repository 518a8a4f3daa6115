"""`qmcp` itself with one priced scripted model, `scripted:eval`, whose calls every process logs.

Each call appends a `start` and (unless the process dies or the call is cancelled first) a `done`
line to EVAL_CALL_LOG with the agent, the sample's item number and the pid, so a test can count
what an eval paid for across processes. The reply is `answer N` for the prompt's `item N`, except
for items divisible by 3 (`no idea`); EVAL_LATENCY (seconds) slows every call.
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
from qmcp.agentframework.llm._offline import prompt_text, system_text
from qmcp.agentframework.models import ModelConfig, Models

MODEL = "scripted:eval"


def _log(kind: str, agent: str, item: int) -> None:
    path = os.environ.get("EVAL_CALL_LOG")
    if path:
        with open(path, "a") as log:  # one short line per write: appends do not interleave
            log.write(json.dumps({"kind": kind, "agent": agent, "item": item, "pid": os.getpid()}) + "\n")


async def _respond(messages: list[ModelMessage], _info: AgentInfo) -> ModelResponse:
    found = re.search(r"You are (\S+),", system_text(messages))
    agent = found.group(1) if found else "?"
    item = int(re.findall(r"item (\d+)", prompt_text(messages))[0])
    _log("start", agent, item)
    await asyncio.sleep(float(os.environ.get("EVAL_LATENCY", "0")))
    _log("done", agent, item)
    return ModelResponse(parts=[TextPart("no idea" if item % 3 == 0 else f"answer {item}")])


register_model(MODEL, FunctionModel(_respond, model_name=MODEL))
Models.register(
    ModelConfig(provider="scripted", name="eval", input_price_per_mtok=10, output_price_per_mtok=10)
)

from qmcp.cli import main  # noqa: E402  (after the model is registered, as a plugin would be)

sys.argv[0] = "qmcp"
main()
