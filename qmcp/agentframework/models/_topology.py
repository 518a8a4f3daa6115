"""Topology definitions: the `Topology` and `TopologyMembership` tables and the per-type configs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from sqlalchemy import String
from sqlmodel import JSON, Field, UniqueConstraint

from ..errors import InvalidConfigError
from ..registry import TOPOLOGIES
from ._agent import utcnow
from ._base import TableModel
from ._json import json_problem
from ._validation import check_name, describe_validation_error, nul_field, nul_message

__all__ = [
    "ChainOfCommandConfig",
    "CompoundCondition",
    "CompoundConfig",
    "CrossCheckConfig",
    "DebateConfig",
    "DelegationConfig",
    "EnsembleConfig",
    "PipelineConfig",
    "Topology",
    "TopologyConfig",
    "TopologyMembership",
    "config_class_for",
]


class TopologyConfig(BaseModel):
    """Base of the per-type configs: unknown keys are errors, so typos surface."""

    model_config = ConfigDict(extra="forbid")


class PipelineConfig(TopologyConfig):
    stages: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="Slot names in run order [default: the slot order].",
    )
    pass_original_input: bool = Field(default=True, description="Every stage also sees the original input.")
    retry_failed_stages: bool = Field(default=False, description="Run a failed stage again.")
    max_stage_retries: int = Field(default=1, ge=0, le=10, description="How often, with retry_failed_stages.")
    checkpoint_after: list[str] = Field(
        default_factory=list, description="Stages after which the output is also recorded as a checkpoint."
    )

    @model_validator(mode="after")
    def _checkpoints_are_stages(self) -> PipelineConfig:
        unknown = [s for s in self.checkpoint_after if self.stages and s not in self.stages]
        if unknown:
            raise ValueError(f"checkpoint_after names stages that are not in stages: {unknown}")
        return self


AggregationMethod = Literal["vote", "average", "weighted", "concat", "best_of", "synthesis"]


class EnsembleConfig(TopologyConfig):
    aggregation_method: AggregationMethod = Field(
        default="vote", description="How member answers become one; synthesis needs an `aggregator` slot."
    )
    failure_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Largest tolerated fraction of failed members."
    )
    min_agents: int = Field(default=1, ge=1, le=100_000, description="Fewest member slots.")


class DebateConfig(TopologyConfig):
    max_rounds: int = Field(default=3, ge=1, le=50, description="Rounds of arguments at most.")
    allow_early_termination: bool = Field(default=True, description="Stop once the positions converge.")
    convergence_threshold: float = Field(
        default=0.85, ge=0.0, le=1.0, description="Similarity of the two positions that counts as converged."
    )
    consensus_method: Literal["mediator", "last_round"] = Field(
        default="mediator",
        description="mediator: a `mediator` slot decides; last_round: the last round stands.",
    )
    mediator_agent_name: str | None = Field(
        default=None, description="The mediator by agent name, instead of a `mediator` slot."
    )


class CrossCheckConfig(TopologyConfig):
    num_checkers: int = Field(default=2, ge=2, le=1000, description="Checker slots required (checker_1..n).")
    consensus_method: Literal["unanimous", "majority", "weighted"] = Field(
        default="majority", description="How checker verdicts approve; weighted by their confidence."
    )
    require_unanimous_for_approval: bool = Field(
        default=False, description="Approve only if every checker does."
    )
    confidence_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Weighted approval needs at least this confidence."
    )


class ChainOfCommandConfig(TopologyConfig):
    authority_levels: list[str] = Field(
        default_factory=lambda: ["commander", "lieutenant", "worker"],
        min_length=2,
        description="Levels from the top; a slot belongs to the level its name starts with.",
    )
    escalation_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="A subtask done with less confidence escalates one level up."
    )
    max_delegation_depth: int = Field(default=3, ge=1, le=10, description="Levels a task may pass down.")
    max_subtasks: int = Field(default=5, ge=1, le=100, description="Subtasks of one plan at most.")


class DelegationConfig(TopologyConfig):
    routing_strategy: Literal["role", "capability", "round_robin"] = Field(
        default="capability", description="How a task finds its specialist."
    )
    load_balance: bool = Field(
        default=True, description="Among qualifying specialists, the least loaded wins."
    )
    fallback_agent_name: str | None = Field(
        default=None, description="The agent (in a slot of this topology) that takes tasks nobody matches."
    )


class CompoundCondition(BaseModel):
    """`when` the previous output contains `contains` (or its `field` equals `equals`), run `then`."""

    model_config = ConfigDict(extra="forbid")

    then: str
    contains: str | None = None
    field: str | None = None
    equals: Any = None


class CompoundConfig(TopologyConfig):
    mode: Literal["sequential", "parallel", "conditional"] = Field(
        default="sequential", description="conditional: the first matching condition, else `default`."
    )
    sub_topologies: list[str] = Field(
        default_factory=list, max_length=100, description="Stored topologies, by name, in run order."
    )
    conditions: list[CompoundCondition] = Field(default_factory=list, description="For mode conditional.")
    default: str | None = Field(default=None, description="The sub-topology when no condition matches.")


def config_class_for(topology_type: str) -> type[TopologyConfig]:
    """The config schema of a registered topology type (its class's `config_class`)."""
    # the registry sits below the topology classes, so it holds them as plain `type`s
    topology_class: Any = TOPOLOGIES.get(str(topology_type))
    return cast("type[TopologyConfig]", topology_class.config_class)


class Topology(TableModel, table=True):
    """A named topology: its type and its config (as JSON). Agents join through `TopologyMembership`."""

    __tablename__ = "topologies"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=64)
    description: str = Field(default="", max_length=10_000)
    topology_type: str = Field(sa_type=String(64))
    """A registered topology type: a built-in (`TopologyType`) or a `@topology` class's; stored as
    text, not a database enum, so types stay open (migration 0002)."""
    config: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    def __init__(self, **data: Any) -> None:
        """`config` may be the type's config object (`EnsembleConfig(...)`) or its dict: stored as the
        dict either way (a table model's constructor skips the validators that `model_validate` runs)."""
        config = data.get("config")
        if isinstance(config, TopologyConfig):
            topology_type = data.get("topology_type")
            if topology_type is not None and str(topology_type) in TOPOLOGIES:
                expected = config_class_for(str(topology_type))
                if not isinstance(config, expected):
                    raise InvalidConfigError(
                        f"topology {data.get('name')!r}: config is a {type(config).__name__}; "
                        f"type {str(topology_type)!r} takes {expected.__name__}"
                    )
            data["config"] = config.model_dump(mode="json")
        super().__init__(**data)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "topology")

    @model_validator(mode="before")
    @classmethod
    def _config_matches_type(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "topology_type" not in data:
            return data
        topology_type = str(data["topology_type"])
        if topology_type not in TOPOLOGIES:
            raise ValueError(TOPOLOGIES.unknown(data["topology_type"]))
        config = data.get("config") or {}
        if isinstance(config, BaseModel):
            config = config.model_dump()
        elif json_problem(config) is not None:  # dumped as JSON below, NaN would turn into null unseen
            raise ValueError(f"config {json_problem(config)}")
        try:
            parsed = config_class_for(topology_type).model_validate(config)
        except ValidationError as error:
            raise ValueError(describe_validation_error(error, "config")) from None
        return {**data, "topology_type": topology_type, "config": parsed.model_dump(mode="json")}

    @model_validator(mode="after")
    def _storable(self) -> Topology:
        field = nul_field({"description": self.description, "config": self.config})
        if field is not None:
            raise ValueError(nul_message(f"topology {self.name!r}: {field.lstrip('.')}"))
        return self

    @property
    def parsed_config(self) -> TopologyConfig:
        return config_class_for(self.topology_type).model_validate(self.config or {})

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "topology_type": str(self.topology_type),
            "config": self.config,
        }


class TopologyMembership(TableModel, table=True):
    """Which agent fills which slot of a topology; `position` orders sequential slots."""

    __tablename__ = "topology_memberships"
    __table_args__ = (UniqueConstraint("topology_id", "slot_name"),)

    id: int | None = Field(default=None, primary_key=True)
    topology_id: int = Field(foreign_key="topologies.id", index=True)
    agent_id: int = Field(foreign_key="agent_types.id", index=True)
    slot_name: str = Field(max_length=64)
    position: int = 0
