"""`BaseRunner`: persist the team, create the execution, run the topology durably, report.

Runners differ only in how independent steps are scheduled (`scheduler()`); everything else,
including resume and cancel, is this one code path. An execution is run by the process that owns
its lease (`store/_executions.py`): `run()` creates it claimed, `resume()` claims it (refused while
a live process runs it), a heartbeat keeps the lease while the topology runs, and the end of the
attempt is written only by that owner. A cancel from any process reaches the run at its next
heartbeat; a process that loses its lease stops without writing anything more.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from ...config import settings
from ...observability import METRICS, get_logger, step_tracer
from .. import llm
from ..errors import ExecutionBusyError, UserInputError
from ..mixins import RunResources
from ..models import AgentType, Execution, ExecutionStatus, Topology, new_row
from ..registry import RUNNERS
from ..store import Database, Lease, Owner, StepRecord, storage_errors
from ..topologies import (
    BaseTopology,
    Budget,
    RetryPolicy,
    Scheduler,
    StepContext,
    StepEvent,
    TopologyRegistry,
)
from ._attempt import Attempt, Ending, run_result
from ._config import PROCESS_FIELDS, RUN_OPTIONS, RunConfig, RunResult
from ._fork import start_fork
from ._team import Team, collect_teams, prepare_team
from ._trust import require_trusted_execution, trust_given

__all__ = ["BaseRunner", "RunnerRegistry", "runner", "start_execution", "step_context"]

C = TypeVar("C", bound=StepContext)

EventHandler = Callable[[StepEvent], None]

_UNHEARD = frozenset({"started", "delta"})
"""The events `_observe` only passes on to the runner's `on_event`: with none, they are not built."""


