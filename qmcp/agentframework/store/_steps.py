"""The step store: the durable record of every agent call, keyed by (execution, step key).

This is the hot path of every run. It loads an execution's finished steps once when a run
starts or resumes. A step run alone is written at once; steps run concurrently ask for their
writes to be grouped (`batch=True`), and those finishing together share one transaction. Each
`save` returns only after its row is committed, so a step is durable before the topology moves
on. On SQLite a batch is first written inline on a `sqlite3` connection that
never waits for a lock (tens of microseconds, against about 2.5 ms through the async engine);
only when another writer holds the lock does it go to a second connection in a worker thread
that waits up to the busy timeout, so the event loop never blocks on a lock. The statement and
the value conversions are compiled by SQLAlchemy, so rows are exactly what the ORM reads back.
PostgreSQL uses SQLAlchemy Core on asyncpg.

Writes are **fenced**: a save carries the owner token of the execution's lease, and the same
transaction that writes the rows first reads the owners of their executions (under SQLite's write
lock; with a share lock on PostgreSQL, which a claim's update waits for). Rows of an execution that
another process has claimed are not written, and their `save` raises `LeaseLostError`.

What a step paid is a fact the fence does not undo: each step row comes with a `step_usage` row in
the same transaction, and a row the fence refuses still has its usage row written, marked
`displaced`; the execution's totals are then counted again from its usage rows (`_usage.py`), as
the new owner may have finished already. The usage rows ride in the same batch and transaction as
the step rows: one more insert per batch, no extra commit.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import operator
import sqlite3
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Uuid, bindparam, insert, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.sql.sqltypes import UTCDateTime

from ..errors import LeaseLostError
from ..flowcall import USAGE_COLUMNS, connect_writer, utc_text
from ..models import Execution, ExecutionStep, StepStatus, StepUsage, Usage, table_of, utcnow
from ._engine import CHECKPOINT_EVERY, JSON_CODEC, Checkpointer, is_locked
from ._usage import lock_execution, summed_totals

__all__ = ["MemoryStepStore", "SqlStepStore", "StepRecord", "StepStore"]


@dataclass
class StepRecord:
    """One agent call as stored: what was asked, what came back, and what it cost."""

    execution_id: uuid.UUID
    key: str
    slot: str
    agent_name: str
    model: str
    status: StepStatus = StepStatus.COMPLETED
    request: dict[str, Any] = field(default_factory=dict)
    response: str | None = None
    output: dict[str, Any] | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 1
    error: str | None = None
    started_at: datetime = field(default_factory=utcnow)
    completed_at: datetime | None = None
    inherited: bool = False
    """Copied from the parent of a fork: replayed, never paid by this execution."""

    @property
    def usage(self) -> Usage:
        """What the step used: one request per attempt, with the row's tokens and cost."""
        return Usage(self.attempts, self.input_tokens, self.output_tokens, self.cost_usd)


class StepStore(ABC):
    """Where step records live. `SqlStepStore` for real runs, `MemoryStepStore` for tests and dry runs."""

    @abstractmethod
    async def completed_steps(self, execution_id: uuid.UUID) -> dict[str, StepRecord]:
        """Every completed step of an execution, by key."""

    @abstractmethod
    async def save(self, record: StepRecord, *, batch: bool = False, fence: str | None = None) -> None:
        """Insert or replace the record of (execution, key); durable when this returns.

        `batch`: other steps may be finishing now (a concurrent scheduler); commit them together.
        `fence`: the owner token of the execution's lease; when another owner holds the execution,
        nothing is written and `LeaseLostError` is raised.
        """


class MemoryStepStore(StepStore):
    """Steps of executions that live in no database (one-off calls, dry runs): nothing to fence."""

    def __init__(self) -> None:
        self.records: dict[tuple[uuid.UUID, str], StepRecord] = {}

    async def completed_steps(self, execution_id: uuid.UUID) -> dict[str, StepRecord]:
        return {
            key: record
            for (eid, key), record in self.records.items()
            if eid == execution_id and record.status == StepStatus.COMPLETED
        }

    async def save(self, record: StepRecord, *, batch: bool = False, fence: str | None = None) -> None:
        self.records[(record.execution_id, record.key)] = record


_COLUMNS = [c.name for c in table_of(ExecutionStep).columns if c.name != "id"]
_row = operator.attrgetter(*_COLUMNS)
"""A record's row as a tuple in `_COLUMNS` order, taken when it is saved (the record may change)."""


