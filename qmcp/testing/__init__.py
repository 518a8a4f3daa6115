"""Testing against recorded runs: replay tests and recorded fixtures.

* `replay(ID_OR_FILE)` runs today's topology code against a recorded execution with no model call
  and raises `NonDeterminismError` at the first step whose key, slot, agent or prompt differs
  (`replay_async` inside an event loop). `qmcp executions replay ID_OR_FILE` is the same.
* `export_fixture(ID)` / `write_fixture(ID, "run.json")` (`qmcp executions export-fixture ID >
  run.json`) write a run's recorded steps as a versioned JSON document.
* `recorded_model("run.json")` (or `--model recorded:run.json`) answers every step of a new run
  from that file by step key, offline; an unrecorded call fails loudly.
* `fixture_files(DIR)` and `replay_fixtures(DIR)` replay a directory of fixtures in CI.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..agentframework import llm
from ._directory import fixture_files, replay_fixtures
from ._recording import Recording, export_fixture, export_fixture_async, save_fixture, write_fixture
from ._replay import ReplayResult, load_recording, replay, replay_async

if TYPE_CHECKING:
    from ..agentframework.llm import OfflineModel

__all__ = [
    "FIXTURE_FORMAT",
    "Recording",
    "ReplayResult",
    "export_fixture",
    "export_fixture_async",
    "fixture_files",
    "load_recording",
    "recorded_model",
    "replay",
    "replay_async",
    "replay_fixtures",
    "save_fixture",
    "write_fixture",
]

FIXTURE_FORMAT = llm.FIXTURE_FORMAT
"""The `format` field of the fixture documents this qmcp writes and reads."""


def recorded_model(path: str | os.PathLike[str]) -> OfflineModel:
    """A model answering each step from the fixture at `path` by step key (the model string
    `recorded:PATH` resolves to the same); a call the fixture lacks fails as a permanent error.

    An offline model: `register_model(name, model)` or `call_model(model, ...)` answer plain calls
    without pydantic-ai; `model.pydantic_model` is the same model as a pydantic-ai one."""
    model: OfflineModel = llm.recorded_model(path)
    return model
