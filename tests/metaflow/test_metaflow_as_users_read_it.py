"""Runs of generated flows, and of a hand-written one, as Metaflow's users read them: through
Metaflow's client API, in a process of their own (the user's), with the paid calls counted across all
of Metaflow's processes.

Each test starts Metaflow in subprocesses, one process per step, so they take seconds each.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from qmcp.agentframework.models import EnsembleConfig, ExecutionStatus, PipelineConfig, Topology, TopologyType
from qmcp.agentframework.runners import RunConfig
from qmcp.agentframework.runners._flowgen import flow_class_name
from qmcp.agentframework.runners._metaflow import MetaflowRunner, export_flow
from qmcp.agentframework.runners.metaflow_helpers import EXECUTION_TAG
from qmcp.agentframework.store import Database
from qmcp.agentframework.topologies import output_text

pytestmark = pytest.mark.slow

INPUT = {"prompt": "Is water wet?"}

_READ_RUNS = """
import json, sys
from metaflow import Flow, get_namespace, namespace
from metaflow.exception import MetaflowNamespaceMismatch

flow, tag = sys.argv[1], sys.argv[2]
seen = {"namespace": get_namespace()}
try:  # the user's default namespace, as `Flow(...)` starts out
    seen["visible"] = sorted(run.id for run in Flow(flow).runs(tag))
except MetaflowNamespaceMismatch:
    seen["visible"] = []
namespace(None)  # every run of the execution, whoever started it
seen["runs"] = []
for run in Flow(flow).runs(tag):
    steps = {}
    for step in run:
        task = step.task
        steps[step.id] = {
            "attempt": task.current_attempt,
            "successful": task.successful,
            "step_usage": task.data.step_usage if "step_usage" in task else None,
            "stderr": task.stderr,
        }
    end = run["end"].task if run.finished and run.successful else None
    seen["runs"].append(
        {
            "id": run.id,
            "successful": run.successful,
            "tags": sorted(run.tags),
            "answer": end.data.answer if end else None,
            "usage": end.data.usage if end else None,
            "steps": steps,
        }
    )
print(json.dumps(seen))
"""


def _client(flows_dir: Path, flow: str, execution_id: Any, user: str) -> dict[str, Any]:
    """What Metaflow's client shows user `user` of the runs tagged with execution `execution_id`."""
    environ = {**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(flows_dir), "USERNAME": user}
    environ.pop("METAFLOW_USER", None)
    seen: dict[str, Any] = _read_run(_READ_RUNS, environ, flow, execution_id)
    return seen


def _read_run(script: str, environ: dict[str, str], flow: str, execution_id: Any) -> Any:
    """What `script` prints as JSON, given the flow and the tag of execution `execution_id`: it reads
    the runs through Metaflow's client in a process of its own, as a user would."""
    done = subprocess.run(
        [sys.executable, "-c", script, flow, EXECUTION_TAG.format(execution_id)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _pipeline(name: str, agent: Any, *models: str) -> tuple[Topology, dict[str, Any]]:
    topology = Topology(name=name, topology_type=TopologyType.PIPELINE, config=PipelineConfig().model_dump())
    return topology, {f"s{i}": agent(f"stage-{i}", model=model) for i, model in enumerate(models)}


async def test_a_permanent_model_error_is_paid_once_and_never_retried_by_metaflow(
    flows_dir, sqlite_url, agent, model_calls, monkeypatch
):
    """`@retry(times=3)` is on, and the second stage's model refuses its first call (HTTP 400, which a
    retry would get past): the task ends without a retry, the run fails, and a resume pays only that call."""
    monkeypatch.setenv("USERNAME", "mf-tester")
    topology, agents = _pipeline("refused_pipeline", agent, "counted", "flaky")
    runner = MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url, config=RunConfig(max_retries=3))
    failed = await runner.run(topology, agents, INPUT)
    assert failed.status == ExecutionStatus.FAILED
    assert "step 'pipeline/1:s1' failed (permanent model error, not retried)" in (failed.error or "")
    assert model_calls() == Counter({"counted:specialist": 1, "flaky:specialist": 1})

    seen = _client(flows_dir, flow_class_name(topology.name), failed.execution_id, "mf-tester")
    (run,) = seen["runs"]
    assert run["successful"] is False and seen["visible"] == [run["id"]]
    refused = run["steps"]["s1"]
    assert (refused["attempt"], refused["successful"]) == (0, False)  # the first attempt, not retried
    assert "(permanent model error, not retried)" in refused["stderr"]
    assert "this task is not retried" in refused["stderr"]

    resumed = await runner.resume(failed.execution_id)
    assert resumed.status == ExecutionStatus.COMPLETED, resumed.error
    assert model_calls() == Counter({"counted:specialist": 1, "flaky:specialist": 2})


async def test_a_transient_model_error_keeps_metaflows_retry(
    flows_dir, sqlite_url, agent, model_calls, monkeypatch
):
    """qmcp retries once inside the task (`max_retries=1`), then Metaflow's `@retry(times=1)` runs the task
    again, whose call succeeds: three calls, and the step's task is its second attempt."""
    monkeypatch.setenv("USERNAME", "mf-tester")
    monkeypatch.setenv("QMCP_TEST_SHAKY_FAILURES", "2")
    topology, agents = _pipeline("shaky_pipeline", agent, "shaky")
    config = RunConfig(max_retries=1, retry_backoff_seconds=0)
    result = await MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url, config=config).run(
        topology, agents, INPUT
    )
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert model_calls() == Counter({"shaky:specialist": 3})
    (run,) = _client(flows_dir, flow_class_name(topology.name), result.execution_id, "mf-tester")["runs"]
    assert run["successful"] is True
    assert (run["steps"]["s0"]["attempt"], run["steps"]["s0"]["successful"]) == (1, True)


