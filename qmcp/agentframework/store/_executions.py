"""The execution service: the only code that changes an execution's status, owner, attempts and timestamps.

An execution has at most one owner, a process that holds its **lease**: the owner's host, pid and a
random token, and the time the lease ends (`lease_until`). Runners, Metaflow tasks, the CLI and the
server all go through this module:

* `create` inserts an execution already claimed by its creator (or pending, for a queue).
* `claim` takes an execution over for a run or a resume with one compare-and-set on its row, so two
  processes can never both own it, on SQLite (its write lock serialises the statement) and on
  PostgreSQL (the row lock). A live owner is refused with `ExecutionBusyError`; a dead one (its pid
  is gone on this host, or its lease has expired) is taken over, and `force` takes over a live one.
* A `Lease` renews itself by heartbeat while its run goes on; the same statement says whether a
  cancel was requested, so a cancel written by any process arrives within one heartbeat. Step
  writes are fenced by the owner's token (`SqlStepStore.save(fence=...)`): a process that lost its
  lease writes nothing more and stops before its next model call.
* `finish` ends the owner's attempt (completed, failed, cancelled, paused) and releases the lease.
* The writes that hand an execution over or end an attempt (claim, finish, cancel, reap) also set its
  totals to the sum of its usage rows (`_usage.py`): what a killed or displaced attempt paid counts.
* `request_cancel` cancels at once what nobody runs, and asks the owner of a running one to stop.
* `observed` is how every reader sees an execution: a running one whose owner is gone reads
  `interrupted` (resumable), computed, never written by a read. `reap` writes it: the sweep a server
  makes at start-up for the executions it is about to resume.

`TRANSITIONS` is the whole state machine; `tests/core/test_lifecycle.py` checks every pair of it.
This is the shape of DBOS's executor ids and Temporal's task timeouts, on qmcp's own tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import os
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import ColumnElement, Integer, bindparam, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from ...config import settings
from ..errors import ExecutionBusyError, InvalidConfigError, LeaseLostError, NotFoundError
from ..models import Execution, ExecutionStatus, ExecutionStep, Usage, table_of, utcnow
from ._usage import TOTALS, summed_totals

if TYPE_CHECKING:
    from ._database import Database

__all__ = [
    "TRANSITIONS",
    "Action",
    "CancelOutcome",
    "Clock",
    "ExecutionService",
    "Lease",
    "Owner",
    "OwnerState",
    "SystemClock",
    "allowed",
    "attempt_started",
    "observed",
    "owner_state",
]

S = ExecutionStatus


class Action(StrEnum):
    """What may happen to an execution; which status each leads to is `TRANSITIONS`."""

    CLAIM = "claim"
    """A run or a resume takes the execution (its current owner, if any, must be gone, or forced)."""
    COMPLETE = "complete"
    FAIL = "fail"
    PAUSE = "pause"
    """The owner stops at a human gate; the execution waits for an answer."""
    STOP = "stop"
    """The owner stops because a cancel was asked for, or it was interrupted (Ctrl-C)."""
    CANCEL = "cancel"
    """A cancel from anywhere for an execution nobody runs."""
    REQUEST_CANCEL = "request_cancel"
    """A cancel from anywhere for an execution a live owner runs: the owner is asked to stop."""
    INTERRUPT = "interrupt"
    """Its owner is gone (dead pid on this host, or an expired lease)."""
    QUEUE = "queue"
    """A server takes it to resume when a worker is free: it waits `pending`, owned by nobody."""


TRANSITIONS: Mapping[tuple[ExecutionStatus, Action], ExecutionStatus] = {
    # A new execution is pending (queued) or running (claimed by its creator) from the start.
    (S.PENDING, Action.CLAIM): S.RUNNING,
    (S.PENDING, Action.CANCEL): S.CANCELLED,
    # Only the owner ends its attempt; the owner of a running execution can also be replaced.
    (S.RUNNING, Action.COMPLETE): S.COMPLETED,
    (S.RUNNING, Action.FAIL): S.FAILED,
    (S.RUNNING, Action.PAUSE): S.PAUSED,
    (S.RUNNING, Action.STOP): S.CANCELLED,
    (S.RUNNING, Action.REQUEST_CANCEL): S.RUNNING,
    (S.RUNNING, Action.CANCEL): S.CANCELLED,  # its owner is gone
    (S.RUNNING, Action.INTERRUPT): S.INTERRUPTED,
    (S.RUNNING, Action.CLAIM): S.RUNNING,  # takeover: the owner is gone, or `force`
    (S.RUNNING, Action.QUEUE): S.PENDING,  # its owner is gone: it reads interrupted
    # Unfinished executions resume; those nobody runs can be cancelled.
    (S.PAUSED, Action.CLAIM): S.RUNNING,
    (S.PAUSED, Action.CANCEL): S.CANCELLED,
    (S.PAUSED, Action.QUEUE): S.PENDING,
    (S.INTERRUPTED, Action.CLAIM): S.RUNNING,
    (S.INTERRUPTED, Action.CANCEL): S.CANCELLED,
    (S.INTERRUPTED, Action.QUEUE): S.PENDING,
    (S.FAILED, Action.CLAIM): S.RUNNING,
    (S.FAILED, Action.QUEUE): S.PENDING,
    (S.CANCELLED, Action.CLAIM): S.RUNNING,
    (S.CANCELLED, Action.QUEUE): S.PENDING,
    # COMPLETED is final: resume returns its result, nothing changes it.
}
"""(status, action) → the status it leads to. A pair that is not here is refused."""

_OWNER_ACTIONS = {
    Action.COMPLETE: S.COMPLETED,
    Action.FAIL: S.FAILED,
    Action.PAUSE: S.PAUSED,
    Action.STOP: S.CANCELLED,
    Action.INTERRUPT: S.INTERRUPTED,  # the owner leaves it to be resumed (a server shutting down)
}
_FINISH_ACTION = {status: action for action, status in _OWNER_ACTIONS.items()}


def allowed(status: ExecutionStatus, action: Action) -> ExecutionStatus:
    """The status `action` leads to from `status`; `InvalidConfigError` when the table refuses it."""
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        raise InvalidConfigError(f"a {status} execution cannot {action.value.replace('_', ' ')}") from None


# -- owners ---------------------------------------------------------------------------------------------


def _machine() -> str:
    """This kernel and pid namespace: two containers may share a host name, never both of these."""
    parts = []
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        with contextlib.suppress(OSError):
            parts.append(os.readlink(path) if path.endswith("/pid") else open(path).read().strip())  # noqa: SIM115
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:8] if parts else "nomachine"


def _pid_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), so a reused pid is not taken for the owner."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return int(stat.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Owner:
    """A process that may own executions: where it runs, and a token that is new for every claim."""

    host: str
    pid: int | None
    pid_start: int | None
    token: str

    @classmethod
    def this_process(cls, *, pid: int | None = None, token: str | None = None) -> Owner:
        """This process (or its process `pid`, e.g. the Metaflow runtime of a task), with a new token."""
        pid = os.getpid() if pid is None else pid
        return cls(
            host=socket.gethostname(),
            pid=pid,
            pid_start=_pid_start(pid),
            token=token or f"{_machine()}-{secrets.token_hex(8)}",
        )

    @classmethod
    def of_process(cls) -> Owner:
        """This process with one token for all its claims: helpers called outside a run recognise
        the executions they hold from one call to the next."""
        pid = os.getpid()
        return cls.this_process(token=f"{_machine()}-process:{pid}:{_pid_start(pid)}")

    @classmethod
    def of_run(cls, run_id: str, pid: int | None) -> Owner:
        """A run of an orchestrator (`Flow/123` of Metaflow) whose tasks all act for it; `pid` is the
        orchestrator's process on this host (a local task's parent), if known."""
        owner = cls.this_process(pid=pid) if pid is not None else cls(socket.gethostname(), None, None, "")
        return dataclasses.replace(owner, token=f"{_machine()}-run:{run_id}")

    @staticmethod
    def is_of_run(token: str | None, run_id: str) -> bool:
        """Whether `token` is the token of `Owner.of_run(run_id, ...)`, made on any host."""
        return token is not None and token.endswith(f"-run:{run_id}")

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}" if self.pid is not None else f"a process on {self.host}"

    @property
    def values(self) -> dict[str, Any]:
        return {
            "owner_token": self.token,
            "owner_host": self.host,
            "owner_pid": self.pid,
            "owner_pid_start": self.pid_start,
        }


class OwnerState(StrEnum):
    NONE = "none"
    LIVE = "live"
    DEAD = "dead"
    """Its pid is gone on this host: free at once."""
    EXPIRED = "expired"
    """Its lease ended without a heartbeat: free."""


def owner_state(execution: Execution, now: datetime | None = None) -> OwnerState:
    """Whether the execution's owner still runs it, as far as this process can tell."""
    if execution.owner_token is None:
        return OwnerState.NONE
    here = execution.owner_host == socket.gethostname() and execution.owner_token.startswith(_machine())
    if (
        here
        and execution.owner_pid is not None
        and not _alive(execution.owner_pid, execution.owner_pid_start)
    ):
        return OwnerState.DEAD
    if execution.lease_until is None or _aware(execution.lease_until) < (now or utcnow()):
        return OwnerState.EXPIRED
    return OwnerState.LIVE


