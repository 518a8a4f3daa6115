"""`RunConfig` and `RunResult`, exactly as the seed names them, plus a few useful extras."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import ConfigDict
from sqlmodel import Field, SQLModel

from ..models import ExecutionStatus

__all__ = ["RUN_OPTIONS", "RunConfig", "RunResult"]


class RunConfig(SQLModel):
    """Configuration for a topology run."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    correlation_id: str | None = Field(default=None, max_length=200)
    timeout_seconds: int = Field(default=3600, gt=0, le=7 * 86_400)
    checkpoint_enabled: bool = True
    retry_on_failure: bool = True
    max_retries: int = Field(default=3, ge=0, le=50)
    log_level: str = "INFO"
    trace_enabled: bool = True
    metrics_enabled: bool = True
    # Extras beyond the seed.
    model_override: str | None = Field(default=None, description="Swap every agent's model for this run.")
    max_concurrent: int | None = Field(default=None, ge=1, le=100_000)
    retry_backoff_seconds: float = Field(
        default=0.5, ge=0.0, le=60.0, description="First retry delay; doubles."
    )


RUN_OPTIONS = frozenset(
    {
        "model_override",
        "max_concurrent",
        "timeout_seconds",
        "checkpoint_enabled",
        "retry_on_failure",
        "max_retries",
        "retry_backoff_seconds",
    }
)
"""The fields that make a run what it is: stored on the execution, reused by resume, changed only
explicitly (and recorded). The others (log level, tracing, metrics) belong to the process running it."""


class RunResult(SQLModel):
    """Result from a topology run."""

    execution_id: UUID
    status: ExecutionStatus
    output: dict[str, Any] | None
    error: str | None
    started_at: datetime
    completed_at: datetime | None
    duration_ms: int | None
    runner_type: str
    topology_name: str
    correlation_id: str | None
    # Extras beyond the seed.
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
