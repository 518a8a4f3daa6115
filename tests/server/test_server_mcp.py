"""The MCP tools with the official `mcp` client: over /mcp (streamable HTTP, in this process) and over
stdio (`qmcp mcp`, a process)."""

from __future__ import annotations

import json
import sys
from typing import Any

from doubles import Doubles
from serving import BASE_URL, HERE
from team import make_team

TOOLS = {
    "list_topologies",
    "run_topology",
    "get_execution",
    "list_human_requests",
    "respond_to_human_request",
}


def _payload(result: Any) -> Any:
    """A tool result's structured content, else its text as JSON."""
    assert not result.is_error, result
    if result.structured_content is not None:
        content = result.structured_content
        return (
            content.get("result", content)
            if isinstance(content, dict) and set(content) == {"result"}
            else content
        )
    return json.loads(result.content[0].text)


async def _exercise(session: Any) -> None:
    await session.initialize()
    listed = await session.list_tools()
    assert {tool.name for tool in listed.tools} >= TOOLS
    topologies = _payload(await session.call_tool("list_topologies", {}))
    assert "plan-write" in [t["name"] for t in topologies]
    done = _payload(
        await session.call_tool("run_topology", {"name": "plan-write", "input": {"prompt": "Plan"}})
    )
    assert done["status"] == "completed" and done["output"]["output"]
    again = _payload(await session.call_tool("get_execution", {"execution_id": done["id"]}))
    assert again["status"] == "completed"
    paused = _payload(
        await session.call_tool("run_topology", {"name": "gated", "input": {"prompt": "Publish"}})
    )
    assert paused["status"] == "paused"
    (request,) = _payload(await session.call_tool("list_human_requests", {"status": "pending"}))
    answered = _payload(
        await session.call_tool(
            "respond_to_human_request", {"request_id": request["id"], "response": "approve"}
        )
    )
    assert answered["resumed_execution"] == paused["id"]
    quick = _payload(
        await session.call_tool(
            "run_topology", {"name": "slow-three", "input": {"prompt": "go"}, "timeout_seconds": 0.1}
        )
    )
    assert quick["status"] in ("pending", "running")  # not finished within the timeout: poll it


async def test_the_mcp_endpoint_over_streamable_http(start_app, sqlite_url, doubles: Doubles):
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    doubles.latency = 0.5  # slow-three outlasts the 0.1 s a call waits
    server = await start_app(sqlite_url)
    await make_team(server.client)
    transport = httpx2.ASGITransport(app=server.app)
    async with (
        httpx2.AsyncClient(transport=transport, base_url=BASE_URL, timeout=60) as http,
        streamable_http_client(f"{BASE_URL}/mcp", http_client=http) as streams,
        ClientSession(*streams) as session,
    ):
        await _exercise(session)


async def test_qmcp_mcp_over_stdio(sqlite_url, start_server, worker_env_server, tmp_path):
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    server = start_server(sqlite_url)  # to store the team through the API
    async with server.client() as client:
        await make_team(client)
    server.stop()
    parameters = StdioServerParameters(
        command=sys.executable,
        args=[str(HERE / "server_driver.py"), "mcp"],
        env={**worker_env_server, "QMCP_DATABASE_URL": sqlite_url, "DRIVER_LATENCY": "2"},
        cwd=str(tmp_path),
    )
    with (tmp_path / "mcp-stderr.log").open("w") as errlog:  # pytest's capture has no file descriptor
        async with stdio_client(parameters, errlog=errlog) as streams, ClientSession(*streams) as session:
            await _exercise(session)
