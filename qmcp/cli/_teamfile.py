"""Declarative team files for `qmcp apply`: parse YAML/JSON, validate all of it, then write the changes.

A file declares agents and topologies::

    agents:
      - {name: planner, role: planner, description: ..., config: {model: test, max_tokens: 128}}
    topologies:
      - {name: plan_review, type: pipeline, config: {}, agents: {plan: planner, review: reviewer}}

Every problem is reported with the path of the offending field (`team.yaml: topologies[0].config.
failure_threshold: ...`), and nothing is written unless the whole file is valid. Applying the same
file twice changes nothing, like `kubectl apply`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from qmcp.agentframework.errors import InvalidConfigError, UserInputError
from qmcp.agentframework.llm import check_model_string
from qmcp.agentframework.mixins import MixinRegistry
from qmcp.agentframework.models import (
    AgentConfig,
    AgentRole,
    AgentType,
    Topology,
    check_name,
    config_class_for,
)
from qmcp.agentframework.registry import TOPOLOGIES
from qmcp.agentframework.runners import executable_items
from qmcp.agentframework.store import Database
from qmcp.agentframework.topologies import TopologyRegistry

from ._documents import parse_document

__all__ = [
    "Change",
    "Plan",
    "TeamFile",
    "apply_team",
    "load_team",
    "plan_team",
    "validate_team",
    "write_team",
]

Action = Literal["created", "updated", "unchanged"]


def _name_of(what: str) -> AfterValidator:
    return AfterValidator(lambda value: check_name(value, what))


class _AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, _name_of("agent")] = Field(
        description="Lowercase letters, digits, '_' or '-'; unique among agents."
    )
    role: AgentRole = Field(
        default=AgentRole.GENERALIST,
        description="Shapes the default system prompt and the test model's replies.",
    )
    description: str = Field(
        default="", description="What the agent does (shown in lists; used for routing)."
    )
    config: AgentConfig = Field(
        default_factory=AgentConfig, description="How it calls its model: `model` and the rest, below."
    )


class _TopologySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, _name_of("topology")]
    type: Annotated[str, AfterValidator(TOPOLOGIES.check)] = Field(
        validation_alias=AliasChoices("type", "topology_type")
    )
    description: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    agents: dict[Annotated[str, _name_of("slot")], str] = Field(default_factory=dict)


_Spec = TypeVar("_Spec", _AgentSpec, _TopologySpec)


@dataclass(frozen=True)
class TeamFile:
    """A validated file: agent definitions, and topologies with their slot → agent name maps."""

    label: str
    agents: list[AgentType]
    topologies: list[tuple[Topology, dict[str, str]]]
    notes: list[str] = field(default_factory=list)
    """What may be wrong but is kept (a model name its provider does not list)."""


@dataclass(frozen=True)
class Change:
    kind: Literal["agent", "topology"]
    name: str
    action: Action


def _path(loc: Sequence[str | int]) -> str:
    """`("topologies", 0, "config", "x")` → `topologies[0].config.x`."""
    text = ""
    for part in loc:
        if part == "[key]":  # pydantic marks errors in a dict key this way; the key itself names it
            continue
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _lines(label: str, error: ValidationError, prefix: Sequence[str | int] = ()) -> list[str]:
    lines = []
    for item in error.errors(include_url=False):
        location = _path([*prefix, *item["loc"]])
        message = str(item["msg"]).removeprefix("Value error, ")
        field = item["loc"][-1] if len(item["loc"]) == 1 else None
        # the first guess of many: `model:` on the agent itself
        if (
            item["type"] == "extra_forbidden"
            and prefix[:1] == ("agents",)
            and field in AgentConfig.model_fields
        ):
            message += f"; {field} belongs under the agent's config: config: {{{field}: ...}}"
        lines.append(f"{label}: {location}: {message}" if location else f"{label}: {message}")
    return lines


def load_team(label: str, text: str, *, is_json: bool = False) -> TeamFile:
    """Parse and validate a team file; raise one `InvalidConfigError` listing every problem, by path."""
    return validate_team(label, parse_document(label, text, is_json=is_json))


def validate_team(label: str, document: Any) -> TeamFile:
    """Validate a parsed team file (`parse_document`); one `InvalidConfigError` lists every problem."""
    if not isinstance(document, dict):
        raise InvalidConfigError(f"{label}: expected a mapping with 'agents' and/or 'topologies' lists")
    errors = [
        f"{label}: {key}: unknown section; a team file has 'agents' and 'topologies'"
        for key in document
        if key not in _SECTIONS
    ]
    agent_specs = _section(label, document, "agents", _AgentSpec, errors)
    topology_specs = _section(label, document, "topologies", _TopologySpec, errors)
    errors += _duplicates(label, "agents", [(i, a.name) for i, a in agent_specs])
    errors += _duplicates(label, "topologies", [(i, t.name) for i, t in topology_specs])
    agents = []
    notes: list[str] = []
    for index, a in agent_specs:
        try:
            agents.append(
                AgentType.model_validate(
                    {"name": a.name, "role": a.role, "description": a.description, "config": a.config}
                )
            )
        except ValidationError as error:  # what only the whole definition can check (NUL characters)
            errors += _lines(label, error, ("agents", index))
        errors += [
            f"{label}: agents[{index}].config.mixins.{line}"
            for line in MixinRegistry.option_errors(a.config.mixins)
        ]
        if a.config.model is not None:
            try:
                note = check_model_string(a.config.model)
            except UserInputError as error:
                errors.append(f"{label}: agents[{index}].config.model: {error}")
            else:
                notes += [f"note: {label}: agents[{index}].config.model: {note}"] if note else []
    topologies = []
    for index, t in topology_specs:
        try:
            config = config_class_for(t.type).model_validate(t.config)
        except ValidationError as error:
            errors += _lines(label, error, ("topologies", index, "config"))
            continue
        try:
            topology = Topology.model_validate(
                {"name": t.name, "description": t.description, "topology_type": t.type, "config": config}
            )
        except ValidationError as error:
            errors += _lines(label, error, ("topologies", index))
            continue
        topologies.append((topology, dict(t.agents)))
    if errors:
        raise InvalidConfigError("\n".join(errors))
    return TeamFile(label, agents, topologies, notes)


_SECTIONS = ("agents", "topologies")


def _section(
    label: str, document: dict[str, Any], name: str, spec: type[_Spec], errors: list[str]
) -> list[tuple[int, _Spec]]:
    """The valid entries of one section, by index; the invalid ones add their errors."""
    entries = document.get(name) or []
    if not isinstance(entries, list):
        errors.append(f"{label}: {name}: expected a list")
        return []
    valid = []
    for index, entry in enumerate(entries):
        try:
            valid.append((index, spec.model_validate(entry)))
        except ValidationError as error:
            errors += _lines(label, error, (name, index))
    return valid


def _duplicates(label: str, field: str, names: list[tuple[int, str]]) -> list[str]:
    first: dict[str, int] = {}
    errors = []
    for index, name in names:
        if name in first:
            errors.append(
                f"{label}: {field}[{index}].name: {name!r} is declared twice (also {field}[{first[name]}])"
            )
        first.setdefault(name, index)
    return errors


@dataclass(frozen=True)
class Plan:
    """A team file checked against the database: what `write_team` will store."""

    team: TeamFile
    teams: list[tuple[Topology, dict[str, AgentType]]]
    stored_agents: dict[str, AgentType]
    stored_topologies: set[str]


async def plan_team(db: Database, team: TeamFile) -> Plan:
    """Check every topology's agents and slots against the file and the database; write nothing."""
    stored_agents = {agent.name: agent for agent in await db.list_agents()}
    available = stored_agents | {agent.name: agent for agent in team.agents}
    stored_topologies = {topology.name for topology, _ in await db.list_topologies()}
    errors: list[str] = []
    teams: list[tuple[Topology, dict[str, AgentType]]] = []
    for index, agent in enumerate(team.agents):
        try:
            executable_items(agent)  # validates the options of mixins that name code
        except UserInputError as error:
            errors.append(f"{team.label}: agents[{index}].config: {error}")
    for index, (topology, slots) in enumerate(team.topologies):
        where = f"{team.label}: topologies[{index}]"
        unknown = [(slot, name) for slot, name in slots.items() if name not in available]
        errors += [
            f"{where}.agents.{slot}: agent {name!r} is neither in this file nor in the database"
            for slot, name in unknown
        ]
        if unknown:
            continue
        agents = {slot: available[name] for slot, name in slots.items()}
        try:
            implementation = TopologyRegistry.create(topology.topology_type, topology.config)
        except InvalidConfigError as error:
            errors.append(f"{where}.type: {error}")
            continue
        try:
            implementation.validate_team(agents)
        except UserInputError as error:
            errors.append(f"{where}.agents: {error}")
            continue
        teams.append((topology, agents))
    if errors:
        raise InvalidConfigError("\n".join(errors))
    return Plan(team, teams, stored_agents, stored_topologies)


