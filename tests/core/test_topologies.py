"""Each topology and each aggregation / consensus method, checked on outputs."""

from __future__ import annotations

import json

import pytest

from qmcp.agentframework.models import (
    CrossCheckConfig,
    DebateConfig,
    EnsembleConfig,
    ExecutionStatus,
    PipelineConfig,
    Topology,
    TopologyType,
)
from qmcp.agentframework.runners import AsyncRunner, LocalRunner, RunConfig
from qmcp.agentframework.topologies import aggregate_results, determine_consensus


def runner(db_url: str, **config: object) -> LocalRunner:
    return LocalRunner(config=RunConfig(retry_backoff_seconds=0.001, **config), db_url=db_url)  # type: ignore[arg-type]


async def test_pipeline_passes_each_output_on(db_url, agent, scripted):
    model, script = scripted(replies=lambda prompt, i: f"out-{i}")
    stages = {s: agent(f"a-{s}", model=model) for s in ("parse", "analyze", "generate")}
    topo = Topology(name="pipe", topology_type=TopologyType.PIPELINE, config=PipelineConfig().model_dump())
    result = await runner(db_url).run(topo, stages, {"prompt": "the task"})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert result.output == {
        "output": "out-2",
        "final_stage": "generate",
        "stages": [
            {"stage": "parse", "agent": "a-parse", "output": "out-0"},
            {"stage": "analyze", "agent": "a-analyze", "output": "out-1"},
            {"stage": "generate", "agent": "a-generate", "output": "out-2"},
        ],
    }
    prompts = script.prompts
    assert "the task" in prompts[0] and "previous stage" not in prompts[0]
    assert "Output of the previous stage (parse):\nout-0" in prompts[1]
    assert "Output of the previous stage (analyze):\nout-1" in prompts[2] and "the task" in prompts[2]


async def test_pipeline_stage_order_from_config_and_stage_retries(db_url, agent, scripted):
    model, script = scripted(failures={0: "bad_request"}, replies=lambda p, i: f"r{i}")
    agents = {"b": agent("b1", model=model), "a": agent("a1", model=model)}
    config = PipelineConfig(stages=["a", "b"], retry_failed_stages=True, max_stage_retries=1)
    topo = Topology(name="pipe2", topology_type=TopologyType.PIPELINE, config=config.model_dump())
    result = await runner(db_url).run(topo, agents, {"prompt": "x"})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert [s["stage"] for s in result.output["stages"]] == ["a", "b"]
    assert len(script.calls) == 3  # stage a failed permanently once, was retried as a stage, then b


def _members(agent, model, n):
    return {f"m{i}": agent(f"member-{i}", model=model) for i in range(n)}


@pytest.mark.parametrize(
    ("method", "replies", "expected"),
    [
        ("vote", ["Paris", "paris.", "Lyon"], "Paris"),
        ("average", ["The answer is 10", "20", "about 30 units"], 20.0),
        ("weighted", ["10\nConfidence: 0.9", "40\nConfidence: 0.1", "10\nConfidence: 1.0"], 11.5),
        ("weighted", ["Lyon\nConfidence: 0.2", "Paris\nConfidence: 0.9", "Lyon\nConfidence: 0.3"], "Paris"),
        ("concat", ["one", "two", "three"], "[member-0] one\n\n[member-1] two\n\n[member-2] three"),
        ("best_of", ["meh\nConfidence: 0.3", "great\nConfidence: 95%", "ok\nConfidence: 0.6"], "great"),
    ],
)
async def test_ensemble_aggregation_methods(db_url, agent, scripted, method, replies, expected):
    model, _ = scripted(replies=replies)
    topo = Topology(
        name="ens",
        topology_type=TopologyType.ENSEMBLE,
        config=EnsembleConfig(aggregation_method=method).model_dump(),
    )
    result = await runner(db_url).run(topo, _members(agent, model, 3), {"question": "q"})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    answer = result.output["answer"]
    assert answer == pytest.approx(expected) if isinstance(expected, float) else answer == expected
    assert [m["slot"] for m in result.output["members"]] == ["m0", "m1", "m2"]


