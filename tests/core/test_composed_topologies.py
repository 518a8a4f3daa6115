"""Chain of command, delegation and compound topologies, checked on outputs and on resume."""

from __future__ import annotations

import json

import pytest

from qmcp.agentframework.errors import InvalidConfigError, MissingSlotError, NotFoundError
from qmcp.agentframework.models import (
    ChainOfCommandConfig,
    CompoundConfig,
    DelegationConfig,
    ExecutionStatus,
    Topology,
    TopologyType,
)
from qmcp.agentframework.runners import AsyncRunner, LocalRunner, RunConfig
from qmcp.agentframework.store import Database


def fast(**config) -> RunConfig:
    return RunConfig(retry_backoff_seconds=0.001, **config)


def plan(*tasks: str) -> str:
    return json.dumps({"subtasks": [{"task": t} for t in tasks]})


async def test_chain_plans_delegates_round_robin_and_synthesizes(db_url, agent, scripted):
    commander, boss = scripted(
        replies=lambda p, i: (
            plan("collect data", "analyse data", "write report")
            if "Break this task" in p
            else "final answer\nConfidence: 0.9"
        )
    )
    worker, _ = scripted(replies=lambda p, i: f"done: {p.splitlines()[0]}\nConfidence: 0.8")
    agents = {
        "commander": agent("boss", "commander", model=commander),
        "lieutenant_1": agent("lt-1", "lieutenant", model=worker),
        "lieutenant_2": agent("lt-2", "lieutenant", model=worker),
    }
    topo = Topology(
        name="chain", topology_type=TopologyType.CHAIN_OF_COMMAND, config=ChainOfCommandConfig().model_dump()
    )
    result = await LocalRunner(config=fast(), db_url=db_url).run(topo, agents, {"task": "quarterly report"})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    out = result.output
    assert out["answer"] == "final answer" and out["escalations"] == 0
    assert out["plan"] == ["collect data", "analyse data", "write report"]
    assert [s["assigned_to"] for s in out["subtasks"]] == ["lieutenant_1", "lieutenant_2", "lieutenant_1"]
    assert (
        out["subtasks"][1]["result"] == "done: Task: analyse data" and out["subtasks"][1]["confidence"] == 0.8
    )
    assert "Subtask 3: write report" in boss.prompts[-1]


async def test_chain_escalates_low_confidence_and_respects_depth(sqlite_url, agent, scripted):
    def boss(prompt: str, _i: int) -> str:
        return plan("easy", "hard") if "Break this task" in prompt else "summary\nConfidence: 0.9"

    def lieutenant(prompt: str, _i: int) -> str:
        if "Break this task" in prompt:
            return plan(prompt.splitlines()[0].removeprefix("Task: ") + " part")
        return "lt fixed it\nConfidence: 0.9" if "Escalated" in prompt else "merged\nConfidence: 0.7"

    commander, _ = scripted(replies=boss)
    lieutenants, _ = scripted(replies=lieutenant)
    worker, workers = scripted(
        replies=lambda p, i: "unsure\nConfidence: 0.2" if "hard" in p else "sure\nConfidence: 0.9"
    )
    agents = {
        "commander": agent("boss", "commander", model=commander),
        "lieutenant_1": agent("lt", "lieutenant", model=lieutenants),
        "worker_1": agent("w", "worker", model=worker),
    }
    shallow = Topology(name="chain2", topology_type="chain", config={"max_delegation_depth": 1})
    result = await LocalRunner(config=fast(), db_url=sqlite_url).run(shallow, agents, {"task": "t"})
    # depth 1: lieutenants execute themselves, workers are never reached
    assert workers.calls == [] and [s["result"] for s in result.output["subtasks"]] == ["merged", "merged"]

    deep = Topology(
        name="chain3", topology_type="chain", config={"max_delegation_depth": 3, "escalation_threshold": 0.5}
    )
    result = await LocalRunner(config=fast(), db_url=sqlite_url).run(deep, agents, {"task": "t"})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    easy, hard = (branch["subtasks"][0] for branch in result.output["subtasks"])
    assert (easy["task"], easy["assigned_to"], easy["result"], easy["escalated"]) == (
        "easy part",
        "worker_1",
        "sure",
        False,
    )
    assert (hard["task"], hard["escalated"], hard["escalated_to"]) == ("hard part", True, "lieutenant_1")
    assert (hard["original_result"], hard["result"], hard["confidence"]) == ("unsure", "lt fixed it", 0.9)
    assert result.output["escalations"] == 1 and len(workers.calls) == 2


