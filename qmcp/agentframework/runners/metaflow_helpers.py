"""What the steps of a generated Metaflow flow call: the topology's own code, the step store, the records.

A step does not re-implement its topology. It runs the topology's code over a `StepContext` that
owns only that step's agent call: the calls of earlier steps replay from the step store, and the
code stops at the first call a later step owns. Prompts, step keys and outputs are therefore those
of every other runner, the execution is an ordinary one in the database (`qmcp executions show`),
and resuming a Metaflow run repeats no finished call, also inside a `foreach`.

A failure that the topology tolerates (an ensemble member within `failure_threshold`, a checker
that abstains) does not fail its Metaflow task: the step's result carries it to the join, which
replays it as a failure, or, in a resumed run, calls that agent again, like any resume does.

Ownership: the steps of a flow act for one owner of the execution's lease (see
`store/_executions.py`). When `MetaflowRunner` launched the flow, that is the runner, which claimed
the execution and passes its token in `QMCP_EXECUTION_OWNER`; a flow run started on its own claims
the execution for itself (its token names the Metaflow run, its pid is the local Metaflow runtime's).
Each step renews the lease while it runs, writes its steps fenced by the token, stops at a cancel
request, and fails at once if another process has taken the execution over. Helpers called outside
a flow act for their process.

`aggregate_results` and `determine_consensus` are the topologies' own functions, re-exported for
hand-written flows: they read `invoke_agent` results, `(name, answer)` pairs and chat messages, and
`aggregate_results(..., "synthesis", aggregator=...)` asks the aggregator you give it.
Helpers read the database from `QMCP_DATABASE_URL`, and import the modules named in
`QMCP_IMPORTS` and `QMCP_METAFLOW_IMPORTS` (comma-separated) first, e.g. the ones that register
your models, topologies and mixins. They
continue the trace of `TRACEPARENT` (set by `MetaflowRunner` from its run's span), and check the
run's budget against the execution's stored totals, which every task adds its calls to; rate limits
are those of the task's own process (`QMCP_RATE_LIMITS`, the models' `ModelConfig`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import functools
import gc
import os
import uuid
from collections.abc import Awaitable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from ...config import settings
from ...observability import continued_trace, log_context
from .. import llm
from ..errors import (
    BudgetExceededError,
    InvalidConfigError,
    LeaseLostError,
    ModelError,
    NonDeterminismError,
    PermanentModelError,
    QmcpError,
    RunCancelledError,
    RunError,
    StepFailedError,
    UserInputError,
)
from ..flowcall import IMPORTS_VARIABLE, PreparedCall, end_task_without_retry, import_task_plugins
from ..models import AgentType, Execution, ExecutionStatus, ExecutionStep, StepStatus, Topology, Usage
from ..store import Database, Lease, MemoryStepStore, Owner, storage_errors
from ..topologies import (
    Scheduler,
    StepContext,
    StepResult,
    TopologyRegistry,
    aggregate_results,
    determine_consensus,
    input_text,
    output_text,
)
from ._attempt import Attempt, Ending
from ._base import start_execution as start_new_execution  # this module's `start_execution` is a flow helper
from ._base import step_context
from ._config import RunConfig
from ._flowgen import LAUNCH_VARIABLE, metaflow_retries
from ._team import prepare_team

__all__ = [
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
]

OWNER_VARIABLE = "QMCP_EXECUTION_OWNER"
"""The lease token of the process that claimed the execution and launched the flow (`MetaflowRunner`)."""
EXECUTION_TAG = "qmcp_execution:{}"
"""The Metaflow tag of every run that works on a qmcp execution: `Flow(NAME).runs(EXECUTION_TAG.format(id))`."""

T = TypeVar("T")


# -- the public helpers -------------------------------------------------------------------------


def start_execution(
    topology: Mapping[str, Any],
    agents: Mapping[str, Mapping[str, Any]],
    input_data: Mapping[str, Any],
    execution_id: str = "",
    *,
    run_config: Mapping[str, Any] | None = None,
) -> tuple[str, int | None]:
    """Create the execution of a flow run, or attach to `execution_id`; returns (execution id, topology id).

    A new execution is validated, stored and recorded like any runner's. An existing one (made by
    `MetaflowRunner.run`) must have been made for this flow's topology, agents and input. A Metaflow
    `resume` that runs `start` again continues the execution of the run it resumes, never a new one.
    """
    execution_id = execution_id or _origin_execution() or ""
    return _run(_start_execution(topology, agents, input_data, execution_id, run_config or {}))


def invoke_agent(
    agent_config: Mapping[str, Any],
    input_data: Mapping[str, Any] | None = None,
    *,
    key: str | None = None,
    execution_id: str | None = None,
) -> dict[str, Any]:
    """Run one agent call: step `key` of an execution, or a one-off call on `input_data`.

    `agent_config` is an agent definition (name, role, config) or an `AgentConfig` dict. Inside an
    execution the topology's code builds the prompt; the returned dict says what the step did:
    `key`, `agent`, `output` (the reply), `data` (parsed JSON, if asked for), `error` (a failure
    the topology tolerated), `skipped` (the topology took another path), `usage` (the call's tokens,
    cost and requests, as recorded: a replayed call reports what it cost when it was made) and `run`
    (the flow run).

    A permanent model error ends the Metaflow task without a retry (docs/metaflow.md, "Retries").
    """
    agent = _agent(agent_config)
    if execution_id is None:
        if input_data is None:
            raise UserInputError("invoke_agent needs input_data for a one-off call, or execution_id and key")
        return _run(_invoke_once(agent, input_data, key or "invoke"))
    if key is None or input_data is not None:
        raise UserInputError(
            "inside an execution, pass key= and no input_data: the execution holds the input"
        )
    progress = _run(_advance(execution_id, owned={key}, after=(), must_finish=False))
    outcome = progress.outcomes.get(key)
    if isinstance(outcome, StepResult) and outcome.agent_name != agent.name:
        raise InvalidConfigError(
            f"step {key!r} of execution {execution_id} belongs to agent {outcome.agent_name!r}, but this flow "
            f"step is for {agent.name!r}; regenerate the flow for this execution's team"
        )
    return _step_result(key, agent.name, outcome, progress.run)


def run_topology(
    execution_id: str,
    *,
    owns: Collection[str] | Literal["all"] = (),
    after: Sequence[Mapping[str, Any]] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the topology's code to its end; returns its output and the usage of the calls this step owns.

    `owns` are the agent calls this step makes (`"all"` for a topology whose shape is decided at
    run time); every other call must have been made by an earlier step. `after` are the results
    of the `foreach` steps being joined, so that failures they tolerated are carried over.
    """
    progress = _run(
        _advance(execution_id, owned=None if owns == "all" else set(owns), after=after, must_finish=True)
    )
    assert progress.output is not None
    owned = [outcome for key, outcome in progress.outcomes.items() if owns == "all" or key in owns]
    return progress.output, _usage_artifact(_used(owned))