class BaseRunner:
    """Runs topologies with durable steps. Subclasses set `runner_type` and may override `scheduler()`."""

    runner_type: ClassVar[str] = "base"
    option_names: ClassVar[tuple[str, ...]] = ()
    """The constructor options this runner takes beyond `RunConfig` (the keys of `options()`)."""

    def __init__(
        self,
        config: RunConfig | None = None,
        db_url: str | None = None,
        *,
        on_event: EventHandler | None = None,
        origin: str = "python",
        stream: bool = False,
    ) -> None:
        """`stream`: steps stream their replies to `on_event` as `delta` events while the model writes
        them (providers that can; the others send the whole reply as one delta)."""
        self.config = config or RunConfig()
        self.db_url = db_url or settings().database_url
        self.on_event = on_event
        self.stream = stream
        self.origin = origin
        self._attempts: dict[uuid.UUID, Attempt] = {}
        self._log = get_logger(level=self.config.log_level)

    def scheduler(self) -> Scheduler:
        """How independent steps run: sequentially by default."""
        return Scheduler()

    def options(self) -> dict[str, Any]:
        """This runner's constructor options, stored on its executions so that a resume (the CLI's,
        the server's, `RunnerRegistry.for_execution`) makes the same runner again."""
        return {}

    @property
    def model_override(self) -> str | None:
        """The override a new run takes (`llm.run_override`); a resume keeps its stored one."""
        return llm.run_override(self.config.model_override)

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
        override = self.model_override  # read from the environment once a run
        team = prepare_team(topology, agents, input_data, override)
        config = self.config.model_copy(update={"model_override": override})
        async with Database(self.db_url) as db:
            with storage_errors(db.url):
                execution, lease = await start_execution(
                    db,
                    team,
                    config,
                    runner_type=self.runner_type,
                    runner_options=self.options(),
                    owner=Owner.this_process(),
                    origin=self.origin,
                )
            assert lease is not None
            return await self._execute(db, execution, team.agents, {}, config, lease)

    async def run_started(self, db: Database, execution: Execution, lease: Lease) -> RunResult:
        """Run the first attempt of an execution this process created claimed (`qmcp.app.start_run`
        with an owner): the door knew its id before any step ran. Like `run`, it never raises for a
        failed run."""
        agents = {slot: AgentType.model_validate(data) for slot, data in execution.agents_snapshot.items()}
        stored = {k: v for k, v in execution.run_config.items() if k in RUN_OPTIONS}
        config = self.config.model_copy(update={**stored, "correlation_id": execution.correlation_id})
        # a fork starts with the steps it inherited from its parent
        completed = await db.steps.completed_steps(execution.id) if execution.parent_id else {}
        return await self._execute(db, execution, agents, completed, config, lease)

    async def fork(
        self,
        execution_id: uuid.UUID | str,
        *,
        at: str,
        model: str | None = None,
        agents: Mapping[str, str | AgentType] | None = None,
        input_data: Mapping[str, Any] | None = None,
        set_output: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Fork a recorded execution at step `at` and run the fork to the end (`start_fork`).

        The parent's steps that started before `at` are inherited (replayed, not paid again); `at`
        and every later step run again, on this runner. `model` overrides every agent's model;
        `agents` puts another agent in a slot (a stored, trusted agent by name, or an `AgentType`);
        `input_data` replaces the input (inherited steps still replay as recorded); `set_output`
        replaces the reply of an inherited step or of `at` itself (a human edit). Bad arguments raise
        a `UserInputError` before anything is written; like `run`, a failed fork is a `RunResult`.
        """
        async with Database(self.db_url) as db:
            with storage_errors(db.url):
                execution, lease = await start_fork(
                    db,
                    execution_id,
                    at=at,
                    config=self.config,
                    runner_type=self.runner_type,
                    runner_options=self.options(),
                    owner=Owner.this_process(),
                    origin=self.origin,
                    model=model,
                    agents=agents,
                    input_data=input_data,
                    set_output=set_output,
                )
            assert lease is not None
            return await self.run_started(db, execution, lease)

    async def resume(
        self,
        execution_id: uuid.UUID | str,
        *,
        wait: bool | float = False,
        force: bool = False,
        change_runner: bool = False,
    ) -> RunResult:
        """Continue an unfinished execution as the same run: completed steps replay at no cost.

        The run's options (model override, timeouts, retries, checkpoints) are the stored ones;
        those set explicitly on this runner's `RunConfig` change them, and the change is recorded.
        While another live process runs the execution, `ExecutionBusyError` says who; `wait`
        (True, or seconds) waits for it to stop, `force` takes the execution over. An execution
        made by another runner type is resumed here only with `change_runner=True` (recorded);
        `RunnerRegistry.for_execution` makes the runner it ran on.
        """
        async with Database(self.db_url) as db:
            with storage_errors(db.url):
                execution = await db.get_execution(execution_id)
                if execution.status == ExecutionStatus.COMPLETED:
                    return run_result(execution)
                await require_trusted_execution(db, execution)  # its snapshot comes from the database
                config, stored, changes = self._resumed(execution, change_runner=change_runner)
                agents = {
                    slot: AgentType.model_validate(data) for slot, data in execution.agents_snapshot.items()
                }
                prepare_team(execution.topology_snapshot, agents, execution.input_data, config.model_override)
                claimed = await self._claim(db, execution, stored, changes, wait=wait, force=force)
                if claimed is None:  # finished by its owner while we waited
                    return run_result(await db.get_execution(execution.id))
                execution, lease = claimed
                if changes:
                    self._log.info("run.options_changed", execution_id=str(execution.id), changes=changes)
                completed = await db.steps.completed_steps(execution.id)
            return await self._execute(db, execution, agents, completed, config, lease)

    async def respond(
        self, request_id: str, response: str, *, resume: bool = True, responded_by: str | None = None
    ) -> RunResult:
        """Answer a human request of a paused execution, then (by default) resume it."""
        async with Database(self.db_url) as db:
            with storage_errors(db.url):
                request, _ = await db.answer_human_request(request_id, response, responded_by=responded_by)
                if request.execution_id is None:
                    raise UserInputError(
                        f"human request {request.id!r} belongs to no execution; it is answered"
                    )
                if not resume:
                    return run_result(await db.get_execution(request.execution_id))
        return await self.resume(request.execution_id)

    async def cancel(self, execution_id: uuid.UUID | str, *, wait: float = 5.0) -> RunResult:
        """Cancel an execution from any process; it stays resumable.

        What nobody runs is cancelled at once. A running execution's owner is asked to stop: it
        cancels its in-flight model calls at its next heartbeat (at once when it is this runner),
        keeps its completed steps and ends the run `cancelled`. Waits up to `wait` seconds for that;
        the result says `running` if the owner has not stopped by then.
        """
        async with Database(self.db_url) as db:
            with storage_errors(db.url):
                outcome = await db.executions.request_cancel(execution_id)
                execution = outcome.execution
                attempt = self._attempts.get(execution.id)
                if outcome.requested and attempt is not None:
                    attempt.cancel()
                deadline = time.monotonic() + wait
                while outcome.requested and execution.status == ExecutionStatus.RUNNING:
                    if time.monotonic() >= deadline:
                        break
                    await asyncio.sleep(0.05)
                    execution = await db.get_execution(execution.id)
            return run_result(execution)

    def interrupt(self, execution_id: uuid.UUID) -> bool:
        """Stop this runner's attempt at `execution_id` so that it can be resumed later: its in-flight
        model calls are cancelled, its completed steps kept, and it ends `interrupted` (a server
        shutting down). False if this runner is not running it."""
        attempt = self._attempts.get(execution_id)
        if attempt is None:
            return False
        attempt.interrupt()
        return True

    # -- claiming -----------------------------------------------------------------------------

    def _resumed(
        self, execution: Execution, *, change_runner: bool
    ) -> tuple[RunConfig, dict[str, Any], dict[str, list[Any]]]:
        """The config a resume runs with, the run config to store, and what it changes explicitly."""
        if self.runner_type != execution.runner_type and not change_runner:
            raise UserInputError(
                f"execution {execution.id} ran on the {execution.runner_type} runner; resume it there "
                f"(RunnerRegistry.for_execution, or: qmcp executions resume {execution.id}), or pass "
                f"change_runner=True to continue it on this {self.runner_type} runner"
            )
        stored = RunConfig.model_validate(
            {k: v for k, v in execution.run_config.items() if k in RunConfig.model_fields}
        )
        explicit = {name: getattr(self.config, name) for name in self.config.model_fields_set & RUN_OPTIONS}
        changes: dict[str, list[Any]] = {
            name: [getattr(stored, name), value]
            for name, value in explicit.items()
            if getattr(stored, name) != value
        }
        if self.runner_type != execution.runner_type:
            changes["runner"] = [execution.runner_type, self.runner_type]
        options = self.options()
        for name in sorted({*execution.runner_options, *options}):
            if execution.runner_options.get(name) != options.get(name):
                changes[f"runner.{name}"] = [execution.runner_options.get(name), options.get(name)]
        config = stored.model_copy(
            update=explicit | {name: getattr(self.config, name) for name in PROCESS_FIELDS}
        )
        return (
            config,
            {**execution.run_config, **config.model_dump(mode="json", include=set(explicit))},
            changes,
        )

    async def _claim(
        self,
        db: Database,
        execution: Execution,
        run_config: dict[str, Any],
        changes: dict[str, list[Any]],
        *,
        wait: bool | float,
        force: bool,
    ) -> tuple[Execution, Lease] | None:
        """Claim the execution, waiting for its live owner if asked; None if it completed meanwhile."""
        deadline = None if wait is True else time.monotonic() + float(wait or 0)
        while True:
            try:
                return await db.executions.claim(
                    execution.id,
                    Owner.this_process(),
                    runner=self.runner_type,
                    runner_options=self.options(),
                    run_config=run_config,
                    changes=changes,
                    force=force,
                )
            except ExecutionBusyError:
                if not wait or (deadline is not None and time.monotonic() >= deadline):
                    raise
            await asyncio.sleep(db.executions.timing()[0])
            if (await db.get_execution(execution.id)).status == ExecutionStatus.COMPLETED:
                return None

    # -- the one execution path ---------------------------------------------------------------

    async def _execute(
        self,
        db: Database,
        execution: Execution,
        agents: dict[str, AgentType],
        completed: dict[str, StepRecord],
        config: RunConfig,
        lease: Lease,
    ) -> RunResult:
        topology = Topology.model_validate(execution.topology_snapshot)
        implementation = TopologyRegistry.create(topology.topology_type, topology.config)
        for model, limit in (config.rate_limits or {}).items():  # for the whole process, from now on
            llm.rate_limits().configure(model, llm.RateLimit(limit.rpm, limit.tpm))
        ctx: StepContext = step_context(
            db,
            execution,
            agents,
            completed,
            config,
            scheduler=self.scheduler(),
            model_override=config.model_override,
            on_event=self._observe,
            unheard=_UNHEARD if self.on_event is None else frozenset(),
            lease=lease,
            stream=self.stream,
        )
        self._log = get_logger(level=config.log_level)
        attempt = Attempt(
            db, execution, lease, usage=ctx.totals, log=self._log, metrics=self.config.metrics_enabled
        )
        work = _run_topology(ctx, implementation, execution.input_data)
        return await self._make_attempt(attempt, work, config, replayable=len(completed))

    async def _make_attempt(
        self, attempt: Attempt, work: Coroutine[Any, Any, Ending], config: RunConfig, *, replayable: int
    ) -> RunResult:
        """Make `attempt` with `work` (what ends the run), cancellable and interruptible through this runner."""
        self._attempts[attempt.execution.id] = attempt
        try:
            return await attempt.run(
                work,
                runner_type=self.runner_type,
                time_limit=config.timeout_seconds,
                trace=config.trace_enabled,
                replayable=replayable,
            )
        finally:
            self._attempts.pop(attempt.execution.id, None)

    def _observe(self, event: StepEvent) -> None:
        if event.kind == "delta":
            if self.on_event is not None:
                self.on_event(event)
            return
        if event.kind != "started":
            self._log.debug(
                f"step.{event.kind}", key=event.key, slot=event.slot, model=event.model, error=event.error
            )
        if self.config.metrics_enabled and event.kind in ("completed", "replayed", "failed"):
            if event.kind == "completed":
                usage = event.usage
                METRICS.steps.record(
                    "completed", usage.input_tokens, usage.output_tokens, event.latency_ms / 1000
                )
            else:
                METRICS.steps.record(event.kind)
        if self.on_event is not None:
            self.on_event(event)


async def start_execution(
    db: Database,
    team: Team,
    config: RunConfig,
    *,
    runner_type: str,
    runner_options: Mapping[str, Any],
    owner: Owner | None,
    origin: str,
    started: datetime | None = None,
    stored: Topology | None = None,
    eval_id: str | None = None,
) -> tuple[Execution, Lease | None]:
    """Store a validated team and create its execution, claimed by `owner` (without one, `pending`:
    a queued run): what every run starts with (a runner's `run`, a server's queue, a Metaflow flow
    started on its own). A run without a correlation id gets a new one here.

    `stored`: the team was read from the database (this topology's row) and is run as it is there,
    so it is not written again: a run start's only write is then its execution (a server's 202).
    `eval_id`: the `qmcp eval` run this execution is one cell of."""
    if config.correlation_id is None:
        config = config.model_copy(update={"correlation_id": uuid.uuid4().hex})
    teams = await collect_teams(db, team.topology)
    topology_id = stored.id if stored is not None else await db.store_team(team.topology, team.agents)
    # definitions given as objects are trusted, as the run's override makes them (runners/_trust.py)
    await trust_given(db, team.agents, config.model_override)
    execution = new_row(
        Execution,
        topology_id=topology_id,
        topology_name=team.topology.name,
        topology_type=str(team.topology.topology_type),
        runner_type=runner_type,
        correlation_id=config.correlation_id,
        input_data=team.input_data,
        topology_snapshot=team.topology.definition(),
        agents_snapshot=_snapshot(team.agents),
        teams_snapshot=teams,
        run_config=config.model_dump(mode="json", exclude=set(PROCESS_FIELDS)),
        runner_options=dict(runner_options),
        origin=origin,
        eval_id=eval_id,
    )
    lease = await db.executions.create(execution, owner, runner=runner_type, started=started)
    return execution, lease


def _snapshot(agents: Mapping[str, AgentType]) -> dict[str, dict[str, Any]]:
    """Each slot's agent definition; slots filled by one agent object (a 200-stage pipeline's) read
    its columns once: `definition()` reads four instrumented attributes, 0.35 ms for 200 slots."""
    definitions: dict[int, dict[str, Any]] = {}
    snapshot = {}
    for slot, agent in agents.items():
        definition = definitions.get(id(agent))
        if definition is None:
            definition = definitions[id(agent)] = agent.definition()
        snapshot[slot] = dict(definition)  # each slot's own, as before
    return snapshot


async def _run_topology(
    ctx: StepContext, implementation: BaseTopology, input_data: Mapping[str, Any]
) -> Ending:
    """The topology's code over its context: the in-process runners' attempt work."""
    async with ctx.resources.exit_stack:
        return Ending(ExecutionStatus.COMPLETED, output=await implementation.run(ctx, dict(input_data)))


def step_context(
    db: Database,
    execution: Execution,
    agents: Mapping[str, AgentType],
    completed: dict[str, StepRecord],
    config: RunConfig,
    *,
    scheduler: Scheduler,
    model_override: str | None,
    context_class: type[C] = StepContext,  # type: ignore[assignment]  # mypy cannot check a TypeVar's default value
    **extra: Any,
) -> C:
    """The `StepContext` an attempt at `execution` gives its topology code, as `config` asks.

    Every runner's attempt and every Metaflow step of a generated flow build it here, so that
    retries, checkpoints, budgets, rate limits, tracing and resources cannot differ between them.
    """
    configs = [agent.config for agent in {id(a): a for a in agents.values()}.values()]
    configs += [
        a.get("config") or {} for team in execution.teams_snapshot.values() for a in team["agents"].values()
    ]
    return context_class(
        execution_id=execution.id,
        agents=agents,
        store=db.steps,
        completed=completed,
        budget=Budget.for_execution(
            execution.id,
            max_tokens=config.max_tokens,
            max_cost_usd=config.max_cost_usd,
            agent_configs=configs,
            spent=execution.usage,
            completed=completed,
        ),
        rate_limits=llm.rate_limits(),
        scheduler=scheduler,
        retry=RetryPolicy(
            enabled=config.retry_on_failure,
            max_retries=config.max_retries,
            base_delay=config.retry_backoff_seconds,
        ),
        model_override=model_override,
        checkpoint_enabled=config.checkpoint_enabled,
        resources=RunResources(db=db, correlation_id=execution.correlation_id),
        teams=execution.teams_snapshot,
        tracer=step_tracer(config.trace_enabled),
        **extra,
    )


class RunnerRegistry:
    """Runner types by name (the shared `RUNNERS` registry): `RunnerRegistry.create("local", config)`;
    `@runner` adds your own."""

    @classmethod
    def register(cls, runner_class: type[BaseRunner]) -> type[BaseRunner]:
        return RUNNERS.add(runner_class.runner_type, runner_class)

    @classmethod
    def unregister(cls, runner_type: str) -> None:
        RUNNERS.remove(runner_type)

    @classmethod
    def get(cls, runner_type: str) -> type[BaseRunner]:
        found: type[BaseRunner] = RUNNERS.get(runner_type)
        return found

    @classmethod
    def create(cls, runner_type: str, config: RunConfig | None = None, **kwargs: Any) -> BaseRunner:
        return cls.get(runner_type)(config=config, **kwargs)

    @classmethod
    def for_execution(
        cls, execution: Execution, config: RunConfig | None = None, **kwargs: Any
    ) -> BaseRunner:
        """The runner `execution` ran on, with the options it ran with (`kwargs` win, e.g. `db_url`)."""
        return cls.create(execution.runner_type, config, **{**execution.runner_options, **kwargs})

    @classmethod
    def list(cls) -> list[str]:
        return RUNNERS.names()


def runner(runner_class: type[BaseRunner]) -> type[BaseRunner]:
    """Class decorator registering a runner under its `runner_type`."""
    return RunnerRegistry.register(runner_class)
