"""Recorded fixtures: a run exported once answers a new run of the same topology offline, by step key.

Each run is recorded on a scripted model whose replies are random, so only the fixture can give the
same output again; the scripted model counts its calls, so a replay that called it would show.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from qmcp.agentframework import llm
from qmcp.agentframework.errors import (
    InvalidConfigError,
    NonDeterminismError,
    NotFoundError,
    PermanentModelError,
)
from qmcp.agentframework.models import AgentType, ExecutionStatus, Topology
from qmcp.agentframework.runners import AsyncRunner, LocalRunner, RunConfig, executable_items
from qmcp.agentframework.store import Database
from qmcp.testing import (
    FIXTURE_FORMAT,
    export_fixture_async,
    fixture_files,
    recorded_model,
    replay_async,
    replay_fixtures,
    save_fixture,
)


def _agents(model: str, *slots: str) -> dict[str, AgentType]:
    return {slot: AgentType(name=f"a-{slot}", role="generalist", config={"model": model}) for slot in slots}


TEAMS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "pipeline": ({}, ("plan", "write", "edit")),
    "ensemble": ({"aggregation_method": "synthesis"}, ("m1", "m2", "m3", "aggregator")),
    "debate": ({"max_rounds": 2, "consensus_method": "mediator"}, ("proponent", "opponent", "mediator")),
    "crosscheck": ({}, ("primary", "checker_1", "checker_2")),
    "chain": ({"authority_levels": ["commander", "worker"]}, ("commander", "worker_1", "worker_2")),
    "delegation": ({"fallback_agent_name": "a-writer"}, ("router", "coder", "writer")),
}
INPUT = {"prompt": "Should cities ban cars from their centres?"}


def _random_replies(prompt: str, index: int) -> str:
    """A reply no model could give twice: the output of a run answered by it is the recording's only."""
    if "JSON" in prompt:  # a step asking for structure gets a valid but random object
        return json.dumps({"approved": index % 2 == 0, "confidence": 0.7, "issues": [uuid.uuid4().hex]})
    return f"Point {index}: {uuid.uuid4().hex}. Confidence: 0.{index % 9 + 1}"


async def _record(db_url: str, kind: str, model: str, tmp_path: Path) -> tuple[Any, Path]:
    config, slots = TEAMS[kind]
    topology = Topology(name=f"t-{kind}", topology_type=kind, config=config)
    result = await AsyncRunner(db_url=db_url).run(topology, _agents(model, *slots), INPUT)
    assert result.status == ExecutionStatus.COMPLETED, result.error
    path = tmp_path / f"{kind}.json"
    save_fixture(await export_fixture_async(result.execution_id, db_url=db_url), path)
    return result, path


@pytest.mark.parametrize("kind", list(TEAMS))
async def test_a_fixture_replays_a_run_offline_with_identical_output(sqlite_url, kind, scripted, tmp_path):
    """On SQLite: the compound's test below exports from PostgreSQL too."""
    db_url = sqlite_url
    model, script = scripted(replies=_random_replies)
    recorded, path = await _record(db_url, kind, model, tmp_path)
    calls = len(script.calls)
    config, slots = TEAMS[kind]
    topology = Topology(name=f"t-{kind}", topology_type=kind, config=config)

    # `--model recorded:FILE`: the model string any door takes
    by_string = await LocalRunner(RunConfig(model_override=f"recorded:{path}"), db_url=db_url).run(
        topology, _agents(model, *slots), INPUT
    )
    assert by_string.status == ExecutionStatus.COMPLETED, by_string.error
    assert by_string.output == recorded.output
    # `recorded_model(FILE)` in Python, registered under a name of the user's
    llm.register_model(f"fixture-{kind}", recorded_model(path))
    try:
        by_model = await AsyncRunner(db_url=db_url).run(topology, _agents(f"fixture-{kind}", *slots), INPUT)
    finally:
        llm.unregister_model(f"fixture-{kind}")
    assert by_model.status == ExecutionStatus.COMPLETED, by_model.error
    assert by_model.output == recorded.output
    assert len(script.calls) == calls, "the recorded model answered: the provider was never called"
    async with Database(db_url) as db:
        steps = await db.list_steps(by_string.execution_id)
        recorded_steps = await db.list_steps(recorded.execution_id)
    assert {s.model for s in steps} == {f"recorded:{path}"}
    assert {(s.key, s.response) for s in steps} == {(s.key, s.response) for s in recorded_steps}
    assert (await replay_async(path)).output == recorded.output


