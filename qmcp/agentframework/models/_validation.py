"""The naming rule shared by agents, topologies and slots, and one-line validation messages."""

from __future__ import annotations

import re

from pydantic import ValidationError

__all__ = ["NAME_PATTERN", "check_name", "describe_validation_error"]

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)


def check_name(value: str, what: str) -> str:
    """Return `value` if it is a lowercase identifier, else raise a ValueError saying how to fix it."""
    if not isinstance(value, str) or not _NAME.match(value):
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
        parts.append(f"{path}: {message}" if path else message)
    return "; ".join(parts)
