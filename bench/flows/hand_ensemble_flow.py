"""A hand-written Metaflow flow of the generated 3-member ensemble's shape, calling the same model function.

start → member (foreach over 3 members) → aggregate (join, majority vote) → end. Each member makes
one pydantic-ai `model_request` to a `FunctionModel` with the scripted model's latency
(QMCP_BENCH_LATENCY) and reply, as a provider's call goes through qmcp's model layer; with
QMCP_BENCH_MODEL_PATH=plain it awaits the same function without pydantic-ai, as qmcp's offline
`ScriptedModel` (the generated flow's model) answers since issue 24: the like-for-like baseline.
No qmcp code runs here: this is what a user would write by hand.
"""

import asyncio
import os
from collections import Counter

from metaflow import FlowSpec, JSONType, Parameter, step


async def ask(prompt):
    """One request to the benchmark's model function through pydantic-ai, as qmcp's model layer makes it
    for a provider; or, with QMCP_BENCH_MODEL_PATH=plain, the function awaited on its own."""
    latency = float(os.environ.get("QMCP_BENCH_LATENCY", "0"))
    if os.environ.get("QMCP_BENCH_MODEL_PATH") == "plain":
        from bench._common import model_call

        return await model_call(prompt, latency)
    from pydantic_ai.direct import model_request
    from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart
    from pydantic_ai.models.function import FunctionModel

    from bench._common import model_reply

    async def reply(messages, info):
        await asyncio.sleep(latency)
        return ModelResponse(parts=[TextPart(model_reply(prompt))])

    response = await model_request(FunctionModel(reply), [ModelRequest.user_text_prompt(prompt)])
    return response.parts[0].content


class HandEnsembleFlow(FlowSpec):
    """Three members in parallel, aggregated by vote."""

    input_json = Parameter("input-json", type=JSONType, default="{}", help="The task, a JSON object.")

    @step
    def start(self):
        self.member_slots = ["m0", "m1", "m2"]
        self.next(self.member, foreach="member_slots")

    @step
    def member(self):
        self.answer = asyncio.run(ask(f"Task: {self.input_json['prompt']}\n\nAnswer the task on your own."))
        self.next(self.aggregate)

    @step
    def aggregate(self, inputs):
        answers = [member.answer for member in inputs]
        self.output = {"answer": Counter(answers).most_common(1)[0][0], "members": answers}
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    HandEnsembleFlow()