async def test_the_fixture_holds_the_team_input_output_and_every_step(sqlite_url, scripted, tmp_path):
    model, _ = scripted(replies=_random_replies)
    recorded, path = await _record(sqlite_url, "crosscheck", model, tmp_path)
    document = json.loads(path.read_text())
    assert document["format"] == FIXTURE_FORMAT == "qmcp-fixture/1"
    assert document["execution_id"] == str(recorded.execution_id) and document["status"] == "completed"
    assert document["topology"]["topology_type"] == "crosscheck" and set(document["agents"]) == {
        "primary",
        "checker_1",
        "checker_2",
    }
    assert (document["input"], document["output"]) == (INPUT, recorded.output)
    by_key = {step["key"]: step for step in document["steps"]}
    assert len(by_key) == 3
    checker = next(step for key, step in by_key.items() if "checker_1" in key)
    assert checker["slot"] == "checker_1" and checker["agent"] == "a-checker_1" and checker["model"] == model
    assert checker["request"]["messages"][0]["content"].startswith("Task: Should cities ban cars")
    assert checker["data"] == json.loads(checker["response"]) and checker["output"]["data"] == checker["data"]


async def test_an_unrecorded_call_fails_at_once_naming_its_key_and_how_to_record_again(
    sqlite_url, scripted, tmp_path
):
    model, _ = scripted(replies=_random_replies)
    _, path = await _record(sqlite_url, "pipeline", model, tmp_path)
    longer = Topology(
        name="longer", topology_type="pipeline", config={"stages": ["plan", "write", "edit", "proof"]}
    )
    result = await LocalRunner(RunConfig(model_override=f"recorded:{path}"), db_url=sqlite_url).run(
        longer, _agents("test", "plan", "write", "edit", "proof"), INPUT
    )
    assert result.status == ExecutionStatus.FAILED
    assert f"the fixture {path} holds no reply for step 'pipeline/3:proof'" in result.error
    assert f"qmcp executions export-fixture ID > {path}" in result.error
    async with Database(sqlite_url) as db:
        failed = next(s for s in await db.list_steps(result.execution_id) if s.key == "pipeline/3:proof")
    assert failed.attempts == 1 and "PermanentModelError" in (failed.error or ""), "never retried"


async def test_the_recorded_model_answers_only_inside_a_step(sqlite_url, scripted, tmp_path):
    model, _ = scripted(replies=_random_replies)
    _, path = await _record(sqlite_url, "pipeline", model, tmp_path)
    messages: list[llm.ChatMessage] = [{"role": "user", "content": "hi"}]
    with pytest.raises(PermanentModelError, match="answers the steps of a run by their key"):
        await llm.call_model(recorded_model(path), "recorded", system=None, messages=messages, settings={})
    with llm.calling_step("pipeline/0:plan"):
        reply = await llm.call_model(
            recorded_model(path), "recorded", system=None, messages=messages, settings={}
        )
    assert reply.text == llm.recorded_replies(path)["pipeline/0:plan"].text
    assert reply.input_tokens == llm.recorded_replies(path)["pipeline/0:plan"].input_tokens > 0


async def test_a_missing_or_foreign_fixture_is_refused_before_anything_runs(sqlite_url, tmp_path):
    topology, agents = Topology(name="p", topology_type="pipeline"), _agents("test", "a", "b")
    with pytest.raises(NotFoundError, match=r"recorded fixture .*nowhere\.json' not found; export one with"):
        await LocalRunner(
            RunConfig(model_override=f"recorded:{tmp_path}/nowhere.json"), db_url=sqlite_url
        ).run(topology, agents, INPUT)
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"format": "something-else/2", "secret": "never quoted"}))
    with pytest.raises(InvalidConfigError, match="its format is 'something-else/2'") as raised:
        await LocalRunner(RunConfig(model_override=f"recorded:{foreign}"), db_url=sqlite_url).run(
            topology, agents, INPUT
        )
    assert "never quoted" not in str(raised.value)
    (tmp_path / "text.json").write_text("not json")
    with pytest.raises(InvalidConfigError, match="is not a qmcp fixture"):
        recorded_model(tmp_path / "text.json")
    async with Database(sqlite_url) as db:
        assert await db.count_executions() == 0


def test_a_stored_agent_on_a_recorded_fixture_needs_trust():
    agent = AgentType(name="a", role="generalist", config={"model": "recorded:/srv/run.json"})
    assert executable_items(agent) == ["recorded fixture file '/srv/run.json' (read by this process)"]
    assert llm.check_model_string("recorded:run.json") is None


