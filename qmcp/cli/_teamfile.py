"""Declarative team files for `qmcp apply`: parse YAML/JSON and validate every field of it.

A file declares agents and topologies::

    agents:
      - {name: planner, role: planner, description: ..., config: {model: test, max_tokens: 128}}
    topologies:
      - {name: plan_review, type: pipeline, config: {}, agents: {plan: planner, review: reviewer}}

Every problem of a field is counted, with its path (`team.yaml: topologies[0].config.failure_threshold:
...`) and a "did you mean" for a misspelt field, role or type. The result, a `qmcp.app.TeamDocument`
holding the valid definitions and those problems, goes to `qmcp.app.apply_team`, which checks what a
definition needs beyond its fields (model strings, slots, the agents and topologies they name, in the
file or the database), reports every problem at once (the first 20, then how many more) and writes
nothing unless all of it is valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from qmcp.agentframework.errors import MAX_LISTED_PROBLEMS, InvalidConfigError, did_you_mean
from qmcp.agentframework.models import (
    AgentConfig,
    AgentRole,
    AgentType,
    Topology,
    check_name,
    config_class_for,
    json_problem,
)
from qmcp.agentframework.registry import TOPOLOGIES
from qmcp.app import TeamDocument

from ._documents import parse_document

__all__ = ["load_team", "validate_team"]


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


def _path(loc: Sequence[str | int]) -> str:
    """`("topologies", 0, "config", "x")` → `topologies[0].config.x`."""
    text = ""
    for part in loc:
        if part == "[key]":  # pydantic marks errors in a dict key this way; the key itself names it
            continue
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _fields(model: type[BaseModel]) -> list[str]:
    """The names a file may give `model`'s fields by."""
    names = []
    for name, info in model.model_fields.items():
        names.append(name)
        if isinstance(info.validation_alias, AliasChoices):
            names += [c for c in info.validation_alias.choices if isinstance(c, str)]
    return names


def _known_fields(loc: Sequence[str | int], config: type[BaseModel] | None) -> list[str]:
    """The fields allowed beside the unknown one at `loc` (its full path in the file)."""
    parent = tuple(part for part in loc[:-1] if not isinstance(part, int))
    return {
        ("agents",): _fields(_AgentSpec),
        ("agents", "config"): _fields(AgentConfig),
        ("topologies",): _fields(_TopologySpec),
        ("topologies", "config"): _fields(config) if config else [],
    }.get(parent, [])


def _lines(
    label: str,
    error: ValidationError,
    prefix: Sequence[str | int] = (),
    config: type[BaseModel] | None = None,
) -> list[str]:
    """One line per problem; `config` is the class a topology's `config` was validated against."""
    lines = []
    for item in error.errors(include_url=False):
        loc = [*prefix, *item["loc"]]
        location = _path(loc)
        message = str(item["msg"]).removeprefix("Value error, ")
        field = item["loc"][-1] if item["loc"] else None
        if item["type"] == "extra_forbidden":
            if prefix[:1] == ("agents",) and len(item["loc"]) == 1 and field in AgentConfig.model_fields:
                # the first guess of many: `model:` on the agent itself
                message += f"; {field} belongs under the agent's config: config: {{{field}: ...}}"
            elif hint := did_you_mean(field, _known_fields(loc, config)):
                message += f"; {hint.strip()}"
        elif item["type"] == "enum" and field == "role":
            hint = did_you_mean(str(item["input"]).lower(), [role.value for role in AgentRole])
            message += f"; {hint.strip()}" if hint else ""
        if location and message.startswith(f"{field}.") and ": " in message:  # it names its own path
            path, message = message.split(": ", 1)
            location = f"{location.removesuffix(f'.{field}')}.{path}"
        lines.append(f"{label}: {location}: {message}" if location else f"{label}: {message}")
    return lines


def load_team(label: str, text: str, *, is_json: bool = False) -> TeamDocument:
    """Parse and validate a team file; raise one `InvalidConfigError` listing its field problems, by path."""
    team = validate_team(label, parse_document(label, text, is_json=is_json))
    if team.problems:
        raise InvalidConfigError.listing(label, list(team.problems), team.more_problems)
    return team


