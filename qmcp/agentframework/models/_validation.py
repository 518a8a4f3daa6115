"""The naming rule shared by agents, topologies and slots, one-line validation messages, and
the check that text can be stored by every database qmcp supports."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ..errors import InvalidConfigError

__all__ = [
    "NAME_PATTERN",
    "NUL",
    "check_id",
    "check_name",
    "describe_validation_error",
    "nul_field",
    "nul_message",
    "storable_text",
]

NUL = "\x00"
"""PostgreSQL's text and JSON types cannot hold this character (SQLite can), so qmcp refuses it in
what users give (input, definitions, answers) and replaces it in what models reply."""
_REPLACEMENT = "\ufffd"

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)


def check_name(value: str, what: str) -> str:
    """Return `value` if it is a lowercase identifier, else raise a ValueError saying how to fix it."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):  # `$` alone lets a final newline by
        shown = value if len(str(value)) <= 40 else f"{str(value)[:40]}..."
        raise ValueError(
            f"invalid {what} name {shown!r}: use 1-64 lowercase letters, digits, '_' or '-', starting with a letter"
        )
    return value


def describe_validation_error(error: ValidationError, prefix: str = "") -> str:
    """One line naming each offending field path and what is wrong with it."""
    parts = []
    for item in error.errors(include_url=False):
        path = ".".join(str(p) for p in (prefix, *item["loc"]) if p != "")
        message = str(item["msg"]).removeprefix("Value error, ")
        last = str(item["loc"][-1]) if item["loc"] else ""
        if path and message.startswith((f"{path}:", f"{path}.")):  # a nested model's message names it already
            path = ""
        elif last and message.startswith(f"{last}.") and ": " in message:  # a field's check names the rest
            inner, message = message.split(": ", 1)
            path = f"{path.removesuffix(last)}{inner}"
        parts.append(f"{path}: {message}" if path else message)
    return "; ".join(parts)


def nul_field(value: Any, path: str = "") -> str | None:
    """The path (`.config.system_prompt`, `[2].name`) of the first string or key in `value` that
    holds a NUL character, or None. Walks nested dicts and lists without recursion."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return where
        elif isinstance(item, Mapping):
            for key, child in reversed(list(item.items())):
                if isinstance(key, str) and NUL in key:
                    return f"{where}.{key!r}"
                stack.append((child, f"{where}.{key}"))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{where}[{index}]") for index, child in reversed(list(enumerate(item))))
    return None


def nul_message(field: str) -> str:
    """The one-line refusal of a value whose `field` holds a NUL character."""
    return f"{field} contains a NUL character (\\x00), which the database cannot store; remove it"


def check_id(value: str | None, what: str) -> None:
    """Refuse an id holding a NUL: PostgreSQL would store another id (U+FFFD) than SQLite keeps."""
    if value is not None and NUL in value:
        raise InvalidConfigError(nul_message(what))


def storable_text(text: str) -> str:
    """`text` with every NUL replaced by U+FFFD (Unicode's replacement character: the loss stays visible)."""
    return text.replace(NUL, _REPLACEMENT) if NUL in text else text
