"""Stored rows on the wire, whatever they hold.

A row stored before its JSON was bounded (or by a version without the bound) may hold a value the
wire serialisers refuse (nested too deep, NaN). Listing it must not fail the whole list for everyone:
such a field is shown as a short note instead (`shown_json`), and the rest of the row as it is.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ..agentframework.models import json_problem

__all__ = ["row_json", "shown_json"]


def shown_json(value: Any) -> Any:
    """`value`, or a one-line note in its place if it cannot be shown as JSON."""
    if not isinstance(value, dict | list):
        return value
    problem = json_problem(value)
    return value if problem is None else f"(not shown: this value {problem.split(';')[0]})"


def row_json(row: BaseModel) -> dict[str, Any]:
    """`row.model_dump(mode="json")`, with each JSON field that cannot be shown replaced by a note."""
    shown = {name: shown_json(getattr(row, name)) for name in type(row).model_fields}
    replaced = {name: value for name, value in shown.items() if value is not getattr(row, name)}
    return row.model_dump(mode="json", exclude=set(replaced)) | replaced
