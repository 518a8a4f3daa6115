"""Compatibility with upstream quaternionmedia/qmcp: the behaviours its own tests (`test_server.py`,
`test_hitl.py`, `test_client.py`, `test_metrics.py`) and its client (`MCPClient`) rely on — routes,
status codes, shapes and sentences — checked here in our own words, over HTTP.

Upstream's client does not encode ids in URLs, posts tool inputs as its examples write them
(`planner` with `prompt`), and polls `GET /v1/human/requests/{id}` to wait for an answer; the tests
below call the server the way it does (plain f-string paths).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import httpx
import pytest
from serving import App
from sqlalchemy import update
from team import PROBLEM, finished, make_team, run

from qmcp.agentframework.models import HumanRequest, gate_request_id
from qmcp.agentframework.store import Database

APPROVAL = {"request_type": "approval", "prompt": "Approve?", "options": ["yes", "no"]}


@pytest.fixture
async def server(start_app, db_url) -> App:
    return await start_app(db_url, model="test")


async def _counters(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    document = (await client.get("/metrics/json")).json()
    return dict(document["counters"].get(name, {}))


def _grew(before: dict[str, Any], after: dict[str, Any], key: str) -> float:
    return float(after.get(key, 0) - before.get(key, 0))


# -- upstream's test_server.py: health, tools, invocation history ------------------------------------


async def test_health_tools_and_invocations_as_upstream_reads_them(server):
    client = server.client
    health = (await client.get("/health")).json()
    assert health["status"] == "healthy" and "version" in health
    tools = (await client.get("/v1/tools")).json()["tools"]
    assert all({"name", "description", "input_schema"} <= set(tool) for tool in tools)
    assert {"echo", "planner", "executor", "reviewer"} <= {tool["name"] for tool in tools}

    echo = await client.post("/v1/tools/echo", json={"input": {"message": "Hello, MCP!"}})
    assert echo.status_code == 200
    assert echo.json()["result"] == "Hello, MCP!" and echo.json()["error"] is None
    assert echo.json()["invocation_id"]
    plan = (await client.post("/v1/tools/planner", json={"input": {"goal": "Deploy a service"}})).json()
    assert plan["error"] is None and {"goal", "steps", "estimated_steps"} <= set(plan["result"])
    dry = await client.post(
        "/v1/tools/executor",
        json={
            "input": {
                "plan": {"goal": "Test", "steps": [{"step": 1, "action": "Test action"}]},
                "dry_run": True,
            }
        },
    )
    assert dry.json()["result"]["mode"] == "dry_run" and dry.json()["result"]["success"] is True
    missing = await client.post("/v1/tools/nonexistent", json={"input": {}})
    assert missing.status_code == 404 and "not found" in missing.json()["detail"].lower()

    invocation_id = echo.json()["invocation_id"]
    history = (await client.get("/v1/invocations")).json()
    assert history["count"] >= 1 and any(i["tool_name"] == "echo" for i in history["invocations"])
    only = (await client.get("/v1/invocations", params={"tool_name": "echo"})).json()["invocations"]
    assert only and all(i["tool_name"] == "echo" for i in only)
    one = (await client.get(f"/v1/invocations/{invocation_id}")).json()
    assert (one["id"], one["tool_name"], one["status"]) == (invocation_id, "echo", "success")
    assert (await client.get("/v1/invocations/nonexistent-id")).status_code == 404


# -- upstream's test_hitl.py: human requests and answers ---------------------------------------------


async def test_human_requests_answer_with_upstreams_statuses_and_sentences(server):
    client = server.client
    created = await client.post(
        "/v1/human/requests",
        json={"id": "approve-deploy-001", **APPROVAL, "timeout_seconds": 3600, "context": {"a": [1]}},
    )
    assert created.status_code == 201
    assert {"id", "request_type", "prompt", "status", "created_at", "expires_at"} <= set(created.json())
    assert created.json()["status"] == "pending" and created.json()["expires_at"] is not None
    duplicate = await client.post("/v1/human/requests", json={"id": "approve-deploy-001", **APPROVAL})
    assert duplicate.status_code == 409 and "already exists" in duplicate.json()["detail"]
    free = await client.post(
        "/v1/human/requests", json={"id": "input-1", "request_type": "input", "prompt": "Why?"}
    )
    assert free.status_code == 201 and free.json()["request_type"] == "input"

    listed = (await client.get("/v1/human/requests", params={"status": "pending"})).json()
    assert listed["count"] >= 2 and all(r["status"] == "pending" for r in listed["requests"])
    typed = (await client.get("/v1/human/requests", params={"request_type": "approval"})).json()
    assert typed["requests"] and all(r["request_type"] == "approval" for r in typed["requests"])
    got = (await client.get("/v1/human/requests/approve-deploy-001")).json()
    assert got["request"]["id"] == "approve-deploy-001" and got["response"] is None
    assert got["request"]["options"] == ["yes", "no"] and got["request"]["context"] == {"a": [1]}
    assert (await client.get("/v1/human/requests/nonexistent")).status_code == 404

    outside = await client.post(
        "/v1/human/responses", json={"request_id": "approve-deploy-001", "response": "maybe"}
    )
    assert outside.status_code == 400 and outside.headers["content-type"] == PROBLEM
    assert outside.json()["detail"].startswith("Response must be one of: ['yes', 'no']")
    assert {"type", "title", "status"} <= set(outside.json()) and outside.json()["status"] == 400

    answered = await client.post(
        "/v1/human/responses",
        json={
            "request_id": "approve-deploy-001",
            "response": "yes",
            "responded_by": "ops@example.com",
            "response_metadata": {"reason": "Looks good"},
        },
    )
    assert answered.status_code == 201
    assert {"id", "request_id", "response", "responded_by", "created_at"} <= set(answered.json())
    assert (answered.json()["response"], answered.json()["responded_by"]) == ("yes", "ops@example.com")
    twice = await client.post(
        "/v1/human/responses", json={"request_id": "approve-deploy-001", "response": "no"}
    )
    assert twice.status_code == 409 and twice.headers["content-type"] == PROBLEM
    assert twice.json()["detail"].startswith("Request has already been responded to")
    assert twice.json()["status"] == 409 and twice.json()["type"].startswith("urn:qmcp:problem:")
    final = (await client.get("/v1/human/requests/approve-deploy-001")).json()
    assert final["request"]["status"] == "responded" and final["response"]["response"] == "yes"
    ghost = await client.post("/v1/human/responses", json={"request_id": "nonexistent", "response": "yes"})
    assert ghost.status_code == 404


async def test_request_types_and_timeouts_as_upstream_takes_and_returns_them(server):
    client = server.client
    other = await client.post(
        "/v1/human/requests", json={"id": "esc-1", "request_type": "escalation", "prompt": "Escalate?"}
    )
    assert other.status_code == 201 and other.json()["request_type"] == "escalation"
    typed = (await client.get("/v1/human/requests", params={"request_type": "escalation"})).json()
    assert [r["id"] for r in typed["requests"]] == ["esc-1"]
    for bad in ("", "x" * 33, "a b", "a/b"):  # bounded: what a label or a filter can carry
        refused = await client.post(
            "/v1/human/requests", json={"id": "t", "request_type": bad, "prompt": "p"}
        )
        assert refused.status_code == 422, bad
    got = (await client.get("/v1/human/requests/esc-1")).json()["request"]
    assert got["timeout_seconds"] == 3600 and isinstance(got["timeout_seconds"], int)
    listed = (await client.get("/v1/human/requests")).json()["requests"]
    assert [r["timeout_seconds"] for r in listed] == [3600]


# -- upstream's test_metrics.py and its tracing headers ---------------------------------------------


async def test_metrics_json_in_upstreams_shape_and_tracing_headers(server):
    client = server.client
    await client.get("/health")
    await client.post("/v1/tools/echo", json={"input": {"message": "test"}})
    text = await client.get("/metrics")
    assert text.status_code == 200 and "text/plain" in text.headers["content-type"]
    for name in ("qmcp_http_requests_total", "qmcp_tool_invocations_total", "qmcp_tool_duration_seconds"):
        assert name in text.text, name
    document = (await client.get("/metrics/json")).json()
    assert {"counters", "gauges", "histograms"} <= set(document)
    assert document["counters"]["qmcp_http_requests_total"]['method="GET",path="/health",status="200"'] >= 1
    echo = document["histograms"]["qmcp_tool_duration_seconds"]['tool="echo"']
    assert echo["count"] >= 1 and isinstance(echo["count"], int) and echo["sum"] >= 0
    assert document["qmcp_tool_invocations_total"]["type"] == "counter"  # ours, beside upstream's

    plain = await client.get("/health")
    assert plain.headers["X-Request-ID"] and plain.headers["X-Correlation-ID"]  # generated when absent
    kept = await client.get("/health", headers={"X-Correlation-ID": "test-correlation-123"})
    assert kept.headers["X-Correlation-ID"] == "test-correlation-123"


async def test_human_requests_are_counted_in_upstreams_labels(server):
    client = server.client
    before = await _counters(client, "qmcp_hitl_requests_total")
    await client.post("/v1/human/requests", json={"id": "m-1", **APPROVAL})
    await client.post("/v1/human/requests", json={"id": "m-2", "request_type": "escalation", "prompt": "p"})
    await client.post("/v1/human/responses", json={"request_id": "m-1", "response": "yes"})
    after = await _counters(client, "qmcp_hitl_requests_total")
    assert _grew(before, after, 'action="created",type="approval"') == 1
    assert _grew(before, after, 'action="responded",type="approval"') == 1
    assert _grew(before, after, 'action="created",type="other"') == 1  # a client's own type: bounded labels


# -- upstream's client and examples --------------------------------------------------------------------


async def test_tool_inputs_are_as_lenient_as_upstreams(server):
    client = server.client

    async def call(tool: str, given: dict[str, Any]) -> dict[str, Any]:
        answer = await client.post(f"/v1/tools/{tool}", json={"input": given})
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    assert (await call("echo", {}))["result"] == ""
    assert (await call("echo", {"message": 5}))["result"] == 5
    assert (await call("echo", {"message": "hi", "extra": True}))["result"] == "hi"
    planned = await call("planner", {"prompt": "Ship the release", "priority": "high"})
    assert planned["error"] is None and planned["result"]["goal"] == "Ship the release"
    assert planned["result"]["estimated_steps"] == len(planned["result"]["steps"]) > 0
    nothing = await call("planner", {"context": "no goal"})
    assert nothing["result"] is None and "goal" in nothing["error"]
    empty = await call("executor", {"dry_run": True})
    assert empty["result"]["steps_executed"] == 0 and empty["result"]["success"] is True


async def test_what_upstreams_client_sends_beside_the_input_is_taken_and_kept(server):
    """`MCPClient.invoke_tool(..., correlation_id=)` and `create_human_request(..., correlation_id=)` put
    the id in the body, beside the input; `list_invocations` pages with `status`, `limit` and `offset`."""
    client = server.client
    called = await client.post(
        "/v1/tools/echo", json={"input": {"message": "traced"}, "correlation_id": "test-correlation-123"}
    )
    assert called.status_code == 200 and called.json()["result"] == "traced"
    invocation_id = called.json()["invocation_id"]
    recorded = (await client.get(f"/v1/invocations/{invocation_id}")).json()
    assert recorded["correlation_id"] == "test-correlation-123"
    assert recorded["input_params"] == {"message": "traced"}

    created = await client.post(
        "/v1/human/requests",
        json={
            "id": "traced-1",
            "request_type": "review",
            "prompt": "Review this?",
            "timeout_seconds": 3600,
            "correlation_id": "corr-review-1",
        },
    )
    assert created.status_code == 201, created.text
    got = (await client.get("/v1/human/requests/traced-1")).json()["request"]
    assert got["correlation_id"] == "corr-review-1" and got["timeout_seconds"] == 3600
    misspelt = await client.post(  # ours, documented: upstream would ignore the field
        "/v1/human/requests",
        json={"id": "traced-2", "request_type": "review", "prompt": "p", "option": ["a"]},
    )
    assert misspelt.status_code == 422 and misspelt.json()["detail"].startswith("body.option: ")

    for message in ("a", "b", "c"):
        await client.post("/v1/tools/echo", json={"input": {"message": message}})
    await client.post("/v1/tools/executor", json={"input": {"plan": "not a plan"}})
    params = {"tool_name": "echo", "status": "success", "limit": 2, "offset": 0}
    first = (await client.get("/v1/invocations", params=params)).json()
    rest = (await client.get("/v1/invocations", params={**params, "offset": 2})).json()
    assert (first["count"], len(first["invocations"]), rest["count"]) == (2, 2, 2)
    ids = [i["id"] for i in first["invocations"] + rest["invocations"]]
    assert len(set(ids)) == 4 and invocation_id in ids
    failed = (await client.get("/v1/invocations", params={"status": "failed"})).json()["invocations"]
    assert [i["tool_name"] for i in failed] == ["executor"]


async def test_lenient_inputs_keep_the_tools_spend_bounds(start_app, db_url, monkeypatch):
    monkeypatch.setenv("QMCP_TOOL_MAX_PLAN_STEPS", "2")
    server = await start_app(db_url, model="test")
    steps = [{"step": n, "action": f"a{n}"} for n in range(3)]
    refused = await server.client.post(
        "/v1/tools/executor", json={"input": {"plan": {"steps": steps}, "dry_run": False, "extra": 1}}
    )
    assert refused.status_code == 413 and "QMCP_TOOL_MAX_PLAN_STEPS" in refused.json()["detail"]
    plan = (await server.client.post("/v1/tools/planner", json={"input": {"prompt": "many things"}})).json()
    assert len(plan["result"]["steps"]) <= 2


async def test_upstreams_client_waits_on_a_runs_gate_without_encoding_its_id(server):
    client = server.client
    await make_team(client)
    execution_id = await run(client, "gated", "Publish it")
    assert (await finished(client, execution_id))["status"] == "paused"
    (pending,) = (await client.get("/v1/human/requests", params={"status": "pending"})).json()["requests"]
    request_id = pending["id"]
    assert request_id == gate_request_id(uuid.UUID(execution_id), "pipeline/1:publish#human-after")
    assert not set(request_id) & set("/#?%") and pending["request_type"] == "approval"

    async def wait_for_human_response(poll_interval: float = 0.05) -> dict[str, Any]:
        """Upstream's MCPClient.wait_for_human_response, as it calls the server."""
        while True:
            polled = await client.get(f"/v1/human/requests/{request_id}")
            assert polled.status_code == 200, polled.text
            if polled.json()["response"] is not None:
                return dict(polled.json()["response"])
            assert polled.json()["request"]["status"] != "expired"
            await asyncio.sleep(poll_interval)

    waiting = asyncio.create_task(wait_for_human_response())
    await asyncio.sleep(0.1)
    assert not waiting.done()
    answered = await client.post(
        "/v1/human/responses", json={"request_id": request_id, "response": "approve"}
    )
    assert answered.status_code == 201
    response = await asyncio.wait_for(waiting, 30)
    assert response["request_id"] == request_id and response["response"] == "approve"
    assert (await finished(client, execution_id))["status"] == "completed"

    refused = await client.post("/v1/human/requests", json={"id": request_id, **APPROVAL})
    assert refused.status_code == 403  # still the gate's: no client can make it first
    other_gate = gate_request_id(uuid.UUID(execution_id), "pipeline/0:draft#human-after")
    assert (await client.post("/v1/human/requests", json={"id": other_gate, **APPROVAL})).status_code == 403


