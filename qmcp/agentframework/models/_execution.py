"""Run state: `Execution`, one row per run, `ExecutionStep`, one row per agent call, and `StepUsage`,
one row per paid step attempt.

Definitions (`AgentType`, `Topology`) stay immutable; an execution keeps a snapshot of the
definitions it ran with, so resume replays exactly the same team, and the options it ran with
(`run_config`, `runner_type`, `runner_options`), so resume continues the same run. Its status,
owner and lease are changed only by the execution service (`store/_executions.py`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlmodel import JSON, Field, Index, UniqueConstraint

from ._agent import utcnow
from ._base import TableModel
from ._enums import ExecutionStatus, StepStatus
from ._snapshot import AgentsSnapshotJSON
from ._usage import Usage

__all__ = ["Execution", "ExecutionStep", "StepUsage"]


class Execution(TableModel, table=True):
    __tablename__ = "executions"
    # Every fenced step write reads the owner by id. SQLite stores a row's columns in order, and the
    # team snapshots before `owner_token` grow with the team (a 5,000-slot pipeline's spill into
    # overflow pages): read from the row, the owner cost 0.5 ms per step there. From this covering
    # index it is a constant 0.01 ms (migration 0003).
    __table_args__ = (Index("ix_executions_id_owner_token", "id", "owner_token"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    topology_id: int | None = Field(default=None, foreign_key="topologies.id", index=True)
    topology_name: str = Field(index=True, max_length=64)
    topology_type: str = Field(max_length=32)
    status: ExecutionStatus = Field(default=ExecutionStatus.PENDING, index=True)
    runner_type: str = Field(default="local", max_length=64)
    origin: str = Field(default="python", max_length=32, index=True)
    """Who asked for the run: python, cli, server, metaflow (a server resumes its own after a restart)."""
    correlation_id: str | None = Field(default=None, index=True, max_length=200)
    input_data: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    output_data: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    error: str | None = None
    topology_snapshot: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    agents_snapshot: dict[str, Any] = Field(default_factory=dict, sa_type=AgentsSnapshotJSON)
    """Each slot's agent definition; stored with each distinct definition once (`AgentsSnapshotJSON`)."""
    teams_snapshot: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    run_config: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    runner_options: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    external_run_id: str | None = Field(default=None, max_length=300)
    # The one process that may run it now (see store/_executions.py): who, and until when.
    owner_token: str | None = Field(default=None, max_length=100)
    owner_host: str | None = Field(default=None, max_length=255)
    owner_pid: int | None = None
    owner_pid_start: int | None = None
    lease_until: datetime | None = None
    heartbeat_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    history: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    """One entry per attempt: when, by whom, on which runner, options changed, takeovers."""
    requests: int = 0
    """Model requests paid for over every attempt (retries included), with the tokens and cost below."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    attempts: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime = Field(default_factory=utcnow)
    completed_at: datetime | None = None
    duration_ms: int | None = None
    human_request_id: str | None = Field(default=None, max_length=300)
    """The human request a `paused` execution waits for (migration 0004)."""
    parent_id: uuid.UUID | None = Field(default=None, foreign_key="executions.id", index=True)
    """The execution this one was forked from (migration 0008); its steps before `fork_key` were inherited."""
    fork_key: str | None = Field(default=None, max_length=1000)
    """The step of the parent this fork ran again from."""
    eval_id: str | None = Field(default=None, max_length=64, index=True)
    """The `qmcp eval` run this execution is one sample of (migration 0008)."""

    @property
    def usage(self) -> Usage:
        """What every attempt paid."""
        return Usage(self.requests, self.input_tokens, self.output_tokens, self.cost_usd)


class ExecutionStep(TableModel, table=True):
    """One agent call, keyed by its deterministic path `key` inside the execution."""

    __tablename__ = "execution_steps"
    __table_args__ = (UniqueConstraint("execution_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    # No index of its own: the unique (execution_id, key) index serves lookups by execution.
    execution_id: uuid.UUID = Field(foreign_key="executions.id")
    key: str = Field(max_length=1000)
    slot: str = Field(max_length=64)
    agent_name: str = Field(max_length=64)
    model: str = Field(max_length=300)
    status: StepStatus = StepStatus.COMPLETED
    request: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    response: str | None = None
    output: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 1
    error: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    completed_at: datetime | None = None
    inherited: bool = False
    """Copied from the parent of a fork (migration 0008): replayed, never paid by this execution."""

    @property
    def usage(self) -> Usage:
        """What the step used: one request per attempt, with the row's tokens and cost."""
        return Usage(self.attempts, self.input_tokens, self.output_tokens, self.cost_usd)


class StepUsage(TableModel, table=True):
    """What one step attempt paid: appended with its step row, and kept when the step row is not.

    A step row says what an execution kept; money spent is a fact whatever became of the result. An
    owner that lost the execution (a takeover) has its step write refused by the fence, but its row
    here is still appended, `displaced`. The execution's `requests`, tokens and cost are the sum of
    these rows (`store/_usage.py`), so a killed or displaced attempt's calls are counted too.
    """

    __tablename__ = "step_usage"

    id: int | None = Field(default=None, primary_key=True)
    execution_id: uuid.UUID = Field(foreign_key="executions.id", index=True)
    key: str | None = Field(default=None, max_length=1000)
    """The step's key; None for the totals an execution had before this table (migration 0007)."""
    agent_name: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=300)
    owner_token: str | None = Field(default=None, max_length=100)
    """The owner (one per attempt) that paid; None for a write no lease fenced."""
    displaced: bool = False
    """Its owner had lost the execution: the step's result was not kept."""
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    recorded_at: datetime = Field(default_factory=utcnow)
    """When the attempt was recorded: its step's completion (a single step's write on SQLite) or its
    write's time (a batch, PostgreSQL, a displaced attempt), which differ by the wait for the commit."""

    @property
    def usage(self) -> Usage:
        return Usage(self.requests, self.input_tokens, self.output_tokens, self.cost_usd)
