"""The workloads on qmcp: the scripted model, LocalRunner/AsyncRunner, SQLite or PostgreSQL."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any

from qmcp.agentframework.llm import ScriptedModel, register_model
from qmcp.agentframework.models import (
    AgentConfig,
    AgentRole,
    AgentType,
    EnsembleConfig,
    ExecutionStatus,
    PipelineConfig,
    Topology,
    TopologyType,
)
from qmcp.agentframework.runners import OWNED_PROCESS_FREEZE, AsyncRunner, LocalRunner, RunConfig, RunResult
from qmcp.agentframework.store import MemoryStepStore
from qmcp.agentframework.topologies import StepContext, TopologyRegistry

from ._common import (
    TASK,
    Case,
    Metrics,
    Skipped,
    fresh_postgres,
    ideal_ensemble_seconds,
    model_reply,
    postgres_url,
    sqlite_url,
    timed,
)

__all__ = ["make_case"]

MODEL = "scripted:bench"


def _agent(name: str, role: AgentRole = AgentRole.SPECIALIST) -> AgentType:
    return AgentType(name=name, role=role, config=AgentConfig(model=MODEL).model_dump())


def _scripted(latency: float = 0.0, failures: dict[int, str] | None = None) -> ScriptedModel:
    """A scripted model answering like LangGraph's node function, registered as MODEL."""
    model = ScriptedModel(
        name=MODEL, latency=latency, failures=failures or {}, replies=lambda prompt, _i: model_reply(prompt)
    )
    register_model(MODEL, model.model)
    return model


def _completed(result: RunResult) -> RunResult:
    if result.status != ExecutionStatus.COMPLETED:
        raise RuntimeError(f"benchmark run ended {result.status}: {result.error}")
    return result


class _Database:
    """The workload's database: a SQLite file in the work directory, or a fresh PostgreSQL database."""

    def __init__(self, workdir: Path, store: str) -> None:
        self.workdir, self.store = workdir, store
        self.url = sqlite_url(workdir, "qmcp.db")
        self._stack = contextlib.AsyncExitStack()

    async def open(self) -> None:
        if self.store == "postgres":
            server = postgres_url()
            if server is None:
                raise Skipped("no PostgreSQL: set QMCP_BENCH_POSTGRES_URL or QMCP_TEST_POSTGRES_URL")
            self.url = await self._stack.enter_async_context(fresh_postgres(server))

    async def close(self) -> None:
        await self._stack.aclose()


class Pipeline:
    """`steps` sequential stages on LocalRunner, or straight over a `StepContext` with no store."""

    def __init__(self, workdir: Path, store: str, steps: int) -> None:
        self.steps, self.store = steps, store
        self.database = _Database(workdir, store)
        self.topology = Topology(
            name=f"pipeline_{steps}",
            topology_type=TopologyType.PIPELINE,
            config=PipelineConfig().model_dump(),
        )
        stage = _agent("stage")
        self.agents = {f"s{i}": stage for i in range(steps)}

    async def setup(self) -> None:
        _scripted()
        await self.database.open()
        self.runner = LocalRunner(db_url=self.database.url)

    async def run(self) -> Metrics:
        if self.store == "memory":
            _, seconds = await timed(self._in_memory)
        else:
            _, seconds = await timed(lambda: self.runner.run(self.topology, self.agents, {"prompt": TASK}))
        return {"seconds": seconds, "per_step_ms": seconds / self.steps * 1000}

    async def _in_memory(self) -> dict[str, Any]:
        implementation = TopologyRegistry.create(self.topology.topology_type, self.topology.config)
        ctx = StepContext(execution_id=uuid.uuid4(), agents=self.agents, store=MemoryStepStore())
        return await implementation.run(ctx, {"prompt": TASK})

    async def close(self) -> None:
        await self.database.close()


class Scaling:
    """The long pipeline, with the short one measured in the same process as its reference."""

    def __init__(self, workdir: Path, steps: int, reference_steps: int) -> None:
        self.long = Pipeline(workdir, "sqlite", steps)
        self.short = Pipeline(workdir, "sqlite", reference_steps)

    async def setup(self) -> None:
        await self.long.setup()
        await self.short.setup()

    async def run(self) -> Metrics:
        reference = await self.short.run()
        metrics = await self.long.run()
        return {
            **metrics,
            "reference_per_step_ms": reference["per_step_ms"],
            "flatness": metrics["per_step_ms"] / reference["per_step_ms"],
        }

    async def close(self) -> None:
        await self.long.close()
        await self.short.close()


class Ensemble:
    """`members` scripted members with latency on AsyncRunner(max_concurrent), then a synthesis."""

    def __init__(self, workdir: Path, store: str, members: int, max_concurrent: int, latency: float) -> None:
        self.members, self.max_concurrent, self.latency = members, max_concurrent, latency
        self.database = _Database(workdir, store)
        self.topology = Topology(
            name=f"ensemble_{members}",
            topology_type=TopologyType.ENSEMBLE,
            config=EnsembleConfig(aggregation_method="synthesis").model_dump(),
        )
        member = _agent("member")
        self.agents = {f"m{i}": member for i in range(members)}
        self.agents["aggregator"] = _agent("aggregator", AgentRole.SYNTHESIZER)

    async def setup(self) -> None:
        self.model = _scripted(latency=self.latency)
        await self.database.open()
        # a benchmark owns its process, like the CLI: it opts in to the heap freeze
        self.runner = AsyncRunner(
            db_url=self.database.url,
            max_concurrent=self.max_concurrent,
            config=RunConfig(freeze_heap_above=OWNED_PROCESS_FREEZE),
        )

    async def run(self) -> Metrics:
        before = len(self.model.calls)
        _, seconds = await timed(lambda: self.runner.run(self.topology, self.agents, {"prompt": TASK}))
        if len(self.model.calls) - before != self.members + 1:
            raise RuntimeError(
                f"expected {self.members + 1} model calls, got {len(self.model.calls) - before}"
            )
        ideal = ideal_ensemble_seconds(self.members, self.max_concurrent, self.latency)
        return {"seconds": seconds, "efficiency": ideal / seconds, "max_in_flight": self.model.max_in_flight}

    async def close(self) -> None:
        await self.database.close()


