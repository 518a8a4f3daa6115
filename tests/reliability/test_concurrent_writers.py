"""Concurrent writers: 100 executions at once in one process, and 4 processes × 25, on one database.

Every run must complete, none may see "database is locked", and the row counts must be exact;
first runs of a team race to store it, and on PostgreSQL one process stays within one pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import reliability_writers as writers
from sqlalchemy import Select, func, select
from sqlmodel import col

from qmcp.agentframework.models import (
    AgentType,
    Execution,
    ExecutionStatus,
    ExecutionStep,
    StepStatus,
    Topology,
    TopologyMembership,
)
from qmcp.agentframework.runners import AsyncRunner
from qmcp.agentframework.store import Database

EXECUTIONS = 100
PROCESSES = 4
HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _model() -> Iterator[None]:
    writers.register()
    yield
    writers.unregister()


async def _assert_rows(url: str, executions: int = EXECUTIONS) -> None:
    """Exactly `executions` completed executions, STEPS completed rows each, one team."""
    async with Database(url) as db, db.engine.connect() as conn:

        async def count(query: Select[Any]) -> int:
            return int((await conn.execute(query)).scalar_one())

        assert await count(select(func.count()).select_from(Execution)) == executions
        assert (
            await count(select(func.count()).where(col(Execution.status) == ExecutionStatus.COMPLETED))
            == executions
        )
        steps = executions * writers.STEPS
        assert await count(select(func.count()).select_from(ExecutionStep)) == steps
        assert (
            await count(select(func.count()).where(col(ExecutionStep.status) == StepStatus.COMPLETED))
            == steps
        )
        keys = select(col(ExecutionStep.execution_id), col(ExecutionStep.key)).distinct().subquery()
        assert await count(select(func.count()).select_from(keys)) == steps
        assert await count(select(func.count()).select_from(AgentType)) == writers.STEPS
        assert await count(select(func.count()).select_from(Topology)) == 1
        assert await count(select(func.count()).select_from(TopologyMembership)) == writers.STEPS


async def _store_team(url: str) -> None:
    async with Database(url) as db:
        await db.save_team(*writers.team())


async def _run_concurrently(url: str, executions: int = EXECUTIONS) -> None:
    runner = AsyncRunner(db_url=url, max_concurrent=4)
    topology, agents = writers.team()
    results = await asyncio.gather(
        *(runner.run(topology, agents, {"prompt": f"task {i}"}) for i in range(executions)),
        return_exceptions=True,
    )
    raised = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    assert not raised, raised[:3]
    errors = [r.error for r in results if not isinstance(r, BaseException) and r.status != "completed"]
    assert not errors, errors[:3]
    await _assert_rows(url, executions)


async def test_hundred_concurrent_executions_in_one_process(db_url):
    await _store_team(db_url)
    await _run_concurrently(db_url)


async def test_concurrent_first_runs_of_an_unstored_team(db_url):
    await _run_concurrently(db_url, executions=20)


async def test_concurrent_executions_stay_within_one_connection_pool(db_url):
    """50 concurrent executions in one process hold no more connections than one engine's pool allows."""
    if not db_url.startswith("postgresql"):
        pytest.skip("connections are counted on PostgreSQL")
    import asyncpg

    await _store_team(db_url)
    monitor = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            count = await monitor.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            peak = max(peak, count)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        await _run_concurrently(db_url, executions=50)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await monitor.close()
    assert peak <= 10 + 20, f"{peak} connections for 50 executions"  # the engine's pool_size + max_overflow


@pytest.mark.slow
async def test_four_processes_of_twenty_five_executions(db_url, worker_env):
    await _store_team(db_url)
    per_process = EXECUTIONS // PROCESSES
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "writer_worker.py"),
            db_url,
            str(per_process),
            f"p{index}",
            # at most 4 × 10 connections: a server that other databases share has room for them
            env={**worker_env, "QMCP_DB_POOL_SIZE": "4", "QMCP_DB_MAX_OVERFLOW": "6"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for index in range(PROCESSES)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in processes))
    runs = []
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr.decode()[-3000:]
        locked = [line for line in stderr.decode().splitlines() if "database is locked" in line]
        assert not locked, locked[:3]
        runs.extend(json.loads(stdout.decode().strip().splitlines()[-1]))
    failed = [r for r in runs if r["status"] != "completed"]
    assert len(runs) == EXECUTIONS and not failed, failed
    await _assert_rows(db_url)
