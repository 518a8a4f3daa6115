"""Declarative team files for `qmcp apply`: parse YAML/JSON and validate every field of it.

A file declares agents and topologies::

    agents:
      - {name: planner, role: planner, description: ..., config: {model: test, max_tokens: 128}}
    topologies:
      - {name: plan_review, type: pipeline, config: {}, agents: {plan: planner, review: reviewer}}

Every problem of a field is counted, and the first 20 are reported with their path
(`team.yaml: topologies[0].config.failure_threshold: ...`). The result, a `qmcp.app.TeamDocument`, goes to `qmcp.app.apply_team`,
which checks what a definition needs beyond its fields (model strings, slots, the agents and
topologies they name, in the file or the database) and writes nothing unless all of it is valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from qmcp.agentframework.errors import MAX_LISTED_PROBLEMS, InvalidConfigError
from qmcp.agentframework.models import (
    AgentConfig,
    AgentRole,
    AgentType,
    Topology,
    check_name,
    config_class_for,
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


def load_team(label: str, text: str, *, is_json: bool = False) -> TeamDocument:
    """Parse and validate a team file; raise one `InvalidConfigError` listing the problems, by path."""
    return validate_team(label, parse_document(label, text, is_json=is_json))


def validate_team(label: str, document: Any) -> TeamDocument:
    """Validate a parsed team file (`parse_document`); one `InvalidConfigError` lists its problems (20, then how many more)."""
    if not isinstance(document, dict):
        raise InvalidConfigError(f"{label}: expected a mapping with 'agents' and/or 'topologies' lists")
    errors = _Problems(label)
    for key in document:
        if key not in _SECTIONS:
            errors.add(f"{label}: {key}: unknown section; a team file has 'agents' and 'topologies'")
    agent_specs = _section(label, document, "agents", _AgentSpec, errors)
    topology_specs = _section(label, document, "topologies", _TopologySpec, errors)
    errors.add_all(_duplicates(label, "agents", [(i, a.name) for i, a in agent_specs]))
    errors.add_all(_duplicates(label, "topologies", [(i, t.name) for i, t in topology_specs]))
    agents = []
    for index, a in agent_specs:
        try:
            agents.append(
                AgentType.model_validate(
                    {"name": a.name, "role": a.role, "description": a.description, "config": a.config}
                )
            )
        except ValidationError as error:  # what only the whole definition can check (NUL characters)
            errors.add_invalid(error, ("agents", index))
    topologies = []
    for index, t in topology_specs:
        try:
            config = config_class_for(t.type).model_validate(t.config)
        except ValidationError as error:
            errors.add_invalid(error, ("topologies", index, "config"))
            continue
        try:
            topology = Topology.model_validate(
                {"name": t.name, "description": t.description, "topology_type": t.type, "config": config}
            )
        except ValidationError as error:
            errors.add_invalid(error, ("topologies", index))
            continue
        topologies.append((topology, dict(t.agents)))
    if errors:
        raise InvalidConfigError.listing(label, errors.lines, errors.more)
    return TeamDocument(label, agents, topologies)


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

    def add_invalid(self, error: ValidationError, prefix: Sequence[str | int]) -> None:
        if len(self.lines) < MAX_LISTED_PROBLEMS:
            self.add_all(_lines(self.label, error, prefix))
        else:
            self.more += error.error_count()


def _section(
    label: str, document: dict[str, Any], name: str, spec: type[_Spec], errors: _Problems
) -> list[tuple[int, _Spec]]:
    """The valid entries of one section, by index; the invalid ones add their errors."""
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