async def test_a_gate_stored_under_the_old_id_form_still_resolves_and_resumes(server):
    """A run paused by a version whose gate ids held the raw step key (`/` and `#`) is found by either
    form of its id, and an answer given through the new form lets the run pass that same gate."""
    client = server.client
    await make_team(client)
    execution_id = await run(client, "gated", "Publish it")
    assert (await finished(client, execution_id))["status"] == "paused"
    key = "pipeline/1:publish#human-after"
    safe, raw = gate_request_id(uuid.UUID(execution_id), key), f"{execution_id}:{key}"
    async with Database(server.db_url) as db, db.sessions() as session, session.begin():
        await session.exec(update(HumanRequest).where(HumanRequest.id == safe).values(id=raw))

    by_safe = await client.get(f"/v1/human/requests/{safe}")
    assert by_safe.status_code == 200 and by_safe.json()["request"]["id"] == raw
    by_raw = await client.get(f"/v1/human/requests/{raw.replace('#', '%23')}")
    assert by_raw.status_code == 200 and by_raw.json()["request"]["id"] == raw
    answered = await client.post("/v1/human/responses", json={"request_id": safe, "response": "approve"})
    assert answered.status_code == 201 and answered.json()["request_id"] == raw
    done = await finished(client, execution_id)
    assert done["status"] == "completed", done  # the gate found its old request: not asked again
    assert (await client.get("/v1/human/requests")).json()["count"] == 1
    shown = (await client.get(f"/v1/human/requests/{safe}")).json()
    assert shown["response"]["response"] == "approve"


