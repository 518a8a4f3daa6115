"""Runners: the seed's example verbatim, concurrency limits, the registry, bad input, keys."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from qmcp.agentframework.errors import (
    InvalidConfigError,
    MissingAPIKeyError,
    MissingSlotError,
    UnknownModelError,
    UserInputError,
)
from qmcp.agentframework.models import EnsembleConfig, ExecutionStatus, Topology, TopologyType, metadata
from qmcp.agentframework.runners import (
    PROCESS_FIELDS,
    RUN_OPTIONS,
    AsyncRunner,
    BaseRunner,
    FieldScope,
    LocalRunner,
    RunConfig,
    RunnerRegistry,
    RunResult,
    field_scope,
    runner,
)
from qmcp.agentframework.store import Database
from qmcp.config import Settings

SEED = Path(__file__).with_name("seed_complete_local_execution.py")


@pytest.mark.slow  # runs the seed's example as a script
@pytest.mark.parametrize("runner_name", ["LocalRunner", "AsyncRunner"])
def test_seed_complete_local_execution_verbatim(tmp_path, runner_name):
    source = SEED.read_text()
    if runner_name == "AsyncRunner":
        source = source.replace("LocalRunner", "AsyncRunner")
    script = tmp_path / "example.py"
    script.write_text(source)
    env = {"PATH": "/usr/bin:/bin", "QMCP_MODEL_OVERRIDE": "test", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Status: completed"
    assert lines[1].startswith("Duration: ") and lines[1].endswith("ms")
    assert lines[2].startswith("Output: {'method': 'synthesis'")
    assert (tmp_path / "demo.db").exists()


@pytest.mark.slow  # runs the seed's example as a script
def test_seed_example_without_a_key_names_the_variable_and_the_override(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(SEED.read_text())
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "MissingAPIKeyError" in last and "ANTHROPIC_API_KEY" in last and "QMCP_MODEL_OVERRIDE=test" in last


def _ensemble(n: int, name: str = "wide") -> Topology:
    return Topology(name=name, topology_type=TopologyType.ENSEMBLE, config=EnsembleConfig().model_dump())


async def test_async_runner_respects_max_concurrent(sqlite_url, agent, scripted):
    model, script = scripted(latency=0.05)
    members = {f"m{i}": agent(f"member-{i}", model=model) for i in range(40)}
    started = time.perf_counter()
    result = await AsyncRunner(db_url=sqlite_url, max_concurrent=5).run(
        _ensemble(40), members, {"prompt": "p"}
    )
    elapsed = time.perf_counter() - started
    assert result.status == ExecutionStatus.COMPLETED, result.error
    assert len(script.calls) == 40 and script.max_in_flight == 5
    assert 0.4 <= elapsed < 1.6, elapsed  # about 8 waves of 50 ms


async def test_local_runner_runs_one_step_at_a_time(sqlite_url, agent, scripted):
    model, script = scripted(latency=0.01)
    members = {f"m{i}": agent(f"member-{i}", model=model) for i in range(5)}
    result = await LocalRunner(db_url=sqlite_url).run(_ensemble(5), members, {"prompt": "p"})
    assert result.status == ExecutionStatus.COMPLETED
    assert script.max_in_flight == 1


async def test_run_result_and_execution_row(db_url, agent):
    config = RunConfig(correlation_id="req-42", timeout_seconds=60)
    result = await LocalRunner(config=config, db_url=db_url).run(
        _ensemble(2), {"a": agent("a1"), "b": agent("b1")}, {"prompt": "p"}
    )
    assert isinstance(result, RunResult)
    assert set(RunResult.model_fields) >= {
        "execution_id",
        "status",
        "output",
        "error",
        "started_at",
        "completed_at",
        "duration_ms",
        "runner_type",
        "topology_name",
        "correlation_id",
    }
    assert (result.runner_type, result.topology_name, result.correlation_id) == ("local", "wide", "req-42")
    assert result.duration_ms is not None and result.completed_at >= result.started_at
    async with Database(db_url) as db:
        execution = await db.get_execution(result.execution_id)
        topology, agents = await db.get_topology("wide")
    assert execution.correlation_id == "req-42" and execution.run_config["timeout_seconds"] == 60
    assert list(agents) == ["a", "b"] and topology.topology_type == TopologyType.ENSEMBLE


async def test_generated_correlation_id(sqlite_url, agent):
    result = await LocalRunner(db_url=sqlite_url).run(_ensemble(1), {"a": agent("a1")}, {"prompt": "p"})
    assert result.correlation_id and len(result.correlation_id) == 32
    async with Database(sqlite_url) as db:
        execution = await db.get_execution(result.execution_id)
    assert execution.run_config["correlation_id"] == execution.correlation_id == result.correlation_id


def test_every_run_config_field_declares_where_it_lives():
    scopes = {name: field_scope(name) for name in RunConfig.model_fields}
    assert set(scopes.values()) <= set(FieldScope)
    assert {name for name, scope in scopes.items() if scope is FieldScope.RUN} == RUN_OPTIONS
    assert {name for name, scope in scopes.items() if scope is FieldScope.PROCESS} == PROCESS_FIELDS
    assert {name for name, scope in scopes.items() if scope is FieldScope.IDENTITY} == {"correlation_id"}
    assert {"log_level", "rate_limits", "freeze_heap_above"} <= PROCESS_FIELDS
    assert {"model_override", "timeout_seconds", "max_tokens"} <= RUN_OPTIONS
    schema = json.dumps(RunConfig.model_json_schema())
    assert not any(f'"{scope.value}"' in schema for scope in FieldScope)  # nothing leaks to users


async def test_process_fields_are_not_stored_with_the_run(sqlite_url, agent):
    config = RunConfig(log_level="DEBUG", freeze_heap_above=7, max_retries=1)
    result = await LocalRunner(config=config, db_url=sqlite_url).run(
        _ensemble(1), {"a": agent("a1")}, {"prompt": "p"}
    )
    async with Database(sqlite_url) as db:
        execution = await db.get_execution(result.execution_id)
    assert set(execution.run_config) == set(RunConfig.model_fields) - PROCESS_FIELDS
    assert execution.run_config["max_retries"] == 1


@pytest.mark.parametrize("runner_type", ["local", "async", "metaflow"])
def test_runners_declare_their_constructor_options(runner_type):
    runner_class = RunnerRegistry.get(runner_type)
    parameters = inspect.signature(runner_class.__init__).parameters
    assert set(runner_class.option_names) <= set(parameters)
    expected = {"local": (), "async": ("max_concurrent",), "metaflow": ("output_dir", "environment")}
    assert runner_class.option_names == expected[runner_type]
    if runner_type != "metaflow":  # needs the metaflow extra to be made
        assert set(runner_class().options()) == set(runner_class.option_names)


def test_flows_live_under_the_data_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("QMCP_FLOWS_DIR", raising=False)
    monkeypatch.delenv("QMCP_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert Settings().server_flows_dir == tmp_path / "xdg" / "qmcp" / "flows"
    monkeypatch.setenv("QMCP_DATA_DIR", str(tmp_path / "data"))
    assert Settings().server_flows_dir == tmp_path / "data" / "flows"
    monkeypatch.setenv("QMCP_FLOWS_DIR", str(tmp_path / "flows"))
    assert Settings().server_flows_dir == tmp_path / "flows"


async def test_model_override_from_config_and_environment(sqlite_url, agent, scripted, monkeypatch):
    model, script = scripted()
    claude = agent("claude", model="anthropic:claude-sonnet-4-20250514")
    result = await LocalRunner(config=RunConfig(model_override=model), db_url=sqlite_url).run(
        _ensemble(1), {"a": claude}, {"prompt": "p"}
    )
    assert result.status == ExecutionStatus.COMPLETED and len(script.calls) == 1
    monkeypatch.setenv("QMCP_MODEL_OVERRIDE", "test")
    result = await LocalRunner(db_url=sqlite_url).run(_ensemble(1), {"a": claude}, {"prompt": "p"})
    assert result.status == ExecutionStatus.COMPLETED


def test_registry_and_custom_runner():
    assert {"local", "async"} <= set(RunnerRegistry.list())
    assert isinstance(RunnerRegistry.create("local", RunConfig()), LocalRunner)
    assert RunnerRegistry.get("async") is AsyncRunner
    with pytest.raises(UserInputError, match="unknown runner 'nope'"):
        RunnerRegistry.get("nope")

    @runner
    class MyRunner(BaseRunner):
        runner_type = "my_runner"

    assert RunnerRegistry.create("my_runner", RunConfig(max_retries=1)).config.max_retries == 1


async def _row_counts(url: str) -> dict[str, int]:
    async with Database(url) as db, db.sessions() as session:
        return {
            name: (await session.exec(select(func.count()).select_from(table))).one()
            for name, table in metadata.tables.items()
        }


@pytest.mark.parametrize(
    ("topology", "agents", "input_data", "error", "message"),
    [
        (_ensemble(1), {}, {"p": 1}, MissingSlotError, "was given no agents"),
        (
            Topology(name="deb", topology_type="debate"),
            {"proponent": "A"},
            {},
            InvalidConfigError,
            "expected an AgentType",
        ),
        (
            Topology(name="deb", topology_type="debate"),
            "AGENT",
            {},
            MissingSlotError,
            r"slot\(s\): proponent, opponent",
        ),
        (Topology(name="cc", topology_type="crosscheck"), "AGENT", {}, MissingSlotError, "primary"),
        (
            Topology(name="x", topology_type="swarm"),
            "AGENT",
            {},
            InvalidConfigError,
            "unknown topology type 'swarm'",
        ),
        (
            Topology(name="x", topology_type="ensemble", config={"failure_threshold": 2}),
            "AGENT",
            {},
            InvalidConfigError,
            "config.failure_threshold: Input should be less than or equal to 1",
        ),
        (
            Topology(name="Bad Name", topology_type="ensemble"),
            "AGENT",
            {},
            InvalidConfigError,
            "invalid topology name",
        ),
        (_ensemble(1), "AGENT", {"when": object()}, UserInputError, "not JSON-serialisable"),
        (_ensemble(1), "AGENT", ["not", "a", "dict"], UserInputError, "must be a JSON object"),
        (_ensemble(1), "BADMODEL", {}, UnknownModelError, "unknown model 'nosuch:model'"),
        (_ensemble(1), "BADNAME", {}, InvalidConfigError, "invalid agent name"),
        (_ensemble(1), "BADTEMP", {}, InvalidConfigError, "config.temperature"),
        (_ensemble(1), "CLAUDE", {}, MissingAPIKeyError, "ANTHROPIC_API_KEY"),
    ],
)
async def test_bad_input_is_rejected_before_anything_is_written(
    db_url, agent, topology, agents, input_data, error, message
):
    from qmcp.agentframework.models import AgentType

    if agents == "AGENT":
        agents = {"m": agent("good")}
    elif agents == "BADMODEL":
        agents = {"m": agent("good", model="nosuch:model")}
    elif agents == "BADNAME":
        agents = {"m": AgentType(name="Not Valid!")}
    elif agents == "BADTEMP":
        agents = {"m": AgentType(name="hot", config={"temperature": 9})}
    elif agents == "CLAUDE":
        agents = {"m": agent("claude", model="anthropic:claude-sonnet-4-20250514")}
    elif agents == {"proponent": "A"}:
        agents = {"proponent": "A"}
    before = await _row_counts(db_url)
    with pytest.raises(error, match=message):
        await LocalRunner(db_url=db_url).run(topology, agents, input_data)
    assert await _row_counts(db_url) == before


@pytest.mark.parametrize("bad", [{"m": "x"}, {"Bad Slot": None}])
async def test_errors_are_one_line(sqlite_url, bad):
    with pytest.raises(UserInputError) as caught:
        await LocalRunner(db_url=sqlite_url).run(_ensemble(1), bad, {})
    assert "\n" not in str(caught.value)


async def test_failed_run_returns_instead_of_raising(sqlite_url, agent, scripted):
    model, _ = scripted(failures={0: "auth"})
    result = await LocalRunner(db_url=sqlite_url).run(
        _ensemble(1), {"a": agent("a1", model=model)}, {"prompt": "p"}
    )
    assert result.status == ExecutionStatus.FAILED and result.output is None
    assert "1 of 1 ensemble members failed" in result.error
