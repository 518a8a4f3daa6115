"""The step store contract, passed by every store (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from _clock import FakeClock

from qmcp.agentframework import flowcall
from qmcp.agentframework.errors import InvalidConfigError, LeaseLostError
from qmcp.agentframework.models import Execution, StepStatus
from qmcp.agentframework.store import Database, MemoryStepStore, Owner, StepRecord, StepStore, create_engine


@pytest.fixture(params=["memory", "sql"])
async def store(request, db_url):
    if request.param == "memory":
        yield MemoryStepStore(), None
        return
    async with Database(db_url) as db:
        yield db.steps, db


async def _execution(db: Database | None) -> uuid.UUID:
    execution = Execution(topology_name="t", topology_type="pipeline")
    if db is not None:
        await db.executions.create(execution, None, runner="local")
    return execution.id


async def test_save_then_load_completed(store):
    steps, db = store
    assert isinstance(steps, StepStore)
    eid = await _execution(db)
    await steps.save(StepRecord(eid, "a", "s", "agent", "test", response="one", input_tokens=3))
    await steps.save(StepRecord(eid, "b", "s", "agent", "test", status=StepStatus.FAILED, error="boom"))
    loaded = await steps.completed_steps(eid)
    assert list(loaded) == ["a"]
    assert (loaded["a"].response, loaded["a"].input_tokens, loaded["a"].slot) == ("one", 3, "s")


async def test_a_key_is_one_row_and_the_last_write_wins(store):
    steps, db = store
    eid = await _execution(db)
    await steps.save(StepRecord(eid, "k", "s", "agent", "test", status=StepStatus.FAILED, error="first try"))
    await steps.save(StepRecord(eid, "k", "s", "agent", "test", response="second try", attempts=2))
    loaded = await steps.completed_steps(eid)
    assert loaded["k"].response == "second try" and loaded["k"].attempts == 2
    if db is not None:
        rows = await db.list_steps(eid)
        assert len(rows) == 1 and rows[0].error is None


async def test_executions_are_isolated(store):
    steps, db = store
    one, two = await _execution(db), await _execution(db)
    await steps.save(StepRecord(one, "k", "s", "agent", "test", response="1"))
    assert await steps.completed_steps(two) == {}


@pytest.mark.parametrize("batch", [True, False])
async def test_concurrent_saves_are_all_durable_and_grouped_when_asked(store, batch, monkeypatch):
    steps, db = store
    eid = await _execution(db)
    transactions = []
    if db is not None:
        write = type(steps)._write

        async def counting(self, rows):
            transactions.append(len(rows))
            return await write(self, rows)

        monkeypatch.setattr(type(steps), "_write", counting)
    await asyncio.gather(
        *[
            steps.save(StepRecord(eid, f"k{i}", "s", "agent", "test", response=str(i)), batch=batch)
            for i in range(300)
        ]
    )
    loaded = await steps.completed_steps(eid)
    assert len(loaded) == 300 and loaded["k299"].response == "299"
    if db is not None:
        assert sum(transactions) == 300
        assert len(transactions) < 10 if batch else len(transactions) == 300


async def test_a_closed_database_leaves_its_engine_for_the_next_one_on_the_url(db_url):
    """Compiled statements survive between runs; the connections do not."""
    async with Database(db_url) as first:
        engine = first.engine
        await first.list_agents()
    assert engine.pool.checkedout() == 0 and engine.pool.checkedin() == 0
    async with Database(db_url) as second, Database(db_url) as concurrent:
        assert second.engine is engine and concurrent.engine is engine
        assert await second.list_agents() == []


def test_an_idle_engine_is_reused_from_another_event_loop(sqlite_url):
    async def open_and_query() -> object:
        async with Database(sqlite_url) as db:
            await db.list_agents()
            return db.engine

    assert asyncio.run(open_and_query()) is asyncio.run(open_and_query())


@pytest.mark.parametrize("url", ["mysql://x/y", "not a url"])
def test_unsupported_database_urls(url):
    with pytest.raises(InvalidConfigError):
        create_engine(url)


async def test_sqlite_runs_in_wal_mode(sqlite_url):
    async with Database(sqlite_url) as db, db.engine.connect() as conn:
        mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
        timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
    assert (mode, timeout) == ("wal", 30_000)


async def test_closing_a_sqlite_database_leaves_the_wal_to_the_next_run(tmp_path):
    """The last connection to close would checkpoint the whole WAL (5 ms per 200-step run)."""
    from qmcp.agentframework.store import _engine

    url = f"sqlite+aiosqlite:///{tmp_path}/wal.db"
    async with Database(url) as db:
        eid = await _execution(db)
        for i in range(50):
            await db.steps.save(StepRecord(eid, f"k{i}", "s", "agent", "test", response="r" * 200))
    assert (tmp_path / "wal.db-wal").stat().st_size > 0
    async with Database(url) as db:
        assert len(await db.steps.completed_steps(eid)) == 50
    for n in range(_engine._IDLE_URLS + 3):  # open files stay bounded
        async with Database(f"sqlite+aiosqlite:///{tmp_path}/other{n}.db") as db:
            await db.list_agents()
    assert len(_engine.engine_cache().wal_holders) <= _engine._IDLE_URLS
    assert len(_engine.engine_cache().inline_engines) <= _engine._IDLE_URLS


async def test_the_step_writers_connection_is_kept_for_the_files_next_run(tmp_path):
    """Opening it again cost each run about 0.5 ms (the schema parsed again); a closed file keeps none."""
    from qmcp.agentframework.store import _engine

    url = f"sqlite+aiosqlite:///{tmp_path}/kept.db"
    connections = []
    for run in range(2):
        async with Database(url) as db:
            eid = await _execution(db)
            await db.steps.save(StepRecord(eid, "k", "s", "agent", "test", response=str(run)))
            connections.append(db.steps._sqlite._inline)  # type: ignore[union-attr]
    assert connections[0] is connections[1]
    kept = _engine.engine_cache().checkpointers[url]
    assert kept._writers == [connections[1]]
    _engine.close_engines()
    assert kept._writers == []
    with pytest.raises(Exception, match="closed"):
        connections[1].execute("SELECT 1")


async def test_a_run_start_stores_its_team_and_writes_nothing_when_it_is_stored_already(sqlite_url):
    """`store_team` reads the stored rows; only a difference from the definitions given is written."""
    from qmcp.agentframework.models import AgentType, Topology

    agent = AgentType(name="writer", config={"model": "test"})
    topology = Topology(name="team", topology_type="pipeline", config={})
    async with Database(sqlite_url) as db:
        first = await db.store_team(topology, {"a": agent, "b": agent})
        stored, _ = await db.get_topology("team")
        before = (stored.updated_at, (await db.get_agent("writer")).updated_at)
        writes = []
        db._write = lambda work, **_: writes.append(work)  # type: ignore[method-assign]
        assert await db.store_team(topology, {"a": agent, "b": agent}) == first
        assert writes == []
        del db._write
        changed = AgentType(name="writer", config={"model": "test", "temperature": 0.5})
        for team in ({"a": changed, "b": changed}, {"b": agent, "a": agent}, {"a": agent}):
            assert await db.store_team(topology, team) == first
            _, slots = await db.get_topology("team")
            assert (
                list(slots) == list(team) and slots[next(iter(team))].config == team[next(iter(team))].config
            )
        assert (await db.get_agent("writer")).updated_at != before[1]


async def test_steps_reach_the_sqlite_file_through_a_checkpoint_in_a_thread(tmp_path):
    """Every `CHECKPOINT_EVERY` commits the step writer has a thread copy the WAL into the database
    file (a passive checkpoint: the steps go on committing), so no step's commit waits for the
    checkpoint's fsyncs; without it the WAL is copied only past `WAL_CHECKPOINT_PAGES`, by the commit
    that crosses."""
    import shutil
    import sqlite3

    from qmcp.agentframework.store import _engine

    url = f"sqlite+aiosqlite:///{tmp_path}/steps.db"
    async with Database(url) as db:
        eid = await _execution(db)
        for i in range(_engine.CHECKPOINT_EVERY):
            await db.steps.save(StepRecord(eid, f"k{i}", "s", "agent", "test", response="r"))
        _engine.engine_cache().checkpointers[url].wait()
        shutil.copy(tmp_path / "steps.db", tmp_path / "file-only.db")  # the file, without its WAL
    copy = sqlite3.connect(tmp_path / "file-only.db")
    try:
        assert copy.execute("SELECT count(*) FROM execution_steps").fetchone()[0] == _engine.CHECKPOINT_EVERY
    finally:
        copy.close()


async def test_sqlite_connections_that_write_checkpoint_the_wal_only_past_qmcps_threshold(tmp_path):
    """The step writer's, the engine's and the inline engine's connections checkpoint in a commit only
    past `WAL_CHECKPOINT_PAGES` (SQLite's 1,000 pages were crossed by every 200-step run): the file's
    `Checkpointer` thread copies the WAL before that."""
    from sqlalchemy import text

    async with Database(f"sqlite+aiosqlite:///{tmp_path}/wal.db") as db:
        eid = await _execution(db)
        await db.steps.save(StepRecord(eid, "a", "s", "agent", "test", response="r"), fence=None)
        writer = db.steps._sqlite._inline  # type: ignore[attr-defined]
        assert writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == flowcall.WAL_CHECKPOINT_PAGES
        async with db.engine.connect() as conn:
            pages = (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one()
        assert pages == flowcall.WAL_CHECKPOINT_PAGES
        assert writer.execute("PRAGMA journal_size_limit").fetchone()[0] == flowcall.WAL_FILE_BYTES
        assert db._inline is not None
        with db._inline.connect() as inline:
            assert (
                inline.execute(text("PRAGMA wal_autocheckpoint")).scalar_one()
                == flowcall.WAL_CHECKPOINT_PAGES
            )


async def test_a_sqlite_wal_that_starts_over_is_cut_back_on_disk(tmp_path):
    """SQLite reuses a WAL file without shrinking it; qmcp's writing connections cut it back to
    `WAL_FILE_BYTES` when the WAL starts over, so a WAL grown towards `WAL_CHECKPOINT_PAGES` does not
    stay 16 MB on disk for the file's lifetime."""
    from sqlalchemy import text

    path = tmp_path / "wal.db"
    wal = tmp_path / "wal.db-wal"
    async with Database(f"sqlite+aiosqlite:///{path}") as db:
        eid = await _execution(db)
        big = "x" * 200_000
        for i in range(40):  # about 8 MB of step rows, none checkpointed by a commit
            await db.steps.save(StepRecord(eid, f"k{i}", "s", "agent", "test", response=big), fence=None)
        grown = wal.stat().st_size
        assert grown > 2 * flowcall.WAL_FILE_BYTES
        async with db.engine.connect() as conn:
            busy = (await conn.execute(text("PRAGMA wal_checkpoint(PASSIVE)"))).first()
        assert busy is not None and busy[0] == 0
        await db.steps.save(StepRecord(eid, "after", "s", "agent", "test", response="r"), fence=None)
        assert wal.stat().st_size <= flowcall.WAL_FILE_BYTES < grown


async def test_execution_writes_wait_for_a_sqlite_file_another_process_is_writing(tmp_path):
    """Execution rows are written in the loop's thread without waiting; a locked file makes
    them wait on the engine's thread instead, so neither the loop blocks nor the write fails."""
    import sqlite3

    from qmcp.agentframework.models import ExecutionStatus

    url = f"sqlite+aiosqlite:///{tmp_path}/locked.db"
    async with Database(url) as db:
        execution = Execution(topology_name="t", topology_type="pipeline")
        lease = await db.executions.create(execution, Owner.this_process(), runner="local")
        other = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the write lock, as another process's transaction holds it
        finishing = asyncio.create_task(db.executions.finish(lease, ExecutionStatus.COMPLETED))
        await asyncio.sleep(0.2)
        assert not finishing.done()  # waiting for the lock, and the loop still runs
        other.execute("COMMIT")
        other.close()
        assert await finishing is not None
        assert await db.executions.finish(lease, ExecutionStatus.FAILED, error="late") is None  # released
        stored = await db.get_execution(execution.id)
    assert (stored.status, stored.error, stored.owner_token) == (ExecutionStatus.COMPLETED, None, None)


async def test_a_short_lock_is_waited_for_inline_not_on_the_engine(tmp_path, monkeypatch):
    """A write finding the file locked for a moment tries again in the loop's thread: on the engine it
    would sleep in SQLite's busy handler and then hold the lock across awaits, sending the writes
    after it to the engine too (run starts waited seconds in that convoy)."""
    import sqlite3

    url = f"sqlite+aiosqlite:///{tmp_path}/short.db"
    async with Database(url) as db:
        await db.list_agents()
        on_engine: list[object] = []
        monkeypatch.setattr(db, "_write_on_engine", lambda work: on_engine.append(work))
        other = sqlite3.connect(tmp_path / "short.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        asyncio.get_running_loop().call_later(0.02, other.execute, "COMMIT")
        execution = Execution(topology_name="t", topology_type="pipeline")
        await db.executions.create(execution, None, runner="local")
        other.close()
        assert on_engine == []
        assert (await db.get_execution(execution.id)).topology_name == "t"


async def test_an_execution_row_slow_to_write_twice_in_a_row_is_written_on_the_engine(tmp_path, monkeypatch):
    """A huge team's row is slow at every write: its writes go to the engine's thread. A small row's
    write slowed once (the process preempted: here, asleep) stays inline."""
    import time

    from sqlalchemy import text

    from qmcp.agentframework.store import _database

    async with Database(f"sqlite+aiosqlite:///{tmp_path}/slow.db") as db:
        await db.list_agents()
        on_engine: list[object] = []

        async def engine_write(work, **_options):
            on_engine.append(work)
            return None

        monkeypatch.setattr(db, "_write_on_engine", engine_write)
        once, twice = uuid.uuid4(), uuid.uuid4()

        def slow(session):
            session.execute(text("SELECT 1"))
            time.sleep(2 * _database._SLOW_INLINE_SECONDS)

        def fast(session):
            session.execute(text("SELECT 1"))

        for row in (once, twice):
            await db._write(slow, row=row)
        await db._write(fast, row=once)
        await db._write(slow, row=once)
        await db._write(slow, row=twice)
        assert on_engine == []
        await db._write(fast, row=once)
        await db._write(fast, row=twice)
        assert on_engine == [fast]


async def test_a_slow_rows_write_on_the_engine_is_committed_and_checkpointed_by_the_checkpointer(tmp_path):
    """A slow row's write commits without SQLite's automatic checkpoint, which the file's checkpointer
    thread makes instead; the pooled connection gets its automatic checkpoint back."""
    from sqlalchemy import text

    async with Database(f"sqlite+aiosqlite:///{tmp_path}/big.db") as db:
        execution = Execution(topology_name="t", topology_type="pipeline")
        await db.executions.create(execution, None, runner="local")
        db._slow_rows.add(execution.id)

        async def automatic_checkpoint() -> int:
            async with db.engine.connect() as conn:  # the pool's one connection: the one that writes
                return int((await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one())

        pages = await automatic_checkpoint()
        assert db._checkpointer is not None and pages > 0
        checkpoints: list[None] = []
        request = db._checkpointer.request
        db._checkpointer.request = lambda: (checkpoints.append(None), request())[-1]  # type: ignore[method-assign]
        assert await db.execute_update(execution.id, {"error": "written"})
        assert checkpoints == [None]
        assert (await db.stored_execution(execution.id)).error == "written"
        assert await automatic_checkpoint() == pages


async def test_fenced_saves_write_nothing_for_an_execution_another_owner_holds(db_url):
    """A step write carries its lease's token; the rows of an execution claimed by another owner
    are not written, alone or in a batch with rows of executions still owned."""
    async with Database(db_url) as db:
        mine, theirs = (Execution(topology_name="t", topology_type="pipeline") for _ in range(2))
        my_lease = await db.executions.create(mine, Owner.this_process(), runner="local")
        stale = await db.executions.create(theirs, Owner.this_process(), runner="local")
        assert my_lease is not None and stale is not None
        await db.steps.save(
            StepRecord(mine.id, "a", "s", "agent", "test", response="1"), fence=my_lease.token
        )
        await db.steps.save(StepRecord(theirs.id, "a", "s", "agent", "test", response="1"), fence=stale.token)
        # another process takes `theirs` over (force: this process is alive)
        await db.executions.claim(
            theirs.id, Owner.this_process(), runner="local", runner_options={}, run_config={}, force=True
        )
        with pytest.raises(LeaseLostError):
            await db.steps.save(
                StepRecord(theirs.id, "a", "s", "agent", "test", response="overwritten"), fence=stale.token
            )
        outcomes = await asyncio.gather(
            *[
                db.steps.save(
                    StepRecord(eid, f"b{i}", "s", "agent", "test", response="2"), batch=True, fence=fence
                )
                for i in range(5)
                for eid, fence in ((mine.id, my_lease.token), (theirs.id, stale.token))
            ],
            return_exceptions=True,
        )
        assert [type(o).__name__ for o in outcomes] == ["NoneType", "LeaseLostError"] * 5
        assert set(await db.steps.completed_steps(mine.id)) == {"a", "b0", "b1", "b2", "b3", "b4"}
        theirs_steps = await db.steps.completed_steps(theirs.id)
        assert list(theirs_steps) == ["a"] and theirs_steps["a"].response == "1"


async def test_a_batch_from_a_stalled_owner_writes_none_of_its_steps(db_url):
    """A whole batched commit from an owner whose lease was taken over: its N steps share one
    transaction and one fence check, none of them is written, every save raises `LeaseLostError`,
    and each paid call is kept as a displaced usage row; the new owner then writes its own steps."""
    async with Database(db_url) as db:
        execution = Execution(topology_name="t", topology_type="ensemble")
        stalled = await db.executions.create(execution, Owner.this_process(), runner="async")
        assert stalled is not None
        await db.steps.save(
            StepRecord(execution.id, "before", "s", "agent", "test", response="kept"), fence=stalled.token
        )
        _, new = await db.executions.claim(
            execution.id, Owner.this_process(), runner="async", runner_options={}, run_config={}, force=True
        )
        assert new is not None
        members = [f"ensemble/member:m{i}" for i in range(50)]
        outcomes = await asyncio.gather(
            *[
                db.steps.save(
                    StepRecord(execution.id, key, "s", "agent", "test", response="late", input_tokens=5),
                    batch=True,
                    fence=stalled.token,
                )
                for key in members
            ],
            return_exceptions=True,
        )
        assert all(isinstance(outcome, LeaseLostError) for outcome in outcomes), outcomes
        assert list(await db.steps.completed_steps(execution.id)) == ["before"]
        usage = await db.list_usage(execution.id)
        assert sorted((r.key, r.owner_token, r.displaced) for r in usage) == sorted(
            [("before", stalled.token, False), *((key, stalled.token, True) for key in members)]
        )
        await asyncio.gather(
            *[
                db.steps.save(
                    StepRecord(execution.id, key, "s", "agent", "test", response="new"),
                    batch=True,
                    fence=new.token,
                )
                for key in members
            ]
        )
        steps = await db.steps.completed_steps(execution.id)
    assert sorted(steps) == sorted(["before", *members])
    assert {steps[key].response for key in members} == {"new"}


async def test_steps_finding_their_lease_stale_at_once_share_one_renewal(db_url, monkeypatch):
    """A stalled loop sends every step in flight through `Lease.ensure` at once: they wait for one
    renewal, not one each (a wide ensemble's 1,000 would take every pooled connection)."""
    async with Database(db_url) as db:
        db.executions.clock = clock = FakeClock()
        execution = Execution(topology_name="t", topology_type="ensemble")
        lease = await db.executions.create(execution, Owner.this_process(), runner="async")
        assert lease is not None
        renewals = 0
        renew = db.executions.renew

        async def counted(lease_: Any) -> Any:
            nonlocal renewals
            renewals += 1
            await asyncio.sleep(0.01)  # the statement's round trip: the other steps arrive meanwhile
            return await renew(lease_)

        monkeypatch.setattr(db.executions, "renew", counted)
        clock.advance(lease.ttl - lease.interval + 1)
        await asyncio.gather(*[lease.ensure() for _ in range(100)])
        assert renewals == 1 and lease.lost is None
        clock.advance(lease.ttl - lease.interval + 1)  # stale again: the next renewal is a new one
        await lease.ensure()
        assert renewals == 2


async def test_json_columns_store_what_the_json_module_stores(sqlite_url):
    """pydantic-core encodes JSON columns; what it refuses (lone surrogates, deep nesting), or
    cannot read back (such rows written by earlier versions), goes through `json` instead."""
    deep: dict[str, object] = {}
    current = deep
    for _ in range(300):
        current["x"] = {}
        current = current["x"]  # type: ignore[assignment]
    async with Database(sqlite_url) as db:
        execution = Execution(
            topology_name="t", topology_type="pipeline", input_data={"p": "\ud83d", "deep": deep}
        )
        await db.executions.create(execution, None, runner="local")
        await db.steps.save(StepRecord(execution.id, "k", "s", "agent", "test", output={"x": "\ud83d"}))
        stored = await db.get_execution(execution.id)
        steps = await db.steps.completed_steps(execution.id)
    assert stored.input_data == {"p": "\ud83d", "deep": deep}
    assert steps["k"].output == {"x": "\ud83d"}


async def test_an_execution_read_without_its_snapshots_leaves_them_unread(db_url):
    """The server's polled read leaves the team snapshots (megabytes for a wide team) in the row;
    the rest reads as a full read does, and a snapshot read by mistake raises rather than reads empty."""
    from sqlalchemy.orm.exc import DetachedInstanceError

    from qmcp.app import ExecutionOut

    team = {f"slot{i}": {"agent": "a" * 40} for i in range(200)}
    async with Database(db_url) as db:
        execution = Execution(topology_name="t", topology_type="ensemble", teams_snapshot=team)
        execution.topology_snapshot = {"name": "t"}
        await db.executions.create(execution, None, runner="local")
        full = await db.get_execution(execution.id)
        shown = await db.get_execution(execution.id, snapshots=False)
        assert full.teams_snapshot == team and full.topology_snapshot == {"name": "t"}
        assert not {"topology_snapshot", "agents_snapshot", "teams_snapshot"} & set(shown.__dict__)
        assert ExecutionOut.of(shown, full=True) == ExecutionOut.of(full, full=True)
        with pytest.raises(DetachedInstanceError):
            _ = shown.teams_snapshot
        assert (await db.get_execution(execution.id)).teams_snapshot == team  # each read as asked


async def test_a_run_start_writes_its_team_only_when_it_differs_from_the_stored_one(tmp_path):
    """`store_team` (a run's start) reads the stored team and writes nothing when it is the same; any
    difference (a slot's name, order or agent, an agent's definition, the topology's config, a slot more
    or less) saves the team given, as `save_team` would."""
    from qmcp.agentframework.models import AgentConfig, AgentType, Topology, TopologyType

    def member(name: str, temperature: float = 0.1) -> AgentType:
        return AgentType(name=name, config=AgentConfig(model="test", temperature=temperature).model_dump())

    shared = member("member")
    topology = Topology(
        name="wide", topology_type=TopologyType.ENSEMBLE, config={"aggregation_method": "vote"}
    )
    team = {f"m{i}": shared for i in range(50)}
    variants = [
        (topology, {**team, "m3": member("other")}),
        (topology, {f"n{i}": shared for i in range(50)}),
        (topology, dict(reversed(list(team.items())))),
        (topology, {slot: member("member", 0.2) for slot in team}),
        (topology.model_copy(update={"config": {"aggregation_method": "synthesis"}}), team),
        (topology, {**team, "m50": shared}),
        (topology, dict(list(team.items())[:-1])),
    ]
    async with Database(f"sqlite+aiosqlite:///{tmp_path}/teams.db") as db:
        topology_id = await db.store_team(topology, team)
        assert await db.store_team(topology, {slot: member("member") for slot in team}) == topology_id
        for changed_topology, changed in variants:
            assert await db.store_team(changed_topology, changed) == topology_id
            stored_topology, stored = await db.get_topology(topology.name)
            assert stored_topology.config == changed_topology.config
            assert {slot: agent.definition() for slot, agent in stored.items()} == {
                slot: agent.definition() for slot, agent in changed.items()
            }
            assert list(stored) == list(changed)
