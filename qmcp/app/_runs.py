"""Run operations: start a run of a stored topology, queue a resume, cancel, answer a human request.

Every door starts runs here, so the caller policy, the trust gate and the team checks are the same
whether the run comes from the CLI, the HTTP API, the console or MCP. Where the run then executes
is the door's business: the CLI runs it in its own process, the server queues it for its workers.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..agentframework.errors import ExecutionBusyError, UserInputError
from ..agentframework.models import (
    AgentType,
    Execution,
    ExecutionStatus,
    HumanRequest,
    HumanResponse,
    Topology,
)
from ..agentframework.runners import (
    BaseRunner,
    RunnerRegistry,
    RunResult,
    Team,
    prepare_team,
    require_trusted,
    start_execution,
)
from ..agentframework.store import Database, Lease, Owner
from ._caller import Caller, CallerPolicy, checked_run_options

__all__ = ["RunHandle", "RunRequest", "TeamCache", "answer_request", "queue_resume", "start_run"]


@dataclass(frozen=True)
class RunRequest:
    """A run of a stored topology, as any door receives it."""

    topology: str
    input: Mapping[str, Any] = field(default_factory=dict)
    runner: str = "local"
    config: Mapping[str, Any] = field(default_factory=dict)
    """`RunConfig` fields and the runner's own options (async: max_concurrent; metaflow: output_dir, environment)."""


@dataclass
class RunHandle:
    """A started run: its execution exists (with its id) before any step runs."""

    execution: Execution
    runner: BaseRunner
    lease: Lease | None
    """This process's claim on the execution; None when it waits `pending` for a worker."""

    @property
    def execution_id(self) -> uuid.UUID:
        return self.execution.id

    async def result(self, db: Database) -> RunResult:
        """Run it here to the end (a run started claimed by this process); never raises for a failed run."""
        if self.lease is None:
            raise UserInputError(
                f"execution {self.execution.id} is queued for a worker; it does not run here"
            )
        return await self.runner.run_started(db, self.execution, self.lease)


@dataclass
class _Stored:
    """A stored topology and its agents as read, and the team checked from them per model override."""

    topology: Topology
    agents: dict[str, AgentType]
    teams: dict[str | None, Team] = field(default_factory=dict)


class TeamCache:
    """Stored teams as a run start reads and checks them (`get_topology`, `prepare_team`: about 2 ms a
    start), kept by the stored rows they came from (`Database.topology_fingerprint`, one query), so a
    server starting the same topology again pays only that query. A row changed by any process
    (an agent's config, a slot) is another key. Trust, the caller policy and the input are checked at
    every start all the same. Owned by a server's run manager; `clear` drops it all."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._stored: OrderedDict[tuple[str, str], _Stored] = OrderedDict()

    async def stored(self, db: Database, name: str) -> _Stored:
        """Topology `name` and its agents as stored now (`NotFoundError` when it is not)."""
        rows = await db.topology_fingerprint(name)
        key = (db.url, rows or "")
        cached = self._stored.get(key) if rows is not None else None
        if cached is not None:
            self._stored.move_to_end(key)
            return cached
        read = _Stored(*await db.get_topology(name))
        if rows is not None and await db.topology_fingerprint(name) == rows:  # unchanged while read
            self._stored[key] = read
            if len(self._stored) > self.size:
                self._stored.popitem(last=False)
        return read

    def clear(self) -> None:
        self._stored.clear()


_OVERRIDES_KEPT = 8
"""Checked teams kept per stored team, one per model override (clients may choose theirs)."""


def _team(stored: _Stored, input_data: Any, override: str | None) -> Team:
    """`prepare_team` of the stored team with `input_data`, its input-free part checked once per override."""
    checked = stored.teams.get(override)
    if checked is None:
        checked = prepare_team(stored.topology, stored.agents, {}, override)
        if len(stored.teams) < _OVERRIDES_KEPT:
            stored.teams[override] = checked
    return checked.with_input(input_data)


async def start_run(
    db: Database,
    request: RunRequest,
    caller: Caller,
    *,
    policy: CallerPolicy | None = None,
    owner: Owner | None = None,
    teams: TeamCache | None = None,
    **runner_kwargs: Any,
) -> RunHandle:
    """Check `request` against `caller`'s policy, the stored team and its trust, then create the
    execution: claimed by `owner`, or `pending` without one (a queue's run). Refusals raise before
    anything is written. `teams`: where the stored teams checked before are kept (a server's)."""
    options = checked_run_options(caller, policy or CallerPolicy(), request.runner, request.config)
    if teams is not None:
        stored = await teams.stored(db, request.topology)
    else:
        stored = _Stored(*await db.get_topology(request.topology))
    topology, agents = stored.topology, stored.agents
    await require_trusted(db, agents, topology=request.topology)
    runner = RunnerRegistry.create(
        options.runner, options.config, db_url=db.url, **options.runner_options, **runner_kwargs
    )
    override = runner.model_override  # reads the settings: once
    team = _team(stored, request.input, override)
    execution, lease = await start_execution(
        db,
        team,
        options.config.model_copy(
            update={
                "model_override": override,
                "correlation_id": options.config.correlation_id or uuid.uuid4().hex,
            }
        ),
        runner_type=options.runner,
        runner_options=runner.options(),
        owner=owner,
        origin=str(caller.door),
        stored=topology,
    )
    return RunHandle(execution, runner, lease)


async def queue_resume(db: Database, execution_id: str | uuid.UUID, caller: Caller) -> Execution:
    """Queue an unfinished execution to continue (`pending`, owned by nobody, until a worker claims
    it). A completed one is returned as it is; one a live process runs is refused naming it."""
    execution = await db.get_execution(execution_id)
    if execution.status == ExecutionStatus.COMPLETED:
        return execution
    if execution.status == ExecutionStatus.RUNNING:
        raise ExecutionBusyError(
            f"execution {execution.id} is running in pid {execution.owner_pid} on {execution.owner_host}"
        )
    return await db.executions.queue(execution.id)


async def answer_request(
    db: Database,
    request_id: str,
    response: str,
    caller: Caller,
    *,
    responded_by: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[HumanRequest, HumanResponse]:
    """Answer a human request exactly once (a second answer is refused, naming the first)."""
    if not request_id:
        raise UserInputError("request_id: give the id of the human request to answer")
    return await db.answer_human_request(
        request_id, response, responded_by=responded_by, metadata=dict(metadata or {})
    )
