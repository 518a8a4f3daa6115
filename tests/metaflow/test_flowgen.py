"""Generated Metaflow flows without running Metaflow: names, shapes, decorators, ruff, command lines,
and the helpers' step-by-step replay checked in-process against the LocalRunner."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import gc
import hashlib
import json
import os
import runpy
import shutil
import subprocess
import sys
import uuid
from typing import Any

import pytest
from _frozen import all_frozen

from qmcp.agentframework.errors import (
    InvalidConfigError,
    PermanentModelError,
    StepFailedError,
    UserInputError,
)
from qmcp.agentframework.llm import ScriptedModel, register_model, unregister_model
from qmcp.agentframework.models import (
    AgentType,
    CrossCheckConfig,
    DebateConfig,
    EnsembleConfig,
    Execution,
    ExecutionStatus,
    PipelineConfig,
    Topology,
    TopologyType,
    Usage,
)
from qmcp.agentframework.runners import LocalRunner, RunConfig, RunnerRegistry
from qmcp.agentframework.runners import metaflow_helpers as helpers
from qmcp.agentframework.runners._flowgen import (
    LAUNCH_VARIABLE,
    flow_class_name,
    flow_digest,
    flow_file_name,
    flow_identifier,
    launch_value,
)
from qmcp.agentframework.runners._metaflow import MetaflowRunner, export_flow, flow_command
from qmcp.agentframework.store import Database
from qmcp.agentframework.topologies import (
    CrossCheckTopology,
    DebateTopology,
    EnsembleTopology,
    PipelineTopology,
    output_text,
)

PYPROJECT_RULES = ["--select", "E,F,W,I,B,UP,SIM,RUF,ASYNC", "--ignore", "E501,RUF001,RUF002,RUF003"]


def _teams(agent: Any) -> dict[str, tuple[Topology, dict[str, AgentType]]]:
    """One team per shape the generator knows, plus one whose shape is decided at run time."""
    return {
        "pipeline": (
            Topology(name="research_pipeline", topology_type=TopologyType.PIPELINE),
            {
                "parse": agent("parser", "analyst"),
                "analyze": agent("analyst", "analyst"),
                "write": agent("writer", "writer"),
            },
        ),
        "ensemble": (
            Topology(
                name="research_ensemble",
                topology_type=TopologyType.ENSEMBLE,
                config={"aggregation_method": "synthesis"},
            ),
            {
                "m1": agent("r1"),
                "m2": agent("r2"),
                "m3": agent("r3"),
                "aggregator": agent("syn", "synthesizer"),
            },
        ),
        "crosscheck": (
            Topology(name="fact_check", topology_type=TopologyType.CROSSCHECK),
            {"primary": agent("p"), "checker_1": agent("c1", "checker"), "checker_2": agent("c2", "checker")},
        ),
        "debate": (
            Topology(name="ai_debate", topology_type=TopologyType.DEBATE, config={"max_rounds": 3}),
            {
                "proponent": agent("pro", "proponent"),
                "opponent": agent("opp", "opponent"),
                "mediator": agent("med", "mediator"),
            },
        ),
        "chain": (
            Topology(name="command_chain", topology_type=TopologyType.CHAIN_OF_COMMAND),
            {
                "commander": agent("boss", "commander"),
                "lieutenant_1": agent("lt", "lieutenant"),
                "worker_1": agent("w", "worker"),
            },
        ),
    }


def _steps(source: str) -> dict[str, dict[str, Any]]:
    """The flow's steps in order: their decorators, `self.next` targets, foreach, join, and call keys."""
    flow = next(node for node in ast.parse(source).body if isinstance(node, ast.ClassDef))
    steps: dict[str, dict[str, Any]] = {}
    for method in flow.body:
        if not isinstance(method, ast.FunctionDef):
            continue
        decorators = [ast.unparse(d) for d in method.decorator_list]
        calls = [node for node in ast.walk(method) if isinstance(node, ast.Call)]
        nexts = [c for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr == "next"]
        keys = [_value(k.value) for c in calls for k in c.keywords if k.arg in ("key", "owns")]
        steps[method.name] = {
            "decorators": decorators,
            "next": [ast.unparse(a).removeprefix("self.") for a in nexts[0].args] if nexts else [],
            "foreach": [_value(k.value) for k in nexts[0].keywords if k.arg == "foreach"] if nexts else [],
            "join": len(method.args.args) == 2,
            "keys": keys,
        }
    return steps


def _foreach_items(source: str, name: str) -> list[Any]:
    """The literal a step assigns to `self.<name>` (a foreach's items)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == f"self.{name}":
            return ast.literal_eval(node.value)
    raise AssertionError(f"no self.{name} in the flow")


def _value(node: ast.expr) -> Any:
    """A literal's value; other expressions (f-strings) as source."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)


def test_flow_and_file_are_named_after_the_topology(tmp_path, agent):
    topology, agents = _teams(agent)["debate"]
    source = MetaflowRunner(output_dir=tmp_path)._topology_to_flow(topology, agents)
    assert "class AiDebateFlow(FlowSpec):" in source
    path = export_flow(topology, agents, tmp_path / "out")
    assert path == tmp_path / "out" / "ai_debate_flow.py"
    assert path.read_text() == source
    hyphenated = Topology(name="my-debate-2", topology_type=TopologyType.DEBATE)  # not snake_case: digest
    digest = hashlib.sha256(b"my-debate-2").hexdigest()[:12]
    source = export_flow(hyphenated, agents, tmp_path).read_text()
    assert f"class MyDebate2_{digest}Flow(FlowSpec):" in source
    assert (tmp_path / f"my_debate_2__{digest}_flow.py").exists()