async def test_runs_are_tagged_visible_to_their_user_and_carry_answer_and_usage(
    flows_dir, sqlite_url, agent, model_calls, monkeypatch
):
    """The run is the user's (`user:NAME`, in their default namespace), tagged with the execution, with
    `answer`, `usage` and each step's `step_usage`; `python FLOW resume STEP` of the finished run replays
    it from the store: no call is paid, the execution stays as it was, and the new run ends cleanly."""
    monkeypatch.setenv("USERNAME", "mf-tester")
    topology, agents = _pipeline("users_pipeline", agent, "counted", "counted")
    result = await MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url).run(topology, agents, INPUT)
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert model_calls() == Counter({"counted:specialist": 2})
    flow = flow_class_name(topology.name)

    seen = _client(flows_dir, flow, result.execution_id, "mf-tester")
    (run,) = seen["runs"]
    assert seen["namespace"] == "user:mf-tester" and seen["visible"] == [run["id"]]
    assert {"user:mf-tester", EXECUTION_TAG.format(result.execution_id)} <= set(run["tags"])
    assert _client(flows_dir, flow, result.execution_id, "someone-else")["visible"] == []
    assert run["answer"] == output_text(result.output) and run["answer"]
    assert run["usage"] == dataclasses.asdict(result.usage) and run["usage"]["requests"] == 2
    steps = run["steps"]
    assert steps["s0"]["step_usage"]["input_tokens"] + steps["s1"]["step_usage"]["input_tokens"] == (
        result.usage.input_tokens
    )
    assert steps["end"]["step_usage"]["requests"] == 0

    async with Database(sqlite_url) as db:
        before = await db.stored_execution(result.execution_id)
    flow_file = flows_dir / f"{topology.name}_flow.py"
    environ = {  # by hand, without the runner: no owner token, the user's own shell
        **os.environ,
        "QMCP_DATABASE_URL": sqlite_url,
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(flows_dir),
    }
    done = subprocess.run(
        [sys.executable, str(flow_file), "resume", "s1", "--origin-run-id", run["id"]],
        env=environ,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "cannot claim" not in done.stdout + done.stderr
    assert model_calls() == Counter({"counted:specialist": 2})  # nothing paid again
    async with Database(sqlite_url) as db:
        after = await db.stored_execution(result.execution_id)
    assert after.model_dump() == before.model_dump()

    resumed, original = _client(flows_dir, flow, result.execution_id, "mf-tester")["runs"]
    assert original["id"] == run["id"] and resumed["successful"] is True
    assert {"user:mf-tester", EXECUTION_TAG.format(result.execution_id)} <= set(resumed["tags"])
    assert (resumed["answer"], resumed["usage"]) == (run["answer"], run["usage"])
    assert resumed["steps"]["s1"]["attempt"] == 0  # ran once, replaying: no retry either


_IMPORTS_OF_STEPS = """
import json, re, sys
from metaflow import Flow, namespace

namespace(None)
run = next(iter(Flow(sys.argv[1]).runs(sys.argv[2])))
loaded = {}
for step in run:
    names = re.findall(r"import time:\\s+\\d+ \\|\\s+\\d+ \\|\\s+(\\S+)", step.task.stderr)
    packages = {"qmcp", "sqlalchemy", "sqlmodel", "pydantic", "pydantic_ai"}
    loaded[step.id] = sorted({name.split(".")[0] for name in names} & packages)
print(json.dumps(loaded))
"""


def _imports_of_steps(environ: dict[str, str], flow: str, execution_id: object) -> dict[str, list[str]]:
    """What each step of the run tagged with `execution_id` imported, read through Metaflow's client."""
    imported: dict[str, list[str]] = _read_run(_IMPORTS_OF_STEPS, environ, flow, execution_id)
    return imported


async def test_a_run_the_runner_launched_imports_qmcp_only_in_steps_that_record(
    flows_dir, sqlite_url, agent, model_calls, monkeypatch
):
    """Every task is a new process: `start` (the runner made and checked the execution) and `end` (the
    step before it completed the execution) import no qmcp, SQLAlchemy or pydantic-ai, as a hand-written
    flow's; the agent steps do, and the run is tagged with the execution all the same."""
    monkeypatch.setenv("USERNAME", "mf-tester")
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # each task writes what it imports to its stderr
    topology, agents = _pipeline("lean_pipeline", agent, "counted", "counted")
    result = await MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url).run(topology, agents, INPUT)
    monkeypatch.delenv("PYTHONPROFILEIMPORTTIME")
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert model_calls() == Counter({"counted:specialist": 2})
    environ = {**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(flows_dir)}
    loaded = _imports_of_steps(environ, flow_class_name(topology.name), result.execution_id)
    assert loaded["start"] == [] and loaded["end"] == []
    assert "qmcp" in loaded["s0"] and "sqlalchemy" in loaded["s1"]
    (run,) = _client(flows_dir, flow_class_name(topology.name), result.execution_id, "mf-tester")["runs"]
    assert run["answer"] == output_text(result.output) and run["usage"]["requests"] == 2


