"""The bounds of every JSON value qmcp stores: nesting depth, size, and numbers both databases hold.

What a client sends (a human request's context, a tool's input, a definition's config, a run's input)
is checked where it is stored, so every door refuses the same things with one line naming the field:
deeper than `MAX_JSON_DEPTH` (the wire serialisers give up near 255 levels, so a deeper row would
break every list that shows it), larger than `MAX_JSON_BYTES`, or holding NaN or Infinity (JSON has
no such numbers: PostgreSQL refuses them, SQLite stores them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidConfigError

__all__ = ["JSON_TOO_DEEP", "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "check_json", "json_depth", "json_problem"]

MAX_JSON_DEPTH = 100
MAX_JSON_BYTES = 4 * 1024 * 1024
JSON_TOO_DEEP = f"is nested deeper than {MAX_JSON_DEPTH} levels; flatten it"
"""The sentence after a field's name for a value nested too deeply, whichever door refuses it."""


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply containers nest in `value` (at most `limit + 1`), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping | list | tuple):
            deepest = max(deepest, level)
            if level > limit:
                break
            children = item.values() if isinstance(item, Mapping) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def _not_finite(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def json_problem(value: Any) -> str | None:
    """What keeps `value` from being stored as JSON, in a few words, or None."""
    if json_depth(value) > MAX_JSON_DEPTH:
        return JSON_TOO_DEEP
    if _not_finite(value):
        return "holds NaN or Infinity, which JSON cannot carry; use null or a string"
    try:
        size = len(json.dumps(value, allow_nan=False).encode())
    except (TypeError, ValueError) as error:
        return f"is not JSON-serialisable: {error}"
    if size > MAX_JSON_BYTES:
        return f"is {size:,} bytes as JSON, over the limit of {MAX_JSON_BYTES:,}; store less"
    return None


def check_json(value: Any, field: str) -> None:
    """Raise `InvalidConfigError` naming `field` if `value` cannot be stored (`json_problem`)."""
    problem = json_problem(value)
    if problem is not None:
        raise InvalidConfigError(f"{field} {problem}")
