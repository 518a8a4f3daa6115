"""Runs own their executions: cancel from another runner, resume of a live run, takeover, stored options.

Two runner objects on one database stand for two processes here (each claims with an owner token
of its own); tests/reliability/test_ownership.py does the same with real processes and the CLI.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from qmcp.agentframework.errors import ExecutionBusyError, UserInputError
from qmcp.agentframework.models import ExecutionStatus, PipelineConfig, StepStatus, Topology, TopologyType
from qmcp.agentframework.runners import AsyncRunner, LocalRunner, RunConfig, RunnerRegistry
from qmcp.agentframework.store import Database, Owner
from qmcp.agentframework.topologies import StepEvent


def pipeline(name: str = "pipe") -> Topology:
    return Topology(name=name, topology_type=TopologyType.PIPELINE, config=PipelineConfig().model_dump())


def stages(agent, model: str, n: int) -> dict:
    return {f"s{i}": agent(f"stage-{i}", model=model) for i in range(n)}


async def _started(script, calls: int) -> None:
    while len(script.calls) < calls:
        await asyncio.sleep(0.01)


async def _running_id(db_url: str) -> object:
    async with Database(db_url) as db:
        (execution,) = await db.list_executions(status=ExecutionStatus.RUNNING)
    return execution.id


@pytest.mark.parametrize("runner_class", [LocalRunner, AsyncRunner])
async def test_a_cancel_from_another_runner_stops_the_run_within_a_heartbeat(
    db_url, agent, scripted, runner_class
):
    """Another process's cancel: in-flight model calls stop, completed steps stay, the run returns cancelled."""
    model, script = scripted(latency=30)  # a call that would take 30 s
    fast, fast_script = scripted()
    agents = {
        "s0": agent("quick", model=fast),
        "s1": agent("slow", model=model),
        "s2": agent("never", model=fast),
    }
    task = asyncio.create_task(runner_class(db_url=db_url).run(pipeline(), agents, {"prompt": "p"}))
    await _started(script, 1)
    execution_id = await _running_id(db_url)
    elsewhere = LocalRunner(db_url=db_url)  # knows nothing of the task: only the database connects them
    requested = time.monotonic()
    seen_by_canceller = await elsewhere.cancel(execution_id)
    result = await task
    stopped_after = time.monotonic() - requested
    assert result.status == ExecutionStatus.CANCELLED and "cancelled by request" in result.error
    assert seen_by_canceller.status == ExecutionStatus.CANCELLED
    assert stopped_after < 2.0, f"the run took {stopped_after:.2f}s to stop"
    async with Database(db_url) as db:
        steps = await db.list_steps(execution_id)
        stored = await db.get_execution(execution_id)
    assert [(s.key, s.status) for s in steps] == [("pipeline/0:s0", StepStatus.COMPLETED)]
    assert stored.owner_token is None and stored.cancel_requested_at is None
    assert len(fast_script.calls) == 1  # nothing ran after the cancel


async def test_resume_while_the_run_is_alive_is_refused_then_waits(db_url, agent, scripted):
    model, script = scripted(latency=0.3)
    runner = LocalRunner(db_url=db_url)
    task = asyncio.create_task(runner.run(pipeline(), stages(agent, model, 3), {"prompt": "p"}))
    await _started(script, 1)
    execution_id = await _running_id(db_url)
    with pytest.raises(
        ExecutionBusyError, match=r"is running in pid \d+ on .* --wait, or take it over with --force"
    ):
        await LocalRunner(db_url=db_url).resume(execution_id)
    waited = await LocalRunner(db_url=db_url).resume(execution_id, wait=True)
    finished = await task
    assert finished.status == ExecutionStatus.COMPLETED
    assert waited.status == ExecutionStatus.COMPLETED and waited.output == finished.output
    assert len(script.calls) == 3  # every step paid once


async def test_a_forced_takeover_fences_the_old_owner(db_url, agent, scripted):
    """The old owner stops before its next model call and writes no step, status or output."""
    model, script = scripted(latency=0.4, replies=lambda p, i: f"call {i}")
    old = asyncio.create_task(
        LocalRunner(db_url=db_url).run(pipeline(), stages(agent, model, 4), {"prompt": "p"})
    )
    await _started(script, 2)  # the old owner is in its second call
    execution_id = await _running_id(db_url)
    taken = await LocalRunner(db_url=db_url).resume(execution_id, force=True)
    lost = await old
    assert taken.status == ExecutionStatus.COMPLETED
    assert "was taken over by another process" in lost.error  # and its status is the new owner's
    async with Database(db_url) as db:
        steps = await db.list_steps(execution_id)
        stored = await db.get_execution(execution_id)
    # the old owner's second reply (call 1) came after the takeover: never written
    assert [s.response for s in steps] == ["call 0", "call 2", "call 3", "call 4"]
    assert stored.output_data == taken.output and stored.history[-1]["forced"] is True
    assert len(script.calls) == 5  # the old owner paid for call 1, then stopped before another


