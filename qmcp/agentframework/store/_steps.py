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
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import operator
import sqlite3
import uuid
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from ..models import ExecutionStep, StepStatus
from ..models._agent import utcnow
from ._engine import JSON_CODEC, is_locked

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


class StepStore(ABC):
    """Where step records live. `SqlStepStore` for real runs, `MemoryStepStore` for tests and dry runs."""

    @abstractmethod
    async def completed_steps(self, execution_id: uuid.UUID) -> dict[str, StepRecord]:
        """Every completed step of an execution, by key."""

    @abstractmethod
    async def save(self, record: StepRecord, *, batch: bool = False) -> None:
        """Insert or replace the record of (execution, key); durable when this returns.

        `batch`: other steps may be finishing now (a concurrent scheduler); commit them together.
        """


class MemoryStepStore(StepStore):
    def __init__(self) -> None:
        self.records: dict[tuple[uuid.UUID, str], StepRecord] = {}

    async def completed_steps(self, execution_id: uuid.UUID) -> dict[str, StepRecord]:
        return {
            key: record
            for (eid, key), record in self.records.items()
            if eid == execution_id and record.status == StepStatus.COMPLETED
        }

    async def save(self, record: StepRecord, *, batch: bool = False) -> None:
        self.records[(record.execution_id, record.key)] = record


_COLUMNS = [c.name for c in ExecutionStep.__table__.columns if c.name != "id"]  # type: ignore[attr-defined]
_row = operator.attrgetter(*_COLUMNS)
"""A record's row as a tuple in `_COLUMNS` order, taken when it is saved (the record may change)."""


@functools.cache
def _upsert(dialect_name: str) -> Any:
    """Insert a step row, or replace the row of the same (execution, key); built once per dialect."""
    # the dialect's module, imported when its engine is in use: PostgreSQL's costs 30 ms to load
    insert = importlib.import_module(f"sqlalchemy.dialects.{dialect_name}").insert
    statement = insert(ExecutionStep.__table__)  # type: ignore[attr-defined]
    return statement.on_conflict_do_update(
        index_elements=["execution_id", "key"],
        set_={name: statement.excluded[name] for name in _COLUMNS if name not in ("execution_id", "key")},
    )


@functools.cache
def _sqlite_upsert() -> tuple[str, list[int], list[tuple[int, Any]]]:
    """The SQLite upsert as `sqlite3` runs it: SQL text, where each parameter is in a row, and
    the converters of the parameters that need one (JSON, enums, datetimes)."""
    dialect = sqlite.dialect(**JSON_CODEC)
    compiled = _upsert("sqlite").compile(dialect=dialect, column_keys=_COLUMNS)
    names = list(compiled.positiontup)
    columns = ExecutionStep.__table__.columns  # type: ignore[attr-defined]
    converters = [
        (position, columns[name].type.bind_processor(dialect)) for position, name in enumerate(names)
    ]
    return (
        str(compiled),
        [_COLUMNS.index(name) for name in names],
        [(position, convert) for position, convert in converters if convert is not None],
    )


class SqlStepStore(StepStore):
    """Step records in the `execution_steps` table, with group commit."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._table = ExecutionStep.__table__  # type: ignore[attr-defined]
        self._upsert = _upsert(engine.dialect.name)
        path = engine.url.database
        self._sqlite = (
            _SqliteWriter(path)
            if engine.dialect.name == "sqlite" and path not in (None, "", ":memory:")
            else None
        )
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def completed_steps(self, execution_id: uuid.UUID) -> dict[str, StepRecord]:
        query = select(*[self._table.c[name] for name in _COLUMNS]).where(
            self._table.c.execution_id == execution_id, self._table.c.status == StepStatus.COMPLETED
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return {row["key"]: StepRecord(**dict(row)) for row in rows}

    async def save(self, record: StepRecord, *, batch: bool = False) -> None:
        row = _row(record)
        if not batch:
            await self._write([row])
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        # A cancelled caller cancels only its future; the writer still commits the row.
        await future

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.shield(self._writer)
        if self._sqlite is not None:
            await self._sqlite.close()

    async def _drain(self) -> None:
        """Commit everything queued, one transaction per batch, until the queue is empty."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._write([row for row, _ in batch])
            except BaseException as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(
                            error if isinstance(error, Exception) else RuntimeError(str(error))
                        )
                if not isinstance(error, Exception):
                    raise
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def _write(self, rows: list[tuple[Any, ...]]) -> None:
        """Commit `rows` in one transaction."""
        if self._sqlite is not None:
            await self._sqlite.write(rows)
        else:
            async with self._engine.begin() as conn:
                await conn.execute(self._upsert, [dict(zip(_COLUMNS, row, strict=True)) for row in rows])


class _SqliteWriter:
    """Writes step rows with `sqlite3`: inline when the database is free, else from a thread."""

    def __init__(self, path: str) -> None:
        self._sql, self._order, self._convert = _sqlite_upsert()
        self._path = path
        self._inline: sqlite3.Connection | None = None
        self._waiting: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qmcp-steps")

    async def write(self, rows: list[tuple[Any, ...]]) -> None:
        params = []
        for row in rows:
            values = [row[index] for index in self._order]
            for position, convert in self._convert:
                values[position] = convert(values[position])
            params.append(values)
        try:
            if self._inline is None:
                self._inline = self._connect(busy_timeout_ms=0)
            self._commit(self._inline, params)
        except sqlite3.OperationalError as error:
            if not is_locked(error):
                raise
            await asyncio.get_running_loop().run_in_executor(self._executor, self._write_waiting, params)

    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        # The engine has already put the file in WAL mode (persistent); switching modes would need a lock.
        conn = sqlite3.connect(self._path, timeout=busy_timeout_ms / 1000, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _commit(self, conn: sqlite3.Connection, params: list[list[Any]]) -> None:
        try:
            conn.executemany(self._sql, params)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def _write_waiting(self, params: list[list[Any]]) -> None:
        if self._waiting is None:
            self._waiting = self._connect(busy_timeout_ms=30_000)
        self._commit(self._waiting, params)

    async def close(self) -> None:
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        if self._waiting is not None:  # only made when the database was locked; closed in its thread
            await asyncio.get_running_loop().run_in_executor(self._executor, self._waiting.close)
            self._waiting = None
        self._executor.shutdown(wait=False)
