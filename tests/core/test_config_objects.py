"""Python callers hand over config objects (`AgentConfig(...)`, `EnsembleConfig(...)`) or their dicts:
both are stored as the same dict, and a run treats them alike."""

from __future__ import annotations

import pytest

from qmcp.agentframework.errors import InvalidConfigError
from qmcp.agentframework.models import (
    AgentConfig,
    AgentRole,
    AgentType,
    DebateConfig,
    EnsembleConfig,
    Topology,
    TopologyType,
)
from qmcp.agentframework.runners import LocalRunner
from qmcp.agentframework.store import Database


def _team(objects: bool) -> tuple[Topology, dict[str, AgentType]]:
    config = AgentConfig(model="test", temperature=0.2, max_tokens=64)
    ensemble = EnsembleConfig(aggregation_method="synthesis", failure_threshold=0.4)
    given_agent = config if objects else config.model_dump()
    given_topology = ensemble if objects else ensemble.model_dump()
    agents = {
        slot: AgentType(name=f"{slot}-agent", role=role, config=given_agent)
        for slot, role in (
            ("one", AgentRole.ANALYST),
            ("two", AgentRole.CRITIC),
            ("aggregator", AgentRole.SYNTHESIZER),
        )
    }
    return Topology(name="panel", topology_type=TopologyType.ENSEMBLE, config=given_topology), agents


def test_objects_and_their_dicts_make_the_same_definitions():
    (topology, agents), (from_dicts, dict_agents) = _team(objects=True), _team(objects=False)
    assert type(topology.config) is dict and topology.definition() == from_dicts.definition()
    assert (
        topology.config["aggregation_method"] == "synthesis"
        and topology.parsed_config.failure_threshold == 0.4
    )
    for slot, agent in agents.items():
        assert type(agent.config) is dict and agent.definition() == dict_agents[slot].definition()
        assert agent.agent_config == AgentConfig(model="test", temperature=0.2, max_tokens=64)
    validated = AgentType.model_validate({"name": "v", "config": AgentConfig(model="test")})
    assert validated.config == AgentType(name="v", config=AgentConfig(model="test")).config


def test_a_config_object_of_another_type_is_refused():
    with pytest.raises(
        InvalidConfigError, match="config is a DebateConfig; type 'ensemble' takes EnsembleConfig"
    ):
        Topology(name="t", topology_type=TopologyType.ENSEMBLE, config=DebateConfig())


async def test_objects_round_trip_through_the_database_and_run(db_url):
    topology, agents = _team(objects=True)
    result = await LocalRunner(db_url=db_url).run(topology, agents, {"prompt": "Name a colour"})
    assert result.status == "completed", result.error
    async with Database(db_url) as db:
        await db.save_team(*_team(objects=True))
        stored, stored_agents = await db.get_topology("panel")
    expected, expected_agents = _team(objects=False)
    assert stored.definition() == expected.definition()
    assert {slot: a.definition() for slot, a in stored_agents.items()} == {
        slot: a.definition() for slot, a in expected_agents.items()
    }