async def test_gate_requests_and_mcp_answers_are_counted(start_app, sqlite_url):
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from serving import BASE_URL

    server = await start_app(sqlite_url, model="test")
    client = server.client
    await make_team(client)
    before = await _counters(client, "qmcp_hitl_requests_total")
    execution_id = await run(client, "gated", "Publish it")
    assert (await finished(client, execution_id))["status"] == "paused"
    made = await _counters(client, "qmcp_hitl_requests_total")
    assert _grew(before, made, 'action="created",type="approval"') == 1  # the run's gate
    (pending,) = (await client.get("/v1/human/requests", params={"status": "pending"})).json()["requests"]
    transport = httpx2.ASGITransport(app=server.app)
    async with (
        httpx2.AsyncClient(transport=transport, base_url=BASE_URL, timeout=60) as http,
        streamable_http_client(f"{BASE_URL}/mcp", http_client=http) as streams,
        ClientSession(*streams) as session,
    ):
        await session.initialize()
        result = await session.call_tool(
            "respond_to_human_request", {"request_id": pending["id"], "response": "approve"}
        )
        assert not result.is_error, result
    answered = await _counters(client, "qmcp_hitl_requests_total")
    assert _grew(made, answered, 'action="responded",type="approval"') == 1
    assert (await finished(client, execution_id))["status"] == "completed"