def test_chain_slots_are_matched_by_prefix(agent):
    from qmcp.agentframework.topologies import ChainOfCommandTopology

    chain = ChainOfCommandTopology({"authority_levels": ["commander", "lieutenant", "worker"]})
    slots = ["commander", "lieutenant_1", "lieutenant_2", "worker_1"]
    assert chain.level_slots(slots, 1) == ["lieutenant_1", "lieutenant_2"]
    with pytest.raises(MissingSlotError, match="level 'lieutenant'"):
        chain.validate_team({"commander": agent("c"), "worker_1": agent("w")})


async def test_chain_on_the_test_model_follows_the_structured_plan(sqlite_url, agent):
    agents = {
        "commander": agent("boss", "commander"),
        "lieutenant_1": agent("lt-1", "lieutenant"),
        "lieutenant_2": agent("lt-2", "lieutenant"),
    }
    topo = Topology(name="chain-test", topology_type="chain")
    result = await AsyncRunner(db_url=sqlite_url).run(topo, agents, {"task": "Plan a launch"})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert len(result.output["plan"]) == 2 and result.output["answer"].startswith("Orders: ")


async def test_delegation_routes_by_capability_words_and_balances_load(db_url, agent, scripted):
    model, _ = scripted(replies=lambda p, i: f"handled {p.split(chr(10))[0]}")
    agents = {
        "coder": agent("coder", "specialist", model=model, description="writes python code and fixes bugs"),
        "writer": agent("writer", "writer", model=model, description="writes documentation and blog posts"),
        "writer_2": agent(
            "writer-2", "writer", model=model, description="writes documentation and blog posts"
        ),
    }
    topo = Topology(name="deleg", topology_type="delegation", config=DelegationConfig().model_dump())
    tasks = [
        "fix the python bug in the parser",
        "write documentation for the API",
        "write blog posts about it",
    ]
    result = await LocalRunner(config=fast(), db_url=db_url).run(topo, agents, {"tasks": tasks})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assigned = [r["assigned_to"] for r in result.output["results"]]
    assert assigned == ["coder", "writer", "writer_2"]
    assert result.output["routing"] == {"coder": 1, "writer": 1, "writer_2": 1}


async def test_delegation_by_role_with_fallback_and_unroutable_error(sqlite_url, agent, scripted):
    model, _ = scripted(replies=lambda p, i: "ok")
    agents = {
        "analyst": agent("ana", "analyst", model=model),
        "catch_all": agent("generalist", "generalist", model=model),
    }
    config = DelegationConfig(routing_strategy="role", fallback_agent_name="generalist")
    topo = Topology(name="deleg2", topology_type="delegation", config=config.model_dump())
    tasks = [{"task": "numbers", "role": "analyst"}, {"task": "poem", "role": "poet"}]
    result = await LocalRunner(config=fast(), db_url=sqlite_url).run(topo, agents, {"tasks": tasks})
    assert [(r["assigned_to"], r["reason"]) for r in result.output["results"]] == [
        ("analyst", "matched"),
        ("catch_all", "fallback"),
    ]
    topo = Topology(
        name="deleg3",
        topology_type="delegation",
        config=DelegationConfig(routing_strategy="role").model_dump(),
    )
    result = await LocalRunner(config=fast(), db_url=sqlite_url).run(
        topo, {"analyst": agents["analyst"]}, {"tasks": tasks}
    )
    assert result.status == ExecutionStatus.FAILED and "no specialist matches task 1 ('poem')" in result.error
    async with Database(sqlite_url) as db:
        assert await db.list_steps(result.execution_id) == []  # refused before any step


async def test_delegation_router_agent_decides_ambiguous_tasks(sqlite_url, agent, scripted):
    worker, _ = scripted(replies=lambda p, i: "done")
    router, router_script = scripted(replies=['{"specialist": "b", "reason": "b is free"}'])
    agents = {
        "router": agent("rt", "router", model=router),
        "a": agent("aa", model=worker),
        "b": agent("bb", model=worker),
    }
    topo = Topology(name="deleg4", topology_type="delegation")
    result = await LocalRunner(config=fast(), db_url=sqlite_url).run(topo, agents, {"prompt": "zzz"})
    (only,) = result.output["results"]
    assert (only["assigned_to"], only["reason"]) == ("b", "b is free") and len(router_script.calls) == 1


async def _store_team(db_url, name, kind, agents, config=None):
    async with Database(db_url) as db:
        await db.save_team(
            Topology.model_validate({"name": name, "topology_type": kind, "config": config or {}}), agents
        )


