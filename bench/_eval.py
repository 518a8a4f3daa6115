"""eval_scale (issue 26): `qmcp eval`'s engine on 1,000 samples × 3 topologies on the offline `test` model.

Each measured run gets a fresh database (SQLite file, or a new PostgreSQL database) with the team
stored before the clock starts; the run is what `qmcp eval` does after parsing its options:
`start_eval` (the EvalRun, 3,000 cell executions on one `AsyncRunner` under one shared limit, every
cell scored) and then `eval_report` (the table's numbers). Process start-up is not included.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any

from qmcp.agentframework.models import AgentConfig, AgentRole, AgentType, Topology
from qmcp.agentframework.runners import OWNED_PROCESS_FREEZE, RunConfig
from qmcp.agentframework.store import Database
from qmcp.app import Caller, Door
from qmcp.eval import EvalRequest, eval_report, start_eval

from ._common import Case, Metrics, Skipped, fresh_postgres, postgres_url, sqlite_url, timed

__all__ = ["make_case"]


def _agent(name: str, role: AgentRole) -> AgentType:
    return AgentType(name=name, role=role, config=AgentConfig(model="test").model_dump())


TEAMS: dict[str, tuple[Topology, dict[str, AgentType]]] = {
    "single": (
        Topology(name="single", topology_type="pipeline", config={}),
        {"only": _agent("writer", AgentRole.WRITER)},
    ),
    "review": (
        Topology(name="review", topology_type="pipeline", config={}),
        {"draft": _agent("writer", AgentRole.WRITER), "edit": _agent("critic", AgentRole.CRITIC)},
    ),
    "vote": (
        Topology(name="vote", topology_type="ensemble", config={}),
        {f"m{i}": _agent(f"member-{i}", AgentRole.ANALYST) for i in range(3)},
    ),
}


class EvalCase:
    def __init__(self, variant: str, workdir: Path, params: dict[str, Any]) -> None:
        self.variant = variant
        self.workdir = workdir
        self.samples = int(params["samples"])
        self.max_concurrent = int(params["max_concurrent"])
        self._stack = contextlib.AsyncExitStack()

    async def setup(self) -> None:
        if self.variant == "postgres" and postgres_url() is None:
            raise Skipped("no PostgreSQL: set QMCP_BENCH_POSTGRES_URL or QMCP_TEST_POSTGRES_URL")

    async def _database(self) -> str:
        server = postgres_url()
        if self.variant == "postgres" and server is not None:
            return await self._stack.enter_async_context(fresh_postgres(server))
        return sqlite_url(self.workdir, f"eval-{uuid.uuid4().hex[:8]}.db")

    async def run(self) -> Metrics:
        url = await self._database()
        records = [
            {"id": f"q{i}", "input": f"What is {i} + {i}?", "target": str(2 * i)} for i in range(self.samples)
        ]
        request = EvalRequest(
            records=records, topologies=list(TEAMS), scorer="includes", max_concurrent=self.max_concurrent
        )
        config = RunConfig(log_level="ERROR", freeze_heap_above=OWNED_PROCESS_FREEZE)
        async with Database(url) as db:
            for topology, agents in TEAMS.values():
                await db.save_team(topology, agents)

            async def evaluate() -> Any:
                outcome = await start_eval(db, request, Caller.operator(Door.CLI), runner_config=config)
                return outcome, await eval_report(db, outcome.eval_id)

            (outcome, report), seconds = await timed(evaluate)
        cells = self.samples * len(TEAMS)
        if (
            outcome.status != "completed"
            or report.recorded != cells
            or any(v.failures for v in report.variants)
        ):
            raise RuntimeError(f"the eval ended {outcome.status} with {report.recorded} of {cells} cells")
        return {"seconds": seconds, "cells_per_second": cells / seconds}

    async def close(self) -> None:
        await self._stack.aclose()


def make_case(variant: str, workdir: Path, params: dict[str, Any]) -> Case:
    return EvalCase(variant, workdir, params)