async def test_prepared_members_record_without_the_store_and_the_runner_completes_the_execution(
    flows_dir, light_models, sqlite_url, agent, model_calls, monkeypatch
):
    """A vote ensemble the runner launched on SQLite: each member makes the call the runner prepared and
    records it without SQLAlchemy, SQLModel, pydantic-ai or the topology's code; the runner completes the
    execution from the recorded calls, and the join reads its output, answer and usage with `sqlite3`
    (no pydantic either). What Metaflow's client and qmcp's store show is what the join used to record."""
    monkeypatch.setenv("USERNAME", "mf-tester")
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    topology = Topology(
        name="lean_ensemble",
        topology_type=TopologyType.ENSEMBLE,
        config=EnsembleConfig(aggregation_method="vote").model_dump(),
    )

    agents = {f"m{i}": agent(f"member-{i}", model="light") for i in range(3)}
    result = await MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url).run(topology, agents, INPUT)
    monkeypatch.delenv("PYTHONPROFILEIMPORTTIME")
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert model_calls() == Counter({"light:specialist": 3})
    environ = {**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(flows_dir)}
    flow = flow_class_name(topology.name)
    loaded = _imports_of_steps(environ, flow, result.execution_id)
    assert loaded["start"] == loaded["end"] == [] and loaded["aggregate"] == ["qmcp"]
    assert loaded["member"] == ["pydantic", "qmcp"]  # pydantic: the model registry prices the call
    (run,) = _client(flows_dir, flow, result.execution_id, "mf-tester")["runs"]
    assert run["answer"] == output_text(result.output) and run["usage"]["requests"] == 3
    assert run["steps"]["aggregate"]["step_usage"]["requests"] == 0
    assert run["usage"] == dataclasses.asdict(result.usage)


