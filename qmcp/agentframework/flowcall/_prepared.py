"""The agent calls `MetaflowRunner` prepares for the `foreach` steps of the flow it launches.

The runner has run the topology's code up to those calls in its own process, so it knows each call's
prompt, system prompt, settings and model as `StepContext`'s plain step would send them
(`StepContext.prepared_call`). It hands them to the flow's tasks in `CALLS_VARIABLE`, with the
execution, its SQLite file and the lease's token, so that a task makes and records its call without
running (or importing) the topology's code and the store.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..registry import import_plugins

__all__ = [
    "CALLS_VARIABLE",
    "IMPORTS_VARIABLE",
    "MAX_CALLS_BYTES",
    "Prepared",
    "PreparedCall",
    "encode_calls",
    "import_task_plugins",
    "prepared_calls",
]

IMPORTS_VARIABLE = "QMCP_METAFLOW_IMPORTS"
"""Modules every task of a generated flow imports before it runs, comma-separated (e.g. ones calling
`register_model`), after those of `QMCP_IMPORTS`."""

CALLS_VARIABLE = "QMCP_FLOW_CALLS"
"""The prepared calls of a flow run `MetaflowRunner` launched locally, as JSON (`encode_calls`)."""

MAX_CALLS_BYTES = 100_000
"""The most the runner puts in `CALLS_VARIABLE`: Linux refuses an environment string over 128 KiB. A
team whose prompts weigh more runs its calls through the topology's code, as a flow run by hand does."""


@dataclass(frozen=True)
class PreparedCall:
    """One agent call as the plain step makes it: its row's names, what it sends, how it retries."""

    key: str
    slot: str
    agent_name: str
    model: str
    base_url: str | None
    api_key_env: str | None
    role: str
    system: str
    prompt: str
    settings: dict[str, Any]
    timeout_seconds: float | None
    max_tool_calls: int
    max_retries: int
    """Retries of a transient model error: 0 when the run retries none."""
    base_delay: float
    max_delay: float


@dataclass(frozen=True)
class Prepared:
    """What a task of the launched run reads from `CALLS_VARIABLE`."""

    execution_id: str
    database: str
    """The SQLite file of qmcp's database."""
    owner_token: str
    """The token of the runner's lease on the execution, which fences the rows the tasks write."""
    calls: dict[str, PreparedCall]


def encode_calls(
    execution_id: object, database: str, owner_token: str, calls: Sequence[PreparedCall]
) -> str | None:
    """`CALLS_VARIABLE`'s value, or None when it would exceed `MAX_CALLS_BYTES`."""
    value = json.dumps(
        {
            "execution_id": str(execution_id),
            "database": database,
            "owner_token": owner_token,
            "calls": [dataclasses.asdict(call) for call in calls],
        },
        separators=(",", ":"),
    )
    return value if len(value.encode()) <= MAX_CALLS_BYTES else None


def _read(value: str) -> Prepared:
    data = json.loads(value)
    calls = {call["key"]: PreparedCall(**call) for call in data["calls"]}
    return Prepared(data["execution_id"], data["database"], data["owner_token"], calls)


def prepared_calls(execution_id: str) -> Prepared | None:
    """The calls the runner prepared for this process's flow run of `execution_id`, if it prepared any."""
    value = os.environ.get(CALLS_VARIABLE)
    if not value:
        return None
    prepared = _read(value)
    return prepared if prepared.execution_id == execution_id else None


def import_task_plugins() -> None:
    """Import the user's modules a flow's task needs: `QMCP_IMPORTS` (as the CLI and the server import
    them), then `IMPORTS_VARIABLE`; an `InvalidConfigError` names a module that cannot be imported."""
    import_plugins()
    import_plugins(variable=IMPORTS_VARIABLE)
