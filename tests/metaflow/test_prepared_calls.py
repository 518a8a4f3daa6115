"""Prepared calls (`flowcall`): a Metaflow task makes and records the call `MetaflowRunner` prepared with the
model layer and `sqlite3` alone. Checked in-process against the topology's code (`invoke_agent`), row by
row: the same statements, rows, usage and totals, the same fence, and the way back to the topology's
code whenever the prepared path does not apply."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from qmcp.agentframework import flowcall
from qmcp.agentframework.errors import LeaseLostError
from qmcp.agentframework.llm import ScriptedModel, register_model, unregister_model
from qmcp.agentframework.models import AgentType, ExecutionStatus, Topology, TopologyType
from qmcp.agentframework.runners import LocalRunner
from qmcp.agentframework.runners import metaflow_helpers as helpers
from qmcp.agentframework.runners._metaflow import MetaflowRunner
from qmcp.agentframework.runners._team import prepare_team
from qmcp.agentframework.store import Database
from qmcp.agentframework.store._steps import _COLUMNS, _owner_guarded, _sqlite_statements

PROMPT = {"prompt": "Is water wet?"}
VOTES = Topology(name="votes", topology_type=TopologyType.ENSEMBLE, config={"aggregation_method": "vote"})
KEYS = [f"ensemble/member:m{i}" for i in range(3)]


def test_the_statements_are_the_stores():
    """The text a task runs is what the store compiles from the tables (a changed table fails here)."""
    upsert, usage, count = _sqlite_statements()
    assert tuple(_COLUMNS) == flowcall.STEP_COLUMNS
    assert _owner_guarded(upsert[0]) == flowcall._sqlite.OWNED_STEP_UPSERT
    assert usage[0] == flowcall._sqlite.INSERT_USAGE
    assert count == flowcall._sqlite.COUNT_USAGE


def _path(url: str) -> str:
    return url.removeprefix("sqlite+aiosqlite:///")


def _start(agents: dict[str, AgentType], run_config: dict[str, Any] | None = None) -> str:
    """An execution of a vote ensemble, started as a flow's `start` step starts it (this process owns it)."""
    definitions = {slot: a.definition() for slot, a in agents.items()}
    execution_id, _ = helpers.start_execution(VOTES.definition(), definitions, PROMPT, run_config=run_config)
    return execution_id


async def _prepare(url: str, execution_id: str, keys: list[str] = KEYS) -> str | None:
    """`CALLS_VARIABLE`'s value for the execution, as `MetaflowRunner` makes it (None: not prepared)."""
    async with Database(url) as db:
        execution = await db.stored_execution(execution_id)
        calls = await helpers.prepare_calls(db, execution, keys)
    if calls is None:
        return None
    assert execution.owner_token is not None
    return flowcall.encode_calls(execution.id, _path(url), execution.owner_token, calls)