def complete_when_done(topology_id: int | None, execution_id: str) -> dict[str, Any] | None:
    """After a `foreach` step's own call: complete the execution if its topology's code now runs to its end
    on recorded calls alone, so that the join has nothing left to record (and imports no qmcp).

    Returns the end's artifacts (`output`, `answer`, `usage`, as the join sets them), or None when a
    call is still missing (another step's, still running or failed), the code does not end on the
    recorded calls, or the execution is not running: the join then runs the topology's code as ever.
    Of members finishing together, more than one may complete it; the execution's end is written once.
    """
    return _run(_complete_when_done(topology_id, execution_id))


def save_execution(
    topology_id: int | None, output_data: Mapping[str, Any], *, execution_id: str | None = None
) -> dict[str, Any]:
    """Complete execution `execution_id` with `output_data`; without an id, record a completed execution.

    Returns what the execution used in all (tokens, cost, requests), for the flow's `usage` artifact.
    """
    return _usage_artifact(_run(_save_execution(topology_id, dict(output_data), execution_id)))


# -- running the topology's code for one flow step ------------------------------------------------


class _Suspended(BaseException):
    """The topology reached a call that a later flow step owns: this step's share is done.

    A `BaseException`, so that topology code catching `Exception` does not swallow it.
    """

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


