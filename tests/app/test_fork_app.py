"""The fork operations of the application layer: `fork_execution` (with the caller policy), `lineage`
and `diff_executions`."""

from __future__ import annotations

from typing import Any

import pytest

from qmcp.agentframework.errors import PermissionDeniedError
from qmcp.agentframework.models import AgentType, ExecutionStatus, Topology
from qmcp.agentframework.runners import LocalRunner
from qmcp.agentframework.store import Database, Owner
from qmcp.app import (
    MAX_EDITED_REPLY,
    Caller,
    CallerPolicy,
    Door,
    ForkRequest,
    diff_executions,
    fork_execution,
    lineage,
)


async def _parent(db_url: str, model: str = "test") -> Any:
    agents = {f"s{i}": AgentType(name=f"stage-{i}", role="writer", config={"model": model}) for i in range(3)}
    result = await LocalRunner(db_url=db_url).run(
        Topology(name="pipe", topology_type="pipeline"), agents, {"prompt": "Name a colour."}
    )
    assert result.status == ExecutionStatus.COMPLETED
    return result.execution_id


async def test_an_operators_fork_runs_here_and_a_clients_waits_for_a_worker(db_url, scripted):
    model, script = scripted(replies=lambda prompt, i: f"reply {i}")
    parent = await _parent(db_url, model)
    async with Database(db_url) as db:
        handle = await fork_execution(
            db,
            ForkRequest(str(parent)[:8], "pipeline/1:s1", set_output={"pipeline/0:s0": "blue"}),
            Caller.operator(Door.CLI),
            owner=Owner.this_process(),
        )
        assert handle.execution.parent_id == parent and handle.execution.origin == "cli"
        result = await handle.result(db)
        assert result.status == ExecutionStatus.COMPLETED and len(script.calls) == 3 + 2

        queued = await fork_execution(db, ForkRequest(parent, "pipeline/2:s2"), Caller.client(Door.HTTP))
        assert queued.lease is None
        assert (await db.get_execution(queued.execution_id)).status == ExecutionStatus.PENDING
        assert len(await db.steps.completed_steps(queued.execution_id)) == 2  # inherited, ready for a worker


@pytest.mark.parametrize(
    ("request_fields", "policy", "words"),
    [
        ({"model": "openai:gpt-4.1"}, CallerPolicy(), "model 'openai:gpt-4.1' is not allowed on this server"),
        (
            {"model": "local:/tmp/x.gguf"},
            CallerPolicy(allowed_models=frozenset({"test"})),
            "model: local model",
        ),
        ({"model": "test"}, CallerPolicy(pinned_model="scripted:x"), "model: this server runs every agent"),
        (
            {"set_output": {"pipeline/0:s0": "x" * (MAX_EDITED_REPLY + 1)}},
            CallerPolicy(),
            "set_output.pipeline/0:s0",
        ),
        ({}, CallerPolicy(runners=frozenset({"async"})), "runner 'local' is not offered"),
    ],
)
async def test_a_remote_caller_decides_only_what_it_may(sqlite_url, request_fields, policy, words):
    parent = await _parent(sqlite_url)
    async with Database(sqlite_url) as db:
        with pytest.raises(PermissionDeniedError, match=words):
            await fork_execution(
                db,
                ForkRequest(parent, "pipeline/1:s1", **request_fields),
                Caller.client(Door.HTTP),
                policy=policy,
            )
        assert await db.count_executions() == 1


async def test_a_remote_fork_takes_an_allowed_model_and_the_servers_caps(sqlite_url):
    parent = await _parent(sqlite_url)
    policy = CallerPolicy(allowed_models=frozenset({"test"}), max_tokens=5000, max_timeout_seconds=60)
    async with Database(sqlite_url) as db:
        handle = await fork_execution(
            db, ForkRequest(parent, "pipeline/1:s1", model="test"), Caller.client(Door.MCP), policy=policy
        )
    config = handle.execution.run_config
    assert (config["model_override"], config["max_tokens"], config["timeout_seconds"]) == ("test", 5000, 60)


async def test_lineage_and_diff(db_url, scripted):
    model, _ = scripted(replies=lambda prompt, i: f"reply {i}")
    parent = await _parent(db_url, model)
    runner = LocalRunner(db_url=db_url)
    child = await runner.fork(parent, at="pipeline/1:s1", set_output={"pipeline/0:s0": "edited"})
    grandchild = await runner.fork(child.execution_id, at="pipeline/2:s2")
    async with Database(db_url) as db:
        middle = await lineage(db, child.execution_id)
        assert [a.id for a in middle.ancestors] == [str(parent)]
        assert [f.id for f in middle.forks] == [str(grandchild.execution_id)]
        bottom = await lineage(db, grandchild.execution_id)
        assert [a.id for a in bottom.ancestors] == [str(child.execution_id), str(parent)]
        assert bottom.execution.fork_key == "pipeline/2:s2" and bottom.forks == []

        diff = await diff_executions(db, parent, child.execution_id)
    assert [d.key for d in diff.steps] == ["pipeline/0:s0", "pipeline/1:s1", "pipeline/2:s2"]
    first, second, third = diff.steps
    assert first.reply_changed and first.b is not None and first.b.edited and first.b.inherited
    assert first.a is not None and first.a.response == "reply 0" and not first.a.inherited
    assert second.reply_changed and second.b is not None and second.b.response == "reply 3"
    assert diff.changed == 3
    assert diff.a_totals.requests == 3 and diff.b_totals.requests == 2
    assert diff.b_totals.input_tokens == second.b.input_tokens + (third.b.input_tokens if third.b else 0)
    assert diff.model_dump(mode="json")["b"]["parent_id"] == str(parent)
