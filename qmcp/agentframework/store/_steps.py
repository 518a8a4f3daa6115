"""The step store: the durable record of every agent call, keyed by (execution, step key).

This is the hot path of every run, so it writes with SQLAlchemy Core rather than the ORM,
loads an execution's finished steps once when a run starts or resumes, and groups the writes
of steps that finish together into one transaction. Each `save` still returns only after its
row is committed, so a step is durable before the topology moves on.
"""

from __future__ import annotations

import asyncio
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ..models import ExecutionStep, StepStatus
from ..models._agent import utcnow

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
    async def save(self, record: StepRecord) -> None:
        """Insert or replace the record of (execution, key); durable when this returns."""


class MemoryStepStore(StepStore):
    def __init__(self) -> None:
        self.records: dict[tuple[uuid.UUID, str], StepRecord] = {}

    async def completed_steps(self, execution_id: uuid.UUID) -> dict[str, StepRecord]:
        return {
            key: record
            for (eid, key), record in self.records.items()
            if eid == execution_id and record.status == StepStatus.COMPLETED
        }

    async def save(self, record: StepRecord) -> None:
        self.records[(record.execution_id, record.key)] = record


_COLUMNS = [c.name for c in ExecutionStep.__table__.columns if c.name != "id"]  # type: ignore[attr-defined]


class SqlStepStore(StepStore):
    """Step records in the `execution_steps` table, with group commit."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._table = ExecutionStep.__table__  # type: ignore[attr-defined]
        insert = sqlite_insert if engine.dialect.name == "sqlite" else pg_insert
        statement = insert(self._table)
        self._upsert = statement.on_conflict_do_update(
            index_elements=["execution_id", "key"],
            set_={name: statement.excluded[name] for name in _COLUMNS if name not in ("execution_id", "key")},
        )
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def completed_steps(self, execution_id: uuid.UUID) -> dict[str, StepRecord]:
        query = select(*[self._table.c[name] for name in _COLUMNS]).where(
            self._table.c.execution_id == execution_id, self._table.c.status == StepStatus.COMPLETED
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return {row["key"]: StepRecord(**dict(row)) for row in rows}

    async def save(self, record: StepRecord) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((asdict(record), future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await asyncio.shield(future)

    async def _drain(self) -> None:
        """Commit everything queued, one transaction per batch, until the queue is empty."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(self._upsert, [row for row, _ in batch])
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
