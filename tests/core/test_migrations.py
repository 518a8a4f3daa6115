"""Schema migrations: a new database is made at the head revision by the migrations (matching the
models exactly), a database made before migrations existed is upgraded with its rows intact, and
databases qmcp cannot use are refused with one line."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, UniqueConstraint, inspect, text

from qmcp.agentframework.errors import DatabaseUnavailableError, InvalidConfigError
from qmcp.agentframework.models import ExecutionStatus, metadata
from qmcp.agentframework.runners import LocalRunner, RunConfig
from qmcp.agentframework.store import (
    SCHEMA_READY_VARIABLE,
    Database,
    MemoryStore,
    _engine,
    create_engine,
    engine_cache,
    migrate,
    schema_ready_variables,
    schema_revision,
)
from qmcp.agentframework.store._migrate import (
    HEAD,
    REVISIONS,
    SCRIPTS,
    VERSION_TABLE,
    PreBaselineSchemaError,
    SchemaBehindError,
    downgrade,
    read_revision,
    upgrade,
)

DATA = Path(__file__).parent / "data"
LEGACY_EXECUTION = {  # the completed run in each fixture, made by qmcp before it had migrations
    "sqlite": uuid.UUID("53365cb4-d8e7-4ad2-be5f-680e53c0d0ed"),
    "postgresql": uuid.UUID("6281494b-86ae-4e59-a900-a990aa7ffb44"),
}


def _dialect(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


async def _load_legacy(url: str) -> None:
    """Make the database of `url` as the pre-migration qmcp left it (`create_all`, rows in every table)."""
    if _dialect(url) == "sqlite":
        script = (DATA / "pre_migration_sqlite.sql").read_text()
        with sqlite3.connect(url.split("///", 1)[1]) as conn:
            conn.executescript(script)
        return
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute((DATA / "pre_migration_postgres.sql").read_text())
    finally:
        await conn.close()


async def _tables_and_diffs(url: str) -> tuple[set[str], list[Any]]:
    """The database's tables, and how its schema differs from the models (Alembic's autogenerate)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_compare)
    finally:
        await engine.dispose()


def _compare(conn: Connection) -> tuple[set[str], list[Any]]:
    context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
    inspector = inspect(conn)
    tables = set(inspector.get_table_names())
    diffs = compare_metadata(context, metadata)
    if conn.dialect.name == "sqlite":
        # `create_all` before migrations left SQLite's unique constraints unnamed: they are there,
        # on the same columns, but Alembic pairs constraints by name.
        unnamed = {
            (table, tuple(unique["column_names"]))
            for table in tables
            for unique in inspector.get_unique_constraints(table)
            if unique["name"] is None
        }
        diffs = [
            diff
            for diff in diffs
            if not (
                diff[0] == "add_constraint"
                and isinstance(diff[1], UniqueConstraint)
                and (diff[1].table.name, tuple(c.name for c in diff[1].columns)) in unnamed
            )
        ]
    return tables, diffs


def test_revisions_known_without_alembic_are_the_scripts():
    config = Config()
    config.set_main_option("script_location", SCRIPTS)
    scripts = ScriptDirectory.from_config(config)
    assert scripts.get_heads() == [HEAD]
    walked = [script.revision for script in scripts.walk_revisions()]
    assert tuple(reversed(walked)) == REVISIONS


async def test_a_new_database_is_made_at_head_and_matches_the_models(db_url: str):
    async with Database(db_url):
        pass
    assert await schema_revision(db_url) == HEAD
    tables, diffs = await _tables_and_diffs(db_url)
    assert tables == {*metadata.tables, VERSION_TABLE}
    assert diffs == []


async def test_running_every_migration_makes_the_models_tables(db_url: str):
    """A new database is made from the models directly; every migration in turn must make the same."""
    assert await upgrade(db_url, create_new=False) == (None, HEAD)
    tables, diffs = await _tables_and_diffs(db_url)
    assert tables == {*metadata.tables, VERSION_TABLE}
    # A model changed without a migration shows up here: add one in store/migrations/versions.
    assert diffs == []
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            version_table = await conn.run_sync(lambda c: inspect(c).get_columns(VERSION_TABLE))
    finally:
        await engine.dispose()
    assert [(c["name"], c["nullable"]) for c in version_table] == [("version_num", False)]


