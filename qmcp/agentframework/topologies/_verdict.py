"""A checker's verdict: the JSON a crosscheck asks its checkers for, and how their replies are read.

One reader for every place a verdict comes from: the crosscheck topology (its `StepContext` parses
the reply with `VALIDATION_SCHEMA`) and `determine_consensus` given reply text (a chat message, a
hand-written flow's `invoke_agent` result), so a reply approves or abstains the same way in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._parsing import validate_json

__all__ = ["VALIDATION_SCHEMA", "parse_verdict", "verdict"]

VALIDATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean"},
        "confidence": {"type": "number"},
        "issues": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["approved", "confidence"],
}


def verdict(data: Mapping[str, Any] | None, *, parsed: bool = True) -> dict[str, Any]:
    """A verdict as consensus reads it, from `data` parsed with `VALIDATION_SCHEMA`.

    None (a reply that holds no verdict) abstains: `parsed: False` counts as an abstention, never
    as an approval.
    """
    if data is None:
        return {
            "approved": False,
            "confidence": 0.0,
            "issues": ["the checker's reply could not be read"],
            "parsed": False,
        }
    return {**data, "issues": list(data.get("issues") or []), "parsed": parsed}


def parse_verdict(reply: str) -> dict[str, Any]:
    """The verdict in a checker's reply text: its first JSON object of `VALIDATION_SCHEMA` (fenced or
    bare, with prose around it), or an abstention when it holds none."""
    try:
        return verdict(validate_json(reply, VALIDATION_SCHEMA))
    except ValueError:
        return verdict(None)