def _alive(pid: int, started: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    return started is None or _pid_start(pid) in (None, started)


def _aware(moment: datetime) -> datetime:
    """SQLite and PostgreSQL hand datetimes back without their zone; qmcp writes UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def observed(execution: Execution, now: datetime | None = None) -> Execution:
    """`execution` as it stands now (changed in place, and returned): a running one whose owner is
    gone reads `interrupted`, with the error and history entry `reap` would write, and no owner.
    Reads compute this rather than write it, so they work on a database nobody can write."""
    if execution.status == S.RUNNING:
        for field, value in (_interruption(execution, owner_state(execution, now)) or {}).items():
            setattr(execution, field, value)
    return execution


def _interruption(execution: Execution, state: OwnerState) -> dict[str, Any] | None:
    """The values that mark a running execution `interrupted` when its owner is gone; None while it lives."""
    if state is OwnerState.LIVE:
        return None
    gone = "its lease expired" if state is OwnerState.EXPIRED else "it is gone"
    reason = (
        f"its owner ({_describe_owner(execution)}) stopped running it ({gone})"
        if state is not OwnerState.NONE
        else "nobody runs it"
    )
    last = {**execution.history[-1], "interrupted": reason} if execution.history else None
    return {
        "status": allowed(execution.status, Action.INTERRUPT),
        "error": f"interrupted: {reason}",
        "history": [*execution.history[:-1], last] if last else [],
        **_released(),
    }


def attempt_started(execution: Execution) -> datetime:
    """When the current (or last) attempt of `execution` started."""
    if execution.history:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return datetime.fromisoformat(execution.history[-1]["at"])
    return _aware(execution.started_at)


def _describe_owner(execution: Execution) -> str:
    where = (
        f"pid {execution.owner_pid} on {execution.owner_host}"
        if execution.owner_pid is not None
        else f"a process on {execution.owner_host}"
    )
    return where


# -- leases ---------------------------------------------------------------------------------------------


class Lease:
    """This process's ownership of one execution, kept alive by a heartbeat while its run goes on.

    `ensure()` is called before every model call: it costs a clock read while heartbeats arrive,
    and renews the lease itself when they have not (a stalled loop, a stopped process), so a
    process whose lease may have passed to another owner finds out before it pays for a call.
    """

    def __init__(
        self,
        service: ExecutionService,
        execution_id: uuid.UUID,
        owner: Owner,
        *,
        started: datetime,
        interval: float,
        ttl: float,
    ) -> None:
        self.service = service
        self.execution_id = execution_id
        self.owner = owner
        self.started = started
        self.interval = interval
        self.ttl = ttl
        self.lost: str | None = None
        self.cancel_requested = False
        self.ended = False
        self._renewed = service.clock.monotonic()
        self._on_stop: Callable[[], object] | None = None
        self._renewing: asyncio.Future[None] | None = None

    @property
    def token(self) -> str:
        return self.owner.token

    def until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.ttl)

    def mark_lost(self, reason: str | None = None) -> None:
        if self.lost is None:
            self.lost = reason or (
                f"execution {self.execution_id} was taken over by another process; this one "
                f"({self.owner.describe()}) stopped without writing"
            )
        self._stop()

    async def renew(self) -> None:
        """Extend the lease; learn whether a cancel was asked for, or whether the lease was lost.

        One renewal at a time: callers arriving while one is under way wait for it. A stalled loop
        sends every step in flight through `ensure()` at once (1,000 of them in a wide ensemble), and
        each renewal of its own would take one of the engine's connections, and the write lock."""
        renewing = self._renewing
        if renewing is None or renewing.done():
            renewing = self._renewing = asyncio.ensure_future(self._renew())
            renewing.add_done_callback(_retrieved)
        await asyncio.shield(renewing)  # a cancelled caller leaves the renewal to the others

    async def _renew(self) -> None:
        started = self.service.clock.monotonic()
        outcome = await self.service.renew(self)
        if outcome is None:
            self.mark_lost()
            return
        self._renewed = started
        status, cancel_requested = outcome
        if status != S.RUNNING:  # another process of this owner (a Metaflow task) ended the run
            self.ended = True
        elif cancel_requested and not self.cancel_requested:
            self.cancel_requested = True
            self._stop()

    async def ensure(self) -> None:
        """Raise `LeaseLostError` unless this process still owns the execution (renewing if in doubt)."""
        if self.lost is None and self.service.clock.monotonic() - self._renewed > self.ttl - self.interval:
            await self.renew()
        if self.lost is not None:
            raise LeaseLostError(self.lost)

    @contextlib.asynccontextmanager
    async def kept(self, on_stop: Callable[[], object] | None = None) -> AsyncIterator[Lease]:
        """Heartbeat while the block runs; `on_stop` is called once a cancel arrives or the lease is lost.

        The heartbeat is stopped between renewals, never cancelled in the middle of one.
        """
        self._on_stop = on_stop
        done = asyncio.Event()
        beating = asyncio.create_task(self._beat(done), name=f"qmcp-heartbeat-{self.execution_id}")
        try:
            yield self
        finally:
            self._on_stop = None
            done.set()
            await asyncio.shield(beating)

    async def _beat(self, done: asyncio.Event) -> None:
        while self.lost is None and not self.ended:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.interval)
            if done.is_set():
                return
            try:
                await self.renew()
            except Exception:  # the database failing: keep trying while the lease lasts
                if self.service.clock.monotonic() - self._renewed > self.ttl:
                    await self._last_try()

    async def _last_try(self) -> None:
        """Renew once more before giving up: a process stalled past its lease comes back to a
        connection the server has ended (PostgreSQL's idle-in-transaction timeout), and a fresh one
        tells whether it was taken over or the database is really failing."""
        try:
            await self.renew()
        except Exception:
            self.mark_lost(
                f"could not renew the lease on execution {self.execution_id} for {self.ttl:g}s "
                "(the database is failing); stopped"
            )

    def _stop(self) -> None:
        if self._on_stop is not None:
            on_stop, self._on_stop = self._on_stop, None
            on_stop()


