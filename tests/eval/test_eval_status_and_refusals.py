"""An eval's observed status (a killed one reads interrupted), its cells listed by eval id, and
refusals that leave nothing written: a model that does not resolve, a budget of $0."""

from __future__ import annotations

import math
import os
import socket
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import update
from sqlmodel import col, select

from qmcp.agentframework.errors import InvalidConfigError, UserInputError
from qmcp.agentframework.models import EvalRun, Execution, Topology, utcnow
from qmcp.agentframework.store import Database, Owner
from qmcp.app import Caller, ExecutionQuery, eval_matrix, list_executions
from qmcp.app import list_evals as app_evals
from qmcp.eval import (
    EvalRequest,
    eval_report,
    get_eval,
    list_evals,
    parse_budget,
    prepare_eval,
    resume_eval,
    start_eval,
)

OPERATOR = Caller.operator()


def _records(n: int) -> list[dict[str, Any]]:
    return [{"id": f"q{i}", "input": f"solve item {i}", "target": f"answer {i}"} for i in range(n)]


async def _solo(db: Database, agent: Any, model: str, name: str = "solo") -> None:
    await db.save_team(
        Topology(name=name, topology_type="pipeline", config={}),
        {"s": agent(f"{name}-agent", "writer", model=model)},
    )


async def _set_cell(db: Database, eval_id: str, **values: Any) -> None:
    async with db.sessions() as session:
        query = select(Execution.id).where(col(Execution.eval_id) == eval_id)
        query = query.order_by(col(Execution.correlation_id)).limit(1)  # the same cell each time
        execution_id = (await session.exec(query)).one()
    await db.execute_update(execution_id, values)


async def _set_eval(db: Database, eval_id: str, status: str) -> None:
    async with db.sessions() as session, session.begin():
        statement = update(EvalRun).where(col(EvalRun.id) == eval_id).values(status=status)
        await (await session.connection()).execute(statement)


async def test_an_infinite_max_cost_is_refused_not_stored(db_url, agent) -> None:
    async with Database(db_url) as db:
        await _solo(db, agent, "test")
        run = await prepare_eval(db, EvalRequest(records=_records(2), topologies=["solo"]), OPERATOR)
        for value in (math.inf, math.nan, -1.0):
            with pytest.raises(InvalidConfigError, match="--max-cost"):
                await resume_eval(db, run.id, OPERATOR, max_cost_usd=value)
        assert (await get_eval(db, run.id)).spec["max_cost_usd"] is None
    with pytest.raises(ValidationError):
        EvalRequest(records=_records(2), topologies=["solo"], max_cost_usd=math.inf)


def test_a_budget_of_zero_dollars_is_refused() -> None:
    for text in ("0usd", "$0", "0.0usd"):
        with pytest.raises(InvalidConfigError, match=r"more than \$0"):
            parse_budget(text)
    assert parse_budget("0.5usd") == (None, 0.5)


async def test_a_model_that_does_not_resolve_is_refused_before_the_eval_is_written(db_url, agent) -> None:
    async with Database(db_url) as db:
        await _solo(db, agent, "test")
        for request in (
            EvalRequest(records=_records(2), topologies=["solo"], model="nope:x"),
            EvalRequest(records=_records(2), single_call=["solo-agent"], model="nope:x"),
            EvalRequest(records=_records(2), topologies=["solo"], scorer="judge:solo-agent", model="nope:x"),
        ):
            with pytest.raises(UserInputError, match="nope"):
                await prepare_eval(db, request, OPERATOR)
        assert await list_evals(db) == []
        assert [t.name for t, _ in await db.list_topologies()] == ["solo"]  # no baseline or judge stored


async def test_a_running_eval_no_live_process_runs_reads_interrupted(db_url, scripted, agent) -> None:
    model, _ = scripted(replies=lambda prompt, _i: "answer")
    async with Database(db_url) as db:
        await _solo(db, agent, model)
        outcome = await start_eval(db, EvalRequest(records=_records(3), topologies=["solo"]), OPERATOR)
        eval_id = outcome.eval_id
        await _set_eval(db, eval_id, "running")  # as a killed `qmcp eval` leaves it
        await _set_cell(db, eval_id, status="running", owner_token=None, lease_until=None)
        assert [run.status for run in await list_evals(db)] == ["interrupted"]
        assert [e.status for e in (await app_evals(db)).evals] == ["interrupted"]  # what the server shows
        assert (await eval_matrix(db, eval_id)).status == "interrupted"
        report = await eval_report(db, eval_id)
        assert report.status == "interrupted" and report.message is None  # every cell is recorded

        me = Owner.this_process()  # a cell a live process runs: the eval is running
        await _set_cell(
            db,
            eval_id,
            owner_token=me.token,
            owner_host=socket.gethostname(),
            owner_pid=os.getpid(),
            owner_pid_start=me.pid_start,
            lease_until=utcnow() + timedelta(hours=1),
        )
        assert [run.status for run in await list_evals(db)] == ["running"]
        assert [e.status for e in (await app_evals(db)).evals] == ["running"]
        assert (await eval_report(db, eval_id)).status == "running"
        async with db.sessions() as session:
            assert (await session.get(EvalRun, eval_id)).status == "running"  # observed, not written


async def test_a_just_prepared_eval_with_no_cell_yet_reads_running(db_url, agent) -> None:
    async with Database(db_url) as db:
        await _solo(db, agent, "test")
        run = await prepare_eval(db, EvalRequest(records=_records(2), topologies=["solo"]), OPERATOR)
        assert [r.status for r in await list_evals(db)] == ["running"]
        assert (await eval_report(db, run.id)).status == "running"


async def test_executions_are_listed_by_eval_id(db_url, scripted, agent) -> None:
    model, _ = scripted(replies=lambda prompt, _i: "answer")
    async with Database(db_url) as db:
        await _solo(db, agent, model)
        await db.save_team(
            Topology(name="other", topology_type="pipeline", config={}),
            {"s": agent("o", "writer", model=model)},
        )
        first = await start_eval(db, EvalRequest(records=_records(3), topologies=["solo"]), OPERATOR)
        await start_eval(db, EvalRequest(records=_records(2), topologies=["solo", "other"]), OPERATOR)
        page = await list_executions(db, ExecutionQuery(eval_id=first.eval_id))
        assert page.total == 3 and len(page.executions) == 3
        assert {e.eval_id for e in page.executions} == {first.eval_id}
        everything = await list_executions(db, ExecutionQuery(limit=100))
        assert everything.total == 7
