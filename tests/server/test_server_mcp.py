"""The MCP tools with the official `mcp` client: over /mcp (streamable HTTP, in this process and on a
loopback port) and over stdio (`qmcp mcp`, a process); upstream's tools among them, and failures as
tool errors in the API's sentences (an unknown tool a JSON-RPC error)."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from doubles import Doubles
from mcp_sessions import error_text, in_process_session, payload
from serving import HERE
from team import make_team

TOOLS = {
    "list_topologies",
    "run_topology",
    "get_execution",
    "list_human_requests",
    "respond_to_human_request",
    "list_evals",
    "get_eval",
    "echo",
    "planner",
    "executor",
    "reviewer",
}
FAILURES = [
    ("run_topology", {"name": "nope", "input": {}}, "topology 'nope' not found"),
    ("get_execution", {"execution_id": "not-a-uuid"}, "'not-a-uuid' is not an execution id (a UUID)"),
    ("respond_to_human_request", {"request_id": "nope", "response": "x"}, "human request 'nope' not found"),
    ("list_human_requests", {"status": "bogus"}, "status: Input should be 'pending'"),
    ("get_eval", {"eval_id": "nope"}, "eval 'nope' not found"),
    ("list_evals", {"limit": 0}, "limit: Input should be greater than or equal to 1"),
    ("executor", {"plan": "not a plan"}, ""),
]
"""A tool call that fails, and how its text starts (the sentence HTTP gives, for a domain error)."""


async def _exercise(session: Any) -> None:
    from mcp.shared.exceptions import MCPError
    from mcp_types import INVALID_PARAMS

    listed = await session.list_tools()
    assert {tool.name for tool in listed.tools} >= TOOLS
    for tool, arguments, starts in FAILURES:
        text = error_text(await session.call_tool(tool, arguments))
        assert text.startswith(starts) and "\n" not in text and "Error executing" not in text, (tool, text)
    with pytest.raises(MCPError) as unknown:
        await session.call_tool("no_such_tool", {})
    assert unknown.value.code == INVALID_PARAMS and "Unknown tool: no_such_tool" in unknown.value.message
    assert payload(await session.call_tool("echo", {"message": "hello"})) == "hello"
    topologies = payload(await session.call_tool("list_topologies", {}))
    assert "plan-write" in [t["name"] for t in topologies]
    done = payload(
        await session.call_tool("run_topology", {"name": "plan-write", "input": {"prompt": "Plan"}})
    )
    assert done["status"] == "completed" and done["output"]["output"]
    again = payload(await session.call_tool("get_execution", {"execution_id": done["id"]}))
    assert again["status"] == "completed"
    paused = payload(
        await session.call_tool("run_topology", {"name": "gated", "input": {"prompt": "Publish"}})
    )
    assert paused["status"] == "paused"
    (request,) = payload(await session.call_tool("list_human_requests", {"status": "pending"}))
    answered = payload(
        await session.call_tool(
            "respond_to_human_request", {"request_id": request["id"], "response": "approve"}
        )
    )
    assert answered["resumed_execution"] == paused["id"]
    quick = payload(
        await session.call_tool(
            "run_topology", {"name": "slow-three", "input": {"prompt": "go"}, "timeout_seconds": 0.1}
        )
    )
    assert quick["status"] in ("pending", "running")  # not finished within the timeout: poll it


async def test_the_mcp_endpoint_over_streamable_http(start_app, sqlite_url, doubles: Doubles):
    doubles.latency = 0.5  # slow-three outlasts the 0.1 s a call waits
    server = await start_app(sqlite_url)
    await make_team(server.client)
    async with in_process_session(server.app) as session:
        await _exercise(session)


async def test_qmcp_serve_on_loopback_then_qmcp_mcp_over_stdio(
    sqlite_url, start_server, worker_env_server, tmp_path
):
    """The SDK's own transports, each against a process: `qmcp serve`'s /mcp on a loopback port,
    then `qmcp mcp` on the same database; neither logs a traceback for the failures."""
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client

    server = start_server(sqlite_url, env={"DRIVER_LATENCY": "2"})
    async with server.client() as client:
        await make_team(client)
    async with streamable_http_client(f"{server.url}/mcp") as streams, ClientSession(*streams) as session:
        await session.initialize()
        await _exercise(session)
    server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log and "Error executing" not in log, log[-3000:]

    parameters = StdioServerParameters(
        command=sys.executable,
        args=[str(HERE / "server_driver.py"), "mcp"],
        env={**worker_env_server, "QMCP_DATABASE_URL": sqlite_url, "DRIVER_LATENCY": "2"},
        cwd=str(tmp_path),
    )
    errors = tmp_path / "mcp-stderr.log"
    with errors.open("w") as errlog:  # pytest's capture has no file descriptor
        async with stdio_client(parameters, errlog=errlog) as streams, ClientSession(*streams) as session:
            await session.initialize()
            await _exercise(session)
    said = errors.read_text()
    assert "Traceback" not in said and "Error executing" not in said, said[-3000:]


def test_building_the_mcp_server_leaves_the_hosts_logging_alone(sqlite_url, monkeypatch):
    """The SDK's constructor configures the root logger (`logging.basicConfig`, a Rich handler)."""
    import logging

    from qmcp.server import ServerOptions, create_app

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # a host that configured nothing (pytest adds its own)
    monkeypatch.setattr(root, "level", logging.WARNING)
    create_app(ServerOptions.from_settings(db_url=sqlite_url))
    assert root.handlers == [] and root.level == logging.WARNING
