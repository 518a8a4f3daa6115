"""One step and one execution on the wire: the HTTP API's bodies, `qmcp.client`'s results, MCP's tool
results and the SSE stream's status events are these shapes.

Imports pydantic only (`qmcp.client` stays light); they are built from the core's rows with `of()`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from ..agentframework.models import Execution, ExecutionStep

__all__ = ["ExecutionOut", "OwnerOut", "RunAccepted", "StepOut"]


class OwnerOut(BaseModel):
    """The process that runs an execution now, and until when its lease lasts."""

    host: str | None
    pid: int | None
    lease_until: datetime | None
    cancel_requested: bool


class ExecutionOut(BaseModel):
    """An execution: what ran, how it went, what it spent. `input` and `history` only when asked for
    one execution (lists leave them out)."""

    id: str
    topology_name: str
    topology_type: str
    status: str
    runner_type: str
    origin: str
    correlation_id: str | None
    input: dict[str, Any] | None = None
    output: dict[str, Any] | None
    error: str | None
    human_request_id: str | None = None
    """The human request a paused run waits for (answer it to go on)."""
    requests: int = 0
    """Model calls sent, retries included (with the tokens and cost below: the execution's `Usage`)."""
    input_tokens: int
    output_tokens: int
    cost_usd: float
    attempts: int
    created_at: datetime
    started_at: datetime
    completed_at: datetime | None
    duration_ms: int | None
    owner: OwnerOut | None
    history: list[dict[str, Any]] | None = None
    parent_id: str | None = None
    """The execution this one was forked from; its steps before `fork_key` were inherited."""
    fork_key: str | None = None
    eval_id: str | None = None
    """The `qmcp eval` run this execution is one sample of."""

    @classmethod
    def of(cls, execution: Execution, *, full: bool = False) -> ExecutionOut:
        owner = (
            OwnerOut(
                host=execution.owner_host,
                pid=execution.owner_pid,
                lease_until=execution.lease_until,
                cancel_requested=execution.cancel_requested_at is not None,
            )
            if execution.owner_token
            else None
        )
        return cls(
            id=str(execution.id),
            topology_name=execution.topology_name,
            topology_type=execution.topology_type,
            status=str(execution.status),
            runner_type=execution.runner_type,
            origin=execution.origin,
            correlation_id=execution.correlation_id,
            input=execution.input_data if full else None,
            output=execution.output_data,
            error=execution.error,
            human_request_id=execution.human_request_id,
            requests=execution.requests,
            input_tokens=execution.input_tokens,
            output_tokens=execution.output_tokens,
            cost_usd=execution.cost_usd,
            attempts=execution.attempts,
            created_at=execution.created_at,
            started_at=execution.started_at,
            completed_at=execution.completed_at,
            duration_ms=execution.duration_ms,
            owner=owner,
            history=execution.history if full else None,
            parent_id=str(execution.parent_id) if execution.parent_id else None,
            fork_key=execution.fork_key,
            eval_id=execution.eval_id,
        )


class StepOut(BaseModel):
    """One agent call of an execution, as recorded."""

    key: str
    slot: str
    agent_name: str
    model: str
    status: str
    request: dict[str, Any]
    response: str | None
    output: dict[str, Any] | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    attempts: int
    error: str | None
    started_at: datetime
    completed_at: datetime | None
    inherited: bool = False
    """Copied from the parent of a fork: replayed, not paid by this execution."""

    @classmethod
    def of(cls, step: ExecutionStep) -> StepOut:
        return cls(
            key=step.key,
            slot=step.slot,
            agent_name=step.agent_name,
            model=step.model,
            status=str(step.status),
            request=step.request,
            response=step.response,
            output=step.output,
            input_tokens=step.input_tokens,
            output_tokens=step.output_tokens,
            cost_usd=step.cost_usd,
            latency_ms=step.latency_ms,
            attempts=step.attempts,
            error=step.error,
            started_at=step.started_at,
            completed_at=step.completed_at,
            inherited=step.inherited,
        )


class RunAccepted(BaseModel):
    """A run (or resume) the server has queued: poll or stream its execution by id."""

    execution_id: str
    status: str
