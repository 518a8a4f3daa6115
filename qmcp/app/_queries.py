"""Query operations: executions, their steps, topologies and their graphs, spend.

Reads only: they never write (an execution whose owner is gone reads `interrupted`, computed by the
store). Each door renders what they return: the API, MCP and the client as `ExecutionOut`/`StepOut`,
the CLI as tables, the console as pages.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from ..agentframework.errors import InvalidConfigError
from ..agentframework.models import AgentType, Execution, ExecutionStatus, ExecutionStep, Topology
from ..agentframework.runners import collect_teams
from ..agentframework.store import Database
from ..agentframework.topologies import Dag, topology_dag

__all__ = [
    "ExecutionPage",
    "ExecutionQuery",
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


@dataclass(frozen=True)
class ExecutionPage:
    executions: list[Execution]
    total: int
    """How many match, beyond this page."""


async def list_executions(db: Database, query: ExecutionQuery) -> ExecutionPage:
    status = parse_status(query.status)
    rows = await db.list_executions(
        status=status, topology_name=query.topology, limit=query.limit, offset=query.offset
    )
    return ExecutionPage(rows, await db.count_executions(status=status, topology_name=query.topology))


async def execution_steps(
    db: Database, execution_id: str | uuid.UUID
) -> tuple[Execution, Sequence[ExecutionStep]]:
    """An execution and its recorded steps, in the order they ran."""
    execution = await db.get_execution(execution_id)
    return execution, await db.list_steps(execution.id)


async def list_topologies(db: Database) -> list[tuple[Topology, dict[str, AgentType]]]:
    """Every stored topology with the agent in each slot."""
    return [await db.get_topology(topology.name) for topology, _ in await db.list_topologies()]


async def topology_graph(db: Database, name: str) -> Dag:
    """A stored topology's DAG, its compound sub-teams expanded (they must exist and be trusted)."""
    topology, agents = await db.get_topology(name)
    return topology_dag(topology, agents, await collect_teams(db, topology))
