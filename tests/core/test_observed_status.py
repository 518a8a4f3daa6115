"""Reads don't write: an execution whose owner is gone reads `interrupted`, its row stays as written.

Every reader goes through `Database.get_execution`, `find_execution`, `list_executions` and
`count_executions`, which give executions as `observed` shows them; only acting (claim, queue,
cancel, a server's start-up sweep) writes. On SQLite and on PostgreSQL (when configured).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from _clock import FakeClock

from qmcp.agentframework.errors import DatabaseUnavailableError
from qmcp.agentframework.models import Execution, ExecutionStatus
from qmcp.agentframework.models._agent import utcnow
from qmcp.agentframework.store import Database, Owner, close_engines

S = ExecutionStatus


def _dead_pid() -> int:
    """A pid no process can have: above the kernel's largest."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


async def _make(db: Database, owner: str, status: ExecutionStatus = S.RUNNING) -> uuid.UUID:
    """An execution stored in `status` whose owner is `live` (this process), `dead` (a pid that is
    gone), `expired` (a lease that ended), `elsewhere` (another host, lease running) or `none`."""
    execution = Execution(topology_name="t", topology_type="pipeline")
    if owner == "none":
        await db.executions.create(execution, None, runner="local")
    else:
        who = Owner.this_process(pid=_dead_pid() if owner == "dead" else None)
        await db.executions.create(execution, who, runner="local")
    values: dict[str, object] = {"status": status}
    if owner == "expired":
        values["lease_until"] = utcnow() - timedelta(seconds=5)
    if owner == "elsewhere":  # a pid on another host cannot be checked: its lease decides
        values["owner_host"] = "elsewhere"
    await db.execute_update(execution.id, values)
    return execution.id


async def _team(db: Database) -> dict[str, uuid.UUID]:
    return {owner: await _make(db, owner) for owner in ("live", "dead", "expired", "elsewhere", "none")} | {
        "stored interrupted": await _make(db, "none", S.INTERRUPTED),
        "completed": await _make(db, "none", S.COMPLETED),
    }


GONE = {"dead", "expired", "none"}


async def test_a_read_shows_interrupted_and_writes_nothing(db_url):
    async with Database(db_url) as db:
        ids = await _team(db)
        for owner in ("dead", "expired", "none"):
            before = await db.stored_execution(ids[owner])
            seen = await db.get_execution(ids[owner])
            assert seen.status == S.INTERRUPTED and seen.owner_token is None and seen.lease_until is None
            assert seen.error is not None and seen.error.startswith("interrupted: ")
            if owner != "none":
                gone = "its lease expired" if owner == "expired" else "it is gone"
                assert gone in seen.history[-1]["interrupted"]
            assert (await db.find_execution(str(ids[owner])[:12])).status == S.INTERRUPTED
            after = await db.stored_execution(ids[owner])
            assert after.status == S.RUNNING and after.owner_token == before.owner_token
            assert after.error is None and after.history == before.history
        for owner in ("live", "elsewhere"):
            assert (await db.get_execution(ids[owner])).status == S.RUNNING


async def test_status_filters_and_counts_follow_the_observed_status(db_url):
    async with Database(db_url) as db:
        ids = await _team(db)
        name = {value: key for key, value in ids.items()}

        async def listed(status: ExecutionStatus | list[ExecutionStatus] | None, **page: int) -> set[str]:
            rows = await db.list_executions(status=status, **page)
            wanted = {status} if isinstance(status, ExecutionStatus) else set(status or ExecutionStatus)
            assert all(row.status in wanted for row in rows)
            return {name[row.id] for row in rows}

        assert await listed(S.INTERRUPTED) == GONE | {"stored interrupted"}
        assert await listed(S.RUNNING) == {"live", "elsewhere"}
        assert await listed([S.RUNNING, S.COMPLETED]) == {"live", "elsewhere", "completed"}
        assert await listed(None) == set(ids)
        assert len(await listed(S.INTERRUPTED, limit=2)) == 2
        assert len(await listed(S.INTERRUPTED, limit=10, offset=3)) == 1
        for status, count in ((S.INTERRUPTED, 4), (S.RUNNING, 2), (S.COMPLETED, 1), (None, 7)):
            assert await db.count_executions(status=status) == count
        assert (await db.stored_execution(ids["dead"])).status == S.RUNNING  # the lists wrote nothing


