"""Query operations on `qmcp eval` runs: the list of evals, and an eval's matrix of samples × variants.

Reads only, from the rows an eval writes (`EvalRun`, `EvalScore`) and its cells' executions (each cell
is an ordinary execution with `eval_id` set). The doors show the matrix page by page: an eval of a
thousand samples is read a page of samples at a time, its cells and their executions with it. The report
with statistics (accuracy intervals, paired tests) is `qmcp.eval.eval_report`, a layer above this one.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlmodel import col, select

from ..agentframework.errors import NotFoundError
from ..agentframework.models import EvalRun, EvalScore, Execution, ExecutionStatus
from ..agentframework.store import Database, check_page, observed

__all__ = [
    "EvalCell",
    "EvalColumn",
    "EvalList",
    "EvalMatrix",
    "EvalRow",
    "EvalSummary",
    "cell_correlation",
    "eval_matrix",
    "eval_status",
    "get_eval_run",
    "list_evals",
]


class EvalSummary(BaseModel):
    """One eval as the lists show it: what it compared and how far it got."""

    id: str
    status: str
    created_at: datetime
    completed_at: datetime | None
    variants: list[str] = Field(description="The topologies (and one-call baselines) compared")
    samples: int = Field(description="Samples of its dataset (else those with a cell recorded)")
    planned: int | None = Field(description="Cells it runs: samples × variants × repeats (null: not stored)")
    cells: int = Field(description="Cells recorded (scored, or failed)")
    unscored: int = Field(description="Cells without a score: their execution did not finish")


class EvalList(BaseModel):
    evals: list[EvalSummary]
    count: int
    total: int = Field(description="Evals stored, on every page")


class EvalColumn(BaseModel):
    """A column of the matrix: one variant, one repeat of it."""

    variant: str
    repeat: int


class EvalCell(BaseModel):
    """One sample answered by one variant once: its score and the execution that answered."""

    variant: str
    repeat: int
    scored: bool = Field(description="Whether the cell is recorded: scored, or failed (a null score)")
    score: float | None = Field(description="0..1; null when the cell failed or is not recorded yet")
    explanation: str | None
    execution_id: str | None = Field(description="Also for a cell not recorded yet whose execution exists")
    status: str | None = Field(description="The execution's status; null when the cell has no execution")


class EvalRow(BaseModel):
    """A sample's cells, one per column of the matrix (in `EvalMatrix.columns` order)."""

    sample_id: str
    cells: list[EvalCell]


class EvalMatrix(BaseModel):
    """A page of an eval's matrix: samples (rows) × variants and repeats (columns)."""

    eval_id: str
    status: str
    columns: list[EvalColumn]
    rows: list[EvalRow]
    count: int = Field(description="Samples on this page")
    total: int = Field(description="Samples of the eval, on every page")
    offset: int
    limit: int


def _natural(text: str) -> tuple[Any, ...]:
    """`s2` before `s10`: numbers in a sample id compare as numbers."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text))


@dataclass(frozen=True)
class _Plan:
    """What an eval's spec says it runs (`qmcp.eval.EvalSpec`, read here as the JSON it is stored as:
    this layer sits below `qmcp.eval`): its samples' ids in the dataset's order, its variants, repeats."""

    samples: list[str]
    variants: list[str]
    repeat: int

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> _Plan:
        samples = spec.get("samples")
        variants = spec.get("variants")
        repeat = spec.get("repeat")
        return cls(
            [str(s["id"]) for s in samples if isinstance(s, dict) and "id" in s]
            if isinstance(samples, list)
            else [],
            [str(v["name"]) for v in variants if isinstance(v, dict) and "name" in v]
            if isinstance(variants, list)
            else [],
            repeat if isinstance(repeat, int) and repeat > 0 else 1,
        )

    @property
    def cells(self) -> int | None:
        return (
            len(self.samples) * len(self.variants) * self.repeat if self.samples and self.variants else None
        )


def cell_correlation(eval_id: str, variant: int, sample: int, repeat: int) -> str:
    """The correlation id of a cell's execution (`EVAL/variant/sample/repeat`, indices in the eval's
    spec; docs/eval.md): the engine names cells with it, and a cell not scored yet finds its running
    execution by it."""
    return f"{eval_id}/{variant}/{sample}/{repeat}"


async def get_eval_run(db: Database, eval_id: str) -> EvalRun:
    """The eval's row, or a one-line `NotFoundError`."""
    async with db.sessions() as session:
        run = await session.get(EvalRun, eval_id)
    if run is None:
        raise NotFoundError(f"eval {eval_id!r} not found; list them with: qmcp eval list")
    return run


async def eval_status(db: Database, run: EvalRun) -> str:
    """The eval's status as it stands now: a `running` eval none of whose cells a live process runs
    any more (its `qmcp eval` was killed) reads `interrupted`, as its executions do.

    An eval with no execution yet stays `running` (its process may be about to start the first
    cell); one whose live process is between cells (scoring its last ones) reads `interrupted` for
    that moment. Computed when read, never written, like an execution's."""
    if run.status != "running" or not await db.count_executions(eval_id=run.id):
        return run.status
    live = await db.count_executions(status=ExecutionStatus.RUNNING, eval_id=run.id)
    return run.status if live else "interrupted"