async def test_ensemble_synthesis_calls_the_aggregator_with_every_answer(db_url, agent, scripted):
    members_model, _ = scripted(replies=["alpha", "beta"])
    synth_model, synth = scripted(replies=["the synthesis"])
    agents = {
        **_members(agent, members_model, 2),
        "aggregator": agent("synth", "synthesizer", model=synth_model),
    }
    topo = Topology(
        name="ens-syn",
        topology_type=TopologyType.ENSEMBLE,
        config=EnsembleConfig(aggregation_method="synthesis").model_dump(),
    )
    result = await runner(db_url).run(topo, agents, {"prompt": "q"})
    assert result.output["answer"] == "the synthesis"
    assert result.output["aggregator"] == "synth"
    assert "alpha" in synth.prompts[0] and "beta" in synth.prompts[0]


@pytest.mark.parametrize(
    ("threshold", "status"), [(0.5, ExecutionStatus.COMPLETED), (0.2, ExecutionStatus.FAILED)]
)
async def test_ensemble_failure_threshold(db_url, agent, scripted, threshold, status):
    model, _ = scripted(failures={1: "auth"}, replies=lambda p, i: "same")
    topo = Topology(
        name="ens-ft",
        topology_type=TopologyType.ENSEMBLE,
        config=EnsembleConfig(aggregation_method="vote", failure_threshold=threshold).model_dump(),
    )
    result = await runner(db_url).run(topo, _members(agent, model, 3), {"prompt": "q"})
    assert result.status == status
    if status == ExecutionStatus.COMPLETED:
        assert result.output["answer"] == "same"
        assert [f["slot"] for f in result.output["failed"]] == ["m1"]
    else:
        assert "1 of 3 ensemble members failed" in result.error


def _debate_agents(agent, pro, opp, med=None):
    agents = {
        "proponent": agent("pro", "proponent", model=pro),
        "opponent": agent("opp", "opponent", model=opp),
    }
    if med:
        agents["mediator"] = agent("med", "mediator", model=med)
    return agents


async def test_debate_runs_all_rounds_then_mediator_decides(db_url, agent, scripted):
    pro, _ = scripted(replies=lambda p, i: f"pro argument {i} about cats")
    opp, opp_script = scripted(replies=lambda p, i: f"a completely different point number {i} on dogs")
    med, _ = scripted(replies=['Sure: {"winner": "opponent", "verdict": "dogs win", "confidence": 0.7}'])
    topo = Topology(
        name="deb", topology_type=TopologyType.DEBATE, config=DebateConfig(max_rounds=3).model_dump()
    )
    result = await runner(db_url).run(topo, _debate_agents(agent, pro, opp, med), {"topic": "pets"})
    out = result.output
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert (out["rounds"], out["converged"], out["winner"], out["verdict"]) == (
        3,
        False,
        "opponent",
        "dogs win",
    )
    assert [(t["round"], t["side"]) for t in out["transcript"]] == [
        (r, s) for r in (1, 2, 3) for s in ("proponent", "opponent")
    ]
    assert "pro argument 0 about cats" in opp_script.prompts[0]  # the opponent sees the transcript


async def test_debate_stops_early_when_a_side_agrees(db_url, agent, scripted):
    pro, _ = scripted(replies=lambda p, i: f"pro point {i}")
    opp, _ = scripted(replies=["I disagree strongly", "AGREE: fair enough"])
    topo = Topology(
        name="deb2",
        topology_type=TopologyType.DEBATE,
        config=DebateConfig(max_rounds=5, consensus_method="last_round").model_dump(),
    )
    result = await runner(db_url).run(topo, _debate_agents(agent, pro, opp), {"topic": "t"})
    assert (result.output["rounds"], result.output["converged"], result.output["winner"]) == (2, True, "draw")


async def test_debate_converges_on_similarity(db_url, agent, scripted):
    same, _ = scripted(replies=["Both of us think tabs are best."])
    topo = Topology(
        name="deb3",
        topology_type=TopologyType.DEBATE,
        config=DebateConfig(
            max_rounds=4, convergence_threshold=0.9, consensus_method="last_round"
        ).model_dump(),
    )
    result = await runner(db_url).run(topo, _debate_agents(agent, same, same), {"topic": "t"})
    assert result.output["rounds"] == 1 and result.output["converged"]


