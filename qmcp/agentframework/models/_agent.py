"""Agent definitions: the `AgentConfig` schema and the `AgentType` table."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, ValidationError, field_validator, model_validator
from sqlmodel import JSON, Field, SQLModel

from ..errors import InvalidConfigError, did_you_mean
from ..registry import MIXINS
from ._base import TableModel
from ._enums import AgentRole
from ._json import json_problem
from ._model_config import ModelConfig
from ._validation import check_name, describe_validation_error, nul_field, nul_message

__all__ = ["AgentConfig", "AgentType", "utcnow"]

_MixinName = Annotated[str, AfterValidator(MIXINS.check)]
"""A name in the mixin registry: a built-in (`AgentCapability`) or a `@mixin` class's."""
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def utcnow() -> datetime:
    """Now, as every stored time is: timezone-aware, in UTC."""
    return datetime.now(UTC)


class AgentConfig(SQLModel):
    """How one agent calls its model. Stored as JSON on `AgentType.config`.

    `model_config_obj` (e.g. `Models.CLAUDE_SONNET_4`) sets `model` when given. A `model` of
    None means the configured default model (`QMCP_DEFAULT_MODEL`).
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_assignment=True)  # type: ignore[assignment]  # SQLModel's type for it extends ConfigDict

    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=300,
        description="provider:name (anthropic:..., openai:gpt-4.1, ollama:llama3.2, local:smollm2) or `test`, the "
        "offline model [default: QMCP_DEFAULT_MODEL].",
    )
    model_config_obj: ModelConfig | None = Field(
        default=None, description="A model with its context size and prices; sets `model` when that is empty."
    )
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, description="Sampling temperature.")
    max_tokens: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Longest reply of one call, in tokens."
    )
    system_prompt: str | None = Field(
        default=None, max_length=200_000, description="Instructions [default: one written for the role]."
    )
    output_format: Literal["text", "json"] = Field(
        default="text", description="json: the reply is parsed as JSON."
    )
    output_schema: dict[str, Any] | None = Field(
        default=None, description="A JSON Schema the reply must match (see also the structured_output mixin)."
    )
    max_retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description="Retries of transient provider errors (429, overload, 5xx, timeouts).",
    )
    timeout_seconds: float = Field(
        default=300.0, gt=0, le=86_400, description="Longest wait for one model call."
    )
    max_tool_calls: int = Field(
        default=10, ge=0, le=1000, description="Most tool calls in one step (tool_use)."
    )
    capabilities: list[_MixinName] = Field(
        default_factory=list,
        description="Mixins to enable, by registered name (built-ins: the `AgentCapability` values); "
        "their options go in `mixins`.",
    )
    mixins: dict[_MixinName, dict[str, Any]] = Field(
        default_factory=dict,
        description="Options per mixin, e.g. {'reasoning': {'style': 'pros_and_cons'}}.",
    )
    max_total_tokens: int | None = Field(
        default=None,
        ge=1,
        description="This agent's budget in one execution: input plus output tokens of all its calls "
        "(`max_tokens` bounds the output of one call).",
    )
    max_cost_usd: float | None = Field(
        default=None, ge=0, description="This agent's budget in one execution, in US dollars."
    )
    base_url: str | None = Field(
        default=None,
        max_length=2000,
        description="An OpenAI-compatible endpoint of this agent's own (needs trust; gets no key unless "
        "`api_key_env` names one).",
    )
    api_key_env: str | None = Field(
        default=None,
        max_length=200,
        description="The environment variable whose value is this agent's API key (OpenAI-compatible "
        "endpoints and `openai:`); the only key a `base_url` ever gets.",
    )

    @field_validator("api_key_env")
    @classmethod
    def _variable_name(cls, value: str | None) -> str | None:
        if value is not None and not _VARIABLE.fullmatch(value):
            raise ValueError(f"{value!r} is not an environment variable name (letters, digits and '_')")
        return value

    @field_validator("mixins")
    @classmethod
    def _mixin_options(cls, mixins: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each mixin's options against its `options_model`: a misspelt key fails before anything is
        stored, with a guess at the key meant. A field check, so it is reported with the other fields'."""
        for name, options in mixins.items():
            options_model = getattr(MIXINS.get(name), "options_model", None)
            if options_model is None:
                continue
            try:
                options_model.model_validate(options)
            except ValidationError as error:
                hints = [
                    did_you_mean(item["loc"][0], options_model.model_fields).strip()
                    for item in error.errors(include_url=False)
                    if item["type"] == "extra_forbidden" and len(item["loc"]) == 1
                ]
                problem = "; ".join(
                    [describe_validation_error(error, f"mixins.{name}"), *filter(None, hints)]
                )
                raise ValueError(problem) from None
        return mixins

    @model_validator(mode="after")
    def _model_from_registry(self) -> AgentConfig:
        if self.model_config_obj is not None and self.model is None:
            object.__setattr__(self, "model", self.model_config_obj.model_string)
        return self


class AgentType(TableModel, table=True):
    """A named agent: a role, a description and an `AgentConfig` (as JSON)."""

    __tablename__ = "agent_types"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=64)
    description: str = Field(default="", max_length=10_000)
    role: AgentRole = AgentRole.GENERALIST
    config: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    def __init__(self, **data: Any) -> None:
        """`config` may be an `AgentConfig` or its dict: stored as the dict either way (a table
        model's constructor skips the validators that `model_validate` runs)."""
        if isinstance(data.get("config"), AgentConfig):
            data["config"] = data["config"].model_dump(mode="json")
        super().__init__(**data)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "agent")

    @field_validator("config", mode="before")
    @classmethod
    def _config(cls, value: Any) -> dict[str, Any]:
        if isinstance(value, AgentConfig):
            return value.model_dump(mode="json")
        if value is None:
            return {}
        problem = json_problem(value)
        if problem is not None:  # dumped as JSON below, NaN would turn into null unseen
            raise ValueError(f"config {problem}")
        try:
            return AgentConfig.model_validate(value).model_dump(mode="json")
        except ValidationError as error:
            raise ValueError(describe_validation_error(error, "config")) from None

    @model_validator(mode="after")
    def _storable(self) -> AgentType:
        field = nul_field({"description": self.description, "config": self.config})
        if field is not None:
            raise ValueError(nul_message(f"agent {self.name!r}: {field.lstrip('.')}"))
        return self

    @property
    def agent_config(self) -> AgentConfig:
        """The parsed config (validates the stored JSON: a mixin it names may be unregistered here)."""
        try:
            return AgentConfig.model_validate(self.config or {})
        except ValidationError as error:
            raise InvalidConfigError(
                f"agent {self.name!r}: {describe_validation_error(error, 'config')}"
            ) from None

    def definition(self) -> dict[str, Any]:
        """The fields that define this agent, without database bookkeeping."""
        return {
            "name": self.name,
            "description": self.description,
            "role": str(self.role),
            "config": self.config,
        }
