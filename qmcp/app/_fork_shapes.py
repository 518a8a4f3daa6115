"""A fork's lineage and the comparison of two executions step by step, on the wire: the HTTP API's
bodies, MCP's tool results, the CLI's `--format json` and the console's pages.

Imports pydantic only (`qmcp.client` stays light); `qmcp.app.lineage` and `diff_executions` build them.
"""

from __future__ import annotations

from pydantic import BaseModel

from ._shapes import ExecutionOut

__all__ = ["ExecutionDiff", "Lineage", "StepDiff", "StepSide", "UsageOut"]


class UsageOut(BaseModel):
    """What an execution (or a step) used: model calls, tokens and cost."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class Lineage(BaseModel):
    """Where an execution sits among forks: the chain of executions it was forked from (its parent
    first) and the forks made of it (oldest first)."""

    execution: ExecutionOut
    ancestors: list[ExecutionOut]
    forks: list[ExecutionOut]


class StepSide(BaseModel):
    """One execution's record of a step, as compared."""

    status: str
    agent_name: str
    model: str
    response: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    inherited: bool
    """Copied from the execution's parent: replayed, not paid by this execution."""
    edited: bool
    """Its reply was set by a human when the fork was made."""


class StepDiff(BaseModel):
    """A step key of either execution: its record in A and in B (None where it did not run)."""

    key: str
    a: StepSide | None
    b: StepSide | None
    reply_changed: bool
    """The replies differ, or only one execution has the step."""


class ExecutionDiff(BaseModel):
    """Two executions compared step by step (A's step order, then the steps only B has), with what
    each paid in total (its usage rows: a fork's inherited steps cost it nothing)."""

    a: ExecutionOut
    b: ExecutionOut
    steps: list[StepDiff]
    a_totals: UsageOut
    b_totals: UsageOut
    changed: int
    """How many steps' replies differ (or exist on one side only)."""
