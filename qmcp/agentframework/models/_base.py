"""`TableModel`: the base of qmcp's tables, on qmcp's own `MetaData` (not the global `SQLModel.metadata`).

A program that also uses SQLModel for its own tables keeps them apart from qmcp's: qmcp's migrations
(`store/migrations`) manage exactly the tables on `metadata`, and nothing of the program's leaks in.
Constraint names follow PostgreSQL's defaults, so a database made by `create_all` before migrations
existed and one made by the baseline migration have the same names, and later migrations can name them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy import MetaData, Table, inspect
from sqlalchemy.orm import configure_mappers, registry
from sqlmodel import SQLModel

__all__ = ["NAMING_CONVENTION", "TableModel", "metadata", "new_row", "table_of"]

M = TypeVar("M", bound="TableModel")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "pk": "%(table_name)s_pkey",
}


class TableModel(SQLModel, registry=registry(metadata=MetaData(naming_convention=NAMING_CONVENTION))):
    """Subclass with `table=True` for a qmcp table."""


metadata: MetaData = TableModel.metadata
"""Every qmcp table, and nothing else."""


def table_of(model: type[TableModel]) -> Table:
    """The Core `Table` of a table model, for statements built without the ORM (the step store's)."""
    table: Table = model.__table__  # type: ignore[attr-defined]  # set by SQLAlchemy's mapping; SQLModel does not declare it
    return table


_IMMUTABLE = (type(None), str, int, float, bool, Enum)


@functools.cache
def _defaults(
    model: type[TableModel],
) -> tuple[Callable[[], Any], dict[str, Any], dict[str, Callable[[], Any]], frozenset[str]]:
    """How `new_row` makes a `model`: the mapper's instance constructor, and the fields by how they
    are filled when not given (a value shared by every row, a call made for each row, or none: required)."""
    if model.__pydantic_post_init__:  # a hook `new_row` would not call
        raise TypeError(f"{model.__name__} has a post-init hook: make it with {model.__name__}(...)")
    configure_mappers()  # as the ORM before its first instance: the attributes must exist
    shared: dict[str, Any] = {}
    made: dict[str, Callable[[], Any]] = {}
    required: set[str] = set()
    for name, field in model.model_fields.items():
        if field.default_factory is not None:
            made[name] = field.default_factory  # type: ignore[assignment]  # qmcp's factories take no data
        elif field.is_required():
            required.add(name)
        elif isinstance(field.default, _IMMUTABLE):
            shared[name] = field.default
        else:  # a mutable default: pydantic's copy of it for each row
            made[name] = functools.partial(field.get_default, call_default_factory=True)
    return inspect(model).class_manager.new_instance, shared, made, frozenset(required)


def new_row(model: type[M], /, **values: Any) -> M:
    """A new (unsaved) row of table model `model` holding `values`, its other fields at their defaults:
    what `model(**values)` makes, values unvalidated as there, but put in place as the ORM puts a
    loaded row's (`RowReader`). `model(**values)` sets each field through SQLModel's `__setattr__`
    and SQLAlchemy's attribute events, and asks pydantic for each default, which inspects the
    signature of each default factory: about 0.15 ms for an `Execution`, a sixth of a server's run
    start, against 5 µs here. A value for no field raises `TypeError` (`model(**values)` drops it)."""
    new_instance, shared, made, required = _defaults(model)
    if unknown := values.keys() - model.model_fields.keys():
        raise TypeError(f"{model.__name__} has no field {', '.join(sorted(unknown))}")
    if missing := required - values.keys():
        raise TypeError(f"{model.__name__} needs {', '.join(sorted(missing))}")
    row: M = new_instance()
    state = row.__dict__
    state.update(shared)
    for name, factory in made.items():
        if name not in values:
            state[name] = factory()
    state.update(values)
    object.__setattr__(row, "__pydantic_fields_set__", set(values))
    return row