def _prepared(url: str, execution_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    value = asyncio.run(_prepare(url, execution_id))
    assert value is not None
    monkeypatch.setenv(flowcall.CALLS_VARIABLE, value)


def _rows(url: str, table: str, execution_id: str, left_out: tuple[str, ...]) -> list[dict[str, Any]]:
    """The table's rows of the execution as stored, without the columns that differ between executions."""
    with sqlite3.connect(_path(url)) as conn:
        conn.row_factory = sqlite3.Row
        found = conn.execute(
            f"SELECT * FROM {table} WHERE execution_id = ? ORDER BY id", (execution_id.replace("-", ""),)
        ).fetchall()
    return [
        {k: v for k, v in dict(row).items() if k not in ("id", "execution_id", *left_out)} for row in found
    ]


def _execution_row(url: str, execution_id: str) -> dict[str, Any]:
    with sqlite3.connect(_path(url)) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute(
            "SELECT * FROM executions WHERE id = ?", (execution_id.replace("-", ""),)
        ).fetchone()
    return dict(row)


_TIMES = ("started_at", "completed_at", "latency_ms")


@pytest.mark.parametrize("case", ["answers", "retried", "refused", "retried_then_refused"])
def test_a_prepared_call_is_recorded_as_the_topology_code_records_it(
    sqlite_url, agent, monkeypatch, scripted, case
):
    """The same member call, once through the topology's code and once prepared: the same result for
    the join, step row, usage row and totals (times and the lease's token aside)."""
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    failures = {
        "answers": {},
        "retried": {0: "server_error"},
        "refused": {0: "auth"},
        "retried_then_refused": {0: "rate_limit", 1: "bad_request"},
    }[case]
    name, _ = scripted()
    agents = {f"m{i}": agent(f"r{i}", model=name, temperature=0.2) for i in range(3)}
    config = {"retry_backoff_seconds": 0.001}
    through_code, prepared = _start(agents, config), _start(agents, config)

    register_model(name, ScriptedModel(name=name, failures=failures))
    expected = helpers.invoke_agent(agents["m0"].definition(), key=KEYS[0], execution_id=through_code)
    _prepared(sqlite_url, prepared, monkeypatch)
    register_model(name, ScriptedModel(name=name, failures=failures))  # its calls counted from 0 again
    made = flowcall.call_prepared(prepared, KEYS[0])

    assert made == expected
    assert (made["error"] is None) == (case in ("answers", "retried"))
    steps = _rows(sqlite_url, "execution_steps", through_code, _TIMES)
    assert steps and _rows(sqlite_url, "execution_steps", prepared, _TIMES) == steps
    usage = _rows(sqlite_url, "step_usage", through_code, ("owner_token", "recorded_at"))
    assert usage and _rows(sqlite_url, "step_usage", prepared, ("owner_token", "recorded_at")) == usage
    totals = ("status", "requests", "input_tokens", "output_tokens", "cost_usd", "external_run_id")
    ours, theirs = _execution_row(sqlite_url, prepared), _execution_row(sqlite_url, through_code)
    assert {k: ours[k] for k in totals} == {k: theirs[k] for k in totals}
    (step,) = _rows(sqlite_url, "execution_steps", prepared, ())
    assert (step["completed_at"] is None) == (made["error"] is not None)


def test_the_runner_completes_the_execution_and_the_join_reads_it(sqlite_url, agent, monkeypatch):
    """Every member prepared and made: the runner's `complete_when_recorded` completes the execution as
    the member recorded last would, and the join's `ended_execution` reads the same artifacts."""
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    agents = {f"m{i}": agent(f"r{i}") for i in range(3)}
    through_code, prepared = _start(agents), _start(agents)
    for slot, key in zip(agents, KEYS, strict=True):
        helpers.invoke_agent(agents[slot].definition(), key=key, execution_id=through_code)
    expected = helpers.complete_when_done(None, through_code)
    _prepared(sqlite_url, prepared, monkeypatch)
    results = [flowcall.call_prepared(prepared, key) for key in KEYS]
    assert all(r is not None and r["error"] is None for r in results)

    async def complete() -> None:
        async with Database(sqlite_url) as db:
            execution = await db.stored_execution(prepared)
            assert execution.owner_token is not None
            lease = db.executions.attach(execution, execution.owner_token)
            await helpers.complete_when_recorded(db, lease, KEYS, poll_seconds=0.001)

    asyncio.run(complete())
    ended = flowcall.ended_execution(prepared, [r for r in results if r is not None])
    assert ended is not None and expected is not None
    assert ended == expected
    assert _execution_row(sqlite_url, prepared)["status"] == ExecutionStatus.COMPLETED.name


def test_a_join_runs_the_code_when_the_execution_is_not_completed_for_it(sqlite_url, agent, monkeypatch):
    """`ended_execution` gives up (None: the join runs the topology's code) on a failed call, a call it
    was not prepared for, or an execution the runner does not complete in time."""
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    execution_id = _start({f"m{i}": agent(f"r{i}") for i in range(3)})
    _prepared(sqlite_url, execution_id, monkeypatch)
    results = [flowcall.call_prepared(execution_id, key) for key in KEYS]
    made = [r for r in results if r is not None]
    assert len(made) == 3
    assert flowcall.ended_execution(execution_id, [{**made[0], "error": "step failed"}, *made[1:]]) is None
    assert flowcall.ended_execution(execution_id, [*made, {**made[0], "key": "other"}]) is None
    monkeypatch.setattr(flowcall._ended, "_WAIT_SECONDS", 0.05)
    assert flowcall.ended_execution(execution_id, made) is None  # nobody completed it
    monkeypatch.delenv(flowcall.CALLS_VARIABLE)
    assert flowcall.ended_execution(execution_id, made) is None


def test_a_call_goes_back_to_the_topology_code_unless_the_prepared_path_applies(
    sqlite_url, agent, monkeypatch, scripted
):
    """No prepared calls, another execution's, an unknown key, a step already recorded, a cancel request,
    another owner, a model that cannot be built: None, before any model call."""
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    name, model = scripted()
    agents = {f"m{i}": agent(f"r{i}", model=name) for i in range(3)}
    execution_id, other = _start(agents), _start(agents)
    assert flowcall.call_prepared(execution_id, KEYS[0]) is None
    _prepared(sqlite_url, execution_id, monkeypatch)
    assert flowcall.call_prepared(other, KEYS[0]) is None
    assert flowcall.call_prepared(execution_id, "ensemble/member:m9") is None
    assert flowcall.call_prepared(execution_id, KEYS[0]) is not None
    assert flowcall.call_prepared(execution_id, KEYS[0]) is None  # recorded: a resume replays it
    assert len(model.calls) == 1

    async def cancel() -> None:
        async with Database(sqlite_url) as db:
            await db.executions.request_cancel(execution_id)

    asyncio.run(cancel())
    assert flowcall.call_prepared(execution_id, KEYS[1]) is None
    with sqlite3.connect(_path(sqlite_url)) as conn:
        conn.execute("UPDATE executions SET cancel_requested_at = NULL, owner_token = 'another'")
    assert flowcall.call_prepared(execution_id, KEYS[1]) is None
    assert len(model.calls) == 1

    gone = _start(agents)
    _prepared(sqlite_url, gone, monkeypatch)
    unregister_model(name)  # this task's process does not register it
    assert flowcall.call_prepared(gone, KEYS[0]) is None


def test_a_takeover_during_the_call_writes_no_step_and_keeps_what_was_paid(
    sqlite_url, agent, monkeypatch, scripted
):
    """Another process claims the execution while the prepared call waits on its model: the step row is
    not written, the call's usage row is (displaced), the totals count it, and the task stops with
    `LeaseLostError`, as the store's fence does."""
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)

    def taken_over(prompt: str, index: int) -> str:
        with sqlite3.connect(_path(sqlite_url)) as conn:
            conn.execute("UPDATE executions SET owner_token = 'the new owner'")
        return "paid for"

    name, _ = scripted(replies=taken_over)
    execution_id = _start({f"m{i}": agent(f"r{i}", model=name) for i in range(3)})
    _prepared(sqlite_url, execution_id, monkeypatch)
    with pytest.raises(LeaseLostError, match="taken over"):
        flowcall.call_prepared(execution_id, KEYS[0])
    assert _rows(sqlite_url, "execution_steps", execution_id, ()) == []
    (paid,) = _rows(sqlite_url, "step_usage", execution_id, ("recorded_at",))
    assert paid["displaced"] == 1 and paid["requests"] == 1 and paid["output_tokens"] > 0
    row = _execution_row(sqlite_url, execution_id)
    assert (row["requests"], row["output_tokens"]) == (1, paid["output_tokens"])


