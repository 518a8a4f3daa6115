"""`BaseMixin`, the hook context, `MixinRegistry` and `@mixin`.

A mixin is a hook object attached to an agent's steps (compose, don't inherit): agents enable
mixins by name in `AgentConfig.capabilities` and configure them in `AgentConfig.mixins[name]`, which
`AgentConfig` validates against the mixin's `options_model` when the agent is defined. The names
live in the shared `MIXINS` registry (`qmcp.agentframework.registry`), the one the models check.

Hook order for one step: `on_start` → `before_model` → (`on_tool_call` per tool call) →
`after_response` → the step is recorded → `on_end`. `on_start` and `on_end` also run when a
completed step replays (`ctx.replayed`), the others only when the model is really called.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import MixinError
from ..llm import ToolSpec
from ..models import AgentConfig, AgentType, describe_validation_error
from ..registry import MIXINS

__all__ = ["BaseMixin", "MixinContext", "MixinInfo", "MixinRegistry", "NoOptions", "RunResources", "mixin"]


@dataclass
class RunResources:
    """What mixins share for the length of one run: an exit stack for connections, a state dict."""

    exit_stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    state: dict[str, Any] = field(default_factory=dict)
    db: Any = None  # the run's `Database`, when the run has one
    correlation_id: str | None = None
    """The run's, sent along when a mixin calls a service (a QMCP server's `X-Correlation-ID`)."""


@dataclass
class MixinContext:
    """Everything a hook may read or change about one agent step."""

    execution_id: uuid.UUID
    key: str
    slot: str
    agent: AgentType
    config: AgentConfig
    model: str
    resources: RunResources
    prompt: str = ""
    system: str = ""
    tools: list[ToolSpec] = field(default_factory=list)
    schema: dict[str, Any] | None = None
    validator: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    reasks: int = 1
    reply: str | None = None
    data: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    replayed: bool = False

    def options(self, name: str) -> dict[str, Any]:
        """This agent's options for mixin `name` (`AgentConfig.mixins[name]`)."""
        return dict(self.config.mixins.get(name, {}))


class NoOptions(BaseModel):
    """The options model of a mixin that takes none: any key given is an error."""

    model_config = ConfigDict(extra="forbid")


class BaseMixin:
    """A capability hooked into agent steps. Override the hooks you need; all are optional."""

    name: ClassVar[str]
    version: ClassVar[str] = "1.0"
    description: ClassVar[str] = ""
    dependencies: ClassVar[tuple[str, ...]] = ()
    options_model: ClassVar[type[BaseModel]] = NoOptions
    """The schema of `AgentConfig.mixins[name]` (declare `extra="forbid"`): `AgentConfig` validates
    an agent's options with it before anything is stored or run, and docs/mixins.md lists its fields."""

    @classmethod
    def parse_options(cls, agent: str, options: Any) -> Any:
        """`options` as this mixin's `options_model`, or a one-line `MixinError` naming the field."""
        try:
            return cls.options_model.model_validate(options)
        except ValidationError as error:
            raise MixinError(
                f"agent {agent!r}: {describe_validation_error(error, f'mixins.{cls.name}')}"
            ) from None

    def options(self, ctx: MixinContext) -> Any:
        """This agent's options for this mixin, validated (defaults filled in)."""
        return self.parse_options(ctx.agent.name, ctx.options(self.name))

    @classmethod
    def executable_items(cls, agent: str, options: dict[str, Any]) -> list[str]:
        """What these options make run on this machine or send elsewhere (tools, commands, ...), one
        line each. A stored agent naming any runs only once someone trusted it; override this when
        your mixin's options can name code. `agent` is for error messages."""
        return []

    async def on_start(self, ctx: MixinContext) -> None:
        """Before anything else, also on replay."""

    async def before_model(self, ctx: MixinContext) -> None:
        """Before the model call: may change `prompt`, `system`, `tools`, `schema`."""

    async def on_tool_call(self, ctx: MixinContext, tool: str, args: dict[str, Any]) -> None:
        """Before each tool call; raise `PermissionError` to deny it."""

    async def after_response(self, ctx: MixinContext) -> None:
        """After the model answered: may change `reply` and `data`, or add `extras`."""

    async def on_end(self, ctx: MixinContext) -> None:
        """After the step is durable (also on replay)."""


@dataclass(frozen=True)
class MixinInfo:
    name: str
    version: str
    description: str
    dependencies: tuple[str, ...]


class MixinRegistry:
    """Mixins by name (the shared `MIXINS` registry), with dependency resolution."""

    @classmethod
    def register(cls, mixin_class: type[BaseMixin]) -> type[BaseMixin]:
        options_model = getattr(mixin_class, "options_model", None)
        if not (isinstance(options_model, type) and issubclass(options_model, BaseModel)):
            raise MixinError(
                f"{mixin_class.__name__}.options_model must be a pydantic model class, not {options_model!r}"
            )
        name = getattr(mixin_class, "name", None)
        if not isinstance(name, str) or not name:
            raise MixinError(f"{mixin_class.__name__}.name must be a non-empty string, not {name!r}")
        return MIXINS.add(name, mixin_class)

    @classmethod
    def unregister(cls, name: str) -> None:
        MIXINS.remove(name)

    @classmethod
    def get(cls, name: str) -> type[BaseMixin]:
        found: type[BaseMixin] = MIXINS.get(name)
        return found

    @classmethod
    def option_errors(cls, mixins: Mapping[str, Any]) -> list[str]:
        """What is wrong with `AgentConfig.mixins`: unknown mixin names and options their
        `options_model` refuses, one line each (`reasoning.style: ...`); empty when all is well."""
        errors = []
        for name, options in mixins.items():
            if name not in MIXINS:
                errors.append(f"{name}: {MIXINS.unknown(name)}")
                continue
            try:
                cls.get(name).options_model.model_validate(options)
            except ValidationError as error:
                errors.append(describe_validation_error(error, name))
        return errors

    @classmethod
    def create(cls, name: str) -> BaseMixin:
        return cls.get(name)()

    @classmethod
    def names(cls) -> list[str]:
        return MIXINS.names()

    @classmethod
    def list_all(cls) -> list[MixinInfo]:
        return [
            MixinInfo(m.name, m.version, m.description, tuple(m.dependencies))
            for m in (cast("type[BaseMixin]", entry) for _, entry in MIXINS.entries())
        ]

    @classmethod
    def resolve(cls, names: Mapping[str, Any] | list[str]) -> list[str]:
        """`names` plus their dependencies, dependencies first; raises `MixinError` on a cycle."""
        order: list[str] = []
        visiting: list[str] = []

        def visit(name: str) -> None:
            if name in order:
                return
            if name in visiting:
                cycle = " -> ".join([*visiting[visiting.index(name) :], name])
                raise MixinError(f"mixin dependencies form a cycle: {cycle}")
            visiting.append(name)
            for dependency in cls.get(name).dependencies:
                visit(dependency)
            visiting.pop()
            order.append(name)

        for name in names:
            visit(str(name))
        return order


def mixin(mixin_class: type[BaseMixin]) -> type[BaseMixin]:
    """Class decorator registering a mixin under its `name`."""
    return MixinRegistry.register(mixin_class)
