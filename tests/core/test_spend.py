"""Budgets: checked before every model call against the execution's totals; resume raises them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from qmcp.agentframework.errors import BudgetExceededError
from qmcp.agentframework.models import (
    EnsembleConfig,
    ExecutionStatus,
    ModelConfig,
    Models,
    PipelineConfig,
    Topology,
    TopologyType,
    Usage,
)
from qmcp.agentframework.runners import AsyncRunner, LocalRunner, RunConfig
from qmcp.agentframework.store import Database
from qmcp.agentframework.topologies import Budget

INPUT_PRICE, OUTPUT_PRICE = 1000.0, 2000.0  # dollars per million tokens: a cent is a few tokens


@pytest.fixture
def priced(scripted: Callable[..., tuple[str, Any]]) -> Iterator[Callable[..., tuple[str, Any]]]:
    """A scripted model with a price in the Models registry."""
    registered: list[str] = []

    def make(**kwargs: Any) -> tuple[str, Any]:
        name, model = scripted(**kwargs)
        Models.register(
            ModelConfig(
                provider="scripted",
                name=name.split(":", 1)[1],
                input_price_per_mtok=INPUT_PRICE,
                output_price_per_mtok=OUTPUT_PRICE,
                max_output_tokens=50,
            )
        )
        registered.append(name)
        return name, model

    yield make
    for name in registered:
        Models._registry.pop(name, None)


def _ensemble(
    agent: Callable[..., Any], model: str, members: int = 20, **config: Any
) -> tuple[Topology, dict]:
    agents = {f"m{i}": agent(f"member{i}", model=model, max_tokens=50, **config) for i in range(members)}
    topology = Topology(
        name="budgeted",
        topology_type=TopologyType.ENSEMBLE,
        config=EnsembleConfig(aggregation_method="concat").model_dump(),
    )
    return topology, agents


async def test_a_budget_crossed_mid_ensemble_stops_and_resume_with_more_repays_nothing(db_url, agent, priced):
    model, script = priced(latency=0.05)
    topology, agents = _ensemble(agent, model)
    budget = 1.0
    runner = AsyncRunner(db_url=db_url, max_concurrent=20, config=RunConfig(max_cost_usd=budget))
    result = await runner.run(topology, agents, {"prompt": "hello world " * 20})

    assert result.status == ExecutionStatus.FAILED
    assert result.error.startswith("budget exceeded: the run spent $")
    assert "--max-cost" in result.error and str(result.execution_id) in result.error
    paid = len(script.calls)
    assert 0 < paid < 20  # stopped in the middle
    per_call = result.cost_usd / paid
    assert result.cost_usd <= budget + per_call * 20  # at most the calls that were in flight on top
    assert result.cost_usd <= budget  # here: the estimates (prompt + max output) cover what each call used
    async with Database(db_url) as db:
        steps = await db.list_steps(result.execution_id)
    assert len(steps) == paid and all(s.status == "completed" for s in steps)  # in-flight calls recorded
    assert sum(s.cost_usd for s in steps) == pytest.approx(result.cost_usd)

    more = AsyncRunner(db_url=db_url, max_concurrent=20, config=RunConfig(max_cost_usd=100.0))
    resumed = await more.resume(result.execution_id)
    assert resumed.status == ExecutionStatus.COMPLETED, resumed.error
    assert len(script.calls) == 20  # the paid calls replayed, not called again
    assert resumed.cost_usd == pytest.approx(per_call * 20)
    async with Database(db_url) as db:
        execution = await db.get_execution(result.execution_id)
    assert execution.run_config["max_cost_usd"] == 100.0
    assert execution.history[-1]["changes"] == {"max_cost_usd": [budget, 100.0]}


async def test_a_call_whose_estimate_cannot_fit_is_not_started(sqlite_url, agent, priced):
    model, script = priced()
    topology = Topology(name="one", topology_type=TopologyType.PIPELINE, config=PipelineConfig().model_dump())
    agents = {"only": agent("only", model=model, max_tokens=50)}
    # 50 output tokens at $2000/M is $0.10 before the prompt: a $0.05 budget fits no call.
    result = await LocalRunner(db_url=sqlite_url, config=RunConfig(max_cost_usd=0.05)).run(
        topology, agents, {"prompt": "p"}
    )
    assert result.status == ExecutionStatus.FAILED and script.calls == []
    assert "spent $0.0000 of its budget of $0.0500" in result.error and "'only'" in result.error


async def test_a_token_budget_counts_replayed_steps_of_earlier_attempts(sqlite_url, agent, scripted):
    model, script = scripted()
    stages = {f"s{i}": agent(f"stage{i}", model=model, max_tokens=20) for i in range(6)}
    topology = Topology(
        name="tokens", topology_type=TopologyType.PIPELINE, config=PipelineConfig().model_dump()
    )
    first = await LocalRunner(db_url=sqlite_url, config=RunConfig(max_tokens=150)).run(
        topology, stages, {"prompt": "short"}
    )
    assert first.status == ExecutionStatus.FAILED and "tokens" in first.error
    done = len(script.calls)
    assert 0 < done < 6 and first.input_tokens + first.output_tokens <= 150
    # The same budget again: what the first attempt spent still counts, so nothing more runs.
    again = await LocalRunner(db_url=sqlite_url).resume(first.execution_id)
    assert again.status == ExecutionStatus.FAILED and len(script.calls) == done
    finished = await LocalRunner(db_url=sqlite_url, config=RunConfig(max_tokens=10_000)).resume(
        first.execution_id
    )
    assert finished.status == ExecutionStatus.COMPLETED and len(script.calls) == 6


async def test_an_agent_budget_stops_that_agent(sqlite_url, agent, priced):
    model, script = priced()
    topology = Topology(
        name="agents", topology_type=TopologyType.PIPELINE, config=PipelineConfig().model_dump()
    )
    agents = {
        "a": agent("cheap", model=model, max_tokens=20),
        "b": agent("capped", model=model, max_tokens=20, max_total_tokens=30),
    }
    result = await LocalRunner(db_url=sqlite_url).run(topology, agents, {"prompt": "one two three"})
    assert result.status == ExecutionStatus.FAILED
    assert "agent 'capped' spent 0 tokens of its budget of 30 tokens" in result.error
    assert len(script.calls) == 1  # the first stage ran; the capped one was never called


async def test_concurrent_calls_wait_for_estimates_in_flight_instead_of_failing():
    """Two calls whose estimates fit only one at a time: the second waits for the first to settle."""
    import asyncio

    budget = Budget("e", max_tokens=100)
    first = await budget.reserve("a", "test", 10, 50)  # 60 held
    second = asyncio.ensure_future(budget.reserve("a", "test", 10, 50))
    await asyncio.sleep(0.01)
    assert not second.done()  # 60 held + 60 > 100, but 0 spent + 60 fits: it waits
    budget.settle(first, Usage(requests=1, input_tokens=10, output_tokens=10))  # used 20 of its 60
    held = await asyncio.wait_for(second, 1)
    assert budget.run.spent.total_tokens == 20 and budget.run.reserved.total_tokens == 60
    budget.settle(held, Usage(requests=1, input_tokens=10, output_tokens=20))
    with pytest.raises(BudgetExceededError) as exceeded:
        await budget.reserve("a", "test", 10, 50)  # 50 spent + 60 > 100: cannot fit
    assert (exceeded.value.spent, exceeded.value.budget, exceeded.value.unit) == (50, 100, "tokens")


def test_an_unlimited_run_has_no_budget_to_check():
    kwargs: dict[str, Any] = {"spent": Usage(), "completed": {}}
    assert Budget.for_execution("e", max_tokens=None, max_cost_usd=None, agent_configs=[{}], **kwargs) is None
    assert (
        Budget.for_execution("e", max_tokens=None, max_cost_usd=1.0, agent_configs=[], **kwargs) is not None
    )
    limited = [{"max_cost_usd": 0.5}]
    assert Budget.for_execution("e", max_tokens=None, max_cost_usd=None, agent_configs=limited, **kwargs)


async def test_an_unpriced_model_warns_once_and_counts_tokens(sqlite_url, agent, scripted, caplog):
    model, script = scripted()
    topology, agents = _ensemble(agent, model, members=3)
    caplog.set_level(logging.WARNING, logger="qmcp")
    for _ in range(2):
        result = await LocalRunner(db_url=sqlite_url, config=RunConfig(max_cost_usd=0.01)).run(
            topology, agents, {"prompt": f"p {uuid.uuid4()}"}
        )
        assert result.status == ExecutionStatus.COMPLETED and result.cost_usd == 0
    warnings = [r for r in caplog.records if getattr(r, "qmcp_event", "") == "budget.unpriced_model"]
    assert len(warnings) == 1 and warnings[0].qmcp_fields["model"] == model
    assert len(script.calls) == 6


def test_usage_adds_up_and_names_its_span_attributes():
    first = Usage(requests=1, input_tokens=10, output_tokens=5, cost_usd=0.25)
    both = first + Usage(requests=2, input_tokens=1, output_tokens=2, cost_usd=0.5)
    assert both == Usage(3, 11, 7, 0.75) and both.total_tokens == 18
    assert first == Usage(1, 10, 5, 0.25)  # `+` leaves its operands alone
    first.incr(both)
    assert first == Usage(4, 21, 12, 1.0)
    assert not Usage().has_values() and Usage(requests=1).has_values()
    assert both.opentelemetry_attributes() == {
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "qmcp.usage.requests": 3,
        "qmcp.cost_usd": 0.75,
    }


async def test_a_run_result_carries_its_usage_and_the_seed_fields(sqlite_url, agent, priced):
    model, script = priced()
    topology, agents = _ensemble(agent, model, members=2)
    result = await LocalRunner(db_url=sqlite_url).run(topology, agents, {"prompt": "p"})
    async with Database(sqlite_url) as db:
        steps = await db.list_steps(result.execution_id)
    paid = sum((s.usage for s in steps), Usage())
    assert paid.requests == len(script.calls) == 2 and paid.total_tokens > 0 and paid.cost_usd > 0
    assert result.usage == Usage(2, paid.input_tokens, paid.output_tokens, pytest.approx(paid.cost_usd))
    assert (result.input_tokens, result.output_tokens, result.cost_usd) == (
        paid.input_tokens,
        paid.output_tokens,
        result.usage.cost_usd,
    )
    dumped = result.model_dump(mode="json")
    assert dumped["usage"]["input_tokens"] == dumped["input_tokens"] == paid.input_tokens


async def test_a_retried_call_counts_each_request_in_the_executions_usage(db_url, agent, scripted):
    model, script = scripted(failures={0: "server_error"})
    runner = LocalRunner(db_url=db_url, config=RunConfig(retry_backoff_seconds=0.001))
    result = await runner.run(*_ensemble(agent, model, members=2), {"prompt": "p"})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert result.usage.requests == len(script.calls) == 3  # one member took two requests
    async with Database(db_url) as db:
        stored = await db.get_execution(result.execution_id)
        steps = await db.list_steps(result.execution_id)
    assert stored.usage == result.usage == sum((s.usage for s in steps), Usage())