def test_only_plain_calls_of_a_first_foreach_are_prepared(sqlite_url, agent, monkeypatch, tmp_path, scripted):
    """A mixin, a budget or a call with a row (completed, or failed in an earlier attempt) leave the calls
    to the topology's code; so do a pipeline and a resumed Metaflow run (`MetaflowRunner._prepare`)."""
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    broken, _ = scripted(failures={0: "auth"})
    plain = {f"m{i}": agent(f"r{i}") for i in range(3)}
    assert asyncio.run(_prepare(sqlite_url, _start(plain))) is not None
    with_mixin = {**plain, "m2": agent("r2", capabilities=["memory"])}
    assert asyncio.run(_prepare(sqlite_url, _start(with_mixin))) is None
    assert asyncio.run(_prepare(sqlite_url, _start(plain, {"max_cost_usd": 1.0}))) is None
    recorded = _start(plain)
    helpers.invoke_agent(plain["m0"].definition(), key=KEYS[0], execution_id=recorded)
    assert asyncio.run(_prepare(sqlite_url, recorded)) is None
    failed = _start({**plain, "m1": agent("r1", model=broken)})
    assert helpers.invoke_agent(
        plain["m1"].definition() | {"config": {"model": broken}}, key=KEYS[1], execution_id=failed
    )["error"]
    assert asyncio.run(_prepare(sqlite_url, failed)) is None  # an attempt before this one failed it

    async def prepared(runner: MetaflowRunner, topology: Topology, execution_id: str, resumes: bool) -> Any:
        async with Database(sqlite_url) as db:
            execution = await db.stored_execution(execution_id)
            assert execution.owner_token is not None
            team = prepare_team(topology, plain, PROMPT, "test")
            lease = db.executions.attach(execution, execution.owner_token)
            return await runner._prepare(db, execution, team, lease, resumes=resumes)

    local = MetaflowRunner(output_dir=tmp_path / "flows", db_url=sqlite_url)
    keys, value = asyncio.run(prepared(local, VOTES, _start(plain), resumes=False))
    assert keys == KEYS and value is not None and Path(json.loads(value)["database"]).is_absolute()
    assert asyncio.run(prepared(local, VOTES, _start(plain), resumes=True))[1] is None
    pipeline = Topology(name="chain", topology_type=TopologyType.PIPELINE)
    assert asyncio.run(prepared(local, pipeline, _start(plain), resumes=False))[1] is None