async def test_resume_reuses_the_runs_options_and_records_explicit_changes(
    db_url, agent, scripted, monkeypatch
):
    first_model, first = scripted(failures={1: "auth", 2: "auth"})
    second_model, second = scripted()
    agents = stages(agent, "test", 3)  # the agents' own model is `test`: the override must win
    failed = await LocalRunner(
        config=RunConfig(model_override=first_model, retry_backoff_seconds=0.001), db_url=db_url
    ).run(pipeline(), agents, {"prompt": "p"})
    assert failed.status == ExecutionStatus.FAILED and len(first.calls) == 2
    monkeypatch.setenv("QMCP_MODEL_OVERRIDE", "test")  # ambient: not a change of the run
    with pytest.raises(UserInputError, match=r"ran on the local runner.*change_runner=True"):
        await AsyncRunner(db_url=db_url).resume(failed.execution_id)
    # the run's own model, though neither this runner nor the agents name it
    resumed = await LocalRunner(db_url=db_url).resume(failed.execution_id)
    assert (
        resumed.status == ExecutionStatus.FAILED and len(first.calls) == 3
    )  # it called the run's model again
    changed = await AsyncRunner(config=RunConfig(model_override=second_model), db_url=db_url).resume(
        failed.execution_id, change_runner=True
    )
    assert changed.status == ExecutionStatus.COMPLETED, changed.error
    assert len(second.calls) == 2
    async with Database(db_url) as db:
        stored = await db.get_execution(failed.execution_id)
        steps = await db.list_steps(failed.execution_id)
    assert [s.model for s in steps] == [first_model, second_model, second_model]
    assert stored.run_config["model_override"] == second_model and stored.runner_type == "async"
    assert "changes" not in stored.history[1]
    assert stored.history[2]["changes"] == {
        "model_override": [first_model, second_model],
        "runner": ["local", "async"],
        "runner.max_concurrent": [None, 10],
    }


async def test_the_registry_makes_the_runner_an_execution_ran_on(db_url, agent, scripted):
    model, _ = scripted(failures={0: "auth"})
    failed = await AsyncRunner(db_url=db_url, max_concurrent=3).run(
        pipeline(), stages(agent, model, 1), {"prompt": "p"}
    )
    async with Database(db_url) as db:
        execution = await db.get_execution(failed.execution_id)
    again = RunnerRegistry.for_execution(execution, db_url=db_url)
    assert isinstance(again, AsyncRunner) and again.max_concurrent == 3


async def test_async_max_concurrent_bounds_all_the_runners_executions(db_url, agent, scripted):
    model, script = scripted(latency=0.05)
    runner = AsyncRunner(db_url=db_url, max_concurrent=3)
    ensemble = Topology(
        name="ens", topology_type=TopologyType.ENSEMBLE, config={"aggregation_method": "vote"}
    )
    agents = {f"m{i}": agent(f"m{i}", model=model) for i in range(6)}
    results = await asyncio.gather(*(runner.run(ensemble, agents, {"prompt": f"p{i}"}) for i in range(4)))
    assert {r.status for r in results} == {ExecutionStatus.COMPLETED}
    assert script.max_in_flight == 3  # not 3 per execution


async def test_replayed_steps_carry_their_recorded_tokens(sqlite_url, agent, scripted):
    model, _ = scripted(failures={2: "auth"})
    first = await LocalRunner(config=RunConfig(retry_backoff_seconds=0.001), db_url=sqlite_url).run(
        pipeline(), stages(agent, model, 3), {"prompt": "p"}
    )
    events: list[StepEvent] = []
    resumed = await LocalRunner(db_url=sqlite_url, on_event=events.append).resume(first.execution_id)
    replayed = [e for e in events if e.kind == "replayed"]
    assert len(replayed) == 2 and all(
        e.usage.input_tokens > 0 and e.usage.output_tokens > 0 for e in replayed
    )
    async with Database(sqlite_url) as db:
        steps = await db.list_steps(first.execution_id)
    assert [e.usage for e in replayed] == [s.usage for s in steps[:2]]
    assert resumed.input_tokens == sum(s.input_tokens for s in steps)  # the run's total, paid once


async def test_a_recreated_sqlite_file_gets_a_working_database(tmp_path, agent):
    path = tmp_path / "again.db"
    url = f"sqlite+aiosqlite:///{path}"
    runner = LocalRunner(db_url=url)
    assert (await runner.run(pipeline(), stages(agent, "test", 1), {"prompt": "p"})).status == "completed"
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    again = await runner.run(pipeline(), stages(agent, "test", 1), {"prompt": "p"})
    assert again.status == ExecutionStatus.COMPLETED, again.error
    async with Database(url) as db:
        assert [e.id for e in await db.list_executions()] == [again.execution_id]


@pytest.mark.parametrize("removed_at", [0, 1])
async def test_a_sqlite_file_removed_mid_run_fails_the_run(tmp_path, agent, scripted, removed_at):
    """SQLite keeps writing to a removed file through its open connections: the run must not say
    it completed into a file nobody can open again."""
    path = tmp_path / "gone.db"

    def reply(_prompt: str, index: int) -> str:
        if index == removed_at:
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
        return "done"

    model, _ = scripted(replies=reply)
    result = await LocalRunner(db_url=f"sqlite+aiosqlite:///{path}").run(
        pipeline(), stages(agent, model, 2), {"prompt": "p"}
    )
    assert result.status == ExecutionStatus.FAILED
    assert result.error == (
        f"the database file {path} was removed or replaced while the run was using it; "
        "what the run wrote there is lost"
    )


async def test_run_records_its_options_and_owner(db_url, agent):
    runner = AsyncRunner(
        config=RunConfig(model_override="test", timeout_seconds=60), db_url=db_url, max_concurrent=2
    )
    result = await runner.run(pipeline(), stages(agent, "x:unused", 1), {"prompt": "p"})
    async with Database(db_url) as db:
        stored = await db.get_execution(result.execution_id)
    assert result.status == ExecutionStatus.COMPLETED
    assert stored.run_config["model_override"] == "test" and stored.run_config["timeout_seconds"] == 60
    assert "log_level" not in stored.run_config  # the process's, not the run's
    assert stored.runner_options == {"max_concurrent": 2}
    assert stored.owner_token is None and stored.attempts == 1
    (attempt,) = stored.history
    assert attempt["runner"] == "async" and attempt["by"] == Owner.this_process().describe()
    assert stored.started_at <= stored.completed_at and stored.duration_ms is not None
