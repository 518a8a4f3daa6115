"""A user's `@topology` (tests/ext_plugin.py) runs on Metaflow through the generic single-step flow, and resumes."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import ext_plugin
import pytest

from qmcp.agentframework.models import AgentType, ExecutionStatus, Topology
from qmcp.agentframework.runners import LocalRunner, RunConfig
from qmcp.agentframework.runners._metaflow import MetaflowRunner

pytestmark = pytest.mark.slow

TESTS = Path(__file__).parent.parent


async def test_a_user_topology_runs_on_metaflow_and_resumes_like_the_local_runner(
    flows_dir, sqlite_url, agent, monkeypatch, model_calls, tmp_path
):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ["PYTHONPATH"]]))
    monkeypatch.setenv("QMCP_IMPORTS", ext_plugin.__name__)  # the flow's steps register `relay` and `shout`
    topology = Topology(name="relay_team", topology_type="relay", config={"rounds": 1})
    agents = {
        "first": agent("ann", "writer", model="counted", capabilities=["shout"]),
        "second": agent("bob", "critic", model="flaky"),  # fails its first call, in whichever process
    }
    runner = MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url, config=RunConfig(retry_on_failure=False))
    failed = await runner.run(topology, agents, {"prompt": "go"})
    assert failed.status == ExecutionStatus.FAILED and "relay/0:second" in (failed.error or "")
    resumed = await runner.resume(failed.execution_id)
    assert resumed.status == ExecutionStatus.COMPLETED, resumed.error
    assert model_calls() == Counter({"counted:writer": 1, "flaky:critic": 2})  # ann's call is not repeated
    offline = {
        slot: AgentType.model_validate({**a.definition(), "config": {**a.config, "model": "test"}})
        for slot, a in agents.items()
    }
    local = await LocalRunner(db_url=f"sqlite+aiosqlite:///{tmp_path}/local.db").run(
        topology, offline, {"prompt": "go"}
    )
    assert resumed.output == local.output and resumed.output["turns"][0]["text"].isupper()
    flow = (flows_dir / "relay_team_flow.py").read_text()
    assert "def topology(self):" in flow and 'owns="all"' in flow
