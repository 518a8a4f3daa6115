"""The eval's rows: `EvalRun` (one per eval) and `EvalScore` (one per scored cell), and the cells'
executions (`Execution.eval_id`). Reads and writes go through the database's sessions; the
executions themselves are written only by the runners."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from ..agentframework.errors import NotFoundError
from ..agentframework.models import EvalRun, EvalScore, Execution
from ..agentframework.store import Database
from ..app import eval_status

__all__ = [
    "add_eval",
    "add_scores",
    "eval_executions",
    "eval_scores",
    "get_eval",
    "list_evals",
    "update_eval",
]


async def add_eval(db: Database, run: EvalRun) -> None:
    async with db.sessions() as session, session.begin():
        session.add(run)


async def get_eval(db: Database, eval_id: str) -> EvalRun:
    async with db.sessions() as session:
        run = await session.get(EvalRun, eval_id.strip())
    if run is None:
        raise NotFoundError(f"eval {eval_id!r} not found; list them with: qmcp eval list")
    return run


async def list_evals(db: Database, *, limit: int = 50) -> list[EvalRun]:
    """The evals, newest first, each with its status as it stands now (`qmcp.app.eval_status`; the
    rows are not written)."""
    query = select(EvalRun).order_by(col(EvalRun.created_at).desc()).limit(limit)
    async with db.sessions() as session:
        runs = list((await session.exec(query)).all())
    for run in runs:
        run.status = await eval_status(db, run)
    return runs


async def update_eval(db: Database, eval_id: str, **values: Any) -> None:
    """Set an eval's status, completion time or spec (the engine is the one writer of its row)."""
    statement = update(EvalRun).where(col(EvalRun.id) == eval_id).values(**values)
    async with db.sessions() as session, session.begin():
        await (await session.connection()).execute(statement)


async def add_scores(db: Database, rows: Sequence[EvalScore]) -> None:
    """Write scored cells in one transaction (a batch: a cell whose score was lost with a killed
    process is scored again from its stored output on resume)."""
    if not rows:
        return
    try:
        async with db.sessions() as session, session.begin():
            session.add_all(rows)
    except IntegrityError:  # another process scored some of these cells: keep its rows, add the others
        for row in rows:
            with contextlib.suppress(IntegrityError):
                async with db.sessions() as session, session.begin():
                    session.add(EvalScore.model_validate(row.model_dump(exclude={"id"})))


async def eval_scores(db: Database, eval_id: str) -> list[EvalScore]:
    query = select(EvalScore).where(col(EvalScore.eval_id) == eval_id).order_by(col(EvalScore.id))
    async with db.sessions() as session:
        return list((await session.exec(query)).all())


_EXECUTION_COLUMNS: tuple[Any, ...] = (
    Execution.id,
    Execution.correlation_id,
    Execution.topology_name,
    Execution.status,
    Execution.output_data,
    Execution.error,
    Execution.requests,
    Execution.input_tokens,
    Execution.output_tokens,
    Execution.cost_usd,
    Execution.duration_ms,
)


async def eval_executions(db: Database, eval_id: str) -> list[Any]:
    """The eval's executions (cells and judge calls), without their snapshots: rows with the
    columns of `_EXECUTION_COLUMNS` as attributes."""
    query = select(*_EXECUTION_COLUMNS).where(col(Execution.eval_id) == eval_id)
    async with db.sessions() as session:
        return list((await session.exec(query)).all())
