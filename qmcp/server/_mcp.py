"""The server's Model Context Protocol endpoint (`/mcp`, streamable HTTP) and `qmcp mcp` (stdio).

Both offer the same tools, built on the official `mcp` SDK, over the same run manager as the HTTP API:
`list_topologies`, `run_topology` (waits for the result up to a timeout, else returns the execution
id to poll), `get_execution`, `list_human_requests` and `respond_to_human_request` (which resumes the
paused run).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from ..agentframework.models import ExecutionStatus
from ._runs import RunManager
from ._schemas import execution_out

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

__all__ = ["mcp_server"]

_WAITING = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING)


def mcp_server(runs: RunManager, version: str) -> MCPServer:
    """The MCP server whose tools drive `runs` (and read the database it runs on)."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer(
        name="qmcp",
        version=version,
        instructions="Run qmcp's stored agent topologies, inspect executions, answer human requests.",
        log_level="WARNING",
    )

    @server.tool()
    async def list_topologies() -> list[dict[str, Any]]:
        """The stored topologies: name, type, description and the agent of each slot."""
        async with runs.database() as db:
            found = [await db.get_topology(t.name) for t, _ in await db.list_topologies()]
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
    async def run_topology(
        name: str,
        input: dict[str, Any],
        runner: str = "local",
        timeout_seconds: float = 60.0,
    ) -> dict[str, Any]:
        """Run a stored topology on `input` (e.g. {"prompt": "..."}); wait up to `timeout_seconds` for
        its result. A run still going then is returned with its execution_id: poll get_execution."""
        execution = await runs.submit(name, input, runner, {})
        deadline = time.monotonic() + timeout_seconds
        async with runs.database() as db:
            while True:
                current = await db.get_execution(execution.id)
                if current.status not in _WAITING or time.monotonic() >= deadline:
                    return _summary(current)
                await asyncio.sleep(0.1)

    @server.tool()
    async def get_execution(execution_id: str) -> dict[str, Any]:
        """An execution's status, output, error, tokens and cost."""
        async with runs.database() as db:
            execution = await db.get_execution(execution_id)
        return _summary(execution)

    @server.tool()
    async def list_human_requests(status: str = "pending") -> list[dict[str, Any]]:
        """Questions waiting for a person (or those in another status): id, prompt, options, context."""
        async with runs.database() as db:
            rows = await db.list_human_requests(status=status or None, limit=200)
        return [
            {
                "id": row.id,
                "request_type": row.request_type,
                "prompt": row.prompt,
                "options": row.options,
                "context": row.context,
                "status": row.status,
                "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            }
            for row in rows
        ]

    @server.tool()
    async def respond_to_human_request(
        request_id: str, response: str, responded_by: str | None = None
    ) -> dict[str, Any]:
        """Answer a human request (one of its options, or free text); a paused run then goes on."""
        async with runs.database() as db:
            request, answer = await db.answer_human_request(request_id, response, responded_by=responded_by)
        resumed = await runs.answered(request)
        return {
            "request_id": request.id,
            "response": answer.response,
            "resumed_execution": str(resumed) if resumed else None,
        }

    return server


def _summary(execution: Any) -> dict[str, Any]:
    out = execution_out(execution).model_dump(mode="json")
    return {
        key: out[key]
        for key in (
            "id",
            "topology_name",
            "status",
            "output",
            "error",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "duration_ms",
        )
    } | {"execution_id": out["id"]}