async def test_a_database_made_before_migrations_is_upgraded_with_its_data(db_url: str):
    await _load_legacy(db_url)
    execution_id = LEGACY_EXECUTION[_dialect(db_url)]
    async with Database(db_url) as db:
        execution = await db.get_execution(execution_id)
        assert execution.status == ExecutionStatus.COMPLETED
        assert execution.output_data is not None and execution.output_data["final_stage"] == "write"
        assert [step.key for step in await db.list_steps(execution_id)] == [
            "pipeline/0:plan",
            "pipeline/1:write",
        ]
        topology, agents = await db.get_topology("review")
        assert sorted(agents) == ["plan", "write"]
        assert topology.topology_type == "pipeline"  # was the enum member's name, PIPELINE (0002)
        assert (await db.get_agent("planner")).agent_config.model == "test"
        request = await db.get_human_request("req-1")
        assert request.execution_id == execution_id
        response = await db.get_human_response("req-1")
        assert response is not None and response.response == "approve"
        assert (await db.get_tool_invocation("inv-1")).result == {"plan": "y"}
        assert [m.content for m in await MemoryStore(db).memories("planner")] == ["launch on a Tuesday"]
    assert await schema_revision(db_url) == HEAD
    tables, diffs = await _tables_and_diffs(db_url)
    assert tables == {*metadata.tables, VERSION_TABLE} and diffs == []

    # New rows follow the old ones (PostgreSQL's sequences came along): the stored team runs again.
    result = await LocalRunner(db_url=db_url, config=RunConfig(model_override="test")).run(
        topology=topology, agents=agents, input_data={"prompt": "Plan a launch"}
    )
    assert result.status == "completed", result.error
    async with Database(db_url) as db:
        assert len(await db.list_steps(result.execution_id)) == 2
        assert (await db.get_execution(execution_id)).status == ExecutionStatus.COMPLETED


