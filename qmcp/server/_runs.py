"""Runs started over HTTP: a queue of executions and a fixed number of workers running them.

A run request stores the team and creates its execution `pending` (nothing is claimed yet), and
the request answers 202 with its id. Workers take executions in order and run them with the same
runner code as Python and the CLI (`runner.resume` claims a pending execution like any other), so
leases, fencing and cancel work as everywhere. At most `max_concurrent` run at once; the others
wait as `pending`.

A resume asked over HTTP (or by answering a run's human request) queues the execution the same way:
`pending`, owned by nobody, until a worker claims it.

On start-up what a previous server process left unfinished is queued again, oldest first: every
`pending` execution (only servers queue executions) and the `interrupted` ones a server started (a
dead owner's `running` becomes `interrupted` first); their completed steps replay, so nothing is
paid twice. On shutdown the queue stops, running
runs get a grace period, and those still running are interrupted (their steps kept) for the next
start to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping
from typing import Any

from ..agentframework.errors import ExecutionBusyError, InvalidConfigError, NotFoundError, UserInputError
from ..agentframework.models import Execution, ExecutionStatus, HumanRequest, describe_validation_error
from ..agentframework.runners import BaseRunner, RunConfig, RunnerRegistry, RunResult
from ..agentframework.runners._base import new_execution
from ..agentframework.runners._config import OWNED_PROCESS_FREEZE
from ..agentframework.runners._team import prepare_team
from ..agentframework.runners._trust import require_trusted
from ..agentframework.store import Database
from ..observability import continued_trace, get_logger
from ._events import EventHub, status_event

__all__ = ["RunManager"]

_RUNNER_OPTIONS = {"async": ("max_concurrent",), "metaflow": ("output_dir", "environment")}


class RunManager:
    def __init__(
        self,
        db_url: str,
        hub: EventHub,
        *,
        max_concurrent: int,
        model_override: str | None = None,
        log_level: str = "WARNING",
        origin: str = "server",
    ) -> None:
        self.db_url = db_url
        self.origin = origin
        self.hub = hub
        self.max_concurrent = max_concurrent
        self.model_override = model_override
        self.log_level = log_level
        self.accepting = True
        self._queue: asyncio.Queue[uuid.UUID] = asyncio.Queue()
        self._queued: set[uuid.UUID] = set()
        self._traces: dict[uuid.UUID, dict[str, str]] = {}
        """The W3C trace headers of the request that queued each execution: its run continues that trace."""
        self._active: dict[uuid.UUID, BaseRunner] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._log = get_logger("qmcp.server")
        self.db: Database | None = None
        """The server's open database, shared by the manager's queries (runs open their own)."""

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, *, resume_interrupted: bool) -> int:
        """Start the workers; queue what a previous server left unfinished. Returns how many were queued."""
        self._workers = [
            asyncio.create_task(self._work(), name=f"qmcp-run-worker-{index}")
            for index in range(self.max_concurrent)
        ]
        if not resume_interrupted:
            return 0
        async with self.database() as db:
            await db.executions.reap(
                await db.list_executions(
                    status=ExecutionStatus.INTERRUPTED, origin=self.origin, limit=100_000
                )
            )
            # Pending executions were all queued by a server (runs create theirs claimed); interrupted
            # ones are resumed if this server's kind started them.
            queued = await db.list_executions(
                status=ExecutionStatus.PENDING, limit=100_000, oldest_first=True
            )
            interrupted = await db.list_executions(
                status=ExecutionStatus.INTERRUPTED, origin=self.origin, limit=100_000, oldest_first=True
            )
            left = sorted([*queued, *interrupted], key=lambda e: e.created_at)
        for execution in left:
            self._enqueue(execution.id)
        if left:
            self._log.info("server.resuming", executions=len(left))
        return len(left)

    async def close(self, grace_seconds: float) -> None:
        """Stop taking runs; give running ones `grace_seconds`, then interrupt them (resumable)."""
        self.accepting = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace_seconds)
        for execution_id, runner in list(self._active.items()):
            runner.interrupt(execution_id)
        await self._idle.wait()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    # -- requests -----------------------------------------------------------------------------

    async def submit(
        self,
        topology_name: str,
        input_data: Mapping[str, Any],
        runner_type: str,
        config: Mapping[str, Any],
        *,
        trace: Mapping[str, str] | None = None,
    ) -> Execution:
        """Validate a run of a stored topology, store its execution `pending`, and queue it."""
        self._check_accepting()
        RunnerRegistry.get(runner_type)
        options = {name: config[name] for name in _RUNNER_OPTIONS.get(runner_type, ()) if config.get(name)}
        run_values = {k: v for k, v in config.items() if k not in ("output_dir", "environment")}
        try:
            run_config = RunConfig.model_validate(run_values)
        except ValueError as error:
            raise InvalidConfigError(f"config: {_validation_text(error)}") from None
        run_config = run_config.model_copy(
            update={
                "correlation_id": run_config.correlation_id or uuid.uuid4().hex,
                "model_override": run_config.model_override or self.model_override,
            }
        )
        async with self.database() as db:
            topology, agents = await db.get_topology(topology_name)
            await require_trusted(db, agents, topology=topology_name)
            team = prepare_team(topology, agents, input_data, run_config.model_override)
            runner = RunnerRegistry.create(runner_type, run_config, db_url=self.db_url, **options)
            execution, _ = await new_execution(
                db,
                team,
                run_config,
                runner_type=runner_type,
                runner_options=runner.options(),
                owner=None,
                origin=self.origin,
            )
        self._enqueue(execution.id, trace)
        return execution

    async def resume(
        self, execution_id: str | uuid.UUID, *, trace: Mapping[str, str] | None = None
    ) -> Execution:
        """Queue an unfinished execution to continue here (it waits `pending`); refused while another
        live process runs it."""
        self._check_accepting()
        async with self.database() as db:
            execution = await db.get_execution(execution_id)
            if execution.status == ExecutionStatus.RUNNING:
                if execution.id in self._active:
                    return execution
                raise ExecutionBusyError(
                    f"execution {execution.id} is running in pid {execution.owner_pid} on {execution.owner_host}"
                )
            if execution.status != ExecutionStatus.COMPLETED:
                execution = await db.executions.queue(execution.id)
        if execution.status == ExecutionStatus.PENDING:
            self._enqueue(execution.id, trace)
        return execution

    async def answered(self, request: HumanRequest) -> uuid.UUID | None:
        """Resume the paused run whose gate asked `request` (a gate of this database's runs, or one a
        run elsewhere made on this server naming an execution of this database); its id, if any."""
        candidate = request.execution_id or request.context.get("execution_id")
        if candidate is None:
            return None
        async with self.database() as db:
            try:
                execution = await db.get_execution(str(candidate))
            except NotFoundError:
                return None
        if execution.status != ExecutionStatus.PAUSED:
            return None
        return (await self.resume(execution.id)).id

    async def cancel(self, execution_id: str | uuid.UUID) -> RunResult:
        """Cancel from here: at once if this server runs it, else through its owner's heartbeat."""
        async with self.database() as db:
            execution = await db.get_execution(execution_id)
        self._queued.discard(execution.id)
        runner = self._active.get(execution.id) or RunnerRegistry.for_execution(
            execution,
            RunConfig(log_level=self.log_level, freeze_heap_above=OWNED_PROCESS_FREEZE),
            db_url=self.db_url,
        )
        result = await runner.cancel(execution.id)
        async with self.database() as db:
            self.hub.publish(execution.id, status_event(await db.get_execution(execution.id)))
        return result

    def database(self) -> contextlib.AbstractAsyncContextManager[Database]:
        """The server's open database, else one opened for the caller."""
        return contextlib.nullcontext(self.db) if self.db is not None else Database(self.db_url)

    def active(self) -> list[uuid.UUID]:
        return list(self._active)

    # -- the workers --------------------------------------------------------------------------

    def _check_accepting(self) -> None:
        if not self.accepting:
            raise UserInputError("the server is shutting down; send the run to it again once it is back")

    def _enqueue(self, execution_id: uuid.UUID, trace: Mapping[str, str] | None = None) -> None:
        if execution_id not in self._queued and execution_id not in self._active:
            self._queued.add(execution_id)
            if trace:
                self._traces[execution_id] = {
                    k.lower(): v for k, v in trace.items() if k.lower().startswith("trace")
                }
            self._queue.put_nowait(execution_id)

    async def _work(self) -> None:
        while True:
            execution_id = await self._queue.get()
            if execution_id not in self._queued:  # cancelled while it waited
                continue
            self._queued.discard(execution_id)
            if not self.accepting:
                continue
            with contextlib.suppress(Exception):  # reported by `_run`; a worker never dies
                await self._run(execution_id)

    async def _run(self, execution_id: uuid.UUID) -> None:
        async with self.database() as db:
            execution = await db.get_execution(execution_id)
        runner = RunnerRegistry.for_execution(
            execution,
            RunConfig(log_level=self.log_level, freeze_heap_above=OWNED_PROCESS_FREEZE),
            db_url=self.db_url,
            on_event=self.hub.publisher(execution_id),
        )
        runner.stream = True  # replies stream to the event hub (set here: a user's runner may not take it)
        self._active[execution_id] = runner
        self._idle.clear()
        try:
            self.hub.publish(execution_id, status_event(execution) | {"status": "running"})
            with continued_trace(self._traces.pop(execution_id, None) or {}):
                result = await runner.resume(execution_id)
        except ExecutionBusyError as busy:
            self._log.info("server.run_skipped", execution_id=str(execution_id), reason=str(busy))
            return
        except Exception as error:
            self._log.error("server.run_failed", execution_id=str(execution_id), error=str(error))
            raise
        finally:
            self._active.pop(execution_id, None)
            self.hub.finished(execution_id)
            if not self._active:
                self._idle.set()
        async with self.database() as db:
            finished = await db.get_execution(execution_id)
        self.hub.publish(execution_id, status_event(finished) | {"error": result.error})


def _validation_text(error: Exception) -> str:
    from pydantic import ValidationError

    return describe_validation_error(error) if isinstance(error, ValidationError) else str(error)