@dataclass
class _FlowStepContext(StepContext):
    """A `StepContext` that calls only the steps it owns (all when `owned` is None).

    Other steps replay from the store (even with checkpoint reads off: they are an earlier
    Metaflow step's work), replay as failures when an earlier step carried one, or suspend.
    """

    owned: Collection[str] | None = None
    failures: Mapping[str, str] = field(default_factory=dict)
    permanent: Mapping[str, str] = field(default_factory=dict)
    """Owned calls that failed permanently in this task's previous attempt: a retry does not pay for them again."""
    outcomes: dict[str, StepResult | StepFailedError] = field(default_factory=dict)
    prepared: dict[str, PreparedCall | None] | None = None
    """When set, the calls a later flow step owns are prepared into it (`prepare_calls`), None for one
    that is not a plain step, before this step suspends."""

    async def invoke(
        self,
        slot: str,
        prompt: str,
        *,
        key: str,
        schema: dict[str, Any] | None = None,
        fallback: dict[str, Any] | None = None,
        durable: bool = False,
    ) -> StepResult:
        full_key = self.prefix + key
        if full_key in self.permanent and full_key not in self.completed:
            failure = StepFailedError(full_key, PermanentModelError(self.permanent[full_key]))
            self.outcomes[full_key] = failure
            raise failure
        if self.owned is None or full_key in self.owned:
            try:
                result = await super().invoke(
                    slot, prompt, key=key, schema=schema, fallback=fallback, durable=durable
                )
            except StepFailedError as error:
                self.outcomes[full_key] = error
                raise
            self.outcomes[full_key] = result
            return result
        if full_key in self.completed:
            return await super().invoke(slot, prompt, key=key, schema=schema, fallback=fallback, durable=True)
        if full_key in self.failures:
            raise _replayed_failure(full_key, self.failures[full_key])
        if self.prepared is not None and schema is None:
            self.prepared[full_key] = self.prepared_call(slot, prompt, key=key)
        raise _Suspended(full_key)


async def _complete_when_done(topology_id: int | None, execution_id: str) -> dict[str, Any] | None:
    async with Database(settings().database_url) as db:
        with storage_errors(db.url):
            execution = await db.stored_execution(execution_id)
            if execution.status == ExecutionStatus.RUNNING:
                output = await _replayed_output(db, execution)
                if output is None:
                    return None
                try:
                    return _ended(output, await _complete(db, topology_id, output, execution_id))
                except QmcpError:  # unless another member completed it meanwhile
                    execution = await db.stored_execution(execution_id)
                    if execution.status != ExecutionStatus.COMPLETED:
                        raise
            if execution.status != ExecutionStatus.COMPLETED or execution.output_data is None:
                return None
            return _ended(execution.output_data, execution.usage)  # another member completed it


async def prepare_calls(
    db: Database, execution: Execution, keys: Collection[str]
) -> list[PreparedCall] | None:
    """The calls `keys` of a flow run's first `foreach`, as the topology's code makes them before any call
    is recorded (`StepContext.prepared_call`), for its tasks to make without that code (`flowcall`); None
    when one of them has a row already (an earlier attempt's), is not a plain step, or the code asks for
    another call first."""
    if await db.step_statuses(execution.id, list(keys)):  # an attempt before this one made some
        return None
    prepared: dict[str, PreparedCall | None] = {}
    ctx = await _flow_context(
        db, execution, RunConfig.model_validate(execution.run_config), owned=(), prepared=prepared
    )
    topology = Topology.model_validate(execution.topology_snapshot)
    implementation = TopologyRegistry.create(topology.topology_type, topology.config)
    with contextlib.suppress(_Suspended, Exception):  # an error: the tasks meet it and record it
        await _run_code(ctx, implementation, execution.input_data, execution.correlation_id)
    calls = [prepared.get(key) for key in keys]
    if set(prepared) != set(keys) or None in calls:
        return None
    return [call for call in calls if call is not None]


