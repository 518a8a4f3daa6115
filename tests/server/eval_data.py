"""Evals for the server tests: the rows `qmcp eval` writes (an `EvalRun`, a score per cell, `eval_id` on
each cell's execution) over executions the `test` model really ran through the server."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlmodel import col, update
from team import finished, make_team, run

from qmcp.agentframework.models import EvalRun, EvalScore, Execution
from qmcp.agentframework.store import Database


async def record_eval(
    db_url: str, eval_id: str, cells: list[dict[str, Any]], status: str = "completed"
) -> None:
    """An eval's rows as `qmcp eval` writes them: the run, one score per cell, and `eval_id` on each cell's
    execution."""
    async with Database(db_url) as db, db.sessions() as session, session.begin():
        session.add(
            EvalRun(id=eval_id, status=status, spec={"samples": len({c["sample_id"] for c in cells})})
        )
        await session.flush()
        for cell in cells:
            session.add(EvalScore(eval_id=eval_id, **cell))
        ids = [cell["execution_id"] for cell in cells if cell.get("execution_id")]
        await session.exec(update(Execution).where(col(Execution.id).in_(ids)).values(eval_id=eval_id))


async def small_eval(client: httpx.AsyncClient, db_url: str) -> tuple[str, dict[tuple[str, str], str]]:
    """Two samples × two variants, run for real on the `test` model: one cell wrong, one without a score."""
    await make_team(client)
    executions = {}
    for sample in ("s1", "s2"):
        for variant in ("plan-write", "panel"):
            execution_id = await run(client, variant, f"question {sample}")
            assert (await finished(client, execution_id))["status"] == "completed"
            executions[sample, variant] = execution_id
    scores = {
        ("s1", "plan-write"): 1.0,
        ("s1", "panel"): 0.0,
        ("s2", "plan-write"): 1.0,
        ("s2", "panel"): None,
    }
    cells = [
        {
            "sample_id": sample,
            "variant": variant,
            "repeat": 0,
            "execution_id": uuid.UUID(executions[sample, variant]),
            "score": score,
            "explanation": "expected 4, got 5" if score == 0 else None,
        }
        for (sample, variant), score in scores.items()
    ]
    await record_eval(db_url, "ev-small", cells)
    return "ev-small", executions
