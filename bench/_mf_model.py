"""The benchmark's scripted model, registered in each Metaflow step process via QMCP_METAFLOW_IMPORTS.

Metaflow runs every step in its own process, so a model registered in the benchmark process does
not reach the steps; they import this module instead. Latency comes from QMCP_BENCH_LATENCY.
It registers a factory, so that steps which call no model (start, the join, end) never build the
model nor import pydantic-ai, as the hand-written flow imports it in its member steps only.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from qmcp.agentframework.llm import register_model

from ._common import model_reply

MODEL = "scripted:bench"
LATENCY_VARIABLE = "QMCP_BENCH_LATENCY"


@functools.cache
def _model(_role: str) -> Any:
    from qmcp.agentframework.llm import ScriptedModel

    return ScriptedModel(
        name=MODEL,
        latency=float(os.environ.get(LATENCY_VARIABLE, "0")),
        replies=lambda prompt, _index: model_reply(prompt),
    ).model


register_model(MODEL, _model)