async def complete_when_recorded(
    db: Database, lease: Lease, keys: Sequence[str], poll_seconds: float
) -> None:
    """For `MetaflowRunner`, while the flow it launched runs: once the calls `keys` it prepared (`prepare_calls`)
    are all recorded, run the topology's code on them and complete the execution, so that the join reads
    its output (`flowcall.ended_execution`) instead of importing qmcp to run that code. Stops at the
    first of them that failed (the join runs the code, with the failure carried) and when the
    execution is not running under `lease` any more."""
    while True:
        await asyncio.sleep(poll_seconds)
        recorded = await db.step_statuses(lease.execution_id, keys)
        if recorded.get(StepStatus.FAILED):
            return
        if recorded.get(StepStatus.COMPLETED) == len(keys):
            break
    execution = await db.stored_execution(lease.execution_id)
    if (
        execution.status != ExecutionStatus.RUNNING
        or execution.owner_token != lease.token
        or execution.cancel_requested_at is not None  # the runner's heartbeat stops the flow
    ):
        return
    output = await _replayed_output(db, execution)
    if output is not None:  # the attempt stays the runner's: it ends it when Metaflow is done
        ending = Ending(ExecutionStatus.COMPLETED, output=output)
        await Attempt(db, execution, lease, releases=False).record(ending)


def _ended(output: dict[str, Any], usage: Usage) -> dict[str, Any]:
    """The artifacts the join sets from the step that completed the execution."""
    return {"output": output, "answer": output_text(output), "usage": _usage_artifact(usage)}


async def _replayed_output(db: Database, execution: Execution) -> dict[str, Any] | None:
    """The topology's output from the recorded calls alone (this step owns no call: nothing is paid or
    written), or None when it reaches a call not recorded yet or stops otherwise; the join that then
    runs the same code meets that again and records how the execution ends."""
    ctx = await _flow_context(db, execution, RunConfig.model_validate(execution.run_config), owned=())
    topology = Topology.model_validate(execution.topology_snapshot)
    implementation = TopologyRegistry.create(topology.topology_type, topology.config)
    try:
        return await _run_code(ctx, implementation, execution.input_data, execution.correlation_id)
    except (_Suspended, Exception):
        return None


async def _flow_context(
    db: Database, execution: Execution, config: RunConfig, **extra: Any
) -> _FlowStepContext:
    """The step context of a flow step: the execution's own agents and finished steps, its model
    override (taken when the run started, `_start_execution`), calls made one by one."""
    return step_context(
        db,
        execution,
        {slot: AgentType.model_validate(data) for slot, data in execution.agents_snapshot.items()},
        await db.steps.completed_steps(execution.id),
        config,
        scheduler=_FlowScheduler(),
        model_override=config.model_override,
        context_class=_FlowStepContext,
        **extra,
    )


def _replayed_failure(key: str, message: str) -> StepFailedError:
    """The failure an earlier flow step carried, worded exactly as the topology code saw it there."""
    failure = StepFailedError(key, ModelError(message))
    failure.args = (message,)
    return failure


class _FlowScheduler(Scheduler):
    """Sequential, like LocalRunner's, but lets every owned call of a `gather` run before suspending."""

    async def gather(self, aws: Sequence[Awaitable[T]]) -> list[T | StepFailedError]:
        results: list[T | StepFailedError] = []
        suspended: _Suspended | None = None
        for aw in aws:
            try:
                results.append(await aw)
            except StepFailedError as error:
                results.append(error)
            except _Suspended as stop:
                suspended = suspended or stop
        if suspended is not None:
            raise suspended
        return results


@dataclass(frozen=True)
class _Progress:
    output: dict[str, Any] | None
    outcomes: dict[str, StepResult | StepFailedError]
    run: str | None