def _retrieved(future: asyncio.Future[None]) -> None:
    """Mark a renewal's outcome seen: its callers may all have been cancelled before it ended."""
    if not future.cancelled():
        future.exception()


# -- the service ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CancelOutcome:
    execution: Execution
    requested: bool
    """True when a live owner was asked to stop (it ends the run); False when nothing runs it."""
    owner: str | None = None


class Clock(Protocol):
    """The time leases are judged by: `now()` (aware UTC) for `lease_until` and the times written,
    `monotonic()` seconds for a lease's renewal timing. Tests set a clock they advance by hand."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock (the default)."""

    def now(self) -> datetime:
        return utcnow()

    def monotonic(self) -> float:
        return time.monotonic()


class ExecutionService:
    """Lifecycle writes of one `Database`: `db.executions`. Its `clock` may be replaced (tests)."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock: Clock = clock or SystemClock()

    # -- timing -------------------------------------------------------------------------------------

    @staticmethod
    def timing(interval: float | None = None, ttl: float | None = None) -> tuple[float, float]:
        """Heartbeat interval and lease length: the arguments, else QMCP_HEARTBEAT_SECONDS / QMCP_LEASE_SECONDS."""
        current = settings()
        interval = interval if interval is not None else current.heartbeat_seconds
        ttl = ttl if ttl is not None else current.lease_seconds
        if ttl < 2 * interval:
            raise InvalidConfigError(
                f"the lease ({ttl:g}s) must last at least two heartbeats ({interval:g}s each); "
                "raise QMCP_LEASE_SECONDS or lower QMCP_HEARTBEAT_SECONDS"
            )
        return interval, ttl

    def _lease(self, execution_id: uuid.UUID, owner: Owner, started: datetime) -> Lease:
        interval, ttl = self.timing()
        return Lease(self, execution_id, owner, started=started, interval=interval, ttl=ttl)

    # -- claiming -----------------------------------------------------------------------------------

    async def create(
        self,
        execution: Execution,
        owner: Owner | None,
        *,
        runner: str,
        started: datetime | None = None,
        steps: Sequence[ExecutionStep] = (),
    ) -> Lease | None:
        """Insert `execution`, claimed by `owner` (running) or, without one, pending.

        `started`: when the run began, if before now (a flow that records its execution at the end).
        `steps`: rows it starts with (a fork's inherited steps), written in the same transaction.
        """
        now = started or self.clock.now()
        execution.created_at = execution.started_at = now
        if owner is None:
            execution.status, execution.attempts = S.PENDING, 0
            await self._insert(execution, steps)
            return None
        lease = self._lease(execution.id, owner, now)
        for field, value in owner.values.items():
            setattr(execution, field, value)
        execution.status, execution.attempts = S.RUNNING, 1
        execution.lease_until, execution.heartbeat_at = lease.until(now), now
        execution.history = [_attempt(1, now, owner, runner, execution.runner_options, {}, None)]
        await self._insert(execution, steps)
        return lease

    async def _insert(self, execution: Execution, steps: Sequence[ExecutionStep]) -> None:
        """Write a new execution with its first steps. A fork's parent read a moment ago may have been
        deleted since (a prune between the read and this write): its foreign key then fails, and the
        caller hears that the execution is gone, as if the prune had come first."""
        try:
            await self.db.add(execution, *steps)
        except IntegrityError:
            if execution.parent_id is None:
                raise
            await self.db.stored_execution(execution.parent_id)  # NotFoundError when it is gone
            raise

    async def claim(
        self,
        execution_id: uuid.UUID | str,
        owner: Owner,
        *,
        runner: str,
        runner_options: Mapping[str, Any],
        run_config: Mapping[str, Any],
        changes: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> tuple[Execution, Lease]:
        """Take `execution_id` for a run: one compare-and-set on its status and owner.

        Raises `ExecutionBusyError` naming a live owner (unless `force`), and `InvalidConfigError`
        for a completed execution. The runner, its options and the run's options are stored, and
        the attempt is added to the history with `changes` (what the caller changed explicitly).
        """
        for _ in range(20):  # someone else changed the row between our read and our write: decide again
            current = await self.db.stored_execution(execution_id)
            allowed(current.status, Action.CLAIM)
            state = owner_state(current, self.clock.now())
            if state is OwnerState.LIVE and not force:
                raise ExecutionBusyError(_busy_message(current))
            now = self.clock.now()
            lease = self._lease(current.id, owner, now)
            took_over = None if state is OwnerState.NONE else f"{_describe_owner(current)} ({state.value})"
            entry = _attempt(
                current.attempts + 1, now, owner, runner, runner_options, changes or {}, took_over
            )
            if force and state is OwnerState.LIVE:
                entry["forced"] = True
            gone = _interruption(current, state) if current.status == S.RUNNING else None
            history = gone["history"] if gone else current.history  # its last attempt, as it read
            values = {
                **owner.values,
                "status": S.RUNNING,
                "lease_until": lease.until(now),
                "heartbeat_at": now,
                "cancel_requested_at": None,
                "attempts": col(Execution.attempts) + 1,
                "error": None,
                "human_request_id": None,
                "completed_at": None,
                "runner_type": runner,
                "runner_options": dict(runner_options),
                "run_config": dict(run_config),
                "history": [*history, entry],
            }
            guard = [col(Execution.status) == current.status, _same_owner(current.owner_token)]
            if state is OwnerState.EXPIRED:  # not renewed since we looked
                guard.append(col(Execution.lease_until) == current.lease_until)
            if await self.db.update_counting_usage(current.id, values, *guard) is not None:
                claimed = await self.db.get_execution(current.id)
                return claimed, lease
        raise ExecutionBusyError(f"execution {execution_id} keeps changing hands; try again")

    # -- owning -------------------------------------------------------------------------------------

    async def renew(self, lease: Lease) -> tuple[ExecutionStatus, bool] | None:
        """Extend `lease`: None when it was lost, else the status and whether a cancel was requested."""
        now = self.clock.now()
        return await self.db.renew_lease(lease.execution_id, lease.token, lease.until(now), now)

    async def finish(
        self,
        lease: Lease,
        status: ExecutionStatus,
        *,
        output: dict[str, Any] | None = None,
        error: str | None = None,
        release: bool = True,
        human_request_id: str | None = None,
    ) -> tuple[datetime, int, Usage] | None:
        """End the owner's running attempt in `status` and (with `release`) give the lease up.

        Returns when it ended, how long the attempt ran (added to `duration_ms`) and the execution's
        totals (the sum of its usage rows, every attempt's included), or None when
        nothing was written: the execution is no longer this owner's (the lease is then marked
        lost), or another process of this owner ended it already. `release=False` keeps the lease
        for the process that claimed it (a Metaflow task ending a run that `MetaflowRunner` claimed;
        the runner then calls `release`). `human_request_id`: the request a `paused` run waits for.
        """
        allowed(S.RUNNING, _FINISH_ACTION[status])
        now = self.clock.now()
        ran = _ms(now - lease.started)
        params = {
            "execution": lease.execution_id,
            "token": lease.token,
            "status": status,
            "output_data": output,
            "error": error,
            "human_request_id": human_request_id,
            "completed_at": now,
            "ran": ran,
        }
        totals = await self.db.run_counting_usage(lease.execution_id, _finishing(release), params)
        if totals is None:
            current = await self.db.stored_execution(lease.execution_id)
            if current.owner_token != lease.token:
                lease.mark_lost()
            return None
        return now, ran, totals

    async def release(self, lease: Lease, *, error: str | None = None) -> bool:
        """Give up the lease of an execution this owner's other process has ended (see `finish`);
        `error` replaces its error message. False when the lease was no longer held."""
        values = _released() | ({"error": error} if error is not None else {})
        return await self.db.execute_update(
            lease.execution_id,
            values,
            col(Execution.owner_token) == lease.token,
            col(Execution.status) != S.RUNNING,
        )

    async def count_usage(self, execution_id: uuid.UUID) -> Usage:
        """Set the execution's totals to the sum of its usage rows now, outside the writes that do
        it anyway (parallel Metaflow tasks count theirs when they end); the totals."""
        totals = await self.db.update_counting_usage(execution_id, {})
        if totals is None:
            raise NotFoundError(f"execution {execution_id} not found; list them with: qmcp executions list")
        return totals

    async def note_external_run(self, lease: Lease, run_id: str) -> None:
        """Record the orchestrator's run (`Flow/123`) now making the owner's attempt."""
        await self.db.execute_update(
            lease.execution_id, {"external_run_id": run_id}, col(Execution.owner_token) == lease.token
        )

    def attach(self, execution: Execution, token: str) -> Lease:
        """The lease of an execution claimed by another process of the same owner (a Metaflow task
        of a run that `MetaflowRunner` claimed); `LeaseLostError` if that owner lost it."""
        if execution.owner_token != token:
            raise LeaseLostError(
                f"execution {execution.id} is no longer owned by the run that started this task "
                f"({_describe_owner(execution) if execution.owner_token else 'nobody owns it'}); stopped"
            )
        owner = Owner(execution.owner_host or "", execution.owner_pid, execution.owner_pid_start, token)
        return self._lease(execution.id, owner, attempt_started(execution))

    # -- from anywhere ------------------------------------------------------------------------------

    async def request_cancel(self, execution_id: uuid.UUID | str) -> CancelOutcome:
        """Cancel what nobody runs at once; ask the live owner of a running execution to stop."""
        for _ in range(20):
            current = await self.db.stored_execution(execution_id)
            state = owner_state(current, self.clock.now())
            if current.status == S.RUNNING and state is OwnerState.LIVE:
                allowed(current.status, Action.REQUEST_CANCEL)
                if await self.db.execute_update(
                    current.id,
                    {"cancel_requested_at": self.clock.now()},
                    col(Execution.status) == S.RUNNING,
                    _same_owner(current.owner_token),
                ):
                    return CancelOutcome(current, requested=True, owner=_describe_owner(current))
                continue
            if (current.status, Action.CANCEL) not in TRANSITIONS:
                return CancelOutcome(current, requested=False)
            now = self.clock.now()
            values = {
                "status": S.CANCELLED,
                "error": "cancelled by request",
                "human_request_id": None,
                "completed_at": now,
                **_released(),
            }
            if (
                await self.db.update_counting_usage(
                    current.id,
                    values,
                    col(Execution.status) == current.status,
                    _same_owner(current.owner_token),
                )
                is not None
            ):
                return CancelOutcome(await self.db.get_execution(current.id), requested=False)
        raise ExecutionBusyError(f"execution {execution_id} keeps changing; try the cancel again")

    async def queue(self, execution_id: uuid.UUID | str) -> Execution:
        """Mark an unfinished execution nobody runs `pending`: queued to be resumed by a server's worker.

        One that is pending or running already, or completed, is returned as it is; a running one
        whose owner is gone is interrupted, and queued.
        """
        for _ in range(20):
            current = await self.db.stored_execution(execution_id)
            state = owner_state(current, self.clock.now())
            if (current.status, Action.QUEUE) not in TRANSITIONS or state is OwnerState.LIVE:
                return current
            guard = [col(Execution.status) == current.status, _same_owner(current.owner_token)]
            if current.status == S.RUNNING and state is OwnerState.EXPIRED:  # not renewed since we looked
                guard.append(col(Execution.lease_until) == current.lease_until)
            if await self.db.execute_update(
                current.id,
                {"status": S.PENDING, "error": None, "human_request_id": None, **_released()},
                *guard,
            ):
                return await self.db.get_execution(current.id)
        raise ExecutionBusyError(f"execution {execution_id} keeps changing; try again")

    async def reap(self, executions: list[Execution]) -> list[Execution]:
        """Write `interrupted` into the running executions among `executions` whose owner is gone, as
        `observed` shows them: the sweep of a server about to resume them (reads never write it).
        Returns them all as they are now."""
        now = self.clock.now()
        result = []
        for execution in executions:
            current = await self.db.stored_execution(execution.id)
            state = owner_state(current, now) if current.status == S.RUNNING else OwnerState.LIVE
            values = _interruption(current, state)
            if values is not None:
                guard = [col(Execution.status) == S.RUNNING, _same_owner(current.owner_token)]
                if state is OwnerState.EXPIRED:
                    guard.append(col(Execution.lease_until) == current.lease_until)
                await self.db.update_counting_usage(current.id, values, *guard)
            result.append(await self.db.get_execution(current.id))
        return result


def _same_owner(token: str | None) -> ColumnElement[bool]:
    column = col(Execution.owner_token)
    return column.is_(None) if token is None else column == token


@functools.cache
def _finishing(release: bool) -> Any:
    """The `UPDATE` that ends the owner's running attempt (`ExecutionService.finish`), built once with
    bound parameters: building it per run, with the totals' subqueries, cost about 1 ms of CPU
    (SQLAlchemy's coercions and cache key) against the statement's 0.3 ms in SQLite."""
    table = table_of(Execution)
    set_to = {
        name: bindparam(name, type_=table.c[name].type)
        for name in ("status", "output_data", "error", "human_request_id", "completed_at")
    }
    return (
        update(Execution)
        .where(
            col(Execution.id) == bindparam("execution", type_=table.c.id.type),
            col(Execution.owner_token) == bindparam("token", type_=table.c.owner_token.type),
            col(Execution.status) == S.RUNNING,
        )
        .values(
            **set_to,
            duration_ms=func.coalesce(col(Execution.duration_ms), 0) + bindparam("ran", type_=Integer()),
            **(_released() if release else {}),
            **summed_totals(),
        )
        .returning(*[getattr(Execution, name) for name in TOTALS])
    )


def _released() -> dict[str, Any]:
    return {
        "owner_token": None,
        "owner_host": None,
        "owner_pid": None,
        "owner_pid_start": None,
        "lease_until": None,
        "cancel_requested_at": None,
    }


def _ms(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds() * 1000))


def _attempt(
    number: int,
    at: datetime,
    owner: Owner,
    runner: str,
    runner_options: Mapping[str, Any],
    changes: Mapping[str, Any],
    took_over: str | None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "attempt": number,
        "at": at.isoformat(),
        "by": owner.describe(),
        "runner": runner,
        "runner_options": dict(runner_options),
    }
    if changes:
        entry["changes"] = dict(changes)
    if took_over:
        entry["took_over_from"] = took_over
    return entry


def _busy_message(execution: Execution) -> str:
    until = _aware(execution.lease_until).astimezone().strftime("%H:%M:%S") if execution.lease_until else "?"
    return (
        f"execution {execution.id} is running in {_describe_owner(execution)} (its lease ends at {until} "
        f"unless renewed); wait for it with: qmcp executions resume {execution.id} --wait, "
        "or take it over with --force"
    )
