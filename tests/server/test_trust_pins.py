"""Trust pins what the operator reviewed, whatever a client changes over HTTP: a definition swapped
after `qmcp agents show` is refused by `trust --digest`, every PUT that changes a trusted agent
revokes its trust, and `qmcp untrust` ends it; content trusted once and put back stays untrusted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from qmcp.cli import app as cli_app

PROBLEM = "application/problem+json"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI points logging at the test runner's stderr; put the configuration of before back."""
    from qmcp import observability

    yield
    observability.reset_logging()


def _helper(tool: str) -> dict[str, Any]:
    return {
        "name": "helper",
        "config": {"model": "test", "capabilities": ["tool_use"], "mixins": {"tool_use": {"tools": [tool]}}},
    }


async def test_the_operator_trusts_what_was_reviewed_not_what_a_client_swapped_in(start_app, sqlite_url):
    server = await start_app(sqlite_url, model="test")
    client = server.client

    async def qmcp(*args: str) -> Result:
        """The operator's CLI on the server's database (in a thread: it runs its own event loop)."""
        return await asyncio.to_thread(CliRunner().invoke, cli_app, ["--db", sqlite_url, *args])

    async def run() -> int:
        return (await client.post("/v1/topologies/team/run", json={"input": {"prompt": "x"}})).status_code

    assert (await client.post("/v1/agents", json=_helper("json:dumps"))).status_code == 201
    topology = {"name": "team", "type": "pipeline", "agents": {"only": "helper"}}
    assert (await client.post("/v1/topologies", json=topology)).status_code == 201
    shown = json.loads((await qmcp("agents", "show", "helper", "--format", "json")).stdout)["trust"]
    assert shown["items"] == ["Python tool 'json:dumps' (imported, the model may call it)"]

    # the swap: after the review, before the trust
    assert (await client.put("/v1/agents/helper", json=_helper("os:system"))).status_code == 200
    refused = await qmcp("trust", "agent", "helper", "--digest", shown["digest"])
    assert refused.exit_code == 2 and "changed since it was reviewed" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    untrusted = await client.post("/v1/topologies/team/run", json={"input": {"prompt": "x"}})
    assert untrusted.status_code == 403 and untrusted.headers["content-type"] == PROBLEM
    assert "'os:system'" in untrusted.json()["detail"]

    # the reviewed content back, trusted by its digest: it runs
    assert (await client.put("/v1/agents/helper", json=_helper("json:dumps"))).status_code == 200
    assert (await qmcp("trust", "agent", "helper", "--digest", shown["digest"])).exit_code == 0
    assert await run() == 202

    # every change revokes: the trusted content put back after a change stays untrusted
    assert (await client.put("/v1/agents/helper", json=_helper("os:system"))).status_code == 200
    assert (await client.put("/v1/agents/helper", json=_helper("json:dumps"))).status_code == 200
    assert await run() == 403

    # untrust ends the trust of what is stored now
    assert (await qmcp("trust", "agent", "helper", "--digest", shown["digest"])).exit_code == 0
    assert await run() == 202
    untrust = await qmcp("untrust", "topology", "team")
    assert untrust.exit_code == 0 and "revoked 1 trust record(s)" in untrust.stdout
    assert await run() == 403
    assert (await client.get("/v1/executions")).json()["total"] == 2  # only the two trusted runs