@functools.cache
def _upsert(dialect_name: str) -> Any:
    """Insert a step row, or replace the row of the same (execution, key); built once per dialect."""
    # the dialect's module, imported when its engine is in use: PostgreSQL's costs 30 ms to load
    insert = importlib.import_module(f"sqlalchemy.dialects.{dialect_name}").insert
    statement = insert(table_of(ExecutionStep))
    return statement.on_conflict_do_update(
        index_elements=["execution_id", "key"],
        set_={name: statement.excluded[name] for name in _COLUMNS if name not in ("execution_id", "key")},
    )


@functools.cache
def _guarded_upsert(dialect_name: str) -> Any:
    """`_upsert` written only while the owner token (bound as `fence`) holds the execution (bound
    as `fence_execution`), with the owner's row shared-locked (`FOR SHARE`) like the fence's read:
    a run's single step costs one statement less on PostgreSQL (`_owner_guarded` for `sqlite3`)."""
    insert = importlib.import_module(f"sqlalchemy.dialects.{dialect_name}").insert
    steps, executions = table_of(ExecutionStep), table_of(Execution)
    owned = (
        select(*[bindparam(name, type_=steps.c[name].type) for name in _COLUMNS])
        .where(
            executions.c.id == bindparam("fence_execution", type_=Uuid()),
            executions.c.owner_token == bindparam("fence"),
        )
        .with_for_update(read=True)
    )
    statement = insert(steps).from_select(_COLUMNS, owned)
    return statement.on_conflict_do_update(
        index_elements=["execution_id", "key"],
        set_={name: statement.excluded[name] for name in _COLUMNS if name not in ("execution_id", "key")},
    )


_Item = tuple[tuple[Any, ...], str | None]

_OWNER_QUERY = "SELECT owner_token FROM executions INDEXED BY ix_executions_id_owner_token WHERE id = ?"
"""The owner from the covering index (migration 0003): SQLite's planner would take the primary key's
index and then read the row, whose team snapshots grow with the team (0.5 ms a step at 5,000 slots)."""
"""A row to write and the owner token that fences it (None: unfenced)."""


_USAGE_COLUMNS = list(USAGE_COLUMNS)
"""A usage row as a tuple, in this order: what `_fenced` makes and `_usage_params` converts."""


@functools.cache
def _count_usage() -> Any:
    """Set an execution's totals (bound as `execution`) to the sum of its usage rows."""
    executions = table_of(Execution)
    return (
        update(executions)
        .where(executions.c.id == bindparam("execution", type_=Uuid()))
        .values(**summed_totals())
    )


_Compiled = tuple[str, list[int], list[tuple[int, Any]]]
"""A statement as `sqlite3` runs it: SQL text, where each parameter is in a row, and the converters
of the parameters that need one (JSON, enums, datetimes, UUIDs, booleans)."""


def _utc_text(value: datetime | None) -> str | None:
    """A stored time as SQLAlchemy's bind processor (`UTCDateTime`: aware, in UTC) and `sqlite3`'s
    default adapter (`isoformat(" ")`) write it together, in one call: two Python calls less for each
    of a step row's two times and its usage row's one."""
    return None if value is None else utc_text(value)


def _converter(column: Any, dialect: Any) -> Any:
    return _utc_text if isinstance(column.type, UTCDateTime) else column.type.bind_processor(dialect)


def _compile_for_sqlite(statement: Any, table: Any, columns: list[str]) -> _Compiled:
    dialect = sqlite.dialect(**JSON_CODEC)
    compiled = statement.compile(dialect=dialect, column_keys=columns)
    names = list(compiled.positiontup)
    converters = [(position, _converter(table.columns[name], dialect)) for position, name in enumerate(names)]
    return (
        str(compiled),
        [columns.index(name) for name in names],
        [(position, convert) for position, convert in converters if convert is not None],
    )


@functools.cache
def _sqlite_statements() -> tuple[_Compiled, _Compiled, str]:
    """The step upsert, the usage insert and the count of an execution's usage, for `sqlite3`."""
    usage = table_of(StepUsage)
    count = _count_usage().compile(dialect=sqlite.dialect())
    assert list(count.positiontup) == ["execution"]
    return (
        _compile_for_sqlite(_upsert("sqlite"), table_of(ExecutionStep), _COLUMNS),
        _compile_for_sqlite(insert(usage), usage, _USAGE_COLUMNS),
        str(count),
    )


def _owner_guarded(upsert: str) -> str:
    """The step upsert written only while the owner token holds: its VALUES become a SELECT from the
    owner's covering index (`_OWNER_QUERY`), bound to the execution's id and the token after the row.

    One statement instead of a read and a write: a step of a run on its own costs one round through
    SQLite less, and the fence is checked under the same write lock as before."""
    head, rest = upsert.split(" VALUES (", 1)
    values, conflict = rest.split(") ON CONFLICT ", 1)
    owner = "FROM executions INDEXED BY ix_executions_id_owner_token WHERE id = ? AND owner_token = ?"
    return f"{head} SELECT {values} {owner} ON CONFLICT {conflict}"


