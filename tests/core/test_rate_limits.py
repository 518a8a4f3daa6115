"""Rate limits: one limiter per model for the whole process, from ModelConfig, QMCP_RATE_LIMITS or
RunConfig; callers wait; a 429 with retry-after holds back every caller. (The rate a limiter holds is
measured in the benchmark, `python -m bench --only rate_limit`, not here.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from qmcp.agentframework import llm
from qmcp.agentframework.errors import InvalidConfigError
from qmcp.agentframework.llm import (
    RateLimit,
    RateLimiter,
    RateLimits,
    _limits,
    parse_rate_limits,
    rate_limits,
)
from qmcp.agentframework.models import (
    EnsembleConfig,
    ExecutionStatus,
    ModelConfig,
    Models,
    Topology,
    TopologyType,
)
from qmcp.agentframework.runners import AsyncRunner, LocalRunner, RunConfig


@pytest.fixture(autouse=True)
def _fresh_limits() -> Iterator[None]:
    rate_limits().reset()
    yield
    rate_limits().reset()


class _Clock:
    """`time.monotonic` for the limiter, moved by hand: its arithmetic, tested without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(_limits.time, "monotonic", fake.monotonic)
    return fake


def test_the_variable_reads_json_or_the_short_form():
    assert parse_rate_limits('{"openai:gpt-4.1": {"rpm": 500, "tpm": 200000}}') == {
        "openai:gpt-4.1": RateLimit(500, 200000)
    }
    assert parse_rate_limits("openai:gpt-4.1=500/200000, anthropic:claude-haiku-4-5=50, x:y=-/1000") == {
        "openai:gpt-4.1": RateLimit(500, 200000),
        "anthropic:claude-haiku-4-5": RateLimit(50, None),
        "x:y": RateLimit(None, 1000),
    }
    assert parse_rate_limits("") == {}
    for bad in ('{"m": {"rpn": 5}}', "m=fast", "=5", "m=0", '{"m": 5}', "{not json"):
        with pytest.raises(InvalidConfigError, match="QMCP_RATE_LIMITS must be JSON"):
            parse_rate_limits(bad)


def test_requests_are_spaced_after_a_burst_of_one_seconds_share(clock):
    limiter = RateLimiter(RateLimit(rpm=600))  # 10 a second
    waits = [limiter._reserve(0) for _ in range(30)]
    assert waits[:10] == pytest.approx([0.0] * 10, abs=1e-9)  # the burst
    assert waits[10:13] == pytest.approx([0.1, 0.2, 0.3])  # then one every 0.1 s
    assert waits[29] == pytest.approx(2.0)
    clock.now += 60  # a quiet minute gives back the burst, not a minute's worth
    assert [limiter._reserve(0) for _ in range(11)][-1] == pytest.approx(0.1)


def test_tokens_are_spaced_and_settled_by_what_calls_used(clock):
    limiter = RateLimiter(RateLimit(tpm=6000))  # 100 tokens a second
    assert limiter._reserve(100) == 0.0
    assert limiter._reserve(100) == pytest.approx(1.0)
    limiter.settle(estimated=100, used=300)  # the call used more: later ones wait longer
    assert limiter._reserve(100) == pytest.approx(4.0)
    assert limiter._reserve(1000) == pytest.approx(5.0)  # larger than a second's share: waits its turn


async def test_a_call_that_used_more_than_it_reserved_moves_back_callers_already_waiting(clock, monkeypatch):
    """Calls reserved together on a low estimate (no max_tokens) must not go out above the limit and
    leave the model idle afterwards: the overrun of a call that returned moves back the turns already
    handed out, as it does later ones."""
    limiter = RateLimiter(RateLimit(tpm=6000))  # 100 tokens a second
    real_sleep, slept = asyncio.sleep, []

    async def sleep(seconds: float) -> None:  # the limiter's waits, on the hand-moved clock
        slept.append(round(seconds, 6))
        clock.now += seconds
        await real_sleep(0)

    monkeypatch.setattr(_limits.asyncio, "sleep", sleep)
    await limiter.acquire(100)  # goes at once
    waiting = asyncio.create_task(limiter.acquire(100))  # its turn is 1 s later
    await real_sleep(0)
    assert slept == [1.0]
    limiter.settle(estimated=100, used=300)  # the first call used 2 s of tokens more than it reserved
    await waiting
    assert slept == [1.0, 2.0]  # the waiting caller went out 2 s later
    assert limiter._reserve(100) == pytest.approx(1.0)  # and the next one queues behind it
    limiter.settle(estimated=100, used=50)  # less than reserved: no waiting caller is moved
    assert limiter._owed(limiter._overrun)[0] == 0.0


def test_a_pause_holds_back_every_caller_and_later_turns_queue_after_it(clock):
    limiter = RateLimiter(RateLimit(rpm=60))
    assert limiter._reserve(0) == 0.0
    limiter.back_off(5.0)
    assert limiter._reserve(0) == pytest.approx(5.0)  # when the pause ends, then one second apart
    assert limiter._reserve(0) == pytest.approx(6.0)
    unlimited = RateLimiter(RateLimit())
    unlimited.back_off(2.0)
    assert unlimited._reserve(0) == pytest.approx(2.0) and unlimited._reserve(0) == pytest.approx(2.0)


