"""Usage counts every paid call: a step attempt's usage row is written with its step row, and kept
when the fence refuses the step row (its owner lost the execution), marked displaced; the
execution's totals are the sum of what was paid. The SIGKILL case is tests/reliability/test_usage_kill.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from _clock import FakeClock
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from sqlalchemy import insert
from typer.testing import CliRunner

from qmcp.agentframework.errors import LeaseLostError
from qmcp.agentframework.llm import register_model, unregister_model
from qmcp.agentframework.models import (
    Execution,
    ExecutionStatus,
    PipelineConfig,
    Topology,
    TopologyType,
    Usage,
    table_of,
)
from qmcp.agentframework.runners import LocalRunner
from qmcp.agentframework.store import SCHEMA_HEAD, Database, Owner, StepRecord, create_engine
from qmcp.agentframework.store._migrate import downgrade, upgrade
from qmcp.app import execution_cost
from qmcp.cli import app


def _paid(key: str, response: str, tokens: int) -> Any:
    return lambda eid: StepRecord(
        eid, key, "s", "agent", "test", response=response, input_tokens=tokens, output_tokens=1, cost_usd=0.25
    )


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("finished_first", [False, True])
async def test_after_a_takeover_the_displaced_call_is_recorded_and_counted(db_url, batch, finished_first):
    """Owner A pays for a call, stalls past its lease; B takes over. A's step write is refused, its
    usage row is appended (displaced), and the totals count it, whether B had finished or not."""
    async with Database(db_url) as db:
        db.executions.clock = clock = FakeClock()
        execution = Execution(topology_name="t", topology_type="pipeline")
        first = await db.executions.create(execution, Owner.this_process(), runner="local")
        assert first is not None
        await db.steps.save(_paid("a", "A's a", 10)(execution.id), batch=batch, fence=first.token)
        clock.advance(first.ttl + 1)  # A stalls past its lease, with no heartbeat
        _, second = await db.executions.claim(
            execution.id, Owner.this_process(), runner="local", runner_options={}, run_config={}
        )
        if finished_first:
            await db.steps.save(_paid("b", "B's b", 30)(execution.id), batch=batch, fence=second.token)
            assert await db.executions.finish(second, ExecutionStatus.COMPLETED) is not None
        with pytest.raises(LeaseLostError):  # A's call answered after the takeover
            await db.steps.save(_paid("b", "A's b", 20)(execution.id), batch=batch, fence=first.token)
        if not finished_first:
            await db.steps.save(_paid("b", "B's b", 30)(execution.id), batch=batch, fence=second.token)
            assert await db.executions.finish(second, ExecutionStatus.COMPLETED) is not None
        stored = await db.get_execution(execution.id)
        steps = await db.list_steps(execution.id)
        rows = await db.list_usage(execution.id)
        cost = await execution_cost(db, str(execution.id))
    assert [s.response for s in steps] == ["A's a", "B's b"]  # the fence kept A's late write out
    assert stored.usage == Usage(3, 60, 3, 0.75)  # three calls paid, all counted
    assert sorted((r.key, r.owner_token, r.displaced) for r in rows) == sorted(
        [("a", first.token, False), ("b", first.token, True), ("b", second.token, False)]
    )
    assert cost.displaced == Usage(1, 20, 1, 0.25) and cost.kept == Usage(2, 40, 2, 0.5)
    assert cost.paid == stored.usage and not cost.uncounted.has_values()
    assert [(r.key, r.owner_token) for r in cost.displaced_calls] == [("b", first.token)]


async def test_a_stalled_owner_cannot_write_inside_a_batched_commit(db_url):
    """The stalled owner's row and the new owner's rows of the same execution share one batched
    transaction: the fence, checked once for the batch, refuses only the stalled owner's row, and
    keeps its usage row, marked displaced."""
    async with Database(db_url) as db:
        db.executions.clock = clock = FakeClock()
        execution = Execution(topology_name="t", topology_type="pipeline")
        first = await db.executions.create(execution, Owner.this_process(), runner="local")
        assert first is not None
        clock.advance(first.ttl + 1)  # A stalls past its lease, with no heartbeat
        _, second = await db.executions.claim(
            execution.id, Owner.this_process(), runner="local", runner_options={}, run_config={}
        )
        outcomes = await asyncio.gather(
            db.steps.save(_paid("a", "B's a", 30)(execution.id), batch=True, fence=second.token),
            db.steps.save(_paid("b", "A's b", 20)(execution.id), batch=True, fence=first.token),
            db.steps.save(_paid("c", "B's c", 10)(execution.id), batch=True, fence=second.token),
            return_exceptions=True,
        )
        steps = await db.list_steps(execution.id)
        rows = await db.list_usage(execution.id)
        stored = await db.get_execution(execution.id)
    assert [type(o).__name__ for o in outcomes] == ["NoneType", "LeaseLostError", "NoneType"]
    assert [(s.key, s.response) for s in steps] == [("a", "B's a"), ("c", "B's c")]
    assert sorted((r.key, r.owner_token, r.displaced) for r in rows) == [
        ("a", second.token, False),
        ("b", first.token, True),
        ("c", second.token, False),
    ]
    assert stored.usage == Usage(3, 60, 3, 0.75)  # the displaced call is counted in the totals


async def test_a_write_refused_for_a_missing_execution_records_no_usage(db_url):
    async with Database(db_url) as db:
        with pytest.raises(LeaseLostError):
            await db.steps.save(_paid("a", "x", 1)(uuid.uuid4()), fence="nobody")


class _GatedModel:
    """A model that counts the calls it answers; call `held` waits for `gate` before answering."""

    def __init__(self, held: int) -> None:
        self.name = f"gated:{uuid.uuid4().hex[:8]}"
        self.started = 0
        self.answered = 0
        self.held = held
        self.gate = asyncio.Event()
        register_model(self.name, FunctionModel(self._respond, model_name=self.name))

    async def _respond(self, _messages: list[ModelMessage], _info: AgentInfo) -> ModelResponse:
        index = self.started
        self.started += 1
        if index == self.held:
            await self.gate.wait()
        self.answered += 1
        return ModelResponse(parts=[TextPart(f"call {index}")])


async def test_a_forced_takeover_counts_the_old_owners_paid_call(db_url, agent, monkeypatch):
    """The old owner's call answers after the new owner finished: its step is refused, and still the
    execution's totals are the calls the model answered, and `executions cost ID` lists it."""
    # No heartbeat during the test, however slow the machine: the old owner learns it lost at its write.
    monkeypatch.setenv("QMCP_HEARTBEAT_SECONDS", "120")
    monkeypatch.setenv("QMCP_LEASE_SECONDS", "600")
    model = _GatedModel(held=1)
    try:
        topology = Topology(
            name="pipe", topology_type=TopologyType.PIPELINE, config=PipelineConfig().model_dump()
        )
        agents = {f"s{i}": agent(f"stage-{i}", model=model.name) for i in range(3)}
        old = asyncio.create_task(LocalRunner(db_url=db_url).run(topology, agents, {"prompt": "p"}))
        while model.started < 2:  # the old owner is in its second call
            await asyncio.sleep(0.01)
        async with Database(db_url) as db:
            (running,) = await db.list_executions(status=ExecutionStatus.RUNNING)
        taken = await LocalRunner(db_url=db_url).resume(running.id, force=True)
        assert taken.status == ExecutionStatus.COMPLETED
        model.gate.set()  # the old owner's call answers now
        lost = await old
        assert "was taken over by another process" in (lost.error or "")
        async with Database(db_url) as db:
            stored = await db.get_execution(running.id)
            steps = await db.list_steps(running.id)
            cost = await execution_cost(db, str(running.id))
    finally:
        unregister_model(model.name)
    assert model.answered == 4  # call 0 (old), call 1 (old, displaced), calls 2 and 3 (new)
    assert [s.response for s in steps] == ["call 0", "call 2", "call 3"]
    assert stored.requests == model.answered == cost.paid.requests
    async with Database(db_url) as db:  # the totals are the sum of the usage rows, the displaced one included
        assert stored.usage == cost.paid == sum((r.usage for r in await db.list_usage(running.id)), Usage())
    assert stored.usage == sum((s.usage for s in steps), Usage()) + cost.displaced
    assert cost.displaced.requests == 1 and cost.displaced.total_tokens > 0
    assert [c.key for c in cost.displaced_calls] == ["pipeline/1:s1"]

    def cli(*args: str) -> Any:
        result = CliRunner().invoke(app, ["--db", db_url, *args])
        assert result.exit_code == 0, result.stderr
        return result

    shown = json.loads(
        (await asyncio.to_thread(cli, "--format", "json", "executions", "cost", str(running.id))).stdout
    )
    assert shown["displaced"]["requests"] == 1 and shown["paid"] == shown["counted"]
    assert [c["key"] for c in shown["displaced_calls"]] == ["pipeline/1:s1"]
    table = (await asyncio.to_thread(cli, "executions", "cost", str(running.id)[:8])).stdout
    assert "displaced" in table and "pipeline/1:s1" in table and "total paid" in table


async def test_migration_0007_keeps_each_executions_earlier_totals_as_one_row(db_url):
    """Totals recorded before usage rows existed stay what they were, and still equal the sum of rows."""
    assert await upgrade(db_url, "0006", create_new=False) == (None, "0006")
    spent = Execution(
        topology_name="t",
        topology_type="pipeline",
        requests=7,
        input_tokens=100,
        output_tokens=50,
        cost_usd=0.5,
    )
    idle = Execution(topology_name="t", topology_type="pipeline")
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            for execution in (spent, idle):
                # the row as revision 0006 has it: without the columns later revisions added
                row = execution.model_dump(exclude={"parent_id", "fork_key", "eval_id"})
                await conn.execute(insert(table_of(Execution)).values(**row))
    finally:
        await engine.dispose()
    assert await upgrade(db_url) == ("0006", SCHEMA_HEAD)
    async with Database(db_url) as db:
        (carried,) = await db.list_usage(spent.id)
        assert await db.list_usage(idle.id) == []
        assert await db.executions.count_usage(spent.id) == Usage(7, 100, 50, 0.5)
    assert (carried.key, carried.owner_token, carried.displaced) == (None, None, False)
    assert await downgrade(db_url, "0006") == (SCHEMA_HEAD, "0006")
