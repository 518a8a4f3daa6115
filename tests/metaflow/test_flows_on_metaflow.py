"""Generated flows run for real by Metaflow (local datastore in tmp_path), checked against the LocalRunner.

Each test starts Metaflow in subprocesses, one process per step, so they take seconds each.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from typing import Any

import pytest
from _eventually import eventually_async

from qmcp.agentframework.errors import ExecutionBusyError
from qmcp.agentframework.models import (
    AgentType,
    DebateConfig,
    EnsembleConfig,
    ExecutionStatus,
    PipelineConfig,
    Topology,
    TopologyType,
)
from qmcp.agentframework.runners import LocalRunner, RunConfig, RunResult
from qmcp.agentframework.runners._metaflow import MetaflowRunner, export_flow
from qmcp.agentframework.runners.metaflow_helpers import IMPORTS_VARIABLE
from qmcp.agentframework.store import Database
from qmcp.agentframework.topologies import StepEvent

pytestmark = pytest.mark.slow

INPUT = {"prompt": "Is water wet?"}


async def _local(topology: Topology, agents: dict[str, AgentType], db_url: str) -> RunResult:
    """The LocalRunner's result for the same team, on the offline `test` model: what Metaflow must reproduce."""
    offline = {
        slot: AgentType.model_validate({**a.definition(), "config": {**a.config, "model": "test"}})
        if a.agent_config.model in ("counted", "flaky")
        else a
        for slot, a in agents.items()
    }
    result = await LocalRunner(db_url=db_url).run(topology, offline, INPUT)
    assert result.status == ExecutionStatus.COMPLETED, result.error
    return result


async def _step_keys(db_url: str, execution_id: uuid.UUID) -> list[str]:
    async with Database(db_url) as db:
        return sorted(step.key for step in await db.list_steps(execution_id))


async def _check_like_local(
    result: RunResult, topology: Topology, agents: dict[str, Any], db_url: str
) -> None:
    assert result.status == ExecutionStatus.COMPLETED, result.error
    reference = await _local(topology, agents, db_url)
    assert result.output == reference.output
    assert result.runner_type == "metaflow"
    assert (result.input_tokens, result.output_tokens) == (reference.input_tokens, reference.output_tokens)
    assert await _step_keys(db_url, result.execution_id) == await _step_keys(db_url, reference.execution_id)
    async with Database(db_url) as db:
        execution = await db.get_execution(result.execution_id)
    assert re.fullmatch(r"[A-Za-z0-9]+Flow/\d+", execution.external_run_id or ""), execution.external_run_id


async def test_pipeline_runs_on_metaflow_like_the_local_runner(flows_dir, sqlite_url, agent):
    agents = {"parse": agent("parser", "analyst"), "write": agent("writer", "writer")}
    topology = Topology(name="research_pipeline", topology_type=TopologyType.PIPELINE)
    events: list[StepEvent] = []
    runner = MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url, on_event=events.append)
    result = await runner.run(topology, agents, INPUT)
    await _check_like_local(result, topology, agents, sqlite_url)
    assert (flows_dir / "research_pipeline_flow.py").exists() and (flows_dir / ".metaflow").is_dir()
    assert [(e.kind, e.key, e.agent_name) for e in events] == [
        ("completed", "pipeline/0:parse", "parser"),
        ("completed", "pipeline/1:write", "writer"),
    ]


async def test_a_module_planted_next_to_the_flow_never_runs(flows_dir, sqlite_url, agent, tmp_path):
    """The flow's directory is not first on `sys.path` (`python -P`, and PYTHONSAFEPATH for its tasks)."""
    marker = tmp_path / "planted-ran"
    flows_dir.mkdir(parents=True, exist_ok=True)
    (flows_dir / "json.py").write_text(f"open({str(marker)!r}, 'w').close()\nfrom _json import *\n")
    agents = {"parse": agent("parser", "analyst"), "write": agent("writer", "writer")}
    topology = Topology(name="planted_pipeline", topology_type=TopologyType.PIPELINE)
    result = await MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url).run(topology, agents, INPUT)
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert (flows_dir / "planted_pipeline_flow.py").exists()
    assert not marker.exists()


