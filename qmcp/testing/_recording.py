"""A recorded run as replay tests and fixtures see it: its team, input, output and steps.

It comes from an execution in the database (`Recording.from_database`) or from a fixture file
(`Recording.from_file`), the JSON document `export_fixture` writes (`qmcp executions export-fixture
ID > run.json`). The document is versioned (`FIXTURE_FORMAT`) and holds everything a replay or the
`recorded:` model needs, so neither needs the database it was recorded in.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..agentframework import llm
from ..agentframework.errors import InvalidConfigError
from ..agentframework.models import Execution, ExecutionStep, StepStatus
from ..agentframework.store import Database, StepRecord, storage_errors

__all__ = ["Recording", "export_fixture", "export_fixture_async", "save_fixture", "write_fixture"]


@dataclass(frozen=True)
class Recording:
    """One recorded execution: `steps` in the order they were recorded."""

    execution_id: uuid.UUID
    status: str
    topology: dict[str, Any]
    agents: dict[str, Any]
    teams: dict[str, Any]
    input: dict[str, Any]
    output: dict[str, Any] | None
    run_config: dict[str, Any]
    steps: list[StepRecord]
    source: str
    """Where it was read: `execution <id>` or the fixture's path (for messages)."""

    @property
    def topology_name(self) -> str:
        return str(self.topology.get("name", ""))

    @classmethod
    async def from_database(cls, db: Database, id_or_prefix: str) -> Recording:
        """The execution `id_or_prefix` names and its steps (read only)."""
        execution = await db.find_execution(id_or_prefix)
        rows = await db.list_steps(execution.id)
        return cls._of(execution, rows)

    @classmethod
    def _of(cls, execution: Execution, rows: Any) -> Recording:
        return cls(
            execution_id=execution.id,
            status=str(execution.status),
            topology=dict(execution.topology_snapshot),
            agents=dict(execution.agents_snapshot),
            teams=dict(execution.teams_snapshot),
            input=dict(execution.input_data),
            output=execution.output_data,
            run_config=dict(execution.run_config),
            steps=[_record(row) for row in rows],
            source=f"execution {execution.id}",
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Recording:
        """The recording of a fixture file (`llm.read_fixture` checks it is one of this format)."""
        document = llm.read_fixture(path)
        try:
            return cls(
                execution_id=uuid.UUID(str(document["execution_id"])),
                status=str(document["status"]),
                topology=dict(document["topology"]),
                agents=dict(document.get("agents") or {}),
                teams=dict(document.get("teams") or {}),
                input=dict(document.get("input") or {}),
                output=document.get("output"),
                run_config=dict(document.get("run_config") or {}),
                steps=[_step_of(step, document["execution_id"]) for step in document["steps"]],
                source=str(path),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidConfigError(
                f"{str(path)!r} is a damaged fixture ({type(error).__name__}: {error}); export it again: "
                "qmcp executions export-fixture ID > FILE"
            ) from None

    def completed(self) -> dict[str, StepRecord]:
        """The completed steps by key, in the recording's order."""
        return {step.key: step for step in self.steps if step.status == StepStatus.COMPLETED}

    def document(self) -> dict[str, Any]:
        """The fixture document (`FIXTURE_FORMAT`), ready for `json.dumps`."""
        return {
            "format": llm.FIXTURE_FORMAT,
            "execution_id": str(self.execution_id),
            "status": self.status,
            "topology": self.topology,
            "agents": self.agents,
            "teams": self.teams,
            "input": self.input,
            "output": self.output,
            "run_config": self.run_config,
            "steps": [_step_document(step) for step in self.steps],
        }


def _record(row: ExecutionStep) -> StepRecord:
    return StepRecord(
        execution_id=row.execution_id,
        key=row.key,
        slot=row.slot,
        agent_name=row.agent_name,
        model=row.model,
        status=StepStatus(row.status),
        request=dict(row.request or {}),
        response=row.response,
        output=row.output,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cost_usd=row.cost_usd,
        latency_ms=row.latency_ms,
        attempts=row.attempts,
        error=row.error,
        started_at=row.started_at,
        completed_at=row.completed_at,
        inherited=row.inherited,
    )


def _step_document(step: StepRecord) -> dict[str, Any]:
    return {
        "key": step.key,
        "slot": step.slot,
        "agent": step.agent_name,
        "model": step.model,
        "status": str(step.status),
        "request": step.request,
        "response": step.response,
        "data": (step.output or {}).get("data"),
        "output": step.output,
        "input_tokens": step.input_tokens,
        "output_tokens": step.output_tokens,
        "cost_usd": step.cost_usd,
        "latency_ms": step.latency_ms,
        "attempts": step.attempts,
        "error": step.error,
        "inherited": step.inherited,
        "started_at": step.started_at.isoformat(),
        "completed_at": step.completed_at.isoformat() if step.completed_at else None,
    }


def _step_of(step: Mapping[str, Any], execution_id: Any) -> StepRecord:
    completed = step.get("completed_at")
    return StepRecord(
        execution_id=uuid.UUID(str(execution_id)),
        key=str(step["key"]),
        slot=str(step["slot"]),
        agent_name=str(step["agent"]),
        model=str(step.get("model") or ""),
        status=StepStatus(step.get("status") or StepStatus.COMPLETED),
        request=dict(step.get("request") or {}),
        response=step.get("response"),
        output=step.get("output"),
        input_tokens=int(step.get("input_tokens") or 0),
        output_tokens=int(step.get("output_tokens") or 0),
        cost_usd=float(step.get("cost_usd") or 0.0),
        latency_ms=float(step.get("latency_ms") or 0.0),
        attempts=int(step.get("attempts") or 1),
        error=step.get("error"),
        started_at=datetime.fromisoformat(step["started_at"]),
        completed_at=datetime.fromisoformat(completed) if completed else None,
        inherited=bool(step.get("inherited")),
    )


async def export_fixture_async(execution_id: str | uuid.UUID, *, db_url: str | None = None) -> dict[str, Any]:
    """The fixture document of an execution (its id or enough of its start): team, input, output and
    every recorded step with its prompt, reply and structured data. Reads only."""
    async with Database(db_url, read_only=True) as db:
        with storage_errors(db.url):
            recording = await Recording.from_database(db, str(execution_id))
    return recording.document()


def export_fixture(execution_id: str | uuid.UUID, *, db_url: str | None = None) -> dict[str, Any]:
    """`export_fixture_async` for synchronous code; not from inside an event loop."""
    return asyncio.run(export_fixture_async(execution_id, db_url=db_url))


def save_fixture(document: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a fixture document to `path`, whole or not at all (a temporary file renamed)."""
    text = json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n"
    temporary = f"{os.fspath(path)}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_fixture(
    execution_id: str | uuid.UUID, path: str | os.PathLike[str], *, db_url: str | None = None
) -> int:
    """Export an execution's fixture to the file `path`; returns how many steps it holds."""
    document = export_fixture(execution_id, db_url=db_url)
    save_fixture(document, path)
    return len(document["steps"])