async def _advance(
    execution_id: str,
    *,
    owned: Collection[str] | None,
    after: Sequence[Mapping[str, Any]],
    must_finish: bool,
) -> _Progress:
    """Run the topology's code as far as this flow step's calls take it (to its end if `must_finish`)."""
    run = _flow_run()
    async with Database(settings().database_url) as db:
        with storage_errors(db.url):
            stored = await db.stored_execution(execution_id)
            if stored.status == ExecutionStatus.COMPLETED:
                return await _replay_completed(db, stored, owned, run)
            attempt = await _attach(db, execution_id, run)
            permanent = _permanent_failures(await db.list_steps(stored.id)) if _retry_count() else {}
        execution, lease = attempt.execution, attempt.lease
        config = RunConfig.model_validate(execution.run_config)
        # A failure carried from this run replays as one; from the run being resumed, it is retried.
        failures = {r["key"]: r["error"] for r in after if r.get("error") and r.get("run") == run}
        retried = {r["key"] for r in after if r.get("error") and r.get("run") != run}
        topology = Topology.model_validate(execution.topology_snapshot)
        ctx = await _flow_context(
            db,
            execution,
            config,
            owned=None if owned is None else {*owned, *retried},
            failures=failures,
            permanent=permanent,
            lease=lease,
        )
        implementation = TopologyRegistry.create(topology.topology_type, topology.config)
        attempt.usage = ctx.totals
        finished = False
        try:
            output: dict[str, Any] | None = await attempt.wait(
                _run_code(ctx, implementation, execution.input_data, execution.correlation_id)
            )
        except asyncio.CancelledError:
            if lease.lost is not None:
                raise LeaseLostError(lease.lost) from None
            finished = await _stop(attempt, _cancelled(execution.id))
            raise _cancelled(execution.id) from None
        except _Suspended as stop:
            if must_finish:
                missing = RunError(
                    f"step {stop.key!r} of the topology is made by no step of this flow; "
                    "regenerate the flow with this version of qmcp"
                )
                finished = await _stop(attempt, missing)
                raise missing from None
            output = None
        except Exception as error:
            if _retry_count() >= metaflow_retries(config) or _retrying_cannot_help(error):
                finished = await _stop(attempt, error)  # else `@retry` runs the task again: still running
            raise
        finally:
            if not finished:
                await db.executions.count_usage(lease.execution_id)
    return _Progress(output, ctx.outcomes, run)


async def _run_code(
    ctx: StepContext, implementation: Any, input_data: Mapping[str, Any], correlation_id: str | None = None
) -> dict[str, Any]:
    with log_context(execution_id=str(ctx.execution_id), correlation_id=correlation_id):
        async with ctx.resources.exit_stack:
            output: dict[str, Any] = await implementation.run(ctx, dict(input_data))
            return output


async def _replay_completed(
    db: Database, execution: Execution, owned: Collection[str] | None, run: str | None
) -> _Progress:
    """A step of a Metaflow run that resumes a run whose execution is complete (`resume STEP`): its
    calls and the output come from the store, nothing is paid, and the execution is left as it is."""
    outcomes: dict[str, StepResult | StepFailedError] = {}
    for step in await db.list_steps(execution.id):
        if owned is not None and step.key not in owned:
            continue
        if step.status == StepStatus.COMPLETED:
            outcomes[step.key] = StepResult(
                key=step.key,
                slot=step.slot,
                agent_name=step.agent_name,
                text=step.response or "",
                data=(step.output or {}).get("data"),
                replayed=True,
                fallback=bool((step.output or {}).get("fallback")),
                usage=step.usage,
            )
        else:
            outcomes[step.key] = _replayed_failure(step.key, step.error or "failed")
    _tag_run(run, execution.id)
    return _Progress(execution.output_data, outcomes, run)


def _permanent_failures(steps: Sequence[ExecutionStep]) -> dict[str, str]:
    """The calls whose last attempt failed with a permanent model error, with its message."""
    prefix = f"{PermanentModelError.__name__}: "  # how a step row records its error's type
    return {
        step.key: step.error.removeprefix(prefix)
        for step in steps
        if step.status == StepStatus.FAILED and step.error and step.error.startswith(prefix)
    }


