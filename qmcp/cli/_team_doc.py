"""The reference section of docs/team-files.md, rendered from the team-file schema (`qmcp schema team`).

A test keeps the document equal to `render_doc(document)`, so it cannot drift from the parser.
Regenerate it with `python -m qmcp.cli._team_doc docs/team-files.md`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ._schema import team_schema

__all__ = ["BEGIN", "END", "reference_markdown", "render_doc"]

BEGIN = "<!-- BEGIN GENERATED: python -m qmcp.cli._team_doc docs/team-files.md -->"
END = "<!-- END GENERATED -->"


def reference_markdown() -> str:
    """The generated reference: one table per object of a team file, in the order a reader meets them."""
    schema = team_schema()
    defs = schema["$defs"]
    parts = [_section("Top level", schema, defs)]
    parts.append(_section("`agents[]`: an agent", defs["Agent"], defs))
    parts.append(_section("`agents[].config`", defs["AgentConfig"], defs))
    for name, ref in defs["AgentConfig"]["properties"]["mixins"]["properties"].items():
        target = defs[ref["$ref"].rsplit("/", 1)[1]] if "$ref" in ref else ref
        parts.append(_section(f"`agents[].config.mixins.{name}`", target, defs))
    for key in sorted(k for k in defs if k.startswith("_")):  # objects inside mixin options
        parts.append(_section(f"`{_name(key)}`", defs[key], defs))
    parts.append(_section("`agents[].config.model_config_obj`", defs["ModelConfig"], defs))
    topology = next(iter(v for k, v in defs.items() if k.endswith("Topology")))
    common = {k: v for k, v in topology["properties"].items() if k not in ("type", "config")}
    parts.append(
        _section("`topologies[]`: a topology", {"properties": common, "required": ["name", "type"]}, defs)
        + "\n`type` is one of: "
        + ", ".join(f"`{defs[k]['properties']['type']['const']}`" for k in defs if k.endswith("Topology"))
        + "; `config` holds the options of that type:\n"
    )
    for key in (k for k in defs if k.endswith("Topology")):
        kind = defs[key]["properties"]["type"]["const"]
        config = defs[defs[key]["properties"]["config"]["$ref"].rsplit("/", 1)[1]]
        parts.append(_section(f"`config` of `type: {kind}`", config, defs))
    for key in ("CompoundCondition",):
        parts.append(_section(f"`{key}`", defs[key], defs))
    return "\n".join(parts)


def _name(key: str) -> str:
    return key.lstrip("_")


def _section(title: str, node: dict[str, Any], defs: dict[str, Any]) -> str:
    lines = [f"### {title}", ""]
    if node.get("description") and "properties" in node:
        lines += [" ".join(node["description"].split()), ""]
    properties = node.get("properties", {})
    if not properties:
        return "\n".join([*lines, "Any mapping.", ""])
    required = set(node.get("required", []))
    lines += ["| field | type | default | description |", "|---|---|---|---|"]
    for field, spec in properties.items():
        default = "required" if field in required else _default(spec)
        description = " ".join(str(spec.get("description", "")).split()).replace("|", "\\|")
        lines.append(f"| `{field}` | {_type(spec, defs)} | {default} | {description} |")
    return "\n".join([*lines, ""])


def _default(spec: dict[str, Any]) -> str:
    if "default" not in spec:
        return ""
    return f"`{json.dumps(spec['default'], ensure_ascii=False)}`"


def _type(node: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in node:
        key = node["$ref"].rsplit("/", 1)[1]
        target = defs[key]
        if "enum" in target:
            return " \\| ".join(f"`{value}`" for value in target["enum"])
        return f"{_name(key)} (object)"
    if "oneOf" in node and "discriminator" in node:
        return f"{node['discriminator']['propertyName']}-tagged object (below)"
    if "anyOf" in node:
        options = [option for option in node["anyOf"] if option.get("type") != "null"]
        text = " or ".join(_type(option, defs) for option in options)
        return text + (" or null" if len(options) < len(node["anyOf"]) else "")
    if "enum" in node:
        return " \\| ".join(f"`{value}`" for value in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    kind = node.get("type")
    if kind == "array":
        return f"list of {_type(node.get('items', {}), defs)}"
    if kind == "object":
        extra = node.get("additionalProperties")
        return f"mapping to {_type(extra, defs)}" if isinstance(extra, dict) and extra else "mapping"
    bounds = [
        f"{symbol} {node[key]}"
        for key, symbol in (
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
            ("exclusiveMaximum", "<"),
        )
        if key in node
    ]
    return (kind or "any") + (f" ({', '.join(bounds)})" if bounds else "")


def render_doc(text: str) -> str:
    """`text` (docs/team-files.md) with its generated section replaced by the current reference."""
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the document has no {BEGIN!r} ... {END!r} section")
    return f"{head}{BEGIN}\n\n{reference_markdown()}\n{END}{tail}"


if __name__ == "__main__":
    path = Path(sys.argv[1])
    path.write_text(render_doc(path.read_text(encoding="utf-8")), encoding="utf-8")
