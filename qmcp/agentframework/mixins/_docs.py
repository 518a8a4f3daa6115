"""The options table of docs/mixins.md, generated from each mixin's `options_model`.

The docs are derived from the models that validate the options, so they cannot drift: a test
compares docs/mixins.md with `options_reference()`. Regenerate with
`python -m qmcp.agentframework.mixins._docs > section.md` and paste between the markers.
"""

from __future__ import annotations

import json
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ._base import MixinRegistry

__all__ = ["options_reference"]


def _type_name(annotation: Any) -> str:
    """A reader's spelling of a field type: `list[str]`, `"before" | "after"`, `float | None`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(dict.fromkeys(_type_name(a) for a in args))
    if origin is not None and hasattr(annotation, "__metadata__"):  # Annotated[X, ...]
        return _type_name(args[0])
    if origin in (list, dict, tuple):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    return "-" if value is None else f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def options_reference(names: list[str] | None = None) -> str:
    """One Markdown table per mixin (the built-ins by default): option, type, default, meaning."""
    lines: list[str] = []
    for name in names or [info.name for info in MixinRegistry.list_all()]:
        mixin_class = MixinRegistry.get(name)
        model: type[BaseModel] = mixin_class.options_model
        lines += [f"### `{name}`", "", mixin_class.description + ".", ""]
        if not model.model_fields:
            lines += ["No options.", ""]
            continue
        lines += ["| option | type | default | meaning |", "|---|---|---|---|"]
        for field_name, field in model.model_fields.items():
            option = field.alias or field_name
            cells = [
                f"`{option}`",
                f"`{_type_name(field.annotation)}`",
                _default(field),
                field.description or "",
            ]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(options_reference(), end="")
