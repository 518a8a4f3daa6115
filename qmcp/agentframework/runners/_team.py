"""Checking what `run()` is given before anything is written: agents, topology, input, models."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from .. import llm
from ..errors import InvalidConfigError, MissingSlotError, UserInputError
from ..mixins import MixinRegistry
from ..models import (
    AgentType,
    Topology,
    TopologyType,
    check_json,
    check_name,
    describe_validation_error,
    nul_field,
    nul_message,
)
from ..store import Database
from ..topologies import BaseTopology, TopologyRegistry, referenced_topologies
from ._trust import executable_items, require_trusted

__all__ = ["Team", "collect_teams", "prepare_team"]


@dataclass(frozen=True)
class Team:
    topology: Topology
    agents: dict[str, AgentType]
    implementation: BaseTopology
    input_data: dict[str, Any]

    def with_input(self, input_data: Any) -> Team:
        """This checked team with another input, checked as `prepare_team` checks it."""
        return replace(self, input_data=_check_json(input_data))


def _check_slot(slot: Any) -> None:
    try:
        check_name(slot, "slot")
    except ValueError as error:
        raise InvalidConfigError(str(error)) from None


def _agent(slot: str, agent: Any) -> AgentType:
    try:
        if isinstance(agent, AgentType):
            # Table models skip validation in __init__, so read the raw fields and validate them here.
            data = {
                "name": agent.name,
                "description": agent.description,
                "role": agent.role,
                "config": agent.config,
            }
        elif isinstance(agent, Mapping):
            data = dict(agent)
        else:
            raise InvalidConfigError(f"slot {slot!r}: expected an AgentType, got {type(agent).__name__}")
        return AgentType.model_validate(data)
    except ValidationError as error:
        raise InvalidConfigError(f"agent in slot {slot!r}: {describe_validation_error(error)}") from None


def _agents(agents: Mapping[str, Any]) -> tuple[dict[str, AgentType], dict[str, AgentType]]:
    """Each slot's agent, validated, and the distinct agents by name.

    One agent object filling many slots is validated once.
    """
    validated: dict[int, AgentType] = {}
    checked: dict[str, AgentType] = {}
    for slot, agent in agents.items():
        _check_slot(slot)
        if id(agent) not in validated:
            validated[id(agent)] = _agent(slot, agent)
        checked[slot] = validated[id(agent)]
    by_name: dict[str, AgentType] = {}
    named: set[int] = set()  # each agent object once (a table model's name is read through SQLAlchemy)
    for slot, agent in checked.items():
        if id(agent) in named:
            continue
        named.add(id(agent))
        other = by_name.setdefault(agent.name, agent)
        if other is not agent and other.definition() != agent.definition():
            raise InvalidConfigError(
                f"two different agents are named {agent.name!r} (slot {slot!r}); rename one"
            )
    return checked, by_name


def _topology(topology: Any) -> Topology:
    try:
        if isinstance(topology, Topology):
            data = {
                "name": topology.name,
                "description": topology.description,
                "topology_type": topology.topology_type,
                "config": topology.config,
            }
        elif isinstance(topology, Mapping):
            data = dict(topology)
        else:
            raise InvalidConfigError(f"expected a Topology, got {type(topology).__name__}")
        return Topology.model_validate(data)
    except ValidationError as error:
        raise InvalidConfigError(f"topology: {describe_validation_error(error)}") from None


def _check_json(input_data: Any) -> dict[str, Any]:
    if not isinstance(input_data, Mapping):
        raise UserInputError(f"input_data must be a JSON object (a dict), got {type(input_data).__name__}")
    check_json(input_data, "input_data")
    encoded = json.dumps(input_data)
    if "\\u0000" in encoded:  # JSON writes NUL so: only then look for the field that holds it
        field = nul_field(input_data, "input_data")
        if field is not None:
            raise UserInputError(nul_message(field))
    decoded: dict[str, Any] = json.loads(encoded)
    return decoded


def prepare_team(
    topology: Any, agents: Mapping[str, Any] | None, input_data: Any, model_override: str | None
) -> Team:
    """Validate everything a run needs; raise a `UserInputError` naming the first problem."""
    checked_topology = _topology(topology)
    if not agents and checked_topology.topology_type == TopologyType.COMPOUND:
        agents = {}
    elif not agents:
        raise MissingSlotError(
            f"topology {checked_topology.name!r} was given no agents; pass agents={{slot: AgentType}}"
        )
    if not isinstance(agents, Mapping):
        raise InvalidConfigError(
            f"agents must be a dict of slot name to AgentType, got {type(agents).__name__}"
        )
    checked_agents, by_name = _agents(agents)
    implementation = TopologyRegistry.create(checked_topology.topology_type, checked_topology.config)
    implementation.validate_team(checked_agents)
    for agent in by_name.values():
        config = agent.agent_config
        choice = llm.effective_model(config, model_override)
        model = choice.resolve(str(agent.role))
        capabilities = [str(c) for c in config.capabilities]
        MixinRegistry.resolve(capabilities)
        # offline models call tools (through pydantic-ai's tool loop); a provider's profile says
        if "tool_use" in capabilities and not (
            isinstance(model, llm.OfflineModel) or model.profile.get("supports_tools", True)
        ):
            raise InvalidConfigError(
                f"agent {agent.name!r} uses tool_use, but model {choice.model!r} cannot call tools; "
                f"give it a model that can (--model test offline, ollama:llama3.2, openai:gpt-4.1, ...)"
            )
        executable_items(agent)  # validates the options of mixins that can name code
    return Team(checked_topology, checked_agents, implementation, _check_json(input_data))


async def collect_teams(db: Database, topology: Topology) -> dict[str, Any]:
    """Every stored team a compound topology can run, by name, checked; cycles are rejected.

    Returns `{name: {"topology": definition, "agents": {slot: definition}}}` — the snapshot the
    execution keeps so that resume runs the same teams. The sub-teams come from the database, so
    their agents must be trusted (`require_trusted`) before anything runs.
    """
    teams: dict[str, Any] = {}
    stored_teams: list[tuple[str, dict[str, AgentType], str]] = []

    async def visit(config: Any, path: list[str]) -> None:
        for name in referenced_topologies(config):
            if name in path:
                raise InvalidConfigError(f"compound topologies form a cycle: {' -> '.join([*path, name])}")
            stored, agents = await db.get_topology(name)
            if name not in teams:
                TopologyRegistry.create(stored.topology_type, stored.config).validate_team(agents)
                teams[name] = {
                    "topology": stored.definition(),
                    "agents": {slot: agent.definition() for slot, agent in agents.items()},
                }
                stored_teams.append((name, agents, path[-1]))
            if stored.topology_type == TopologyType.COMPOUND:
                await visit(stored.parsed_config, [*path, name])

    if topology.topology_type == TopologyType.COMPOUND:
        await visit(topology.parsed_config, [topology.name])
    for name, agents, within in stored_teams:
        await require_trusted(db, agents, topology=name, within=within)
    return teams
