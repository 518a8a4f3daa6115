"""How qmcp's SQLite writers set up their connections, and the step's statements as `sqlite3` runs them.

The store compiles its statements from the tables with SQLAlchemy (`store/_steps.py`); a Metaflow
task that makes a prepared call (`_call.py`) writes the same rows without loading SQLAlchemy, with
the text below. `tests/metaflow/test_prepared_calls.py` checks that both are the same statements and write
the same rows, so a change to the tables that this module misses fails there.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic_core

from ..models import StepStatus

__all__ = [
    "STEP_COLUMNS",
    "USAGE_COLUMNS",
    "WAL_CHECKPOINT_PAGES",
    "WAL_FILE_BYTES",
    "WRITER_PRAGMAS",
    "connect_existing",
    "connect_writer",
    "json_text",
    "utc_text",
]

WAL_CHECKPOINT_PAGES = 4000
"""The WAL size (pages) past which a commit of qmcp's connections checkpoints the WAL itself, fsyncs
included, before it returns (SQLite's `wal_autocheckpoint`, 1,000 by default). The `Checkpointer`
thread copies the WAL long before that, and the WAL starts over at the first write after a copy
that caught up (between runs, or while a step waits on its model); SQLite's 1,000 pages were
crossed once per 200-step run of zero-latency steps (about 1,250 pages), whose crossing commit
waited 1.6–3 ms for two fsyncs on the event loop's thread. 4,000 pages (16 MB with 4 KB pages)
still bound the WAL, and keep its index about one block (4,062 frames) for readers."""

WAL_FILE_BYTES = 4 * 1024 * 1024
"""What a WAL file is cut back to when the WAL starts over (`journal_size_limit`): SQLite reuses the
file without shrinking it, so a WAL grown to `WAL_CHECKPOINT_PAGES` would stay 16 MB on disk."""

WRITER_PRAGMAS = (
    "PRAGMA synchronous=NORMAL",
    f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}",
    f"PRAGMA journal_size_limit={WAL_FILE_BYTES}",
)
"""Set on every connection of qmcp's that writes a SQLite file (the engine's, the inline engine's, the
step writer's, a Metaflow task's): a commit waits for the disk only at a checkpoint, which the
store's `Checkpointer` takes."""

STEP_COLUMNS = (
    *("execution_id", "key", "slot", "agent_name", "model", "status", "request", "response", "output"),
    *("input_tokens", "output_tokens", "cost_usd", "latency_ms", "attempts", "error"),
    *("started_at", "completed_at", "inherited"),
)
"""An `execution_steps` row but its id, in the order the statements below bind it."""

USAGE_COLUMNS = (
    *("execution_id", "key", "agent_name", "model", "owner_token", "displaced"),
    *("requests", "input_tokens", "output_tokens", "cost_usd", "recorded_at"),
)
"""A `step_usage` row but its id, in the order `INSERT_USAGE` binds it."""

TOTALS = ("requests", "input_tokens", "output_tokens", "cost_usd")
"""An execution's totals: the sums of its usage rows."""


def _quoted(name: str) -> str:
    return '"key"' if name == "key" else name  # `key` is a keyword to SQLAlchemy's SQLite dialect


def _columns(names: tuple[str, ...]) -> str:
    return ", ".join(_quoted(name) for name in names)


_UPDATED = ", ".join(f"{name} = excluded.{name}" for name in STEP_COLUMNS[2:])

OWNED_STEP_UPSERT = (
    f"INSERT INTO execution_steps ({_columns(STEP_COLUMNS)}) "
    f"SELECT {', '.join('?' * len(STEP_COLUMNS))} "
    "FROM executions INDEXED BY ix_executions_id_owner_token WHERE id = ? AND owner_token = ? "
    f'ON CONFLICT (execution_id, "key") DO UPDATE SET {_UPDATED}'
)
"""A step row, inserted or replacing the row of its (execution, key), only while the owner token bound
after the row holds the execution bound before it (the store's `_owner_guarded` upsert)."""

INSERT_USAGE = (
    f"INSERT INTO step_usage ({_columns(USAGE_COLUMNS)}) VALUES ({', '.join('?' * len(USAGE_COLUMNS))})"
)

COUNT_USAGE = (
    "UPDATE executions SET "
    + ", ".join(
        f"{name}=(SELECT coalesce(sum(step_usage.{name}), 0) AS coalesce_{number} \nFROM step_usage \n"
        "WHERE step_usage.execution_id = executions.id)"
        for number, name in enumerate(TOTALS, 1)
    )
    + " WHERE executions.id = ?"
)
"""Set an execution's totals to the sums of its usage rows (the store's `_count_usage`)."""


def connect_writer(path: str, timeout_seconds: float) -> sqlite3.Connection:
    """A connection that writes the SQLite file at `path`, waiting up to `timeout_seconds` for its lock.

    The file must exist (a missing one is an error, not a new empty database). The engine has already
    put it in WAL mode (persistent); switching modes would need a lock."""
    conn = connect_existing(path, "rw", timeout_seconds)
    for pragma in WRITER_PRAGMAS:
        conn.execute(pragma)
    return conn


def connect_existing(path: str, mode: str, timeout_seconds: float = 5.0) -> sqlite3.Connection:
    """A connection to the existing SQLite file at `path`, read-only (`mode` "ro") or read-write ("rw")."""
    uri = f"{Path(path).absolute().as_uri()}?mode={mode}"
    return sqlite3.connect(uri, uri=True, timeout=timeout_seconds, check_same_thread=False)


def json_text(value: Any) -> str:
    """A JSON column's text, as every qmcp connection writes it: pydantic-core's encoder is 3–7× faster
    than `json`'s, and every step row, agent snapshot and run output goes through it; `json` takes what
    it refuses (lone surrogates, very deep nesting)."""
    try:
        return pydantic_core.to_json(value).decode()
    except ValueError:
        import json

        return json.dumps(value)


def utc_text(value: datetime) -> str:
    """A stored time as the store writes it to SQLite: aware, in UTC, `isoformat(" ")`."""
    if value.utcoffset() is None:
        raise ValueError("Datetime values must have timezone information.")
    return value.astimezone(UTC).isoformat(" ")


def step_values(
    execution_id: uuid.UUID,
    key: str,
    slot: str,
    agent_name: str,
    model: str,
    status: StepStatus,
    request: dict[str, Any],
    response: str | None,
    output: dict[str, Any] | None,
    input_tokens: int,
    output_tokens: int,
    cost_usd: float,
    latency_ms: float,
    attempts: int,
    error: str | None,
    started_at: datetime,
    completed_at: datetime | None,
) -> tuple[Any, ...]:
    """A new step row's parameters in `STEP_COLUMNS` order, as SQLAlchemy's SQLite dialect binds them."""
    return (
        execution_id.hex,
        key,
        slot,
        agent_name,
        model,
        status.name,  # an enum column keeps the member's name
        json_text(request),
        response,
        json_text(output),  # None too: SQLAlchemy's JSON column writes it as JSON's `null`
        input_tokens,
        output_tokens,
        float(cost_usd),
        float(latency_ms),
        attempts,
        error,
        utc_text(started_at),
        None if completed_at is None else utc_text(completed_at),
        0,  # not inherited: this execution made the call
    )