async def test_a_lease_that_runs_out_reads_interrupted_from_then_on(db_url):
    async with Database(db_url) as db:
        db.executions.clock = clock = FakeClock()
        execution_id = await _make(db, "live")
        assert (await db.get_execution(execution_id)).status == S.RUNNING
        assert await db.count_executions(status=S.RUNNING) == 1
        clock.advance(db.executions.timing()[1] + 1)  # no heartbeat: the lease has run out
        assert (await db.get_execution(execution_id)).error == (
            f"interrupted: its owner (pid {os.getpid()} on {socket.gethostname()}) stopped running it "
            "(its lease expired)"
        )
        assert [e.id for e in await db.list_executions(status=S.INTERRUPTED)] == [execution_id]
        assert await db.count_executions(status=S.RUNNING) == 0
        assert (await db.stored_execution(execution_id)).status == S.RUNNING


async def test_acting_on_an_execution_whose_owner_is_gone_writes(db_url):
    async with Database(db_url) as db:
        ids = await _team(db)
        queued = await db.executions.queue(ids["dead"])  # a server resuming it
        assert queued.status == S.PENDING and queued.owner_token is None
        assert (await db.executions.queue(ids["live"])).status == S.RUNNING  # a live owner keeps it
        cancelled = await db.executions.request_cancel(ids["expired"])
        assert not cancelled.requested and cancelled.execution.status == S.CANCELLED
        # the sweep a server makes at start-up before resuming what a previous server left
        swept = await db.executions.reap(await db.list_executions(status=S.INTERRUPTED))
        assert {execution.id: execution.status for execution in swept} == {
            ids["none"]: S.INTERRUPTED,
            ids["stored interrupted"]: S.INTERRUPTED,
        }
        assert (await db.stored_execution(ids["none"])).status == S.INTERRUPTED
        assert (await db.stored_execution(ids["live"])).status == S.RUNNING


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Files made read-only for root too (`chattr +i`), made writable again at the end."""
    files: list[Path] = []
    yield files
    for path in files:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def _refuse_writes(path: Path, immutable: list[Path]) -> None:
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        immutable.append(path)
    elif os.geteuid() != 0:
        path.chmod(0o444)
    else:
        pytest.skip("cannot make a file read-only for root here (no chattr)")


@pytest.mark.slow  # chattr
@pytest.mark.parametrize("how", ["immutable file", "immutable file, rollback journal", "read-only URL"])
async def test_reads_work_on_a_database_that_cannot_be_written(tmp_path, immutable, how):
    path = tmp_path / "q.db"
    async with Database(f"sqlite+aiosqlite:///{path}") as db:
        ids = await _team(db)
    close_engines()  # what this process keeps open for the file: a new process would have none
    if how.endswith("rollback journal"):  # opening cannot switch it to WAL: that would be a write
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    if how.startswith("immutable file"):
        _refuse_writes(path, immutable)
        url = f"sqlite+aiosqlite:///{path}"
        with pytest.raises(DatabaseUnavailableError, match="read-only"):
            async with Database(url):  # a writer is refused at open, not mid-run
                pass
    else:
        url = f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true"
    try:
        async with Database(url, read_only=True) as db:
            assert (await db.get_execution(ids["dead"])).status == S.INTERRUPTED
            assert len(await db.list_executions(status=S.INTERRUPTED)) == 4
            assert await db.count_executions(status=S.RUNNING) == 2
            with pytest.raises(Exception, match="readonly"):  # the database really refuses writes
                await db.executions.queue(ids["dead"])
    finally:
        close_engines()
