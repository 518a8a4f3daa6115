"""Replay tests: today's topology code against a recorded execution, no model called, nothing written.

A probe topology is recorded, then replaced by edited versions of itself (the user's edited
`@topology` class): unchanged code replays; a changed prompt, slot, an extra and a missing step are
each named as the first difference.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest

from qmcp.agentframework.errors import NonDeterminismError, UserInputError
from qmcp.agentframework.models import AgentType, Topology
from qmcp.agentframework.runners import LocalRunner
from qmcp.agentframework.store import Database
from qmcp.agentframework.topologies import (
    BaseTopology,
    ReplayCheck,
    StepContext,
    TopologyRegistry,
    input_text,
    prompt_difference,
)
from qmcp.testing import export_fixture_async, replay, replay_async, save_fixture


class Probe(BaseTopology):
    """Three steps in a row, each given the last reply; edited versions below change one thing."""

    topology_type = "replay-probe"
    prompt: ClassVar[str] = "Continue from: {text}"
    slots: ClassVar[tuple[str, ...]] = ("first", "second", "first")
    extra: ClassVar[bool] = False

    def validate_team(self, agents: Mapping[str, AgentType]) -> None:
        self.require(list(agents), "first", "second")

    async def run(self, ctx: StepContext, input_data: dict[str, Any]) -> dict[str, Any]:
        text = input_text(input_data)
        for number, slot in enumerate(self.slots):
            text = (await ctx.invoke(slot, self.prompt.format(text=text), key=f"probe/{number}")).text
        if self.extra:
            text = (await ctx.invoke("second", f"Check: {text}", key="probe/check")).text
        return {"output": text}


class ChangedPrompt(Probe):
    prompt = "Carry on from: {text}"


class ChangedSlot(Probe):
    slots = ("first", "first", "first")


class ExtraStep(Probe):
    extra = True


class MissingStep(Probe):
    slots = ("first", "second")


@pytest.fixture
def probe() -> Iterator[Any]:
    """`probe(cls)` registers `cls` as the `replay-probe` type (as editing the user's class does)."""

    def use(cls: type[BaseTopology]) -> None:
        TopologyRegistry.register(cls)

    use(Probe)
    yield use
    TopologyRegistry.unregister(Probe.topology_type)


def _team(model: str = "test") -> tuple[Topology, dict[str, AgentType]]:
    agents = {
        slot: AgentType(name=f"agent-{slot}", role="writer", config={"model": model})
        for slot in ("first", "second")
    }
    return Topology(name="probe", topology_type=Probe.topology_type), agents


async def _recorded(db_url: str, model: str = "test") -> Any:
    topology, agents = _team(model)
    result = await LocalRunner(db_url=db_url).run(topology, agents, {"prompt": "Name three rivers."})
    assert result.status == "completed", result.error
    return result


async def _rows(db_url: str) -> tuple[int, int]:
    async with Database(db_url) as db:
        executions = await db.list_executions()
        steps = sum([len(await db.list_steps(e.id)) for e in executions])
    return len(executions), steps


async def test_unchanged_code_replays_with_the_recorded_output_and_writes_nothing(db_url, probe, scripted):
    model, script = scripted(replies=lambda prompt, index: f"reply {index}: {uuid.uuid4().hex}")
    recorded = await _recorded(db_url, model)
    before = await _rows(db_url)
    result = await replay_async(str(recorded.execution_id), db_url=db_url)
    assert (result.steps, result.output) == (3, recorded.output)
    assert str(result) == "replayed 3 steps: identical"
    assert len(script.calls) == 3  # the model was called only when the run was recorded
    assert await _rows(db_url) == before


@pytest.mark.parametrize(
    ("edited", "says"),
    [
        (
            ChangedPrompt,
            "step 'probe/0' (slot 'first') asks another prompt than the recording: they differ from "
            "character 1 (recorded 33 characters, now 33): recorded «Continue from: Name three rivers.», "
            "now «Carry on from: Name three rivers.»",
        ),
        (
            ChangedSlot,
            "step 'probe/1' was recorded for slot 'second' (agent 'agent-second') but the code now ",
        ),
        (ExtraStep, "step 'probe/check' (slot 'second') is not in the recording"),
        (MissingStep, "the code never asked for 1 recorded step(s): probe/2"),
    ],
)
async def test_a_changed_topology_is_named_at_its_first_difference(db_url, probe, edited, says):
    recorded = await _recorded(db_url)
    probe(edited)
    with pytest.raises(NonDeterminismError) as raised:
        await replay_async(recorded.execution_id, db_url=db_url)
    assert says in str(raised.value)
    assert "\n" not in str(raised.value)


async def test_a_recorded_step_missing_later_names_the_steps_still_waiting(db_url, probe):
    recorded = await _recorded(db_url)

    class RenamedKeys(Probe):
        async def run(self, ctx: StepContext, input_data: dict[str, Any]) -> dict[str, Any]:
            await ctx.invoke("first", self.prompt.format(text=input_text(input_data)), key="probe/0")
            await ctx.invoke("second", "anything", key="probe/renamed")
            return {}

    probe(RenamedKeys)
    with pytest.raises(NonDeterminismError, match=r"recorded steps not replayed yet: probe/1, probe/2"):
        await replay_async(recorded.execution_id, db_url=db_url)


async def test_an_output_the_code_now_computes_differently_is_a_difference(db_url, probe):
    recorded = await _recorded(db_url)

    class ChangedOutput(Probe):
        async def run(self, ctx: StepContext, input_data: dict[str, Any]) -> dict[str, Any]:
            return {"output": (await super().run(ctx, input_data))["output"].upper()}

    probe(ChangedOutput)
    with pytest.raises(
        NonDeterminismError, match="every step replayed as recorded, but the output differs: field"
    ):
        await replay_async(recorded.execution_id, db_url=db_url)


def test_the_sync_entry_point_replays_a_fixture_file(sqlite_url, probe, tmp_path):
    import asyncio

    recorded = asyncio.run(_recorded(sqlite_url))
    path = tmp_path / "run.json"
    save_fixture(asyncio.run(export_fixture_async(recorded.execution_id, db_url=sqlite_url)), path)
    assert replay(path).output == recorded.output
    assert replay(str(path)).steps == 3
    probe(ChangedPrompt)
    with pytest.raises(NonDeterminismError, match="asks another prompt"):
        replay(path)


async def test_replay_takes_a_changed_team_and_refuses_an_unfinished_run(db_url, probe, scripted):
    recorded = await _recorded(db_url)
    _, agents = _team()
    renamed = {**agents, "second": AgentType(name="someone-else", role="writer", config={"model": "test"})}
    with pytest.raises(NonDeterminismError, match=r"agent 'agent-second'.*agent 'someone-else'"):
        await replay_async(recorded.execution_id, db_url=db_url, agents=renamed)
    model, _ = scripted(failures={1: "auth"})
    topology, failing_agents = _team(model)
    failed = await LocalRunner(db_url=db_url).run(topology, failing_agents, {"prompt": "p"})
    with pytest.raises(UserInputError, match="is failed: a replay checks a completed run"):
        await replay_async(failed.execution_id, db_url=db_url)


async def test_a_fork_with_another_agent_in_a_slot_it_inherited_replays(db_url, probe, tmp_path):
    """A fork at the last step with another agent in the second slot: the second step was inherited,
    run by the agent it had; the replay (from the store and from its fixture) accepts it as the run did."""
    recorded = await _recorded(db_url)
    other = AgentType(name="agent-other", role="writer", config={"model": "test"})
    fork = await LocalRunner(db_url=db_url).fork(
        recorded.execution_id, at="probe/2", agents={"second": other}
    )
    assert fork.status == "completed", fork.error
    assert (await replay_async(fork.execution_id, db_url=db_url)).steps == 3
    path = tmp_path / "fork.json"
    save_fixture(await export_fixture_async(fork.execution_id, db_url=db_url), path)
    assert (await replay_async(path)).output == fork.output
    _, agents = _team()
    with pytest.raises(NonDeterminismError, match=r"agent 'agent-first'.*agent 'someone-else'"):
        renamed = {**agents, "second": other, "first": AgentType(name="someone-else", role="writer")}
        await replay_async(fork.execution_id, db_url=db_url, agents=renamed)


async def test_a_fork_on_another_input_replays_its_inherited_steps_as_its_parent_asked_them(db_url, probe):
    """The steps before the fork point were asked on the parent's input: the fork's replay does not hold
    them to its own; the steps it ran itself are still checked, prompt included."""
    recorded = await _recorded(db_url)
    fork = await LocalRunner(db_url=db_url).fork(
        recorded.execution_id, at="probe/1", input_data={"prompt": "Lakes"}
    )
    assert fork.status == "completed", fork.error
    assert (await replay_async(fork.execution_id, db_url=db_url)).steps == 3
    probe(ChangedPrompt)
    with pytest.raises(NonDeterminismError, match=r"step 'probe/1' .*asks another prompt"):
        await replay_async(fork.execution_id, db_url=db_url)


async def test_a_step_whose_prompt_a_mixin_changed_compares_the_codes_own_prompt(sqlite_url, agent):
    """The structured-output mixin adds a schema to the message sent; replay compares what the code asked."""
    team = {
        "first": agent(
            "shaped",
            capabilities=["structured_output"],
            mixins={
                "structured_output": {"schema": {"type": "object", "properties": {"a": {"type": "string"}}}}
            },
        ),
        "second": agent("plain"),
    }
    TopologyRegistry.register(Probe)
    try:
        result = await LocalRunner(db_url=sqlite_url).run(
            Topology(name="probe", topology_type=Probe.topology_type), team, {"prompt": "Name three rivers."}
        )
        assert result.status == "completed", result.error
        async with Database(sqlite_url) as db:
            first = next(s for s in await db.list_steps(result.execution_id) if s.key == "probe/0")
        assert first.request["prompt"] == "Continue from: Name three rivers."
        assert first.request["messages"][0]["content"] != first.request["prompt"]
        assert (await replay_async(result.execution_id, db_url=sqlite_url)).steps == 3
    finally:
        TopologyRegistry.unregister(Probe.topology_type)


def test_the_prompt_difference_is_one_line_around_where_they_part():
    was, now = "Summarise:\n" + "a" * 100 + "X" + "b" * 100, "Summarise:\n" + "a" * 100 + "Y" + "b" * 100
    text = prompt_difference(was, now)
    assert "from character 111 (recorded 212 characters, now 212)" in text
    assert "\n" not in text and "aaaX" in text and "aaaY" in text and text.count("…") == 4
    assert "from character 3 (recorded 3 characters, now 5)" in prompt_difference("abc", "abcde")


def test_a_replay_check_remembers_what_was_asked():
    check = ReplayCheck({})
    with pytest.raises(NonDeterminismError, match="is not in the recording"):
        check.verify("k", "slot", "agent", "prompt")
    assert check.asked == [] and check.unasked() == []


def test_the_public_surface_of_qmcp_testing():
    import qmcp.testing

    assert sorted(qmcp.testing.__all__) == [
        "FIXTURE_FORMAT",
        "Recording",
        "ReplayResult",
        "export_fixture",
        "export_fixture_async",
        "fixture_files",
        "load_recording",
        "recorded_model",
        "replay",
        "replay_async",
        "replay_fixtures",
        "save_fixture",
        "write_fixture",
    ]
    assert all(hasattr(qmcp.testing, name) for name in qmcp.testing.__all__)