@pytest.mark.slow  # runs Metaflow
async def test_a_refused_prepared_call_is_carried_to_the_join_which_runs_the_code(
    flows_dir, light_models, sqlite_url, agent, model_calls
):
    """On Metaflow: one member's prepared call is refused (a permanent error); the join runs the ensemble's
    code with the failure carried, and the run ends as the LocalRunner's does, paying for nothing twice."""
    topology = Topology(
        name="tolerant",
        topology_type=TopologyType.ENSEMBLE,
        config={"aggregation_method": "vote", "failure_threshold": 0.5},
    )
    agents = {
        "m0": agent("r0", model="light"),
        "m1": agent("r1", model="light"),
        "m2": agent("r2", model="light-broken"),
    }
    result = await MetaflowRunner(output_dir=flows_dir, db_url=sqlite_url).run(topology, agents, PROMPT)
    assert model_calls() == {"light:specialist": 2}
    reference = await LocalRunner(db_url=sqlite_url).run(topology, agents, PROMPT)
    assert result.status == reference.status == ExecutionStatus.COMPLETED, result.error
    assert (result.output, result.usage) == (reference.output, reference.usage)
    async with Database(sqlite_url) as db:
        steps = {step.key: step.status for step in await db.list_steps(result.execution_id)}
    assert steps == {KEYS[0]: "completed", KEYS[1]: "completed", KEYS[2]: "failed"}


async def test_the_runners_completion_never_fails_the_run_nor_swallows_its_cancel():
    """The task completing the execution for the join is stopped when Metaflow is done: its failure is
    logged (the join ran the code instead), and a cancel of the run while it stops goes through."""
    from qmcp.agentframework.runners import _metaflow

    logged: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def info(self, event: str, **fields: Any) -> None:
            logged.append((event, fields))

    class Attempt:
        log = Log()

    async def fails() -> None:
        raise RuntimeError("database is locked")

    failed = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await _metaflow._stopped(failed, Attempt())
    assert logged == [("metaflow.completion_failed", {"error": "database is locked"})]

    pending = asyncio.create_task(asyncio.sleep(60))
    await _metaflow._stopped(pending, Attempt())
    assert pending.cancelled() and len(logged) == 1

    async def run() -> None:
        await _metaflow._stopped(asyncio.create_task(asyncio.sleep(60)), Attempt())

    outer = asyncio.create_task(run())
    await asyncio.sleep(0)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer


def test_a_cancel_requested_while_the_calls_run_is_not_completed_for_the_join(sqlite_url, agent, monkeypatch):
    """A cancel requested while the members' calls run: the runner does not complete the execution (its
    heartbeat stops the flow), and a join that starts meanwhile stops waiting for it at once."""
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    execution_id = _start({f"m{i}": agent(f"r{i}") for i in range(3)})
    _prepared(sqlite_url, execution_id, monkeypatch)
    made = [flowcall.call_prepared(execution_id, key) for key in KEYS]

    async def cancel_then_complete() -> None:
        async with Database(sqlite_url) as db:
            await db.executions.request_cancel(execution_id)
            execution = await db.stored_execution(execution_id)
            assert execution.owner_token is not None
            lease = db.executions.attach(execution, execution.owner_token)
            await helpers.complete_when_recorded(db, lease, KEYS, poll_seconds=0.001)

    asyncio.run(cancel_then_complete())
    assert _execution_row(sqlite_url, execution_id)["status"] == ExecutionStatus.RUNNING.name
    monkeypatch.setattr(flowcall._ended, "_WAIT_SECONDS", 60.0)
    assert flowcall.ended_execution(execution_id, [r for r in made if r is not None]) is None


def test_a_lease_lost_before_a_retry_pays_for_no_further_attempt(sqlite_url, agent, monkeypatch, scripted):
    """A transient failure, then the execution found taken over before the retry: no second attempt, no
    step row, and the task stops with `LeaseLostError`, as the plain step's lease check does."""
    monkeypatch.setenv("QMCP_DATABASE_URL", sqlite_url)
    name, model = scripted(failures={0: "server_error"})
    execution_id = _start(
        {f"m{i}": agent(f"r{i}", model=name) for i in range(3)}, {"retry_backoff_seconds": 0.001}
    )
    _prepared(sqlite_url, execution_id, monkeypatch)
    monkeypatch.setattr(flowcall._call, "_owned", lambda *_: False)
    with pytest.raises(LeaseLostError, match="taken over"):
        flowcall.call_prepared(execution_id, KEYS[0])
    assert len(model.calls) == 1
    assert _rows(sqlite_url, "execution_steps", execution_id, ()) == []


def test_a_task_never_makes_a_database_where_there_is_none(tmp_path):
    """A SQLite file gone before a task opens it is an error, not a new empty database."""
    missing = tmp_path / "gone.db"
    with pytest.raises(sqlite3.OperationalError):
        flowcall.connect_writer(str(missing), 0)
    with pytest.raises(sqlite3.OperationalError):
        flowcall.connect_existing(str(missing), "ro")
    assert not missing.exists()
