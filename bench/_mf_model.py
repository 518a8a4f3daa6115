"""The benchmark's scripted model, registered in each Metaflow step process via QMCP_METAFLOW_IMPORTS.

Metaflow runs every step in its own process, so a model registered in the benchmark process does
not reach the steps; they import this module instead. Latency comes from QMCP_BENCH_LATENCY.
"""

from __future__ import annotations

import os

from qmcp.agentframework.llm import ScriptedModel, register_model

from ._common import model_reply

MODEL = "scripted:bench"
LATENCY_VARIABLE = "QMCP_BENCH_LATENCY"

register_model(
    MODEL,
    ScriptedModel(
        name=MODEL,
        latency=float(os.environ.get(LATENCY_VARIABLE, "0")),
        replies=lambda prompt, _index: model_reply(prompt),
    ).model,
)