async def list_evals(db: Database, *, limit: int = 50, offset: int = 0) -> EvalList:
    """Evals, newest first, each with its variants and how many of its cells it recorded."""
    check_page(limit, offset)
    async with db.sessions() as session:
        total = (await session.exec(select(func.count()).select_from(EvalRun))).one()
        runs = list(
            (
                await session.exec(
                    select(EvalRun).order_by(col(EvalRun.created_at).desc()).offset(offset).limit(limit)
                )
            ).all()
        )
        ids = [run.id for run in runs]
        counts = (
            await session.exec(
                select(
                    col(EvalScore.eval_id),
                    func.count(),
                    func.count(col(EvalScore.score)),
                    func.count(func.distinct(col(EvalScore.sample_id))),
                )
                .where(col(EvalScore.eval_id).in_(ids))
                .group_by(col(EvalScore.eval_id))
            )
        ).all()
        variants = (
            await session.exec(
                select(col(EvalScore.eval_id), col(EvalScore.variant), func.min(col(EvalScore.id)))
                .where(col(EvalScore.eval_id).in_(ids))
                .group_by(col(EvalScore.eval_id), col(EvalScore.variant))
            )
        ).all()
    counted = {eval_id: (cells, scored, samples) for eval_id, cells, scored, samples in counts}
    recorded: dict[str, list[tuple[int, str]]] = {}
    for eval_id, variant, first in variants:
        recorded.setdefault(eval_id, []).append((int(first or 0), variant))
    summaries = []
    for run in runs:
        cells, scored, samples = counted.get(run.id, (0, 0, 0))
        plan = _Plan.of(run.spec)
        named = plan.variants + [v for _, v in sorted(recorded.get(run.id, [])) if v not in plan.variants]
        summaries.append(
            EvalSummary(
                id=run.id,
                status=await eval_status(db, run),
                created_at=run.created_at,
                completed_at=run.completed_at,
                variants=named,
                samples=len(plan.samples) or samples,
                planned=plan.cells,
                cells=cells,
                unscored=cells - scored,
            )
        )
    return EvalList(evals=summaries, count=len(summaries), total=int(total))


async def eval_matrix(db: Database, eval_id: str, *, limit: int = 100, offset: int = 0) -> EvalMatrix:
    """A page of the eval's samples with every cell of each: its score, explanation, execution and
    that execution's status now. Samples and columns are those of the eval's spec (the dataset's order;
    each variant, each repeat of it a column), then any others it recorded (samples in natural order
    of their ids, variants in the order they were first recorded)."""
    check_page(limit, offset)
    run = await get_eval_run(db, eval_id)
    plan = _Plan.of(run.spec)
    async with db.sessions() as session:
        columns = (
            await session.exec(
                select(col(EvalScore.variant), col(EvalScore.repeat), func.min(col(EvalScore.id)))
                .where(col(EvalScore.eval_id) == eval_id)
                .group_by(col(EvalScore.variant), col(EvalScore.repeat))
            )
        ).all()
        sample_ids = (
            await session.exec(
                select(col(EvalScore.sample_id)).where(col(EvalScore.eval_id) == eval_id).distinct()
            )
        ).all()
        planned = set(plan.samples)
        every = plan.samples + sorted((s for s in sample_ids if s not in planned), key=_natural)
        page = every[offset : offset + limit]
        scores: Sequence[EvalScore] = (
            (
                await session.exec(
                    select(EvalScore).where(
                        col(EvalScore.eval_id) == eval_id, col(EvalScore.sample_id).in_(page)
                    )
                )
            ).all()
            if page
            else []
        )
        found = {(s.sample_id, s.variant, s.repeat): s for s in scores}
        execution_ids = [score.execution_id for score in scores if score.execution_id is not None]
        executions: list[Execution] = (
            list((await session.exec(select(Execution).where(col(Execution.id).in_(execution_ids)))).all())
            if execution_ids
            else []
        )
        position = {sample: index for index, sample in enumerate(plan.samples)}
        waiting = {  # cells of the page not recorded yet, by the correlation id their execution has
            cell_correlation(run.id, v_index, position[sample], repeat): (sample, variant, repeat)
            for sample in page
            if sample in position
            for v_index, variant in enumerate(plan.variants)
            for repeat in range(plan.repeat)
            if (sample, variant, repeat) not in found
        }
        started: list[Execution] = (
            list(
                (
                    await session.exec(
                        select(Execution).where(
                            col(Execution.eval_id) == run.id, col(Execution.correlation_id).in_(waiting)
                        )
                    )
                ).all()
            )
            if waiting
            else []
        )
    now = db.executions.clock.now()
    statuses: dict[uuid.UUID, str] = {e.id: str(observed(e, now).status) for e in executions + started}
    going = {waiting[str(e.correlation_id)]: e.id for e in started}
    shown = [(variant, repeat) for variant in plan.variants for repeat in range(plan.repeat)]
    first: dict[str, int] = {}  # the first row each other variant recorded: the order they ran in
    for variant, _, row in columns:
        first[variant] = min(first.get(variant, int(row or 0)), int(row or 0))
    others = sorted(
        ((variant, repeat) for variant, repeat, _ in columns if (variant, repeat) not in shown),
        key=lambda column: (first[column[0]], column[1]),
    )
    shown += others
    rows = []
    for sample_id in page:
        cells = []
        for variant, repeat in shown:
            score = found.get((sample_id, variant, repeat))
            execution = score.execution_id if score is not None else going.get((sample_id, variant, repeat))
            cells.append(
                EvalCell(
                    variant=variant,
                    repeat=repeat,
                    scored=score is not None,
                    score=score.score if score is not None else None,
                    explanation=score.explanation if score is not None else None,
                    execution_id=str(execution) if execution is not None else None,
                    status=statuses.get(execution) if execution is not None else None,
                )
            )
        rows.append(EvalRow(sample_id=sample_id, cells=cells))
    return EvalMatrix(
        eval_id=run.id,
        status=await eval_status(db, run),
        columns=[EvalColumn(variant=variant, repeat=repeat) for variant, repeat in shown],
        rows=rows,
        count=len(rows),
        total=len(every),
        offset=offset,
        limit=limit,
    )
