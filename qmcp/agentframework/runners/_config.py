"""`RunConfig` and `RunResult`: what a run is given and what it returns.

The first fields of each are the stable core every example uses (their names and defaults are pinned
by tests/core/test_public_api.py); the fields after them add spend, concurrency and model controls.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, computed_field
from sqlmodel import Field, SQLModel

from ..models import ExecutionStatus, Usage

__all__ = [
    "OWNED_PROCESS_FREEZE",
    "PROCESS_FIELDS",
    "RUN_OPTIONS",
    "FieldScope",
    "RateLimitConfig",
    "RunConfig",
    "RunResult",
    "field_scope",
]


class FieldScope(StrEnum):
    """Where a `RunConfig` field lives, declared on the field (`Annotated[..., FieldScope.RUN]`)."""

    RUN = "run"
    """Makes the run what it is: stored on the execution, reused by resume, changed only explicitly
    (and recorded)."""
    IDENTITY = "identity"
    """Stored on the execution and fixed for its life (the correlation id)."""
    PROCESS = "process"
    """Belongs to the process making an attempt (log level, tracing, rate limits...): never stored."""


class RateLimitConfig(BaseModel):
    """A provider's limits for one model: requests and tokens per minute (None: unlimited)."""

    model_config = ConfigDict(extra="forbid")

    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)


class RunConfig(SQLModel):
    """Configuration for a topology run."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())  # type: ignore[assignment]  # SQLModel's type for it extends ConfigDict

    correlation_id: Annotated[str | None, FieldScope.IDENTITY] = Field(default=None, max_length=200)
    timeout_seconds: Annotated[int, FieldScope.RUN] = Field(default=3600, gt=0, le=7 * 86_400)
    checkpoint_enabled: Annotated[bool, FieldScope.RUN] = True
    retry_on_failure: Annotated[bool, FieldScope.RUN] = True
    max_retries: Annotated[int, FieldScope.RUN] = Field(default=3, ge=0, le=50)
    log_level: Annotated[str, FieldScope.PROCESS] = "INFO"
    trace_enabled: Annotated[bool, FieldScope.PROCESS] = True
    metrics_enabled: Annotated[bool, FieldScope.PROCESS] = True
    # Beyond the core: model, concurrency and spend controls.
    model_override: Annotated[str | None, FieldScope.RUN] = Field(
        default=None, description="Swap every agent's model for this run."
    )
    max_concurrent: Annotated[int | None, FieldScope.RUN] = Field(default=None, ge=1, le=100_000)
    retry_backoff_seconds: Annotated[float, FieldScope.RUN] = Field(
        default=0.5, ge=0.0, le=60.0, description="First retry delay; doubles."
    )
    max_tokens: Annotated[int | None, FieldScope.RUN] = Field(
        default=None,
        ge=1,
        description="The execution's budget in tokens (input plus output, every attempt); None: unlimited.",
    )
    max_cost_usd: Annotated[float | None, FieldScope.RUN] = Field(
        default=None,
        ge=0,
        description="The execution's budget in US dollars (every attempt); None: unlimited.",
    )
    rate_limits: Annotated[dict[str, RateLimitConfig] | None, FieldScope.PROCESS] = Field(
        default=None,
        description="Requests/tokens per minute by model string, set for the whole process when the run "
        "starts (see QMCP_RATE_LIMITS); callers wait for their turn.",
    )
    freeze_heap_above: Annotated[int | None, FieldScope.PROCESS] = Field(
        default=None,
        ge=1,
        description="Opt in: keep the garbage collector off the pre-existing heap while more than this many "
        "steps are in flight (never when the process has frozen objects of its own). `gc.freeze` is "
        "process-wide, so a library leaves it off by default; the qmcp CLI and server, which own their "
        "process, use 500 (`OWNED_PROCESS_FREEZE`).",
    )


OWNED_PROCESS_FREEZE = 500
"""`freeze_heap_above` where qmcp owns the process (its CLI, its server): 10,000-member ensembles spent
half their time in full collections walking the import heap without it (docs/benchmarks.md)."""


def field_scope(name: str) -> FieldScope:
    """The scope `RunConfig` field `name` declares; every field declares one (tests/core/test_runners.py)."""
    scopes = [m for m in RunConfig.model_fields[name].metadata if isinstance(m, FieldScope)]
    if len(scopes) != 1:
        raise TypeError(f"RunConfig.{name} must declare exactly one FieldScope")
    return scopes[0]


RUN_OPTIONS = frozenset(name for name in RunConfig.model_fields if field_scope(name) is FieldScope.RUN)
"""The fields that make a run what it is: stored on the execution, reused by resume, changed only
explicitly (and recorded)."""

PROCESS_FIELDS = frozenset(name for name in RunConfig.model_fields if field_scope(name) is FieldScope.PROCESS)
"""The fields that belong to the process running an attempt (log level, tracing, metrics, rate limits,
the heap freeze): not stored with the run."""


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
    # Beyond the core: what the run used.
    usage: Usage = Field(default_factory=Usage)
    """What every attempt of the execution paid for."""

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented use on a property
    @property
    def input_tokens(self) -> int:
        return self.usage.input_tokens

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented use on a property
    @property
    def output_tokens(self) -> int:
        return self.usage.output_tokens

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented use on a property
    @property
    def cost_usd(self) -> float:
        return self.usage.cost_usd

    human_request_id: str | None = None
    """The human request a `paused` run waits for: answer it to resume the run."""
    permanent: bool = False
    """The run failed for a cause a resume as it is meets again (a model's permanent refusal, a team
    changed since it began, a setting to fix): fix the cause before resuming."""
