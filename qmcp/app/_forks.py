"""Fork operations: fork a recorded execution from one of its steps, its lineage, and the comparison
of two executions step by step.

Every door forks here, so the caller policy is the same from the CLI, the HTTP API, the console and
MCP. A remote caller may choose the fork step, edit replies (each at most `MAX_EDITED_REPLY`
characters), put stored and trusted agents in slots and change the input; a model override goes
through the same rule as a run's (the operator's allowlist, never a `local:` file, the server's
pinned model), and the server's caps on timeouts and budgets apply to the fork as to a run.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..agentframework.errors import InvalidConfigError, PermissionDeniedError
from ..agentframework.models import Execution, ExecutionStep
from ..agentframework.runners import RunConfig, RunnerRegistry, start_fork
from ..agentframework.store import Database, Owner
from ._caller import Caller, CallerPolicy, _check_model, checked_run_options
from ._fork_shapes import ExecutionDiff, Lineage, StepDiff, StepSide, UsageOut
from ._runs import RunHandle
from ._shapes import ExecutionOut

__all__ = ["MAX_EDITED_REPLY", "ForkRequest", "diff_executions", "fork_execution", "lineage"]

MAX_EDITED_REPLY = 200_000
"""The longest reply a remote caller may set on a step of a fork, in characters."""

_MAX_ANCESTORS = 1000
"""Lineage stops after this many parents (a chain of forks is never that deep by hand)."""


@dataclass(frozen=True)
class ForkRequest:
    """A fork of a recorded execution from step `at` on, as any door receives it."""

    execution_id: str | uuid.UUID
    """The execution to fork (its id, or the start of one)."""
    at: str
    """The step key to run again from: the steps that started before it are inherited."""
    model: str | None = None
    """The fork's model override (None: the parent's)."""
    agents: Mapping[str, str] = field(default_factory=dict)
    """Slot → the name of a stored, trusted agent that fills it from the fork step on."""
    input: Mapping[str, Any] | None = None
    """A new input (None: the parent's); inherited steps still replay as recorded."""
    set_output: Mapping[str, str] = field(default_factory=dict)
    """Step key → the reply to put in its place (a human edit) before going on."""
    correlation_id: str | None = None
    """The fork's correlation id (None: a new one)."""


async def fork_execution(
    db: Database,
    request: ForkRequest,
    caller: Caller,
    *,
    policy: CallerPolicy | None = None,
    owner: Owner | None = None,
    **runner_kwargs: Any,
) -> RunHandle:
    """Check `request` against `caller`'s policy, then create the fork on the runner its parent ran
    on: claimed by `owner` (run it with `handle.result(db)`), or `pending` without one (a server's
    worker claims it). Refusals raise before anything is written.

    `runner_kwargs` go to the runner (`on_event`, `stream`; `config`: the run options of an operator's
    fork, those set explicitly overriding the parent's)."""
    policy = policy or CallerPolicy()
    parent = await db.find_execution(str(request.execution_id))
    if not request.at:
        raise InvalidConfigError("at: give the key of the step to fork from (qmcp executions steps ID)")
    correlation = {"correlation_id": request.correlation_id} if request.correlation_id else {}
    config: RunConfig = runner_kwargs.pop("config", None) or RunConfig()
    config = config.model_copy(update=correlation)
    runner_options: dict[str, Any] = {}
    if caller.remote:
        checked = checked_run_options(caller, policy, parent.runner_type, correlation)
        config, runner_options = checked.config, checked.runner_options
        if request.model is not None:
            _check_model(policy, request.model, "model")
        for key, text in request.set_output.items():
            if len(text) > MAX_EDITED_REPLY:
                raise PermissionDeniedError(
                    f"set_output.{key}: a client sets replies of at most {MAX_EDITED_REPLY:,} characters"
                )
    for slot, name in request.agents.items():
        if not isinstance(name, str) or not name:
            raise InvalidConfigError(f"agents.{slot}: give the name of a stored agent")
    runner = RunnerRegistry.for_execution(parent, config, db_url=db.url, **runner_options, **runner_kwargs)
    execution, lease = await start_fork(
        db,
        parent.id,
        at=request.at,
        config=config,
        runner_type=runner.runner_type,
        runner_options=runner.options(),
        owner=owner,
        origin=str(caller.door),
        model=request.model,
        agents=dict(request.agents),
        input_data=request.input,
        set_output=dict(request.set_output),
    )
    return RunHandle(execution, runner, lease)


async def lineage(db: Database, execution_id: str | uuid.UUID) -> Lineage:
    """The execution named by `execution_id` (an id or the start of one), the executions it was
    forked from (its parent first) and its forks."""
    execution = await db.find_execution(str(execution_id))
    ancestors: list[Execution] = []
    current = execution
    while current.parent_id is not None and len(ancestors) < _MAX_ANCESTORS:
        current = await db.get_execution(current.parent_id)
        ancestors.append(current)
    return Lineage(
        execution=ExecutionOut.of(execution),
        ancestors=[ExecutionOut.of(e) for e in ancestors],
        forks=[ExecutionOut.of(e) for e in await db.list_forks(execution.id)],
    )


async def diff_executions(db: Database, a: str | uuid.UUID, b: str | uuid.UUID) -> ExecutionDiff:
    """Executions `a` and `b` (ids or their starts) compared step by step: which steps each has,
    whose replies differ, what each step and each execution paid."""
    first, second = await db.find_execution(str(a)), await db.find_execution(str(b))
    steps_a = _in_order(await db.list_steps(first.id))
    steps_b = _in_order(await db.list_steps(second.id))
    by_key_b = {step.key: step for step in steps_b}
    keys = [step.key for step in steps_a]
    keys += [step.key for step in steps_b if step.key not in {*keys}]
    by_key_a = {step.key: step for step in steps_a}
    diffs = []
    for key in keys:
        side_a, side_b = _side(by_key_a.get(key)), _side(by_key_b.get(key))
        changed = side_a is None or side_b is None or side_a.response != side_b.response
        diffs.append(StepDiff(key=key, a=side_a, b=side_b, reply_changed=changed))
    return ExecutionDiff(
        a=ExecutionOut.of(first),
        b=ExecutionOut.of(second),
        steps=diffs,
        a_totals=_totals(first),
        b_totals=_totals(second),
        changed=sum(diff.reply_changed for diff in diffs),
    )


def _in_order(steps: Sequence[ExecutionStep]) -> list[ExecutionStep]:
    """Steps in the order they started (a fork's inherited steps first, as they ran in its parent)."""
    return sorted(steps, key=lambda step: (step.started_at, step.id or 0))


def _side(step: ExecutionStep | None) -> StepSide | None:
    if step is None:
        return None
    return StepSide(
        status=str(step.status),
        agent_name=step.agent_name,
        model=step.model,
        response=step.response,
        input_tokens=step.input_tokens,
        output_tokens=step.output_tokens,
        cost_usd=step.cost_usd,
        inherited=step.inherited,
        edited=bool((step.output or {}).get("edited")),
    )


def _totals(execution: Execution) -> UsageOut:
    usage = execution.usage
    return UsageOut(
        requests=usage.requests,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=usage.cost_usd,
    )
