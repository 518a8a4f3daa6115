"""The floors of the ensemble workloads: the same fan-out with no framework and no store.

`max_concurrent` workers ask the scripted model (its latency, its reply), then one aggregating call:

* `floor`: each call a bare pydantic-ai request (`model_request` on a `FunctionModel`): what any
  framework built on pydantic-ai's model layer pays at least. qmcp paid it too until its offline
  models answered plain calls without pydantic-ai (`llm/_native.py`);
* `floor_plain`: each call the scripted function itself (`asyncio.sleep`, then the reply), awaited
  from plain asyncio workers, no pydantic-ai: the floor of qmcp's `ScriptedModel` path now, which
  calls the same function natively (docs/benchmarks.md says which model path each side pays).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._common import TASK, Case, Metrics, ideal_ensemble_seconds, model_reply, timed

__all__ = ["make_case"]


class Ensemble:
    """The fan-out through bare pydantic-ai requests (`floor`)."""

    def __init__(self, members: int, max_concurrent: int, latency: float) -> None:
        self.members, self.max_concurrent, self.latency = members, max_concurrent, latency

    async def setup(self) -> None:
        from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart
        from pydantic_ai.models.function import AgentInfo, FunctionModel

        latency = self.latency

        async def reply(messages: list[ModelMessage], _info: AgentInfo) -> ModelResponse:
            await asyncio.sleep(latency)
            request = messages[-1]
            assert isinstance(request, ModelRequest) and isinstance(request.parts[-1], UserPromptPart)
            return ModelResponse(parts=[TextPart(model_reply(str(request.parts[-1].content)))])

        self.model = FunctionModel(reply)

    async def _ask(self, prompt: str) -> str:
        from pydantic_ai.direct import model_request
        from pydantic_ai.messages import ModelRequest, TextPart

        response = await model_request(self.model, [ModelRequest.user_text_prompt(prompt)])
        part = response.parts[0]
        assert isinstance(part, TextPart)
        return part.content

    async def _fan_out(self) -> str:
        answers: list[str] = [""] * self.members
        cursor = iter(range(self.members))

        async def worker() -> None:
            for index in cursor:
                answers[index] = await self._ask(
                    f"Task: {TASK}\n\nAnswer the task on your own (member m{index})."
                )

        await asyncio.gather(*(worker() for _ in range(min(self.max_concurrent, self.members))))
        listing = "\n\n".join(f"[{i}] {a}" for i, a in enumerate(answers))
        return await self._ask(f"Task: {TASK}\n\nAnswers:\n{listing}\n\nWrite one answer from all of them.")

    async def run(self) -> Metrics:
        _, seconds = await timed(self._fan_out)
        ideal = ideal_ensemble_seconds(self.members, self.max_concurrent, self.latency)
        return {"seconds": seconds, "efficiency": ideal / seconds}

    async def close(self) -> None:
        pass


class PlainEnsemble(Ensemble):
    """The same fan-out calling the scripted function from plain asyncio workers (`floor_plain`)."""

    async def setup(self) -> None:
        pass

    async def _ask(self, prompt: str) -> str:
        await asyncio.sleep(self.latency)
        return model_reply(prompt)


def make_case(params: dict[str, Any], *, plain: bool = False) -> Case:
    kind = PlainEnsemble if plain else Ensemble
    return kind(params["members"], params["max_concurrent"], params["latency"])