def test_limits_come_from_configure_then_the_variable_then_the_model_config():
    limits = RateLimits(environ={"QMCP_RATE_LIMITS": "a:m=100,b:m=200"})
    from_config = lambda: RateLimit(rpm=300)  # noqa: E731
    assert limits.limiter("a:m", from_config).limit == RateLimit(100)
    assert limits.limiter("c:m", from_config).limit == RateLimit(300)
    assert limits.limiter("d:m", lambda: None) is None
    limits.configure("a:m", RateLimit(rpm=50))
    assert limits.limiter("a:m").limit == RateLimit(50)  # the same limiter object, new limit
    limits.configure("a:m", None)
    assert limits.limiter("a:m").limit == RateLimit(100)
    limits.back_off("d:m", 1.0)  # a 429 on an unlimited model: a limiter that only pauses
    assert limits.limiter("d:m").limit == RateLimit()
    limits.reset()
    assert limits.limiter("d:m", lambda: None) is None


def test_the_process_registry_is_made_on_first_use_and_reset_clears_it(monkeypatch):
    monkeypatch.setattr(_limits, "_registry", None)
    monkeypatch.setenv("QMCP_RATE_LIMITS", "x:y=10")
    registry = llm.rate_limits()
    assert registry is llm.rate_limits() and registry.limiter("x:y").limit == RateLimit(10)
    monkeypatch.setenv("QMCP_RATE_LIMITS", "")
    registry.reset()
    assert registry.limiter("x:y") is None


def _team(agent: Any, model: str, members: int) -> tuple[Topology, dict[str, Any]]:
    agents = {f"m{i}": agent(f"member{i}", model=model, max_tokens=20) for i in range(members)}
    topology = Topology(
        name="limited",
        topology_type=TopologyType.ENSEMBLE,
        config=EnsembleConfig(aggregation_method="concat").model_dump(),
    )
    return topology, agents


async def test_runs_and_runners_share_one_limiter_per_model(sqlite_url, agent, scripted):
    """Two runners, each running one ensemble, both on a model limited in its ModelConfig."""
    model, script = scripted()
    config = ModelConfig(provider="scripted", name=model.split(":", 1)[1], requests_per_minute=600)
    Models.register(config)
    try:
        topology, agents = _team(agent, model, 12)
        started = time.monotonic()
        results = await asyncio.gather(
            AsyncRunner(db_url=sqlite_url, max_concurrent=12).run(topology, agents, {"prompt": "a"}),
            AsyncRunner(db_url=sqlite_url, max_concurrent=12).run(topology, agents, {"prompt": "b"}),
        )
        elapsed = time.monotonic() - started
    finally:
        Models._registry.pop(model, None)
    assert all(r.status == ExecutionStatus.COMPLETED for r in results)
    limiter = rate_limits().limiter(model)
    assert limiter is not None and limiter.requests == 24 == len(script.calls)
    assert elapsed >= 1.3  # 24 calls at 10 a second after a burst of 10: the second run waited too


async def test_run_config_sets_the_process_limit(sqlite_url, agent, scripted):
    model, _script = scripted()
    topology, agents = _team(agent, model, 2)
    config = RunConfig(rate_limits={model: {"rpm": 6000, "tpm": 600_000}})
    result = await LocalRunner(db_url=sqlite_url, config=config).run(topology, agents, {"prompt": "p"})
    assert result.status == ExecutionStatus.COMPLETED
    assert rate_limits().limiter(model).limit == RateLimit(6000, 600_000)
    async with __import__("qmcp.agentframework.store", fromlist=["Database"]).Database(sqlite_url) as db:
        stored = (await db.get_execution(result.execution_id)).run_config
    assert "rate_limits" not in stored  # the process's, not the run's


async def test_a_429_storm_with_retry_after_backs_off_every_caller(sqlite_url, agent, scripted):
    """The provider answers 429 (retry-after 300 ms) for its first 0.5 s. 30 runs of the same model
    start one after another over 0.45 s: after each 429, no run sends a request until the pause it
    asked for is over (a caller-by-caller back-off would let every newcomer hit the storm)."""
    from pydantic_ai.exceptions import ModelHTTPError, ModelRateLimitError

    start = time.monotonic()
    requests: list[float] = []
    refused: list[float] = []

    def reply(prompt: str, index: int) -> str:
        now = time.monotonic() - start
        requests.append(now)
        if now < 0.5:
            refused.append(now)
            raise ModelHTTPError.for_category(
                ModelRateLimitError,
                status_code=429,
                model_name="storm",
                body={"error": "slow down"},
                headers={"retry-after-ms": "300"},
            )
        return f"ok {index}"

    model, _script = scripted(replies=reply)
    topology, agents = _team(agent, model, 1)
    config = RunConfig(max_retries=10, retry_backoff_seconds=0.01)

    async def later(delay: float) -> Any:
        await asyncio.sleep(delay)
        return await LocalRunner(db_url=sqlite_url, config=config).run(
            topology, agents, {"prompt": f"{delay}"}
        )

    results = await asyncio.gather(*(later(i * 0.015) for i in range(30)))
    assert all(r.status == ExecutionStatus.COMPLETED for r in results), results[0].error
    # Inside each pause (less a margin for calls already past the limiter, delayed by a busy loop)
    paused = [(t + 0.1, t + 0.28) for t in refused]
    sent_while_paused = [r for r in requests if any(low < r < high for low, high in paused)]
    assert sent_while_paused == []
    assert len(refused) <= 30  # each run met the storm about once at most, not once per newcomer
