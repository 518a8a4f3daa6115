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

from ..agentframework.errors import ExecutionBusyError, NotFoundError, UserInputError
from ..agentframework.models import Execution, ExecutionStatus, HumanRequest
from ..agentframework.runners import OWNED_PROCESS_FREEZE, BaseRunner, RunConfig, RunnerRegistry
from ..agentframework.store import Database
from ..app import (
    Caller,
    CallerPolicy,
    Door,
    ForkRequest,
    RunRequest,
    TeamCache,
    fork_execution,
    queue_resume,
    start_run,
)
from ..observability import continued_trace, get_logger
from .events import EventHub, status_event

__all__ = ["RunManager"]


class RunManager:
    def __init__(
        self,
        db_url: str,
        hub: EventHub,
        *,
        max_concurrent: int,
        policy: CallerPolicy | None = None,
        log_level: str = "WARNING",
        origin: str = "server",
    ) -> None:
        self.db_url = db_url
        self.origin = origin
        self.hub = hub
        self.max_concurrent = max_concurrent
        self.policy = policy or CallerPolicy.from_settings()
        """What the server's remote callers may decide; its `pinned_model` runs every run and tool."""
        self.log_level = log_level
        self.teams = TeamCache()
        """The stored teams run starts checked, by their rows: a start of the same team reads one query."""
        self.accepting = True
        self._queue: asyncio.Queue[uuid.UUID] = asyncio.Queue()
        self._queued: set[uuid.UUID] = set()
        self._traces: dict[uuid.UUID, dict[str, str]] = {}
        """The W3C trace headers of the request that queued each execution: its run continues that trace."""
        self._active: dict[uuid.UUID, BaseRunner] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._stopped: dict[uuid.UUID, asyncio.Event] = {}
        """Set when a worker's attempt at the execution ends (completed, failed, paused, ...)."""
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
        self.teams.clear()

    # -- requests -----------------------------------------------------------------------------

    async def submit(
        self, request: RunRequest, caller: Caller, *, trace: Mapping[str, str] | None = None
    ) -> Execution:
        """Start a run of a stored topology as `caller` may (`qmcp.app.start_run`): its execution waits
        `pending` in this server's queue."""
        self._check_accepting()
        async with self.database() as db:
            handle = await start_run(db, request, caller, policy=self.policy, teams=self.teams)
        self._enqueue(handle.execution_id, trace)
        return handle.execution

    async def resume(
        self, execution_id: str | uuid.UUID, caller: Caller, *, trace: Mapping[str, str] | None = None
    ) -> Execution:
        """Queue an unfinished execution to continue here (it waits `pending`); refused while another
        live process runs it."""
        self._check_accepting()
        async with self.database() as db:
            execution = await db.get_execution(execution_id)
            if execution.status == ExecutionStatus.RUNNING and execution.id in self._active:
                return execution
            execution = await queue_resume(db, execution.id, caller)
        if execution.status == ExecutionStatus.PENDING:
            self._enqueue(execution.id, trace)
        return execution

    async def fork(
        self, request: ForkRequest, caller: Caller, *, trace: Mapping[str, str] | None = None
    ) -> Execution:
        """Fork a recorded execution as `caller` may (`qmcp.app.fork_execution`): the fork waits
        `pending` in this server's queue, with its inherited steps, for a worker to run the rest."""
        self._check_accepting()
        async with self.database() as db:
            handle = await fork_execution(db, request, caller, policy=self.policy)
        self._enqueue(handle.execution_id, trace)
        return handle.execution

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
        return (await self.resume(execution.id, Caller.operator(Door.HTTP))).id

    async def cancel(self, execution_id: str | uuid.UUID) -> Execution:
        """Cancel from here: at once if this server runs it, else through its owner's heartbeat."""
        async with self.database() as db:
            execution = await db.get_execution(execution_id)
        self._queued.discard(execution.id)
        runner = self._active.get(execution.id) or RunnerRegistry.for_execution(
            execution,
            RunConfig(log_level=self.log_level, freeze_heap_above=OWNED_PROCESS_FREEZE),
            db_url=self.db_url,
        )
        await runner.cancel(execution.id)
        async with self.database() as db:
            execution = await db.get_execution(execution.id)
        self.hub.publish(execution.id, status_event(execution))
        return execution

    def stopped(self, execution_id: uuid.UUID) -> asyncio.Event:
        """Set when this server's attempt at a queued execution ends (completed, failed, paused, ...).
        Ask for it right after `submit`/`resume`, before awaiting anything else, so the end cannot be missed."""
        return self._stopped.setdefault(execution_id, asyncio.Event())

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
            stopped = self._stopped.pop(execution_id, None)
            if stopped is not None:
                stopped.set()
            if not self._active:
                self._idle.set()
        async with self.database() as db:
            finished = await db.get_execution(execution_id)
        self.hub.publish(execution_id, status_event(finished) | {"error": result.error})