class Resume:
    """A pipeline whose step `fail_at` fails once (a 401); the run fails, `resume` finishes it."""

    def __init__(self, workdir: Path, steps: int, fail_at: int) -> None:
        self.fail_at = fail_at
        self.pipeline = Pipeline(workdir, "sqlite", steps)

    async def setup(self) -> None:
        await self.pipeline.setup()

    async def run(self) -> Metrics:
        model = _scripted(failures={self.fail_at - 1: "auth"})
        runner, p = self.pipeline.runner, self.pipeline

        async def fail_then_resume() -> RunResult:
            first = await runner.run(p.topology, p.agents, {"prompt": TASK})
            if first.status != ExecutionStatus.FAILED:
                raise RuntimeError(f"the first attempt should fail, it ended {first.status}")
            return _completed(await runner.resume(first.execution_id))

        _, seconds = await timed(fail_then_resume)
        return {"seconds": seconds, "step_executions": len(model.calls)}

    async def close(self) -> None:
        await self.pipeline.close()


class RateLimited:
    """Three runs at once share the process's limiter of one model: is the rate it holds the limit?

    The steady rate is measured from the call after the first second's burst to the last call:
    `limit_ratio` is that rate over the limit (1.0: exactly the limit; above: the limit was broken).
    """

    def __init__(self, workdir: Path, variant: str, calls: int, rpm: float, tpm: float) -> None:
        from qmcp.agentframework.llm import RateLimit

        self.variant, self.calls = variant, calls
        self.limit = RateLimit(rpm=rpm) if variant == "rpm" else RateLimit(tpm=tpm)
        self.per_second = (rpm if variant == "rpm" else tpm) / 60
        self.database = _Database(workdir, "sqlite")
        members = calls * 2 // 5
        member = _agent("member")
        self.ensemble = Topology(
            name="limited_ensemble",
            topology_type=TopologyType.ENSEMBLE,
            config=EnsembleConfig(aggregation_method="concat").model_dump(),
        )
        self.ensemble_agents = {f"m{i}": member for i in range(members)}
        self.pipeline = Topology(
            name="limited_pipeline", topology_type=TopologyType.PIPELINE, config=PipelineConfig().model_dump()
        )
        self.pipeline_agents = {f"s{i}": member for i in range(calls - 2 * members)}

    async def setup(self) -> None:
        register_model(MODEL, ScriptedModel(name=MODEL, replies=lambda prompt, _i: model_reply(prompt)).model)
        await self.database.open()

    async def run(self) -> Metrics:
        import asyncio
        from datetime import UTC

        from qmcp.agentframework.llm import rate_limits
        from qmcp.agentframework.store import Database

        rate_limits().reset()
        rate_limits().configure(MODEL, self.limit)
        url = self.database.url
        results = await asyncio.gather(
            AsyncRunner(db_url=url, max_concurrent=50).run(
                self.ensemble, self.ensemble_agents, {"prompt": TASK}
            ),
            AsyncRunner(db_url=url, max_concurrent=50).run(
                self.ensemble, self.ensemble_agents, {"prompt": TASK}
            ),
            LocalRunner(db_url=url).run(self.pipeline, self.pipeline_agents, {"prompt": TASK}),
        )
        # When each call ended (the model answers at once) and the tokens it used, as the limiter counts them.
        async with Database(url) as db:
            steps = [s for r in map(_completed, results) for s in await db.list_steps(r.execution_id)]
        if len(steps) != self.calls:
            raise RuntimeError(f"expected {self.calls} calls, got {len(steps)}")
        stamps = sorted(
            (
                (s.completed_at if s.completed_at.tzinfo else s.completed_at.replace(tzinfo=UTC)).timestamp(),
                s.input_tokens + s.output_tokens,
            )
            for s in steps
        )
        start = stamps[0][0] + 1.0  # after the first second's burst
        steady = [(t, n) for t, n in stamps if t >= start]
        # Between the first and the last steady call: the calls before the last, and what they used.
        amount = len(steady) - 1 if self.variant == "rpm" else sum(n for _, n in steady[:-1])
        rate = amount / (steady[-1][0] - steady[0][0])
        return {
            "limit_ratio": rate / self.per_second,
            "per_minute": rate * 60,
            "seconds": stamps[-1][0] - stamps[0][0],
        }

    async def close(self) -> None:
        from qmcp.agentframework.llm import rate_limits

        rate_limits().reset()
        await self.database.close()


def make_case(workload: str, variant: str, workdir: Path, params: dict[str, Any]) -> Case:
    """The qmcp case of `workload` (one of WORKLOADS) in `variant`."""
    if workload == "pipeline_overhead":
        return Pipeline(workdir, variant, params["steps"])
    if workload == "pipeline_scaling":
        return Scaling(workdir, params["steps"], params["reference_steps"])
    if workload in ("ensemble_concurrency", "ensemble_scale"):
        return Ensemble(workdir, variant, params["members"], params["max_concurrent"], params["latency"])
    if workload == "resume_cost":
        return Resume(workdir, params["steps"], params["fail_at"])
    if workload == "rate_limit":
        return RateLimited(workdir, variant, params["calls"], params["rpm"], params["tpm"])
    raise LookupError(f"no qmcp case for {workload}/{variant}")
