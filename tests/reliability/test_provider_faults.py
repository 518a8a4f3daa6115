"""Provider faults: 30 % transient failures are retried until every run completes; 401/400 fail at once."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from qmcp.agentframework.models import EnsembleConfig, ExecutionStatus, PipelineConfig, StepStatus, Topology
from qmcp.agentframework.runners import AsyncRunner, LocalRunner, RunConfig, RunResult
from qmcp.agentframework.store import Database

RUNS = 50
FAILURE_RATE = 0.3
TRANSIENT = ("rate_limit", "overloaded", "server_error", "timeout", "disconnect")


def _reply(prompt: str, _index: int) -> str:
    return f"answer to {len(prompt)} chars\nConfidence: 0.8"


def _config() -> RunConfig:
    # 0.3 ** 11: a step fails for good about twice in a million; the seeded draws make it never here.
    return RunConfig(retry_backoff_seconds=0.001, max_retries=10)


async def test_thirty_percent_transient_faults_over_fifty_runs_all_complete(db_url, agent, scripted):
    model, script = scripted(replies=_reply, failure_kinds=TRANSIENT, seed=7)
    pipeline = Topology(
        name="faulty_pipeline", topology_type="pipeline", config=PipelineConfig().model_dump()
    )
    ensemble = Topology(
        name="faulty_ensemble",
        topology_type="ensemble",
        config=EnsembleConfig(aggregation_method="synthesis", failure_threshold=0.0).model_dump(),
    )
    stages = {f"s{i}": agent(f"stage-{i}", "analyst", model=model) for i in range(4)}
    members = {f"m{i}": agent(f"member-{i}", "researcher", model=model) for i in range(4)}
    members["aggregator"] = agent("synthesizer", "synthesizer", model=model)
    local, concurrent = (
        LocalRunner(config=_config(), db_url=db_url),
        AsyncRunner(config=_config(), db_url=db_url),
    )

    async def run(index: int) -> RunResult:
        if index % 2:
            return await concurrent.run(ensemble, members, {"prompt": "faults"})
        return await local.run(pipeline, stages, {"prompt": "faults"})

    expected = [(await run(0)).output, (await run(1)).output]  # fault-free references
    clean_calls = len(script.calls)
    script.failure_rate = FAILURE_RATE
    results = [await run(index) for index in range(RUNS)]

    assert [r.status for r in results] == [ExecutionStatus.COMPLETED] * RUNS, [r.error for r in results]
    assert [r.output for r in results] == [expected[index % 2] for index in range(RUNS)]
    calls = script.calls[clean_calls:]
    faults = Counter(call.failed for call in calls if call.failed)
    assert set(faults) == set(TRANSIENT)
    assert 0.2 < sum(faults.values()) / len(calls) < 0.4
    async with Database(db_url) as db:
        steps = [s for r in results for s in await db.list_steps(r.execution_id)]
    assert len(steps) == RUNS // 2 * 4 + RUNS // 2 * 5
    assert {s.status for s in steps} == {StepStatus.COMPLETED}
    assert sum(s.attempts for s in steps) == len(calls)  # every retry is accounted on its step
    print(
        f"\nprovider faults: {RUNS} runs, {len(calls)} calls, {sum(faults.values())} injected: {dict(faults)}"
    )


@pytest.mark.parametrize(("kind", "status"), [("auth", 401), ("bad_request", 400)])
async def test_permanent_failures_fail_at_once_without_retry(db_url, agent, scripted, kind, status):
    # A transient fault first (retried), then the permanent one on the second stage.
    model, script = scripted(replies=_reply, failures={0: "server_error", 2: kind})
    pipeline = Topology(name="permanent", topology_type="pipeline", config=PipelineConfig().model_dump())
    stages = {f"s{i}": agent(f"stage-{i}", model=model) for i in range(3)}
    config = RunConfig(retry_backoff_seconds=1.0, max_retries=10)
    started = time.perf_counter()
    result = await LocalRunner(config=config, db_url=db_url).run(pipeline, stages, {"prompt": "p"})
    elapsed = time.perf_counter() - started

    assert result.status == ExecutionStatus.FAILED
    assert "step 'pipeline/1:s1' failed (permanent model error, not retried)" in result.error
    assert str(status) in result.error
    assert len(script.calls) == 3  # s0 twice (503, then success), s1 once
    assert elapsed < 1.0 + 1.5  # at most the one transient backoff; no backoff for the permanent error
    async with Database(db_url) as db:
        steps = await db.list_steps(result.execution_id)
    assert [(s.key, s.status, s.attempts) for s in steps] == [
        ("pipeline/0:s0", StepStatus.COMPLETED, 2),
        ("pipeline/1:s1", StepStatus.FAILED, 1),
    ]


async def test_a_permanent_failure_in_a_concurrent_ensemble_is_not_retried(sqlite_url, agent, scripted):
    model, script = scripted(replies=_reply, failures={1: "auth"})
    ensemble = Topology(
        name="strict_ensemble",
        topology_type="ensemble",
        config=EnsembleConfig(failure_threshold=0.0).model_dump(),
    )
    members = {f"m{i}": agent(f"member-{i}", model=model) for i in range(4)}
    config = RunConfig(retry_backoff_seconds=5.0, max_retries=10)
    result = await AsyncRunner(config=config, db_url=sqlite_url).run(ensemble, members, {"prompt": "p"})
    assert result.status == ExecutionStatus.FAILED
    assert "permanent model error, not retried" in result.error and "401" in result.error
    assert len(script.calls) == 4  # each member once: the 401 is not retried