async def write_team(db: Database, plan: Plan) -> list[Change]:
    """Store what changed in a planned file; returns what happened to each of its objects."""
    changes = []
    for agent in plan.team.agents:
        stored = plan.stored_agents.get(agent.name)
        action: Action = (
            "created"
            if stored is None
            else "unchanged"
            if stored.definition() == agent.definition()
            else "updated"
        )
        if action != "unchanged":
            await db.save_agent(agent)
        changes.append(Change("agent", agent.name, action))
    for topology, agents in plan.teams:
        action = await _topology_action(db, topology, agents, topology.name in plan.stored_topologies)
        if action != "unchanged":
            await db.save_team(topology, agents)
        changes.append(Change("topology", topology.name, action))
    return changes


async def apply_team(db: Database, team: TeamFile) -> list[Change]:
    """Check the file against the database, then write what changed (`plan_team` + `write_team`)."""
    return await write_team(db, await plan_team(db, team))


async def _topology_action(
    db: Database, topology: Topology, agents: dict[str, AgentType], exists: bool
) -> Action:
    if not exists:
        return "created"
    stored, stored_agents = await db.get_topology(topology.name)
    same = stored.definition() == topology.definition() and [
        (slot, agent.name) for slot, agent in stored_agents.items()
    ] == [(slot, agent.name) for slot, agent in agents.items()]
    return "unchanged" if same else "updated"
