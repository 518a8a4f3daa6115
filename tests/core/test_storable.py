"""NUL characters: refused up front where users give text, harmless where models and tools produce it.

PostgreSQL cannot store NUL in text (SQLite can), so every case runs on both databases: a run
must behave the same, and never fail halfway on PostgreSQL with an internal error.
"""

from __future__ import annotations

import uuid

import pytest

from qmcp.agentframework.errors import InvalidConfigError, UserInputError
from qmcp.agentframework.models import (
    Execution,
    ExecutionStatus,
    StepStatus,
    Topology,
    TopologyType,
    storable_text,
)
from qmcp.agentframework.runners import LocalRunner, RunConfig
from qmcp.agentframework.store import Database, MemoryStore, Owner, StepRecord, is_sqlite

PIPELINE = Topology(name="nul", topology_type=TopologyType.PIPELINE)


async def _nothing_stored(db_url: str) -> None:
    async with Database(db_url) as db:
        assert await db.list_executions() == [] and await db.list_agents() == []


async def test_nul_in_input_is_refused_naming_the_field(db_url, agent):
    runner = LocalRunner(db_url=db_url)
    with pytest.raises(UserInputError) as refused:
        await runner.run(PIPELINE, {"only": agent("a")}, {"prompt": "ok", "items": [{"text": "a\x00b"}]})
    assert str(refused.value) == (
        "input_data.items[0].text contains a NUL character (\\x00), which the database cannot store; remove it"
    )
    await _nothing_stored(db_url)


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("system_prompt", "agent 'a': config.system_prompt contains a NUL character"),
        ("description", "agent 'a': description contains a NUL character"),
        ("mixin", "agent 'a': config.mixins.memory.tags[0] contains a NUL character"),
        ("topology", "topology 'nul': config.stages[0] contains a NUL character"),
    ],
)
async def test_nul_in_definitions_is_refused_naming_the_field(db_url, agent, where, says):
    topology, member = PIPELINE, agent("a")
    if where == "system_prompt":
        member = agent("a", system_prompt="be\x00have")
    elif where == "description":
        member = agent("a", description="a\x00")
    elif where == "mixin":
        member = agent("a", capabilities=["memory"], mixins={"memory": {"tags": ["t\x00ag"]}})
    else:
        topology = Topology(name="nul", topology_type=TopologyType.PIPELINE, config={"stages": ["o\x00nly"]})
    with pytest.raises(InvalidConfigError) as refused:
        await LocalRunner(db_url=db_url).run(topology, {"only": member}, {"prompt": "x"})
    assert says in str(refused.value) and "\n" not in str(refused.value)
    await _nothing_stored(db_url)


async def test_nul_in_an_answer_is_refused(db_url):
    async with Database(db_url) as db:
        with pytest.raises(InvalidConfigError, match=r"^the answer contains a NUL character"):
            await db.answer_human_request(str(uuid.uuid4()), "approve\x00")


async def test_a_model_reply_with_nul_completes_and_resumes_alike_on_both_databases(db_url, agent, scripted):
    model, script = scripted(replies=["first\x00reply", "second\x00reply"], failures={1: "auth"})
    team = {
        "one": agent("one", model=model, capabilities=["memory"]),
        "two": agent("two", model=model),
    }
    runner = LocalRunner(config=RunConfig(max_retries=0), db_url=db_url)
    failed = await runner.run(PIPELINE, team, {"prompt": "go"})
    assert failed.status == ExecutionStatus.FAILED and "internal error" not in (failed.error or "")
    resumed = await runner.resume(failed.execution_id)
    assert resumed.status == ExecutionStatus.COMPLETED, resumed.error
    assert len(script.calls) == 3  # the first step replayed from the store
    assert resumed.output["output"] == "first\ufffdreply"  # the third call: the replies cycle
    async with Database(db_url) as db:
        steps = await db.list_steps(resumed.execution_id)
        memories = await MemoryStore(db).memories("one")
    assert [(step.status, step.response) for step in steps] == [
        (StepStatus.COMPLETED, "first\ufffdreply")
    ] * 2
    assert [memory.content for memory in memories] == ["Task: go\nAnswer: first\ufffdreply"]


async def test_nul_left_in_any_text_is_stored_by_postgresql_as_a_replacement(db_url):
    """What the up-front checks cannot see (an error quoting a tool, a memory) still never fails a write."""
    expected = "a\x00b" if is_sqlite(db_url) else "a\ufffdb"
    async with Database(db_url) as db:
        execution = Execution(topology_name="nul", topology_type="pipeline")
        lease = await db.executions.create(execution, Owner.this_process(), runner="local")
        assert lease is not None
        await db.executions.finish(lease, ExecutionStatus.FAILED, error="a\x00b", output={"text": "a\x00b"})
        record = StepRecord(
            execution_id=execution.id,
            key="k",
            slot="s",
            agent_name="a",
            model="test",
            status=StepStatus.FAILED,
            response="a\x00b",
            error="a\x00b",
            output={"tool_calls": [{"result": "a\x00b"}]},
        )
        await db.steps.save(record)
        await db.steps.save(record, batch=True)
        memory = await MemoryStore(db).remember("a", "a\x00b")
        stored = await db.get_execution(execution.id)
        (step,) = await db.list_steps(execution.id)
        (remembered,) = await MemoryStore(db).memories("a")
    assert memory.id is not None
    assert (stored.error, step.response, step.error, remembered.content) == (expected,) * 4
    assert stored.output_data == {"text": "a\x00b"}  # JSON columns keep it, escaped as \\u0000
    assert step.output == {"tool_calls": [{"result": "a\x00b"}]}


def test_storable_text():
    assert storable_text("plain") == "plain"
    assert storable_text("\x00a\x00") == "\ufffda\ufffd"
