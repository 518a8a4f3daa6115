"""A fork on the Metaflow runner: the flow's steps replay the inherited steps from the step store and
call only the steps from the fork point on."""

from __future__ import annotations

from collections import Counter

import pytest

from qmcp.agentframework.models import ExecutionStatus, Topology, TopologyType
from qmcp.agentframework.runners import LocalRunner, MetaflowRunner
from qmcp.agentframework.store import Database

pytestmark = pytest.mark.slow


async def test_a_metaflow_fork_calls_only_the_steps_from_its_fork_point(
    flows_dir, sqlite_url, agent, model_calls
):
    agents = {f"s{i}": agent(f"stage-{i}", model="counted") for i in range(3)}
    topology = Topology(name="fork_pipeline", topology_type=TopologyType.PIPELINE)
    parent = await LocalRunner(db_url=sqlite_url).run(topology, agents, {"prompt": "Is water wet?"})
    assert parent.status == ExecutionStatus.COMPLETED and sum(model_calls().values()) == 3

    runner = MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url)
    fork = await runner.fork(
        parent.execution_id, at="pipeline/1:s1", set_output={"pipeline/0:s0": "Only if it touches water."}
    )

    assert fork.status == ExecutionStatus.COMPLETED, fork.error
    assert model_calls() == Counter({"counted:specialist": 3 + 2})
    async with Database(sqlite_url) as db:
        execution = await db.get_execution(fork.execution_id)
        steps = {s.key: s for s in await db.list_steps(fork.execution_id)}
    assert execution.runner_type == "metaflow" and execution.parent_id == parent.execution_id
    assert execution.requests == 2 and steps["pipeline/0:s0"].inherited
    assert "Only if it touches water." in steps["pipeline/1:s1"].request["messages"][0]["content"]
    assert not steps["pipeline/2:s2"].inherited and fork.output is not None