async def test_sides_that_only_repeat_the_topic_have_not_converged(db_url, agent, scripted):
    """Convergence is agreement on a position, not text alike because both sides restate the topic."""
    topic = "Remote work makes teams more productive"
    pro, _ = scripted(replies=[f"Yes: {topic}."])
    opp, _ = scripted(replies=[f"No: {topic}."])
    topo = Topology(
        name="deb5",
        topology_type=TopologyType.DEBATE,
        config=DebateConfig(max_rounds=2, consensus_method="last_round").model_dump(),
    )
    result = await runner(db_url).run(topo, _debate_agents(agent, pro, opp), {"topic": topic})
    assert (result.output["rounds"], result.output["converged"]) == (2, False)


async def test_the_test_models_debate_argues_both_sides_and_gives_a_verdict_in_words(db_url, agent):
    topic = "Remote work makes teams more productive"
    agents = _debate_agents(agent, "test", "test", "test")
    topo = Topology(
        name="deb6", topology_type=TopologyType.DEBATE, config=DebateConfig(max_rounds=2).model_dump()
    )
    out = (await runner(db_url).run(topo, agents, {"prompt": topic})).output
    assert out["converged"] is False and out["rounds"] == 2
    for number in (1, 2):
        sides = {t["side"]: t["text"] for t in out["transcript"] if t["round"] == number}
        assert sides["proponent"].startswith("In favour: " + topic)
        assert sides["opponent"].startswith("Against: " + topic)
    assert out["winner"] in ("proponent", "opponent", "draw") and out["mediator_fallback"] is False
    assert out["verdict"].startswith(f"Mediation on {topic}: winner {out['winner']} [")


async def test_debate_mediator_garbage_is_reasked_then_falls_back(db_url, agent, scripted):
    pro, _ = scripted(replies=["yes"])
    med, med_script = scripted(replies=["no json here", "still {not json"])
    topo = Topology(
        name="deb4", topology_type=TopologyType.DEBATE, config=DebateConfig(max_rounds=1).model_dump()
    )
    agents = _debate_agents(agent, pro, pro, med)
    agents["opponent"] = agent("opp", "opponent", model=pro)
    result = await runner(db_url).run(topo, agents, {"topic": "t"})
    assert result.status == ExecutionStatus.COMPLETED
    assert result.output["winner"] == "draw" and result.output["mediator_fallback"] is True
    assert len(med_script.calls) == 2 and "not valid" in med_script.prompts[1]


def _verdict(approved, confidence, *issues):
    return json.dumps({"approved": approved, "confidence": confidence, "issues": list(issues)})


@pytest.mark.parametrize(
    ("method", "verdicts", "approved"),
    [
        ("unanimous", [_verdict(True, 0.9), _verdict(True, 0.8), _verdict(True, 0.7)], True),
        ("unanimous", [_verdict(True, 0.9), _verdict(False, 0.8, "typo"), _verdict(True, 0.7)], False),
        ("majority", [_verdict(True, 0.9), _verdict(False, 0.8, "typo"), _verdict(True, 0.7)], True),
        ("majority", [_verdict(False, 0.9, "a"), _verdict(False, 0.8, "b"), _verdict(True, 0.7)], False),
        ("weighted", [_verdict(True, 0.2), _verdict(False, 0.9, "wrong"), _verdict(True, 0.3)], False),
        ("weighted", [_verdict(True, 0.9), _verdict(False, 0.1, "nit"), _verdict(False, 0.2, "nit2")], True),
    ],
)
async def test_crosscheck_consensus_methods(db_url, agent, scripted, method, verdicts, approved):
    primary, _ = scripted(replies=["42"])
    checker, _ = scripted(replies=verdicts)
    agents = {"primary": agent("prim", model=primary)} | {
        f"checker_{i}": agent(f"chk-{i}", "checker", model=checker) for i in range(3)
    }
    config = CrossCheckConfig(num_checkers=3, consensus_method=method)
    topo = Topology(name="cc", topology_type=TopologyType.CROSSCHECK, config=config.model_dump())
    result = await runner(db_url).run(topo, agents, {"question": "6*7?"})
    assert result.status == ExecutionStatus.COMPLETED, result.error
    out = result.output
    assert out["approved"] is approved and out["primary_output"] == "42" and out["checkers"] == 3
    assert out["approvals"] == sum('"approved": true' in v for v in verdicts)
    assert sorted(out["issues"]) == sorted(i for v in verdicts for i in json.loads(v)["issues"])


