"""structured_output: a JSON schema or a pydantic model per agent; the step stores the parsed object.

The mixin only declares what it wants (`ctx.schema`, `ctx.reasks`): `StepContext` already
extracts the JSON (fenced or bare), checks it against the schema and asks the model again with
the error. With a pydantic model the parsed object is then validated by the model itself, which
checks what the schema check cannot (constraints, nested models), and stored as it dumps it.

Also home of the two helpers every mixin here uses to read its configuration.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import MixinError
from ..models import describe_validation_error
from ._base import BaseMixin, MixinContext, mixin

__all__ = ["StructuredOutputMixin"]

OptionsT = TypeVar("OptionsT", bound=BaseModel)


def parse_options(ctx: MixinContext, name: str, options_class: type[OptionsT]) -> OptionsT:
    """The agent's options for mixin `name`, validated, so a misspelt option fails instead of being ignored."""
    return validate_options(ctx.agent.name, name, options_class, ctx.options(name))


def validate_options(agent: str, name: str, options_class: type[OptionsT], options: Any) -> OptionsT:
    """`options` of mixin `name` as `options_class`, or a one-line `MixinError` naming the field."""
    try:
        return options_class.model_validate(options)
    except ValidationError as error:
        raise MixinError(f"agent {agent!r}: {describe_validation_error(error, f'mixins.{name}')}") from None


def import_object(reference: str, what: str) -> Any:
    """The object a `"package.module:name"` reference points to, or a one-line `MixinError`."""
    module_name, colon, attribute = reference.partition(":")
    if not colon or not module_name or not attribute:
        raise MixinError(f"{what} reference {reference!r} must look like 'package.module:name'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise MixinError(f"cannot import the {what} {reference!r}: {error}") from None
    try:
        for part in attribute.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise MixinError(f"module {module_name!r} has no {attribute!r} (the {what} {reference!r})") from None
    return target


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    json_schema: dict[str, Any] | None = Field(
        default=None, alias="schema", description="The JSON Schema the reply must match (or give `model`)."
    )
    model: str | None = Field(
        default=None,
        description="A pydantic model, 'package.module:Class', instead of `schema` (needs trust).",
    )
    max_reasks: int = Field(
        default=2, ge=0, le=10, description="Times an invalid reply is asked again, with the error."
    )


@functools.cache
def _pydantic_model(reference: str) -> tuple[type[BaseModel], dict[str, Any]]:
    """The model a reference names and its JSON schema, computed once per process."""
    target = import_object(reference, "output model")
    if not (isinstance(target, type) and issubclass(target, BaseModel)):
        raise MixinError(f"{reference!r} is not a pydantic model (a BaseModel subclass)")
    return target, target.model_json_schema()


@mixin
class StructuredOutputMixin(BaseMixin):
    """Options: `schema` (a JSON schema; default `AgentConfig.output_schema`) or `model`
    (`"package.module:Model"`, a pydantic model), and `max_reasks` (default 2).

    A schema the topology itself asks for (a checker's verdict, a plan) wins: the topology
    needs that shape to work, so the agent's own schema applies to its other steps.
    """

    name = "structured_output"
    options_model = _Options
    description = "Replies as JSON of a schema or pydantic model, extracted, validated and re-asked"

    @classmethod
    def executable_items(cls, agent: str, options: dict[str, Any]) -> list[str]:
        model = validate_options(agent, cls.name, _Options, options).model
        return [f"output model {model!r} (its module is imported)"] if model is not None else []

    async def before_model(self, ctx: MixinContext) -> None:
        if ctx.schema is not None:
            return
        options = parse_options(ctx, self.name, _Options)
        if options.model is not None and options.json_schema is not None:
            raise MixinError(
                f"agent {ctx.agent.name!r}: give structured_output a schema or a model, not both"
            )
        if options.model is not None:
            model, ctx.schema = _pydantic_model(options.model)
            ctx.validator = _model_validator(model, options.model)
        else:
            ctx.schema = options.json_schema or ctx.config.output_schema
        if ctx.schema is None:
            raise MixinError(
                f"agent {ctx.agent.name!r} enables structured_output without a schema: set "
                "AgentConfig.output_schema, or mixins.structured_output.schema or .model"
            )
        ctx.reasks = options.max_reasks


def _model_validator(model: type[BaseModel], reference: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Checks parsed JSON against the pydantic model; a `ValueError` makes the step ask again."""

    def validate(data: dict[str, Any]) -> dict[str, Any]:
        try:
            return model.model_validate(data).model_dump(mode="json")
        except ValidationError as error:
            raise ValueError(f"reply does not fit {reference}: {describe_validation_error(error)}") from None

    return validate
