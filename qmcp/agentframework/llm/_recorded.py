"""`recorded:FILE`: a model that answers every step from an exported run (a fixture), offline.

`qmcp executions export-fixture ID > run.json` writes a run's recorded steps (`qmcp.testing`);
`--model recorded:run.json` (or `qmcp.testing.recorded_model("run.json")`) then answers each model
call with the reply recorded for the same step key (`_stepkey.py` names the step of each call), so
a topology recorded once against a real provider runs again in CI with no network and the same
output. A call the recording does not hold fails at once as a permanent model error naming the key
and how to record the run again: a fixture never guesses.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo
from pydantic_ai.usage import RequestUsage

from ..errors import PermanentModelError
from ._fixture import RecordedReply, recorded_replies
from ._offline import OfflineModel, _pieces
from ._stepkey import current_step_key

__all__ = ["recorded_model"]


def recorded_model(path: str | os.PathLike[str]) -> OfflineModel:
    """A pydantic-ai model answering each step of a run from the fixture at `path`, by step key.

    The file is read now (a missing or foreign file fails here, before any step) and again when it
    changes. Unrecorded calls raise `PermanentModelError`: retrying cannot make them recorded.
    """
    recorded_replies(path)
    name = f"recorded:{path}"

    def reply_for() -> RecordedReply:
        key = current_step_key()
        if key is None:
            raise PermanentModelError(
                f"{name} answers the steps of a run by their key; this call belongs to no step", model=name
            )
        found = recorded_replies(path).get(key)
        if found is None:
            raise PermanentModelError(
                f"the fixture {path} holds no reply for step {key!r} (the run asks for a call the recorded "
                "run did not make, or one that failed there); record it again: run the topology on a real "
                f"model, then qmcp executions export-fixture ID > {path}",
                model=name,
            )
        return found

    async def respond(_messages: list[ModelMessage], _info: AgentInfo) -> ModelResponse:
        found = reply_for()
        usage = RequestUsage(input_tokens=found.input_tokens, output_tokens=found.output_tokens)
        return ModelResponse(parts=[TextPart(found.text)], usage=usage)

    async def stream(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
        for piece in _pieces(reply_for().text):
            yield piece

    return OfflineModel(respond, stream_function=stream, model_name=name)
