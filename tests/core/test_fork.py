"""Forks: a new execution that inherits its parent's steps before the fork step and runs the rest."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic_ai.models.function import FunctionModel

from qmcp.agentframework.errors import NotFoundError, UntrustedDefinitionError, UserInputError
from qmcp.agentframework.llm import make_test_model, register_model, unregister_model
from qmcp.agentframework.models import AgentType, ExecutionStatus, StepStatus, Topology
from qmcp.agentframework.runners import AsyncRunner, LocalRunner, RunConfig
from qmcp.agentframework.store import Database, ExecutionService, PruneFilter

KINDS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "pipeline": ({}, ("plan", "write", "edit")),
    "ensemble": ({"aggregation_method": "synthesis"}, ("m1", "m2", "aggregator")),
    "debate": ({"max_rounds": 2, "consensus_method": "mediator"}, ("proponent", "opponent", "mediator")),
    "crosscheck": ({}, ("primary", "checker_1", "checker_2")),
    "chain": ({"authority_levels": ["commander", "worker"]}, ("commander", "worker_1", "worker_2")),
    "delegation": ({"fallback_agent_name": "a-writer"}, ("router", "coder", "writer")),
}


@pytest.fixture
def counting() -> Iterator[tuple[str, list[str]]]:
    """The offline test model's replies under a model string of its own, counting its calls (roles)."""
    name, calls = f"counting:{uuid.uuid4().hex[:8]}", []

    def factory(role: str) -> FunctionModel:
        inner = make_test_model(role)

        def reply(messages: Any, info: Any) -> Any:
            calls.append(role)
            return inner.function(messages, info)  # type: ignore[misc]

        return FunctionModel(reply, model_name=name)

    register_model(name, factory)
    yield name, calls
    unregister_model(name)


def _team(kind: str, model: str) -> tuple[Topology, dict[str, AgentType]]:
    config, slots = KINDS[kind]
    agents = {slot: AgentType(name=f"a-{slot}", role="generalist", config={"model": model}) for slot in slots}
    return Topology(name=f"t-{kind}", topology_type=kind, config=config), agents


async def _steps(db_url: str, execution_id: Any) -> list[Any]:
    async with Database(db_url) as db:
        steps = await db.list_steps(execution_id)
    return sorted(steps, key=lambda s: (s.started_at, s.id))


async def _execution(db_url: str, execution_id: Any) -> Any:
    async with Database(db_url) as db:
        return await db.get_execution(execution_id)


@pytest.mark.parametrize("offline", ["test", "counting"])
@pytest.mark.parametrize("kind", [*KINDS, "compound"])
async def test_a_fork_at_the_middle_step_calls_only_the_steps_from_there_on(db_url, kind, offline, counting):
    """On the `test` model itself, and on its replies under a model that counts its calls."""
    model, calls = counting if offline == "counting" else ("test", None)
    if kind == "compound":
        async with Database(db_url) as db:
            for sub in ("pipeline", "crosscheck"):
                topology, agents = _team(sub, model)
                await db.save_team(topology.model_copy(update={"name": f"sub-{sub}"}), agents)
        topology = Topology(
            name="outer",
            topology_type="compound",
            config={"mode": "sequential", "sub_topologies": ["sub-pipeline", "sub-crosscheck"]},
        )
        agents = {}
    else:
        topology, agents = _team(kind, model)
    parent = await LocalRunner(db_url=db_url).run(topology, agents, {"prompt": "Write and check a haiku."})
    assert parent.status == ExecutionStatus.COMPLETED, parent.error
    steps = await _steps(db_url, parent.execution_id)
    middle = len(steps) // 2
    if calls is not None:
        calls.clear()

    fork = await LocalRunner(db_url=db_url).fork(parent.execution_id, at=steps[middle].key)

    assert fork.status == ExecutionStatus.COMPLETED, fork.error
    assert fork.output == parent.output  # the test model is deterministic: the same run again
    if calls is not None:
        assert len(calls) == len(steps) - middle  # the steps from the fork point on, and no other
    forked = await _steps(db_url, fork.execution_id)
    inherited = [s for s in forked if s.inherited]
    assert [s.key for s in inherited] == [s.key for s in steps[:middle]]
    assert [(s.response, s.input_tokens) for s in inherited] == [
        (s.response, s.input_tokens) for s in steps[:middle]
    ]
    ran = [s for s in forked if not s.inherited]
    assert {s.key for s in ran} == {s.key for s in steps[middle:]}
    execution = await _execution(db_url, fork.execution_id)
    assert (execution.parent_id, execution.fork_key) == (parent.execution_id, steps[middle].key)
    assert execution.requests == len(steps) - middle
    assert [s.model for s in ran] == [model] * len(ran)
    assert execution.input_tokens == sum(s.input_tokens for s in ran)  # inherited steps paid nothing
    assert fork.usage.input_tokens == execution.input_tokens


