"""The QMCP server's endpoints, in this process: the app on the test's loop, driven by httpx."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import timedelta
from urllib.parse import quote

import pytest
from _eventually import eventually_async
from doubles import Doubles
from serving import BASE_URL, App
from sqlalchemy import update
from team import AGENTS, PROBLEM, finished, make_team, run, running

from qmcp.agentframework.models import HumanRequest, utcnow
from qmcp.agentframework.store import Database
from qmcp.client import (
    AsyncQmcpClient,
    HumanRequestConflictError,
    HumanRequestExpiredError,
    QmcpClientError,
    ToolNotFoundError,
)


@pytest.fixture
async def server(start_app, db_url) -> App:
    return await start_app(db_url, model="test")


async def test_health_ids_and_metrics(server):
    client = server.client
    health = await client.get("/health", headers={"X-Correlation-ID": "corr-1"})
    assert health.json() == {"status": "healthy", "version": health.json()["version"]}
    assert health.headers["x-correlation-id"] == "corr-1" and len(health.headers["x-request-id"]) == 32
    generated = (await client.get("/health")).headers["x-correlation-id"]
    assert len(generated) == 32 and generated != (await client.get("/health")).headers["x-correlation-id"]
    await client.post("/v1/tools/echo", json={"input": {"message": "x"}})
    text = (await client.get("/metrics")).text
    for name in (
        "qmcp_http_requests_total",
        "qmcp_http_request_duration_seconds",
        "qmcp_tool_invocations_total",
        "qmcp_tool_duration_seconds",
        "qmcp_hitl_requests_total",
        "qmcp_runs_total",
        "qmcp_steps_total",
        "qmcp_tokens_total",
    ):
        assert name in text, name
    assert 'path="/v1/tools/{tool_name}"' in text  # routes, not raw paths, as labels
    document = (await client.get("/metrics/json")).json()
    assert document["qmcp_tool_invocations_total"]["type"] == "counter"
    assert (await client.get("/openapi.json")).json()["info"]["title"] == "QMCP server"


async def test_tools_and_invocations(server):
    client = server.client
    tools = {t["name"]: t for t in (await client.get("/v1/tools")).json()["tools"]}
    assert {"echo", "planner", "executor", "reviewer", "add_numbers", "explode"} <= set(tools)
    assert tools["add_numbers"]["input_schema"]["required"] == ["a", "b"]
    echo = (
        await client.post("/v1/tools/echo", json={"input": {"message": "hello"}, "correlation_id": "c-9"})
    ).json()
    assert echo["result"] == "hello" and echo["error"] is None
    added = await client.post("/v1/tools/add_numbers", json={"input": {"a": 2, "b": 3}})
    assert added.json()["result"] == 5
    broken = await client.post("/v1/tools/explode", json={"input": {}})
    assert broken.status_code == 200 and "the tool broke" in broken.json()["error"]
    invalid = (await client.post("/v1/tools/executor", json={"input": {"plan": "x"}})).json()
    assert invalid["result"] is None and invalid["error"].startswith("invalid input for executor: plan")
    missing = await client.post("/v1/tools/nope", json={"input": {}})
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
    assert missing.json()["detail"] == "tool 'nope' not found; list them at GET /v1/tools"

    plan = (await client.post("/v1/tools/planner", json={"input": {"goal": "launch a product"}})).json()[
        "result"
    ]
    assert plan["goal"] == "launch a product" and plan["estimated_steps"] == len(plan["steps"]) > 0
    assert {"step", "action", "description"} == set(plan["steps"][0])
    dry = (await client.post("/v1/tools/executor", json={"input": {"plan": plan}})).json()["result"]
    assert dry["mode"] == "dry_run" and {r["status"] for r in dry["results"]} == {"simulated"}
    live = (await client.post("/v1/tools/executor", json={"input": {"plan": plan, "dry_run": False}})).json()
    assert live["result"]["mode"] == "live" and all(r["output"] for r in live["result"]["results"])
    review = (
        await client.post(
            "/v1/tools/reviewer", json={"input": {"result": live["result"], "criteria": ["safety", "cost"]}}
        )
    ).json()["result"]
    assert [c["criterion"] for c in review["checks"]] == ["safety", "cost"]
    assert review["overall_status"] in ("approved", "changes_requested")

    listed = (await client.get("/v1/invocations", params={"tool_name": "echo"})).json()
    assert listed["count"] == 1 and {i["tool_name"] for i in listed["invocations"]} == {"echo"}
    failed = (await client.get("/v1/invocations", params={"status": "failed"})).json()["invocations"]
    assert {i["tool_name"] for i in failed} == {"explode", "executor"}
    one = (await client.get(f"/v1/invocations/{echo['invocation_id']}")).json()
    assert (one["status"], one["result"], one["correlation_id"]) == ("success", "hello", "c-9")
    assert one["duration_ms"] is not None and one["completed_at"]
    assert (await client.get("/v1/invocations", params={"limit": 501})).status_code == 422
    assert (await client.get(f"/v1/invocations/{uuid.uuid4()}")).status_code == 404


async def test_human_requests_in_upstreams_shapes(server):
    client = server.client
    body = {
        "id": "deploy-1",
        "request_type": "approval",
        "prompt": "Deploy?",
        "options": ["approve", "reject"],
    }
    created = await client.post("/v1/human/requests", json=body)
    assert created.status_code == 201
    assert created.json()["status"] == "pending" and created.json()["expires_at"]
    assert (await client.post("/v1/human/requests", json=body)).status_code == 409
    short = await client.post("/v1/human/requests", json=body | {"id": "x", "timeout_seconds": 10})
    assert short.status_code == 422
    odd = await client.post("/v1/human/requests", json=body | {"id": "y", "request_type": "a vote"})
    assert odd.status_code == 422  # another type is taken as upstream does, within a bounded charset
    got = (await client.get("/v1/human/requests/deploy-1")).json()
    assert got["request"]["context"] == {} and got["response"] is None
    listed = (
        await client.get("/v1/human/requests", params={"status": "pending", "request_type": "approval"})
    ).json()
    assert [r["id"] for r in listed["requests"]] == ["deploy-1"] and listed["count"] == 1

    bad = await client.post("/v1/human/responses", json={"request_id": "deploy-1", "response": "maybe"})
    assert bad.status_code == 400 and "Response must be one of: ['approve', 'reject']" in bad.json()["detail"]
    answer = await client.post(
        "/v1/human/responses",
        json={
            "request_id": "deploy-1",
            "response": "approve",
            "responded_by": "ana",
            "response_metadata": {"n": 1},
        },
    )
    assert answer.status_code == 201 and answer.json()["responded_by"] == "ana"
    again = await client.post("/v1/human/responses", json={"request_id": "deploy-1", "response": "reject"})
    assert again.status_code == 409
    ghost = await client.post("/v1/human/responses", json={"request_id": "ghost", "response": "x"})
    assert ghost.status_code == 404
    got = (await client.get("/v1/human/requests/deploy-1")).json()
    assert got["request"]["status"] == "responded" and got["response"]["response"] == "approve"

    await client.post(
        "/v1/human/requests", json=body | {"id": "late", "request_type": "input", "options": None}
    )
    async with Database(server.db_url) as db, db.sessions() as session, session.begin():  # an hour passes
        await session.exec(
            update(HumanRequest)
            .where(HumanRequest.id == "late")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert (await client.get("/v1/human/requests/late")).json()["request"]["status"] == "expired"
    gone = await client.post("/v1/human/responses", json={"request_id": "late", "response": "x"})
    assert gone.status_code == 410 and gone.headers["content-type"] == PROBLEM


async def test_agents_topologies_and_runs(server):
    client = server.client
    await make_team(client)
    assert (await client.post("/v1/agents", json=AGENTS[0])).status_code == 409
    bad = await client.post("/v1/agents", json={"name": "x", "config": {"temperature": 5}})
    assert bad.status_code == 400 and "temperature" in bad.json()["detail"]
    assert (await client.get("/v1/agents/planner-a")).json()["role"] == "planner"
    changed = await client.put(
        "/v1/agents/writer-a", json={"name": "writer-a", "role": "writer", "description": "new"}
    )
    assert changed.json()["description"] == "new"
    assert (await client.get("/v1/agents/ghost")).status_code == 404
    names = [a["name"] for a in (await client.get("/v1/agents")).json()["agents"]]
    assert names == sorted(names) and "planner-a" in names
    wrong = await client.post(
        "/v1/topologies", json={"name": "t", "type": "crosscheck", "agents": {"primary": "writer-a"}}
    )
    assert wrong.status_code == 400 and "checker" in wrong.json()["detail"]
    assert (await client.get("/v1/topologies/plan-write")).json()["agents"] == {
        "plan": "planner-a",
        "write": "writer-a",
    }
    dag = (await client.get("/v1/topologies/plan-write/dag")).json()
    assert [n["id"] for n in dag["nodes"]] == ["input", "pipeline/0:plan", "pipeline/1:write", "output"]

    accepted = await client.post(
        "/v1/topologies/plan-write/run",
        json={"input": {"prompt": "Plan a launch"}},
        headers={"X-Correlation-ID": "run-7"},
    )
    assert accepted.status_code == 202 and accepted.json()["status"] == "pending"
    execution = await finished(client, accepted.json()["execution_id"])
    assert execution["status"] == "completed" and execution["origin"] == "server"
    assert execution["correlation_id"] == "run-7" and execution["output"]["output"]
    steps = (await client.get(f"/v1/executions/{execution['id']}/steps")).json()["steps"]
    assert [s["key"] for s in steps] == ["pipeline/0:plan", "pipeline/1:write"]
    listed = (
        await client.get("/v1/executions", params={"topology": "plan-write", "status": "completed"})
    ).json()
    assert [e["id"] for e in listed["executions"]] == [execution["id"]] and listed["total"] == 1
    assert (await client.get("/v1/executions", params={"status": "nope"})).status_code == 400

    refused = await client.post(
        "/v1/topologies/plan-write/run", json={"input": {"prompt": "x"}, "config": {"bogus": 1}}
    )
    assert refused.status_code == 400 and "bogus" in refused.json()["detail"]
    assert (await client.post("/v1/topologies/ghost/run", json={"input": {}})).status_code == 404
    deep: dict = {}
    node = deep
    for _ in range(150):
        node["x"] = {}
        node = node["x"]
    assert (await client.post("/v1/topologies/plan-write/run", json={"input": deep})).status_code == 400
    assert (await client.delete("/v1/agents/planner-a")).status_code == 400  # a topology uses it
    assert (await client.delete("/v1/topologies/plan-write")).status_code == 400  # an execution ran it
    assert (await client.delete("/v1/topologies/plan-write", params={"force": True})).status_code == 204
    assert (await client.get(f"/v1/executions/{execution['id']}")).json()["status"] == "completed"


async def test_a_paused_run_is_answered_over_http_and_finishes(server):
    client = server.client
    await make_team(client)
    execution_id = await run(client, "gated", "Publish it")
    paused = await finished(client, execution_id)
    assert paused["status"] == "paused"
    (request,) = (await client.get("/v1/human/requests", params={"status": "pending"})).json()["requests"]
    assert request["id"] == f"{execution_id}:pipeline.1:publish~23human-after"
    assert request["context"]["agent"] == "gated-a" and request["request_type"] == "approval"
    shown = await client.get(f"/v1/human/requests/{quote(request['id'], safe='')}")  # encoded, or not
    assert shown.status_code == 200 and shown.json()["request"]["id"] == request["id"]
    answered = await client.post(
        "/v1/human/responses", json={"request_id": request["id"], "response": "approve"}
    )
    assert answered.status_code == 201
    done = await finished(client, execution_id)
    assert done["status"] == "completed" and done["attempts"] == 2


def _events(body: str) -> list[dict]:
    return [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]


async def test_events_replay_then_follow_until_the_run_ends(start_app, db_url, doubles: Doubles):
    doubles.latency = 0.2
    server = await start_app(db_url)
    client = server.client
    await make_team(client)
    execution_id = await run(client, "slow-three", "go")
    await eventually_async(lambda: doubles.paid, "the first step")  # connect mid-run: replay, then live
    response = await client.get(f"/v1/executions/{execution_id}/events")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.text)
    assert events[0]["event"] == "status" and events[-1]["event"] == "end"
    assert events[-1]["status"] == "completed"
    completed = [e["key"] for e in events if e["event"] == "step" and e["kind"] == "completed"]
    assert completed == ["pipeline/0:s0", "pipeline/1:s1", "pipeline/2:s2"]  # each once
    # after the end: the whole history again, then `end` at once
    replay = _events((await client.get(f"/v1/executions/{execution_id}/events")).text)
    assert [e["key"] for e in replay if e["event"] == "step"] == completed and replay[-1]["event"] == "end"
    assert (await client.get(f"/v1/executions/{uuid.uuid4()}/events")).status_code == 404


async def test_cancel_over_http_stops_a_running_run(start_app, db_url, doubles: Doubles):
    doubles.latency = 30
    server = await start_app(db_url)
    client = server.client
    await make_team(client)
    execution_id = await run(client, "slow-three", "go")
    await eventually_async(lambda: running(client, execution_id), "the run to start")
    cancelled = await client.post(f"/v1/executions/{execution_id}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert (await finished(client, execution_id, 10))["status"] == "cancelled" and doubles.paid == []
    resumed = await client.post(f"/v1/executions/{execution_id}/resume")
    assert resumed.status_code == 202


async def test_bodies_that_are_too_large_or_malformed(start_app, db_url):
    server = await start_app(db_url, max_body_bytes=2048)
    client = server.client
    big = await client.post("/v1/tools/echo", json={"input": {"message": "x" * 5000}})
    assert big.status_code == 413 and big.headers["content-type"] == PROBLEM

    async def chunks():
        for chunk in (b'{"input": {"message": "', b"x" * 4000, b'"}}'):
            yield chunk

    chunked = await client.post(
        "/v1/tools/echo", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413
    malformed = await client.post(
        "/v1/tools/echo", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422 and malformed.headers["content-type"] == PROBLEM
    deep = await client.post(
        "/v1/tools/echo", content=b"[" * 1500 + b"]" * 1500, headers={"content-type": "application/json"}
    )
    assert deep.status_code in (400, 413, 422) and deep.headers["content-type"] == PROBLEM


async def test_stored_definitions_that_run_code_need_trust_given_on_the_servers_machine(server):
    client = server.client
    tooled = {
        "name": "tooled",
        "config": {
            "model": "test",
            "capabilities": ["tool_use"],
            "mixins": {"tool_use": {"tools": ["add_numbers"]}},
        },
    }
    assert (await client.post("/v1/agents", json=tooled)).status_code == 201
    await client.post(
        "/v1/topologies", json={"name": "uses-tools", "type": "pipeline", "agents": {"only": "tooled"}}
    )
    refused = await client.post("/v1/topologies/uses-tools/run", json={"input": {"prompt": "x"}})
    assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM
    assert "qmcp trust agent tooled" in refused.json()["detail"]
    assert (await client.get("/v1/executions")).json()["total"] == 0  # nothing was written


async def test_a_token_guards_every_endpoint_but_health(start_app, sqlite_url):
    server = await start_app(sqlite_url, token="s3cret", model="test")
    async with server.new_client() as anonymous:
        assert (await anonymous.get("/health")).status_code == 200
        for path in ("/v1/tools", "/metrics", "/docs", "/openapi.json", "/v1/executions", "/mcp"):
            denied = await anonymous.get(path)
            assert denied.status_code == 401 and denied.headers["content-type"] == PROBLEM, path
            assert denied.headers["www-authenticate"] == "Bearer"
        wrong = await anonymous.get("/v1/tools", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
    assert (await server.client.get("/v1/tools")).status_code == 200
    async with AsyncQmcpClient(BASE_URL, token="s3cret", transport=server.transport()) as client:
        assert (await client.invoke_tool("echo", {"message": "hi"})).result == "hi"
    async with AsyncQmcpClient(BASE_URL, token="", transport=server.transport()) as client:
        with pytest.raises(QmcpClientError) as refused:
            await client.list_tools()
    assert refused.value.status == 401


async def test_fifty_concurrent_run_requests_all_complete_once(start_app, db_url, doubles: Doubles):
    """Fifty clients at once: every run completes, no row lost, every step paid exactly once."""
    doubles.latency = 0.01
    server = await start_app(db_url, max_concurrent_runs=4)
    client = server.client
    await make_team(client)
    answers = await asyncio.gather(
        *[
            client.post("/v1/topologies/slow-three/run", json={"input": {"prompt": f"task {i}"}})
            for i in range(50)
        ]
    )
    assert {a.status_code for a in answers} == {202}
    ids = [a.json()["execution_id"] for a in answers]
    assert len(set(ids)) == 50
    done = [await finished(client, execution_id, 240) for execution_id in ids]
    assert Counter(e["status"] for e in done) == Counter({"completed": 50})
    steps = [(await client.get(f"/v1/executions/{i}/steps")).json()["count"] for i in ids]
    assert steps == [3] * 50 and len(doubles.paid) == 150  # three steps each, none paid twice


async def test_the_asynchronous_python_client(start_app, sqlite_url):
    server = await start_app(sqlite_url, model="test")
    await make_team(server.client)
    async with AsyncQmcpClient(BASE_URL, correlation_id="client-2", transport=server.transport()) as client:
        assert (await client.health())["status"] == "healthy"
        added = await client.invoke_tool("add_numbers", {"a": 1, "b": 2})
        assert added.result == 3
        assert (await client.get_invocation(added.invocation_id))["correlation_id"] == "client-2"
        with pytest.raises(ToolNotFoundError):
            await client.invoke_tool("nope", {})
        started = await client.run_topology("plan-write", {"prompt": "Plan"})
        events = [event async for event in client.stream_events(started.execution_id)]
        assert events[-1]["event"] == "end" and events[-1]["status"] == "completed"
        assert (await client.get_execution(started.execution_id)).status == "completed"
        await client.create_human_request("ask-2", "approval", "Ok?", options=["approve", "reject"])
        with pytest.raises(HumanRequestConflictError):
            await client.create_human_request("ask-2", "approval", "again?")
        with pytest.raises(TimeoutError):
            await client.wait_for_human_response("ask-2", poll_interval=0.05, timeout=0.2)
        answer = await client.submit_human_response("ask-2", "approve")
        assert (await client.wait_for_human_response("ask-2", poll_interval=0.05)).id == answer.id
    assert HumanRequestExpiredError.__mro__[1] is QmcpClientError
