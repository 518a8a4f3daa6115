"""Starting a fork: a new execution of a recorded one's team from one of its steps on.

The fork runs the parent's topology snapshot (its sub-teams' too) on the parent's input, unless
changed: another model override, another agent in some slots, another input. The parent's steps
that started before the fork step are copied into it as inherited (`store.fork_steps`), with the
human edits asked for, in the same transaction as its execution row; they replay at no cost, and
everything from the fork step on runs again. The new execution records its parent and fork step.

A changed input does not invalidate the inherited steps: they replay as recorded (a fork reuses what
its parent paid for; fork earlier to run them on the new input).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidConfigError, did_you_mean
from ..models import AgentType, Execution
from ..store import Database, Lease, Owner, fork_steps
from ._config import PROCESS_FIELDS, RUN_OPTIONS, RunConfig
from ._team import prepare_team
from ._trust import require_trusted, trust_given

__all__ = ["start_fork"]


async def start_fork(
    db: Database,
    execution_id: uuid.UUID | str,
    *,
    at: str,
    config: RunConfig,
    runner_type: str,
    runner_options: Mapping[str, Any],
    owner: Owner | None,
    origin: str,
    model: str | None = None,
    agents: Mapping[str, str | AgentType] | None = None,
    input_data: Mapping[str, Any] | None = None,
    set_output: Mapping[str, str] | None = None,
) -> tuple[Execution, Lease | None]:
    """Create the fork of `execution_id` (an id or the start of one) at step `at`, claimed by `owner`
    (without one, `pending`: a queued run).

    The run options are the parent's, those set explicitly on `config` winning, and `model` (when
    given) as the model override. `agents` puts another agent in a slot: a stored agent by name (it
    must be trusted) or an `AgentType` handed over by the program (trusted as given, as `run` does).
    Every check runs before anything is written; one transaction writes the fork and its steps.
    """
    parent = await db.find_execution(str(execution_id))
    stored = RunConfig.model_validate(
        {k: v for k, v in parent.run_config.items() if k in RunConfig.model_fields}
    )
    explicit = config.model_fields_set & RUN_OPTIONS
    run_config = stored.model_copy(
        update={name: getattr(config, name) for name in explicit | PROCESS_FIELDS}
        | {"correlation_id": config.correlation_id or uuid.uuid4().hex}
        | ({"model_override": model} if model else {})
    )
    team_agents = await _agents(db, parent, agents or {})
    given = {slot: agent for slot, agent in (agents or {}).items() if isinstance(agent, AgentType)}
    team = prepare_team(
        parent.topology_snapshot,
        team_agents,
        parent.input_data if input_data is None else input_data,
        run_config.model_override,
    )
    fork = Execution(
        topology_id=parent.topology_id,
        topology_name=parent.topology_name,
        topology_type=parent.topology_type,
        runner_type=runner_type,
        correlation_id=run_config.correlation_id,
        input_data=team.input_data,
        topology_snapshot=parent.topology_snapshot,
        agents_snapshot={slot: agent.definition() for slot, agent in team.agents.items()},
        teams_snapshot=parent.teams_snapshot,
        run_config=run_config.model_dump(mode="json", exclude=set(PROCESS_FIELDS)),
        runner_options=dict(runner_options),
        origin=origin,
        history=[],
        parent_id=parent.id,
        fork_key=at,
    )
    steps = fork_steps(await db.list_steps(parent.id), at, fork.id, set_output=set_output)
    if given:
        await trust_given(db, {slot: team.agents[slot] for slot in given}, run_config.model_override)
    await _require_trusted(db, parent, team.agents, run_config.model_override)
    lease = await db.executions.create(fork, owner, runner=runner_type, steps=steps)
    return fork, lease


async def _agents(
    db: Database, parent: Execution, swaps: Mapping[str, str | AgentType]
) -> dict[str, AgentType]:
    """The fork's agent in each slot: the parent's, or the one `swaps` names for it."""
    agents = {slot: AgentType.model_validate(data) for slot, data in parent.agents_snapshot.items()}
    for slot, agent in swaps.items():
        if slot not in agents:
            raise InvalidConfigError(
                f"agents: execution {parent.id} has no slot {slot!r}; "
                f"{did_you_mean(slot, agents)}slots are: {', '.join(agents) or 'none'}"
            )
        agents[slot] = agent if isinstance(agent, AgentType) else await db.get_agent(agent)
    return agents


async def _require_trusted(
    db: Database, parent: Execution, agents: Mapping[str, AgentType], override: str | None
) -> None:
    """Every agent the fork runs must be trusted as the fork's model override makes it: its team's
    (stored ones as stored) and its compound sub-teams' (as the parent's snapshot holds them)."""
    await require_trusted(db, agents, topology=parent.topology_name, override=override)
    for name, team in parent.teams_snapshot.items():
        members = {slot: AgentType.model_validate(data) for slot, data in team.get("agents", {}).items()}
        await require_trusted(db, members, topology=name, within=parent.topology_name, override=override)
