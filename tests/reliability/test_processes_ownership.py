"""Execution ownership across real processes: the `qmcp` CLI in subprocesses, on SQLite and PostgreSQL.

Every command runs through `ownership_driver.py` (qmcp with a scripted model whose calls are logged
to a file by every process), so the tests can count what each scenario paid for:

* two resumes at once: the remaining steps are called once, the second resume is refused or waits;
* a resume while the run is alive is refused, naming the owner;
* SIGKILL, then an immediate resume on the same host: the dead pid frees the lease at once;
* a stalled owner (SIGSTOP) whose lease expires is taken over; woken up, it writes nothing;
* a cancel from another process stops a local or async run within 2 s, in-flight calls cancelled;
* answers to one human request from many processes at once: exactly one is accepted;
* a file-size limit hit mid-run: a one-line error, the execution recorded or shown interrupted,
  and a resume finishes it.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _eventually import eventually_async

from qmcp.agentframework.models import Execution, ExecutionStatus, utcnow
from qmcp.agentframework.store import Database

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
STAGES = 6
QMCP = [sys.executable, "-c", "import sys; from qmcp.cli import main; sys.argv[0] = 'qmcp'; main()"]


class Driver:
    """`qmcp` (with `scripted:cli`) on one database, its calls logged to one file."""

    def __init__(self, db_url: str, tmp_path: Path, worker_env: dict[str, str]) -> None:
        self.db_url = db_url
        self.log = tmp_path / "calls.jsonl"
        self.cwd = tmp_path
        self.env = {**worker_env, "QMCP_DATABASE_URL": db_url, "DRIVER_CALL_LOG": str(self.log)}

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, str(HERE / "ownership_driver.py"), *args]

    def start(self, *args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            **kwargs,
        )

    def run(
        self, *args: str, env: dict[str, str] | None = None, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        process = self.start(*args, env=env, **kwargs)
        stdout, stderr = process.communicate(timeout=120)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def calls(self, kind: str = "done") -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [
            entry for entry in map(json.loads, self.log.read_text().splitlines()) if entry["kind"] == kind
        ]

    def forget_calls(self) -> None:
        self.log.unlink(missing_ok=True)

    def team(self, *, gated: bool = False) -> None:
        agents = [
            {"name": f"stage-{i}", "role": "writer", "config": {"model": "scripted:cli"}}
            for i in range(STAGES)
        ]
        if gated:
            agents[0]["config"]["capabilities"] = ["human_in_loop"]
        team = {
            "agents": agents,
            "topologies": [
                {"name": "six", "type": "pipeline", "agents": {f"s{i}": f"stage-{i}" for i in range(STAGES)}}
            ],
        }
        (self.cwd / "team.json").write_text(json.dumps(team))
        applied = self.run("apply", "-f", "team.json")
        assert applied.returncode == 0, applied.stderr

    async def execution(self, execution_id: str) -> Execution:
        async with Database(self.db_url) as db:
            return await db.get_execution(execution_id)

    async def only_execution(self) -> Execution:
        async with Database(self.db_url) as db:
            (execution,) = await db.list_executions()
        return execution


RUN = ("agents", "topologies", "run", "six", "--input-json", '{"prompt": "go"}')


@pytest.fixture
def qmcp(db_url: str, tmp_path: Path, worker_env: dict[str, str]) -> Driver:
    driver = Driver(db_url, tmp_path, worker_env)
    driver.team()
    return driver


async def _failed_at_stage_three(qmcp: Driver) -> str:
    failed = qmcp.run("--format", "json", *RUN, env={"DRIVER_FAIL_AGENT": "stage-3"})
    assert failed.returncode == 1, failed.stderr
    document = json.loads(failed.stdout)
    assert document["status"] == "failed"
    qmcp.forget_calls()
    return document["execution_id"]


@pytest.mark.parametrize("second", ["plain", "--wait"])
async def test_two_resumes_at_once_pay_for_the_remaining_steps_once(qmcp, second):
    """Whichever claims first runs the rest; the other is refused (or, with --wait, waits and finds it done)."""
    execution_id = await _failed_at_stage_three(qmcp)
    slow = {"DRIVER_LATENCY": "0.3"}
    wait = [second] if second == "--wait" else []
    resumes = [qmcp.start("executions", "resume", execution_id, *wait, env=slow) for _ in range(2)]
    ended = [(p, *p.communicate(timeout=120)) for p in resumes]
    outcomes = [(p.returncode, out, err) for p, out, err in ended]
    done = Counter(call["agent"] for call in qmcp.calls())
    assert done == Counter({"stage-3": 1, "stage-4": 1, "stage-5": 1}), (done, outcomes)
    codes = sorted(code for code, _, _ in outcomes)
    refused = [err for code, _, err in outcomes if code == 1]
    if second == "--wait":
        assert codes == [0, 0], outcomes
    else:
        assert codes in ([0, 0], [0, 1]), outcomes  # [0, 0]: the second came after the first had finished
        for err in refused:
            assert "is running in pid" in err and "Traceback" not in err
    finished = await qmcp.execution(execution_id)
    assert finished.status == ExecutionStatus.COMPLETED and finished.owner_token is None
    assert finished.attempts == 2  # a refused resume is not an attempt


async def test_a_resume_while_the_run_is_alive_is_refused(qmcp):
    run = qmcp.start(*RUN, env={"DRIVER_LATENCY": "1.5"})  # 9 s: the resume arrives well before the end
    await eventually_async(lambda: len(qmcp.calls()) >= 1, "the first step", every=0.01)
    execution = await qmcp.only_execution()
    refused = qmcp.run("executions", "resume", str(execution.id))
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and f"is running in pid {run.pid}" in refused.stderr
    assert run.wait(timeout=60) == 0
    assert Counter(call["agent"] for call in qmcp.calls()) == Counter(f"stage-{i}" for i in range(STAGES))


async def test_sigkill_then_an_immediate_resume_on_the_same_host(qmcp):
    run = qmcp.start(*RUN, env={"DRIVER_LATENCY": "0.3"})
    await eventually_async(lambda: len(qmcp.calls()) >= 2, "two steps", every=0.01)
    run.send_signal(signal.SIGKILL)
    run.wait()
    execution = await qmcp.only_execution()
    assert execution.status == ExecutionStatus.INTERRUPTED  # how it reads: its owner is gone
    async with Database(qmcp.db_url) as db:
        stored = await db.stored_execution(execution.id)
    assert stored.status == ExecutionStatus.RUNNING  # as the killed process left it: reads wrote nothing
    done_before = {call["agent"] for call in qmcp.calls()}
    started = time.monotonic()
    resumed = qmcp.run("executions", "resume", str(execution.id))
    assert resumed.returncode == 0, resumed.stderr
    assert time.monotonic() - started < 10  # no waiting for the 10 s lease to expire
    after = {call["agent"] for call in qmcp.calls()} - done_before
    assert done_before | after == {f"stage-{i}" for i in range(STAGES)} and not done_before & after
    final = await qmcp.execution(str(execution.id))
    assert final.status == ExecutionStatus.COMPLETED
    killed = f"pid {run.pid} on {stored.owner_host}"
    assert final.history[0]["interrupted"] == f"its owner ({killed}) stopped running it (it is gone)"


async def test_a_stalled_owner_is_taken_over_and_writes_nothing_when_it_wakes(qmcp):
    short = {"QMCP_LEASE_SECONDS": "1", "QMCP_HEARTBEAT_SECONDS": "0.2", "DRIVER_LATENCY": "0.8"}
    stalled = qmcp.start(*RUN, env=short)
    await eventually_async(
        lambda: len(qmcp.calls()) >= 1 and len(qmcp.calls("start")) >= 2, "the second call", every=0.01
    )
    _stop_outside_a_write(stalled, qmcp.db_url)
    execution = await qmcp.only_execution()
    async with Database(qmcp.db_url) as db:  # time passes: its lease ends, and nobody renews it
        await db.execute_update(execution.id, {"lease_until": utcnow() - timedelta(seconds=1)})
    resumed = qmcp.run("executions", "resume", str(execution.id), env=short)
    assert resumed.returncode == 0, resumed.stderr
    async with Database(qmcp.db_url) as db:
        rows_before_wake = [(s.key, s.response) for s in await db.list_steps(execution.id)]
    stalled.send_signal(signal.SIGCONT)
    _, stalled_err = stalled.communicate(timeout=60)
    assert stalled.returncode == 1
    assert "taken over by another process" in stalled_err and "Traceback" not in stalled_err
    async with Database(qmcp.db_url) as db:
        rows = [(s.key, s.response) for s in await db.list_steps(execution.id)]
        final = await db.get_execution(execution.id)
    assert rows == rows_before_wake  # the woken owner overwrote nothing
    assert all(f"by {stalled.pid}:" not in response for key, response in rows if key != "pipeline/0:s0")
    assert final.status == ExecutionStatus.COMPLETED
    assert f"stage-1 by {stalled.pid}" not in json.dumps(
        final.output_data
    )  # the stalled call's reply is nowhere
    assert final.history[0]["interrupted"].endswith("(its lease expired)")  # seen by the resume, then claimed


def _stop_outside_a_write(process: subprocess.Popen[str], db_url: str) -> None:
    """SIGSTOP `process` at a moment it holds no SQLite write lock: a writer stopped inside its
    transaction holds the file's lock, and SQLite has no server to end it (PostgreSQL ends such a
    session after a lease: tests/core/test_lifecycle.py). Stopped inside one, it is let go and tried again."""
    path = db_url.split("///", 1)[1] if db_url.startswith("sqlite") else None
    for _ in range(500):
        process.send_signal(signal.SIGSTOP)
        if path is None:
            return
        probe = sqlite3.connect(path, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            return
        except sqlite3.OperationalError:
            process.send_signal(signal.SIGCONT)
            time.sleep(0.005)
        finally:
            probe.close()
    raise AssertionError("the owner never left its write transaction")


@pytest.mark.parametrize("runner", ["local", "async"])
async def test_a_cancel_from_another_process_stops_the_run_within_two_seconds(qmcp, runner):
    run = qmcp.start(*RUN, "--runner", runner, env={"DRIVER_LATENCY": "30"})
    await eventually_async(lambda: len(qmcp.calls("start")) >= 1, "the first call", every=0.01)
    execution = await qmcp.only_execution()
    requested_at: list[datetime] = []
    before_request = [utcnow()]  # and when each read that saw neither the request nor the end began
    canceller = qmcp.start("executions", "cancel", str(execution.id))
    async with Database(qmcp.db_url) as db:

        async def requested() -> bool:
            began = utcnow()
            row = await db.get_execution(execution.id)
            if row.cancel_requested_at is not None:  # cleared again when the run releases the row
                requested_at.append(row.cancel_requested_at)
            elif row.completed_at is None:
                before_request.append(began)
            return row.cancel_requested_at is not None or row.completed_at is not None

        await eventually_async(requested, "the cancel request", every=0.005)
    await eventually_async(lambda: run.poll() is not None, "the run to stop", timeout=10, every=0.01)
    out, err = canceller.communicate(timeout=30)
    assert canceller.returncode == 0 and f"cancelled execution {execution.id}" in out, err
    _, run_err = run.communicate()
    assert run.returncode == 1 and "cancelled by request" in run_err
    final = await qmcp.execution(str(execution.id))
    assert (
        final.status == ExecutionStatus.CANCELLED and qmcp.calls() == []
    )  # the in-flight call was cancelled
    # from the request's row to the run's own record of its end, both stamped in the database, so the
    # interpreter's exit on a loaded machine is not counted. A run that stopped between two reads was
    # asked after the last read that saw no request began: that bounds the time from above.
    written = requested_at[0] if requested_at else before_request[-1]
    assert final.completed_at is not None
    stopped_after = (final.completed_at - written).total_seconds()
    assert stopped_after < 2.0, f"the {runner} run stopped {stopped_after:.2f}s after the cancel was written"
    print(f"\ncancel → {runner} run stopped in {stopped_after:.2f}s")


async def test_many_answers_to_one_human_request_accept_exactly_one(db_url, tmp_path, worker_env):
    qmcp = Driver(db_url, tmp_path, worker_env)
    qmcp.team(gated=True)
    paused = qmcp.run("--format", "json", "--model", "test", *RUN)
    document = json.loads(paused.stdout)
    assert document["status"] == "paused", paused.stderr
    request_id = document["error"].split("answer request ")[1].split(": ")[0]
    answers = [
        qmcp.start("executions", "respond", request_id, "approve" if i % 2 else "reject", "--no-resume")
        for i in range(6)
    ]
    outcomes = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in answers]
    accepted = [code for code, _ in outcomes if code == 0]
    assert len(accepted) == 1, outcomes
    assert all("already been responded to" in err for code, err in outcomes if code != 0), outcomes


async def test_a_file_size_limit_mid_run_is_one_line_then_resumable(sqlite_url, tmp_path, worker_env):
    qmcp = Driver(sqlite_url, tmp_path, worker_env)
    qmcp.team()
    database = Path(sqlite_url.split("///", 1)[1])
    budget = max(database.stat().st_size, database.with_name(database.name + "-wal").stat().st_size) + 300_000

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (budget, budget))

    big = {"DRIVER_REPLY_BYTES": "60000"}
    failed = qmcp.run("--quiet", *RUN, env=big, preexec_fn=limited)
    assert failed.returncode == 1, failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert lines[0].startswith("error: the database sqlite+aiosqlite:///"), failed.stderr
    assert lines[0].endswith(("disk I/O error", "database or disk is full")), failed.stderr
    assert len(lines) <= 2 and "Traceback" not in failed.stderr  # the error, and how to resume
    execution = await qmcp.only_execution()
    shown = qmcp.run("--format", "json", "executions", "show", str(execution.id))
    assert json.loads(shown.stdout)["status"] in ("failed", "interrupted"), shown.stdout
    resumed = qmcp.run("executions", "resume", str(execution.id), env=big)
    assert resumed.returncode == 0, resumed.stderr
    assert (await qmcp.execution(str(execution.id))).status == ExecutionStatus.COMPLETED


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite+aiosqlite:///{tmp}/no/such/dir/q.db", "does not exist"),
        ("sqlite+aiosqlite:///{tmp}/junk.db", "not a SQLite database"),
        ("postgresql+asyncpg://qmcp:secret@127.0.0.1:1/none", "no database server answers"),
    ],
)
def test_a_database_url_that_cannot_work_is_one_line_and_exit_2(tmp_path, worker_env, url, says):
    (tmp_path / "junk.db").write_text("not a database " * 100)
    done = subprocess.run(
        [*QMCP, "--db", url.format(tmp=tmp_path), "executions", "list"],
        capture_output=True,
        text=True,
        env=worker_env,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and says in done.stderr and "secret" not in done.stderr, done.stderr


def test_a_read_only_database_file_refuses_writers_in_one_line_and_serves_readers(tmp_path, worker_env):
    path = tmp_path / "ro.db"
    made = subprocess.run(
        [*QMCP, "--db", str(path), "executions", "list"], env=worker_env, capture_output=True
    )
    assert made.returncode == 0, made.stderr
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        if os.access(path, os.W_OK) and os.geteuid() == 0:
            pytest.skip("cannot make a file read-only for root here (no chattr)")
        path.chmod(0o444)
    try:
        done = subprocess.run(  # a command that writes: refused at open; one that reads works
            [*QMCP, "--db", str(path), "agents", "create", "a", "writer", "--model", "test"],
            capture_output=True,
            text=True,
            env=worker_env,
            timeout=60,
        )
        read = subprocess.run(
            [*QMCP, "--db", str(path), "executions", "list"], env=worker_env, capture_output=True, timeout=60
        )
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    assert done.returncode == 2 and "read-only" in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert read.returncode == 0, read.stderr
