"""The SVG diagrams of topologies (`Dag.svg`): one per topology type, statuses, layout, escaping."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from qmcp.agentframework.models import AgentType, Topology
from qmcp.agentframework.topologies import topology_dag
from qmcp.agentframework.topologies._svg import dag_layout

SVG = "{http://www.w3.org/2000/svg}"


def _agent(name: str, role: str = "generalist") -> AgentType:
    return AgentType(name=name, role=role, config={"model": "test"})


def _team(kind: str, config: dict | None = None, slots: list[str] | None = None) -> tuple[Topology, dict]:
    topology = Topology(name=f"t-{kind}", topology_type=kind, config=config or {})
    return topology, {slot: _agent(f"a-{slot}") for slot in slots or []}


def _nodes(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)  # well-formed XML: a file browsers and tools open alone
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    return {g.get("data-key"): g for g in root.iter(f"{SVG}g") if g.get("data-key")}


def _positions(svg: str) -> dict[str, tuple[float, float]]:
    return {
        key: (float(g.find(f"{SVG}rect").get("x")), float(g.find(f"{SVG}rect").get("y")))
        for key, g in _nodes(svg).items()
    }


CASES = {
    "pipeline": ({}, ["plan", "write", "edit"]),
    "ensemble": ({"aggregation_method": "vote"}, ["m1", "m2", "m3"]),
    "debate": ({"max_rounds": 2, "consensus_method": "mediator"}, ["proponent", "opponent", "mediator"]),
    "crosscheck": ({}, ["primary", "checker_1", "checker_2"]),
    "chain": ({"authority_levels": ["commander", "worker"]}, ["commander", "worker_1", "worker_2"]),
    "delegation": ({}, ["router", "coder", "writer"]),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_each_topology_type_draws_its_nodes_and_edges(kind):
    config, slots = CASES[kind]
    dag = topology_dag(*_team(kind, config, slots))
    svg = dag.svg(title=f"t-{kind}")
    nodes = _nodes(svg)
    assert set(nodes) == {node.id for node in dag.nodes}
    assert svg.count('class="edge"') == len(dag.edges)
    places = _positions(svg)
    axis = 1 if ET.fromstring(svg).get("data-flow") == "down" else 0
    for edge in dag.edges:  # data flows left to right, or down a long chain
        assert places[edge.source][axis] < places[edge.target][axis], edge


def test_pipeline_is_a_row_and_ensemble_a_column():
    dag = topology_dag(*_team("pipeline", {}, ["a", "b", "c"]))
    rows = {y for _, y in _positions(dag.svg()).values()}
    assert len(rows) == 1
    dag = topology_dag(*_team("ensemble", {}, ["m1", "m2", "m3", "m4"]))
    places = _positions(dag.svg())
    members = [places[f"ensemble/member:m{i}"] for i in range(1, 5)]
    assert len({x for x, _ in members}) == 1 and len({y for _, y in members}) == 4
    # the join sits between the members, level with the input
    assert places["ensemble/aggregate"][1] == places["input"][1]
    assert min(y for _, y in members) < places["ensemble/aggregate"][1] < max(y for _, y in members)


def test_debate_rounds_follow_each_other():
    dag = topology_dag(*_team("debate", {"max_rounds": 3}, ["proponent", "opponent"]))
    layout = dag_layout(dag)
    turns = [f"debate/round-{n}/{side}" for n in (1, 2, 3) for side in ("proponent", "opponent")]
    assert [layout[t][0] for t in turns] == [1, 2, 3, 4, 5, 6]


def test_a_long_debate_is_drawn_top_to_bottom_within_a_page_width():
    dag = topology_dag(*_team("debate", {"max_rounds": 5}, ["proponent", "opponent"]))
    svg = dag.svg()
    root = ET.fromstring(svg)
    assert root.get("data-flow") == "down"
    assert float(root.get("width")) < 400  # one node wide, not eleven
    places = _positions(svg)
    turns = [f"debate/round-{n}/{side}" for n in range(1, 6) for side in ("proponent", "opponent")]
    assert [places[t][1] for t in turns] == sorted({places[t][1] for t in turns})
    short = topology_dag(*_team("pipeline", {}, ["a", "b", "c"])).svg()
    assert ET.fromstring(short).get("data-flow") == "across"


def test_compound_frames_each_sub_topology():
    inner = {
        "a": {
            "topology": {"name": "a", "topology_type": "pipeline", "config": {}},
            "agents": {"s1": _agent("x").definition(), "s2": _agent("y").definition()},
        },
        "b": {
            "topology": {"name": "b", "topology_type": "ensemble", "config": {}},
            "agents": {"m1": _agent("x").definition(), "m2": _agent("y").definition()},
        },
    }
    for mode in ("sequential", "parallel"):
        topology = Topology(
            name="outer", topology_type="compound", config={"mode": mode, "sub_topologies": ["a", "b"]}
        )
        svg = topology_dag(topology, {}, inner).svg()
        root = ET.fromstring(svg)
        labels = [
            t.text for g in root.iter(f"{SVG}g") if g.get("class") == "group" for t in g.iter(f"{SVG}text")
        ]
        assert labels == ["a", "b"], mode
        places = _positions(svg)
        first, second = places["compound/0:a/pipeline/1:s2"], places["compound/1:b/ensemble/member:m1"]
        if mode == "sequential":
            assert first[0] < second[0]
        else:
            assert places["compound/0:a/pipeline/0:s1"][0] == second[0]


def test_statuses_colour_steps_and_say_it_in_words():
    dag = topology_dag(*_team("pipeline", {}, ["plan", "write", "edit"]))
    svg = dag.svg(
        {"pipeline/0:plan": "completed", "pipeline/1:write": "failed", "pipeline/2:edit": "running"}
    )
    nodes = _nodes(svg)
    assert "s-completed" in nodes["pipeline/0:plan"].get("class")
    assert "s-failed" in nodes["pipeline/1:write"].get("class")
    assert "s-running" in nodes["pipeline/2:edit"].get("class")
    assert "s-" not in nodes["input"].get("class")
    assert nodes["pipeline/1:write"].find(f"{SVG}title").text == "write · agent a-write · failed"
    unstarted = dag.svg()
    assert "s-pending" in _nodes(unstarted)["pipeline/0:plan"].get("class")


def test_links_make_steps_focusable_and_text_is_escaped():
    topology = Topology(name="t", topology_type="pipeline", config={})
    agents = {"plan": AgentType(name="a-b", role="generalist", config={"model": "test"})}
    dag = topology_dag(topology, agents)
    svg = dag.svg(
        title='<x> & "y"', link=lambda node: f"?step={node.id}&x=1" if node.kind == "step" else None
    )
    root = ET.fromstring(svg)
    links = list(root.iter(f"{SVG}a"))
    assert [a.get("href") for a in links] == ["?step=pipeline/0:plan&x=1"]
    assert links[0].get("aria-label") == "step pipeline/0:plan, pending"
    assert root.find(f"{SVG}title").text == '<x> & "y"'


def test_steps_added_at_run_time_hang_under_their_slot():
    dag = topology_dag(
        *_team("chain", {"authority_levels": ["commander", "worker"]}, ["commander", "worker_1"])
    )
    dag = dag.with_steps(
        [("chain/plan", "commander", "a-commander"), ("chain/task-1", "worker_1", "a-worker_1")]
    )
    svg = dag.svg({"chain/plan": "completed", "chain/task-1": "running"})
    places = _positions(svg)
    assert places["chain/task-1"][0] > places["slot:worker_1"][0]
    assert re.search(r'class="node kind-step s-running" data-key="chain/task-1"', svg)


def test_a_thousand_step_ensemble_draws_quickly():
    import time

    dag = topology_dag(*_team("ensemble", {}, [f"m{i}" for i in range(1000)]))
    started = time.perf_counter()
    svg = dag.svg({f"ensemble/member:m{i}": "completed" for i in range(1000)})
    assert time.perf_counter() - started < 0.5
    assert len(_nodes(svg)) == 1003
