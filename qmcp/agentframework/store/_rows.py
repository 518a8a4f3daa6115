"""Reading one row by its primary key, and inserting one, with the SQLite driver itself, as the ORM would.

`GET /v1/executions/{id}` is the server's hottest read. Through the ORM (`Session.get`) it cost
about 300 µs, of which the SQLite query was 40: the rest was the session, the statement's cache
key, the connection's events and the loading context. `RowReader` keeps what makes the row an
object — SQLAlchemy's own result processors of each column (JSON, UUID, UTC datetimes, enums) and
the mapper's instance constructor — and drops the rest: about 50 µs. The instance is detached, as
one the ORM loaded in a session since closed. Columns named in `skip` are not read and stay
unloaded: reading one of them on the instance raises, as a deferred column of a detached object.

`RowInserter` is the same for a server's run start, whose only write is its execution's row: through
a session and a Core insert it cost about 230 µs, through the driver with the columns' own bind
processors about 100 µs, most of it SQLite's.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Collection
from typing import Any, Generic, TypeVar

from sqlalchemy import Dialect, Engine, bindparam, insert, inspect, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import configure_mappers, make_transient_to_detached

__all__ = ["RowInserter", "RowReader", "row_inserter", "row_reader"]

T = TypeVar("T")

_MADE: weakref.WeakKeyDictionary[Engine, dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()
"""The readers and inserters made for each engine (they hold none: the engine's entry goes with it)."""


def row_reader(model: type[T], engine: Engine, skip: tuple[str, ...] = ()) -> RowReader[T]:
    """`model`'s reader on `engine`, made once per engine: each run opens a `Database` of its own, and
    compiling the reader's query there cost about 3 % of a busy server's loop (py-spy)."""
    made = _MADE.setdefault(engine, {})
    reader: RowReader[T] | None = made.get(("read", model, skip))
    if reader is None:
        reader = made[("read", model, skip)] = RowReader(model, engine.dialect, skip)
    return reader


def row_inserter(model: type[T], engine: Engine) -> RowInserter[T]:
    """`model`'s inserter on `engine`, made once per engine."""
    made = _MADE.setdefault(engine, {})
    inserter: RowInserter[T] | None = made.get(("insert", model))
    if inserter is None:
        inserter = made[("insert", model)] = RowInserter(model, engine.dialect)
    return inserter


class RowReader(Generic[T]):
    """`get(engine, key)`: the `model` row whose single-column primary key is `key`, or None."""

    def __init__(self, model: type[T], dialect: Dialect, skip: Collection[str] = ()) -> None:
        configure_mappers()  # the ORM does it before its first load: instances need their attributes
        mapper = inspect(model)
        table = mapper.local_table
        (primary,) = table.primary_key.columns
        read = [column for column in table.columns if mapper.get_property_by_column(column).key not in skip]
        self.model, self.mapper = model, mapper
        self.sql = str(select(*read).where(primary == bindparam("key")).compile(dialect=dialect))
        self.bind = primary.type.dialect_impl(dialect).bind_processor(dialect)
        self.columns = [
            (
                mapper.get_property_by_column(column).key,
                column.type.dialect_impl(dialect).result_processor(dialect, None),
            )
            for column in read
        ]

    def get(self, engine: Engine, key: Any) -> T | None:
        connection = engine.raw_connection()  # from the engine's pool: its pragmas are set
        try:
            row = connection.cursor().execute(self.sql, (self.bind(key) if self.bind else key,)).fetchone()
        finally:  # back to the pool, which ends the read
            connection.close()
        if row is None:
            return None
        instance: T = self.mapper.class_manager.new_instance()
        values = instance.__dict__  # where the ORM's loading puts a row's values
        for (name, process), value in zip(self.columns, row, strict=True):
            values[name] = process(value) if process is not None else value
        make_transient_to_detached(instance)
        return instance


class RowInserter(Generic[T]):
    """`insert(engine, row)`: a new `model` row written in a transaction of its own, on a pooled
    connection of the SQLite `engine`, as the ORM's insert writes it (each column's own bind processor: JSON,
    UUID, UTC datetimes, enums). A driver error is raised as SQLAlchemy wraps it (`IntegrityError`,
    `OperationalError`, ...), so callers catch what they would from a session; nothing is left written."""

    def __init__(self, model: type[T], dialect: Dialect) -> None:
        configure_mappers()
        mapper = inspect(model)
        table = mapper.local_table
        compiled = insert(table).compile(
            dialect=dialect, column_keys=[column.key for column in table.columns]
        )
        self.sql = str(compiled)
        self.columns = [
            (
                mapper.get_property_by_column(table.c[key]).key,
                table.c[key].type.dialect_impl(dialect).bind_processor(dialect),
            )
            for key in compiled.positiontup or ()
        ]

    def insert(self, engine: Engine, row: T) -> None:
        values = row.__dict__  # a new row's values, where `new_row` and the ORM's attributes keep them
        parameters = tuple(
            process(values[name]) if process is not None else values[name] for name, process in self.columns
        )
        connection = engine.raw_connection()  # from the engine's pool: its pragmas are set
        try:
            connection.cursor().execute(self.sql, parameters)
            connection.commit()
        except sqlite3.Error as error:
            raise DBAPIError.instance(self.sql, parameters, error, sqlite3.Error) from error
        finally:  # back to the pool, which rolls back what was not committed
            connection.close()
