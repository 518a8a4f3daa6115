"""docs/topologies.md: its example topology registers, runs, resumes nothing twice, and gets a flow per call."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmcp.agentframework.models import ExecutionStatus, Topology
from qmcp.agentframework.runners import AsyncRunner, LocalRunner
from qmcp.agentframework.runners._metaflow import MetaflowRunner
from qmcp.agentframework.topologies import TopologyRegistry

DOC = Path(__file__).parents[2] / "docs" / "topologies.md"


@pytest.fixture
def redraft() -> Iterator[type]:
    example = re.search(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert example is not None
    namespace: dict[str, object] = {"__name__": "docs_topologies_example"}
    exec(compile(example.group(1), str(DOC), "exec"), namespace)
    yield TopologyRegistry.get("redraft")
    TopologyRegistry.unregister("redraft")


@pytest.mark.parametrize("runner_class", [LocalRunner, AsyncRunner])
async def test_the_example_topology_runs_like_a_built_in(redraft, sqlite_url, agent, runner_class):
    topology = Topology(name="redraft-team", topology_type="redraft", config={"rounds": 2})
    agents = {"writer": agent("w", "writer"), "critic": agent("c", "critic")}
    result = await runner_class(db_url=sqlite_url).run(topology, agents, {"prompt": "a haiku"})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert "Review:" not in result.output["output"]
    flow = MetaflowRunner()._topology_to_flow(topology, agents)
    flow_class = next(node for node in ast.parse(flow).body if isinstance(node, ast.ClassDef))
    steps = [method.name for method in flow_class.body if isinstance(method, ast.FunctionDef)]
    assert steps == ["start", "writer", "critic", "stage_3_writer", "stage_4_critic", "stage_5_writer", "end"]
    assert [f'key="redraft/{i}:{slot}"' in flow for i, slot in enumerate(["writer", "critic"] * 2)] == [
        True
    ] * 4
