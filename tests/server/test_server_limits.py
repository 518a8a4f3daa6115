"""Idle connections are bounded: event streams per server and per client address, MCP sessions in
number and in idle time. Hundreds of idle streams slowed every other request; thousands of MCP
sessions held memory for half an hour."""

from __future__ import annotations

import asyncio

import httpx
from _eventually import eventually_async
from conftest import BASE_URL
from team import PROBLEM, make_team, run

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}


def _from(app, address: str) -> httpx.AsyncClient:
    """A client of `app` connecting from `address`."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=60)


async def test_event_streams_beyond_the_per_client_or_server_cap_are_refused_429(
    start_app, sqlite_url, doubles
):
    doubles.latency = 30  # the run waits: its streams stay open
    server = await start_app(sqlite_url, max_event_streams=3, max_event_streams_per_client=2)
    client, streams = server.client, server.app.state.qmcp.streams
    await make_team(client)
    execution_id = await run(client, "slow-two")
    path = f"/v1/executions/{execution_id}/events"
    async with _from(server.app, "10.0.0.2") as there, _from(server.app, "10.0.0.3") as elsewhere:
        held = [asyncio.create_task(client.get(path)) for _ in range(2)]
        await eventually_async(lambda: streams.open == 2, "two streams from one client")

        refused = await client.get(path)  # the third from this client
        assert refused.status_code == 429 and refused.headers["content-type"] == PROBLEM
        assert "max_event_streams_per_client" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) > 0

        held.append(asyncio.create_task(there.get(path)))  # another client still may
        await eventually_async(lambda: streams.open == 3, "a stream from another client")
        refused = await elsewhere.get(path)  # the server's cap: a fourth from anyone
        assert refused.status_code == 429 and "at most 3 open (max_event_streams)" in refused.json()["detail"]

        assert (await client.post(f"/v1/executions/{execution_id}/cancel")).status_code == 200
        ended = await asyncio.gather(*held)  # the run stopped: its streams end, and free their places
    assert [response.status_code for response in ended] == [200] * 3
    assert streams.open == 0
    again = await client.get(path)
    assert again.status_code == 200 and "event: end" in again.text and streams.open == 0


async def test_mcp_sessions_beyond_the_cap_are_refused_and_idle_ones_expire(start_app, sqlite_url):
    server = await start_app(sqlite_url, mcp_max_sessions=2, mcp_session_idle_seconds=0.5)
    client = server.client
    opened = [await client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS) for _ in range(2)]
    assert all(response.status_code == 200 for response in opened), [r.text for r in opened]
    refused = await client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert refused.status_code == 503 and "Too many open sessions" in refused.text

    session = opened[0].headers["mcp-session-id"]
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}

    async def expired() -> bool:
        answer = await client.post("/mcp", json=ping, headers=MCP_HEADERS | {"mcp-session-id": session})
        return answer.status_code == 404

    # polled less often than the idle timeout: a request in flight keeps a session alive
    await eventually_async(expired, "the idle session to expire", timeout=10, every=1.0)
    reopened = await client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert reopened.status_code == 200  # expired sessions gave their places back
