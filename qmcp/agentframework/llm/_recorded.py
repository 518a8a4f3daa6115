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

from ..errors import PermanentModelError
from ._fixture import RecordedReply, recorded_replies
from ._native import OfflineModel, OfflineReply, OfflineRequest
from ._stepkey import current_step_key

__all__ = ["RecordedModel", "recorded_model"]


class RecordedModel(OfflineModel):
    """Answers each step of a run from a fixture file, by step key (free of pydantic-ai, as the other
    offline models: `_native.py`). A streamed reply's tokens are estimated, as an unrecorded one's."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        recorded_replies(path)
        self.path = path
        self.name = f"recorded:{path}"

    def waits(self, streamed: bool) -> bool:
        return False

    def _reply_for(self) -> RecordedReply:
        key = current_step_key()
        if key is None:
            raise PermanentModelError(
                f"{self.name} answers the steps of a run by their key; this call belongs to no step",
                model=self.name,
            )
        found = recorded_replies(self.path).get(key)
        if found is None:
            path = self.path
            raise PermanentModelError(
                f"the fixture {path} holds no reply for step {key!r} (the run asks for a call the recorded "
                "run did not make, or one that failed there); record it again: run the topology on a real "
                f"model, then qmcp executions export-fixture ID > {path}",
                model=self.name,
            )
        return found

    async def respond(self, request: OfflineRequest) -> OfflineReply:
        found = self._reply_for()
        return OfflineReply(found.text, input_tokens=found.input_tokens, output_tokens=found.output_tokens)


def recorded_model(path: str | os.PathLike[str]) -> RecordedModel:
    """A model answering each step of a run from the fixture at `path`, by step key.

    The file is read now (a missing or foreign file fails here, before any step) and again when it
    changes. Unrecorded calls raise `PermanentModelError`: retrying cannot make them recorded.
    """
    return RecordedModel(path)
