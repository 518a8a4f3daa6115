"""A key read from an oddly named variable never reaches the HTTP API's executions, steps or events, nor MCP."""

from __future__ import annotations

import asyncio
import json

import yaml
from _key_echo import ODD_VARIABLE, key_echo, keyed_team, odd_key
from mcp_sessions import in_process_session, payload
from team import finished, run
from typer.testing import CliRunner

from qmcp.cli import app as cli_app
from qmcp.redaction import MASK


async def test_a_key_in_an_oddly_named_variable_never_reaches_the_api_or_its_events(
    start_app, sqlite_url, tmp_path, monkeypatch
):
    key = odd_key()
    monkeypatch.setenv(ODD_VARIABLE, key)
    with key_echo() as (base_url, seen):
        team = tmp_path / "team.yaml"
        team.write_text(yaml.safe_dump(keyed_team(base_url)))
        for args in (["apply", "-f", str(team)], ["trust", "agent", "keyed"]):  # trusted on this machine
            done = await asyncio.to_thread(CliRunner().invoke, cli_app, ["--db", sqlite_url, *args])
            assert done.exit_code == 0, done.stderr
        server = await start_app(sqlite_url)
        client = server.client
        execution_id = await run(client, "keyed")
        live = asyncio.create_task(client.get(f"/v1/executions/{execution_id}/events"))
        execution = await finished(client, execution_id)
        events = (await live).text
        async with in_process_session(server.app) as session:  # MCP: a run, and the execution above
            over_mcp = [
                payload(await session.call_tool("run_topology", {"name": "keyed", "input": {"prompt": "x"}})),
                payload(await session.call_tool("get_execution", {"execution_id": execution_id})),
            ]
    assert seen == [key, key] and execution["status"] == "failed" and MASK in execution["error"]
    assert [e["status"] for e in over_mcp] == ["failed", "failed"] and all(
        MASK in e["error"] for e in over_mcp
    )
    steps = (await client.get(f"/v1/executions/{execution_id}/steps")).json()
    replayed = (await client.get(f"/v1/executions/{execution_id}/events")).text
    assert "401" in json.dumps(steps) and "401" in events and MASK in replayed
    assert key not in json.dumps([execution, steps, events, replayed, over_mcp])