async def test_a_scripted_fork_pays_only_for_its_own_steps_and_forks_again(db_url, agent, scripted):
    model, script = scripted(replies=lambda prompt, i: f"reply {i}")
    agents = {f"s{i}": agent(f"stage-{i}", model=model) for i in range(4)}
    topology = Topology(name="pipe", topology_type="pipeline")
    runner = AsyncRunner(config=RunConfig(retry_backoff_seconds=0.001), db_url=db_url)
    parent = await runner.run(topology, agents, {"prompt": "p"})
    assert len(script.calls) == 4

    fork = await runner.fork(parent.execution_id, at="pipeline/2:s2")
    assert fork.status == ExecutionStatus.COMPLETED, fork.error
    assert len(script.calls) == 6  # s2 and s3 again
    assert "Output of the previous stage (s1):\nreply 1" in script.calls[4].prompt
    paid = [s for s in await _steps(db_url, fork.execution_id) if not s.inherited]
    assert fork.usage.requests == 2 and fork.usage.output_tokens == sum(s.output_tokens for s in paid)
    assert fork.usage.cost_usd == sum(s.cost_usd for s in paid)

    again = await runner.fork(fork.execution_id, at="pipeline/3:s3")  # a fork of the fork
    assert again.status == ExecutionStatus.COMPLETED and len(script.calls) == 7
    steps = await _steps(db_url, again.execution_id)
    assert [(s.key, s.inherited) for s in steps] == [
        ("pipeline/0:s0", True),
        ("pipeline/1:s1", True),
        ("pipeline/2:s2", True),
        ("pipeline/3:s3", False),
    ]
    assert steps[2].response == "reply 4"  # the first fork's own reply, not its parent's
    execution = await _execution(db_url, again.execution_id)
    assert execution.parent_id == fork.execution_id and execution.requests == 1


async def test_set_output_changes_what_the_next_step_receives(db_url, agent, scripted):
    model, script = scripted(replies=lambda prompt, i: f"reply {i}")
    agents = {f"s{i}": agent(f"stage-{i}", model=model) for i in range(3)}
    parent = await LocalRunner(db_url=db_url).run(
        Topology(name="pipe", topology_type="pipeline"), agents, {"prompt": "p"}
    )
    edited = await LocalRunner(db_url=db_url).fork(
        parent.execution_id, at="pipeline/2:s2", set_output={"pipeline/1:s1": "a human's better draft"}
    )
    assert edited.status == ExecutionStatus.COMPLETED, edited.error
    steps = {s.key: s for s in await _steps(db_url, edited.execution_id)}
    assert steps["pipeline/1:s1"].response == "a human's better draft"
    assert steps["pipeline/1:s1"].output == {"edited": True} and steps["pipeline/1:s1"].inherited
    received = steps["pipeline/2:s2"].request["messages"][0]["content"]
    assert "Output of the previous stage (s1):\na human's better draft" in received
    assert len(script.calls) == 4

    # the fork step itself edited: kept as set, and the run goes on after it
    kept = await LocalRunner(db_url=db_url).fork(
        parent.execution_id, at="pipeline/1:s1", set_output={"pipeline/1:s1": "edited at the fork"}
    )
    assert kept.status == ExecutionStatus.COMPLETED and len(script.calls) == 5
    steps = {s.key: s for s in await _steps(db_url, kept.execution_id)}
    assert steps["pipeline/1:s1"].inherited and steps["pipeline/1:s1"].response == "edited at the fork"
    assert "edited at the fork" in steps["pipeline/2:s2"].request["messages"][0]["content"]