async def test_compound_sequential_feeds_each_output_on(db_url, agent, scripted):
    model, script = scripted(replies=lambda p, i: f"out{i}")
    await _store_team(db_url, "first", "pipeline", {"s": agent("a1", model=model)})
    await _store_team(db_url, "second", "pipeline", {"s": agent("a2", model=model)})
    topo = Topology(
        name="both",
        topology_type="compound",
        config=CompoundConfig(sub_topologies=["first", "second"]).model_dump(),
    )
    result = await LocalRunner(config=fast(), db_url=db_url).run(topo, {}, {"prompt": "go"})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert result.output["output"] == "out1" and [r["topology"] for r in result.output["results"]] == [
        "first",
        "second",
    ]
    assert script.prompts[1].startswith("Task: out0")
    async with Database(db_url) as db:
        keys = [s.key for s in await db.list_steps(result.execution_id)]
    assert keys == ["compound/0:first/pipeline/0:s", "compound/1:second/pipeline/0:s"]


async def test_compound_parallel_and_conditional(sqlite_url, agent, scripted):
    yes, _ = scripted(replies=lambda p, i: "APPROVED")
    other, _ = scripted(replies=lambda p, i: "other")
    await _store_team(sqlite_url, "check", "pipeline", {"s": agent("c", model=yes)})
    await _store_team(sqlite_url, "ship", "pipeline", {"s": agent("sh", model=other)})
    await _store_team(sqlite_url, "fix", "pipeline", {"s": agent("fx", model=other)})
    parallel = Topology(
        name="par", topology_type="compound", config={"mode": "parallel", "sub_topologies": ["check", "ship"]}
    )
    result = await AsyncRunner(db_url=sqlite_url).run(parallel, {}, {"prompt": "go"})
    assert (
        set(result.output["results"]) == {"check", "ship"}
        and result.output["results"]["ship"]["output"] == "other"
    )

    config = {
        "mode": "conditional",
        "sub_topologies": ["check"],
        "conditions": [{"contains": "approved", "then": "ship"}],
        "default": "fix",
    }
    conditional = Topology(name="cond", topology_type="compound", config=config)
    result = await LocalRunner(db_url=sqlite_url).run(conditional, {}, {"prompt": "go"})
    assert result.output["chosen"] == "ship" and [r["topology"] for r in result.output["results"]] == [
        "check",
        "ship",
    ]


async def test_compound_cycles_and_missing_parts_are_rejected_before_running(sqlite_url, agent):
    await _store_team(sqlite_url, "leaf", "pipeline", {"s": agent("l")})
    await _store_team(sqlite_url, "a", "compound", {}, {"sub_topologies": ["leaf", "b"]})
    await _store_team(sqlite_url, "b", "compound", {}, {"sub_topologies": ["a"]})
    runner = LocalRunner(db_url=sqlite_url)
    with pytest.raises(InvalidConfigError, match="cycle: top -> a -> b -> a"):
        await runner.run(
            Topology(name="top", topology_type="compound", config={"sub_topologies": ["a"]}), {}, {}
        )
    with pytest.raises(InvalidConfigError, match="cycle: self -> self"):
        await runner.run(
            Topology(name="self", topology_type="compound", config={"sub_topologies": ["self"]}), {}, {}
        )
    with pytest.raises(NotFoundError, match="topology 'ghost' not found"):
        await runner.run(
            Topology(name="top", topology_type="compound", config={"sub_topologies": ["ghost"]}), {}, {}
        )
    async with Database(sqlite_url) as db:
        assert await db.list_executions() == []


async def test_compound_resumes_inside_its_second_sub_topology(sqlite_url, agent, scripted):
    model, script = scripted(failures={4: "auth"}, replies=lambda p, i: f"r{i}")
    await _store_team(
        sqlite_url, "one", "pipeline", {f"s{i}": agent(f"one-{i}", model=model) for i in range(3)}
    )
    await _store_team(
        sqlite_url, "two", "pipeline", {f"s{i}": agent(f"two-{i}", model=model) for i in range(3)}
    )
    topo = Topology(name="outer", topology_type="compound", config={"sub_topologies": ["one", "two"]})
    runner = LocalRunner(config=fast(), db_url=sqlite_url)
    first = await runner.run(topo, {}, {"prompt": "go"})
    assert first.status == ExecutionStatus.FAILED and "compound/1:two/pipeline/1:s1" in first.error
    resumed = await runner.resume(first.execution_id)
    assert resumed.status == ExecutionStatus.COMPLETED, resumed.error
    assert len(script.calls) == 5 + 2  # only two/s1 (again) and two/s2
