"""Retention: delete old finished executions with every row that hangs off them, and give the space back.

What an execution owns: its steps (`execution_steps`), what its attempts paid (`step_usage`), the
human requests its gates made (`human_requests`) and their answers (`human_responses`). An
evaluation's score of it (`eval_scores`) is the evaluation's result and stays, its `execution_id`
cleared. Tool invocations (kept by correlation id, the server's audit) and agents' memories (kept by
agent name, across executions) belong to no execution and are not touched.

Never pruned, whatever the filter says: an execution that is `pending`, `running` or `paused` (live,
or waiting for a worker or a person), and the parent of a fork that stays (its inherited steps point
back to it; a parent whose forks all go may go with them). A `running` row whose owner died reads
`interrupted` but is still `running` in the store until a server or a resume reaps it: it stays too.

The work is planned once (reads only), then done in batches, each one transaction: it takes the write
lock first (SQLite: a write that changes nothing; PostgreSQL: the batch's rows `FOR UPDATE`), checks
its executions again (a resume or a fork since the plan keeps them), and deletes children, then the
executions. A huge database is never locked for the whole prune, and a prune interrupted between
batches leaves no orphan row. Forks go before their parents (deepest first), so the self-reference
`executions.parent_id` holds at every commit. The plan holds the ids to delete (about 100 bytes each:
a million executions, 100 MB) and the forks' parents. Measured here: 3,000 executions (6,000 steps,
60 MB of SQLite) deleted in 1.1 s in 15 batches, and 1,000 on PostgreSQL in 0.11 s.

Space: SQLite keeps freed pages in the file for reuse, so the file stops growing but does not shrink.
After deleting, the file is compacted as its `auto_vacuum` mode allows: `PRAGMA incremental_vacuum`
on an INCREMENTAL file (cheap: it only drops the free pages at the end), nothing on a FULL one (it
shrinks at each commit), and `VACUUM` on qmcp's default NONE (it rewrites the file: it needs free disk
as large as the file, and blocks writers while it runs). `vacuum=False` never rewrites (a server's
schedule: a VACUUM of a large file would hold the write lock past the runs' busy timeout); the cheap
modes still apply. The WAL is then checkpointed and truncated.
Sizes are the file plus its WAL. PostgreSQL keeps deleted rows' space until `VACUUM`: the tables'
`pg_total_relation_size` is measured before and after, and the report advises a plain `VACUUM`
(autovacuum does it in time); `VACUUM FULL` would return space to the OS but locks the tables.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import ColumnElement, delete, func, text, update
from sqlalchemy.orm import Session
from sqlmodel import col, select

from ..errors import InvalidConfigError
from ..models import (
    EvalScore,
    Execution,
    ExecutionStatus,
    ExecutionStep,
    HumanRequest,
    HumanResponse,
    StepUsage,
)
from ._engine import is_locked, sqlite_file

if TYPE_CHECKING:
    from ._database import Database

__all__ = [
    "DEFAULT_PRUNE_STATUSES",
    "PRUNABLE_STATUSES",
    "PruneFilter",
    "PruneResult",
    "prune_executions",
]

T = TypeVar("T")

PRUNABLE_STATUSES = frozenset(
    {
        ExecutionStatus.COMPLETED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
        ExecutionStatus.INTERRUPTED,
    }
)
"""The stored statuses a prune may delete: pending, running and paused executions are never deleted."""

DEFAULT_PRUNE_STATUSES = frozenset(
    {ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
)

_TABLES = ("executions", "execution_steps", "step_usage", "human_requests", "human_responses", "eval_scores")
"""The tables a prune deletes from (or, `eval_scores`, updates): what PostgreSQL's sizes are measured over."""


@dataclass(frozen=True)
class PruneFilter:
    """Which executions go: every condition given must hold.

    `older_than`: finished (else created) longer ago than this. `statuses`: among `PRUNABLE_STATUSES`.
    `topology`: only this topology's runs. `keep_last`: the `keep_last` newest executions of each
    topology among those of these statuses (and this topology) stay, however old: a floor of history.
    At least one of `older_than` and `keep_last` is needed (a prune of every finished run says
    `older_than=timedelta(0)`).
    """

    older_than: timedelta | None = None
    statuses: frozenset[ExecutionStatus] = DEFAULT_PRUNE_STATUSES
    topology: str | None = None
    keep_last: int | None = None

    def __post_init__(self) -> None:
        live = sorted(s.value for s in set(self.statuses) - PRUNABLE_STATUSES)
        if live:
            raise InvalidConfigError(
                f"prune never deletes {', '.join(live)} executions; choose statuses among: "
                f"{', '.join(sorted(s.value for s in PRUNABLE_STATUSES))}"
            )
        if not self.statuses:
            raise InvalidConfigError(
                "prune needs at least one status; choose among: "
                f"{', '.join(sorted(s.value for s in PRUNABLE_STATUSES))}"
            )
        if self.older_than is None and self.keep_last is None:
            raise InvalidConfigError(
                "prune needs an age or a number to keep: give older_than (30d) or keep_last (N); "
                "to delete every finished execution, older_than 0s"
            )
        if self.older_than is not None and self.older_than < timedelta(0):
            raise InvalidConfigError(f"older_than must not be negative (got {self.older_than})")
        if self.keep_last is not None and self.keep_last < 0:
            raise InvalidConfigError(f"keep_last must be 0 or more (got {self.keep_last})")


