"""The server's Model Context Protocol endpoint (`/mcp`, streamable HTTP) and `qmcp mcp` (stdio).

Both offer the same tools, built on the official `mcp` SDK, over the same run manager as the HTTP API:
`list_topologies`, `run_topology` (waits for the result up to a timeout, else returns the execution
id to poll), `fork_execution` (the same, for a fork of an execution from one of its steps), `get_execution`,
`list_human_requests` and `respond_to_human_request` (which resumes the paused run), `list_evals` and
`get_eval` (read only: an eval is started by the operator, `qmcp eval`); and the tools of `/v1/tools`
(upstream's echo, planner, executor and reviewer, and the
registered Python tools), under the same limits as over HTTP (`_mcp_protocol.py`).

A domain error is an `isError` result naming the cause in the sentence HTTP gives as `detail`; a bad
argument (an enum value outside its list, a negative timeout) one naming the argument; an unknown
tool a JSON-RPC error. None of them logs a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, ParamSpec, TypeVar

from pydantic import Field

from ..agentframework.errors import QmcpError
from ..app import Caller, Door, ExecutionOut, ForkRequest, RunRequest, answer_request, shown_json
from ..app import list_evals as stored_evals
from ..app import list_topologies as stored_topologies
from ..eval import eval_report
from ..redaction import redact
from .runs import RunManager
from .tools import ToolLimits

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from ..agentframework.models import Execution

__all__ = ["mcp_server"]

Runner = Literal["local", "async", "metaflow"]
"""The runners a remote caller may name (the HTTP API's `runner`); the caller policy narrows them."""
RequestStatus = Literal["pending", "responded", "expired", "cancelled"]
"""`HumanRequestStatus`'s values, spelled out so the tool's schema lists them inline."""
MAX_WAIT_SECONDS = 3600.0
"""The longest a `run_topology` call holds its request open (a remote caller's run timeout cap)."""

P = ParamSpec("P")
T = TypeVar("T")


def _tool_errors(tool: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """qmcp's errors become the tool's error result, naming the cause in the sentence HTTP gives
    (logged without a traceback); anything else stays a crash the SDK reports as such."""
    from mcp.server.mcpserver.exceptions import ToolError

    @functools.wraps(tool)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await tool(*args, **kwargs)
        except QmcpError as error:
            raise ToolError(redact(str(error))) from None

    return call


def mcp_server(runs: RunManager, version: str, tool_limits: ToolLimits | None = None) -> MCPServer:
    """The MCP server whose tools drive `runs` (and read the database it runs on). `tool_limits`
    bound the server tools' spend: the HTTP API's own, so both doors count against one cap (a
    server of its own, `qmcp mcp`, takes them from the settings)."""
    from ._mcp_protocol import QmcpMCPServer

    server = QmcpMCPServer(
        runs,
        tool_limits or ToolLimits.from_settings(),
        name="qmcp",
        version=version,
        instructions="Run qmcp's stored agent topologies, inspect executions, answer human requests.",
        log_level="WARNING",
    )

    @server.tool()
    @_tool_errors
    async def list_topologies() -> list[dict[str, Any]]:
        """The stored topologies: name, type, description and the agent of each slot."""
        async with runs.database() as db:
            found = await stored_topologies(db)
        return [
            {
                "name": topology.name,
                "type": str(topology.topology_type),
                "description": topology.description,
                "agents": {slot: agent.name for slot, agent in agents.items()},
            }
            for topology, agents in found
        ]

    @server.tool()
    @_tool_errors
    async def run_topology(
        name: str,
        input: dict[str, Any],
        runner: Runner = "local",
        timeout_seconds: Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS)] = 60.0,
        config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run a stored topology on `input` (e.g. {"prompt": "..."}); wait up to `timeout_seconds` for
        its result. A run still going then is returned with its execution_id: poll get_execution.
        `config`: run options a client may set (timeout_seconds, max_cost_usd, max_tokens,
        max_concurrent, max_retries, correlation_id, and a model_override the server allows)."""
        execution = await runs.submit(RunRequest(name, input, runner, config or {}), Caller.client(Door.MCP))
        stopped = runs.stopped(execution.id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_seconds):
                await stopped.wait()
        async with runs.database() as db:
            return _summary(await db.get_execution(execution.id))

    @server.tool()
    @_tool_errors
    async def fork_execution(
        execution_id: str,
        at: str,
        model: str | None = None,
        agents: dict[str, str] | None = None,
        input: dict[str, Any] | None = None,
        set_output: dict[str, str] | None = None,
        timeout_seconds: Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS)] = 60.0,
    ) -> dict[str, Any]:
        """Fork an execution at step `at` (a step key, see its steps): the steps started before it are
        reused as recorded (not paid again), `at` and the rest run again. `model`: a model override
        the server allows; `agents`: slot -> a stored, trusted agent; `input`: a new input;
        `set_output`: step key -> the reply to put in its place first. Waits up to `timeout_seconds`
        like run_topology; the result is the fork's execution (its `id`, `parent_id`, status)."""
        request = ForkRequest(execution_id, at, model, agents or {}, input, set_output or {})
        execution = await runs.fork(request, Caller.client(Door.MCP))
        stopped = runs.stopped(execution.id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_seconds):
                await stopped.wait()
        async with runs.database() as db:
            return _summary(await db.get_execution(execution.id))

    @server.tool()
    @_tool_errors
    async def get_execution(execution_id: str) -> dict[str, Any]:
        """An execution's status, output, error, tokens and cost."""
        async with runs.database() as db:
            execution = await db.get_execution(execution_id)
        return _summary(execution)

    @server.tool()
    @_tool_errors
    async def list_human_requests(
        status: RequestStatus | None = "pending",
    ) -> list[dict[str, Any]]:
        """Questions waiting for a person (or those in another status; null: all): id, prompt, options, context."""
        async with runs.database() as db:
            rows = await db.list_human_requests(status=status, limit=200)
        return [
            {
                "id": row.id,
                "request_type": row.request_type,
                "prompt": row.prompt,
                "options": shown_json(row.options),
                "context": shown_json(row.context),
                "status": row.status,
                "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            }
            for row in rows
        ]

    @server.tool()
    @_tool_errors
    async def respond_to_human_request(
        request_id: str, response: str, responded_by: str | None = None
    ) -> dict[str, Any]:
        """Answer a human request (one of its options, or free text); a paused run then goes on."""
        async with runs.database() as db:
            request, answer = await answer_request(
                db, request_id, response, Caller.client(Door.MCP), responded_by=responded_by
            )
        resumed = await runs.answered(request)
        return {
            "request_id": request.id,
            "response": answer.response,
            "resumed_execution": str(resumed) if resumed else None,
        }

    @server.tool()
    @_tool_errors
    async def list_evals(
        limit: Annotated[int, Field(ge=1, le=500)] = 50, offset: Annotated[int, Field(ge=0)] = 0
    ) -> list[dict[str, Any]]:
        """`qmcp eval` runs, newest first: id, status, the variants compared, samples and cells recorded."""
        async with runs.database() as db:
            found = await stored_evals(db, limit=limit, offset=offset)
        return [summary.model_dump(mode="json") for summary in found.evals]

    @server.tool()
    @_tool_errors
    async def get_eval(eval_id: str) -> dict[str, Any]:
        """An eval's report: per variant accuracy with a 95 % interval, tokens, cost, latency p50/p95 and
        failures; each pair of variants compared on the same samples (difference, test, cost ratio)."""
        async with runs.database() as db:
            report = await eval_report(db, eval_id)
        return report.model_dump(mode="json")

    return server


def _summary(execution: Execution) -> dict[str, Any]:
    """The execution as every door shows it (`qmcp.app.ExecutionOut`)."""
    return ExecutionOut.of(execution).model_dump(mode="json")
