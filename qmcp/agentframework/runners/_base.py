"""`BaseRunner`: persist the team, create the execution, run the topology durably, report.

Runners differ only in how independent steps are scheduled (`scheduler()`); everything else,
including resume and cancel, is this one code path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from ...config import settings
from ...observability import METRICS, get_logger, log_context, step_tracer, tracer
from ..errors import ExecutionPaused, HumanRejectedError, QmcpError, UserInputError
from ..mixins import RunResources
from ..models import AgentType, Execution, ExecutionStatus, Topology
from ..models._agent import utcnow
from ..store import Database, StepRecord
from ..topologies import RetryPolicy, Scheduler, StepContext, StepEvent, TopologyRegistry
from ._config import RunConfig, RunResult
from ._heap import older_heap_frozen
from ._team import collect_teams, prepare_team
from ._trust import require_trusted_execution, trust_given

__all__ = ["BaseRunner", "RunnerRegistry", "runner", "step_context", "stopped"]

C = TypeVar("C", bound=StepContext)

EventHandler = Callable[[StepEvent], None]


class BaseRunner:
    """Runs topologies with durable steps. Subclasses set `runner_type` and may override `scheduler()`."""

    runner_type: ClassVar[str] = "base"

    def __init__(
        self,
        config: RunConfig | None = None,
        db_url: str | None = None,
        *,
        on_event: EventHandler | None = None,
    ) -> None:
        self.config = config or RunConfig()
        self.db_url = db_url or settings().database_url
        self.on_event = on_event
        self._running: dict[uuid.UUID, asyncio.Task[Any]] = {}
        self._log = get_logger(level=self.config.log_level)

    def scheduler(self) -> Scheduler:
        """How independent steps run: sequentially by default."""
        return Scheduler()

    @property
    def model_override(self) -> str | None:
        return self.config.model_override or settings().model_override

    # -- public API ---------------------------------------------------------------------------

    async def run(
        self,
        topology: Topology | Mapping[str, Any],
        agents: Mapping[str, AgentType | Mapping[str, Any]],
        input_data: Mapping[str, Any],
    ) -> RunResult:
        """Store the team, start an execution and run it to the end.

        Bad input raises a `UserInputError` before anything is written. A run that fails
        returns a `RunResult` with status failed and the error; it never raises.
        """
        team = prepare_team(topology, agents, input_data, self.model_override)
        correlation_id = self.config.correlation_id or uuid.uuid4().hex
        async with Database(self.db_url) as db:
            teams = await collect_teams(db, team.topology)
            stored_topology, _ = await db.save_team(team.topology, team.agents)
            await trust_given(db, team.agents)  # objects from Python are trusted (runners/_trust.py)
            execution = Execution(
                topology_id=stored_topology.id,
                topology_name=team.topology.name,
                topology_type=str(team.topology.topology_type),
                status=ExecutionStatus.RUNNING,
                runner_type=self.runner_type,
                correlation_id=correlation_id,
                input_data=team.input_data,
                topology_snapshot=team.topology.definition(),
                agents_snapshot={slot: agent.definition() for slot, agent in team.agents.items()},
                teams_snapshot=teams,
                run_config=self.config.model_dump(mode="json"),
            )
            await db.add_execution(execution)
            return await self._execute(db, execution, team.agents, completed={})

    async def resume(self, execution_id: uuid.UUID | str) -> RunResult:
        """Run an unfinished execution again; completed steps replay from the store at no cost."""
        async with Database(self.db_url) as db:
            execution = await db.get_execution(execution_id)
            if execution.status == ExecutionStatus.COMPLETED:
                return _result(execution)
            await require_trusted_execution(db, execution)  # its snapshot comes from the database
            agents = {
                slot: AgentType.model_validate(data) for slot, data in execution.agents_snapshot.items()
            }
            prepare_team(execution.topology_snapshot, agents, execution.input_data, self.model_override)
            completed = await db.steps.completed_steps(execution.id)
            execution.attempts += 1
            execution.status = ExecutionStatus.RUNNING
            execution.error = None
            await db.update_execution(
                execution.id,
                status=ExecutionStatus.RUNNING,
                error=None,
                attempts=execution.attempts,
                completed_at=None,
            )
            return await self._execute(db, execution, agents, completed=completed)

    async def respond(self, request_id: uuid.UUID | str, response: str, *, resume: bool = True) -> RunResult:
        """Answer a human request of a paused execution, then (by default) resume it."""
        async with Database(self.db_url) as db:
            request = await db.answer_human_request(request_id, response)
            if not resume:
                return _result(await db.get_execution(request.execution_id))
        return await self.resume(request.execution_id)

    async def cancel(self, execution_id: uuid.UUID | str) -> RunResult:
        """Cancel an execution: in-flight steps in this process stop; the execution stays resumable."""
        async with Database(self.db_url) as db:
            execution = await db.get_execution(execution_id)
            task = self._running.get(execution.id)
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait([task])
            elif not execution.status.is_terminal:
                await db.update_execution(
                    execution.id,
                    status=ExecutionStatus.CANCELLED,
                    error="cancelled by request",
                    completed_at=utcnow(),
                )
            return _result(await db.get_execution(execution.id))

    # -- the one execution path ---------------------------------------------------------------

    async def _execute(
        self,
        db: Database,
        execution: Execution,
        agents: dict[str, AgentType],
        completed: dict[str, StepRecord],
    ) -> RunResult:
        topology = Topology.model_validate(execution.topology_snapshot)
        implementation = TopologyRegistry.create(topology.topology_type, topology.config)
        ctx = step_context(
            db,
            execution,
            agents,
            completed,
            self.config,
            scheduler=self.scheduler(),
            model_override=self.model_override,
            on_event=self._observe,
        )
        log = get_logger(level=self.config.log_level)
        self._log = log
        started = time.perf_counter()
        status, output, error = ExecutionStatus.FAILED, None, None
        task = asyncio.current_task()
        assert task is not None
        self._running[execution.id] = task
        with (
            log_context(execution_id=str(execution.id), correlation_id=execution.correlation_id),
            tracer.start_as_current_span(
                f"invoke_workflow {execution.topology_name}",
                attributes={
                    "gen_ai.operation.name": "invoke_workflow",
                    "qmcp.execution_id": str(execution.id),
                    "qmcp.correlation_id": execution.correlation_id or "",
                    "qmcp.topology.type": execution.topology_type,
                },
            )
            if self.config.trace_enabled
            else contextlib.nullcontext(),
        ):
            log.info(
                "run.start",
                topology=execution.topology_name,
                runner=self.runner_type,
                replayable=len(completed),
            )
            try:
                async with ctx.resources.exit_stack, asyncio.timeout(self.config.timeout_seconds):
                    with older_heap_frozen():
                        output = await implementation.run(ctx, dict(execution.input_data))
                status = ExecutionStatus.COMPLETED
            except TimeoutError:
                error = (
                    f"timed out after {self.config.timeout_seconds}s; completed steps are kept, "
                    f"resume with: qmcp executions resume {execution.id}"
                )
            except asyncio.CancelledError:
                status, error = (
                    ExecutionStatus.CANCELLED,
                    "cancelled; resume with: qmcp executions resume " + str(execution.id),
                )
                await asyncio.shield(self._finish(db, execution, ctx, status, None, error, started))
                raise
            except Exception as failure:
                if not isinstance(failure, QmcpError):  # a bug in topology or user code: record it
                    log.exception("run.internal_error")
                status, error = stopped(failure)
            finally:
                self._running.pop(execution.id, None)
            result = await self._finish(db, execution, ctx, status, output, error, started)
            log.info("run.end", status=str(status), error=error, duration_ms=result.duration_ms)
        return result

    async def _finish(
        self,
        db: Database,
        execution: Execution,
        ctx: StepContext,
        status: ExecutionStatus,
        output: dict[str, Any] | None,
        error: str | None,
        started: float,
    ) -> RunResult:
        now = utcnow()
        execution.status, execution.output_data, execution.error = status, output, error
        execution.completed_at = now
        execution.duration_ms = (execution.duration_ms or 0) + int((time.perf_counter() - started) * 1000)
        execution.input_tokens += int(ctx.totals["input_tokens"])
        execution.output_tokens += int(ctx.totals["output_tokens"])
        execution.cost_usd += ctx.totals["cost_usd"]
        await db.finish_execution(
            execution.id,
            status=status,
            output_data=output,
            error=error,
            completed_at=now,
            duration_ms=execution.duration_ms,
            input_tokens=execution.input_tokens,
            output_tokens=execution.output_tokens,
            cost_usd=execution.cost_usd,
        )
        if self.config.metrics_enabled:
            METRICS.runs.labels(execution.topology_type, str(status)).inc()
        return _result(execution)

    def _observe(self, event: StepEvent) -> None:
        if event.kind != "started":
            self._log.debug(
                f"step.{event.kind}", key=event.key, slot=event.slot, model=event.model, error=event.error
            )
        if self.config.metrics_enabled and event.kind in ("completed", "replayed", "failed"):
            METRICS.step_outcomes[event.kind].inc()
            if event.kind == "completed":
                METRICS.input_tokens.inc(event.input_tokens)
                METRICS.output_tokens.inc(event.output_tokens)
                METRICS.step_latency.observe(event.latency_ms / 1000)
        if self.on_event is not None:
            self.on_event(event)


def step_context(
    db: Database,
    execution: Execution,
    agents: Mapping[str, AgentType],
    completed: dict[str, StepRecord],
    config: RunConfig,
    *,
    scheduler: Scheduler,
    model_override: str | None,
    context_class: type[C] = StepContext,  # type: ignore[assignment]
    **extra: Any,
) -> C:
    """The `StepContext` an attempt at `execution` gives its topology code, as `config` asks.

    Every runner's attempt and every Metaflow step of a generated flow build it here, so that
    retries, checkpoints, tracing and resources cannot differ between them.
    """
    return context_class(
        execution_id=execution.id,
        agents=agents,
        store=db.steps,
        completed=completed,
        scheduler=scheduler,
        retry=RetryPolicy(
            enabled=config.retry_on_failure,
            max_retries=config.max_retries,
            base_delay=config.retry_backoff_seconds,
        ),
        model_override=model_override,
        checkpoint_enabled=config.checkpoint_enabled,
        resources=RunResources(db=db),
        teams=execution.teams_snapshot,
        tracer=step_tracer(config.trace_enabled),
        **extra,
    )


def stopped(error: Exception) -> tuple[ExecutionStatus, str]:
    """The status and message an execution ends with when its topology code raises `error`."""
    if isinstance(error, ExecutionPaused):
        return ExecutionStatus.PAUSED, str(error)
    if isinstance(error, HumanRejectedError):
        return ExecutionStatus.CANCELLED, str(error)
    if isinstance(error, QmcpError):
        return ExecutionStatus.FAILED, str(error)
    return ExecutionStatus.FAILED, f"internal error: {type(error).__name__}: {error}"


def _result(execution: Execution) -> RunResult:
    return RunResult(
        execution_id=execution.id,
        status=execution.status,
        output=execution.output_data,
        error=execution.error,
        started_at=execution.started_at,
        completed_at=execution.completed_at,
        duration_ms=execution.duration_ms,
        runner_type=execution.runner_type,
        topology_name=execution.topology_name,
        correlation_id=execution.correlation_id,
        input_tokens=execution.input_tokens,
        output_tokens=execution.output_tokens,
        cost_usd=execution.cost_usd,
    )


class RunnerRegistry:
    """Runner types by name: `RunnerRegistry.create("local", config)`; `@runner` adds your own."""

    _runners: ClassVar[dict[str, type[BaseRunner]]] = {}

    @classmethod
    def register(cls, runner_class: type[BaseRunner]) -> type[BaseRunner]:
        cls._runners[runner_class.runner_type] = runner_class
        return runner_class

    @classmethod
    def get(cls, runner_type: str) -> type[BaseRunner]:
        try:
            return cls._runners[runner_type]
        except KeyError:
            raise UserInputError(
                f"unknown runner {runner_type!r}; choose one of: {', '.join(sorted(cls._runners))}"
            ) from None

    @classmethod
    def create(cls, runner_type: str, config: RunConfig | None = None, **kwargs: Any) -> BaseRunner:
        return cls.get(runner_type)(config=config, **kwargs)

    @classmethod
    def list(cls) -> list[str]:
        return sorted(cls._runners)


def runner(runner_class: type[BaseRunner]) -> type[BaseRunner]:
    """Class decorator registering a runner under its `runner_type`."""
    return RunnerRegistry.register(runner_class)