@dataclass
class PruneResult:
    """What a prune deleted (a dry run: would delete) and the space it gave back."""

    dry_run: bool
    database: str
    """`sqlite` or `postgresql`."""
    executions: int = 0
    steps: int = 0
    usage_rows: int = 0
    human_requests: int = 0
    human_responses: int = 0
    eval_scores_detached: int = 0
    """Scores kept with their execution id cleared."""
    kept_parents: int = 0
    """Executions the filter chose but kept: a fork of theirs stays."""
    skipped: int = 0
    """Executions planned but kept because they changed since (resumed, forked) when their batch ran."""
    batches: int = 0
    stopped: bool = False
    """The prune was asked to stop between batches: what is counted was deleted, the rest was not."""
    bytes_before: int | None = None
    bytes_after: int | None = None
    compaction: str = "none"
    """How space was given back: `VACUUM`, `incremental_vacuum`, `auto_vacuum` (a FULL file shrinks
    by itself), `busy` (other connections held the file past the busy timeout), `none` (nothing
    deleted, a dry run, or not asked), or `advised` (PostgreSQL: run VACUUM)."""
    ids: list[uuid.UUID] = field(default_factory=list, repr=False)
    """The executions deleted (a dry run: that would be)."""

    @property
    def bytes_reclaimed(self) -> int | None:
        if self.bytes_before is None or self.bytes_after is None:
            return None
        return max(0, self.bytes_before - self.bytes_after)


async def prune_executions(
    db: Database,
    prune: PruneFilter,
    *,
    dry_run: bool = False,
    vacuum: bool = True,
    batch_size: int = 200,
    stop: Callable[[], bool] | None = None,
) -> PruneResult:
    """Delete the executions `prune` chooses (see the module), in batches of `batch_size`; a dry run
    counts them and deletes nothing. `vacuum`: SQLite may rewrite the file (`VACUUM`) to give the space
    back; without it only an INCREMENTAL file gives it back (see the module). `stop()` is
    asked between batches: true ends the prune there (a server shutting down)."""
    if batch_size < 1:
        raise InvalidConfigError(f"batch_size must be at least 1 (got {batch_size})")
    postgres = db.engine.dialect.name == "postgresql"
    result = PruneResult(dry_run=dry_run, database="postgresql" if postgres else "sqlite")
    cutoff = None if prune.older_than is None else db.executions.clock.now() - prune.older_than
    plan = await _read(db, lambda session: _plan(session, prune, cutoff))
    result.kept_parents = plan.kept_parents
    path = sqlite_file(db.engine)
    if not dry_run and plan.ordered and path is not None:
        await asyncio.to_thread(_checkpoint, path)  # the WAL's pages count once, as the file's
    result.bytes_before = await _size(db, path, postgres)
    if dry_run:
        result.ids = list(plan.ordered)
        result.executions = len(plan.ordered)
        for chunk in _chunks(plan.ordered, batch_size):
            counts = await _read(db, partial(_count_children, ids=chunk))
            _add(result, counts)
        return result
    for chunk in _chunks(plan.ordered, batch_size):
        if stop is not None and stop():
            result.stopped = True
            break
        counts = await _shielded(_write(db, partial(_delete_batch, ids=chunk, prune=prune, cutoff=cutoff)))
        result.batches += 1
        result.executions += len(counts.deleted)
        result.ids.extend(counts.deleted)
        result.skipped += len(chunk) - len(counts.deleted)
        _add(result, counts)
    if postgres:
        result.compaction = "advised" if result.executions else "none"
    elif path is not None and result.executions:
        result.compaction = await asyncio.to_thread(_compact, path, vacuum)
    result.bytes_after = await _size(db, path, postgres)
    return result


# -- planning: reads only ------------------------------------------------------------------------


@dataclass
class _Plan:
    ordered: list[uuid.UUID]
    """What to delete, forks before their parents."""
    kept_parents: int


