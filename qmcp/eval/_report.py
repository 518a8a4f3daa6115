"""An eval's report, read from its rows: per variant accuracy with a 95 % interval, tokens, cost,
latency and failures; each pair of variants compared on the same samples; every cell as a row.

A failed cell (its execution failed, its scorer or judge failed) counts in `n` and as a wrong
answer (score 0) in the accuracy, and in `failures`: a variant that fails more is worse, not
judged on fewer samples. Binary scores (every score 0 or 1) get a Wilson interval and McNemar's
test; other scores a bootstrap interval and a paired bootstrap. Accuracy per dollar is the
accuracy over the mean cost of a cell: correct answers per dollar spent.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from ..agentframework.store import Database
from ..app import answer_only, eval_status
from ._spec import EvalSpec
from ._stats import mcnemar, paired_bootstrap, percentile, wilson_interval
from ._store import eval_executions, eval_scores, get_eval

__all__ = [
    "EvalReport",
    "JudgeSpend",
    "PairReport",
    "SampleRow",
    "VariantReport",
    "cell_answer",
    "eval_report",
]


class VariantReport(BaseModel):
    """One variant's results over its recorded cells."""

    variant: str
    kind: str
    agent: str | None = None
    n: int
    """Cells recorded (scored or failed)."""
    failures: int
    accuracy: float | None
    """Mean score, a failure counting 0; None before any cell is recorded."""
    interval: tuple[float, float] | None
    """95 % interval of the accuracy."""
    interval_method: Literal["wilson", "bootstrap"] | None
    total_tokens: int
    mean_tokens: float | None
    total_cost_usd: float
    """Everything the variant's cell executions paid (cells still running or killed included)."""
    mean_cost_usd: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    accuracy_per_dollar: float | None
    """Accuracy over the mean cost of a cell (correct answers per dollar); None when it cost nothing."""


class PairReport(BaseModel):
    """Variant `b` against variant `a` on the cells both recorded (the same samples and repeats)."""

    a: str
    b: str
    n: int
    accuracy_a: float | None
    accuracy_b: float | None
    difference: float | None
    """accuracy_b − accuracy_a."""
    interval: tuple[float, float] | None
    """95 % paired bootstrap interval of the difference."""
    test: Literal["mcnemar", "paired bootstrap"] | None
    p_value: float | None
    """McNemar's p-value (binary scores); None for the paired bootstrap (read its interval)."""
    only_a: int | None = None
    """Binary scores: samples only `a` got right."""
    only_b: int | None = None
    cost_ratio: float | None
    """b's cost over a's on the paired cells; None when a cost nothing."""


class JudgeSpend(BaseModel):
    """What a `judge:AGENT` scorer's calls cost, apart from the variants'."""

    executions: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


class SampleRow(BaseModel):
    """One cell: a sample answered by a variant once."""

    sample_id: str
    variant: str
    repeat: int
    execution_id: str | None
    status: str | None
    answer: str | None
    target: Any
    score: float | None
    explanation: str | None
    tokens: int | None
    cost_usd: float | None
    latency_ms: int | None


class EvalReport(BaseModel):
    eval_id: str
    status: str
    message: str | None
    """One line for an eval that stopped early or is not finished."""
    created_at: datetime
    completed_at: datetime | None
    source: str
    scorer: str
    repeat: int
    model: str | None
    samples: int
    cells: int
    recorded: int
    spend_usd: float
    max_cost_usd: float | None
    max_tokens_per_cell: int | None
    max_cost_per_cell: float | None
    skipped: list[str]
    variants: list[VariantReport]
    pairs: list[PairReport]
    judge: JudgeSpend
    rows: list[SampleRow] | None = None
    """Every cell, when asked for (`eval_report(..., rows=True)`, `--out`)."""


def cell_answer(output: Mapping[str, Any] | None) -> str:
    """The text a cell answered: its topology's answer, else its whole output as JSON."""
    text = answer_only(output)
    if text is not None:
        return text
    return json.dumps(output or {}, ensure_ascii=False, sort_keys=True)


async def eval_report(db: Database, eval_id: str, *, rows: bool = False) -> EvalReport:
    """The report of eval `eval_id` as its rows stand now (a running eval's is partial)."""
    run = await get_eval(db, eval_id)
    spec = EvalSpec.model_validate(run.spec)
    scores = await eval_scores(db, run.id)
    executions = await eval_executions(db, run.id)
    by_id = {row.id: row for row in executions}
    variant_index = {variant.name: index for index, variant in enumerate(spec.variants)}

    cell_spend: dict[str, list[Any]] = defaultdict(list)
    judge = JudgeSpend()
    for row in executions:
        parts = (row.correlation_id or "").split("/")
        if "judge" in parts:
            judge.executions += 1
            judge.tokens += row.input_tokens + row.output_tokens
            judge.cost_usd += row.cost_usd
        elif len(parts) == 4 and parts[1].isdigit() and int(parts[1]) < len(spec.variants):
            cell_spend[spec.variants[int(parts[1])].name].append(row)

    values: dict[str, dict[tuple[str, int], float]] = defaultdict(dict)
    binary = all(s.score in (0.0, 1.0) for s in scores if s.score is not None)
    variants = []
    for variant in spec.variants:
        own = [s for s in scores if s.variant == variant.name]
        for s in own:
            values[variant.name][(s.sample_id, s.repeat)] = s.score or 0.0
        variants.append(_variant(variant, own, cell_spend[variant.name], by_id, binary))
    pairs = [
        _pair(spec.variants[i].name, spec.variants[j].name, values, cell_spend, binary)
        for i in range(len(spec.variants))
        for j in range(i + 1, len(spec.variants))
    ]
    spend = sum(row.cost_usd for row in executions)
    status = await eval_status(db, run)
    report = EvalReport(
        eval_id=run.id,
        status=status,
        message=_message(run.id, status, spec, len(scores), spend),
        created_at=run.created_at,
        completed_at=run.completed_at,
        source=spec.source,
        scorer=spec.scorer,
        repeat=spec.repeat,
        model=spec.model,
        samples=len(spec.samples),
        cells=spec.cells,
        recorded=len(scores),
        spend_usd=spend,
        max_cost_usd=spec.max_cost_usd,
        max_tokens_per_cell=spec.max_tokens_per_cell,
        max_cost_per_cell=spec.max_cost_per_cell,
        skipped=spec.skipped,
        variants=variants,
        pairs=pairs,
        judge=judge,
    )
    if rows:
        targets = {sample["id"]: sample.get("target") for sample in spec.samples}
        order = {sample["id"]: index for index, sample in enumerate(spec.samples)}
        ordered = sorted(
            scores, key=lambda s: (order.get(s.sample_id, 0), s.repeat, variant_index.get(s.variant, 0))
        )
        report.rows = [_row(s, by_id.get(s.execution_id), targets.get(s.sample_id)) for s in ordered]
    return report


