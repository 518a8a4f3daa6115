"""Run the suite: every (workload, variant, framework) in a fresh subprocess, the frameworks of a
(workload, variant) taking turns run by run; JSON lines on stdout.

    python -m bench                     # everything: 1 warm-up + 5 measured runs each
    python -m bench --quick             # 1 warm-up + 2 measured runs each
    python -m bench --only pipeline_overhead --only resume_cost
    python -m bench --out results.jsonl # also write the lines to a file

The first line describes the machine, then one line per (workload, variant) with each framework's
medians, minima and maxima, the qmcp/baseline ratio and the targets; the last line sums up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from ._child import PROTOCOL
from ._workloads import WORKLOADS, Summary, Workload, check_targets

__all__ = ["main", "run_interleaved", "summarize"]

_CHILD_TIMEOUT = 600
_REPO = Path(__file__).resolve().parent.parent


def summarize(runs: list[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Median, min and max of every metric over the measured runs."""
    metrics: dict[str, dict[str, float]] = {}
    for name in runs[0]:
        values = [float(run[name]) for run in runs]
        metrics[name] = {
            "median": round(statistics.median(values), 6),
            "min": round(min(values), 6),
            "max": round(max(values), 6),
        }
    return metrics


class _Child:
    """One case's process in `--serve` mode: warmed up, then one measured run per `run()` call."""

    def __init__(self, workload: str, framework: str, variant: str, warmups: int, workdir: Path) -> None:
        self.out = workdir / "result.json"
        self._log = (workdir / "child.log").open("w")
        argv = [
            sys.executable,
            "-m",
            "bench._child",
            workload,
            framework,
            variant,
            f"--warmups={warmups}",
            f"--workdir={workdir}",
            f"--out={self.out}",
            "--serve",
        ]
        env = {
            **os.environ,
            "QMCP_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/default.db",
            # Every process of the case (the `qmcp` script, Metaflow's steps) runs this tree's qmcp.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])),
        }
        self.process = subprocess.Popen(
            argv,
            cwd=_REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._answers: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.ready = self._answer() == "ready"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(PROTOCOL):
                self._answers.put(json.loads(line[len(PROTOCOL) :]))
            else:
                self._log.write(line)
        self._answers.put(None)  # the process closed its stdout: it ended

    def _answer(self) -> Any:
        try:
            return self._answers.get(timeout=_CHILD_TIMEOUT)
        except queue.Empty:
            self.process.kill()
            return None

    def _send(self, command: str) -> bool:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
            return True
        except (BrokenPipeError, ValueError):
            return False

    def run(self) -> bool:
        """One measured run; False when the process did not answer (it failed; `finish` says why)."""
        return self._send("run") and isinstance(self._answer(), dict)

    def finish(self, runs: int) -> dict[str, Any]:
        """Stop the process; its summary (medians, min, max, peak RSS), or why it was skipped or failed."""
        self._send("close")
        while self._answer() not in ("done", None):
            pass
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()
        if not self.out.exists():
            return {
                "error": "the benchmark process died: " + (self.out.parent / "child.log").read_text()[-1500:]
            }
        result = json.loads(self.out.read_text())
        if "runs" not in result:
            return result
        if len(result["runs"]) < runs:
            return {"error": f"the benchmark process stopped after {len(result['runs'])} of {runs} runs"}
        summary: dict[str, Any] = {**summarize(result["runs"]), "runs": runs}
        for name in ("peak_rss_mb", "children_peak_rss_mb"):
            if name in result:
                summary[name] = round(result[name], 1)
        return summary


def run_interleaved(
    workload: str, variant: str, counts: Mapping[str, int], warmups: int
) -> dict[str, dict[str, Any]]:
    """Measure each framework's case in its own fresh process, alternating their runs: A, B, A, B, ...

    The processes warm up one after the other, then the measured runs take turns, so a machine
    whose load changes during the suite slows both sides alike and their ratio holds.
    """
    results: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        children: dict[str, _Child] = {}
        for framework in counts:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{workload}-")))
            child = _Child(workload, framework, variant, warmups, workdir)
            if child.ready:
                children[framework] = child
            else:
                results[framework] = child.finish(counts[framework])
        for index in range(max(counts.values(), default=0)):
            for framework, child in list(children.items()):
                if index < counts[framework] and not child.run():
                    results[framework] = child.finish(counts[framework])
                    del children[framework]
        for framework, child in children.items():
            results[framework] = child.finish(counts[framework])
    return {framework: results[framework] for framework in counts}


def _median(summary: Summary | None, metric: str) -> float | None:
    if not summary or metric not in summary:
        return None
    return float(summary[metric]["median"])


def measure_workload(
    workload: Workload,
    runs: int,
    warmups: int,
    frameworks: list[str] | None = None,
    variants: list[str] | None = None,
) -> Iterable[dict[str, Any]]:
    """One JSON-ready line per variant of `workload` (only `frameworks`' cases and `variants`, when given)."""
    for variant in workload.variants:
        if variants and variant not in variants:
            continue
        line: dict[str, Any] = {
            "workload": workload.name,
            "variant": variant,
            "description": workload.description,
            **({"params": workload.params} if workload.params else {}),
        }
        counts: dict[str, int] = {}
        for framework in workload.frameworks:
            if workload.runs_for(framework, variant) and (not frameworks or framework in frameworks):
                counts[framework] = runs
                if framework == workload.baseline and workload.baseline_runs is not None:
                    counts[framework] = min(runs, workload.baseline_runs)
        line |= run_interleaved(workload.name, variant, counts, warmups)
        qmcp, baseline = line.get("qmcp"), line.get(workload.baseline)
        mine, theirs = _median(qmcp, workload.primary), _median(baseline, workload.primary)
        ratio = mine / theirs if mine is not None and theirs else None
        if baseline is not None:
            line["ratio"] = None if ratio is None else round(ratio, 3)
            line["ratio_of"] = f"qmcp/{workload.baseline} {workload.primary}"
        # the floors (each pays another model path, bench/_floor.py) and other baselines after the first
        for other in workload.frameworks[2:]:
            below = _median(line.get(other), workload.primary)
            if mine is not None and below:
                line[f"qmcp/{other}"] = round(mine / below, 3)
        targets = check_targets(workload.name, variant, qmcp, ratio, baseline, line.get("qmcp/floor"))
        line["targets"] = [t.as_json() for t in targets]
        yield line


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("qmcp", "langgraph", "langgraph-checkpoint-sqlite", "metaflow", "pydantic-ai-slim"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _emit(line: Mapping[str, Any], sinks: list[TextIO]) -> None:
    text = json.dumps(line, sort_keys=False)
    for sink in sinks:
        sink.write(text + "\n")
        sink.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 measured runs instead of 5")
    parser.add_argument("--only", action="append", choices=sorted(WORKLOADS), help="run only this workload")
    parser.add_argument("--runs", type=int, help="measured runs per case (overrides --quick)")
    parser.add_argument(
        "--framework", action="append", help="run only this framework's cases (qmcp, langgraph, metaflow)"
    )
    parser.add_argument("--variant", action="append", help="run only this variant (e.g. ensemble_1s)")
    parser.add_argument("--out", type=Path, help="also write the JSON lines to this file")
    args = parser.parse_args(argv)
    selected = [WORKLOADS[name] for name in args.only] if args.only else list(WORKLOADS.values())
    sinks: list[TextIO] = [sys.stdout]
    if args.out is not None:
        sinks.append(args.out.open("w"))
    started = time.perf_counter()
    _emit(
        {
            "bench": "qmcp vs LangGraph",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            },
            "versions": _versions(),
            "mode": "quick" if args.quick else "full",
        },
        sinks,
    )
    met = total = 0
    for workload in selected:
        runs = args.runs or (2 if args.quick else workload.runs)
        for line in measure_workload(
            workload, runs, warmups=1, frameworks=args.framework, variants=args.variant
        ):
            for target in line["targets"]:
                total += 1
                met += target["met"] is True
            _emit(line, sinks)
    wall = round(time.perf_counter() - started, 1)
    _emit({"summary": True, "targets_met": met, "targets": total, "wall_seconds": wall}, sinks)
    for sink in sinks[1:]:
        sink.close()
