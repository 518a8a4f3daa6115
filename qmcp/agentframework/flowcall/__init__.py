"""Agent calls of a Metaflow flow's `foreach` that its tasks make and record without the store.

`MetaflowRunner` prepares them (`PreparedCall`, `encode_calls`) when it launches a flow locally on
SQLite; a task makes its call (`call_prepared`: the model layer and `sqlite3`, no SQLAlchemy, no
topology code), and the join reads the output the runner completed the execution with
(`ended_execution`). Below the store, which shares its SQLite connection settings (`WRITER_PRAGMAS`),
above the model layer. `call_prepared` loads the model layer on first use: a join needs none of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._ended import end_task_without_retry, ended_execution, output_text
from ._prepared import (
    CALLS_VARIABLE,
    IMPORTS_VARIABLE,
    MAX_CALLS_BYTES,
    Prepared,
    PreparedCall,
    encode_calls,
    import_task_plugins,
    prepared_calls,
)
from ._sqlite import (
    STEP_COLUMNS,
    USAGE_COLUMNS,
    WAL_CHECKPOINT_PAGES,
    WAL_FILE_BYTES,
    WRITER_PRAGMAS,
    connect_existing,
    connect_writer,
    json_text,
    utc_text,
)

if TYPE_CHECKING:
    from ._call import call_prepared

__all__ = [
    "CALLS_VARIABLE",
    "IMPORTS_VARIABLE",
    "MAX_CALLS_BYTES",
    "STEP_COLUMNS",
    "USAGE_COLUMNS",
    "WAL_CHECKPOINT_PAGES",
    "WAL_FILE_BYTES",
    "WRITER_PRAGMAS",
    "Prepared",
    "PreparedCall",
    "call_prepared",
    "connect_existing",
    "connect_writer",
    "encode_calls",
    "end_task_without_retry",
    "ended_execution",
    "import_task_plugins",
    "json_text",
    "output_text",
    "prepared_calls",
    "utc_text",
]

if not TYPE_CHECKING:  # mypy reads the import above: a name not among them stays an error

    def __getattr__(name: str) -> Any:
        if name != "call_prepared":
            raise AttributeError(f"module 'qmcp.agentframework.flowcall' has no attribute {name!r}")
        value = importlib.import_module("qmcp.agentframework.flowcall._call").call_prepared
        globals()[name] = value
        return value
