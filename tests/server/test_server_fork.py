"""Forks over HTTP and MCP (in this process): queued for the server's workers like a resume, under the
caller policy; the lineage and the step-by-step diff of two executions."""

from __future__ import annotations

from mcp_sessions import error_text, in_process_session, payload
from team import PROBLEM, finished, make_team, run


async def test_a_fork_over_http_inherits_the_steps_before_its_step_and_runs_the_rest(start_app, db_url):
    server = await start_app(db_url)
    client = server.client
    await make_team(client)
    parent = await run(client, "plan-write")
    assert (await finished(client, parent))["status"] == "completed"
    steps = (await client.get(f"/v1/executions/{parent}/steps")).json()["steps"]
    assert [s["key"] for s in steps] == ["pipeline/0:plan", "pipeline/1:write"]

    body = {"at": "pipeline/1:write", "set_output": {"pipeline/0:plan": "1. say hello"}}
    accepted = await client.post(
        f"/v1/executions/{parent}/fork", json=body, headers={"X-Correlation-ID": "fork-7"}
    )
    assert accepted.status_code == 202, accepted.text
    fork = accepted.json()["execution_id"]
    done = await finished(client, fork)
    assert done["status"] == "completed" and done["parent_id"] == parent
    assert done["fork_key"] == "pipeline/1:write" and done["requests"] == 1
    assert done["correlation_id"] == "fork-7"
    forked = (await client.get(f"/v1/executions/{fork}/steps")).json()["steps"]
    assert [(s["key"], s["inherited"]) for s in forked] == [
        ("pipeline/0:plan", True),
        ("pipeline/1:write", False),
    ]
    assert "1. say hello" in forked[1]["request"]["messages"][0]["content"]

    lineage = (await client.get(f"/v1/executions/{fork}/lineage")).json()
    assert [a["id"] for a in lineage["ancestors"]] == [parent] and lineage["forks"] == []
    assert [f["id"] for f in (await client.get(f"/v1/executions/{parent}/lineage")).json()["forks"]] == [fork]

    diff = (await client.get(f"/v1/executions/{parent}/diff/{fork}")).json()
    assert [d["key"] for d in diff["steps"]] == ["pipeline/0:plan", "pipeline/1:write"]
    assert diff["steps"][0]["reply_changed"] and diff["steps"][0]["b"]["edited"]
    assert diff["b_totals"]["requests"] == 1 and diff["a_totals"]["requests"] == 2


async def test_a_client_may_not_fork_onto_a_model_the_operator_did_not_allow(start_app, sqlite_url):
    server = await start_app(sqlite_url)
    client = server.client
    await make_team(client)
    parent = await run(client, "plan-write")
    await finished(client, parent)
    refused = await client.post(
        f"/v1/executions/{parent}/fork", json={"at": "pipeline/1:write", "model": "openai:gpt-4.1"}
    )
    assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM
    assert refused.json()["detail"].startswith("model 'openai:gpt-4.1' is not allowed")
    unknown = await client.post(f"/v1/executions/{parent}/fork", json={"at": "pipeline/1:writ"})
    assert unknown.status_code == 404 and "did you mean 'pipeline/1:write'?" in unknown.json()["detail"]
    extra = await client.post(f"/v1/executions/{parent}/fork", json={"at": "x", "runner": "metaflow"})
    assert extra.status_code == 422
    executions = (await client.get("/v1/executions")).json()
    assert executions["total"] == 1


async def test_fork_execution_over_mcp(start_app, sqlite_url):
    server = await start_app(sqlite_url)
    await make_team(server.client)
    parent = await run(server.client, "plan-write")
    await finished(server.client, parent)
    async with in_process_session(server.app) as session:
        result = payload(
            await session.call_tool("fork_execution", {"execution_id": parent, "at": "pipeline/1:write"})
        )
        refused = await session.call_tool(
            "fork_execution",
            {"execution_id": parent, "at": "pipeline/1:write", "agents": {"nope": "writer-a"}},
        )
    assert result["status"] == "completed" and result["id"] != parent and result["parent_id"] == parent
    assert "no slot 'nope'" in error_text(refused)


async def test_the_python_client_forks_and_compares(start_app, sqlite_url):
    from serving import BASE_URL

    from qmcp.client import AsyncQmcpClient

    server = await start_app(sqlite_url)
    await make_team(server.client)
    parent = await run(server.client, "plan-write")
    await finished(server.client, parent)
    async with AsyncQmcpClient(BASE_URL, transport=server.transport()) as client:
        accepted = await client.fork_execution(
            parent, "pipeline/1:write", set_output={"pipeline/0:plan": "1. be brief"}
        )
        await finished(server.client, accepted.execution_id)
        diff = await client.diff_executions(parent, accepted.execution_id)
    assert diff.b.parent_id == parent and diff.steps[0].b is not None and diff.steps[0].b.edited
    assert diff.changed == 2 and diff.b_totals.requests == 1
