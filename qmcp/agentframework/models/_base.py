"""`TableModel`: the base of qmcp's tables, on qmcp's own `MetaData` (not the global `SQLModel.metadata`).

A program that also uses SQLModel for its own tables keeps them apart from qmcp's: qmcp's migrations
(`store/migrations`) manage exactly the tables on `metadata`, and nothing of the program's leaks in.
Constraint names follow PostgreSQL's defaults, so a database made by `create_all` before migrations
existed and one made by the baseline migration have the same names, and later migrations can name them.
"""

from __future__ import annotations

from sqlalchemy import MetaData, Table
from sqlalchemy.orm import registry
from sqlmodel import SQLModel

__all__ = ["NAMING_CONVENTION", "TableModel", "metadata", "table_of"]

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
