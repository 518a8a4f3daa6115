"""One workload on one framework, in a fresh process: warm-up, measured runs, peak RSS.

The big workloads warm up on a tenth of their size (`Workload.warmup_params`): the warm-up
loads the code paths and creates the database, and the budget of the suite stays ~10 minutes.

`python -m bench._child WORKLOAD FRAMEWORK VARIANT --runs N --warmups 1 --workdir DIR --out FILE`
writes one JSON object to FILE: `{"runs": [metrics, ...], "peak_rss_mb": ...}` (plus
`children_peak_rss_mb` for the workloads that time subprocesses), or
`{"skipped": reason}`, or `{"error": message}`.

With `--serve` it warms up, says `@@bench ready` on stdout, then makes one measured run per
`run` line read on stdin (answering `@@bench {metrics}`) until `close`, and writes FILE as above:
`bench.run` drives one such process per framework and alternates their runs (A, B, A, B, ...), so
both frameworks see the same load on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

from ._common import Case, Metrics, Skipped, peak_rss_mb
from ._workloads import WORKLOADS

__all__ = ["main"]

_SUBPROCESS_WORKLOADS = ("cli_startup", "first_call", "metaflow_overhead", "server_api", "server_floor")


def make_case(workload: str, framework: str, variant: str, workdir: Path, params: dict[str, Any]) -> Case:
    """Import only the framework measured, so each process pays for (and holds) one framework."""
    if workload == "cli_startup":
        from ._cli import make_case as cli_case

        return cli_case(framework, variant, workdir)
    if workload == "first_call":
        from ._first_call import make_case as first_call_case

        return first_call_case(framework, variant, workdir)
    if workload == "metaflow_overhead":
        from ._metaflow import make_case as metaflow_case

        return metaflow_case(framework, workdir, params)
    if workload == "server_api":
        from ._server import make_case as server_case

        return server_case(workdir)
    if workload == "server_floor":
        from ._server_wrk import make_case as served_case

        return served_case(framework, workdir)
    if workload == "eval_scale":
        from ._eval import make_case as eval_case

        return eval_case(variant, workdir, params)
    if framework == "qmcp":
        from ._qmcp import make_case as qmcp_case

        return qmcp_case(workload, variant, workdir, params)
    if framework in ("floor", "floor_plain"):
        from ._floor import make_case as floor_case

        return floor_case(params, plain=framework == "floor_plain")
    if framework == "langgraph":
        try:
            from ._langgraph import make_case as langgraph_case
        except ImportError as missing:
            raise Skipped(f"LangGraph is not installed ({missing}): pip install -e '.[bench]'") from None
        return langgraph_case(workload, variant, workdir, params)
    raise LookupError(f"unknown framework {framework!r}")


async def warm_up(case: Case, runs: int) -> None:
    await case.setup()
    try:
        for _ in range(runs):
            await case.run()
    finally:
        await case.close()


async def measure(case: Case, runs: int, warmup: Case | None, warmups: int) -> list[Metrics]:
    """Warm up (on `warmup`, a smaller case, when given), then time `runs` runs of `case`."""
    if warmup is not None:
        await warm_up(warmup, warmups)
    await case.setup()
    try:
        for _ in range(0 if warmup is not None else warmups):
            await case.run()
        measured = []
        for _ in range(runs):
            gc.collect()
            measured.append(await case.run())
        return measured
    finally:
        await case.close()


PROTOCOL = "@@bench "
"""The prefix of the lines `--serve` answers with; anything else on stdout is a library's output."""


def _say(message: Any) -> None:
    sys.stdout.write(PROTOCOL + json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve(case: Case, warmup: Case | None, warmups: int) -> list[Metrics]:
    """Warm up, then one measured run per `run` command on stdin, until `close` (or stdin ends)."""
    if warmup is not None:
        await warm_up(warmup, warmups)
    await case.setup()
    measured: list[Metrics] = []
    try:
        for _ in range(0 if warmup is not None else warmups):
            await case.run()
        _say("ready")
        while sys.stdin.readline().strip() == "run":
            gc.collect()
            measured.append(await case.run())
            _say(measured[-1])
        return measured
    finally:
        await case.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._child")
    parser.add_argument("workload")
    parser.add_argument("framework")
    parser.add_argument("variant")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmups", type=int, default=1)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--serve", action="store_true", help="measure one run per `run` line on stdin")
    args = parser.parse_args()
    result: dict[str, Any]
    try:
        workload = WORKLOADS[args.workload]
        case = make_case(args.workload, args.framework, args.variant, args.workdir, workload.params)
        warmup = None
        if workload.warmup_params:
            params = {**workload.params, **workload.warmup_params}
            warmup = make_case(args.workload, args.framework, args.variant, args.workdir, params)
        if args.serve:
            runs = asyncio.run(serve(case, warmup, args.warmups))
        else:
            runs = asyncio.run(measure(case, args.runs, warmup, args.warmups))
        result = {"runs": runs, "peak_rss_mb": peak_rss_mb()}
        if args.workload in _SUBPROCESS_WORKLOADS:
            result["children_peak_rss_mb"] = peak_rss_mb(resource.RUSAGE_CHILDREN)
    except Skipped as skipped:
        result = {"skipped": str(skipped)}
    except Exception as error:  # reported in the results line; the suite goes on with the next case
        result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
    args.out.write_text(json.dumps(result))
    if args.serve:
        _say("done")  # after FILE is written: the driver reads it then


if __name__ == "__main__":
    main()
