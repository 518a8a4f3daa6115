"""The DAG names the steps a run makes: every stored step key of each built-in topology is a node of its
graph (chain of command and delegation, which decide their steps at run time, hang each under its
slot's node)."""

from __future__ import annotations

from typing import Any

import pytest

from qmcp.agentframework.models import AgentType, ExecutionStatus, Topology
from qmcp.agentframework.runners import LocalRunner
from qmcp.agentframework.store import Database
from qmcp.agentframework.topologies import topology_dag

RUN_TIME = {"chain", "delegation"}
"""Types whose graph shows slots; their steps are added under them by `Dag.with_steps`."""


def _agents(*slots: str) -> dict[str, AgentType]:
    return {slot: AgentType(name=f"a-{slot}", role="generalist", config={"model": "test"}) for slot in slots}


TEAMS: dict[str, tuple[dict[str, Any], dict[str, AgentType]]] = {
    "pipeline": ({}, _agents("plan", "write", "edit")),
    "ensemble": ({"aggregation_method": "synthesis"}, _agents("m1", "m2", "aggregator")),
    "debate": (
        {"max_rounds": 2, "consensus_method": "mediator"},
        _agents("proponent", "opponent", "mediator"),
    ),
    "crosscheck": ({}, _agents("primary", "checker_1", "checker_2")),
    "chain": ({"authority_levels": ["commander", "worker"]}, _agents("commander", "worker_1", "worker_2")),
    "delegation": ({"fallback_agent_name": "a-writer"}, _agents("router", "coder", "writer")),
}


async def _steps_and_dag(db_url: str, execution_id: Any) -> tuple[list[Any], Any]:
    async with Database(db_url) as db:
        execution = await db.get_execution(execution_id)
        steps = await db.list_steps(execution_id)
    agents = {slot: AgentType.model_validate(data) for slot, data in execution.agents_snapshot.items()}
    topology = Topology.model_validate(execution.topology_snapshot)
    return steps, topology_dag(topology, agents, execution.teams_snapshot)


def _assert_steps_are_nodes(steps: list[Any], dag: Any, run_time: bool) -> None:
    nodes = dag.node_ids()
    assert steps
    if not run_time:
        assert {s.key for s in steps} <= nodes, sorted({s.key for s in steps} - nodes)
        return
    hung = dag.with_steps((s.key, s.slot, s.agent_name) for s in steps)
    for step in steps:  # a run-time step hangs under its own slot's node
        owners = [e.source for e in hung.edges if e.target == step.key]
        assert owners and owners[0] in nodes and owners[0].endswith(f"slot:{step.slot}"), step.key


@pytest.mark.parametrize("kind", list(TEAMS))
async def test_every_step_key_of_a_topology_is_a_node_of_its_dag(db_url, kind):
    config, agents = TEAMS[kind]
    topology = Topology(name=f"t-{kind}", topology_type=kind, config=config)
    result = await LocalRunner(db_url=db_url).run(topology, agents, {"prompt": "Write and check a haiku."})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    steps, dag = await _steps_and_dag(db_url, result.execution_id)
    _assert_steps_are_nodes(steps, dag, kind in RUN_TIME)


async def test_every_step_key_of_a_compound_is_a_node_of_its_dag(db_url):
    async with Database(db_url) as db:
        for kind in ("pipeline", "crosscheck"):
            config, agents = TEAMS[kind]
            await db.save_team(Topology(name=f"sub-{kind}", topology_type=kind, config=config), agents)
    compound = Topology(
        name="outer",
        topology_type="compound",
        config={"mode": "sequential", "sub_topologies": ["sub-pipeline", "sub-crosscheck"]},
    )
    result = await LocalRunner(db_url=db_url).run(compound, {}, {"prompt": "Write and check a haiku."})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    steps, dag = await _steps_and_dag(db_url, result.execution_id)
    assert {s.key.split("/", 1)[0] for s in steps} == {"compound"}
    _assert_steps_are_nodes(steps, dag, run_time=False)
