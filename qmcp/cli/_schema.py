"""`qmcp schema team`: the JSON Schema of team files, and the reference section of docs/team-files.md.

Both come from the models `qmcp apply` validates with (`_AgentSpec`, `AgentConfig`, each topology
type's config, each mixin's `options_model`), so the documentation cannot drift from the parser:
docs/team-files.md is rendered from this schema (`_team_doc`), and tests validate the examples with it.
"""

from __future__ import annotations

import json
from typing import Any

import typer

__all__ = ["schema_app", "team_schema"]

schema_app = typer.Typer(
    no_args_is_help=True, help="JSON Schemas of qmcp's files, for editors and validators."
)


@schema_app.command("team")
def team() -> None:
    """Print the JSON Schema of team files (qmcp apply -f): qmcp schema team > team.schema.json"""
    typer.echo(json.dumps(team_schema(), indent=2))


def team_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a team file, with every topology config and mixin option."""
    from typing import Annotated, Literal

    from pydantic import BaseModel, ConfigDict, Field, create_model

    from qmcp.agentframework.mixins import MixinRegistry
    from qmcp.agentframework.models import config_class_for
    from qmcp.agentframework.registry import TOPOLOGIES

    from ._teamfile import _AgentSpec

    class Topology(BaseModel):
        model_config = ConfigDict(extra="forbid")

        name: str = Field(description="Lowercase letters, digits, '_' or '-'; unique among topologies.")
        description: str = ""
        agents: dict[str, str] = Field(
            default_factory=dict,
            description="Slot → agent name (an agent of this file or of the database). Slot names per type: "
            "see the type's section.",
        )

    variants = []
    for topology_type in TOPOLOGIES.names():  # the built-ins and any `@topology` loaded here
        config_class = config_class_for(topology_type)
        variants.append(
            create_model(
                f"{config_class.__name__.removesuffix('Config')}Topology",
                __base__=Topology,
                type=(Literal[topology_type], Field(description="The topology type.")),
                config=(config_class, Field(default_factory=config_class, description="The type's options.")),
            )
        )
    union: Any = Annotated[
        next(iter(variants)) if len(variants) == 1 else _union(variants), Field(discriminator="type")
    ]
    team_file = create_model(
        "TeamFile",
        __config__=ConfigDict(extra="forbid", title="qmcp team file"),
        agents=(list[_AgentSpec], Field(default_factory=list, description="Agent definitions.")),
        topologies=(list[union], Field(default_factory=list, description="Topologies: agents in slots.")),
    )
    schema = team_file.model_json_schema(schema_generator=_factory_defaults())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    defs = schema["$defs"]
    defs["Agent"] = defs.pop("_AgentSpec") | {"title": "Agent"}
    text = json.dumps(schema).replace('"#/$defs/_AgentSpec"', '"#/$defs/Agent"')
    schema = dict(json.loads(text))
    defs = schema["$defs"]
    mixins: dict[str, Any] = {}
    for info in MixinRegistry.list_all():
        model = MixinRegistry.get(info.name).options_model
        options = model.model_json_schema(schema_generator=_factory_defaults())
        title = "".join(part.capitalize() for part in info.name.split("_")) + "Options"
        nested = options.pop("$defs", {})
        defs.update(nested)
        defs[title] = options | {"title": title, "description": info.description}
        mixins[info.name] = {"$ref": f"#/$defs/{title}"}
    config = defs["AgentConfig"]["properties"]["mixins"]
    config["properties"] = mixins
    config["additionalProperties"] = False
    return schema


def _factory_defaults() -> Any:
    """A schema generator that also shows the defaults lists and mappings get from a factory."""
    from pydantic.json_schema import GenerateJsonSchema

    class WithFactoryDefaults(GenerateJsonSchema):
        def default_schema(self, schema: Any) -> Any:
            factory = schema.get("default_factory")
            if factory is not None and not schema.get("default_factory_takes_data"):
                value = factory()
                if isinstance(value, list | dict):
                    schema = {key: item for key, item in schema.items() if key != "default_factory"}
                    schema["default"] = value
            return super().default_schema(schema)

    return WithFactoryDefaults


def _union(variants: list[Any]) -> Any:
    from typing import Union

    return Union[tuple(variants)]  # noqa: UP007 - built from a list at run time
