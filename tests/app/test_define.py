"""The define operations (`qmcp.app`): agents, topologies and team documents, with one set of checks
for every door, on SQLite and PostgreSQL; a refusal writes nothing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from qmcp.agentframework.errors import (
    ConflictError,
    InvalidConfigError,
    MissingSlotError,
    NotFoundError,
    PermissionDeniedError,
    UnknownModelError,
    UserInputError,
)
from qmcp.agentframework.models import AgentType, Topology
from qmcp.agentframework.runners import RunConfig, Untrusted, untrusted
from qmcp.agentframework.store import Database
from qmcp.app import (
    AgentChanges,
    AgentSpec,
    Caller,
    Door,
    TeamDocument,
    TopologySpec,
    apply_team,
    create_agent,
    create_topology,
    delete_agent,
    delete_topologies,
    delete_topology,
    put_agent,
    put_topology,
    update_agent,
)

OPERATOR = Caller.operator()
CLIENT = Caller.client(Door.HTTP)
ENDPOINT = {"model": "test", "base_url": "http://127.0.0.1:9/v1"}
"""A config naming an executable item (its base_url receives the prompts): it needs trust to run."""


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    async with Database(db_url) as database:
        yield database


async def _names(db: Database) -> tuple[list[str], list[str]]:
    agents = [agent.name for agent in await db.list_agents()]
    return agents, [topology.name for topology, _ in await db.list_topologies()]


# -- agents -------------------------------------------------------------------------------------


async def test_create_update_put_delete_an_agent(db: Database) -> None:
    created = await create_agent(
        db, AgentSpec("planner", "Planner", "Plans", {"model": "test", "temperature": 0.2}), OPERATOR
    )
    assert (created.action, created.agent.name, created.agent.role) == ("created", "planner", "planner")
    assert created.agent.id is not None

    updated = await update_agent(db, AgentChanges("planner", config={"max_tokens": 64}), OPERATOR)
    assert updated.action == "updated"
    assert (updated.agent.config["max_tokens"], updated.agent.config["temperature"]) == (64, 0.2)
    assert updated.agent.description == "Plans"
    again = await update_agent(db, AgentChanges("planner", config={"max_tokens": 64}), OPERATOR)
    assert again.action == "unchanged"

    replaced = await put_agent(db, AgentSpec("planner", "critic", config={"model": "test"}), CLIENT)
    assert replaced.action == "updated"
    stored = await db.get_agent("planner")
    assert (stored.role, stored.description, stored.config["max_tokens"]) == ("critic", "", None)
    assert (await put_agent(db, AgentSpec("planner", "critic", config={"model": "test"}), CLIENT)).action == (
        "unchanged"
    )
    assert (await put_agent(db, AgentSpec("fresh"), CLIENT)).action == "created"

    await delete_agent(db, "planner", OPERATOR)
    assert (await _names(db))[0] == ["fresh"]
    with pytest.raises(NotFoundError, match="agent 'planner' not found"):
        await delete_agent(db, "planner", OPERATOR)
    with pytest.raises(NotFoundError, match="agent 'ghost' not found"):
        await update_agent(db, AgentChanges("ghost", role="critic"), OPERATOR)


async def test_creating_an_agent_twice_says_how_each_door_changes_it(db: Database) -> None:
    await create_agent(db, AgentSpec("twice"), OPERATOR)
    with pytest.raises(ConflictError, match=r"already exists; change it with PUT /v1/agents/twice$"):
        await create_agent(db, AgentSpec("twice"), CLIENT)
    with pytest.raises(ConflictError, match="change it with: qmcp agents update twice"):
        await create_agent(db, AgentSpec("twice"), Caller.operator(Door.CLI))
    with pytest.raises(ConflictError, match="change it with put_agent or update_agent"):
        await create_agent(db, AgentSpec("twice", "critic"), OPERATOR)
    assert (await db.get_agent("twice")).role == "generalist"


@pytest.mark.parametrize(
    ("spec", "error", "says"),
    [
        (AgentSpec("Bad"), InvalidConfigError, "invalid agent name 'Bad'"),
        (AgentSpec("pipeline_planner\n"), InvalidConfigError, r"invalid agent name 'pipeline_planner\\n'"),
        (
            AgentSpec("bad", config={"api_key_env": "MY_KEY\n"}),
            InvalidConfigError,
            r"api_key_env: 'MY_KEY\\n' is not an environment variable name",
        ),
        (AgentSpec("bad", "wizard"), UserInputError, "unknown role 'wizard'; choose one of: generalist"),
        (AgentSpec("bad", config={"temperature": 9}), InvalidConfigError, "invalid agent: temperature"),
        (AgentSpec("bad", config={"modle": "test"}), InvalidConfigError, "modle: Extra inputs"),
        (AgentSpec("bad", config={"model": "nope:thing"}), UnknownModelError, "no provider is called 'nope'"),
        (AgentSpec("bad", "writer", "a\x00b"), InvalidConfigError, "NUL"),
        (AgentSpec("bad", config={"system_prompt": "x\x00"}), InvalidConfigError, "system_prompt"),
        (
            AgentSpec("bad", config={"capabilities": ["reasoning"], "mixins": {"reasoning": {"stlye": "x"}}}),
            InvalidConfigError,
            "mixins.reasoning",
        ),
        (AgentSpec("bad", config={"capabilities": ["telepathy"]}), InvalidConfigError, "telepathy"),
    ],
)
async def test_an_invalid_agent_is_refused_by_every_operation_and_nothing_is_written(
    db: Database, spec: AgentSpec, error: type[Exception], says: str
) -> None:
    for operation in (create_agent, put_agent):
        with pytest.raises(error, match=says):
            await operation(db, spec, CLIENT)
    assert await db.list_agents() == []
    await create_agent(db, AgentSpec("bad", config={"model": "test"}), OPERATOR)
    changes = AgentChanges("bad", role=spec.role, description=spec.description, config=spec.config)
    if spec.name == "bad":
        with pytest.raises(error, match=says):
            await update_agent(db, changes, OPERATOR)
    stored = await db.get_agent("bad")
    assert (stored.role, stored.description, stored.config["model"]) == ("generalist", "", "test")


async def test_a_model_its_provider_does_not_list_is_kept_with_a_note(db: Database) -> None:
    defined = await create_agent(db, AgentSpec("a", config={"model": "claude-sonet"}), OPERATOR)
    assert defined.notes and defined.notes[0].startswith("anthropic lists no model 'claude-sonet'")
    assert (await create_agent(db, AgentSpec("b", config={"model": "test"}), OPERATOR)).notes == ()


async def test_what_a_client_stores_is_untrusted(db: Database) -> None:
    stored = (await put_agent(db, AgentSpec("endpoint", config=ENDPOINT), CLIENT)).agent
    assert [entry.agent.name for entry in await untrusted(db, [stored])] == ["endpoint"]


# -- topologies ---------------------------------------------------------------------------------


async def _agents(db: Database, *names: str) -> None:
    for name in names:
        await create_agent(db, AgentSpec(name, config={"model": "test"}), OPERATOR)


async def test_create_put_delete_a_topology(db: Database) -> None:
    await _agents(db, "a", "b", "c")
    spec = TopologySpec("line", "Pipeline", "two stages", {}, {"first": "a", "second": "b"})
    created = await create_topology(db, spec, OPERATOR)
    assert created.action == "created"
    assert created.definition() == {
        "name": "line",
        "description": "two stages",
        "topology_type": "pipeline",
        "config": created.topology.config,
        "agents": {"first": "a", "second": "b"},
    }
    assert (await put_topology(db, spec, CLIENT)).action == "unchanged"
    moved = await put_topology(db, TopologySpec("line", "pipeline", agents={"only": "c"}), CLIENT)
    assert (moved.action, list(moved.agents), moved.agents["only"].name) == ("updated", ["only"], "c")
    _, slots = await db.get_topology("line")
    assert {slot: agent.name for slot, agent in slots.items()} == {"only": "c"}
    assert (await put_topology(db, TopologySpec("other", "pipeline", agents={"x": "a"}), CLIENT)).action == (
        "created"
    )

    with pytest.raises(ConflictError, match=r"topology 'line' already exists; change it with PUT"):
        await create_topology(db, spec, CLIENT)
    with pytest.raises(ConflictError, match="declare it in a file for qmcp apply to change it"):
        await create_topology(db, spec, Caller.operator(Door.CLI))

    await delete_topology(db, "line", OPERATOR)
    assert (await _names(db))[1] == ["other"]
    with pytest.raises(NotFoundError, match="topology 'line' not found"):
        await delete_topology(db, "line", OPERATOR)


@pytest.mark.parametrize(
    ("spec", "error", "says"),
    [
        (
            TopologySpec("x", "blob", agents={"a": "planner"}),
            InvalidConfigError,
            "unknown topology type 'blob'",
        ),
        (TopologySpec("X", "pipeline", agents={"a": "planner"}), InvalidConfigError, "invalid topology name"),
        (
            TopologySpec("nl\n", "pipeline", agents={"a": "planner"}),
            InvalidConfigError,
            "invalid topology name",
        ),
        (TopologySpec("x", "pipeline", agents={"A B": "planner"}), InvalidConfigError, "invalid slot name"),
        (TopologySpec("x", "pipeline", agents={"a": "ghost"}), NotFoundError, "agent 'ghost' not found"),
        (
            TopologySpec("x", "debate", agents={"proponent": "planner"}),
            MissingSlotError,
            "missing agents for slot(s): opponent",
        ),
        (TopologySpec("x", "pipeline"), MissingSlotError, "a pipeline needs at least one stage agent"),
        (
            TopologySpec("x", "ensemble", config={"failure_threshold": 3}, agents={"a": "planner"}),
            InvalidConfigError,
            "config.failure_threshold: Input should be less than or equal to 1",
        ),
        (TopologySpec("x", "pipeline", "a\x00", agents={"a": "planner"}), InvalidConfigError, "NUL"),
        (
            TopologySpec("x", "compound", config={"sub_topologies": ["ghost"]}),
            InvalidConfigError,
            "compound 'x' runs topology 'ghost', which does not exist",
        ),
    ],
)
async def test_an_invalid_topology_is_refused_and_nothing_is_written(
    db: Database, spec: TopologySpec, error: type[Exception], says: str
) -> None:
    await _agents(db, "planner")
    for operation in (create_topology, put_topology):
        with pytest.raises(error, match=re.escape(says)):
            await operation(db, spec, CLIENT)
    assert await _names(db) == (["planner"], [])


async def test_compound_topologies_form_no_cycle(db: Database) -> None:
    await _agents(db, "a")
    await create_topology(db, TopologySpec("leaf", "pipeline", agents={"only": "a"}), OPERATOR)
    await create_topology(
        db, TopologySpec("outer", "compound", config={"sub_topologies": ["leaf"]}), OPERATOR
    )
    await create_topology(db, TopologySpec("top", "compound", config={"sub_topologies": ["outer"]}), OPERATOR)
    with pytest.raises(InvalidConfigError, match="compound topologies form a cycle: outer -> top -> outer"):
        await put_topology(
            db, TopologySpec("outer", "compound", config={"sub_topologies": ["top"]}), OPERATOR
        )
    stored, _ = await db.get_topology("outer")
    assert stored.config["sub_topologies"] == ["leaf"]


async def test_deleting_topologies_is_all_or_nothing(db: Database) -> None:
    await _agents(db, "a")
    for name in ("one", "two"):
        await create_topology(db, TopologySpec(name, "pipeline", agents={"only": "a"}), OPERATOR)
    with pytest.raises(NotFoundError, match="topology 'ghost' not found"):
        await delete_topologies(db, ["one", "ghost"], OPERATOR)
    assert (await _names(db))[1] == ["one", "two"]

    topology, agents = await db.get_topology("two")
    await db.executions.create(_execution(topology, agents), None, runner="local")
    with pytest.raises(InvalidConfigError, match=r"topology 'two' is referenced by 1 execution\(s\)"):
        await delete_topologies(db, ["one", "two"], OPERATOR)
    assert (await _names(db))[1] == ["one", "two"]
    with pytest.raises(InvalidConfigError, match=re.escape("is used by one.only, two.only")):
        await delete_agent(db, "a", OPERATOR)

    await delete_topologies(db, ["one", "two"], OPERATOR, force=True)
    assert (await _names(db))[1] == []
    (execution,) = await db.list_executions()
    assert (execution.topology_id, execution.topology_name) == (None, "two")


def _execution(topology: Topology, agents: dict[str, AgentType]) -> Any:
    from qmcp.agentframework.models import Execution

    return Execution(
        topology_id=topology.id,
        topology_name=topology.name,
        topology_type=str(topology.topology_type),
        runner_type="local",
        input_data={},
        topology_snapshot=topology.definition(),
        agents_snapshot={slot: agent.definition() for slot, agent in agents.items()},
        run_config=RunConfig().model_dump(mode="json"),
    )


# -- team documents -----------------------------------------------------------------------------


def _document(
    *topologies: tuple[Topology, dict[str, str]], agents: list[AgentType] | None = None
) -> TeamDocument:
    return TeamDocument("team.yaml", agents or [], list(topologies))


def _agent(name: str, **config: Any) -> AgentType:
    return AgentType.model_validate({"name": name, "config": {"model": "test", **config}})


def _topology(name: str, kind: str, **config: Any) -> Topology:
    return Topology.model_validate({"name": name, "topology_type": kind, "config": config})


async def test_apply_creates_updates_and_then_changes_nothing(db: Database) -> None:
    team = _document(
        (_topology("inner", "pipeline"), {"only": "writer"}),
        (_topology("outer", "compound", sub_topologies=["inner"]), {}),
        agents=[_agent("writer")],
    )
    first = await apply_team(db, team, OPERATOR)
    assert first.changed
    assert [(c.kind, c.name, c.action) for c in first.changes] == [
        ("agent", "writer", "created"),
        ("topology", "inner", "created"),
        ("topology", "outer", "created"),
    ]
    again = await apply_team(db, team, CLIENT)
    assert not again.changed
    edited = _document(
        (_topology("inner", "pipeline"), {"only": "writer"}), agents=[_agent("writer", max_tokens=9)]
    )
    assert [(c.name, c.action) for c in (await apply_team(db, edited, OPERATOR)).changes] == [
        ("writer", "updated"),
        ("inner", "unchanged"),
    ]


async def test_apply_lists_every_problem_and_writes_nothing(db: Database) -> None:
    team = _document(
        (_topology("pair", "debate"), {"proponent": "fine"}),
        (_topology("lost", "pipeline"), {"a": "ghost"}),
        (_topology("loop", "compound", sub_topologies=["loop2"]), {}),
        (_topology("loop2", "compound", sub_topologies=["loop"]), {}),
        (_topology("nowhere", "compound", sub_topologies=["missing"]), {}),
        agents=[_agent("fine")],
    )
    with pytest.raises(InvalidConfigError) as refused:
        await apply_team(db, team, OPERATOR)
    assert str(refused.value).splitlines() == [
        "team.yaml: topologies[0].agents: missing agents for slot(s): opponent",
        "team.yaml: topologies[1].agents.a: agent 'ghost' is neither in this file nor in the database",
        "team.yaml: topologies[2].config: compound topologies form a cycle: loop -> loop2 -> loop",
        "team.yaml: topologies[3].config: compound topologies form a cycle: loop2 -> loop -> loop2",
        "team.yaml: topologies[4].config: compound 'nowhere' runs topology 'missing', which does not exist; "
        "define it first",
    ]
    assert await _names(db) == ([], [])


async def test_apply_checks_a_document_built_in_python_like_one_from_a_file(db: Database) -> None:
    unchecked = AgentType(name="Shouty", config={"model": "test"})  # table models skip validation
    team = _document(
        (Topology(name="line", topology_type="pipeline", config={}), {"A B": "fine"}),
        agents=[
            unchecked,
            _agent("fine"),
            _agent("lost", model="nope:thing"),
            _agent("kept", model="claude-sonet"),
        ],
    )
    with pytest.raises(InvalidConfigError) as refused:
        await apply_team(db, team, OPERATOR)
    lines = str(refused.value).splitlines()
    assert lines[0].startswith("team.yaml: agents[0]: invalid agent name 'Shouty'")
    assert lines[1].startswith("team.yaml: agents[2].config.model: unknown model 'nope:thing'")
    assert lines[2].startswith("team.yaml: topologies[0]: invalid slot name 'A B'")
    assert len(lines) == 3
    assert await _names(db) == ([], [])

    applied = await apply_team(db, _document(agents=[_agent("kept", model="claude-sonet")]), OPERATOR)
    (note,) = applied.notes
    assert note.startswith("team.yaml: agents[0].config.model: anthropic lists no model 'claude-sonet'")


async def test_apply_trusts_only_for_the_operator(db: Database) -> None:
    team = _document(agents=[_agent("endpoint", base_url="http://127.0.0.1:9/v1"), _agent("plain")])
    with pytest.raises(PermissionDeniedError, match="trust is given by the server's operator"):
        await apply_team(db, team, CLIENT, trust="qmcp apply --trust")
    assert await _names(db) == ([], [])

    stored = await apply_team(db, team, CLIENT)
    assert ([e.agent.name for e in stored.untrusted], stored.trusted) == (["endpoint"], [])

    asked: list[list[str]] = []

    def answer(pending: list[Untrusted]) -> str | None:
        asked.append([entry.agent.name for entry in pending])
        return "a test (confirmed)"

    trusted = await apply_team(db, team, OPERATOR, trust=answer)
    assert (asked, [e.agent.name for e in trusted.trusted], trusted.untrusted) == (
        [["endpoint"]],
        ["endpoint"],
        [],
    )
    assert await untrusted(db, await db.list_agents()) == []
    assert (await apply_team(db, team, OPERATOR, trust=answer)).trusted == []
    assert len(asked) == 1  # nothing left to trust: not asked again


async def test_definitions_are_saved_all_or_none(db: Database) -> None:
    from sqlalchemy.exc import IntegrityError

    nameless = AgentType(name=None, config={})  # table models skip validation: NOT NULL fails in the write
    with pytest.raises(IntegrityError):
        await db.save_definitions([_agent("first")], [(_topology("line", "pipeline"), {"only": nameless})])
    assert await _names(db) == ([], [])
    await db.save_definitions(
        [_agent("first")], [(_topology("line", "pipeline"), {"only": _agent("second")})]
    )
    assert await _names(db) == (["first", "second"], ["line"])


# -- one sentence through the operation and the CLI ---------------------------------------------


@pytest.fixture
def cli_db(tmp_path: Path) -> Iterator[str]:
    from qmcp import observability

    yield str(tmp_path / "cli.db")
    observability.reset_logging()


def _cli_error(db_file: str, *args: str) -> str:
    from qmcp.cli import app

    result = CliRunner().invoke(app, ["--db", db_file, *args])
    assert result.exit_code == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    return line.removeprefix("error: ")


def test_the_cli_says_what_the_operation_says(cli_db: str) -> None:
    async def refusals() -> list[str]:
        async with Database(f"sqlite+aiosqlite:///{cli_db}") as db:
            await create_agent(db, AgentSpec("planner", config={"model": "test"}), OPERATOR)
            said = []
            for attempt in (
                lambda: create_agent(db, AgentSpec("hot", "planner", config={"temperature": 9}), OPERATOR),
                lambda: create_topology(
                    db, TopologySpec("x", "debate", agents={"proponent": "planner"}), OPERATOR
                ),
                lambda: create_topology(
                    db,
                    TopologySpec("x", "ensemble", config={"failure_threshold": 3}, agents={"a": "planner"}),
                    OPERATOR,
                ),
            ):
                with pytest.raises(UserInputError) as refused:
                    await attempt()
                said.append(str(refused.value))
            return said

    agent, slots, config = asyncio.run(refusals())
    assert "temperature" in agent and "opponent" in slots and "failure_threshold" in config
    create = ("agents", "topologies", "create", "x")
    assert _cli_error(cli_db, "agents", "create", "hot", "planner", "--temperature", "9") == agent
    assert _cli_error(cli_db, *create, "debate", "-a", "proponent=planner") == slots
    assert (
        _cli_error(
            cli_db, *create, "ensemble", "-a", "a=planner", "--config-json", '{"failure_threshold": 3}'
        )
        == config
    )


def test_the_define_operations_are_public() -> None:
    import qmcp.app

    assert set(qmcp.app.__all__) >= {
        "AgentChanges",
        "AgentSpec",
        "TeamDocument",
        "TopologySpec",
        "apply_team",
        "create_agent",
        "create_topology",
        "delete_agent",
        "delete_topologies",
        "delete_topology",
        "put_agent",
        "put_topology",
        "update_agent",
    }