# -- the same calls against `qmcp serve` on loopback, as upstream's synchronous client makes them -------


def _wait_for_human_response(
    http: httpx.Client, request_id: str, poll_interval: float = 0.1
) -> dict[str, Any]:
    """Upstream's `wait_for_human_response`: poll the unencoded path until an answer is there."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        polled = http.get(f"/v1/human/requests/{request_id}")
        polled.raise_for_status()
        if polled.json()["response"] is not None:
            return dict(polled.json()["response"])
        time.sleep(poll_interval)
    raise TimeoutError(request_id)


def _upstream_session(url: str) -> str:
    """What upstream's synchronous client and examples do, in order; the gated run's execution id."""
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/health").json()["status"] == "healthy"
        assert http.get("/health").headers["X-Correlation-ID"]
        assert http.post("/v1/tools/echo", json={"input": {}}).json()["result"] == ""
        planned = http.post("/v1/tools/planner", json={"input": {"prompt": "Plan a launch"}}).json()
        assert planned["error"] is None and planned["result"]["steps"]
        assert http.post("/v1/human/requests", json={"id": "r-1", **APPROVAL}).status_code == 201
        assert http.post("/v1/human/requests", json={"id": "r-1", **APPROVAL}).status_code == 409
        outside = http.post("/v1/human/responses", json={"request_id": "r-1", "response": "maybe"})
        assert outside.status_code == 400
        assert "Response must be one of: ['yes', 'no']" in outside.json()["detail"]
        yes = http.post("/v1/human/responses", json={"request_id": "r-1", "response": "yes"})
        assert yes.status_code == 201
        twice = http.post("/v1/human/responses", json={"request_id": "r-1", "response": "no"})
        assert twice.status_code == 409 and "Request has already been responded to" in twice.json()["detail"]
        assert {"counters", "gauges", "histograms"} <= set(http.get("/metrics/json").json())

        started = http.post("/v1/topologies/gated/run", json={"input": {"prompt": "Publish it"}})
        deadline = time.monotonic() + 60
        while not (
            pending := http.get("/v1/human/requests", params={"status": "pending"}).json()["requests"]
        ):
            assert time.monotonic() < deadline, "the run's gate"
            time.sleep(0.1)
        request_id = pending[0]["id"]
        answer: list[dict[str, Any]] = []
        waiter = threading.Thread(target=lambda: answer.append(_wait_for_human_response(http, request_id)))
        waiter.start()
        time.sleep(0.3)
        posted = http.post("/v1/human/responses", json={"request_id": request_id, "response": "approve"})
        assert posted.status_code == 201
        waiter.join(60)
        assert answer and answer[0]["response"] == "approve"
        return str(started.json()["execution_id"])


async def test_upstream_style_calls_against_a_real_server(start_server, db_url):
    server = start_server(db_url, model="test")
    async with server.client() as client:
        await make_team(client)
        execution_id = await asyncio.to_thread(_upstream_session, server.url)
        assert (await finished(client, execution_id))["status"] == "completed"
