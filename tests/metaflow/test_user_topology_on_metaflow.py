"""A user's `@topology` (tests/ext_plugin.py) runs on Metaflow through the generic single-step flow."""

from __future__ import annotations

import os
from pathlib import Path

import ext_plugin
import pytest

from qmcp.agentframework.models import ExecutionStatus, Topology
from qmcp.agentframework.runners import LocalRunner
from qmcp.agentframework.runners._metaflow import MetaflowRunner

pytestmark = pytest.mark.slow

TESTS = Path(__file__).parent.parent


async def test_a_user_topology_runs_on_metaflow_like_the_local_runner(
    flows_dir, sqlite_url, agent, monkeypatch
):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ["PYTHONPATH"]]))
    monkeypatch.setenv("QMCP_IMPORTS", ext_plugin.__name__)
    topology = Topology(name="relay_team", topology_type="relay", config={"rounds": 1})
    agents = {"first": agent("ann", "writer", capabilities=["shout"]), "second": agent("bob", "critic")}
    result = await MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url).run(
        topology, agents, {"prompt": "go"}
    )
    assert result.status == ExecutionStatus.COMPLETED, result.error
    local = await LocalRunner(db_url=sqlite_url).run(topology, agents, {"prompt": "go"})
    assert result.output == local.output and result.output["turns"][0]["text"].isupper()
    flow = (flows_dir / "relay_team_flow.py").read_text()
    assert "def topology(self):" in flow and 'owns="all"' in flow