def _variant(
    variant: Any, scores: Sequence[Any], spent: Sequence[Any], by_id: Mapping[Any, Any], binary: bool
) -> VariantReport:
    n = len(scores)
    values = [s.score or 0.0 for s in scores]
    accuracy = sum(values) / n if n else None
    interval: tuple[float, float] | None = None
    method: Literal["wilson", "bootstrap"] | None = None
    if n and binary:
        interval, method = wilson_interval(round(sum(values)), n), "wilson"
    elif n:
        _, low, high = paired_bootstrap(values, [0.0] * n)  # the mean's interval: its difference from 0
        interval, method = (low, high), "bootstrap"
    tokens = sum(row.input_tokens + row.output_tokens for row in spent)
    cost = sum(row.cost_usd for row in spent)
    latencies = [
        float(by_id[s.execution_id].duration_ms)
        for s in scores
        if s.execution_id in by_id and by_id[s.execution_id].duration_ms is not None
    ]
    mean_cost = cost / len(spent) if spent else None
    return VariantReport(
        variant=variant.name,
        kind=variant.kind,
        agent=variant.agent,
        n=n,
        failures=sum(s.score is None for s in scores),
        accuracy=accuracy,
        interval=interval,
        interval_method=method,
        total_tokens=tokens,
        mean_tokens=tokens / len(spent) if spent else None,
        total_cost_usd=cost,
        mean_cost_usd=mean_cost,
        latency_p50_ms=percentile(latencies, 50) if latencies else None,
        latency_p95_ms=percentile(latencies, 95) if latencies else None,
        accuracy_per_dollar=accuracy / mean_cost if accuracy is not None and mean_cost else None,
    )


def _pair(
    a: str,
    b: str,
    values: Mapping[str, Mapping[tuple[str, int], float]],
    spent: Mapping[str, Sequence[Any]],
    binary: bool,
) -> PairReport:
    keys = [key for key in values.get(a, {}) if key in values.get(b, {})]
    first = [values[a][key] for key in keys]
    second = [values[b][key] for key in keys]
    cost_a = sum(row.cost_usd for row in spent.get(a, ()))
    cost_b = sum(row.cost_usd for row in spent.get(b, ()))
    if not keys:
        return PairReport(
            a=a, b=b, n=0, accuracy_a=None, accuracy_b=None, difference=None, interval=None,
            test=None, p_value=None, cost_ratio=cost_b / cost_a if cost_a else None,
        )  # fmt: skip
    difference, low, high = paired_bootstrap(second, first)
    report = PairReport(
        a=a,
        b=b,
        n=len(keys),
        accuracy_a=sum(first) / len(keys),
        accuracy_b=sum(second) / len(keys),
        difference=difference,
        interval=(low, high),
        test="paired bootstrap",
        p_value=None,
        cost_ratio=cost_b / cost_a if cost_a else None,
    )
    if binary:
        test = mcnemar([v == 1.0 for v in first], [v == 1.0 for v in second])
        report.test, report.p_value = "mcnemar", test.p_value
        report.only_a, report.only_b = test.only_a, test.only_b
    return report


def _row(score: Any, execution: Any, target: Any) -> SampleRow:
    return SampleRow(
        sample_id=score.sample_id,
        variant=score.variant,
        repeat=score.repeat,
        execution_id=str(score.execution_id) if score.execution_id else None,
        status=str(execution.status) if execution is not None else None,
        answer=cell_answer(execution.output_data)
        if execution is not None and execution.output_data
        else None,
        target=target,
        score=score.score,
        explanation=score.explanation,
        tokens=execution.input_tokens + execution.output_tokens if execution is not None else None,
        cost_usd=execution.cost_usd if execution is not None else None,
        latency_ms=execution.duration_ms if execution is not None else None,
    )


def _message(eval_id: str, status: str, spec: EvalSpec, recorded: int, spend: float) -> str | None:
    left = spec.cells - recorded
    if status == "stopped (budget)":
        return (
            f"stopped: the eval spent ${spend:.4f} of its --max-cost ${spec.max_cost_usd or 0:g}; "
            f"{left} of {spec.cells} cells not run (continue with: qmcp eval resume {eval_id} --max-cost USD)"
        )
    if status in ("running", "interrupted") and left:
        return (
            f"{recorded} of {spec.cells} cells recorded; if no process runs it, continue with: "
            f"qmcp eval resume {eval_id}"
        )
    return None
