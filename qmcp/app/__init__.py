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
| `_evals.py` | query: `qmcp eval` runs, and an eval's matrix of samples × variants, page by page |
| `_retention.py` | retention: prune old finished executions (operator only, unless the server allows clients), `QMCP_RETENTION` |
| `_shapes.py` | one step and one execution shape on the wire (server schemas, `qmcp.client`, MCP) |
| `_forks.py`, `_fork_shapes.py` | fork an execution from a step; its lineage; two executions compared step by step |
| `_summary.py` | a run's answer and what its output means, per topology (the CLI prints it, the console renders it) |
| `_format.py` | how durations, costs, tokens and times read in the CLI and the console |
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from ._define import (
        Action,
        AgentChanges,
        AgentDefined,
        AgentSpec,
        Applied,
        Change,
        TeamDocument,
        TopologyDefined,
        TopologySpec,
        TrustDecision,
        agent_role,
        apply_team,
        create_agent,
        create_topology,
        delete_agent,
        delete_topologies,
        delete_topology,
        put_agent,
        put_topology,
        update_agent,
    )
    from ._evals import (
        EvalCell,
        EvalColumn,
        EvalList,
        EvalMatrix,
        EvalRow,
        EvalSummary,
        cell_correlation,
        eval_matrix,
        eval_status,
        get_eval_run,
        list_evals,
    )
    from ._fork_shapes import ExecutionDiff, Lineage, StepDiff, StepSide, UsageOut
    from ._forks import MAX_EDITED_REPLY, ForkRequest, diff_executions, fork_execution, lineage
    from ._format import format_cost, format_duration, format_tokens, format_when
    from ._queries import (
        ExecutionCost,
        ExecutionPage,
        ExecutionQuery,
        execution_cost,
        execution_steps,
        list_executions,
        list_topologies,
        parse_status,
        topology_graph,
    )
    from ._retention import PruneReport, PruneRequest, RetentionPolicy, parse_duration, prune_executions
    from ._rows import row_json, shown_json
    from ._runs import RunHandle, RunRequest, TeamCache, answer_request, queue_resume, start_run
    from ._shapes import ExecutionOut, OwnerOut, RunAccepted, StepOut
    from ._summary import answer_only, answer_text, summary_lines

_EXPORTS = {
    "RUN_OPTION_POLICY": "_caller",
    "Caller": "_caller",
    "CallerPolicy": "_caller",
    "Door": "_caller",
    "Permission": "_caller",
    "RunOptions": "_caller",
    "checked_run_options": "_caller",
    "runner_option_names": "_caller",
    "Action": "_define",
    "AgentChanges": "_define",
    "AgentDefined": "_define",
    "AgentSpec": "_define",
    "Applied": "_define",
    "Change": "_define",
    "TeamDocument": "_define",
    "TopologyDefined": "_define",
    "TopologySpec": "_define",
    "TrustDecision": "_define",
    "agent_role": "_define",
    "apply_team": "_define",
    "create_agent": "_define",
    "create_topology": "_define",
    "delete_agent": "_define",
    "delete_topologies": "_define",
    "delete_topology": "_define",
    "put_agent": "_define",
    "put_topology": "_define",
    "update_agent": "_define",
    "EvalCell": "_evals",
    "EvalColumn": "_evals",
    "EvalList": "_evals",
    "EvalMatrix": "_evals",
    "EvalRow": "_evals",
    "EvalSummary": "_evals",
    "cell_correlation": "_evals",
    "eval_matrix": "_evals",
    "eval_status": "_evals",
    "get_eval_run": "_evals",
    "list_evals": "_evals",
    "ExecutionDiff": "_fork_shapes",
    "Lineage": "_fork_shapes",
    "StepDiff": "_fork_shapes",
    "StepSide": "_fork_shapes",
    "UsageOut": "_fork_shapes",
    "MAX_EDITED_REPLY": "_forks",
    "ForkRequest": "_forks",
    "diff_executions": "_forks",
    "fork_execution": "_forks",
    "lineage": "_forks",
    "ExecutionCost": "_queries",
    "ExecutionPage": "_queries",
    "ExecutionQuery": "_queries",
    "execution_cost": "_queries",
    "execution_steps": "_queries",
    "list_executions": "_queries",
    "list_topologies": "_queries",
    "parse_status": "_queries",
    "topology_graph": "_queries",
    "PruneReport": "_retention",
    "PruneRequest": "_retention",
    "RetentionPolicy": "_retention",
    "parse_duration": "_retention",
    "prune_executions": "_retention",
    "row_json": "_rows",
    "shown_json": "_rows",
    "RunHandle": "_runs",
    "RunRequest": "_runs",
    "TeamCache": "_runs",
    "answer_request": "_runs",
    "queue_resume": "_runs",
    "start_run": "_runs",
    "ExecutionOut": "_shapes",
    "OwnerOut": "_shapes",
    "RunAccepted": "_shapes",
    "StepOut": "_shapes",
    "answer_only": "_summary",
    "answer_text": "_summary",
    "summary_lines": "_summary",
    "format_cost": "_format",
    "format_duration": "_format",
    "format_tokens": "_format",
    "format_when": "_format",
}
"""Names and the module holding each, imported on first use: `qmcp.client` takes the wire shapes
without the operations' imports (the runners, the store)."""

__all__ = [
    "MAX_EDITED_REPLY",
    "RUN_OPTION_POLICY",
    "Action",
    "AgentChanges",
    "AgentDefined",
    "AgentSpec",
    "Applied",
    "Caller",
    "CallerPolicy",
    "Change",
    "Door",
    "EvalCell",
    "EvalColumn",
    "EvalList",
    "EvalMatrix",
    "EvalRow",
    "EvalSummary",
    "ExecutionCost",
    "ExecutionDiff",
    "ExecutionOut",
    "ExecutionPage",
    "ExecutionQuery",
    "ForkRequest",
    "Lineage",
    "OwnerOut",
    "Permission",
    "PruneReport",
    "PruneRequest",
    "RetentionPolicy",
    "RunAccepted",
    "RunHandle",
    "RunOptions",
    "RunRequest",
    "StepDiff",
    "StepOut",
    "StepSide",
    "TeamCache",
    "TeamDocument",
    "TopologyDefined",
    "TopologySpec",
    "TrustDecision",
    "UsageOut",
    "agent_role",
    "answer_only",
    "answer_request",
    "answer_text",
    "apply_team",
    "cell_correlation",
    "checked_run_options",
    "create_agent",
    "create_topology",
    "delete_agent",
    "delete_topologies",
    "delete_topology",
    "diff_executions",
    "eval_matrix",
    "eval_status",
    "execution_cost",
    "execution_steps",
    "fork_execution",
    "format_cost",
    "format_duration",
    "format_tokens",
    "format_when",
    "get_eval_run",
    "lineage",
    "list_evals",
    "list_executions",
    "list_topologies",
    "parse_duration",
    "parse_status",
    "prune_executions",
    "put_agent",
    "put_topology",
    "queue_resume",
    "row_json",
    "runner_option_names",
    "shown_json",
    "start_run",
    "summary_lines",
    "topology_graph",
    "update_agent",
]


if not TYPE_CHECKING:  # mypy reads the imports above: a name not among them stays an error

    def __getattr__(name: str) -> Any:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module 'qmcp.app' has no attribute {name!r}")
        value = getattr(importlib.import_module(f"qmcp.app.{module}"), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