def validate_team(label: str, document: Any) -> TeamDocument:
    """Validate a parsed team file (`parse_document`) field by field: its valid definitions, and the
    problems of the others for `apply_team` to report with its own."""
    if not isinstance(document, dict):
        raise InvalidConfigError(f"{label}: expected a mapping with 'agents' and/or 'topologies' lists")
    errors = _Problems(label)
    for key in document:
        if key not in _SECTIONS:
            hint = did_you_mean(key, _SECTIONS)
            errors.add(f"{label}: {key}: unknown section; {hint}a team file has 'agents' and 'topologies'")
    invalid: dict[str, set[str]] = {"agents": set(), "topologies": set()}
    agent_specs = _section(label, document, "agents", _AgentSpec, errors, invalid["agents"])
    topology_specs = _section(label, document, "topologies", _TopologySpec, errors, invalid["topologies"])
    errors.add_all(_duplicates(label, "agents", [(i, a.name) for i, a in agent_specs]))
    errors.add_all(_duplicates(label, "topologies", [(i, t.name) for i, t in topology_specs]))
    agents, agent_positions = [], []
    raw_agents = document.get("agents")
    for index, a in agent_specs:
        raw = raw_agents[index] if isinstance(raw_agents, list) else None
        config = raw.get("config") if isinstance(raw, dict) else None
        if (problem := json_problem(config)) is not None:  # NaN, depth: before a dump makes NaN null
            errors.add(f"{label}: agents[{index}].config: {problem}")
            invalid["agents"].add(a.name)
            continue
        try:
            agent = AgentType.model_validate(
                {"name": a.name, "role": a.role, "description": a.description, "config": a.config}
            )
        except ValidationError as error:  # what only the whole definition can check (NUL characters)
            errors.add_invalid(error, ("agents", index))
            invalid["agents"].add(a.name)
            continue
        agents.append(agent)
        agent_positions.append(index)
    topologies, topology_positions = [], []
    for index, t in topology_specs:
        config_class = config_class_for(t.type)
        try:
            config = config_class.model_validate(t.config)
        except ValidationError as error:
            errors.add_invalid(error, ("topologies", index, "config"), config_class)
            invalid["topologies"].add(t.name)
            continue
        try:
            topology = Topology.model_validate(
                {"name": t.name, "description": t.description, "topology_type": t.type, "config": config}
            )
        except ValidationError as error:
            errors.add_invalid(error, ("topologies", index))
            invalid["topologies"].add(t.name)
            continue
        topologies.append((topology, dict(t.agents)))
        topology_positions.append(index)
    return TeamDocument(
        label,
        agents,
        topologies,
        tuple(errors.lines),
        errors.more,
        frozenset(invalid["agents"]),
        frozenset(invalid["topologies"]),
        tuple(agent_positions),
        tuple(topology_positions),
        validated=True,
    )


_SECTIONS = ("agents", "topologies")
MAX_ENTRIES = 2_000
"""The most agents, or topologies, one file declares: validating one costs about 0.1 ms, so a file
within the value bound could otherwise hold 66,000 of them and take seconds to refuse."""


class _Problems:
    """A file's problems: the first `MAX_LISTED_PROBLEMS` as lines, the rest only counted.

    Formatting each of 10,000 problems would cost more than validating them.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.lines: list[str] = []
        self.more = 0

    def __bool__(self) -> bool:
        return bool(self.lines)

    def add(self, line: str) -> None:
        self.add_all([line])

    def add_all(self, lines: list[str]) -> None:
        room = MAX_LISTED_PROBLEMS - len(self.lines)
        self.lines += lines[:room]
        self.more += max(0, len(lines) - room)

    def add_invalid(
        self, error: ValidationError, prefix: Sequence[str | int], config: type[BaseModel] | None = None
    ) -> None:
        if len(self.lines) < MAX_LISTED_PROBLEMS:
            self.add_all(_lines(self.label, error, prefix, config))
        else:
            self.more += error.error_count()


def _section(
    label: str, document: dict[str, Any], name: str, spec: type[_Spec], errors: _Problems, invalid: set[str]
) -> list[tuple[int, _Spec]]:
    """The valid entries of one section, by index; the invalid ones add their errors, and their
    names (when they have one) to `invalid`."""
    entries = document.get(name) or []
    if not isinstance(entries, list):
        errors.add(f"{label}: {name}: expected a list")
        return []
    if len(entries) > MAX_ENTRIES:
        errors.add(
            f"{label}: {name}: {len(entries):,} entries; a file declares at most {MAX_ENTRIES:,} {name}, "
            "split it into several files"
        )
        return []
    valid = []
    for index, entry in enumerate(entries):
        try:
            valid.append((index, spec.model_validate(entry)))
        except ValidationError as error:
            errors.add_invalid(error, (name, index))
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                invalid.add(entry["name"])
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
