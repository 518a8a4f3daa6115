"""The one way a step asks for JSON, shared by the topologies and the offline `test` model."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["JSON_MARKER", "json_instruction", "requested_schema"]

JSON_MARKER = "Reply with only a JSON object matching this JSON schema:"


def json_instruction(schema: dict[str, Any]) -> str:
    """The sentence appended to a prompt whose reply must be JSON of `schema`."""
    return f"{JSON_MARKER}\n{json.dumps(schema, separators=(',', ':'))}"


def requested_schema(prompt: str) -> dict[str, Any] | None:
    """The schema a prompt asks for, if it carries `json_instruction` (used by the `test` model)."""
    at = prompt.rfind(JSON_MARKER)
    if at < 0:
        return None
    try:
        schema, _ = json.JSONDecoder().raw_decode(prompt[at + len(JSON_MARKER) :].lstrip())
    except json.JSONDecodeError:
        return None
    return schema if isinstance(schema, dict) else None