async def test_a_fork_with_another_agent_and_another_model(db_url, agent, scripted):
    first, first_script = scripted(replies=lambda prompt, i: f"first {i}")
    other, other_script = scripted(replies=lambda prompt, i: f"other {i}")
    third, third_script = scripted(replies=lambda prompt, i: f"third {i}")
    agents = {f"s{i}": agent(f"stage-{i}", model=first) for i in range(3)}
    runner = LocalRunner(db_url=db_url)
    parent = await runner.run(Topology(name="pipe", topology_type="pipeline"), agents, {"prompt": "p"})
    async with Database(db_url) as db:
        await db.save_agent(agent("replacement", model=other))

    # s1 gets the stored agent from the fork point on; s2 (and s1's re-run) run on it, s0 is inherited
    swapped = await runner.fork(parent.execution_id, at="pipeline/1:s1", agents={"s1": "replacement"})
    assert swapped.status == ExecutionStatus.COMPLETED, swapped.error
    assert len(other_script.calls) == 1 and len(first_script.calls) == 3 + 1
    steps = {s.key: s for s in await _steps(db_url, swapped.execution_id)}
    assert (steps["pipeline/1:s1"].agent_name, steps["pipeline/1:s1"].response) == ("replacement", "other 0")

    # forking later: s1's inherited step keeps its recorded agent although the slot now holds another
    later = await runner.fork(parent.execution_id, at="pipeline/2:s2", agents={"s1": "replacement"})
    assert later.status == ExecutionStatus.COMPLETED, later.error
    steps = {s.key: s for s in await _steps(db_url, later.execution_id)}
    assert steps["pipeline/1:s1"].inherited and steps["pipeline/1:s1"].agent_name == "stage-1"

    # another model: every re-run step calls it, and the fork records the override
    remodelled = await runner.fork(parent.execution_id, at="pipeline/1:s1", model=third)
    assert remodelled.status == ExecutionStatus.COMPLETED, remodelled.error
    assert len(third_script.calls) == 2
    execution = await _execution(db_url, remodelled.execution_id)
    assert execution.run_config["model_override"] == third
    steps = {s.key: s for s in await _steps(db_url, remodelled.execution_id)}
    assert steps["pipeline/0:s0"].model == first and steps["pipeline/2:s2"].model == third


async def test_a_changed_input_runs_the_rest_on_it(db_url, agent, scripted):
    model, script = scripted(replies=lambda prompt, i: f"reply {i}")
    agents = {f"s{i}": agent(f"stage-{i}", model=model) for i in range(2)}
    runner = LocalRunner(db_url=db_url)
    parent = await runner.run(Topology(name="pipe", topology_type="pipeline"), agents, {"prompt": "old"})
    fork = await runner.fork(parent.execution_id, at="pipeline/1:s1", input_data={"prompt": "new task"})
    assert fork.status == ExecutionStatus.COMPLETED
    assert (await _execution(db_url, fork.execution_id)).input_data == {"prompt": "new task"}
    assert "new task" in script.calls[-1].prompt  # the re-run step sees the new input


async def _count_executions(db_url: str) -> int:
    async with Database(db_url) as db:
        return await db.count_executions()