def _used(outcomes: Sequence[StepResult | StepFailedError | None]) -> Usage:
    return sum((o.usage for o in outcomes if isinstance(o, StepResult)), Usage())


def _usage_artifact(usage: Usage) -> dict[str, Any]:
    """Usage as a flow artifact: a plain dict, which Metaflow's client reads without qmcp installed."""
    return dataclasses.asdict(usage)


def _cancelled(execution_id: uuid.UUID) -> RunCancelledError:
    return RunCancelledError(
        f"execution {execution_id} was cancelled; resume it with: qmcp executions resume {execution_id}"
    )


def _step_result(
    key: str, agent: str, outcome: StepResult | StepFailedError | None, run: str | None
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "key": key,
        "agent": agent,
        "output": None,
        "data": None,
        "error": None,
        "skipped": outcome is None,
        "usage": _usage_artifact(_used([outcome])),
        "run": run,
    }
    if isinstance(outcome, StepResult):
        result |= {"output": outcome.text, "data": outcome.data}
    elif isinstance(outcome, StepFailedError):
        result["error"] = str(outcome)
    return result


async def _invoke_once(agent: AgentType, input_data: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A call outside any execution: the same agent step, recorded nowhere."""
    ctx = StepContext(
        execution_id=uuid.uuid4(),
        agents={"agent": agent},
        store=MemoryStepStore(),
        model_override=llm.run_override(None),
        rate_limits=llm.rate_limits(),
    )
    try:
        outcome: StepResult | StepFailedError = await ctx.invoke("agent", input_text(input_data), key=key)
    except StepFailedError as error:
        outcome = error
    return _step_result(key, agent.name, outcome, _flow_run())


# -- execution records ------------------------------------------------------------------------------


async def _start_execution(
    topology: Mapping[str, Any],
    agents: Mapping[str, Mapping[str, Any]],
    input_data: Mapping[str, Any],
    execution_id: str,
    run_config: Mapping[str, Any],
) -> tuple[str, int | None]:
    run = _flow_run()
    async with Database(settings().database_url) as db:
        with storage_errors(db.url):
            if not execution_id:  # a flow run started on its own: it creates and owns its execution
                given = RunConfig.model_validate(dict(run_config))
                config = given.model_copy(update={"model_override": llm.run_override(given.model_override)})
                team = prepare_team(dict(topology), dict(agents), dict(input_data), config.model_override)
                execution, lease = await start_new_execution(
                    db,
                    team,
                    config,
                    runner_type="metaflow",
                    runner_options={},
                    owner=_owner(run),
                    origin="metaflow",
                )
                assert lease is not None
                if run is not None:
                    await db.executions.note_external_run(lease, run)
                    _tag_run(run, execution.id)
                return str(execution.id), execution.topology_id
            execution = await db.get_execution(execution_id)
            if _definitions(execution.topology_snapshot, execution.agents_snapshot) != _definitions(
                topology, agents
            ):
                raise InvalidConfigError(
                    f"execution {execution.id} was made for another team than this flow's "
                    f"(topology {execution.topology_name!r}); regenerate the flow or start a new execution"
                )
            if input_data and dict(input_data) != execution.input_data:
                raise InvalidConfigError(
                    f"--input-json differs from the input of execution {execution.id}; omit it to use the stored one"
                )
            if execution.status == ExecutionStatus.COMPLETED:  # `resume start` of a finished run
                _tag_run(run, execution.id)
            else:
                await _attach(db, execution.id, run)
    return str(execution.id), execution.topology_id


def _owner(run: str | None) -> Owner:
    """Who a step acts for when no runner launched the flow: its Metaflow run, or this process."""
    if run is None:
        return Owner.of_process()
    return Owner.of_run(run, pid=os.getppid())  # a local task's parent is the Metaflow runtime


async def _attach(db: Database, execution_id: str | uuid.UUID, run: str | None) -> Attempt:
    """This step's share of the attempt at the execution: its lease, and whether the step may give it
    up when it ends the run.

    The runner that launched the flow holds the lease (its token is in `QMCP_EXECUTION_OWNER`):
    steps act for it and leave releasing to it. Otherwise the flow run owns the execution: its
    first step claims it (a new run, or a Metaflow resume of a run whose runtime is gone).
    """
    execution = await db.stored_execution(execution_id)
    if execution.status == ExecutionStatus.CANCELLED and (run is None or execution.external_run_id == run):
        raise _cancelled(execution.id)
    token = os.environ.get(OWNER_VARIABLE)
    if token:
        lease, releases = db.executions.attach(execution, token), False
    else:
        owner = _owner(run)
        mine = Owner.is_of_run(execution.owner_token, run) if run else execution.owner_token == owner.token
        if mine:
            assert execution.owner_token is not None
            lease = db.executions.attach(execution, execution.owner_token)
        else:
            execution, lease = await db.executions.claim(
                execution.id,
                owner,
                runner="metaflow",
                runner_options=execution.runner_options,
                run_config=execution.run_config,
            )
        releases = True
    attempt = Attempt(db, execution, lease, releases=releases)
    if execution.cancel_requested_at is not None:
        await _stop(attempt, _cancelled(execution.id))
        raise _cancelled(execution.id)
    if run is not None and execution.external_run_id != run:
        await db.executions.note_external_run(lease, run)
        _tag_run(run, execution.id)
    return attempt


async def _stop(attempt: Attempt, error: Exception) -> bool:
    """Record why a flow step stopped the execution, as the in-process runners do; whether it did."""
    return await attempt.record(Ending.of_error(error, attempt.db.url)) is not None


async def _save_execution(topology_id: int | None, output: dict[str, Any], execution_id: str | None) -> Usage:
    async with Database(settings().database_url) as db:
        with storage_errors(db.url):
            if execution_id is None:
                await _record_finished(db, topology_id, output, _flow_run())
                return Usage()
            return await _complete(db, topology_id, output, execution_id)


async def _complete(
    db: Database, topology_id: int | None, output: dict[str, Any], execution_id: str
) -> Usage:
    """Complete the execution with `output` (unless it is complete already); what it used in all."""
    run = _flow_run()
    stored = await db.stored_execution(execution_id)
    if stored.status == ExecutionStatus.COMPLETED:  # a resumed run of a finished one
        _tag_run(run, stored.id)
        return stored.usage
    attempt = await _attach(db, execution_id, run)
    execution = attempt.execution
    if topology_id is not None and execution.topology_id != topology_id:
        raise InvalidConfigError(f"execution {execution.id} does not belong to topology {topology_id}")
    if await attempt.record(Ending(ExecutionStatus.COMPLETED, output=output)) is None:
        if attempt.lease.lost is not None:
            raise LeaseLostError(attempt.lease.lost)
        stored = await db.stored_execution(execution.id)
        if stored.status != ExecutionStatus.COMPLETED:  # else the runner completed it meanwhile
            raise _cancelled(execution.id)
    return (await db.stored_execution(execution.id)).usage


async def _record_finished(
    db: Database, topology_id: int | None, output: dict[str, Any], run: str | None
) -> None:
    """`save_execution(topology_id, output)` without an execution, as a flow that made its agent calls
    one-off calls it: record a finished execution, from the start of its flow run (when known) to now."""
    async with db.sessions() as session:
        topology = await session.get(Topology, topology_id) if topology_id is not None else None
    if topology is None:
        raise InvalidConfigError(f"no stored topology has id {topology_id}; pass execution_id= instead")
    execution = Execution(
        topology_id=topology.id,
        topology_name=topology.name,
        topology_type=str(topology.topology_type),
        runner_type="metaflow",
        topology_snapshot=topology.definition(),
        external_run_id=run,
    )
    lease = await db.executions.create(execution, _owner(run), runner="metaflow", started=_run_started(run))
    assert lease is not None
    await db.executions.finish(lease, ExecutionStatus.COMPLETED, output=output)


def _run_started(run: str | None) -> datetime | None:
    """When Metaflow run `run` began, from Metaflow's metadata; None when it cannot say."""
    if run is None:
        return None
    try:
        from metaflow import Run, namespace

        namespace(None)
        created: datetime = Run(run).created_at
    except Exception:  # no metadata service or run record: the execution starts now
        return None
    return created.astimezone(UTC)  # Metaflow gives local time without a zone


# -- plumbing ---------------------------------------------------------------------------------------


def _definitions(
    topology: Mapping[str, Any], agents: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Topology and agent definitions as validated, so that omitted defaults compare equal."""
    return (
        Topology.model_validate(dict(topology)).definition(),
        {slot: AgentType.model_validate(dict(agent)).definition() for slot, agent in agents.items()},
    )


def _agent(agent_config: Mapping[str, Any]) -> AgentType:
    if "config" in agent_config or "name" in agent_config:
        return AgentType.model_validate(dict(agent_config))
    return AgentType.model_validate({"name": "agent", "config": dict(agent_config)})


@functools.cache
def _skip_final_collection() -> None:
    """In a Metaflow task, which is a process that ends with its step, freeze the heap at exit.

    The interpreter's last garbage collection then skips the modules a task has loaded (qmcp,
    SQLAlchemy, pydantic-ai): exiting took 0.37 s of every task, now 0.05 s. Only finalizers of
    objects left in reference cycles at exit are skipped, which Python never promises to run.
    """
    if _flow_run() is not None:
        atexit.register(gc.freeze)


def _flow_run() -> str | None:
    """`FlowName/run_id` of the Metaflow run this code is a step of, if any."""
    from metaflow import current

    return f"{current.flow_name}/{current.run_id}" if current.is_running_flow else None


def _origin_execution() -> str | None:
    """In a Metaflow `resume` (`resume start`): the execution the resumed run's `start` step made."""
    from metaflow import Run, current

    if not current.is_running_flow or not current.origin_run_id:
        return None
    start = Run(f"{current.flow_name}/{current.origin_run_id}", _namespace_check=False)["start"].task
    return str(start["execution_id"].data) if start is not None and "execution_id" in start else None


def _launched_for() -> str | None:
    """The execution `MetaflowRunner` launched this flow run for (`LAUNCH_VARIABLE`), if it did."""
    launch = os.environ.get(LAUNCH_VARIABLE, "").split()
    return launch[0] if len(launch) == 3 else None


def _retry_count() -> int:
    """Which retry of its Metaflow task this is (`@retry`): 0 for the first attempt, and outside a flow."""
    from metaflow import current

    return int(current.retry_count) if current.is_running_flow else 0


def _tag_run(run: str | None, execution_id: uuid.UUID) -> None:
    """Tag Metaflow run `run` with the execution it works on, so `Flow(NAME).runs(tag)` finds it.

    A run that `MetaflowRunner` launched for this execution was tagged when it was created (`--tag`)."""
    if run is None or _launched_for() == str(execution_id):
        return
    from metaflow import Run

    Run(run, _namespace_check=False).add_tag(EXECUTION_TAG.format(execution_id))


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a helper's coroutine from a (synchronous) Metaflow step, after importing the user's modules."""
    _skip_final_collection()
    try:
        import_task_plugins()
    except InvalidConfigError:
        coroutine.close()
        raise
    with continued_trace():  # TRACEPARENT from the process that launched the flow: its spans are our parents
        try:
            return asyncio.run(coroutine)
        except QmcpError as error:
            if _retrying_cannot_help(error) and _flow_run() is not None:
                end_task_without_retry(error)
            raise


def _retrying_cannot_help(error: BaseException) -> bool:
    """Errors another attempt of the task would meet again: a permanent model error (a refused key or
    request), the user's mistake, a spent budget, a cancel, a lost lease, a changed topology."""
    if isinstance(error, StepFailedError):
        return isinstance(error.cause, PermanentModelError)
    return isinstance(
        error,
        PermanentModelError
        | UserInputError
        | BudgetExceededError
        | RunCancelledError
        | LeaseLostError
        | NonDeterminismError,
    )