def _age() -> ColumnElement[datetime]:
    return func.coalesce(col(Execution.completed_at), col(Execution.created_at))


def _chosen(prune: PruneFilter, cutoff: datetime | None) -> Any:
    """The ids the filter chooses, before forks are considered."""
    statuses = sorted(s.value for s in prune.statuses)
    conditions: list[ColumnElement[bool]] = [col(Execution.status).in_(statuses)]
    if prune.topology is not None:
        conditions.append(col(Execution.topology_name) == prune.topology)
    if prune.keep_last is None:
        query = select(Execution.id).where(*conditions)
        return query.where(_age() < cutoff) if cutoff is not None else query
    rank = (
        func.row_number()
        .over(partition_by=col(Execution.topology_name), order_by=(_age().desc(), col(Execution.id).desc()))
        .label("rank")
    )
    ranked = select(col(Execution.id).label("id"), _age().label("age"), rank).where(*conditions).subquery()
    query = select(ranked.c.id).where(ranked.c.rank > prune.keep_last)
    return query.where(ranked.c.age < cutoff) if cutoff is not None else query


def _plan(session: Session, prune: PruneFilter, cutoff: datetime | None) -> _Plan:
    chosen = set(session.execute(_chosen(prune, cutoff)).scalars())
    parent_of: dict[uuid.UUID, uuid.UUID] = {
        row.id: row.parent_id
        for row in session.execute(
            select(Execution.id, Execution.parent_id).where(col(Execution.parent_id).is_not(None))
        )
    }
    # Every execution that stays keeps its parent, and so on up: start from the forks that stay.
    protected: set[uuid.UUID] = set()
    climbing = [parent for fork, parent in parent_of.items() if fork not in chosen]
    while climbing:
        execution = climbing.pop()
        if execution in protected:
            continue
        protected.add(execution)
        if execution in parent_of:
            climbing.append(parent_of[execution])
    doomed = chosen - protected
    depth: dict[uuid.UUID, int] = {}

    def depth_of(execution: uuid.UUID) -> int:
        """How many forks down from an execution that is none (its ancestors' depths remembered)."""
        chain: list[uuid.UUID] = []
        while execution not in depth and execution in parent_of and execution not in chain:
            chain.append(execution)
            execution = parent_of[execution]
        level = depth.get(execution, 0)
        for link in reversed(chain):
            level += 1
            depth[link] = level
        return level

    ordered = sorted(doomed, key=lambda e: (-depth_of(e), str(e)))
    return _Plan(ordered, len(chosen & protected))


def _count_children(session: Session, ids: Sequence[uuid.UUID]) -> _Counts:
    def count(model: Any, condition: Any) -> int:
        return int(session.execute(select(func.count()).select_from(model).where(condition)).scalar_one())

    requests = select(HumanRequest.id).where(col(HumanRequest.execution_id).in_(ids))
    return _Counts(
        deleted=list(ids),
        steps=count(ExecutionStep, col(ExecutionStep.execution_id).in_(ids)),
        usage_rows=count(StepUsage, col(StepUsage.execution_id).in_(ids)),
        human_requests=count(HumanRequest, col(HumanRequest.execution_id).in_(ids)),
        human_responses=count(HumanResponse, col(HumanResponse.request_id).in_(requests)),
        eval_scores=count(EvalScore, col(EvalScore.execution_id).in_(ids)),
    )


# -- one batch: one transaction ------------------------------------------------------------------


@dataclass
class _Counts:
    deleted: list[uuid.UUID]
    steps: int = 0
    usage_rows: int = 0
    human_requests: int = 0
    human_responses: int = 0
    eval_scores: int = 0


def _add(result: PruneResult, counts: _Counts) -> None:
    result.steps += counts.steps
    result.usage_rows += counts.usage_rows
    result.human_requests += counts.human_requests
    result.human_responses += counts.human_responses
    result.eval_scores_detached += counts.eval_scores


