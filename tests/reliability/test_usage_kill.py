"""Usage after SIGKILL: what a killed attempt paid is counted once its execution is resumed.

A real process runs a pipeline and is killed with SIGKILL while a call is in flight; the model
writes a line for every call it answers (`usage_worker.py`). After the resume, the execution's
totals and the sum of its usage rows equal the calls the model answered, the killed attempt's
included. A call killed before its answer came back is not counted: nothing knows what it used
(docs/executions.md says so).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import usage_worker
from _eventually import eventually_async

from qmcp.agentframework.llm import register_model, unregister_model
from qmcp.agentframework.models import ExecutionStatus, StepStatus, Usage
from qmcp.agentframework.runners import LocalRunner
from qmcp.agentframework.store import Database

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent


def _answered(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def _steps_done(url: str, count: int) -> bool:
    async with Database(url, read_only=True) as db:
        executions = await db.list_executions()
        steps = await db.list_steps(executions[0].id) if executions else []
    return sum(s.status == StepStatus.COMPLETED for s in steps) >= count


async def test_a_killed_attempts_paid_calls_are_counted_after_resume(db_url, tmp_path, worker_env):
    answered = tmp_path / "answered"
    worker = subprocess.Popen(
        [sys.executable, str(HERE / "usage_worker.py"), db_url, str(answered)],
        env=worker_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await eventually_async(lambda: worker.poll() is not None or _answered(answered) >= 3, "three answers")
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
        # the third step's row is committed before the last call starts; that call never answers
        await eventually_async(lambda: _steps_done(db_url, 3), "three recorded steps")
        await asyncio.sleep(0.2)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL

    async with Database(db_url) as db:
        (killed,) = await db.list_executions()
        before = await db.list_usage(killed.id)
    assert killed.status == ExecutionStatus.INTERRUPTED  # its owner is gone
    assert sum((row.usage for row in before), Usage()).requests == 3  # what the killed attempt paid

    # The resume answers the stalled stage at once, through the same counting model.
    register_model(usage_worker.ANSWERING, usage_worker.counting(str(answered)).model)
    register_model(usage_worker.STALLING, usage_worker.counting(str(answered)).model)
    try:
        resumed = await LocalRunner(db_url=db_url).resume(killed.id)
    finally:
        unregister_model(usage_worker.ANSWERING)
        unregister_model(usage_worker.STALLING)
    assert resumed.status == ExecutionStatus.COMPLETED, resumed.error
    calls = len(answered.read_text().splitlines())
    async with Database(db_url) as db:
        stored = await db.get_execution(killed.id)
        rows = await db.list_usage(killed.id)
    paid = sum((row.usage for row in rows), Usage())
    assert calls == 4  # three before the kill, one on resume
    assert stored.requests == paid.requests == calls
    assert stored.usage == paid and resumed.usage == paid
    assert len({row.owner_token for row in rows}) == 2 and not any(row.displaced for row in rows)
