"""Text PostgreSQL can store: NUL characters replaced at the one door every write goes through.

PostgreSQL's `text`/`varchar` reject NUL (`invalid byte sequence for encoding "UTF8": 0x00`),
SQLite stores it. What users give qmcp is checked up front (`nul_field`: input, definitions,
answers are refused with one line naming the field), and model replies are cleaned where they
come out of the model layer. What is left — an error message quoting a tool's or a server's
text, a memory built from a tool result — must not fail a run halfway (and again on each resume).
So a PostgreSQL engine replaces NUL in every string parameter of every statement with U+FFFD
(`storable_text`) before it reaches the driver. JSON columns are unaffected: their text is
already serialised, and JSON writes NUL as the escape `\\u0000`, which PostgreSQL's `json` type
accepts. SQLite stores NUL as it is, so only such leftover texts (errors, memories) can differ
between the two databases; replies, which topologies read, are the same on both.

Cost: one substring search per string parameter (a step row has about ten); a replacement only
when a NUL is there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from ..models import NUL, storable_text

__all__ = ["storable_parameters", "store_nul_safely"]


def _storable_row(row: Any) -> Any:
    if isinstance(row, Mapping):
        if any(isinstance(value, str) and NUL in value for value in row.values()):
            return {key: storable_text(v) if isinstance(v, str) else v for key, v in row.items()}
        return row
    if isinstance(row, tuple | list) and any(isinstance(value, str) and NUL in value for value in row):
        return type(row)(storable_text(v) if isinstance(v, str) else v for v in row)
    return row


def storable_parameters(parameters: Any, executemany: bool) -> Any:
    """A statement's parameters (one row, or a sequence of rows for executemany) made storable."""
    if executemany and isinstance(parameters, Sequence):
        return [_storable_row(row) for row in parameters]
    return _storable_row(parameters)


def _before_cursor_execute(
    _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, executemany: bool
) -> tuple[str, Any]:
    return statement, storable_parameters(parameters, executemany)


def store_nul_safely(engine: AsyncEngine) -> AsyncEngine:
    """Make every write through `engine` storable (PostgreSQL); returns the engine."""
    if engine.dialect.name == "postgresql":
        event.listen(engine.sync_engine, "before_cursor_execute", _before_cursor_execute, retval=True)
    return engine