@pytest.mark.parametrize(
    ("arguments", "error", "words"),
    [
        ({"at": "pipeline/1:s9"}, NotFoundError, "did you mean 'pipeline/1:s1'? steps are: pipeline/0:s0"),
        ({"at": "pipeline/1:s1", "agents": {"s7": "x"}}, UserInputError, "no slot 's7'"),
        ({"at": "pipeline/1:s1", "agents": {"s1": "nobody"}}, NotFoundError, "agent 'nobody' not found"),
        (
            {"at": "pipeline/1:s1", "set_output": {"pipeline/2:s2": "x"}},
            UserInputError,
            "runs again in this fork",
        ),
        (
            {"at": "pipeline/1:s1", "set_output": {"nope": "x"}},
            UserInputError,
            "no step 'nope' to set the reply of: it must be 'pipeline/1:s1' or a completed step before it; "
            "steps are: pipeline/0:s0, pipeline/1:s1",
        ),
        ({"at": "pipeline/1:s1", "model": "nosuchprovider:x"}, UserInputError, "nosuchprovider"),
    ],
)
async def test_a_wrong_fork_is_one_line_and_writes_nothing(db_url, agent, arguments, error, words):
    agents = {f"s{i}": agent(f"stage-{i}") for i in range(3)}
    runner = LocalRunner(db_url=db_url)
    parent = await runner.run(Topology(name="pipe", topology_type="pipeline"), agents, {"prompt": "p"})
    with pytest.raises(error) as raised:
        await runner.fork(parent.execution_id, **arguments)
    assert words in str(raised.value) and "\n" not in str(raised.value)
    assert await _count_executions(db_url) == 1


async def test_a_fork_whose_parent_is_pruned_meanwhile_says_it_is_not_found(db_url, agent, monkeypatch):
    """A prune that deletes the parent between the fork's read of it and its write: the fork's foreign
    key fails, and the caller hears one line, as if the prune had come first; nothing is written."""
    runner = LocalRunner(db_url=db_url)
    agents = {"s0": agent("a"), "s1": agent("b")}
    parent = await runner.run(Topology(name="pipe", topology_type="pipeline"), agents, {"prompt": "p"})
    create = ExecutionService.create

    async def pruned_first(self: ExecutionService, *args: Any, **kwargs: Any) -> Any:
        assert (await self.db.prune(PruneFilter(older_than=timedelta(0)), vacuum=False)).executions == 1
        return await create(self, *args, **kwargs)

    monkeypatch.setattr(ExecutionService, "create", pruned_first)
    with pytest.raises(NotFoundError, match=f"^execution {parent.execution_id} not found; list them with"):
        await runner.fork(parent.execution_id, at="pipeline/1:s1")
    assert await _count_executions(db_url) == 0


async def test_an_untrusted_stored_agent_is_refused(sqlite_url, agent):
    runner = LocalRunner(db_url=sqlite_url)
    parent = await runner.run(
        Topology(name="pipe", topology_type="pipeline"), {"s0": agent("a"), "s1": agent("b")}, {"prompt": "p"}
    )
    async with Database(sqlite_url) as db:
        await db.save_agent(agent("keyed", api_key_env="SOME_KEY"))
    with pytest.raises(UntrustedDefinitionError, match="'keyed'"):
        await runner.fork(parent.execution_id, at="pipeline/1:s1", agents={"s1": "keyed"})
    assert await _count_executions(sqlite_url) == 1


