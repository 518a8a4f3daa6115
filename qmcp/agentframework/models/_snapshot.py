"""`AgentsSnapshotJSON`: an execution's `agents_snapshot` column, each distinct agent definition stored once.

A run snapshots each slot's agent definition. A 10,001-slot ensemble whose slots all run one agent
wrote the same definition 10,001 times: a 5 MB row, 35–40 ms to insert, rewritten whole by SQLite at
the run's end `UPDATE` (a row whose size changes is rewritten) and read again by every lease renewal.
Stored packed, `{"__qmcp_snapshot__": 1, "agents": [definition, ...], "slots": {slot: index}}`, it
is the size of its distinct definitions plus one short entry a slot.

Every reader still sees `dict[slot, definition]`: the column's type packs on the way in and unpacks
on the way out, so the ORM, Core statements and the driver-level `RowReader`/`RowInserter` (which use
the column type's own bind and result processors) all go through it, on SQLite and PostgreSQL alike.
A stored value without the marker (every row written before) loads as it is: no migration.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

from sqlalchemy import JSON, Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["AgentsSnapshotJSON", "pack_agents", "unpack_agents"]

_MARK = "__qmcp_snapshot__"

_COMPARED = 8
"""How many of the definitions kept under one name a slot is compared with (the latest): a team of
thousands of distinct definitions sharing a name packs in linear time, a repeat beyond them kept again."""


class AgentsSnapshotJSON(TypeDecorator[Any]):
    """JSON whose value, a `dict[slot, definition]`, is stored with each distinct definition once."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return pack_agents(value) if isinstance(value, Mapping) else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return unpack_agents(value)


def pack_agents(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """`snapshot` with each distinct definition kept once and each slot pointing to its own.

    A slot whose definition is a shallow copy of the previous slot's (the slots of one agent object,
    as `_snapshot` makes them) matches it at once, by the identity of its keys and values, in C.
    Others are grouped by their definition's `name` first, then compared (`_same`) with the last few
    definitions kept for that name (`_COMPARED`). Nothing is encoded per slot."""
    agents: list[Any] = []
    kept: dict[str | None, list[int]] = {}
    slots: dict[str, int] = {}
    previous: dict[str, Any] | None = None
    index = 0
    for slot, definition in snapshot.items():
        if previous is not None and _copy_of(previous, definition):
            slots[slot] = index
            continue
        name = definition.get("name") if isinstance(definition, dict) else None
        key = name if isinstance(name, str) else None
        candidates = kept.get(key)
        if candidates is None:
            candidates = kept[key] = []
        for index in candidates[-_COMPARED:]:
            if _same(agents[index], definition):
                break
        else:
            index = len(agents)
            agents.append(definition)
            candidates.append(index)
        slots[slot] = index
        previous = agents[index] if isinstance(agents[index], dict) else None
    return {_MARK: 1, "agents": agents, "slots": slots}


def unpack_agents(value: Any) -> Any:
    """The `dict[slot, definition]` that `pack_agents` packed, each slot's definition its own dict
    (its nested values shared with the slots of the same definition, as `_snapshot` hands them to a
    new run); any other value (an unpacked row written before) as it is."""
    if not isinstance(value, dict) or value.get(_MARK) != 1:
        return value
    agents = value["agents"]
    return {
        slot: dict(agent) if isinstance(agent := agents[index], dict) else agent
        for slot, index in value["slots"].items()
    }


def _same(kept: Any, other: Any) -> bool:
    """Whether `other` is written as the same JSON as `kept`: `==`, with the same types all the way
    down (`1 == 1.0 == True` are three values in JSON) and keys in the same order."""
    if kept is other:
        return True
    if type(kept) is not type(other):
        return False
    if isinstance(kept, dict):
        if len(kept) != len(other):
            return False
        if _copy_of(kept, other):
            return True
        return kept == other and all(
            a == b and _same(x, y) for (a, x), (b, y) in zip(kept.items(), other.items(), strict=True)
        )
    if isinstance(kept, list):
        return len(kept) == len(other) and all(map(_same, kept, other))
    return bool(kept == other)


def _copy_of(kept: dict[str, Any], other: Any) -> bool:
    """Whether `other` is a shallow copy of `kept`: the same key and value objects, in the same order."""
    return (
        type(other) is dict
        and len(other) == len(kept)
        and all(map(operator.is_, kept, other))
        and all(map(operator.is_, kept.values(), other.values()))
    )
