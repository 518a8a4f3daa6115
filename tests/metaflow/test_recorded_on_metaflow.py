"""A fixture answers a Metaflow run: every flow step is its own process, which knows the call's step
key and reads the recording, not the scripted model the run was recorded on (only this process has it)."""

from __future__ import annotations

import uuid

import pytest

from qmcp.agentframework.models import AgentType, ExecutionStatus, Topology
from qmcp.agentframework.runners import LocalRunner, MetaflowRunner, RunConfig
from qmcp.agentframework.store import Database
from qmcp.testing import export_fixture_async, replay_async, save_fixture

pytestmark = pytest.mark.slow  # Metaflow runs the flow's steps in processes of their own

INPUT = {"prompt": "Is water wet?"}


async def test_a_metaflow_run_is_answered_from_a_fixture(flows_dir, sqlite_url, scripted, tmp_path):
    model, script = scripted(replies=lambda prompt, index: f"answer {index}: {uuid.uuid4().hex}")
    agents = {
        slot: AgentType(name=f"mf-{slot}", role="generalist", config={"model": model})
        for slot in ("parse", "write")
    }
    topology = Topology(name="mf_recorded", topology_type="pipeline")
    recorded = await LocalRunner(db_url=sqlite_url).run(topology, agents, INPUT)
    assert recorded.status == ExecutionStatus.COMPLETED, recorded.error
    path = tmp_path / "run.json"
    save_fixture(await export_fixture_async(recorded.execution_id, db_url=sqlite_url), path)
    calls = len(script.calls)

    offline = await MetaflowRunner(
        output_dir=flows_dir, db_url=sqlite_url, config=RunConfig(model_override=f"recorded:{path}")
    ).run(topology, agents, INPUT)
    assert offline.status == ExecutionStatus.COMPLETED, offline.error
    assert offline.output == recorded.output and len(script.calls) == calls
    async with Database(sqlite_url) as db:
        assert {s.model for s in await db.list_steps(offline.execution_id)} == {f"recorded:{path}"}
    assert (await replay_async(str(offline.execution_id), db_url=sqlite_url)).output == recorded.output