async def test_crosscheck_garbage_checker_abstains_never_approves(db_url, agent, scripted):
    primary, _ = scripted(replies=["42"])
    good, _ = scripted(replies=[_verdict(True, 0.9)])
    garbage, garbage_script = scripted(replies=["LGTM!", "looks fine to me"])
    agents = {
        "primary": agent("prim", model=primary),
        "checker_1": agent("chk-1", "checker", model=good),
        "checker_2": agent("chk-2", "checker", model=garbage),
    }
    topo = Topology(name="cc2", topology_type=TopologyType.CROSSCHECK, config=CrossCheckConfig().model_dump())
    result = await runner(db_url).run(topo, agents, {"question": "q"})
    out = result.output
    assert out["approved"] is False and out["abstentions"] == 1 and out["approvals"] == 1
    assert len(garbage_script.calls) == 2  # one re-ask with the error, then the recorded fallback


async def test_crosscheck_require_unanimous(db_url, agent, scripted):
    primary, _ = scripted(replies=["42"])
    checker, _ = scripted(replies=[_verdict(True, 0.9), _verdict(False, 0.2, "hmm")])
    agents = {"primary": agent("prim", model=primary)} | {
        f"checker_{i}": agent(f"chk-{i}", "checker", model=checker) for i in range(2)
    }
    config = CrossCheckConfig(consensus_method="weighted", require_unanimous_for_approval=True)
    topo = Topology(name="cc3", topology_type=TopologyType.CROSSCHECK, config=config.model_dump())
    result = await runner(db_url).run(topo, agents, {"question": "q"})
    assert result.output["approved"] is False and result.output["method"] == "unanimous"


@pytest.mark.parametrize("runner_class", [LocalRunner, AsyncRunner])
async def test_every_topology_on_the_test_model_is_deterministic(sqlite_url, agent, runner_class):
    """The offline `test` model gives the same outputs on every runner and every run."""
    teams = {
        "pipeline": {"plan": agent("planner", "planner"), "write": agent("writer", "writer")},
        "ensemble": {"m1": agent("r1"), "m2": agent("r2"), "aggregator": agent("syn", "synthesizer")},
        "debate": {
            "proponent": agent("pro", "proponent"),
            "opponent": agent("opp", "opponent"),
            "mediator": agent("med", "mediator"),
        },
        "crosscheck": {
            "primary": agent("p"),
            "checker_1": agent("c1", "checker"),
            "checker_2": agent("c2", "checker"),
        },
    }
    outputs = []
    for attempt in range(2):
        for kind, agents in teams.items():
            config = {"aggregation_method": "synthesis"} if kind == "ensemble" else {}
            topo = Topology(name=f"t-{kind}", topology_type=kind, config=config)
            result = await runner_class(db_url=sqlite_url).run(topo, agents, {"prompt": "Is water wet?"})
            assert result.status == ExecutionStatus.COMPLETED, (kind, result.error)
            outputs.append((attempt, kind, result.output))
    first = [(k, o) for a, k, o in outputs if a == 0]
    second = [(k, o) for a, k, o in outputs if a == 1]
    assert first == second
    crosscheck = dict(first)["crosscheck"]
    assert isinstance(crosscheck["approved"], bool) and crosscheck["abstentions"] == 0
    assert dict(first)["debate"]["winner"] in ("proponent", "opponent", "draw")


def test_helpers_are_the_topology_functions():
    from qmcp.agentframework.runners import metaflow_helpers

    assert metaflow_helpers.aggregate_results is aggregate_results
    assert metaflow_helpers.determine_consensus is determine_consensus
