"""A server's run starts keep the stored teams they checked (`TeamCache`), by the rows they came from:
a change to any of those rows is seen at the next start, and every check a start makes on what the
cache cannot know (trust, the input, the caller policy) is made at every start."""

from __future__ import annotations

from typing import Any

import pytest

from qmcp.agentframework.errors import PermissionDeniedError, UntrustedDefinitionError, UserInputError
from qmcp.agentframework.models import AgentRole, AgentType, Topology, TopologyType
from qmcp.agentframework.runners import trust
from qmcp.agentframework.store import Database, revoke_trust
from qmcp.app import Caller, CallerPolicy, Door, RunRequest, TeamCache, start_run


async def _store(db: Database, **config: Any) -> None:
    agents = {
        "plan": AgentType(name="planner", role=AgentRole.PLANNER, config={"model": "test", **config}),
        "write": AgentType(name="writer", role=AgentRole.SPECIALIST, config={"model": "test"}),
    }
    await db.save_team(Topology(name="review", topology_type=TopologyType.PIPELINE, config={}), agents)


async def _start(db: Database, teams: TeamCache, input_data: Any = None, **kwargs: Any) -> Any:
    request = RunRequest("review", input_data or {"prompt": "hi"}, **kwargs)
    return (await start_run(db, request, Caller.client(Door.HTTP), teams=teams)).execution


async def test_a_start_reads_the_team_once_until_one_of_its_rows_changes(db_url, monkeypatch):
    teams = TeamCache()
    async with Database(db_url) as db:
        await _store(db)
        reads = 0
        get_topology = db.get_topology

        async def counted(name: str) -> Any:
            nonlocal reads
            reads += 1
            return await get_topology(name)

        monkeypatch.setattr(db, "get_topology", counted)
        first, second = await _start(db, teams), await _start(db, teams, {"prompt": "again"})
        assert reads == 1 and first.id != second.id and second.input_data == {"prompt": "again"}
        await db.save_agent(
            AgentType(
                name="planner", role=AgentRole.PLANNER, config={"model": "test", "system_prompt": "new"}
            )
        )
        third = await _start(db, teams)
        assert reads == 2 and third.agents_snapshot["plan"]["config"]["system_prompt"] == "new"
        await db.save_team(
            Topology(name="review", topology_type=TopologyType.PIPELINE, config={}),
            {"write": await db.get_agent("writer"), "plan": await db.get_agent("planner")},
        )
        assert list((await _start(db, teams)).agents_snapshot) == ["write", "plan"]  # the slots' order
        assert reads == 3


async def test_a_cached_team_is_still_refused_when_its_trust_is_revoked(db_url):
    teams = TeamCache()
    async with Database(db_url) as db:
        await _store(db, base_url="http://127.0.0.1:9/v1")
        with pytest.raises(UntrustedDefinitionError):
            await _start(db, teams)
        await trust(db, [await db.get_agent("planner")], via="test")
        await _start(db, teams)
        await revoke_trust(db, ["planner"], "test")
        with pytest.raises(UntrustedDefinitionError):
            await _start(db, teams)


async def test_a_cached_team_still_checks_the_input_and_the_caller_policy(sqlite_url):
    teams = TeamCache()
    async with Database(sqlite_url) as db:
        await _store(db)
        await _start(db, teams)
        with pytest.raises(UserInputError, match="NUL"):
            await _start(db, teams, {"prompt": "a\x00b"})
        with pytest.raises(PermissionDeniedError):
            await start_run(
                db,
                RunRequest("review", {"prompt": "hi"}, config={"model_override": "openai:gpt-4.1"}),
                Caller.client(Door.HTTP),
                policy=CallerPolicy(),
                teams=teams,
            )