def test_pipeline_is_one_step_per_stage_in_order(agent):
    agents = {
        "parse": agent("parser"),
        "start": agent("starter"),
        "class": agent("classy"),
        "sum-up": agent("summer"),
    }
    topology = Topology(
        name="pipe",
        topology_type=TopologyType.PIPELINE,
        config=PipelineConfig(stages=["parse", "sum-up", "start", "class"]).model_dump(),
    )
    steps = _steps(MetaflowRunner()._topology_to_flow(topology, agents))
    assert list(steps) == ["start", "parse", "sum_up", "stage_3_start", "stage_4_class", "end"]
    assert [steps[name]["next"] for name in steps] == [
        ["parse"],
        ["sum_up"],
        ["stage_3_start"],
        ["stage_4_class"],
        ["end"],
        [],
    ]
    assert [steps[name]["keys"] for name in list(steps)[1:-1]] == [
        ["pipeline/0:parse"],
        ["pipeline/1:sum-up"],
        ["pipeline/2:start"],
        ["pipeline/3:class"],
    ]


@pytest.mark.parametrize(("method", "owns"), [("synthesis", [["ensemble/aggregate"]]), ("vote", [])])
def test_ensemble_is_a_foreach_over_members_and_a_join_that_aggregates(agent, method, owns):
    topology, agents = _teams(agent)["ensemble"]
    topology = Topology(
        name="ens",
        topology_type=TopologyType.ENSEMBLE,
        config=EnsembleConfig(aggregation_method=method).model_dump(),
    )
    if method != "synthesis":
        agents = {slot: a for slot, a in agents.items() if slot != "aggregator"}
    source = MetaflowRunner()._topology_to_flow(topology, agents)
    steps = _steps(source)
    assert list(steps) == ["start", "member", "aggregate", "end"]
    assert (steps["start"]["next"], steps["start"]["foreach"]) == (["member"], ["member_calls"])
    assert ["m1", "ensemble/member:m1"] in _foreach_items(source, "member_calls")
    assert len(_foreach_items(source, "member_calls")) == 3
    assert "slot, key = self.input" in source and steps["member"]["keys"] == ["key"]
    assert steps["aggregate"]["join"] and steps["aggregate"]["keys"] == owns
    assert f"by {method}" in source or f"by {method!r}" in source


def test_crosscheck_is_the_primary_then_a_foreach_over_checkers_and_a_consensus_join(agent):
    topology, agents = _teams(agent)["crosscheck"]
    topology = Topology(
        name="cc",
        topology_type=TopologyType.CROSSCHECK,
        config=CrossCheckConfig(consensus_method="weighted").model_dump(),
    )
    source = MetaflowRunner()._topology_to_flow(topology, agents)
    steps = _steps(source)
    assert list(steps) == ["start", "primary", "check", "consensus", "end"]
    assert steps["primary"]["keys"] == ["crosscheck/primary"]
    assert (steps["primary"]["next"], steps["primary"]["foreach"]) == (["check"], ["check_calls"])
    assert _foreach_items(source, "check_calls") == [
        ["checker_1", "crosscheck/checker:checker_1"],
        ["checker_2", "crosscheck/checker:checker_2"],
    ]
    assert steps["check"]["keys"] == ["key"] and steps["consensus"]["join"]
    assert "'weighted' consensus" in source and "determine_consensus" in source


def test_debate_rounds_are_unrolled_then_the_mediator_decides(agent):
    topology, agents = _teams(agent)["debate"]
    source = MetaflowRunner()._topology_to_flow(topology, agents)
    steps = _steps(source)
    rounds = [f"round_{n}_{side}" for n in (1, 2, 3) for side in ("proponent", "opponent")]
    assert list(steps) == ["start", *rounds, "mediator", "end"]
    assert [steps[name]["keys"] for name in rounds] == [
        [f"debate/round-{n}/{side}"] for n in (1, 2, 3) for side in ("proponent", "opponent")
    ]
    assert steps["mediator"]["keys"] == ["debate/mediator"]
    assert source.count("skipped once the debate has converged") == 4  # rounds 2 and 3
    last_round = Topology(
        name="deb",
        topology_type=TopologyType.DEBATE,
        config=DebateConfig(max_rounds=2, consensus_method="last_round").model_dump(),
    )
    steps = _steps(MetaflowRunner()._topology_to_flow(last_round, agents))
    assert "mediator" not in steps and steps["round_2_opponent"]["next"] == ["end"]


def test_topologies_shaped_at_run_time_get_one_step(agent):
    topology, agents = _teams(agent)["chain"]
    source = MetaflowRunner()._topology_to_flow(topology, agents)
    steps = _steps(source)
    assert list(steps) == ["start", "topology", "end"]
    assert steps["topology"]["keys"] == ["all"]
    assert "# A chain topology has no fixed shape (the commander's plan decides which agents run)" in source


