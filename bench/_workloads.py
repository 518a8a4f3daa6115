"""The workloads: issue 7's seven and the server's; sizes, which frameworks run them, and their targets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WORKLOADS", "Summary", "Target", "Workload", "check_targets"]

PIPELINE_STEPS = 200
SCALING_STEPS = 5_000
ENSEMBLE_MEMBERS = 200
ENSEMBLE_CONCURRENCY = 20
SCALE_MEMBERS = 10_000
SCALE_CONCURRENCY = 1_000
LATENCY = 0.05
RESUME_STEPS = 20
RESUME_FAIL_AT = 12  # 1-based: the 12th step fails on the first attempt
METAFLOW_MEMBERS = 3
METAFLOW_SLOW_LATENCY = 1.0  # the `ensemble_1s` variant: calls as long as a real model's
RATE_RPM = 1_200  # 20 requests a second
RATE_TPM = 60_000  # 1,000 tokens a second
RATE_CALLS = 100
EVAL_SAMPLES = 1_000
EVAL_CONCURRENCY = 16

Summary = Mapping[str, Any]
"""One (variant, framework) result: metric name → {"median", "min", "max"}, plus "peak_rss_mb"."""


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    limit: float
    op: str  # "<=", ">=" or "=="

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return {
            "<=": self.value <= self.limit,
            ">=": self.value >= self.limit,
            "==": self.value == self.limit,
        }[self.op]

    def as_json(self) -> dict[str, Any]:
        value = None if self.value is None else round(self.value, 4)
        return {"name": self.name, "value": value, "op": self.op, "limit": self.limit, "met": self.met}


@dataclass(frozen=True)
class Workload:
    """A workload: its variants, the frameworks compared, and the metric the ratio is taken on.

    `frameworks[1]` is the baseline of the ratio (`bench.run` also prints qmcp's ratio to each framework
    after it); then the floors, the same work with no framework and
    no store: "floor" as bare pydantic-ai requests (the best any framework on that model layer can
    do), "floor_plain" as the scripted function awaited from plain asyncio workers (the model path
    qmcp's `ScriptedModel` pays now: no pydantic-ai); `bench.run` prints qmcp's ratio to each.
    """

    name: str
    description: str
    variants: tuple[str, ...]
    frameworks: tuple[str, ...]
    primary: str
    runs: int = 5
    params: dict[str, Any] = field(default_factory=dict)
    warmup_params: dict[str, Any] = field(default_factory=dict)  # a smaller warm-up for the big ones
    baseline_variants: tuple[str, ...] | None = None  # the only variants the other frameworks run
    baseline_runs: int | None = None  # fewer measured runs for a slow baseline, to stay in budget

    @property
    def baseline(self) -> str:
        return self.frameworks[1] if len(self.frameworks) > 1 else ""

    def runs_for(self, framework: str, variant: str) -> bool:
        if framework != "qmcp" and self.baseline_variants is not None:
            return variant in self.baseline_variants
        return True


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "pipeline_overhead",
            f"{PIPELINE_STEPS} sequential zero-latency steps, each prompt built from the previous output",
            ("sqlite", "memory"),
            ("qmcp", "langgraph"),
            "per_step_ms",
            params={"steps": PIPELINE_STEPS},
        ),
        Workload(
            "pipeline_scaling",
            f"the same pipeline at {SCALING_STEPS} steps, with the {PIPELINE_STEPS}-step run as reference",
            ("sqlite",),
            ("qmcp", "langgraph"),
            "per_step_ms",
            params={"steps": SCALING_STEPS, "reference_steps": PIPELINE_STEPS},
            warmup_params={"steps": SCALING_STEPS // 10},
            baseline_runs=3,
        ),
        Workload(
            "ensemble_concurrency",
            f"{ENSEMBLE_MEMBERS} members at {LATENCY * 1000:.0f} ms, max_concurrent={ENSEMBLE_CONCURRENCY}, "
            "then one aggregator",
            ("sqlite",),
            ("qmcp", "langgraph", "floor", "floor_plain"),
            "seconds",
            params={"members": ENSEMBLE_MEMBERS, "max_concurrent": ENSEMBLE_CONCURRENCY, "latency": LATENCY},
        ),
        Workload(
            "ensemble_scale",
            f"{SCALE_MEMBERS} members at {LATENCY * 1000:.0f} ms, max_concurrent={SCALE_CONCURRENCY}, "
            "then one aggregator",
            ("sqlite", "postgres"),
            ("qmcp", "langgraph", "floor", "floor_plain"),
            "seconds",
            params={"members": SCALE_MEMBERS, "max_concurrent": SCALE_CONCURRENCY, "latency": LATENCY},
            warmup_params={"members": SCALE_MEMBERS // 10},
            baseline_variants=("sqlite",),
            baseline_runs=3,
        ),
        Workload(
            "resume_cost",
            f"a {RESUME_STEPS}-step pipeline failing at step {RESUME_FAIL_AT} on its first attempt, then resumed",
            ("sqlite",),
            ("qmcp", "langgraph"),
            "seconds",
            params={"steps": RESUME_STEPS, "fail_at": RESUME_FAIL_AT},
        ),
        Workload(
            "cli_startup",
            "`qmcp --help` and `qmcp agents list` on an empty database; importing each framework",
            ("help", "agents_list", "import"),
            ("qmcp", "langgraph"),
            "seconds",
            baseline_variants=("import",),
        ),
        Workload(
            "first_call",
            "from starting Python to the first model call: a single-step durable team on SQLite, "
            "a fresh process per run, on a new database file or one made before",
            ("new_database", "existing_database"),
            ("qmcp", "langgraph"),
            "seconds",
        ),
        Workload(
            "server_api",
            "the QMCP server on loopback, 50 concurrent clients: GET /v1/executions/{id} (2,000 requests) "
            "and POST /v1/topologies/{name}/run (200 runs)",
            ("sqlite",),
            ("qmcp",),
            "get_rps",
            runs=3,
        ),
        Workload(
            "server_floor",
            "GET /v1/executions/{id} under wrk (1 thread, 50 connections, 10 s): `qmcp serve` against bare "
            "FastAPI + uvicorn + sqlite3 reading the same row; qmcp also starts runs from 20 concurrent clients",
            ("sqlite",),
            ("qmcp", "floor"),
            "get_rps",
            runs=3,
        ),
        Workload(
            "rate_limit",
            f"{RATE_CALLS} calls from three runs at once (two AsyncRunner ensembles, one LocalRunner pipeline) "
            f"under one process-wide limit of {RATE_RPM} requests/min (rpm) or {RATE_TPM} tokens/min (tpm)",
            ("rpm", "tpm"),
            ("qmcp",),
            "limit_ratio",
            runs=3,
            params={"calls": RATE_CALLS, "rpm": RATE_RPM, "tpm": RATE_TPM},
        ),
        Workload(
            "eval_scale",
            f"`qmcp eval` on {EVAL_SAMPLES} samples × 3 topologies (1-stage and 2-stage pipelines, a 3-member "
            f"vote) on the offline test model: 3,000 cell executions on one AsyncRunner, "
            f"max_concurrent={EVAL_CONCURRENCY}, each scored, then the report",
            ("sqlite", "postgres"),
            ("qmcp",),
            "seconds",
            runs=3,
            params={"samples": EVAL_SAMPLES, "max_concurrent": EVAL_CONCURRENCY},
            warmup_params={"samples": EVAL_SAMPLES // 10},
        ),
        Workload(
            "metaflow_overhead",
            f"the generated {METAFLOW_MEMBERS}-member ensemble flow against a hand-written Metaflow flow "
            f"of the same shape calling the same model function ({LATENCY * 1000:.0f} ms calls; "
            f"ensemble_1s: {METAFLOW_SLOW_LATENCY:.0f} s calls): awaited plainly, as the generated flow's "
            "offline model answers (metaflow_plain, the ratio), and through pydantic-ai (metaflow)",
            ("ensemble", "ensemble_1s"),
            ("qmcp", "metaflow_plain", "metaflow"),
            "seconds",
            params={"members": METAFLOW_MEMBERS, "latency": LATENCY, "slow_latency": METAFLOW_SLOW_LATENCY},
        ),
    )
}


def _median(summary: Summary | None, metric: str) -> float | None:
    if not summary or metric not in summary:
        return None
    value = summary[metric]
    return float(value["median"]) if isinstance(value, Mapping) else float(value)


def check_targets(
    workload: str,
    variant: str,
    ours: Summary | None,
    ratio: float | None,
    baseline: Summary | None = None,
    floor_ratio: float | None = None,
) -> list[Target]:
    """The issues' targets for one (workload, variant) line, from qmcp's summary, the ratio to the
    baseline, the baseline's summary and the ratio to the floor (bare pydantic-ai), all of one run."""
    median = lambda metric: _median(ours, metric)  # noqa: E731
    if workload == "pipeline_overhead" and variant == "sqlite":
        return [
            Target("per_step_ms with the SQLite store", median("per_step_ms"), 0.15, "<="),
            Target("qmcp/LangGraph per-step cost (SQLite)", ratio, 0.12, "<="),
        ]
    if workload == "pipeline_scaling":
        return [
            Target(f"per_step_ms at {SCALING_STEPS} / at {PIPELINE_STEPS}", median("flatness"), 1.2, "<=")
        ]
    if workload == "ensemble_concurrency":
        return [Target("efficiency (ideal/actual)", median("efficiency"), 0.95, ">=")]
    if workload == "ensemble_scale":
        rss = ours.get("peak_rss_mb") if ours else None
        return [
            Target("efficiency (ideal/actual)", median("efficiency"), 0.85, ">="),
            Target("peak RSS MB", rss, 500, "<="),
            # issue 24's target is SQLite's; the floor (no store) runs beside that variant only
            *(
                [Target("qmcp/floor (bare pydantic-ai)", floor_ratio, 1.25, "<=")]
                if variant == "sqlite"
                else []
            ),
        ]
    if workload == "resume_cost":
        return [Target("step executions, failed run + resume", median("step_executions"), 21, "==")]
    if workload == "first_call" and variant == "new_database":
        return [Target("qmcp/LangGraph, start to first model call", ratio, 1.2, "<=")]
    if workload == "cli_startup" and variant == "help":
        return [Target("qmcp --help seconds", median("seconds"), 0.3, "<=")]
    if workload == "rate_limit":
        return [
            Target("measured rate / limit", median("limit_ratio"), 1.02, "<="),
            Target("measured rate / limit (kept busy)", median("limit_ratio"), 0.9, ">="),
        ]
    if workload == "server_floor":
        p99, floor_p99 = median("get_p99_ms"), _median(baseline, "get_p99_ms")
        return [
            Target("qmcp/floor GET requests/s", ratio, 0.8, ">="),
            Target(
                "qmcp/floor GET p99", None if p99 is None or not floor_p99 else p99 / floor_p99, 2.0, "<="
            ),
            Target("run start p99 ms, 20 concurrent", median("post_run_p99_ms"), 50, "<="),
        ]
    if workload == "metaflow_overhead" and variant == "ensemble":
        return [Target("generated flow / hand-written flow, same model path", ratio, 1.2, "<=")]
    if workload == "eval_scale":
        return [Target(f"seconds for {EVAL_SAMPLES} samples × 3 topologies", median("seconds"), 60, "<=")]
    return []
