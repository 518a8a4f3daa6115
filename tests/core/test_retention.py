"""Retention (`Database.prune`): old finished executions go with every row hanging off them; live runs,
the parents of kept forks and (by `keep_last`) each topology's newest stay; a dry run deletes nothing;
the SQLite file shrinks. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, update
from sqlmodel import col, select

from qmcp.agentframework.errors import InvalidConfigError
from qmcp.agentframework.models import (
    EvalRun,
    EvalScore,
    Execution,
    ExecutionStatus,
    ExecutionStep,
    HumanRequest,
    HumanResponse,
    StepUsage,
    Topology,
    utcnow,
)
from qmcp.agentframework.runners import LocalRunner
from qmcp.agentframework.store import Database, PruneFilter

OLD = timedelta(days=60)


async def _runs(db_url: str, agent: Any, topology: str, count: int, prompt: str = "x") -> list[uuid.UUID]:
    runner = LocalRunner(db_url=db_url)
    team = {"first": agent(f"{topology}-a", "writer"), "second": agent(f"{topology}-b", "critic")}
    shape = Topology(name=topology, topology_type="pipeline")
    ids = []
    for index in range(count):
        result = await runner.run(shape, team, {"prompt": f"{prompt} {index}"})
        assert result.status == "completed", result.error
        ids.append(result.execution_id)
    return ids


async def _set(db: Database, ids: list[uuid.UUID], **values: Any) -> None:
    async with db.engine.begin() as connection:
        await connection.execute(update(Execution).where(col(Execution.id).in_(ids)).values(**values))


async def _age(db: Database, ids: list[uuid.UUID], age: timedelta) -> None:
    when = utcnow() - age
    await _set(db, ids, created_at=when, started_at=when, completed_at=when)


async def _counts(db: Database) -> dict[str, int]:
    """Rows of every table a prune touches, and the orphans among them (must be 0)."""
    models: list[Any] = [Execution, ExecutionStep, StepUsage, HumanRequest, HumanResponse, EvalScore]
    async with db.engine.connect() as session:
        counts = {
            m.__tablename__: (await session.execute(select(func.count()).select_from(m))).scalar_one()
            for m in models
        }
        known = select(Execution.id)
        orphans = 0
        for model in (ExecutionStep, StepUsage, HumanRequest, EvalScore):
            orphans += (
                await session.execute(
                    select(func.count())
                    .select_from(model)
                    .where(col(model.execution_id).is_not(None), col(model.execution_id).not_in(known))
                )
            ).scalar_one()
        orphans += (
            await session.execute(
                select(func.count())
                .select_from(HumanResponse)
                .where(col(HumanResponse.request_id).not_in(select(HumanRequest.id)))
            )
        ).scalar_one()
        orphans += (
            await session.execute(
                select(func.count())
                .select_from(Execution)
                .where(col(Execution.parent_id).is_not(None), col(Execution.parent_id).not_in(known))
            )
        ).scalar_one()
    counts["orphans"] = orphans
    return counts


async def _ids(db: Database) -> set[uuid.UUID]:
    async with db.engine.connect() as connection:
        return set((await connection.execute(select(Execution.id))).scalars())


async def test_prune_keeps_live_runs_and_kept_forks_parents_and_leaves_no_orphan(db_url, agent):
    ids = await _runs(db_url, agent, "aging", 12)
    running, paused, pending, interrupted = ids[:4]
    kept_fork_parent, kept_fork = ids[4], ids[5]  # the fork is running: it stays, so its parent does
    grandparent, parent, child = ids[6], ids[7], ids[8]  # a chain of forks, all finished: all go
    recent = ids[9]
    plain, with_human = ids[10], ids[11]
    async with Database(db_url) as db:
        await _age(db, ids, OLD)
        await _age(db, [recent], timedelta(days=1))
        await _set(db, [running, kept_fork], status=ExecutionStatus.RUNNING)
        await _set(db, [paused], status=ExecutionStatus.PAUSED)
        await _set(db, [pending], status=ExecutionStatus.PENDING)
        await _set(db, [interrupted], status=ExecutionStatus.INTERRUPTED)
        await _set(db, [kept_fork], parent_id=kept_fork_parent, fork_key="pipeline/1:second")
        await _set(db, [parent], parent_id=grandparent)
        await _set(db, [child], parent_id=parent)
        async with db.sessions() as session, session.begin():
            session.add(HumanRequest(id=f"{with_human}:gate", prompt="ok?", execution_id=with_human))
            session.add(HumanRequest(id="a-client-question", prompt="unrelated"))
            session.add(EvalRun(id="ev1"))
        async with db.sessions() as session, session.begin():
            session.add(HumanResponse(request_id=f"{with_human}:gate", response="yes"))
            session.add(HumanResponse(request_id="a-client-question", response="no"))
            session.add(
                EvalScore(eval_id="ev1", sample_id="s1", variant="aging", execution_id=plain, score=1.0)
            )
        before = await _counts(db)

        result = await db.prune(PruneFilter(older_than=timedelta(days=30)), batch_size=2)

        left = await _ids(db)
        gone = {grandparent, parent, child, plain, with_human}
        assert left == set(ids) - gone
        assert {running, paused, pending, interrupted, kept_fork, kept_fork_parent, recent} <= left
        assert result.executions == len(gone) and set(result.ids) == gone
        assert result.kept_parents == 1  # kept_fork_parent: chosen by age and status, kept for its fork
        after = await _counts(db)
        assert after["orphans"] == 0
        assert after["executions"] == before["executions"] - len(gone)
        assert result.steps == before["execution_steps"] - after["execution_steps"] == 2 * len(gone)
        assert result.usage_rows == before["step_usage"] - after["step_usage"] == 2 * len(gone)
        assert (result.human_requests, result.human_responses) == (1, 1)
        assert after["human_requests"] == after["human_responses"] == 1  # the client's own question stays
        async with db.sessions() as session:
            score = (await session.exec(select(EvalScore))).one()
        assert score.execution_id is None and score.score == 1.0 and result.eval_scores_detached == 1
        assert result.bytes_before is not None and result.bytes_after is not None
        if result.database == "postgresql":
            assert result.compaction == "advised"
        else:
            assert result.compaction == "VACUUM"

        # interrupted goes only when asked for; running, paused and pending never
        again = await db.prune(
            PruneFilter(older_than=timedelta(days=30), statuses=frozenset({ExecutionStatus.INTERRUPTED}))
        )
        assert again.ids == [interrupted]
        with pytest.raises(InvalidConfigError, match="never deletes paused, pending, running"):
            PruneFilter(
                older_than=timedelta(0),
                statuses=frozenset(
                    {ExecutionStatus.RUNNING, ExecutionStatus.PAUSED, ExecutionStatus.PENDING}
                ),
            )


async def test_a_fork_whose_parent_goes_goes_first_and_a_whole_tree_goes(db_url, agent):
    ids = await _runs(db_url, agent, "tree", 5)
    root, left, right, leaf, other = ids
    async with Database(db_url) as db:
        await _age(db, ids, OLD)
        await _set(db, [left, right], parent_id=root)
        await _set(db, [leaf], parent_id=left)
        await _set(db, [other], status=ExecutionStatus.RUNNING)
        result = await db.prune(PruneFilter(older_than=timedelta(days=30)), batch_size=1)
        assert set(result.ids) == {root, left, right, leaf} and result.batches == 4
        assert await _ids(db) == {other}
        assert (await _counts(db))["orphans"] == 0


async def test_keep_last_keeps_each_topologys_newest(db_url, agent):
    first = await _runs(db_url, agent, "alpha", 4)
    second = await _runs(db_url, agent, "beta", 3)
    async with Database(db_url) as db:
        for age, execution in enumerate(reversed(first + second)):
            await _age(db, [execution], OLD + timedelta(hours=age))  # later runs are newer
        result = await db.prune(PruneFilter(older_than=timedelta(days=30), keep_last=2))
        assert set(result.ids) == {*first[:2], second[0]}
        assert await _ids(db) == {*first[2:], *second[1:]}
        only = await db.prune(PruneFilter(keep_last=1, topology="beta"))  # no age: the floor alone
        assert only.ids == [second[1]]


async def test_a_dry_run_counts_and_deletes_nothing(db_url, agent):
    ids = await _runs(db_url, agent, "dry", 4)
    async with Database(db_url) as db:
        await _age(db, ids[:3], OLD)
        before = await _counts(db)
        dry = await db.prune(PruneFilter(older_than=timedelta(days=30)), dry_run=True)
        assert await _counts(db) == before
        assert (dry.executions, dry.steps, dry.usage_rows) == (3, 6, 6) and dry.bytes_after is None
        done = await db.prune(PruneFilter(older_than=timedelta(days=30)))
        assert (done.executions, done.steps, done.usage_rows) == (dry.executions, dry.steps, dry.usage_rows)
        assert set(done.ids) == set(dry.ids)


async def test_a_prune_asked_to_stop_ends_between_batches(db_url, agent):
    ids = await _runs(db_url, agent, "stopping", 5)
    async with Database(db_url) as db:
        await _age(db, ids, OLD)
        asked: list[int] = []

        def stop() -> bool:
            asked.append(1)
            return len(asked) > 2

        result = await db.prune(PruneFilter(older_than=timedelta(days=30)), batch_size=1, stop=stop)
        assert result.stopped and result.executions == 2 and len(await _ids(db)) == 3
        assert (await _counts(db))["orphans"] == 0


def _file_bytes(path: str) -> int:
    return sum(os.path.getsize(f) for f in (path, f"{path}-wal") if os.path.exists(f))


async def test_pruning_shrinks_the_sqlite_file(sqlite_url, agent, tmp_path):
    """A few hundred runs with large prompts: the file measured on disk shrinks by most of their size.

    Measured with the WAL copied into the file first, as the prune measures it: the WAL holds newer
    copies of the file's pages (up to `WAL_CHECKPOINT_PAGES` of them), which file and WAL together
    would count twice."""
    path = str(tmp_path / "qmcp.db")
    ids = await _runs(sqlite_url, agent, "big", 300, prompt="lorem ipsum " * 1500)
    async with Database(sqlite_url) as db:
        await _age(db, ids[:270], OLD)
        copy = sqlite3.connect(path)
        try:
            assert copy.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not busy
        finally:
            copy.close()
        on_disk = _file_bytes(path)
        result = await db.prune(PruneFilter(older_than=timedelta(days=30)))
        shrunk = _file_bytes(path)
    assert result.executions == 270 and result.compaction == "VACUUM"
    assert shrunk < on_disk / 3, (on_disk, shrunk)
    assert result.bytes_after == shrunk and result.bytes_reclaimed is not None
    assert result.bytes_reclaimed > 0.6 * on_disk


async def test_an_incremental_file_is_compacted_incrementally(sqlite_url, agent, tmp_path):
    import sqlite3

    path = str(tmp_path / "qmcp.db")
    ids = await _runs(sqlite_url, agent, "inc", 20, prompt="lorem ipsum " * 1500)
    with sqlite3.connect(path) as connection:  # how an operator makes a file INCREMENTAL
        connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
        connection.execute("VACUUM")
    async with Database(sqlite_url) as db:
        await _age(db, ids, OLD)
        result = await db.prune(PruneFilter(older_than=timedelta(days=30)))
    assert result.compaction == "incremental_vacuum"
    assert result.bytes_after is not None and result.bytes_before is not None
    assert result.bytes_after < result.bytes_before / 2


async def test_without_vacuum_a_none_file_keeps_its_size_for_new_rows(sqlite_url, agent):
    ids = await _runs(sqlite_url, agent, "kept-size", 20, prompt="lorem ipsum " * 1500)
    async with Database(sqlite_url) as db:
        await _age(db, ids, OLD)
        result = await db.prune(PruneFilter(older_than=timedelta(days=30)), vacuum=False)
    assert result.executions == 20 and result.compaction == "none"
    assert result.bytes_after == result.bytes_before  # the WAL was checkpointed before: the file as it was


def test_a_filter_needs_an_age_or_a_floor_and_sane_values():
    with pytest.raises(InvalidConfigError, match="needs an age or a number to keep"):
        PruneFilter()
    with pytest.raises(InvalidConfigError, match="keep_last must be 0 or more"):
        PruneFilter(keep_last=-1)
    with pytest.raises(InvalidConfigError, match="at least one status"):
        PruneFilter(older_than=timedelta(0), statuses=frozenset())


async def test_a_batch_keeps_what_was_resumed_or_forked_since_the_plan(sqlite_url, agent, tmp_path):
    """Between the plan and its batch, one planned execution is resumed (running) and another gets a new
    fork that stays: each batch checks again under the write lock, so both stay, and nothing is orphaned."""
    import sqlite3

    ids = await _runs(sqlite_url, agent, "racing", 5)
    resumed, forked, live_fork = ids[2], ids[3], ids[4]
    async with Database(sqlite_url) as db:
        await _age(db, ids, OLD)
        await _set(db, [live_fork], status=ExecutionStatus.RUNNING)
        asked: list[int] = []

        def meanwhile() -> bool:  # asked before each batch: the first time, another process acts
            if not asked:
                with sqlite3.connect(tmp_path / "qmcp.db") as other:
                    other.execute("UPDATE executions SET status = 'running' WHERE id = ?", (resumed.hex,))
                    other.execute(
                        "UPDATE executions SET parent_id = ? WHERE id = ?", (forked.hex, live_fork.hex)
                    )
            asked.append(1)
            return False

        result = await db.prune(PruneFilter(older_than=timedelta(days=30)), batch_size=10, stop=meanwhile)
        assert set(result.ids) == {ids[0], ids[1]} and result.skipped == 2
        assert await _ids(db) == {resumed, forked, live_fork}
        assert (await _counts(db))["orphans"] == 0