async def test_upgrading_on_first_use_can_be_turned_off(db_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("QMCP_AUTO_MIGRATE", "0")
    with pytest.raises(
        SchemaBehindError, match=rf"revision none, this qmcp needs {HEAD}: run `qmcp db upgrade`"
    ):
        async with Database(db_url):
            pass
    tables, _ = await _tables_and_diffs(db_url)
    assert tables == set()  # nothing written
    assert await migrate(db_url) == (None, HEAD)
    assert await migrate(db_url) == (HEAD, HEAD)
    async with Database(db_url) as db:
        assert await db.list_agents() == []


async def test_a_process_started_by_one_that_checked_the_schema_skips_the_check(
    db_url: str, monkeypatch: pytest.MonkeyPatch
):
    """A Metaflow task is told by the runner's process that the database is at this qmcp's schema and
    opens it without the check's transaction; told of another revision, or of nothing, it checks."""
    engine_cache().close()
    unchecked = Database(db_url)
    assert schema_ready_variables(unchecked.engine) == {}  # nothing to pass on before a check
    async with unchecked as db:
        variables = schema_ready_variables(db.engine)
    mark = variables[SCHEMA_READY_VARIABLE]
    assert mark.startswith(f"{HEAD}:") and "127.0.0.1" not in mark and ".db" not in mark  # the URL is hashed
    checks: list[str] = []
    monkeypatch.setattr(_engine, "read_revision", lambda conn: checks.append("check") or read_revision(conn))
    for given, expected in (
        (mark, []),
        (mark.replace(HEAD, "0" * len(HEAD), 1), ["check"]),
        (None, ["check"]),
    ):
        engine_cache().close()  # as in a new process: nothing checked yet
        checks.clear()
        if given is None:
            monkeypatch.delenv(SCHEMA_READY_VARIABLE, raising=False)
        else:
            monkeypatch.setenv(SCHEMA_READY_VARIABLE, given)
        async with Database(db_url) as db:
            assert await db.list_agents() == []
        assert checks == expected, given


@pytest.mark.parametrize("made", ["new", "before_migrations"])
async def test_concurrent_upgrades_of_one_database_make_it_once(db_url: str, made: str):
    if made == "before_migrations":
        await _load_legacy(db_url)
    results = await asyncio.gather(*(migrate(db_url) for _ in range(4)))
    assert sorted(results, key=lambda r: r[0] or "") == [(None, HEAD)] + [(HEAD, HEAD)] * 3


async def test_a_database_of_a_newer_qmcp_is_refused(db_url: str):
    await migrate(db_url)
    engine = create_engine(db_url)
    async with engine.begin() as conn:
        await conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    await engine.dispose()
    with pytest.raises(
        InvalidConfigError, match=r"at schema revision '9999', made by a newer qmcp .*upgrade qmcp"
    ):
        async with Database(db_url):
            pass
    assert not [key for key in engine_cache().in_use if key[0] == db_url]  # the refused Database let go
    with pytest.raises(InvalidConfigError, match="made by a newer qmcp"):
        await migrate(db_url)


async def test_tables_older_than_the_baseline_are_refused_and_left_alone(db_url: str):
    engine = create_engine(db_url)
    async with engine.begin() as conn:
        await conn.execute(
            text("CREATE TABLE executions (id VARCHAR(32) PRIMARY KEY, topology_name VARCHAR(64))")
        )
    await engine.dispose()
    with pytest.raises(
        PreBaselineSchemaError, match=r"older than its first migration \(missing executions\.topology_id"
    ):
        async with Database(db_url):
            pass
    tables, _ = await _tables_and_diffs(db_url)
    assert tables == {"executions"}  # the upgrade rolled back whole


async def test_a_missing_directory_is_one_line(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path}/nope/qmcp.db"
    with pytest.raises(DatabaseUnavailableError, match="does not exist"):
        await migrate(url)
    with pytest.raises(DatabaseUnavailableError, match="does not exist"):
        await schema_revision(url)


@pytest.mark.slow  # a fresh interpreter's imports
def test_a_database_at_head_is_opened_without_loading_alembic(tmp_path: Path):
    """The first use of an up-to-date database costs one query: Alembic is not even imported."""
    url = f"sqlite+aiosqlite:///{tmp_path}/qmcp.db"
    asyncio.run(migrate(url))
    code = (
        "import asyncio, sys\n"
        "from qmcp.agentframework.store import Database\n"
        "async def main():\n"
        f"    async with Database({url!r}) as db:\n"
        "        await db.list_agents()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


async def _topology_types(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return list(
                (await conn.execute(text("SELECT topology_type FROM topologies ORDER BY name"))).scalars()
            )
    finally:
        await engine.dispose()


async def test_topology_types_become_text_and_back(db_url: str):
    """0002 turns the enum of member names into the types' names; its downgrade goes back, and
    refuses while a topology has a type the enum cannot hold."""
    await _load_legacy(db_url)
    assert await _topology_types(db_url) == ["PIPELINE"]
    assert await upgrade(db_url) == (None, HEAD)
    assert await _topology_types(db_url) == ["pipeline"]
    assert await downgrade(db_url, "0001") == (HEAD, "0001")
    assert await _topology_types(db_url) == ["PIPELINE"]
    assert await upgrade(db_url) == ("0001", HEAD)
    engine = create_engine(db_url)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO topologies (name, description, topology_type, config, created_at, updated_at) "
                "VALUES ('mine', '', 'my_type', '{}', '2026-12-01 00:00:00', '2026-12-01 00:00:00')"
            )
        )
    await engine.dispose()
    with pytest.raises(RuntimeError, match="cannot store: my_type"):
        await downgrade(db_url, "0001")
    assert await schema_revision(db_url) == HEAD and await _topology_types(db_url) == ["my_type", "pipeline"]
    assert (await _tables_and_diffs(db_url))[1] == []