async def test_crosscheck_runs_its_checkers_in_a_foreach_like_the_local_runner(flows_dir, sqlite_url, agent):
    agents = {
        "primary": agent("solver"),
        "checker_1": agent("c1", "checker"),
        "checker_2": agent("c2", "checker"),
    }
    topology = Topology(name="fact_check", topology_type=TopologyType.CROSSCHECK)
    result = await MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url).run(topology, agents, INPUT)
    await _check_like_local(result, topology, agents, sqlite_url)
    assert result.output is not None and result.output["checkers"] == 2


def test_debate_run_by_hand_skips_the_rounds_after_convergence(flows_dir, sqlite_url, agent):
    """`python FLOW run --input-json ...` as the seed shows: the flow's start step creates the execution."""
    agents = {
        "proponent": agent("pro", "proponent"),
        "opponent": agent("opp", "opponent", model="agree"),
        "mediator": agent("med", "mediator"),
    }
    topology = Topology(
        name="ai_debate", topology_type=TopologyType.DEBATE, config=DebateConfig(max_rounds=2).model_dump()
    )
    flow = export_flow(topology, agents, flows_dir)
    environ = {  # no user name, as in many containers: the exported file copes (Metaflow needs one)
        **{k: v for k, v in os.environ.items() if k not in ("USER", "USERNAME", "METAFLOW_USER", "LOGNAME")},
        "QMCP_DATABASE_URL": sqlite_url,
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(flows_dir),
    }
    done = subprocess.run(
        [sys.executable, str(flow), "run", "--input-json", json.dumps(INPUT)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"/round_2_opponent/\d+ .*Task finished successfully", done.stdout)

    async def check() -> None:
        async with Database(sqlite_url) as db:
            (execution,) = await db.list_executions(topology_name="ai_debate")
        assert (execution.status, execution.runner_type) == (ExecutionStatus.COMPLETED, "metaflow")
        assert execution.external_run_id and execution.external_run_id.startswith("AiDebateFlow/")
        reference = await _local(topology, agents, sqlite_url)
        assert execution.output_data == reference.output
        assert execution.output_data is not None and execution.output_data["rounds"] == 1
        keys = ["debate/mediator", "debate/round-1/opponent", "debate/round-1/proponent"]
        assert await _step_keys(sqlite_url, execution.id) == keys

    asyncio.run(check())


async def test_failed_member_fails_the_run_and_resume_repeats_no_finished_call(
    flows_dir, sqlite_url, agent, tmp_path, model_calls
):
    """An ensemble member fails (more than `failure_threshold` allows), so the join fails the run;
    `resume` (Metaflow's own) retries that member only: the step store answers for the other one."""
    agents = {
        "m0": agent("member-0", model="counted"),
        "m1": agent("member-1", model="flaky"),
        "aggregator": agent("synth", "synthesizer", model="counted"),
    }
    config = EnsembleConfig(aggregation_method="synthesis", failure_threshold=0.0)
    topology = Topology(
        name="research_ensemble", topology_type=TopologyType.ENSEMBLE, config=config.model_dump()
    )
    runner = MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url, config=RunConfig(retry_on_failure=False))

    failed = await runner.run(topology, agents, INPUT)
    assert failed.status == ExecutionStatus.FAILED
    assert "1 of 2 ensemble members failed" in (failed.error or "")
    # The member's own step or the join fails the run, whichever sees both answers first.
    assert re.search(r"Metaflow: (.|\n)*Step (member|aggregate) \(task-id \d+\) failed", failed.error or "")
    assert model_calls() == Counter({"counted:specialist": 1, "flaky:specialist": 1})

    resumed = await runner.resume(failed.execution_id)
    assert resumed.status == ExecutionStatus.COMPLETED, resumed.error
    assert model_calls() == Counter(
        {"counted:specialist": 1, "flaky:specialist": 2, "counted:synthesizer": 1}
    )
    reference = await _local(topology, agents, f"sqlite+aiosqlite:///{tmp_path}/reference.db")
    assert (
        resumed.output == reference.output and resumed.output is not None and resumed.output["failed"] == []
    )
    async with Database(sqlite_url) as db:
        execution = await db.get_execution(resumed.execution_id)
    assert execution.attempts == 2 and execution.error is None


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("kind", ["pipeline", "ensemble"])
async def test_a_flow_on_postgresql(flows_dir, db_url, agent, kind):
    """A pipeline, and a vote ensemble, whose member recorded last completes the execution."""
    if kind == "pipeline":
        agents = {"parse": agent("parser", "analyst"), "write": agent("writer", "writer")}
        topology = Topology(name="pg_pipeline", topology_type=TopologyType.PIPELINE)
    else:
        agents = {f"m{i}": agent(f"member-{i}") for i in range(3)}
        config = EnsembleConfig(aggregation_method="vote").model_dump()
        topology = Topology(name="pg_ensemble", topology_type=TopologyType.ENSEMBLE, config=config)
    result = await MetaflowRunner(output_dir=flows_dir, db_url=db_url).run(topology, agents, INPUT)
    await _check_like_local(result, topology, agents, db_url)


