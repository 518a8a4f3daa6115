"""Extension points: a user's `@topology` and `@mixin` (tests/ext_plugin.py) work like the built-ins.

The registries are the truth: the type is stored, validated, listed, applied from a team file, run by
the in-process runners and resumed; the mixin is enabled by name. Unknown names are one-line errors
listing the known ones.
"""

from __future__ import annotations

import ext_plugin
import pytest
from pydantic import ValidationError

from qmcp.agentframework.errors import InvalidConfigError, UserInputError
from qmcp.agentframework.mixins import MixinRegistry
from qmcp.agentframework.models import AgentCapability, AgentConfig, ExecutionStatus, Topology, TopologyType
from qmcp.agentframework.registry import MIXINS, TOPOLOGIES, Registry
from qmcp.agentframework.runners import AsyncRunner, LocalRunner, RunConfig, RunnerRegistry
from qmcp.agentframework.store import Database
from qmcp.agentframework.topologies import (
    AgentCall,
    BaseTopology,
    ParallelCalls,
    StepPlan,
    TopologyRegistry,
    topology,
)


def relay(rounds: int = 2) -> Topology:
    return Topology(name="relay-team", topology_type="relay", config={"rounds": rounds})


def test_one_registry_class_serves_the_three_axes():
    assert TopologyRegistry.get("relay") is ext_plugin.RelayTopology
    assert MixinRegistry.get("shout") is ext_plugin.ShoutMixin
    assert RunnerRegistry.get("local") is LocalRunner
    assert {type(r) for r in (MIXINS, TOPOLOGIES)} == {Registry}
    assert {t.value for t in TopologyType} < set(
        TopologyRegistry.list()
    ) and "relay" in TopologyRegistry.list()
    assert {c.value for c in AgentCapability} < set(
        MixinRegistry.names()
    ) and "shout" in MixinRegistry.names()


def test_user_names_validate_and_unknown_ones_list_the_known():
    stored = Topology.model_validate({"name": "r", "topology_type": "relay", "config": {"rounds": 3}})
    assert (stored.topology_type, stored.config) == ("relay", {"rounds": 3})
    assert AgentConfig(capabilities=["shout", "memory"]).capabilities == ["shout", "memory"]
    with pytest.raises(
        ValidationError, match=r"unknown topology type 'mesh'; known topology types: chain, .*relay"
    ):
        Topology.model_validate({"name": "r", "topology_type": "mesh"})
    with pytest.raises(ValidationError, match=r"config.rounds: Input should be less than or equal to 10"):
        Topology.model_validate({"name": "r", "topology_type": "relay", "config": {"rounds": 11}})
    with pytest.raises(
        ValidationError, match=r"capabilities.0\n.*unknown mixin 'yell'; known mixins: .*shout"
    ):
        AgentConfig(capabilities=["yell"])
    with pytest.raises(UserInputError, match=r"^unknown runner 'nope'; known runners: async, local"):
        RunnerRegistry.get("nope")


def test_a_topology_class_must_name_its_type_and_config():
    class Nameless(BaseTopology):
        topology_type = "Bad Name"

    with pytest.raises(InvalidConfigError, match="topology_type must be 1-32 lowercase"):
        topology(Nameless)

    class Newline(BaseTopology):
        topology_type = "mesh\n"  # `$` alone matches before a final newline: the name is matched whole

    with pytest.raises(InvalidConfigError, match="topology_type must be 1-32 lowercase"):
        topology(Newline)

    class Configless(BaseTopology):
        topology_type = "configless"
        config_class = dict  # type: ignore[assignment]  # what the registry refuses

    with pytest.raises(InvalidConfigError, match="config_class must be a TopologyConfig subclass"):
        topology(Configless)
    assert "configless" not in TopologyRegistry.list()


@pytest.mark.parametrize("runner_class", [LocalRunner, AsyncRunner])
async def test_user_topology_and_mixin_run_store_and_resume(db_url, agent, scripted, runner_class):
    model, script = scripted(failures={2: "auth"}, replies=lambda prompt, i: f"turn {i}")
    agents = {"first": agent("ann", model=model, capabilities=["shout"]), "second": agent("bob", model=model)}
    runner = runner_class(config=RunConfig(retry_backoff_seconds=0.001), db_url=db_url)
    first = await runner.run(relay(), agents, {"prompt": "go"})
    assert first.status == ExecutionStatus.FAILED and "relay/1:first" in (first.error or "")
    resumed = await runner.resume(first.execution_id)
    assert resumed.status == ExecutionStatus.COMPLETED, resumed.error
    assert len(script.calls) == 5  # calls 0, 1, 2 (failed); on resume 2 again and 3, none replayed
    assert resumed.output == {
        "output": "turn 4",
        "turns": [
            {"slot": "first", "agent": "ann", "text": "TURN 0"},
            {"slot": "second", "agent": "bob", "text": "turn 1"},
            {"slot": "first", "agent": "ann", "text": "TURN 3"},
            {"slot": "second", "agent": "bob", "text": "turn 4"},
        ],
    }
    assert "Carry on from: TURN 0" in script.calls[1].prompt
    async with Database(db_url) as db:
        stored, slots = await db.get_topology("relay-team")
        execution = await db.get_execution(first.execution_id)
    assert (stored.topology_type, stored.config, sorted(slots)) == (
        "relay",
        {"rounds": 2},
        ["first", "second"],
    )
    assert execution.topology_type == "relay"


def test_a_step_plan_ends_with_its_parallel_calls():
    one = AgentCall("a", "k/a")
    together = ParallelCalls("each", "", (one,), "join", "")
    assert StepPlan("a then all", (one, together)).keys() == ["k/a", "k/a"]
    with pytest.raises(ValueError, match="ParallelCalls must be the last stage"):
        StepPlan("all then a", (together, one))
    assert ext_plugin.RelayTopology().step_plan({}) is None  # no plan: one flow step runs it