class SqlStepStore(StepStore):
    """Step records in the `execution_steps` table, with group commit."""

    def __init__(self, engine: AsyncEngine, checkpointer: Checkpointer | None = None) -> None:
        self._engine = engine
        self._table = table_of(ExecutionStep)
        self._upsert = _upsert(engine.dialect.name)
        self._guarded = _guarded_upsert(engine.dialect.name)
        self._usage = insert(table_of(StepUsage))
        self._count = _count_usage()
        path = engine.url.database
        self._sqlite = (
            _SqliteWriter(path, checkpointer)
            if engine.dialect.name == "sqlite" and path not in (None, "", ":memory:")
            else None
        )
        self._pending: list[tuple[_Item, asyncio.Future[None]]] = []
        self._writing: set[asyncio.Future[Any]] = set()
        self._writer: asyncio.Task[None] | None = None
        self._executions = table_of(Execution).c

    async def completed_steps(self, execution_id: uuid.UUID) -> dict[str, StepRecord]:
        query = select(*[self._table.c[name] for name in _COLUMNS]).where(
            self._table.c.execution_id == execution_id, self._table.c.status == StepStatus.COMPLETED
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return {row["key"]: StepRecord(**dict(row)) for row in rows}

    async def save(self, record: StepRecord, *, batch: bool = False, fence: str | None = None) -> None:
        item = (_row(record), fence)
        if not batch:
            if self._sqlite is not None:  # inline, or in its own thread: a cancel cannot cut it in half
                lost = await self._write([item])
            else:  # a cancelled step is still recorded: its call was paid for
                lost = await self._shielded(self._write([item]))
            if lost:
                raise LeaseLostError.taken_over(record.execution_id)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        # A cancelled caller cancels only its future; the writer still commits the row.
        await future

    async def _shielded(self, write: Coroutine[Any, Any, set[Any]]) -> set[Any]:
        task = asyncio.ensure_future(write)
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)
        return await asyncio.shield(task)

    async def close(self) -> None:
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)
        if self._writer is not None:
            await asyncio.shield(self._writer)
        if self._sqlite is not None:
            await self._sqlite.close()

    async def _drain(self) -> None:
        """Commit everything queued, one transaction per batch, until the queue is empty."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                lost = await self._write([item for item, _ in batch])
            except BaseException as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(
                            error if isinstance(error, Exception) else RuntimeError(str(error))
                        )
                if not isinstance(error, Exception):
                    raise
                continue
            for (row, fence), future in batch:
                if not future.done():
                    execution_id = row[_EXECUTION_ID]
                    if (execution_id, fence) in lost:  # another owner's rows of it may have been written
                        future.set_exception(LeaseLostError.taken_over(execution_id))
                    else:
                        future.set_result(None)

    async def _write(self, items: list[_Item]) -> set[Any]:
        """Commit the rows of `items` whose fence holds, in one transaction; the (execution, fence)
        pairs whose did not."""
        if self._sqlite is not None:
            return await self._sqlite.write(items)
        row, fence = items[0]
        if len(items) == 1 and fence is not None and await self._write_one(row, fence):
            return set()
        async with self._engine.begin() as conn:
            fenced = {row[_EXECUTION_ID] for row, fence in items if fence is not None}
            owners: dict[Any, str | None] = {}
            if fenced:
                # FOR SHARE: a claim updating one of these rows waits until these steps are committed
                query = (
                    select(self._executions.id, self._executions.owner_token)
                    .where(self._executions.id.in_(fenced))
                    .with_for_update(read=True)
                )
                owners = {row[0]: row[1] for row in await conn.execute(query)}
            rows, usage, lost = _fenced(items, owners)
            if rows:
                await conn.execute(self._upsert, [dict(zip(_COLUMNS, row, strict=True)) for row in rows])
            if usage:
                await conn.execute(
                    self._usage, [dict(zip(_USAGE_COLUMNS, paid, strict=True)) for paid in usage]
                )
        for execution_id in _displaced(usage):  # the totals, once the displaced rows are committed
            async with self._engine.begin() as conn:
                await conn.execute(lock_execution(execution_id))
                await conn.execute(self._count, {"execution": execution_id})
        return lost

    async def _write_one(self, row: tuple[Any, ...], fence: str) -> bool:
        """The step of a run on its own: its row if `fence` owns its execution (`_guarded_upsert`),
        then its usage row, in one transaction. False when the fence did not hold, with nothing
        written: `_write` then decides, reading the owner."""
        params = dict(zip(_COLUMNS, row, strict=True))
        async with self._engine.begin() as conn:
            guarded = await conn.execute(
                self._guarded, {**params, "fence_execution": row[_EXECUTION_ID], "fence": fence}
            )
            if guarded.rowcount != 1:
                return False
            paid = _PAID(row)
            if any(paid):
                usage = (*_FROM_STEP(row), fence, False, *paid, utcnow())
                await conn.execute(self._usage, dict(zip(_USAGE_COLUMNS, usage, strict=True)))
        return True


_EXECUTION_ID = _COLUMNS.index("execution_id")
_FROM_STEP = operator.itemgetter(
    *[_COLUMNS.index(name) for name in ("execution_id", "key", "agent_name", "model")]
)
_PAID = operator.itemgetter(
    *[_COLUMNS.index(name) for name in ("attempts", "input_tokens", "output_tokens", "cost_usd")]
)
_DISPLACED = _USAGE_COLUMNS.index("displaced")
_COMPLETED_AT = _COLUMNS.index("completed_at")


def _fenced(
    items: list[_Item], owners: dict[Any, str | None]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], set[Any]]:
    """The step rows whose fence holds against `owners` (execution id → owner token), the usage rows
    of every paid step (those of the refused rows `displaced`), and the (execution, fence) pairs lost:
    one batch may hold rows of the same execution from its stalled owner and from its new one.

    `owners` holds the fenced executions that exist: a usage row needs its execution."""
    rows, usage, lost = [], [], set()
    now = utcnow()
    for row, fence in items:
        execution_id = row[_EXECUTION_ID]
        kept = fence is None or owners.get(execution_id) == fence
        if kept:
            rows.append(row)
        else:
            lost.add((execution_id, fence))
        paid = _PAID(row)
        if any(paid) and (kept or execution_id in owners):
            usage.append((*_FROM_STEP(row), fence, not kept, *paid, now))
    return rows, usage, lost


def _displaced(usage: list[tuple[Any, ...]]) -> set[Any]:
    """The executions with displaced usage rows among `usage`: their totals must be counted again."""
    return {paid[0] for paid in usage if paid[_DISPLACED]}


def _step_values(statement: _Compiled) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """The step upsert's parameters of a row, made by one function: a batch converts each of its rows
    on the event loop (10,000 in a wide ensemble), and calling each column's converter in turn was a
    Python call per converted value (6.1 -> 3.9 µs a row). The usual values are converted in line: a
    dict to JSON, a `StepStatus` to its stored name, a float as is, a UTC time to text, a bool to 0
    or 1, a UUID to its hex digits; anything else (None, a subclass, another zone) goes to the
    column's own converter, so each value is written as that converter writes it."""
    _, order, converters = statement
    assert order == list(range(len(_COLUMNS)))  # the upsert binds the row's columns in their order
    convert = {_COLUMNS[position]: function for position, function in converters}
    assert set(convert) == {
        *("execution_id", "status", "request", "output", "cost_usd", "latency_ms"),
        *("started_at", "completed_at", "inherited"),
    }
    uuid_text, status, request, output = (convert[n] for n in ("execution_id", "status", "request", "output"))
    to_float, inherited, json_text = convert["cost_usd"], convert["inherited"], JSON_CODEC["json_serializer"]
    stored_status = {member: status(member) for member in StepStatus}

    def values(row: tuple[Any, ...]) -> tuple[Any, ...]:
        (eid, key, slot, agent, model, state, asked, response, out, itok, otok, cost, latency, attempts,
         error, started, completed, copied) = row  # fmt: skip
        return (
            eid.hex if type(eid) is uuid.UUID else uuid_text(eid),
            key, slot, agent, model,
            stored_status.get(state) or status(state),
            json_text(asked) if type(asked) is dict else request(asked),
            response,
            json_text(out) if type(out) is dict else output(out),
            itok, otok,
            cost if type(cost) is float else to_float(cost),
            latency if type(latency) is float else to_float(latency),
            attempts, error,
            started.isoformat(" ") if type(started) is datetime and started.tzinfo is UTC else _utc_text(started),
            completed.isoformat(" ") if type(completed) is datetime and completed.tzinfo is UTC else _utc_text(completed),
            (1 if copied else 0) if type(copied) is bool else inherited(copied),
        )  # fmt: skip

    return values


