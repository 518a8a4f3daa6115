"""Flow names: no two topologies share a flow file or a Metaflow flow, and any slot makes a valid step.

`inj-pipe` and `inj_pipe` once exported to the same file (the second silently overwrote the first,
and concurrent runs of both broke), and a pipeline slot named `step`, `timeout` or `retry`
produced a flow that failed at import (the method shadowed the decorator in the class body).
"""

from __future__ import annotations

import asyncio
import hashlib
import runpy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmcp.agentframework.models import ExecutionStatus, Topology, TopologyType
from qmcp.agentframework.models._validation import NAME_PATTERN
from qmcp.agentframework.runners import LocalRunner
from qmcp.agentframework.runners._flowgen import flow_class_name, flow_file_name
from qmcp.agentframework.runners._metaflow import MetaflowRunner, export_flow

RESERVED_SLOTS = ["step", "timeout", "retry", "next", "input", "foreach", "name", "json", "stage_1_step"]


def test_names_that_once_collided_now_differ():
    digest = hashlib.sha256(b"inj-pipe").hexdigest()[:12]
    assert (flow_file_name("inj_pipe"), flow_class_name("inj_pipe")) == ("inj_pipe_flow.py", "InjPipeFlow")
    assert (flow_file_name("inj-pipe"), flow_class_name("inj-pipe")) == (
        f"inj_pipe__{digest}_flow.py",
        f"InjPipe_{digest}Flow",
    )
    for one, other in (("a_2b", "a2b"), ("ab_", "ab"), ("a__b", "a_b"), ("x-1", "x1"), ("x-1", "x_1")):
        assert flow_file_name(one) != flow_file_name(other)
        assert flow_class_name(one) != flow_class_name(other)


@settings(max_examples=300, derandomize=True, database=None)
@given(
    st.sets(st.from_regex(NAME_PATTERN.replace("{0,63}", "{0,6}"), fullmatch=True), min_size=2, max_size=40)
)
def test_every_topology_name_has_its_own_file_and_flow(names):
    assert len({flow_file_name(name) for name in names}) == len(names)
    assert len({flow_class_name(name) for name in names}) == len(names)
    for name in names:
        assert (
            flow_class_name(name).isidentifier() and flow_file_name(name).removesuffix(".py").isidentifier()
        )


def test_slots_named_like_metaflow_or_python_names_become_safe_steps(tmp_path, agent):
    agents = {slot: agent(f"agent-{index}") for index, slot in enumerate(RESERVED_SLOTS)}
    topology = Topology(name="reserved", topology_type=TopologyType.PIPELINE)
    path = export_flow(topology, agents, tmp_path)
    module = runpy.run_path(str(path))  # before, `def step(...)` shadowed `@step`: this raised
    steps = [name for name, value in vars(module["ReservedFlow"]).items() if getattr(value, "is_step", False)]
    assert steps == [
        "start",
        "stage_1_step",
        "stage_2_timeout",
        "stage_3_retry",
        "stage_4_next",
        "stage_5_input",
        "stage_6_foreach",
        "stage_7_name",
        "stage_8_json",
        "stage_9_stage_1_step",
        "end",
    ]


@pytest.mark.slow
async def test_colliding_names_and_reserved_slots_run_concurrently_on_metaflow(flows_dir, sqlite_url, agent):
    agents = {slot: agent(f"agent-{index}") for index, slot in enumerate(["step", "retry"])}
    runner = MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url)
    names = ["inj-pipe", "inj_pipe"]
    results = await asyncio.gather(
        *(
            runner.run(Topology(name=name, topology_type=TopologyType.PIPELINE), agents, {"prompt": name})
            for name in names
        )
    )
    for name, result in zip(names, results, strict=True):
        assert result.status == ExecutionStatus.COMPLETED, result.error
        local = await LocalRunner(db_url=sqlite_url).run(
            Topology(name=f"{name}-local", topology_type=TopologyType.PIPELINE), agents, {"prompt": name}
        )
        assert result.output == local.output
    assert sorted(path.name for path in flows_dir.glob("*_flow.py")) == sorted(map(flow_file_name, names))
    sources = {name: (flows_dir / flow_file_name(name)).read_text() for name in names}
    assert all(f"topology {name!r}" in source for name, source in sources.items())