async def test_an_edit_of_structured_data_must_be_json(sqlite_url, agent):
    topology = Topology(name="cc", topology_type="crosscheck")
    agents = {"primary": agent("p"), "checker_1": agent("c1", "checker"), "checker_2": agent("c2", "checker")}
    runner = LocalRunner(db_url=sqlite_url)
    parent = await runner.run(topology, agents, {"prompt": "Is water wet?"})
    steps = await _steps(sqlite_url, parent.execution_id)
    checker = next(s for s in steps if s.key.endswith("checker:checker_1"))
    assert checker.output["data"] is not None
    last = steps[-1].key
    with pytest.raises(UserInputError, match="must be a JSON object"):
        await runner.fork(parent.execution_id, at=last, set_output={checker.key: "looks fine"})
    verdict = {"approved": False, "confidence": 0.9, "issues": ["made up"], "suggestions": []}
    fork = await runner.fork(parent.execution_id, at=last, set_output={checker.key: json.dumps(verdict)})
    assert fork.status == ExecutionStatus.COMPLETED, fork.error
    edited = next(s for s in await _steps(sqlite_url, fork.execution_id) if s.key == checker.key)
    assert edited.output["data"] == verdict and edited.output["edited"] is True


async def test_a_failed_parent_forks_from_its_failed_step(db_url, agent, scripted):
    model, script = scripted(failures={1: "auth"}, replies=lambda prompt, i: f"reply {i}")
    agents = {f"s{i}": agent(f"stage-{i}", model=model) for i in range(3)}
    runner = LocalRunner(config=RunConfig(retry_backoff_seconds=0.001), db_url=db_url)
    parent = await runner.run(Topology(name="pipe", topology_type="pipeline"), agents, {"prompt": "p"})
    assert parent.status == ExecutionStatus.FAILED
    steps = await _steps(db_url, parent.execution_id)
    assert steps[-1].status == StepStatus.FAILED
    fork = await runner.fork(parent.execution_id, at=steps[-1].key)
    assert fork.status == ExecutionStatus.COMPLETED, fork.error
    assert fork.usage.requests == 2 and len(script.calls) == 2 + 2

    edited = await runner.fork(parent.execution_id, at=steps[-1].key, set_output={steps[-1].key: "by hand"})
    assert edited.status == ExecutionStatus.COMPLETED and len(script.calls) == 4 + 1  # s2 only
    step = next(s for s in await _steps(db_url, edited.execution_id) if s.key == steps[-1].key)
    assert (step.status, step.error, step.response) == (StepStatus.COMPLETED, None, "by hand")
    assert step.completed_at is not None


def test_a_forks_budget_counts_only_what_the_fork_pays():
    from qmcp.agentframework.models import Usage
    from qmcp.agentframework.store import StepRecord
    from qmcp.agentframework.topologies import Budget

    execution = uuid.uuid4()
    completed = {
        "a": StepRecord(
            execution, "a", "s0", "x", "test", input_tokens=900, output_tokens=100, inherited=True
        ),
        "b": StepRecord(execution, "b", "s1", "x", "test", input_tokens=30, output_tokens=10),
    }
    budget = Budget.for_execution(
        execution, max_tokens=500, max_cost_usd=None, agent_configs=[], spent=Usage(), completed=completed
    )
    assert budget is not None and budget.run.spent == Usage(1, 30, 10, 0.0)


async def test_an_edit_of_structured_data_that_does_not_fit_its_schema_fails_at_its_step(sqlite_url, agent):
    """The schema is the topology code's, so the fork checks the edit when the step replays: the fork
    fails naming the edited step and what is missing, not in the code that reads the verdict."""
    topology = Topology(name="cc", topology_type="crosscheck")
    agents = {"primary": agent("p"), "checker_1": agent("c1", "checker"), "checker_2": agent("c2", "checker")}
    runner = LocalRunner(db_url=sqlite_url)
    parent = await runner.run(topology, agents, {"prompt": "Is water wet?"})
    steps = await _steps(sqlite_url, parent.execution_id)
    checker = next(s for s in steps if s.key.endswith("checker:checker_1"))
    fork = await runner.fork(
        parent.execution_id, at=steps[-1].key, set_output={checker.key: '{"verdict": "ok"}'}
    )
    assert fork.status == ExecutionStatus.FAILED
    assert fork.error is not None and "\n" not in fork.error
    assert fork.error.startswith(f"step {checker.key!r}: the reply set for it does not fit")
    assert "missing keys: approved, confidence" in fork.error