async def test_a_flow_run_by_hand_without_a_user_variable_is_the_accounts(
    flows_dir, sqlite_url, agent, model_calls
):
    """No METAFLOW_USER, SUDO_USER, USERNAME or USER (a service, a container): the account's name, as
    `getpass` reads it (LOGNAME here), is the run's user, so the run is in that user's default namespace,
    tagged with the execution its start step created. `resume start` of it continues that execution:
    no second execution, nothing paid again."""
    topology, agents = _pipeline("accounts_pipeline", agent, "counted")
    flow_file = export_flow(topology, agents, flows_dir)
    unset = ("USER", "USERNAME", "METAFLOW_USER", "SUDO_USER", "LOGNAME")
    environ = {
        **{k: v for k, v in os.environ.items() if k not in unset},
        "LOGNAME": "mf-login",
        "QMCP_DATABASE_URL": sqlite_url,
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(flows_dir),
    }
    done = subprocess.run(
        [sys.executable, str(flow_file), "run", "--input-json", json.dumps(INPUT)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    async with Database(sqlite_url) as db:
        (execution,) = await db.list_executions(topology_name=topology.name)
    assert execution.status == ExecutionStatus.COMPLETED
    seen = _client(flows_dir, flow_class_name(topology.name), execution.id, "mf-login")
    (run,) = seen["runs"]
    assert seen["visible"] == [run["id"]] and "user:mf-login" in run["tags"]
    assert execution.external_run_id == f"{flow_class_name(topology.name)}/{run['id']}"
    assert run["answer"] == output_text(execution.output_data)

    done = subprocess.run(
        [sys.executable, str(flow_file), "resume", "start", "--origin-run-id", run["id"]],
        env=environ,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    async with Database(sqlite_url) as db:
        (again,) = await db.list_executions(topology_name=topology.name)
    assert again.id == execution.id and model_calls() == Counter({"counted:specialist": 1})
    resumed, _ = _client(flows_dir, flow_class_name(topology.name), execution.id, "mf-login")["runs"]
    assert resumed["successful"] is True and resumed["answer"] == run["answer"]


_CONSENSUS_FLOW = '''
from metaflow import FlowSpec, step

from qmcp.agentframework.runners.metaflow_helpers import determine_consensus, invoke_agent


class VerdictFlow(FlowSpec):
    """A hand-written crosscheck: checkers answer in prose, the join reads their verdicts from the text."""

    @step
    def start(self):
        self.primary = invoke_agent({"name": "solver", "config": {"model": "counted"}}, {"prompt": "6*7?"})
        self.stances = ["legal:approve", "finance:reject", "ops:approve", "pr:shrug"]
        self.next(self.check, foreach="stances")

    @step
    def check(self):
        name, stance = self.input.split(":")
        checker = {"name": name, "role": "checker", "config": {"model": "verdict"}}
        self.reply = invoke_agent(checker, {"prompt": f"Check 42 and {stance}."})
        self.next(self.join)

    @step
    def join(self, inputs):
        self.primary = inputs[0].primary
        replies = [(i.reply["agent"], {"role": "assistant", "content": i.reply["output"]}) for i in inputs]
        self.decision = determine_consensus(self.primary, replies, "majority")
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    VerdictFlow()
'''

_READ_CONSENSUS = """
import json
from metaflow import Flow

run = Flow("VerdictFlow").latest_run
replies = {task.data.reply["agent"]: task.data.reply["output"] for task in run["check"]}
print(json.dumps({"successful": run.successful, "decision": run["join"].task.data.decision, "replies": replies}))
"""


def test_a_hand_written_flow_reads_its_checkers_verdicts_from_their_reply_text(flows_dir, model_calls):
    """`determine_consensus` in a flow's join, given the checkers' replies as chat messages (text, prose
    around the JSON): read through Metaflow's client, each verdict is what the crosscheck topology's own
    parser (`parse_verdict`) reads in that text, and a reply holding none abstains."""
    from qmcp.agentframework.topologies import determine_consensus, parse_verdict

    flows_dir.mkdir(parents=True, exist_ok=True)
    flow_file = flows_dir / "verdict_flow.py"
    flow_file.write_text(_CONSENSUS_FLOW)
    environ = {
        **os.environ,
        "USERNAME": "mf-tester",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(flows_dir),
    }
    environ.pop("METAFLOW_USER", None)
    done = subprocess.run(
        [sys.executable, str(flow_file), "run"], env=environ, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert model_calls() == Counter({"counted:generalist": 1, "verdict:checker": 4})
    read = subprocess.run(
        [sys.executable, "-c", _READ_CONSENSUS], env=environ, capture_output=True, text=True, timeout=120
    )
    assert read.returncode == 0, read.stderr[-3000:]
    seen = json.loads(read.stdout)
    assert seen["successful"] is True
    decision, replies = seen["decision"], seen["replies"]
    assert all("```json" in replies[name] for name in ("legal", "finance", "ops"))
    assert [(v["checker"], v["approved"], v["parsed"]) for v in decision["validations"]] == [
        ("legal", True, True),
        ("finance", False, True),
        ("ops", True, True),
        ("pr", False, False),
    ]
    for validation in decision["validations"]:
        assert {k: v for k, v in validation.items() if k != "checker"} == parse_verdict(
            replies[validation["checker"]]
        )
    assert (decision["approvals"], decision["rejections"], decision["abstentions"]) == (2, 1, 1)
    assert decision["approved"] is False and "no units" in decision["issues"]  # 2 of 4 is no majority
    here = determine_consensus(
        decision["primary_output"], [(name, replies[name]) for name in ("legal", "finance", "ops", "pr")]
    )
    assert here == decision