# -- ownership: the runner or the flow run holds the execution's lease ---------------------------------

_RUN_AND_BE_KILLED = """
import asyncio, json, sys
import mf_models
from qmcp.agentframework.models import Topology
from qmcp.agentframework.runners._metaflow import MetaflowRunner

flows_dir, db_url, agents = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
topology = Topology(name="slow_pipeline", topology_type="pipeline")
asyncio.run(MetaflowRunner(output_dir=flows_dir, db_url=db_url).run(topology, agents, {"prompt": "go"}))
"""


def _processes_running(fragment: str) -> list[int]:
    """Pids whose command line mentions `fragment` (the flow file: Metaflow's runtime and its tasks)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if fragment.encode() in cmdline.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the flow dies with its runner on Linux")
async def test_a_killed_runner_takes_its_flow_down_and_the_run_resumes(
    flows_dir, sqlite_url, agent, model_calls
):
    """SIGKILL of the process running `MetaflowRunner.run`: Metaflow stops too (no flow runs on unowned),
    the execution's owner is gone at once, and a resume finishes it without repeating a finished call."""
    agents = {f"s{i}": agent(f"stage-{i}", model="slow") for i in range(3)}
    definitions = {slot: a.definition() for slot, a in agents.items()}
    script = flows_dir.parent / "run.py"
    script.write_text(_RUN_AND_BE_KILLED)
    runner = subprocess.Popen(
        [sys.executable, str(script), str(flows_dir), sqlite_url, json.dumps(definitions)],
        env={**os.environ, "USERNAME": "tester"},
    )
    await eventually_async(
        lambda: sum(model_calls().values()) >= 1 or runner.poll() is not None, "the first step", timeout=120
    )
    assert runner.poll() is None and _processes_running("slow_pipeline_flow.py")
    runner.kill()
    runner.wait()
    await eventually_async(
        lambda: not _processes_running("slow_pipeline_flow.py"), "Metaflow to stop", timeout=30
    )

    async with Database(sqlite_url) as db:
        (listed,) = await db.list_executions()
        execution = await db.stored_execution(listed.id)
    assert execution.status == ExecutionStatus.RUNNING and execution.owner_pid == runner.pid  # as left
    assert listed.status == ExecutionStatus.INTERRUPTED  # how it reads: its owner is gone
    calls_before = sum(model_calls().values())
    resumed = await MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url).resume(execution.id)
    assert resumed.status == ExecutionStatus.COMPLETED, resumed.error
    assert sum(model_calls().values()) - calls_before == 3 - calls_before  # each stage paid once in all
    async with Database(sqlite_url) as db:
        final = await db.get_execution(execution.id)
    assert "(dead)" in final.history[-1]["took_over_from"] and final.owner_token is None