class _SqliteWriter:
    """Writes step rows with `sqlite3`: inline when the database is free, else from a thread."""

    def __init__(self, path: str, checkpointer: Checkpointer | None) -> None:
        self._upsert, usage, self._count = _sqlite_statements()
        self._step_values = _step_values(self._upsert)
        self._guarded = _owner_guarded(self._upsert[0])
        self._usage = usage[0]
        assert usage[1] == list(range(len(_USAGE_COLUMNS)))  # a plain insert
        self._when = _converter(table_of(StepUsage).c.recorded_at, sqlite.dialect())
        uuid_text = table_of(ExecutionStep).c.execution_id.type.bind_processor(sqlite.dialect())
        assert uuid_text is not None  # SQLite keeps a UUID as its 32 hex digits
        self._uuid = uuid_text
        self._path = path
        self._checkpointer = checkpointer
        self._commits = 0  # inline, since the last checkpoint asked of `_checkpointer`
        self._inline: sqlite3.Connection | None = None
        self._waiting: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qmcp-steps")

    async def write(self, items: list[_Item]) -> set[Any]:
        try:
            if self._inline is None:
                kept = self._checkpointer.take_writer() if self._checkpointer is not None else None
                self._inline = kept if kept is not None else connect_writer(self._path, 0)
            row, fence = items[0]
            if len(items) == 1 and fence is not None and self._commit_one(self._inline, row, fence):
                lost: set[Any] = set()
            else:
                lost = self._commit(self._inline, items)
        except sqlite3.OperationalError as error:
            if not is_locked(error):
                raise
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._write_waiting, items
            )
        self._commits += 1
        if self._commits >= CHECKPOINT_EVERY and self._checkpointer is not None:
            self._commits = 0
            self._checkpointer.request()
        return lost

    def _commit(self, conn: sqlite3.Connection, items: list[_Item]) -> set[Any]:
        """One transaction: take the write lock, read the fenced executions' owners, write the rows."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            owners: dict[Any, str | None] = {}
            fenced = {row[_EXECUTION_ID] for row, fence in items if fence is not None}
            for execution_id in fenced:
                found = conn.execute(_OWNER_QUERY, (self._uuid(execution_id),)).fetchone()
                if found:
                    owners[execution_id] = found[0]
            rows, usage, lost = _fenced(items, owners)
            if rows:
                conn.executemany(self._upsert[0], map(self._step_values, rows))
            if usage:
                conn.executemany(self._usage, self._usage_params(usage))
            for execution_id in _displaced(usage):  # under the write lock: nothing can come between
                conn.execute(self._count, (self._uuid(execution_id),))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return lost

    def _commit_one(self, conn: sqlite3.Connection, row: tuple[Any, ...], fence: str) -> bool:
        """The step of a run on its own: one transaction writes the row if `fence` owns its execution
        (`_owner_guarded`), then its usage row. False when the fence did not hold, with nothing written:
        `_commit` then decides, reading the owner (a displaced usage row, or a vanished execution)."""
        params = self._step_values(row)
        execution_id = params[0]  # as stored: the UUID's hex digits
        paid = _PAID(row)
        try:
            conn.execute("BEGIN IMMEDIATE")
            if conn.execute(self._guarded, [*params, execution_id, fence]).rowcount != 1:
                conn.rollback()
                return False
            if any(paid):
                # recorded when the step completed, microseconds ago: its time as converted for the row
                when = params[_COMPLETED_AT] or self._when(utcnow())
                conn.execute(self._usage, (execution_id, *_FROM_STEP(row)[1:], fence, 0, *paid, when))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return True

    def _usage_params(self, usage: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The usage rows' parameters, converted by hand: every row of a batch has the same time, and
        only the id, the flag and the time need converting (a third of `_params`' cost per row)."""
        when = self._when(usage[0][-1])
        return [(self._uuid(paid[0]), *paid[1:5], int(paid[5]), *paid[6:-1], when) for paid in usage]

    def _write_waiting(self, items: list[_Item]) -> set[Any]:
        if self._waiting is None:
            self._waiting = connect_writer(self._path, 30.0)
        return self._commit(self._waiting, items)

    async def close(self) -> None:
        if self._commits and self._checkpointer is not None:  # the run's last steps, while nothing writes
            self._checkpointer.request()
        if self._inline is not None:  # kept for the file's next run, with its prepared statements
            if self._checkpointer is not None:
                self._checkpointer.keep_writer(self._inline)
            else:
                self._inline.close()
            self._inline = None
        if self._waiting is not None:  # only made when the database was locked; closed in its thread
            await asyncio.get_running_loop().run_in_executor(self._executor, self._waiting.close)
            self._waiting = None
        self._executor.shutdown(wait=False)
