"""Render a results file of `python -m bench --out FILE` as the Markdown table of docs/benchmarks.md.

python -m bench.table results.jsonl
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["render"]

_UNITS = {"per_step_ms": "ms/step", "seconds": "s", "get_rps": "req/s"}
_SERVER = ("get_p50_ms", "get_p99_ms", "post_run_p50_ms", "post_run_p99_ms")
"""The server rows' latencies, shown beside their requests/s."""


def _figure(summary: Mapping[str, Any] | None, metric: str) -> str:
    if not summary:
        return "—"
    if "skipped" in summary:
        return f"skipped ({summary['skipped']})"
    if "error" in summary:
        return "error"
    value = summary[metric]
    unit = _UNITS.get(metric, "")
    return f"{_num(value['median'])} {unit} ({_num(value['min'])}–{_num(value['max'])})"


def _num(value: float) -> str:
    """Three significant digits, or whole numbers from 1,000 on (requests/s)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _primary(line: Mapping[str, Any]) -> str:
    """The ratio's metric, else `seconds`, else the first figure qmcp has (`get_rps` for server_api)."""
    if line.get("ratio_of"):
        return str(line["ratio_of"]).split()[-1]
    qmcp = line.get("qmcp") or {}
    if "seconds" in qmcp or "skipped" in qmcp or "error" in qmcp:
        return "seconds"
    return next((k for k, v in qmcp.items() if isinstance(v, Mapping) and "median" in v), "seconds")


def render(lines: list[dict[str, Any]]) -> str:
    """The header facts and one table row per (workload, variant)."""
    header = next(line for line in lines if "bench" in line)
    rows = [
        f"Machine: {header['machine']['cpus']} cores, {header['machine']['memory_gb']} GB, "
        f"Python {header['machine']['python']}; {header['date']}; "
        + ", ".join(f"{k} {v}" for k, v in header["versions"].items()),
        "",
        "| workload | variant | metric | qmcp median (min–max) | baseline median (min–max) | qmcp/baseline "
        "| floor | other qmcp figures | targets |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for line in lines:
        if "workload" not in line:
            continue
        metric = _primary(line)
        qmcp = line.get("qmcp")
        named = (str(line.get("ratio_of", "")).split() or [""])[0].partition("/")[
            2
        ]  # "qmcp/floor get_rps" → floor
        baseline_name = named or next((k for k in ("langgraph", "metaflow") if k in line), None)
        baseline = line.get(baseline_name) if baseline_name else None
        extras = []
        if qmcp and "runs" in qmcp:
            for name in ("efficiency", "flatness", "reference_per_step_ms", "step_executions", *_SERVER):
                if name in qmcp and name != metric:
                    extras.append(f"{name} {qmcp[name]['median']:.3g}")
            extras.append(f"peak RSS {qmcp.get('children_peak_rss_mb') or qmcp['peak_rss_mb']} MB")
        if baseline and "efficiency" in baseline:
            extras.append(f"{baseline_name} efficiency {baseline['efficiency']['median']:.3g}")
        if baseline and "runs" in baseline:
            extras += [
                f"{baseline_name} {k} {baseline[k]['median']:.3g}"
                for k in _SERVER
                if k in baseline and k != metric
            ]
        floors = [
            f"{name}: eff {found['efficiency']['median']:.3g}"
            + (f", qmcp/{name} {line[f'qmcp/{name}']:.3g}" if f"qmcp/{name}" in line else "")
            for name in ("floor", "floor_plain")
            if (found := line.get(name)) and "runs" in found and "efficiency" in found
        ]
        floors += [  # baselines after the first (metaflow_overhead: the hand-written flow through pydantic-ai)
            f"qmcp/{name} {line[f'qmcp/{name}']:.3g}"
            for name in (key.partition("/")[2] for key in line if key.startswith("qmcp/"))
            if name not in ("floor", "floor_plain")
        ]
        floor_text = "; ".join(floors) or "—"
        targets = "; ".join(
            f"{'✅' if t['met'] else '❌' if t['met'] is False else '—'} {t['name']} {t['op']} {t['limit']}"
            f" (got {t['value']})"
            for t in line["targets"]
        )
        ratio = line.get("ratio")
        rows.append(
            f"| {line['workload']} | {line['variant']} | {metric} | {_figure(qmcp, metric)} "
            f"| {(baseline_name + ': ' + _figure(baseline, metric)) if baseline_name else '—'} "
            f"| {'—' if ratio is None else f'{ratio:.3g}'} | {floor_text} | {', '.join(extras)} | {targets or '—'} |"
        )
    summary = next((line for line in lines if line.get("summary")), None)
    if summary:
        rows += [
            "",
            f"Targets met: {summary['targets_met']} of {summary['targets']}; suite wall time {summary['wall_seconds']} s.",
        ]
    return "\n".join(rows)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results.jsonl")
    print(render([json.loads(line) for line in path.read_text().splitlines() if line.strip()]))


if __name__ == "__main__":
    main()
