"""The team the server tests store over HTTP, and the calls they repeat (for in-process and subprocess
servers alike: each takes an `httpx.AsyncClient`)."""

from __future__ import annotations

import re
from typing import Any

import httpx
from _eventually import eventually_async

PROBLEM = "application/problem+json"

AGENTS = [
    {"name": "planner-a", "role": "planner", "config": {"model": "test"}},
    {"name": "writer-a", "role": "writer", "config": {"model": "test"}},
    {"name": "slow-a", "role": "writer", "config": {"model": "scripted:slow"}},
    {"name": "streamer", "role": "writer", "config": {"model": "scripted:stream"}},
    {"name": "gated-a", "role": "writer", "config": {"model": "test", "capabilities": ["human_in_loop"]}},
]
TOPOLOGIES = [
    {"name": "plan-write", "type": "pipeline", "agents": {"plan": "planner-a", "write": "writer-a"}},
    {"name": "slow-two", "type": "pipeline", "agents": {"s0": "slow-a", "s1": "slow-a"}},
    {"name": "slow-three", "type": "pipeline", "agents": {f"s{i}": "slow-a" for i in range(3)}},
    {"name": "streaming", "type": "pipeline", "agents": {"first": "streamer", "second": "streamer"}},
    {"name": "gated", "type": "pipeline", "agents": {"draft": "writer-a", "publish": "gated-a"}},
    {
        "name": "panel",
        "type": "ensemble",
        "config": {"aggregation_method": "synthesis"},
        "agents": {"one": "planner-a", "two": "writer-a", "aggregator": "writer-a"},
    },
]


async def make_team(client: httpx.AsyncClient) -> None:
    for agent in AGENTS:
        assert (await client.post("/v1/agents", json=agent)).status_code == 201, agent
    for topology in TOPOLOGIES:
        response = await client.post("/v1/topologies", json=topology)
        assert response.status_code == 201, response.text


async def run(client: httpx.AsyncClient, topology: str, prompt: str = "Why is the sky blue?") -> str:
    """Start a run over the API; its execution id."""
    response = await client.post(f"/v1/topologies/{topology}/run", json={"input": {"prompt": prompt}})
    assert response.status_code == 202, response.text
    return str(response.json()["execution_id"])


async def running(client: httpx.AsyncClient, execution_id: str) -> bool:
    return bool((await client.get(f"/v1/executions/{execution_id}")).json()["status"] == "running")


async def finished(client: httpx.AsyncClient, execution_id: str, timeout: float = 60) -> dict[str, Any]:
    """The execution once it is neither pending nor running."""

    async def done() -> dict[str, Any] | None:
        execution: dict[str, Any] = (await client.get(f"/v1/executions/{execution_id}")).json()
        return execution if execution["status"] not in ("pending", "running") else None

    return await eventually_async(done, f"execution {execution_id} to finish", timeout)


def node_classes(html: str) -> dict[str, str]:
    """The DAG's nodes on a page: step key -> its CSS classes."""
    return {key: cls for cls, key in re.findall(r'<g class="(node [^"]*)" data-key="([^"]+)"', html)}
