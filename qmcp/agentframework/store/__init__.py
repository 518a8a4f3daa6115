"""Persistence: engines (SQLite, PostgreSQL), the durable step store and the record queries."""

from ._database import Database
from ._engine import create_engine, ensure_schema, is_sqlite
from ._steps import MemoryStepStore, SqlStepStore, StepRecord, StepStore

__all__ = [
    "Database",
    "MemoryStepStore",
    "SqlStepStore",
    "StepRecord",
    "StepStore",
    "create_engine",
    "ensure_schema",
    "is_sqlite",
]
