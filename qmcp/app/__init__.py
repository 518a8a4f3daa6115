"""The application layer: the operations every front door shares.

Python, the CLI, the HTTP API, the console, MCP and Metaflow steps are thin adapters over these
operations: they parse what their caller sent, call one operation with a typed request and a
`Caller`, and render the answer (or map the one error tree of `qmcp.agentframework.errors`). What a
remote caller may decide is the caller policy (`_caller.py`), one table for every door.

| module | holds |
|---|---|
| `_caller.py` | `Caller` (the operator, or a remote client), `CallerPolicy` (the operator's limits), the table of run options |
| `_define.py` | define: apply a team; create, update and delete agents and topologies, with one set of checks |
| `_runs.py` | run: start (a handle with the execution id at once), resume, cancel, answer a human request |
| `_queries.py` | query: executions, steps, cost, the DAG |
| `_shapes.py` | one step and one execution shape on the wire (server schemas, `qmcp.client`, MCP) |
"""

from ._caller import (
    RUN_OPTION_POLICY,
    Caller,
    CallerPolicy,
    Door,
    Permission,
    RunOptions,
    checked_run_options,
    runner_option_names,
)
from ._runs import RunHandle, RunRequest, answer_request, queue_resume, start_run

__all__ = [
    "RUN_OPTION_POLICY",
    "Caller",
    "CallerPolicy",
    "Door",
    "Permission",
    "RunHandle",
    "RunOptions",
    "RunRequest",
    "answer_request",
    "checked_run_options",
    "queue_resume",
    "runner_option_names",
    "start_run",
]