def _delete_batch(
    session: Session, ids: Sequence[uuid.UUID], prune: PruneFilter, cutoff: datetime | None
) -> _Counts:
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    if not postgres:  # the write lock now, so what is read next cannot change before the commit
        connection.execute(text("DELETE FROM executions WHERE 0"))
    still = select(Execution.id).where(
        col(Execution.id).in_(ids), col(Execution.status).in_(sorted(s.value for s in prune.statuses))
    )
    if cutoff is not None:
        still = still.where(_age() < cutoff)
    if postgres:
        still = still.with_for_update()  # a claim (resume) or a new fork of these rows waits for the commit
    going = set(connection.execute(still).scalars())
    while going:  # an execution with a child that stays (a fork made since the plan, a child resumed) stays
        held = set(
            connection.execute(
                select(Execution.parent_id).where(
                    col(Execution.parent_id).in_(going), col(Execution.id).not_in(going)
                )
            ).scalars()
        )
        if not held & going:
            break
        going -= held
    if not going:
        return _Counts(deleted=[])
    doomed = sorted(going, key=str)

    def rows(statement: Any) -> int:
        return int(connection.execute(statement).rowcount)

    requests = select(HumanRequest.id).where(col(HumanRequest.execution_id).in_(doomed))
    counts = _Counts(deleted=doomed)
    counts.human_responses = rows(delete(HumanResponse).where(col(HumanResponse.request_id).in_(requests)))
    counts.human_requests = rows(delete(HumanRequest).where(col(HumanRequest.execution_id).in_(doomed)))
    counts.steps = rows(delete(ExecutionStep).where(col(ExecutionStep.execution_id).in_(doomed)))
    counts.usage_rows = rows(delete(StepUsage).where(col(StepUsage.execution_id).in_(doomed)))
    counts.eval_scores = rows(
        update(EvalScore).where(col(EvalScore.execution_id).in_(doomed)).values(execution_id=None)
    )
    rows(delete(Execution).where(col(Execution.id).in_(doomed)))
    return counts


# -- sessions ------------------------------------------------------------------------------------


async def _read(db: Database, work: Callable[[Session], T]) -> T:
    async with db.sessions() as session:
        return await session.run_sync(work)


async def _write(db: Database, work: Callable[[Session], T]) -> T:
    """One transaction on the engine (its own thread for SQLite): a batch never blocks the event loop."""
    async with db.sessions() as session, session.begin():
        return await session.run_sync(work)


async def _shielded(work: Awaitable[T]) -> T:
    """Finish a batch even when the caller is cancelled (Ctrl-C, a server stopping): a transaction cut
    between its statements and its commit would hold the lock in a pooled connection."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.gather(task, return_exceptions=True)
        raise


def _chunks(items: Sequence[uuid.UUID], size: int) -> Iterable[list[uuid.UUID]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# -- space ---------------------------------------------------------------------------------------


async def _size(db: Database, path: str | None, postgres: bool) -> int | None:
    if postgres:
        names = ", ".join(f"'{name}'" for name in _TABLES)
        query = text(
            f"SELECT coalesce(sum(pg_total_relation_size(to_regclass(name))), 0) FROM unnest(ARRAY[{names}]) AS name"
        )
        return await _read(db, lambda session: int(session.execute(query).scalar_one()))
    return None if path is None else _file_size(path)


def _file_size(path: str) -> int:
    """The SQLite file and its WAL (the shared-memory index is not data)."""
    return sum(os.stat(f).st_size for f in (path, f"{path}-wal") if os.path.exists(f))


def _sqlite(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    connection.execute("PRAGMA busy_timeout=30000")
    return connection


def _checkpoint(path: str) -> None:
    """Write the WAL into the file and empty it, if no reader holds it (then it is left as it is)."""
    connection = _sqlite(path)
    try:
        _truncate_wal(connection)
    finally:
        connection.close()


def _truncate_wal(connection: sqlite3.Connection) -> None:
    """`PRAGMA wal_checkpoint(TRUNCATE)`. Another connection's checkpoint under way (a step writer's
    `Checkpointer`, another process's commit) makes SQLite answer busy at once, without the busy
    timeout: asked again until it is over (readers still holding the WAL are waited for once, for
    the busy timeout, as before)."""
    deadline = time.monotonic() + 30
    while connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] and time.monotonic() < deadline:
        time.sleep(0.005)  # a thread of `asyncio.to_thread`, not the event loop


def _compact(path: str, rewrite: bool) -> str:
    """Give the freed pages back to the file system as the file's `auto_vacuum` mode allows, a rewrite
    (`VACUUM`) only if `rewrite` (see the module); returns how, `none`, or `busy` when other connections
    kept it from doing so for the busy timeout."""
    connection = _sqlite(path)
    try:
        mode = connection.execute("PRAGMA auto_vacuum").fetchone()[0]
        if mode == 1:
            how = "auto_vacuum"
        elif mode == 2:
            # Each step of the pragma frees one page, and `execute` steps a statement without columns
            # once: `executescript` (sqlite3_exec) steps it to the end.
            connection.executescript("PRAGMA incremental_vacuum;")
            how = "incremental_vacuum"
        elif rewrite:
            connection.execute("VACUUM")
            how = "VACUUM"
        else:
            how = "none"
        _truncate_wal(connection)
        return how
    except sqlite3.OperationalError as error:
        if not is_locked(error):
            raise
        return "busy"
    finally:
        connection.close()