def test_replay_fixtures_replays_a_directory_and_names_every_one_that_differs(sqlite_url, scripted, tmp_path):
    import asyncio

    model, _ = scripted(replies=_random_replies)
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    with pytest.raises(NotFoundError, match="no fixture"):
        fixture_files(recordings)  # a check over nothing would pass without checking
    for kind in ("pipeline", "debate", "ensemble"):
        asyncio.run(_record(sqlite_url, kind, model, recordings))
    assert [p.name for p in fixture_files(recordings)] == ["debate.json", "ensemble.json", "pipeline.json"]
    assert [r.topology for r in replay_fixtures(recordings)] == ["t-debate", "t-ensemble", "t-pipeline"]
    for name in ("pipeline.json", "ensemble.json"):
        tampered = json.loads((recordings / name).read_text())
        tampered["steps"][1]["slot"] = tampered["steps"][0]["slot"]
        (recordings / name).write_text(json.dumps(tampered))
    with pytest.raises(NonDeterminismError) as raised:
        replay_fixtures(recordings)
    message = str(raised.value)
    assert message.startswith("2 of 3 fixture(s) no longer replay: ensemble.json: ")
    assert "| pipeline.json: " in message and "debate.json" not in message


@pytest.mark.parametrize("fixture", ["pipeline", "debate"])
def test_the_documented_parametrize_pattern(fixture, sqlite_url, scripted, tmp_path):
    """docs/testing-with-recordings.md: one test per fixture file."""
    import asyncio

    from qmcp.testing import replay

    model, _ = scripted(replies=_random_replies)
    recorded, path = asyncio.run(_record(sqlite_url, fixture, model, tmp_path))
    assert replay(path).output == recorded.output


async def test_a_compound_replays_and_runs_from_its_fixture_through_its_sub_teams(db_url, scripted, tmp_path):
    model, script = scripted(replies=_random_replies)
    async with Database(db_url) as db:
        for kind in ("pipeline", "crosscheck"):
            config, slots = TEAMS[kind]
            await db.save_team(
                Topology(name=f"sub-{kind}", topology_type=kind, config=config), _agents(model, *slots)
            )
    compound = Topology(
        name="outer",
        topology_type="compound",
        config={"mode": "sequential", "sub_topologies": ["sub-pipeline", "sub-crosscheck"]},
    )
    recorded = await LocalRunner(db_url=db_url).run(compound, {}, INPUT)
    assert recorded.status == ExecutionStatus.COMPLETED, recorded.error
    path = tmp_path / "compound.json"
    save_fixture(await export_fixture_async(recorded.execution_id, db_url=db_url), path)
    calls = len(script.calls)
    assert set(json.loads(path.read_text())["teams"]) == {"sub-pipeline", "sub-crosscheck"}
    assert (await replay_async(path)).steps == 6
    offline = await LocalRunner(RunConfig(model_override=f"recorded:{path}"), db_url=db_url).run(
        compound, {}, INPUT
    )
    assert offline.status == ExecutionStatus.COMPLETED, offline.error
    assert offline.output == recorded.output and len(script.calls) == calls


async def test_a_streamed_run_streams_the_recorded_replies(sqlite_url, scripted, tmp_path):
    model, _ = scripted(replies=_random_replies)
    recorded, path = await _record(sqlite_url, "pipeline", model, tmp_path)
    events: list[Any] = []
    config, slots = TEAMS["pipeline"]
    streamed = await LocalRunner(
        RunConfig(model_override=f"recorded:{path}"), db_url=sqlite_url, stream=True, on_event=events.append
    ).run(Topology(name="t-pipeline", topology_type="pipeline", config=config), _agents(model, *slots), INPUT)
    assert streamed.output == recorded.output
    replies = llm.recorded_replies(path)
    for key, reply in replies.items():
        assert "".join(e.text for e in events if e.kind == "delta" and e.key == key) == reply.text


async def test_a_relative_fixture_path_is_stored_absolute_for_resumes_elsewhere(
    sqlite_url, scripted, tmp_path, monkeypatch
):
    model, _ = scripted(replies=_random_replies)
    recorded, path = await _record(sqlite_url, "pipeline", model, tmp_path)
    monkeypatch.chdir(tmp_path)
    config, slots = TEAMS["pipeline"]
    run = await LocalRunner(RunConfig(model_override="recorded:pipeline.json"), db_url=sqlite_url).run(
        Topology(name="t-pipeline", topology_type="pipeline", config=config), _agents(model, *slots), INPUT
    )
    assert run.output == recorded.output
    async with Database(sqlite_url) as db:
        execution = await db.get_execution(run.execution_id)
        steps = await db.list_steps(run.execution_id)
    assert execution.run_config["model_override"] == f"recorded:{path}"
    assert {s.model for s in steps} == {f"recorded:{path}"}
