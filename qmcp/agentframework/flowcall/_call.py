"""A prepared agent call, made and recorded by a Metaflow task with the model layer and `sqlite3` alone.

A `foreach` task of a flow `MetaflowRunner` launched used to import the topology's code and the
store (SQLAlchemy, SQLModel, the tables: about 0.35 s of CPU in each task) to make one call. With
the call prepared by the runner (`_prepared.py`), the task makes it as `StepContext`'s plain step
does (same request, retries, row, usage row and totals) and writes the row fenced by the runner's
lease, in one transaction. Whatever this path does not handle goes back to the topology's code:
`call_prepared` returns None before calling the model when the execution is not running under the
runner's lease, a cancel is requested, the step has a row already (a resumed run), the task is a
retry, or the model cannot be built.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ...redaction import redact
from .. import llm
from ..errors import LeaseLostError, ModelError, StepFailedError
from ..models import ExecutionStatus, StepStatus, Usage
from ._ended import end_task_without_retry
from ._prepared import PreparedCall, import_task_plugins, prepared_calls
from ._sqlite import (
    COUNT_USAGE,
    INSERT_USAGE,
    OWNED_STEP_UPSERT,
    STEP_COLUMNS,
    connect_writer,
    step_values,
    utc_text,
)

__all__ = ["call_prepared"]

_BUSY_TIMEOUT_SECONDS = 30.0
"""How long a task waits for another writer's lock on the SQLite file, as the store's waiting writer."""

_CAN_CALL = (
    "SELECT status = ? AND owner_token = ? AND cancel_requested_at IS NULL "
    'AND NOT EXISTS (SELECT 1 FROM execution_steps WHERE execution_id = executions.id AND "key" = ?) '
    "FROM executions WHERE id = ?"
)
_NOTE_RUN = (
    "UPDATE executions SET external_run_id = ? WHERE id = ? AND owner_token = ? AND external_run_id IS NOT ?"
)
_EXISTS = "SELECT 1 FROM executions WHERE id = ?"
_OWNED = "SELECT 1 FROM executions WHERE id = ? AND owner_token = ?"

_RESPONSE, _COMPLETED_AT = STEP_COLUMNS.index("response"), STEP_COLUMNS.index("completed_at")
_PAID = [STEP_COLUMNS.index(name) for name in ("attempts", "input_tokens", "output_tokens", "cost_usd")]
"""Where a row (`step_values`) holds its response, completion time, and what the call paid (`Usage`'s order)."""


def call_prepared(execution_id: str, key: str) -> dict[str, Any] | None:
    """Make and record step `key` of execution `execution_id` as the runner prepared it; what the step did
    (the dict `invoke_agent` returns), or None when it was not prepared or needs the topology's code."""
    prepared = prepared_calls(execution_id)
    call = None if prepared is None else prepared.calls.get(key)
    if prepared is None or call is None:
        return None
    from metaflow import current

    if current.is_running_flow and current.retry_count:  # the topology's code knows what the last try paid
        return None
    run = f"{current.flow_name}/{current.run_id}" if current.is_running_flow else None
    try:
        import_task_plugins()
        model = llm.ModelChoice(call.model, call.base_url, call.api_key_env).resolve(call.role)
    except Exception:  # the topology's code meets the same error and records how the run ends
        return None
    conn = connect_writer(prepared.database, _BUSY_TIMEOUT_SECONDS)
    try:
        execution = uuid.UUID(execution_id)
        allowed = (ExecutionStatus.RUNNING.name, prepared.owner_token, key, execution.hex)
        if conn.execute(_CAN_CALL, allowed).fetchone() != (1,):
            return None
        try:
            owned = functools.partial(_owned, conn, execution, prepared.owner_token)
            row, error = asyncio.run(_call(model, call, execution, owned))
            _record(conn, row, prepared.owner_token, run)
        except LeaseLostError as lost:
            if run is not None:  # another attempt of the task would meet the same owner
                end_task_without_retry(lost)
            raise
    finally:
        conn.close()
    result: dict[str, Any] = {
        "key": key,
        "agent": call.agent_name,
        "output": None,
        "data": None,
        "error": None,
        "skipped": False,
        "usage": dataclasses.asdict(Usage()),
        "run": run,
    }
    if error is not None:
        result["error"] = str(StepFailedError(key, error, error.attempts))
    else:
        result |= {"output": row[_RESPONSE], "usage": dataclasses.asdict(Usage(*_paid(row)))}
    return result


def _paid(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(row[position] for position in _PAID)


def _owned(conn: sqlite3.Connection, execution: uuid.UUID, token: str) -> bool:
    return conn.execute(_OWNED, (execution.hex, token)).fetchone() is not None


async def _call(
    model: Any, call: PreparedCall, execution: uuid.UUID, owned: Callable[[], bool]
) -> tuple[tuple[Any, ...], ModelError | None]:
    """The step's row once its call is made (`step_values`), and the model error that failed it, if one did.

    Before a retry, `owned` says whether the runner still owns the execution, as the plain step's lease
    does before each attempt: a process that lost it pays for no further attempt."""
    started = datetime.now(UTC)
    messages: list[llm.ChatMessage] = [{"role": "user", "content": call.prompt}]
    request = {"system": call.system, "messages": messages, "settings": dict(call.settings)}
    attempts = 0

    def once() -> Any:
        nonlocal attempts
        attempts += 1
        if attempts > 1 and not owned():
            raise LeaseLostError.taken_over(execution)
        return llm.call_model(
            model,
            call.model,
            system=call.system,
            messages=messages,
            settings=call.settings,  # type: ignore[arg-type]  # a ModelSettings as JSON
            timeout_seconds=call.timeout_seconds,
            max_tool_calls=call.max_tool_calls,
        )

    names = (execution, call.key, call.slot, call.agent_name, call.model)
    try:
        with llm.calling_step(call.key):
            reply, attempts = await llm.retry_transient(
                once, max_retries=call.max_retries, base_delay=call.base_delay, max_delay=call.max_delay
            )
    except ModelError as error:
        message = redact(f"{type(error).__name__}: {error}")
        failed = step_values(
            *names,
            StepStatus.FAILED,
            request,
            None,
            None,
            0,
            0,
            0.0,
            0.0,
            error.attempts,
            message,
            started,
            None,
        )
        return failed, error
    output = {"tool_calls": list(reply.tool_calls)} if reply.tool_calls else None
    completed = step_values(
        *names,
        StepStatus.COMPLETED,
        request,
        reply.text,
        output,
        reply.input_tokens,
        reply.output_tokens,
        reply.cost_usd,
        reply.latency_ms,
        attempts,
        None,
        started,
        datetime.now(UTC),
    )
    return completed, None


def _record(conn: sqlite3.Connection, row: tuple[Any, ...], token: str, run: str | None) -> None:
    """One transaction: the step's row if `token` still owns the execution, its usage row, the flow run
    noted on the execution, its totals counted again. When another process has taken the execution
    over, the row is not written, its usage row is (marked displaced: the call was paid), and
    `LeaseLostError` is raised, as the store does."""
    execution, key, _, agent, model = row[:5]
    paid = _paid(row)
    when = row[_COMPLETED_AT] or utc_text(datetime.now(UTC))
    try:
        conn.execute("BEGIN IMMEDIATE")
        kept = conn.execute(OWNED_STEP_UPSERT, (*row, execution, token)).rowcount == 1
        if any(paid) and (kept or conn.execute(_EXISTS, (execution,)).fetchone()):
            conn.execute(INSERT_USAGE, (execution, key, agent, model, token, 0 if kept else 1, *paid, when))
        if kept and run is not None:
            conn.execute(_NOTE_RUN, (run, execution, token, run))
        conn.execute(COUNT_USAGE, (execution,))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    if not kept:
        raise LeaseLostError.taken_over(uuid.UUID(execution))