async def test_a_flow_run_on_its_own_owns_its_execution(flows_dir, sqlite_url, agent, monkeypatch):
    """`python FLOW run`: the flow run claims the execution (its runtime's pid), refuses a resume while it
    runs, and gives the lease up when it ends."""
    monkeypatch.setenv("QMCP_TEST_SLOW_SECONDS", "1.5")
    agents = {f"s{i}": agent(f"stage-{i}", model="slow") for i in range(2)}
    topology = Topology(name="own_pipeline", topology_type=TopologyType.PIPELINE)
    flow = export_flow(topology, agents, flows_dir)
    environ = {  # no user name, as in many containers: the exported file copes (Metaflow needs one)
        **{k: v for k, v in os.environ.items() if k not in ("USER", "USERNAME", "METAFLOW_USER", "LOGNAME")},
        "QMCP_DATABASE_URL": sqlite_url,
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(flows_dir),
    }
    process = subprocess.Popen(
        [sys.executable, str(flow), "run", "--input-json", json.dumps(INPUT)],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    async def running() -> Any:
        async with Database(sqlite_url) as db:
            found = await db.list_executions()
        return found[0] if found and found[0].owner_token else None

    execution = None
    for _ in range(600):
        execution = await running()
        if execution is not None:
            break
        await asyncio.sleep(0.05)
    assert execution is not None and execution.owner_pid == process.pid  # the Metaflow runtime owns it
    with pytest.raises(ExecutionBusyError, match=f"is running in pid {process.pid}"):
        await MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url).resume(execution.id)
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output[-4000:]
    async with Database(sqlite_url) as db:
        final = await db.get_execution(execution.id)
    assert final.status == ExecutionStatus.COMPLETED and final.owner_token is None
    assert final.started_at <= final.completed_at and final.duration_ms is not None


_TRACED_FLOW_RUN = """
import asyncio, os, sys
import mf_tracing  # noqa: F401  (the SDK, in this process as in every step)
from qmcp.agentframework.models import AgentConfig, AgentType, PipelineConfig, Topology, TopologyType
from qmcp.agentframework.runners import MetaflowRunner

agents = {slot: AgentType(name=slot, config=AgentConfig(model="test").model_dump()) for slot in ("draft", "edit")}
topology = Topology(name="traced_flow", topology_type=TopologyType.PIPELINE, config=PipelineConfig().model_dump())
runner = MetaflowRunner(output_dir=sys.argv[2], db_url=sys.argv[1])
result = asyncio.run(runner.run(topology, agents, {"prompt": "p"}))
print(result.status, result.error)
"""


def test_the_trace_context_reaches_every_metaflow_task(flows_dir, sqlite_url, monkeypatch, tmp_path):
    """MetaflowRunner's run span is the parent of the agent spans its flow's tasks record."""
    span_log = tmp_path / "spans.jsonl"
    monkeypatch.setenv("QMCP_TEST_SPAN_LOG", str(span_log))
    monkeypatch.setenv(IMPORTS_VARIABLE, "mf_models,mf_tracing")
    done = subprocess.run(
        [sys.executable, "-c", _TRACED_FLOW_RUN, sqlite_url, str(flows_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.startswith("completed"), done.stdout + done.stderr
    spans = [json.loads(line) for line in span_log.read_text().splitlines()]
    (workflow,) = [s for s in spans if s["name"] == "invoke_workflow traced_flow"]
    agents = [s for s in spans if s["name"].startswith("invoke_agent ")]
    assert sorted(s["name"] for s in agents) == ["invoke_agent draft", "invoke_agent edit"]
    assert {s["pid"] for s in agents}.isdisjoint({workflow["pid"]})  # recorded by the tasks' processes
    assert all(
        s["trace_id"] == workflow["trace_id"] and s["parent_id"] == workflow["span_id"] for s in agents
    )
    assert workflow["attributes"]["qmcp.runner"] == "metaflow"


async def test_a_budget_stops_a_flow_and_resume_with_more_repays_nothing(
    flows_dir, sqlite_url, agent, model_calls
):
    """Each task checks the budget against the execution's totals, which the tasks before it added to."""
    stages = {name: agent(name, model="counted", max_tokens=20) for name in ("draft", "edit", "polish")}
    topology = Topology(
        name="budgeted_flow", topology_type=TopologyType.PIPELINE, config=PipelineConfig().model_dump()
    )
    runner = MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url, config=RunConfig(max_tokens=100))
    failed = await runner.run(topology, stages, INPUT)
    assert failed.status == ExecutionStatus.FAILED
    assert (
        "budget exceeded: the run spent" in (failed.error or "")
        and "of its budget of 100 tokens" in failed.error
    )
    assert model_calls() == Counter({"counted:specialist": 1})

    more = MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url, config=RunConfig(max_tokens=10_000))
    resumed = await more.resume(failed.execution_id)
    assert resumed.status == ExecutionStatus.COMPLETED, resumed.error
    assert model_calls() == Counter({"counted:specialist": 3})
