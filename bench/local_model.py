"""The embedded model's figures: SmolLM2 generation speed and `qmcp demo` wall time, JSON lines out.

    python -m bench.local_model            # 1 warm-up + 5 measured generations, 1 + 3 demo runs
    python -m bench.local_model --quick    # 1 + 2 and 1 + 1

Kept apart from the framework comparison (`python -m bench`): it measures llama.cpp and the
demo, which no other framework runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

_PROMPT = "Explain in a short paragraph why the sky is blue."


async def _generation(runs: int) -> dict[str, Any]:
    from pydantic_ai.direct import model_request
    from pydantic_ai.messages import ModelRequest, UserPromptPart

    from qmcp.agentframework.llm import resolve_model

    model = resolve_model("local:smollm2")
    started = time.perf_counter()
    await model_request(model, [ModelRequest(parts=[UserPromptPart("Hi")])], model_settings={"max_tokens": 4})
    load_s = time.perf_counter() - started
    speeds, tokens = [], []
    for _ in range(runs):
        started = time.perf_counter()
        reply = await model_request(
            model, [ModelRequest(parts=[UserPromptPart(_PROMPT)])], model_settings={"max_tokens": 100}
        )
        speeds.append(reply.usage.output_tokens / (time.perf_counter() - started))
        tokens.append(reply.usage.output_tokens)
    return {
        "workload": "local_model_generation",
        "first_call_s": round(load_s, 3),
        "tokens_per_s": {
            "median": round(statistics.median(speeds), 1),
            "min": round(min(speeds), 1),
            "max": round(max(speeds), 1),
        },
        "output_tokens": {"median": statistics.median(tokens)},
        "runs": runs,
    }


def _demo(runs: int) -> dict[str, Any]:
    qmcp = Path(sys.executable).with_name("qmcp")
    with tempfile.TemporaryDirectory() as workdir:
        command = [str(qmcp), "--db", str(Path(workdir) / "demo.db"), "--quiet", "demo"]
        env = {**os.environ, "USER": os.environ.get("USER", "bench")}
        subprocess.run(command, check=True, capture_output=True, env=env)  # warm-up: creates the team
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env=env)
            times.append(time.perf_counter() - started)
    return {
        "workload": "demo_wall_time",
        "seconds": {
            "median": round(statistics.median(times), 2),
            "min": round(min(times), 2),
            "max": round(max(times), 2),
        },
        "runs": runs,
        "target": {"op": "<", "limit": 60, "met": statistics.median(times) < 60},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer measured runs")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_generation(2 if args.quick else 5))), flush=True)
    print(json.dumps(_demo(1 if args.quick else 3)), flush=True)


if __name__ == "__main__":
    main()
