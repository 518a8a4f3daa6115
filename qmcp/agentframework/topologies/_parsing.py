"""Reading model replies: tolerant JSON extraction, confidence, numbers, normalised answers.

Small models break formats, so everything that parses a reply is forgiving here and the
caller decides what to do when parsing still fails (re-ask once, then a recorded fallback).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import TypeAdapter, ValidationError

__all__ = [
    "extract_confidence",
    "extract_json",
    "extract_number",
    "normalize_answer",
    "strip_confidence",
    "validate_json",
]

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_CONFIDENCE = re.compile(r"confidence\s*(?:level|score)?\s*[:=]?\s*(\d{1,3}(?:\.\d+)?)\s*(%?)", re.IGNORECASE)
_CONFIDENCE_LINE = re.compile(r"^\W*confidence\b.*$", re.IGNORECASE | re.MULTILINE)
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?(?:e[-+]?\d+)?", re.IGNORECASE)


def extract_json(text: str) -> Any:
    """The first JSON object (or array) in a reply: fenced or bare, with prose around it.

    Raises ValueError when there is none.
    """
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for start, char in enumerate(candidate):
            if char not in "{[":
                continue
            try:
                value, _ = decoder.raw_decode(candidate[start:])
            except json.JSONDecodeError:
                continue
            return value
    raise ValueError("no JSON object found in the reply")


def validate_json(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Extract a JSON object and check the keys and types `schema` declares (a JSON-schema subset).

    Raises ValueError with what is wrong, so the model can be asked again with that message.
    """
    value = extract_json(text)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object, got " + type(value).__name__)
    props: dict[str, Any] = schema.get("properties", {})
    missing = [key for key in schema.get("required", []) if key not in value]
    if missing:
        raise ValueError(f"missing keys: {', '.join(missing)}")
    for key, sub in props.items():
        if key in value:
            value[key] = _coerce(key, value[key], sub)
    return value


_TYPES: dict[str, Any] = {
    "boolean": bool,
    "number": float,
    "integer": int,
    "string": str,
    "array": list,
    "object": dict,
}


def _coerce(key: str, value: Any, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if not isinstance(kind, str) or kind not in _TYPES:
        return value
    try:
        if kind == "array" and isinstance(value, list):
            return [_coerce(key, v, schema.get("items", {})) for v in value]
        return TypeAdapter(_TYPES[kind]).validate_python(value)
    except ValidationError:
        raise ValueError(f"{key!r} must be a {kind}, got {value!r}") from None


def extract_confidence(value: Any, default: float = 0.5) -> float:
    """A confidence in [0, 1] from a dict's `confidence` or a 'Confidence: 0.8' / '80%' line."""
    raw: Any = None
    if isinstance(value, dict):
        raw = value.get("confidence")
    elif isinstance(value, str):
        match = _CONFIDENCE.search(value)
        if match:
            raw = float(match.group(1)) / (100 if match.group(2) or float(match.group(1)) > 1 else 1)
    try:
        number = float(raw)
    except (TypeError, ValueError):
        return default
    return min(1.0, max(0.0, number))


def strip_confidence(text: str) -> str:
    """The answer without its 'Confidence: ...' line."""
    return _CONFIDENCE_LINE.sub("", text).strip()


def extract_number(value: Any) -> float | None:
    """A numeric answer: a number, a dict's value/answer/score, or the first number in the text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        for key in ("value", "answer", "score", "result"):
            if key in value:
                return extract_number(value[key])
        return None
    if isinstance(value, str):
        match = _NUMBER.search(strip_confidence(value))
        if match:
            return float(match.group(0).replace(",", "."))
    return None


def normalize_answer(text: str) -> str:
    """The form answers are compared in for voting: no confidence line, case, spacing or end punctuation."""
    return re.sub(r"\s+", " ", strip_confidence(text)).strip().strip(".!").lower()