def test_retry_and_timeout_decorators_follow_the_run_config(agent):
    topology, agents = _teams(agent)["pipeline"]
    config = RunConfig(max_retries=2, timeout_seconds=120, retry_backoff_seconds=60)
    steps = _steps(MetaflowRunner(config=config)._topology_to_flow(topology, agents))
    assert steps["start"]["decorators"] == ["step"]
    for name in ("parse", "analyze", "write", "end"):
        assert steps[name]["decorators"] == [
            "retry(times=2, minutes_between_retries=1)",
            "timeout(seconds=120)",
            "step",
        ]
    many = _steps(MetaflowRunner(config=RunConfig(max_retries=20))._topology_to_flow(topology, agents))
    assert many["parse"]["decorators"][0] == "retry(times=4, minutes_between_retries=0)"  # Metaflow's ceiling
    source = MetaflowRunner(config=RunConfig(retry_on_failure=False))._topology_to_flow(topology, agents)
    assert (
        "retry" not in _steps(source)["parse"]["decorators"][0]
        and "import FlowSpec, JSONType, Parameter, current, step, timeout" in source
    )


@pytest.mark.slow  # runs ruff
def test_generated_sources_compile_and_pass_ruff(tmp_path, agent):
    teams = _teams(agent)
    long_slot = "a-very-long-stage-name-that-goes-on-and-on-for-sixty-characters"
    teams["long"] = (
        Topology(name="x" * 64, topology_type=TopologyType.PIPELINE),
        {long_slot: agent("y" * 64), "b": agent("z" * 63)},
    )
    teams["many"] = (
        Topology(name="big_ensemble", topology_type=TopologyType.ENSEMBLE),
        {f"member_with_a_long_slot_name_{i}": agent(f"member-{i}") for i in range(12)},
    )
    teams["checkers"] = (
        Topology(name="many_checkers", topology_type=TopologyType.CROSSCHECK, config={"num_checkers": 9}),
        {
            "primary": agent("p"),
            **{f"checker_with_a_longer_name_{i}": agent(f"c{i}", "checker") for i in range(9)},
        },
    )
    paths = [export_flow(topology, agents, tmp_path) for topology, agents in teams.values()]
    for path in paths:
        compile(path.read_text(), str(path), "exec")
    ruff = shutil.which("ruff") or pytest.skip("ruff is not installed")
    common = ["--isolated", "--no-cache", "--line-length", "110", "--target-version", "py311"]
    check = subprocess.run(
        [ruff, "check", *common, *PYPROJECT_RULES, *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run(
        [ruff, "format", "--check", "--diff", *common, *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_start_knows_when_the_runner_launched_this_very_file(tmp_path, agent, monkeypatch):
    """`MetaflowRunner` names the execution, its topology and the digest of the file it wrote in
    QMCP_FLOW_LAUNCH: `start` of that file for that execution has nothing to check (and imports no
    qmcp code); another execution, an edited file or no launch at all checks as before."""
    topology, agents = _teams(agent)["pipeline"]
    path = export_flow(topology, agents, tmp_path)
    launched = runpy.run_path(str(path))["_launched_by_runner"]
    digest = flow_digest(path.read_text())
    monkeypatch.setenv(LAUNCH_VARIABLE, launch_value("e-1", 7, digest))
    assert launched("e-1") == ("e-1", 7)
    assert launched("e-2") is None and launched("") is None
    monkeypatch.setenv(LAUNCH_VARIABLE, launch_value("e-1", None, digest))
    assert launched("e-1") == ("e-1", None)
    path.write_text(path.read_text().replace("regenerate, do not edit", "edited"))
    assert launched("e-1") is None
    monkeypatch.delenv(LAUNCH_VARIABLE)
    assert launched("e-1") is None


def test_recording_steps_import_qmcp_with_the_collector_paused_then_frozen(tmp_path, agent):
    """A task is a process that ends with its step: qmcp's import runs without collections, and what it
    made is frozen so that later full collections skip it; the collector's switch is left as it was."""
    topology, agents = _teams(agent)["ensemble"]
    path = export_flow(topology, agents, tmp_path)
    source = path.read_text()
    helpers_import = "from qmcp.agentframework.runners.metaflow_helpers import"
    assert source.count(f"with _loading_qmcp():\n            {helpers_import}") == 2  # the members, the join
    assert f"\n        {helpers_import}" not in source  # no step imports them outside it
    loading = runpy.run_path(str(path))["_loading_qmcp"]
    enabled = gc.isenabled()
    try:
        gc.enable()
        with loading():
            assert not gc.isenabled()
            made = [[] for _ in range(100)]
        assert gc.isenabled() and all_frozen(made)
        gc.disable()
        with loading():
            pass
        assert not gc.isenabled()
    finally:
        gc.unfreeze()
        (gc.enable if enabled else gc.disable)()


def test_constants_hold_the_team_exactly(tmp_path, agent):
    prompt = 'Say """hi""" \\ then "bye" — naïvely.\n\tIndented \\'
    agents = {
        "parse": agent("parser", system_prompt=prompt, temperature=0.2),
        "write": agent("writer", "writer"),
    }
    topology = Topology(
        name="tricky", description='A "quoted" description', topology_type=TopologyType.PIPELINE
    )
    module = runpy.run_path(str(export_flow(topology, agents, tmp_path, config=RunConfig(max_retries=1))))
    assert AgentType.model_validate(module["AGENTS"]["parse"]).agent_config.system_prompt == prompt
    assert {slot: AgentType.model_validate(a).definition() for slot, a in module["AGENTS"].items()} == {
        slot: a.definition() for slot, a in agents.items()
    }
    assert (
        Topology.model_validate(module["TOPOLOGY"]).definition()
        == Topology.model_validate(topology.definition()).definition()
    )
    assert RunConfig.model_validate(module["RUN_CONFIG"]) == RunConfig(max_retries=1)


@pytest.mark.parametrize("name", ["../../etc/evil", "a/b", "abc\n", "Capital", "", "x" * 65, "9lives"])
def test_flow_names_are_refused_unless_they_are_topology_names(name):
    for make in (flow_file_name, flow_class_name, flow_identifier):
        with pytest.raises(InvalidConfigError, match="invalid topology name"):
            make(name)


def test_flow_identifiers_are_python_identifiers():
    assert flow_identifier("inj-pipe") == "inj_pipe" and flow_identifier("inj-pipe").isidentifier()
    assert (
        flow_file_name("ai_debate") == "ai_debate_flow.py" and flow_class_name("ai_debate") == "AiDebateFlow"
    )


def test_command_lines_for_local_kubernetes_and_batch():
    execution_id = uuid.uuid4()
    run = flow_command(
        "flows/f.py", "run", input_data={"topic": "AI"}, execution_id=execution_id, python="python"
    )
    assert run == [
        "python", "-P", "flows/f.py", "--no-pylint", "run",
        "--input-json", '{"topic": "AI"}', "--execution-id", str(execution_id),
    ]  # fmt: skip
    for environment in ("kubernetes", "batch"):
        argv = flow_command("f.py", "run", environment=environment, input_data={}, python="python")
        assert argv == [
            "python",
            "-P",
            "f.py",
            "--no-pylint",
            "run",
            "--with",
            environment,
            "--input-json",
            "{}",
        ]
        resume = flow_command(
            "f.py", "resume", environment=environment, origin_run_id="17", max_workers=4, python="py"
        )
        assert resume == [
            "py", "-P", "f.py", "--no-pylint", "resume", "--with", environment, "--max-workers", "4", "--origin-run-id", "17",
        ]  # fmt: skip
    with pytest.raises(InvalidConfigError, match="unknown environment 'mesos'"):
        flow_command("f.py", "run", environment="mesos")


def test_runner_launch_command_resumes_the_metaflow_run_when_there_is_one(tmp_path):
    postgres = "postgresql+asyncpg://qmcp@db.example/qmcp"
    execution = Execution(
        topology_name="t", topology_type=TopologyType.PIPELINE, input_data={"prompt": "x"}, agents_snapshot={}
    )
    remote = MetaflowRunner(output_dir=tmp_path, environment="kubernetes", db_url=postgres)
    argv = remote.launch_command(execution, tmp_path / "t_flow.py")
    assert argv[4:] == [
        "run",
        "--with",
        "kubernetes",
        "--tag",
        f"qmcp_execution:{execution.id}",
        "--input-json",
        '{"prompt": "x"}',
        "--execution-id",
        str(execution.id),
    ]
    execution.external_run_id = "TFlow/1234"
    assert remote.launch_command(execution, tmp_path / "t_flow.py")[4:] == [
        "resume", "--with", "kubernetes", "--tag", f"qmcp_execution:{execution.id}", "--origin-run-id", "1234",
    ]  # fmt: skip
    local = MetaflowRunner(output_dir=tmp_path, db_url=f"sqlite+aiosqlite:///{tmp_path}/q.db")
    assert (
        local.launch_command(execution, tmp_path / "t_flow.py")[4] == "run"
    )  # its datastore has no such run
    (tmp_path / ".metaflow" / "TFlow" / "1234").mkdir(parents=True)
    assert local.launch_command(execution, tmp_path / "t_flow.py")[4] == "resume"


def test_runner_is_registered_and_refuses_sqlite_on_a_cluster(tmp_path):
    assert RunnerRegistry.get("metaflow") is MetaflowRunner
    created = RunnerRegistry.create(
        "metaflow", RunConfig(max_retries=1), db_url="sqlite+aiosqlite:///x.db", on_event=print
    )
    assert isinstance(created, MetaflowRunner) and created.environment == "local"
    for environment in ("kubernetes", "batch"):
        with pytest.raises(InvalidConfigError, match="shared database"):
            MetaflowRunner(environment=environment, db_url=f"sqlite+aiosqlite:///{tmp_path}/q.db")
    with pytest.raises(InvalidConfigError, match="unknown environment"):
        MetaflowRunner(environment="laptop")


# -- the helpers, called step by step in this process as the flows call them ---------------------------


def _flow_steps(source: str) -> tuple[list[tuple[str, str]], list[str]]:
    """What the generated flow's agent steps ask, in order, as (slot, key), and what its last step owns.

    Read from the flow's source, so that a test of the helpers follows the flow the generator wrote.
    """
    calls: list[tuple[str, str]] = []
    owned: list[str] = []
    for method in next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)).body:
        for node in ast.walk(method):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "invoke_agent":
                key = next(k.value for k in node.keywords if k.arg == "key")
                if isinstance(key, ast.Constant):  # a step of its own: AGENTS["slot"], key="..."
                    slot = ast.unparse(node.args[0]).removeprefix("AGENTS[").removesuffix("]")
                    calls.append((ast.literal_eval(slot), str(key.value)))
                else:  # the foreach step: the (slot, key) items the step before lists
                    calls += [(slot, key) for slot, key in _foreach_items(source, f"{method.name}_calls")]
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "run_topology":
                owned += next((ast.literal_eval(k.value) for k in node.keywords if k.arg == "owns"), [])
    return calls, owned


def _run_like_a_flow(topology: Topology, agents: dict[str, AgentType]) -> tuple[dict[str, Any], list]:
    """The generated steps' helper calls, made in flow order in this process."""
    calls, owned = _flow_steps(MetaflowRunner()._topology_to_flow(topology, agents))
    definitions = {slot: a.definition() for slot, a in agents.items()}
    execution_id, _ = helpers.start_execution(topology.definition(), definitions, {"prompt": "Is water wet?"})
    results = [
        helpers.invoke_agent(definitions[slot], key=key, execution_id=execution_id) for slot, key in calls
    ]
    output, _ = helpers.run_topology(execution_id, owns=owned, after=results)
    return output, results


@pytest.mark.parametrize("kind", ["pipeline", "ensemble", "crosscheck", "debate"])
def test_helpers_step_by_step_reproduce_the_local_runner(sqlite_url, agent, monkeypatch, kind):
    """Each generated step's helper call, made in order here, gives the LocalRunner's output."""
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    topology, agents = _teams(agent)[kind]
    output, results = _run_like_a_flow(topology, agents)
    reference = asyncio.run(LocalRunner(db_url=sqlite_url).run(topology, agents, {"prompt": "Is water wet?"}))
    assert output == reference.output
    assert all(r["error"] is None and r["run"] is None for r in results)


@pytest.mark.parametrize("kind", ["chain", "compound"])
def test_the_one_step_of_a_run_time_shaped_topology_runs_it_like_the_local_runner(
    sqlite_url, agent, monkeypatch, kind
):
    """The single step of a chain or compound flow runs the topology code like the LocalRunner."""
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    teams = _teams(agent)
    if kind == "compound":
        for name in ("pipeline", "crosscheck"):
            asyncio.run(_store(sqlite_url, *teams[name]))
        sub_topologies = [teams["pipeline"][0].name, teams["crosscheck"][0].name]
        teams["compound"] = (
            Topology(
                name="combo", topology_type=TopologyType.COMPOUND, config={"sub_topologies": sub_topologies}
            ),
            {},
        )
    topology, agents = teams[kind]
    definitions = {slot: a.definition() for slot, a in agents.items()}
    execution_id, _ = helpers.start_execution(topology.definition(), definitions, {"prompt": "Is water wet?"})
    output, usage = helpers.run_topology(execution_id, owns="all")
    reference = asyncio.run(LocalRunner(db_url=sqlite_url).run(topology, agents, {"prompt": "Is water wet?"}))
    assert reference.status == ExecutionStatus.COMPLETED, reference.error
    assert output == reference.output
    assert usage == dataclasses.asdict(reference.usage)  # the one step owns every call


async def _store(db_url: str, topology: Topology, agents: dict[str, AgentType]) -> None:
    async with Database(db_url) as db:
        await db.save_team(topology, agents)


def test_a_tolerated_member_failure_is_carried_to_the_join(sqlite_url, agent, monkeypatch):
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    topology = Topology(name="ens", topology_type=TopologyType.ENSEMBLE, config={"failure_threshold": 0.5})
    agents = {"m1": agent("r1"), "m2": agent("r2", model="broken"), "m3": agent("r3")}
    outputs = []
    try:
        for run in (_run_like_a_flow, None):
            register_model("broken", ScriptedModel(name="broken", failures={0: "auth"}).model)
            if run is None:
                reference = asyncio.run(
                    LocalRunner(db_url=sqlite_url).run(topology, agents, {"prompt": "Is water wet?"})
                )
                outputs.append(reference.output)
            else:
                output, members = run(topology, agents)
                assert [m["error"] is not None for m in members] == [False, True, False]
                outputs.append(output)
    finally:
        unregister_model("broken")
    assert outputs[0] == outputs[1] and [f["slot"] for f in outputs[0]["failed"]] == ["m2"]


@pytest.mark.parametrize("broken", [False, True])
def test_the_member_recorded_last_completes_the_execution(sqlite_url, agent, monkeypatch, broken):
    """Each member step of a vote ensemble's flow, after its call, asks `complete_when_done`: the first
    two find a call missing and leave the end to the join; the last completes the execution with the
    LocalRunner's output, and members ending together both read that one end. A member whose call failed
    (tolerated) leaves the end to the join, which carries the failure."""
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    topology = Topology(
        name="votes",
        topology_type=TopologyType.ENSEMBLE,
        config={"aggregation_method": "vote", "failure_threshold": 0.5},
    )
    agents = {f"m{i}": agent(f"r{i}", model="broken" if broken and i == 1 else "test") for i in range(3)}
    source = MetaflowRunner()._topology_to_flow(topology, agents)
    assert "self.completed = complete_when_done(self.topology_id, self.execution_id)" in source
    definitions = {slot: a.definition() for slot, a in agents.items()}
    register_model("broken", ScriptedModel(name="broken", failures={0: "auth"}).model)
    try:
        execution_id, topology_id = helpers.start_execution(
            topology.definition(), definitions, {"prompt": "x"}
        )
        ends = []
        for slot in agents:
            helpers.invoke_agent(definitions[slot], key=f"ensemble/member:{slot}", execution_id=execution_id)
            ends.append(helpers.complete_when_done(topology_id, execution_id))
    finally:
        unregister_model("broken")

    async def stored() -> Execution:
        async with Database(sqlite_url) as db:
            return await db.get_execution(execution_id)

    if broken:
        assert ends == [None, None, None]
        assert asyncio.run(stored()).status == ExecutionStatus.RUNNING  # the join ends it
        return
    execution = asyncio.run(stored())
    reference = asyncio.run(LocalRunner(db_url=sqlite_url).run(topology, agents, {"prompt": "x"}))
    assert (execution.status, execution.output_data) == (ExecutionStatus.COMPLETED, reference.output)
    assert ends[:2] == [None, None]
    assert ends[2] == {
        "output": reference.output,
        "answer": output_text(reference.output),
        "usage": dataclasses.asdict(execution.usage),
    }
    assert helpers.complete_when_done(topology_id, execution_id) == ends[2]


def _started_votes(
    agent: Any, members: int, prompt: str
) -> tuple[Topology, dict[str, Any], dict[str, Any], Any]:
    """A vote ensemble of `members`, its agents and their definitions, and the execution started for it
    as a flow's `start` step starts it: (execution id, topology id)."""
    topology = Topology(
        name="votes", topology_type=TopologyType.ENSEMBLE, config={"aggregation_method": "vote"}
    )
    agents = {f"m{i}": agent(f"r{i}") for i in range(members)}
    definitions = {slot: a.definition() for slot, a in agents.items()}
    return (
        topology,
        agents,
        definitions,
        helpers.start_execution(topology.definition(), definitions, {"prompt": prompt}),
    )


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("launched", [False, True])
def test_members_ending_together_write_the_end_once(db_url, agent, monkeypatch, launched):
    """Two members both find every call recorded and both complete the execution: one writes the end,
    the other reads it (not a cancel, nor a claim of a completed execution), and both hand the join the
    same artifacts; whether the steps act for the runner that launched the flow or own the run."""
    monkeypatch.setenv("QMCP_DATABASE_URL", db_url)
    _, agents, definitions, (execution_id, topology_id) = _started_votes(agent, 2, "x")
    for slot in agents:
        helpers.invoke_agent(definitions[slot], key=f"ensemble/member:{slot}", execution_id=execution_id)

    async def stored() -> Execution:
        async with Database(db_url) as db:
            return await db.get_execution(execution_id)

    if launched:  # the steps act for the owner that launched them, which keeps the lease
        monkeypatch.setenv(helpers.OWNER_VARIABLE, asyncio.run(stored()).owner_token or "")
    arrived: list[object] = []
    attach = helpers._attach

    async def attach_together(*args: Any) -> Any:
        """Both have found the execution running before either writes its end."""
        arrived.append(args)
        while len(arrived) < 2:
            await asyncio.sleep(0.01)
        return await attach(*args)

    monkeypatch.setattr(helpers, "_attach", attach_together)

    async def both() -> list[dict[str, Any] | None]:
        return list(
            await asyncio.gather(
                helpers._complete_when_done(topology_id, execution_id),
                helpers._complete_when_done(topology_id, execution_id),
            )
        )

    first, second = asyncio.run(both())
    assert first is not None and first == second
    execution = asyncio.run(stored())
    assert (execution.status, execution.output_data) == (ExecutionStatus.COMPLETED, first["output"])


_JOIN_AND_END = """
import json, sys
from qmcp.agentframework.llm import register_model
from qmcp.agentframework.runners import metaflow_helpers as helpers

register_model("lazy", lambda role: sys.exit("a step that calls no model built one"))
execution_id, results = sys.argv[1], json.loads(sys.argv[2])
output, _ = helpers.run_topology(execution_id, after=results)
helpers.save_execution(None, output, execution_id=execution_id)
print(json.dumps({"output": output, "loaded": [m for m in ("pydantic_ai", "structlog") if m in sys.modules]}))
"""


@pytest.mark.slow  # a step in a fresh interpreter
def test_steps_that_call_no_model_never_import_pydantic_ai(sqlite_url, agent, monkeypatch):
    """A vote join and the end step, in a process of their own, replay the members without pydantic-ai
    or structlog (half a second of every Metaflow task's start) and give the LocalRunner's output."""
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    topology, agents, definitions, (execution_id, _) = _started_votes(agent, 3, "Is water wet?")
    results = [
        helpers.invoke_agent(definitions[slot], key=f"ensemble/member:{slot}", execution_id=execution_id)
        for slot in agents
    ]

    async def stored() -> Execution:
        async with Database(sqlite_url) as db:
            return await db.get_execution(execution_id)

    # this process owns the execution; the step's process acts for it, as a flow's steps act for
    # the runner that launched them
    owner = {helpers.OWNER_VARIABLE: asyncio.run(stored()).owner_token or ""}
    step = subprocess.run(
        [sys.executable, "-c", _JOIN_AND_END, execution_id, json.dumps(results)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, **owner},
    )
    done = json.loads(step.stdout)
    reference = asyncio.run(LocalRunner(db_url=sqlite_url).run(topology, agents, {"prompt": "Is water wet?"}))
    assert done == {"output": reference.output, "loaded": []}
    execution = asyncio.run(stored())
    assert (execution.status, execution.output_data) == (ExecutionStatus.COMPLETED, reference.output)


_EXIT_HOOK = """
import atexit, sys
import metaflow  # registers exit hooks of its own
from qmcp.agentframework.runners import metaflow_helpers as helpers

before = atexit._ncallbacks()
helpers._skip_final_collection()
outside = atexit._ncallbacks() - before
helpers._skip_final_collection.cache_clear()
helpers._flow_run = lambda: "SomeFlow/1"
helpers._skip_final_collection()
helpers._skip_final_collection()
print(outside, atexit._ncallbacks() - before)
"""


@pytest.mark.slow  # a fresh interpreter's exit hooks
def test_a_metaflow_task_skips_the_last_garbage_collection_at_exit():
    """Inside a flow run, once per task process; never in a process that is not a Metaflow task."""
    done = subprocess.run([sys.executable, "-c", _EXIT_HOOK], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0", "1"]


def test_invoke_agent_one_off_as_in_the_seed(agent):
    reply = helpers.invoke_agent(agent("parser", "analyst").definition(), {"prompt": "Parse this"})
    assert reply["output"].startswith("Analysis: Parse this") and reply["error"] is None
    bare = helpers.invoke_agent({"model": "test", "temperature": 0.1}, {"prompt": "Parse this"})
    assert bare["agent"] == "agent" and bare["output"]
    with pytest.raises(UserInputError, match="needs input_data"):
        helpers.invoke_agent({"model": "test"})
    with pytest.raises(UserInputError, match="pass key="):
        helpers.invoke_agent({"model": "test"}, {"prompt": "x"}, execution_id=str(uuid.uuid4()))


def test_save_execution_records_a_finished_execution_as_in_the_seed(sqlite_url, agent, monkeypatch):
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    topology, agents = _teams(agent)["pipeline"]

    async def stored_topology_id() -> int:
        async with Database(sqlite_url) as db:
            stored, _ = await db.save_team(topology, agents)
        assert stored.id is not None
        return stored.id

    topology_id = asyncio.run(stored_topology_id())
    helpers.save_execution(topology_id, {"output": "done"})

    async def executions() -> list[Execution]:
        async with Database(sqlite_url) as db:
            return await db.list_executions()

    (execution,) = asyncio.run(executions())
    assert (execution.status, execution.runner_type, execution.output_data) == (
        ExecutionStatus.COMPLETED,
        "metaflow",
        {"output": "done"},
    )
    assert execution.started_at <= execution.completed_at and execution.duration_ms is not None
    assert execution.owner_token is None and execution.attempts == 1
    with pytest.raises(InvalidConfigError, match="no stored topology"):
        helpers.save_execution(9999, {"output": "x"})


def test_the_steps_of_a_finished_execution_replay_it_and_pay_nothing(sqlite_url, agent, monkeypatch):
    """What `python FLOW resume STEP` of a finished run asks: every helper answers from the store, nothing
    is called, claimed or written, and each step still reports the usage of the calls it owns."""
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    monkeypatch.delenv(helpers.OWNER_VARIABLE, raising=False)
    scripted = ScriptedModel(name="paid")
    register_model("paid", scripted.model)
    try:
        topology = Topology(name="paid_pipeline", topology_type=TopologyType.PIPELINE)
        agents = {"draft": agent("drafter", model="paid"), "edit": agent("editor", model="paid")}
        calls, _ = _flow_steps(MetaflowRunner()._topology_to_flow(topology, agents))
        definitions = {slot: a.definition() for slot, a in agents.items()}
        execution_id, topology_id = helpers.start_execution(
            topology.definition(), definitions, {"prompt": "x"}
        )
        first = [helpers.invoke_agent(definitions[s], key=k, execution_id=execution_id) for s, k in calls]
        output, _ = helpers.run_topology(execution_id)
        usage = helpers.save_execution(topology_id, output, execution_id=execution_id)
        assert len(scripted.calls) == 2 and usage["requests"] == 2
        assert sum(r["usage"]["input_tokens"] for r in first) == usage["input_tokens"] > 0

        before = asyncio.run(_execution(sqlite_url, execution_id))
        assert (
            helpers.start_execution(topology.definition(), definitions, {}, execution_id)[0] == execution_id
        )
        again = [helpers.invoke_agent(definitions[s], key=k, execution_id=execution_id) for s, k in calls]
        assert [(r["output"], r["usage"]) for r in again] == [(r["output"], r["usage"]) for r in first]
        assert helpers.run_topology(execution_id) == (output, dataclasses.asdict(Usage()))
        assert helpers.save_execution(topology_id, output, execution_id=execution_id) == usage
        assert len(scripted.calls) == 2
        after = asyncio.run(_execution(sqlite_url, execution_id))
        assert after.model_dump() == before.model_dump()  # not claimed, not written
    finally:
        unregister_model("paid")


def test_a_retried_step_replays_a_permanent_failure_instead_of_paying_again(sqlite_url, agent, monkeypatch):
    """Where an orchestrator retries a task Metaflow's runtime would not (exit status 202), the retry
    (`current.retry_count` > 0) fails the same way without calling; a first attempt calls again."""
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    scripted = ScriptedModel(name="refusing", failures={0: "auth"})
    register_model("refusing", scripted.model)
    try:
        topology = Topology(name="refused_pipeline", topology_type=TopologyType.PIPELINE)
        agents = {"draft": agent("drafter", model="refusing")}
        definitions = {slot: a.definition() for slot, a in agents.items()}
        execution_id, _ = helpers.start_execution(topology.definition(), definitions, {"prompt": "x"})
        (call,) = _flow_steps(MetaflowRunner()._topology_to_flow(topology, agents))[0]
        with pytest.raises(StepFailedError, match="permanent model error, not retried") as first:
            helpers.invoke_agent(definitions["draft"], key=call[1], execution_id=execution_id)
        assert len(scripted.calls) == 1
        monkeypatch.setattr(helpers, "_retry_count", lambda: 1)
        with pytest.raises(StepFailedError) as retried:
            helpers.invoke_agent(definitions["draft"], key=call[1], execution_id=execution_id)
        assert str(retried.value) == str(first.value) and isinstance(retried.value.cause, PermanentModelError)
        assert len(scripted.calls) == 1
        monkeypatch.setattr(helpers, "_retry_count", lambda: 0)  # a new attempt (a resume) may call again
        assert helpers.invoke_agent(definitions["draft"], key=call[1], execution_id=execution_id)["output"]
        assert len(scripted.calls) == 2
    finally:
        unregister_model("refusing")


async def _execution(db_url: str, execution_id: str) -> Execution:
    async with Database(db_url) as db:
        return await db.stored_execution(execution_id)


def test_an_execution_id_must_match_the_flow(sqlite_url, agent, monkeypatch):
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    topology, agents = _teams(agent)["pipeline"]
    definitions = {slot: a.definition() for slot, a in agents.items()}
    execution_id, _ = helpers.start_execution(topology.definition(), definitions, {"prompt": "x"})
    assert helpers.start_execution(topology.definition(), definitions, {}, execution_id)[0] == execution_id
    with pytest.raises(InvalidConfigError, match="differs from the input"):
        helpers.start_execution(topology.definition(), definitions, {"prompt": "y"}, execution_id)
    other = {**definitions, "write": agent("someone-else").definition()}
    with pytest.raises(InvalidConfigError, match="another team"):
        helpers.start_execution(topology.definition(), other, {}, execution_id)


def test_helpers_public_names_and_reexports():
    from qmcp.agentframework.topologies import aggregate_results, determine_consensus

    assert (
        helpers.aggregate_results is aggregate_results and helpers.determine_consensus is determine_consensus
    )
    assert set(helpers.__all__) == {
        "EXECUTION_TAG",
        "IMPORTS_VARIABLE",
        "OWNER_VARIABLE",
        "aggregate_results",
        "complete_when_done",
        "determine_consensus",
        "invoke_agent",
        "output_text",
        "run_topology",
        "save_execution",
        "start_execution",
    }


@pytest.mark.parametrize(
    ("kind", "builder"),
    [
        ("pipeline", (PipelineTopology, "stage_key")),
        ("ensemble", (EnsembleTopology, "member_key")),
        ("crosscheck", (CrossCheckTopology, "checker_key")),
        ("debate", (DebateTopology, "turn_key")),
    ],
)
def test_a_key_changed_in_the_topology_changes_the_runs_and_the_flows(
    sqlite_url, agent, monkeypatch, kind, builder
):
    """Keys live in one place, the topology's key builders: change one and both paths follow."""
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    owner, name = builder
    original = getattr(owner, name)
    monkeypatch.setattr(owner, name, staticmethod(lambda *args: f"renamed/{original(*args)}"))
    topology, agents = _teams(agent)[kind]
    reference = asyncio.run(LocalRunner(db_url=sqlite_url).run(topology, agents, {"prompt": "Is water wet?"}))
    assert reference.status == ExecutionStatus.COMPLETED, reference.error
    stored = asyncio.run(_step_keys(sqlite_url, reference.execution_id))
    calls, owned = _flow_steps(MetaflowRunner()._topology_to_flow(topology, agents))
    flow_keys = {key for _, key in calls} | set(owned)
    renamed = {key for key in stored if key.startswith("renamed/")}
    assert renamed and renamed <= flow_keys and all(key in flow_keys for key in stored)
    output, _ = _run_like_a_flow(topology, agents)
    assert output == reference.output


async def _step_keys(db_url: str, execution_id: uuid.UUID) -> list[str]:
    async with Database(db_url) as db:
        return [step.key for step in await db.list_steps(execution_id)]


def test_a_user_step_plan_gets_a_step_per_call_with_names_that_never_clash(agent):
    from qmcp.agentframework.topologies import (
        AgentCall,
        BaseTopology,
        ParallelCalls,
        StepPlan,
        TopologyRegistry,
        topology,
    )

    class Fan(BaseTopology):
        """`check` answers, then every other slot reviews it side by side."""

        topology_type = "tw-fan"

        def validate_team(self, agents):
            self.require(list(agents), "check")

        def step_plan(self, agents):
            others = tuple(AgentCall(slot, f"fan/{slot}") for slot in agents if slot != "check")
            return StepPlan(
                "check, then the others",
                (AgentCall("check", "fan/check"), ParallelCalls("check", "", others, "join", "")),
            )

        async def run(self, ctx, input_data):
            raise AssertionError("not run here")

    topology(Fan)
    try:
        agents = {"check": agent("c"), "r1": agent("r1"), "r2": agent("r2")}
        source = MetaflowRunner()._topology_to_flow(Topology(name="fan", topology_type="tw-fan"), agents)
    finally:
        TopologyRegistry.unregister("tw-fan")
    steps = _steps(source)
    assert list(steps) == ["start", "stage_1_check", "check", "join", "end"]
    assert steps["stage_1_check"]["keys"] == ["fan/check"] and steps["stage_1_check"]["foreach"] == [
        "check_calls"
    ]
    assert _foreach_items(source, "check_calls") == [["r1", "fan/r1"], ["r2", "fan/r2"]]
    assert _flow_steps(source) == ([("check", "fan/check"), ("r1", "fan/r1"), ("r2", "fan/r2")], [])
