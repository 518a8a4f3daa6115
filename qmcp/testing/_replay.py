"""Replay tests: today's topology code against a recorded run, with no model call (Temporal's `Replayer`).

`replay(ID_OR_FILE)` reads a recorded execution (from the database, or a fixture file), builds its
topology from the topology type registered *now* (a user's edited `@topology` class included) and
runs it over a `StepContext` whose steps all come from the recording (`ReplayCheck`): the first step
the code asks differently from the recording (a key the run did not record, another slot or agent,
another prompt) raises `NonDeterminismError` naming it; so do recorded steps the code never asks for
and an output other than the recorded one. Nothing is written and no model is called: the steps go
to an in-memory store, and no mixin hook runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agentframework.errors import InvalidConfigError, NonDeterminismError, UserInputError
from ..agentframework.models import AgentType, ExecutionStatus, Topology
from ..agentframework.store import Database, MemoryStepStore, storage_errors
from ..agentframework.topologies import ReplayCheck, StepContext, TopologyRegistry
from ._recording import Recording

__all__ = ["ReplayResult", "load_recording", "replay", "replay_async"]

Source = str | uuid.UUID | os.PathLike[str]
"""An execution id (or enough of its start), or the path of a fixture file."""


@dataclass(frozen=True)
class ReplayResult:
    """A replay that matched its recording step for step: the steps replayed and the output."""

    source: str
    topology: str
    steps: int
    output: dict[str, Any]

    def __str__(self) -> str:
        return f"replayed {self.steps} steps: identical"


def replay(
    source: Source,
    *,
    db_url: str | None = None,
    topology: Topology | Mapping[str, Any] | None = None,
    agents: Mapping[str, AgentType | Mapping[str, Any]] | None = None,
) -> ReplayResult:
    """`replay_async` for plain (synchronous) tests and scripts; not from inside an event loop."""
    return asyncio.run(replay_async(source, db_url=db_url, topology=topology, agents=agents))


async def replay_async(
    source: Source,
    *,
    db_url: str | None = None,
    topology: Topology | Mapping[str, Any] | None = None,
    agents: Mapping[str, AgentType | Mapping[str, Any]] | None = None,
) -> ReplayResult:
    """Run the current code of a recorded execution's topology against its recorded steps.

    `source`: an execution id in `db_url` (default `QMCP_DATABASE_URL`), or a fixture file
    (`export_fixture`). `topology` and `agents` replace the recorded definitions (a changed
    config or team); by default the recorded snapshots run, on today's topology type.
    Returns the matching replay; raises `NonDeterminismError` at the first difference.
    """
    recording = await load_recording(source, db_url=db_url)
    if recording.status != ExecutionStatus.COMPLETED:
        raise UserInputError(
            f"{recording.source} is {recording.status}: a replay checks a completed run; resume it "
            "first, or replay another"
        )
    definition = _topology(recording, topology)
    team = _agents(recording, agents)
    implementation = TopologyRegistry.create(definition.topology_type, definition.config)
    implementation.validate_team(team)
    steps = recording.completed()
    check = ReplayCheck(steps)
    ctx = StepContext(
        execution_id=recording.execution_id,
        agents=team,
        store=MemoryStepStore(),
        completed=dict(steps),
        teams=recording.teams,
        model_override=recording.run_config.get("model_override"),
        replay_check=check,
    )
    async with ctx.resources.exit_stack:
        output = await implementation.run(ctx, dict(recording.input))
    unasked = check.unasked()
    if unasked:
        shown = ", ".join(unasked[:5]) + (f" and {len(unasked) - 5} more" if len(unasked) > 5 else "")
        raise NonDeterminismError(
            f"{recording.source}: the code never asked for {len(unasked)} recorded step(s): {shown}"
        )
    now, was = _as_json(output), _as_json(recording.output)
    if now != was:
        raise NonDeterminismError(
            f"{recording.source}: every step replayed as recorded, but the output differs: "
            f"{_output_difference(was, now)}"
        )
    return ReplayResult(recording.source, recording.topology_name, len(check.asked), now)


async def load_recording(source: Source, *, db_url: str | None = None) -> Recording:
    """The recording `source` names: a fixture file (a path, or a string naming a file or ending in
    `.json`), else an execution id in the database."""
    path = _fixture_path(source)
    if path is not None:
        return await asyncio.to_thread(Recording.from_file, path)
    async with Database(db_url, read_only=True) as db:
        with storage_errors(db.url):
            return await Recording.from_database(db, str(source))


def _fixture_path(source: Source) -> str | None:
    if isinstance(source, os.PathLike):
        return os.fspath(source)
    if isinstance(source, str) and (source.endswith(".json") or Path(source).is_file()):
        return source
    return None


def _topology(recording: Recording, given: Topology | Mapping[str, Any] | None) -> Topology:
    if given is None:
        return Topology.model_validate(recording.topology)
    if isinstance(given, Topology):
        return given
    try:
        return Topology.model_validate(dict(given))
    except ValueError as error:
        raise InvalidConfigError(f"topology: {error}") from None


def _agents(
    recording: Recording, given: Mapping[str, AgentType | Mapping[str, Any]] | None
) -> dict[str, AgentType]:
    definitions = recording.agents if given is None else given
    return {
        slot: agent if isinstance(agent, AgentType) else AgentType.model_validate(dict(agent))
        for slot, agent in definitions.items()
    }


def _as_json(value: Any) -> Any:
    """The value as stored (the database keeps an output as JSON): tuples are lists, and so on."""
    return json.loads(json.dumps(value, default=str))


def _output_difference(was: Any, now: Any) -> str:
    if isinstance(was, dict) and isinstance(now, dict):
        changed = sorted(k for k in {*was, *now} if was.get(k, _MISSING) != now.get(k, _MISSING))
        return f"field(s) {', '.join(changed)} changed"
    return "recorded " + json.dumps(was)[:80] + ", now " + json.dumps(now)[:80]


_MISSING = object()
