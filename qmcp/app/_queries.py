"""Query operations: executions, their steps, topologies and their graphs, spend.

Reads only: they never write (an execution whose owner is gone reads `interrupted`, computed by the
store). Each door renders what they return: the API, MCP and the client as `ExecutionOut`/`StepOut`,
the CLI as tables, the console as pages.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..agentframework.errors import InvalidConfigError
from ..agentframework.models import (
    AgentType,
    Execution,
    ExecutionStatus,
    ExecutionStep,
    StepUsage,
    Topology,
    Usage,
)
from ..agentframework.runners import collect_teams
from ..agentframework.store import Database
from ..agentframework.topologies import Dag, topology_dag

__all__ = [
    "ExecutionCost",
    "ExecutionPage",
    "ExecutionQuery",
    "execution_cost",
    "execution_steps",
    "list_executions",
    "list_topologies",
    "parse_status",
    "topology_graph",
]


def parse_status(status: str | None) -> ExecutionStatus | None:
    """A status filter as every door takes it (one sentence for a wrong one)."""
    if not status:
        return None
    try:
        return ExecutionStatus(status)
    except ValueError:
        raise InvalidConfigError(
            f"unknown status {status!r}; choose one of: {', '.join(s.value for s in ExecutionStatus)}"
        ) from None


@dataclass(frozen=True)
class ExecutionQuery:
    """Which executions, newest first."""

    status: str | None = None
    topology: str | None = None
    limit: int = 50
    offset: int = 0
    eval_id: str | None = None
    """Only the cells (and judge calls) of this eval."""


@dataclass(frozen=True)
class ExecutionPage:
    executions: list[Execution]
    total: int
    """How many match, beyond this page."""


async def list_executions(db: Database, query: ExecutionQuery) -> ExecutionPage:
    status = parse_status(query.status)
    rows = await db.list_executions(
        status=status,
        topology_name=query.topology,
        limit=query.limit,
        offset=query.offset,
        eval_id=query.eval_id,
    )
    total = await db.count_executions(status=status, topology_name=query.topology, eval_id=query.eval_id)
    return ExecutionPage(rows, total)


async def execution_steps(
    db: Database, execution_id: str | uuid.UUID
) -> tuple[Execution, Sequence[ExecutionStep]]:
    """An execution and its recorded steps, in the order they ran."""
    execution = await db.get_execution(execution_id)
    return execution, await db.list_steps(execution.id)


@dataclass(frozen=True)
class ExecutionCost:
    """What one execution paid, from its usage rows: the calls whose results were kept, and apart
    from them the displaced ones (paid by an owner that had lost the execution; results dropped)."""

    execution: Execution
    kept: Usage = field(default_factory=Usage)
    displaced: Usage = field(default_factory=Usage)
    displaced_calls: list[StepUsage] = field(default_factory=list)
    """The usage row of each displaced step attempt, in the order written."""
    attempts: int = 0
    """Step attempts paid (usage rows), displaced ones included."""

    @property
    def paid(self) -> Usage:
        """Everything paid; the execution's totals once its last attempt has ended (`counted`)."""
        return self.kept + self.displaced

    @property
    def uncounted(self) -> Usage:
        """Paid but not yet in the execution's totals: an attempt that was killed counts when the
        execution is next resumed or cancelled."""
        counted = self.execution.usage
        return Usage(
            self.paid.requests - counted.requests,
            self.paid.input_tokens - counted.input_tokens,
            self.paid.output_tokens - counted.output_tokens,
            self.paid.cost_usd - counted.cost_usd,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "execution_id": str(self.execution.id),
            "topology": self.execution.topology_name,
            "status": str(self.execution.status),
            "attempts": self.attempts,
            "paid": asdict(self.paid),
            "kept": asdict(self.kept),
            "displaced": asdict(self.displaced),
            "counted": asdict(self.execution.usage),
            "displaced_calls": [
                {
                    "key": row.key,
                    "agent_name": row.agent_name,
                    "model": row.model,
                    "owner_token": row.owner_token,
                    **asdict(row.usage),
                    "recorded_at": row.recorded_at.isoformat(),
                }
                for row in self.displaced_calls
            ],
        }


async def execution_cost(db: Database, id_or_prefix: str) -> ExecutionCost:
    """What the execution named by `id_or_prefix` paid, every attempt's calls included."""
    execution = await db.find_execution(id_or_prefix)
    rows = await db.list_usage(execution.id)
    kept, displaced = Usage(), Usage()
    for row in rows:
        (displaced if row.displaced else kept).incr(row.usage)
    return ExecutionCost(execution, kept, displaced, [row for row in rows if row.displaced], len(rows))


async def list_topologies(db: Database) -> list[tuple[Topology, dict[str, AgentType]]]:
    """Every stored topology with the agent in each slot."""
    return [await db.get_topology(topology.name) for topology, _ in await db.list_topologies()]


async def topology_graph(db: Database, name: str) -> Dag:
    """A stored topology's DAG, its compound sub-teams expanded (they must exist and be trusted)."""
    topology, agents = await db.get_topology(name)
    return topology_dag(topology, agents, await collect_teams(db, topology))
