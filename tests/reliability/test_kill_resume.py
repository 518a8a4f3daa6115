"""Kill and resume: SIGKILL a mixed compound run at random moments, resume it, compare with an uninterrupted run.

Each trial stores the sub-teams, starts the compound (pipeline → ensemble → debate) on AsyncRunner
in a separate process, kills that process with SIGKILL at a random moment of its run, and resumes
the execution in this process with the same scripted models. Every trial must end with the output
of an uninterrupted run; no step completed before the kill may be called again; every step row is
there exactly once; no execution is left `running`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import reliability_team as team
from _eventually import eventually_async

from qmcp.agentframework.models import ExecutionStatus
from qmcp.agentframework.runners import AsyncRunner
from qmcp.agentframework.store import Database

pytestmark = pytest.mark.slow

TRIALS = 30
LATENCY = 0.03
HERE = Path(__file__).parent


class Worker:
    """The fork server (`kill_worker.py`): each `start(url)` runs one trial in a new child process."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "kill_worker.py"), str(LATENCY)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "ready"

    def start(self, url: str) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(url + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def worker(worker_env: dict[str, str]) -> Iterator[Worker]:
    server = Worker(worker_env)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _models() -> Iterator[None]:
    yield
    team.unregister()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _executions(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT count(*) FROM executions").fetchone()[0]


def _identity(system: str, prompt: str) -> str:
    """What the model is asked, as a step key's fingerprint: agents differ by system prompt."""
    return hashlib.sha256(f"{system}\x00{prompt}".encode()).hexdigest()


def _step_rows(path: Path) -> list[tuple[str, str, str, str]]:
    """(execution id, key, status, identity of the request) of every step row."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT execution_id, key, status, request FROM execution_steps").fetchall()
    out = []
    for execution_id, key, status, request in rows:
        data = json.loads(request)
        prompt = [m["content"] for m in data["messages"] if m["role"] == "user"][-1]
        out.append((execution_id, key, status, _identity(data["system"], prompt)))
    return out


async def _run_in_worker(worker: Worker, path: Path) -> int:
    await team.store_teams(f"sqlite+aiosqlite:///{path}")
    pid = worker.start(f"sqlite+aiosqlite:///{path}")
    await eventually_async(
        lambda: _executions(path) == 1 or not _alive(pid), "the execution row", every=0.002
    )
    return pid


async def test_sigkill_at_random_moments_then_resume(worker, tmp_path):
    rng = random.Random(int(os.environ.get("QMCP_RELIABILITY_SEED", "20261125")))

    # The uninterrupted run, in the worker like the trials: its output, its steps, its duration.
    reference_db = tmp_path / "reference.db"
    pid = await _run_in_worker(worker, reference_db)
    started = time.monotonic()
    await eventually_async(lambda: not _alive(pid), "the uninterrupted run", every=0.002)
    duration = time.monotonic() - started
    async with Database(f"sqlite+aiosqlite:///{reference_db}") as db:
        (reference,) = await db.list_executions()
    assert reference.status == ExecutionStatus.COMPLETED, reference.error
    reference_keys = sorted(key for _, key, _, _ in _step_rows(reference_db))
    assert len(reference_keys) == team.STEPS

    done_at_kill: list[int] = []
    for trial in range(TRIALS):
        path = tmp_path / f"trial-{trial}.db"
        url = f"sqlite+aiosqlite:///{path}"
        pid = await _run_in_worker(worker, path)
        await asyncio.sleep(rng.uniform(0, duration))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        await eventually_async(lambda pid=pid: not _alive(pid), "the killed process", every=0.002)

        rows = _step_rows(path)
        assert len({(e, k) for e, k, _, _ in rows}) == len(rows), f"trial {trial}: duplicated step rows"
        completed = {identity for _, _, status, identity in rows if status == "COMPLETED"}
        done_at_kill.append(len(completed))

        models = team.register()  # fresh models: they record only the calls of the resume
        async with Database(url) as db:
            (execution,) = await db.list_executions()
        resumed = await AsyncRunner(db_url=url, max_concurrent=4).resume(execution.id)
        assert resumed.status == ExecutionStatus.COMPLETED, f"trial {trial}: {resumed.error}"
        assert resumed.output == reference.output_data, (
            f"trial {trial}: output differs from the uninterrupted run"
        )

        called = Counter(_identity(c.system, c.prompt) for model in models.values() for c in model.calls)
        assert not completed & set(called), (
            f"trial {trial}: a step completed before the kill was called again"
        )
        assert set(called.values()) <= {1}, f"trial {trial}: a step was called twice on resume"
        assert len(completed) + len(called) == team.STEPS, f"trial {trial}: steps missing or extra"

        after = _step_rows(path)
        assert sorted(key for _, key, _, _ in after) == reference_keys, (
            f"trial {trial}: step rows lost or duplicated"
        )
        assert {status for _, _, status, _ in after} == {"COMPLETED"}
        async with Database(url) as db:
            statuses = [e.status for e in await db.list_executions()]
        assert statuses == [ExecutionStatus.COMPLETED], f"trial {trial}: {statuses}"

    mid_run = sum(1 for done in done_at_kill if 0 < done < team.STEPS)
    print(
        f"\nkill/resume: {TRIALS} trials, run {duration:.2f}s, {mid_run} killed mid-run "
        f"({sum(1 for d in done_at_kill if d == 0)} before the first step, "
        f"{sum(1 for d in done_at_kill if d == team.STEPS)} after the last), steps done at kill "
        f"min {min(done_at_kill)} median {sorted(done_at_kill)[TRIALS // 2]} max {max(done_at_kill)}, "
        f"{sum(team.STEPS - d for d in done_at_kill)} steps run on resume"
    )
    assert mid_run >= TRIALS // 2, f"only {mid_run} of {TRIALS} kills landed mid-run: {done_at_kill}"
