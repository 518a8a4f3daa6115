"""An execution's `agents_snapshot` is stored with each distinct definition once (`AgentsSnapshotJSON`),
and every reader sees each slot's definition, its own dict, as written; rows written before load as they are."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import JSON, bindparam, text

from qmcp.agentframework.models import Execution, table_of
from qmcp.agentframework.models._snapshot import pack_agents, unpack_agents
from qmcp.agentframework.store import Database, Owner


def _worker(model: str = "test", name: str = "worker") -> dict[str, Any]:
    return {"name": name, "description": "d", "role": "worker", "config": {"model": model, "n": [1, 2]}}


def _team() -> dict[str, Any]:
    """Repeated agents (shallow copies of one definition and equal separate ones), distinct agents,
    and slots whose definitions share a name but differ (also only by a number's JSON type)."""
    shared = _worker()
    return {
        **{f"m{i}": dict(shared) for i in range(4)},
        "equal": _worker(),  # equal to the shared one, other objects
        "other_model": _worker("other"),
        "judge": _worker(name="judge"),
        "as_float": {**_worker(), "config": {"model": "test", "n": [1.0, 2]}},  # == the shared one
        "as_bool": {**_worker(), "config": {"model": "test", "n": [True, 2]}},  # == the shared one
        "reordered": {"description": "d", "name": "worker", "role": "worker", "config": shared["config"]},
        "nameless": {"config": {}},
    }


def _text(value: Any) -> str:
    return json.dumps(value)


def test_packing_keeps_each_distinct_definition_once_and_unpacks_to_what_was_written():
    team = _team()
    packed = pack_agents(team)
    assert len(packed["agents"]) == 7  # m0–m3 and equal share one; the rest differ as JSON
    assert len({packed["slots"][slot] for slot in ("m0", "m1", "m2", "m3", "equal")}) == 1
    unpacked = unpack_agents(json.loads(_text(packed)))
    assert _text(unpacked) == _text(team)  # the same JSON: values, types and key order
    assert list(unpacked) == list(team)
    assert unpack_agents({"a": _worker()}) == {"a": _worker()}  # not packed: as it is
    assert unpack_agents(None) is None


def _independent(snapshot: dict[str, Any]) -> None:
    snapshot["m0"]["name"] = "changed"
    snapshot["m1"]["extra"] = 1
    assert snapshot["m2"] == _worker() and snapshot["equal"] == _worker()


async def test_the_orm_and_the_driver_read_the_team_written(db_url):
    team = _team()
    async with Database(db_url) as db:
        execution = Execution(topology_name="t", topology_type="ensemble", agents_snapshot=team)
        await db.executions.create(execution, Owner.this_process(), runner="local")
        read = await db.stored_execution(execution.id)  # SQLite: the driver's `RowReader`
        async with db.sessions() as session:
            loaded = await session.get(Execution, execution.id)
        assert loaded is not None
        for snapshot in (read.agents_snapshot, loaded.agents_snapshot):
            assert _text(snapshot) == _text(team)
            _independent(snapshot)
        stored = json.loads(await _stored(db, execution))
        assert stored["__qmcp_snapshot__"] == 1 and len(stored["agents"]) == 7


async def _stored(db: Database, execution: Execution) -> str:
    """The column's JSON text as the database holds it, read without the column's type."""
    query = text("SELECT CAST(agents_snapshot AS TEXT) FROM executions WHERE id = :id").bindparams(
        bindparam("id", type_=table_of(Execution).c.id.type)
    )
    async with db.engine.connect() as conn:
        raw: str = (await conn.execute(query, {"id": execution.id})).scalar_one()
    return raw


async def test_a_row_written_before_loads_as_it_is(db_url):
    team = {"a": _worker(), "b": _worker(), "c": _worker(name="judge")}
    async with Database(db_url) as db:
        execution = Execution(topology_name="t", topology_type="ensemble")
        await db.executions.create(execution, Owner.this_process(), runner="local")
        write = text("UPDATE executions SET agents_snapshot = :team WHERE id = :id").bindparams(
            bindparam("team", type_=JSON), bindparam("id", type_=table_of(Execution).c.id.type)
        )
        async with db.engine.begin() as conn:  # as a row of an earlier release
            await conn.execute(write, {"team": team, "id": execution.id})
        assert json.loads(await _stored(db, execution)) == team
        assert (await db.stored_execution(execution.id)).agents_snapshot == team
        async with db.sessions() as session:
            loaded = await session.get(Execution, execution.id)
        assert loaded is not None and loaded.agents_snapshot == team


async def test_a_wide_team_of_one_agent_is_stored_small(db_url):
    definition = {**_worker(), "config": {"model": "test", "system_prompt": "answer " * 40}}
    team = {f"member-{i}": dict(definition) for i in range(1000)}
    async with Database(db_url) as db:
        execution = Execution(topology_name="t", topology_type="ensemble", agents_snapshot=team)
        await db.executions.create(execution, Owner.this_process(), runner="local")
        # one definition and 1,000 short entries: 14 KB (unpacked, 1,000 definitions: 370 KB)
        assert len(await _stored(db, execution)) < 25_000 < len(json.dumps(team))
        assert (await db.stored_execution(execution.id)).agents_snapshot == team
