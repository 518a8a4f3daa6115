"""Evals for the server tests: a real `qmcp eval` (`qmcp.eval.start_eval`) run in this process on scripted
models, into the database a server (in this process or another) reads; and, for the matrix's bounds, the
rows of a large eval written as the engine writes them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from sqlmodel import col, update

from qmcp.agentframework.models import AgentConfig, AgentType, EvalRun, EvalScore, Execution, Topology
from qmcp.agentframework.store import Database
from qmcp.app import Caller
from qmcp.eval import EvalRequest, eval_report, start_eval

RIGHT = {"alpha": {0, 1, 2}, "beta": {0, 2}}
"""The items each variant's model answers right; beta's call on item 3 fails (a rejected request)."""
SCORES = {
    ("q0", "alpha"): 1.0,
    ("q1", "alpha"): 1.0,
    ("q2", "alpha"): 1.0,
    ("q3", "alpha"): 0.0,
    ("q0", "beta"): 1.0,
    ("q1", "beta"): 0.0,
    ("q2", "beta"): 1.0,
    ("q3", "beta"): None,
}


def _answers(right: set[int]) -> Callable[[str, int], str]:
    def answer(prompt: str, _index: int) -> str:
        item = int(re.findall(r"item (\d+)", prompt)[-1])
        return f"answer {item}" if item in right else "no idea"

    return answer


async def real_eval(db_url: str, scripted: Callable[..., Any]) -> tuple[str, dict[tuple[str, str], str]]:
    """Four samples × two topologies (`alpha`, `beta`), one cell at a time so the failure lands on
    beta's fourth call: the eval's id and each cell's execution id."""
    models = {
        "alpha": scripted(replies=_answers(RIGHT["alpha"]))[0],
        "beta": scripted(replies=_answers(RIGHT["beta"]), failures={3: "bad_request"})[0],
    }
    records = [{"id": f"q{i}", "input": f"solve item {i}", "target": f"answer {i}"} for i in range(4)]
    async with Database(db_url) as db:
        for name, model in models.items():
            agent = AgentType(
                name=f"{name}-solver", role="writer", config=AgentConfig(model=model).model_dump()
            )
            await db.save_team(Topology(name=name, topology_type="pipeline", config={}), {"solve": agent})
        request = EvalRequest(records=records, topologies=["alpha", "beta"], scorer="exact", max_concurrent=1)
        outcome = await start_eval(db, request, Caller.operator())
        assert outcome.status == "completed", outcome
        report = await eval_report(db, outcome.eval_id, rows=True)
    assert {(r.sample_id, r.variant): r.score for r in report.rows or []} == SCORES
    return outcome.eval_id, {(r.sample_id, r.variant): str(r.execution_id) for r in report.rows or []}


async def record_eval(
    db_url: str, eval_id: str, cells: list[dict[str, Any]], spec: dict[str, Any], status: str = "running"
) -> None:
    """A large eval's rows as the engine writes them (its run with `spec`, a score per cell, `eval_id` on
    each cell's execution), without running thousands of cells."""
    async with Database(db_url) as db, db.sessions() as session, session.begin():
        session.add(EvalRun(id=eval_id, status=status, spec=spec))
        await session.flush()
        for cell in cells:
            session.add(EvalScore(eval_id=eval_id, **cell))
        ids = {cell["execution_id"] for cell in cells if isinstance(cell.get("execution_id"), uuid.UUID)}
        await session.exec(update(Execution).where(col(Execution.id).in_(ids)).values(eval_id=eval_id))
