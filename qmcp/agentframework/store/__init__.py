"""Persistence: engines (SQLite, PostgreSQL), the durable step store and the record queries."""

from ._database import Database
from ._engine import create_engine, ensure_schema, is_sqlite
from ._memory import MemoryStore, Recollection
from ._steps import MemoryStepStore, SqlStepStore, StepRecord, StepStore
from ._trust import add_trust, trust_history, trusted_digests

__all__ = [
    "Database",
    "MemoryStepStore",
    "MemoryStore",
    "Recollection",
    "SqlStepStore",
    "StepRecord",
    "StepStore",
    "add_trust",
    "create_engine",
    "ensure_schema",
    "is_sqlite",
    "trust_history",
    "trusted_digests",
]
